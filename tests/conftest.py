"""Shared test set-up: the fake AWS (tests/support/aws.py) before anything imports boto3 or moto, Hypothesis
profiles, and the fixtures every suite uses."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.support import aws  # first of ours: importing it makes the environment fake


def pytest_configure() -> None:
    """Serialise in-process moto, and choose the Hypothesis profile.

    Hypothesis profiles, chosen with HYPOTHESIS_PROFILE; without it Hypothesis keeps its own `default` (or `ci`
    when it detects CI): 100 examples per property test, the seven fuzz targets in tests/fuzz included (~700
    examples, mostly against moto, in `make test`). `fuzz` is `make fuzz`: 2,000 examples per test (14,000 over
    the fuzz targets), no deadline, and no complaint that generating examples is slow."""
    aws.serve_one_request_at_a_time()
    settings.register_profile(
        "fuzz",
        max_examples=2_000,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    if os.environ.get("HYPOTHESIS_PROFILE"):
        settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])


@pytest.fixture
def policies_dir(tmp_path: Path) -> Path:
    """A writable copy of the shipped policies, for tests that change them."""
    target = tmp_path / "policies"
    target.mkdir()
    for source in (aws.ROOT / "policies").glob("*.yml"):
        (target / source.name).write_text(source.read_text())
    return target


@pytest.fixture
def fresh_runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Let the app rebuild its clients and re-read the environment inside this test's moto."""
    from chalicelib.runtime import current

    current.cache_clear()
    yield
    current.cache_clear()
