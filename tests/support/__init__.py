"""Helpers the tests share, by what they hold. A test module or a conftest.py imports from the `tests` package
only these modules, never another test module or a conftest (tests/test_layout.py checks); they import each other."""
