"""The website checks' decisions: when a run is good, when DOWN and UP are announced, which targets are refused."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from chalicelib.websites.decisions import (
    Certificate,
    CheckState,
    Probe,
    Verdict,
    address_refused,
    advance,
    is_due,
    judge,
)
from chalicelib.websites.policy import WebsitesPolicy

AT = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def policy(**check: Any) -> WebsitesPolicy:
    return WebsitesPolicy.model_validate(
        {
            "notify": {"email": {"sender": "opsbots@example.com", "recipients": ["oncall@example.com"]}},
            "defaults": {"failure_threshold": 2, "success_threshold": 1, "remind_every": "4h"},
            "checks": [{"name": "shop", "url": "https://shop.example.com/health", **check}],
            "maintenance": [{"checks": ["shop"], "start": "2026-12-24T00:00:00Z", "end": "2026-12-26T00:00:00Z"}],
        }
    )


SHOP = policy(expect={"status": ["200-299"], "body_contains": "ok", "max_response_time": "2s", "certificate_days": 14})
CHECK = SHOP.checks[0]
CERT = Certificate("CN=shop.example.com", AT + timedelta(days=90))


@pytest.mark.parametrize(
    ("probe", "good", "reason"),
    [
        (Probe(200, 0.2, b'{"status": "ok"}', CERT), True, "status 200 in 0.20 s"),
        (Probe(500, 0.2, b"ok", CERT), False, "status 500, expected 200-299"),
        (Probe(200, 0.2, b"maintenance", CERT), False, "the answer does not contain 'ok'"),
        (Probe(200, 2.31, b"ok", CERT), False, "too slow: answered in 2.31 s, more than 2 s"),
        (
            Probe(200, 0.2, b"ok", Certificate("CN=shop.example.com", AT + timedelta(days=5, hours=1))),
            False,
            "certificate CN=shop.example.com expires in 5 day(s), on 2026-12-07 11:00 UTC (wanted 14 or more)",
        ),
        (Probe(error="connection refused"), False, "connection refused"),
    ],
    ids=["good", "status", "body", "slow", "certificate", "refused"],
)
def test_a_run_is_good_only_if_every_expectation_holds(probe: Probe, good: bool, reason: str) -> None:
    verdict = judge(CHECK, probe, AT)

    assert (verdict.good, verdict.reason) == (good, reason)


GOOD, BAD = Verdict(True, "status 200", 0.1), Verdict(False, "status 500, expected 200-299", 0.1)


def run(verdicts: list[Verdict], start: datetime = AT, state: CheckState | None = None) -> list[str | None]:
    """The announcements of a run a minute for each verdict."""
    state = state or CheckState()
    said = []
    for minute, verdict in enumerate(verdicts):
        transition = advance(SHOP, CHECK, state, verdict, start + minute * MINUTE)
        state = transition.state
        said.append(transition.announce)
    return said


def test_down_after_two_failed_runs_up_after_one_good_with_the_outage() -> None:
    assert run([GOOD, BAD, BAD, BAD, GOOD, GOOD]) == [None, None, "down", None, "up", None]


def test_one_failed_run_between_good_ones_announces_nothing() -> None:
    assert run([GOOD, BAD, GOOD, BAD, GOOD]) == [None] * 5


def test_the_up_email_says_how_long_it_was_down() -> None:
    state = CheckState()
    for minute, verdict in enumerate([GOOD, BAD, BAD, BAD, BAD, GOOD]):
        transition = advance(SHOP, CHECK, state, verdict, AT + minute * MINUTE)
        state = transition.state
    assert (transition.announce, transition.outage) == ("up", 4 * MINUTE)  # failing from minute 1, up at minute 5


def test_while_down_a_reminder_goes_at_most_every_remind_every() -> None:
    said = run([BAD] * (4 * 60 + 3))
    assert [minute for minute, announce in enumerate(said) if announce] == [1, 241]
    assert said[1] == "down"
    assert said[241] == "reminder"


def test_nothing_is_announced_inside_a_maintenance_window_and_the_state_stands_still() -> None:
    window = datetime(2026, 12, 24, 12, 0, tzinfo=UTC)
    before = CheckState("up", successes=3, since=AT, version=7)

    transition = advance(SHOP, CHECK, before, BAD, window)

    assert transition.state == before
    assert transition.announce is None
    assert run([BAD, BAD, BAD], start=window, state=before) == [None, None, None]


@given(st.lists(st.booleans(), max_size=40))
def test_down_and_up_alternate_and_down_needs_two_failures_in_a_row(goods: list[bool]) -> None:
    said = run([GOOD if good else BAD for good in goods])
    transitions = [announce for announce in said if announce in ("down", "up")]
    assert all(first != second for first, second in itertools.pairwise(transitions))
    for minute, announce in enumerate(said):
        if announce == "down":
            assert goods[minute - 1 : minute + 1] == [False, False]
        if announce == "up":
            assert goods[minute]


@pytest.mark.parametrize(
    ("address", "allow_private", "refused"),
    [
        ("93.184.215.14", False, False),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", False, False),
        ("127.0.0.1", False, True),
        ("127.0.0.1", True, False),
        ("10.0.0.5", False, True),
        ("192.168.1.1", False, True),
        ("172.16.3.4", False, True),
        ("169.254.10.10", False, True),
        ("0.0.0.0", False, True),
        ("::1", False, True),
        ("fd12:3456::1", False, True),
        ("fe80::1", False, True),
        ("::ffff:10.0.0.1", False, True),
        ("169.254.169.254", True, True),  # the instance-metadata service: never
        ("::ffff:169.254.169.254", True, True),
        ("fd00:ec2::254", True, True),
    ],
)
def test_private_targets_are_refused_unless_allowed_and_metadata_always(
    address: str, allow_private: bool, refused: bool
) -> None:
    assert (address_refused(address, allow_private) is not None) == refused


@pytest.mark.parametrize(("every", "minute", "due"), [(1, 17, True), (5, 15, True), (5, 16, False), (60, 0, True)])
def test_a_check_runs_in_the_runs_its_every_falls_on(every: int, minute: int, due: bool) -> None:
    assert is_due(timedelta(minutes=every), AT.replace(minute=minute)) == due


def test_a_state_that_holds_changes_nothing_so_a_run_writes_nothing() -> None:
    # Given a check up for a while, then down for a while (its failures varying in their reason)
    state = CheckState()
    changed = []
    verdicts = [GOOD] * 5 + [BAD, Verdict(False, "too slow: answered in 2.31 s", 2.31)] * 5
    for minute, verdict in enumerate(verdicts):
        transition = advance(SHOP, CHECK, state, verdict, AT + minute * MINUTE)
        changed.append(transition.state != state)
        state = transition.state

    # Then only the first run, the first failure and the DOWN change the item; each change bumps the version
    assert [minute for minute, change in enumerate(changed) if change] == [0, 5, 6]
    assert state.version == 3
    assert state.reason == "too slow: answered in 2.31 s"  # the reason DOWN was announced with


@pytest.mark.parametrize("bundle", ["../secrets.pem", "/etc/ssl/ca.pem", "certs/../../x.pem", "ca.crt"])
def test_a_ca_bundle_must_be_a_pem_file_under_the_policies(bundle: str) -> None:
    with pytest.raises(ValidationError, match=r"a \.pem file under policies/"):
        policy(url="https://shop.example.com/", ca_bundle=bundle)
