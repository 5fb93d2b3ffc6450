"""Fuzz targets: count the examples each one runs and print one summary line at the end.

Every test here is a Hypothesis test marked `fuzz`. Hypothesis lets a runner wrap the function that
runs one example (`test.hypothesis.inner_test`, the hook pytest-trio uses); the wrapper installed
around each call counts the examples run, shrinking and replays included, and the terminal summary
reports `fuzz: N examples across M targets, K failures` with each failing target named.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

from chalicelib.observability import metrics

examples: Counter[str] = Counter()
failures: list[str] = []


def _counting(nodeid: str, inner: Callable[..., Any]) -> Callable[..., Any]:
    def run_one_example(*args: Any, **kwargs: Any) -> Any:
        examples[nodeid] += 1
        return inner(*args, **kwargs)

    return run_one_example


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    handle = getattr(getattr(item, "obj", None), "hypothesis", None)
    if handle is None or item.get_closest_marker("fuzz") is None:
        return (yield)
    inner = handle.inner_test
    handle.inner_test = _counting(item.nodeid, inner)
    try:
        return (yield)
    finally:
        handle.inner_test = inner


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.nodeid in examples and report.failed:
        failures.append(report.nodeid)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not examples:
        return
    for nodeid in failures:
        terminalreporter.write_line(f"fuzz failure: {nodeid}")
    terminalreporter.write_line(
        f"fuzz: {sum(examples.values())} examples across {len(examples)} targets, {len(failures)} failures"
    )


@pytest.fixture(autouse=True)
def _no_metrics_left_behind() -> Iterator[None]:
    """Handlers called directly (not through the Lambda middleware) leave metrics in the shared buffer."""
    yield
    metrics.clear_metrics()
