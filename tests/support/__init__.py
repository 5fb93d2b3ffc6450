"""Helpers the tests share. A test module imports from here (or conftest fixtures), never from another test module."""
