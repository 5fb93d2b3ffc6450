"""Benchmarks run with `make bench`, never in `make test`; here they only have to keep importing."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("module", ["bench.snapshots", "bench.thumbnails"])
def test_the_benchmark_still_imports(module: str) -> None:
    assert hasattr(importlib.import_module(module), "main")
