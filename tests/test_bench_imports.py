"""Benchmarks run with `make bench`, never in `make test`; here they only have to keep importing."""

from __future__ import annotations

import importlib

import pytest

from chalicelib.bots import BOTS

# Named, not imported from bench.suite: importing the bench package fakes the AWS environment, which must
# not happen while the other tests are collected.
SECTIONS = ["coldstart", *(bot.name for bot in BOTS), "fleet", "package_size"]  # one section per bot, and the fleet
BENCHES = [
    *(f"bench.{section}" for section in SECTIONS),
    "bench.custodian",  # runs in the peers' venv; imports c7n only when it runs
    "bench.suite",
]


@pytest.mark.parametrize("module", BENCHES)
def test_the_benchmark_still_imports(module: str) -> None:
    assert hasattr(importlib.import_module(module), "main")


def test_the_suite_runs_the_cold_start_every_bots_section_and_the_size() -> None:
    assert list(importlib.import_module("bench.suite").MODULES) == SECTIONS


@pytest.mark.parametrize("section", SECTIONS)
def test_every_section_has_its_title(section: str) -> None:
    assert importlib.import_module(f"bench.{section}").TITLE


def test_the_shared_helpers_still_import() -> None:
    assert hasattr(importlib.import_module("bench.common"), "run_worker")
