"""Benchmarks run with `make bench`, never in `make test`; here they only have to keep importing."""

from __future__ import annotations

import importlib

import pytest

BENCHES = [
    "bench.coldstart",
    "bench.sg_event",
    "bench.custodian",  # runs in the peers' venv; imports c7n only when it runs
    "bench.snapshots",
    "bench.dns",
    "bench.thumbnails",
    "bench.package_size",
    "bench.suite",
]


@pytest.mark.parametrize("module", BENCHES)
def test_the_benchmark_still_imports(module: str) -> None:
    assert hasattr(importlib.import_module(module), "main")


def test_the_shared_helpers_still_import() -> None:
    assert hasattr(importlib.import_module("bench.common"), "run_worker")
