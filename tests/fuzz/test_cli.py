"""`opsbots simulate` on mutated sample events, JSON or not: a dry run or a one-line reason, never a traceback."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.cli import simulate_event
from chalicelib.policy import load_policies
from tests.support.aws import EVENTS, ROOT, load_event
from tests.support.mutations import mutated_json

pytestmark = pytest.mark.fuzz

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
POLICIES = load_policies(ROOT / "policies")
SAMPLES = {path.stem: load_event(path.stem) for path in sorted(EVENTS.glob("*.json"))}


@FUZZ
@given(text=st.sampled_from(sorted(SAMPLES)).flatmap(lambda name: mutated_json(SAMPLES[name])))
def test_opsbots_simulate_dry_runs_or_says_why_not(tmp_path: Path, text: str) -> None:
    # Given an event file holding a mutated sample, maybe no longer JSON at all
    event = tmp_path / "event.json"
    event.write_text(text, encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    # When `opsbots simulate` reads it (any exception would end the test here)
    with contextlib.redirect_stderr(err):
        code = simulate_event(event, POLICIES, out)
    # Then it prints the dry run (or why the event is skipped) and exits 0, or says in one line why it cannot
    if code == 0:
        assert out.getvalue(), "exit 0 without a word"
        assert not err.getvalue(), err.getvalue()
    else:
        assert code == 1
        [reason] = err.getvalue().splitlines()
        assert reason.startswith(f"{event}: "), reason
