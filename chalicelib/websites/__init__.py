"""Website checks: scheduled HTTP(S) checks that email when a site goes down or comes back."""
