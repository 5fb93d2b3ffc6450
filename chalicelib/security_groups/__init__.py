"""Security-group guard: revert rules that break the policy within seconds, and tell security.

A compliant event is judged from the event alone and costs no AWS call; only a violation pays for
lookups (group tags for the exemption, prefix-list entries, rule ids missing from old events, the
rules that reference an edited prefix list).

The revoke never waits on bookkeeping: it runs first, unguarded (revoking a rule that is already gone
is a no-op), and only the email is deduplicated, by the ledger in chalicelib/outbox.py, which sends
anyway when its table is down and parks the email when SES is.

Like every bot, one package: `policy.py` (what its file may say), `events.py` (its events, read into
frozen dataclasses), `decisions.py` (pure: plain data in, plain data out, no AWS), `executors.py`
(the only code that calls AWS, or prints what it would call for a dry run), `handlers.py` (each
Lambda function's work, with what it needs injected), `dry_run.py` (what `opsbots simulate` shows,
from the same decisions). docs/adding-a-bot.md describes the shape.
"""
