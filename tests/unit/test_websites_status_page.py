"""The status page: its history bounded per check and recorded once per run, its uptimes, its stored form, and
a page that loads nothing from anywhere else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.websites.decisions import Announcement, CheckState, Transition, Verdict
from chalicelib.websites.status_page import (
    DAYS,
    HOURS,
    INCIDENTS,
    SAMPLES,
    History,
    from_json,
    recorded,
    render,
    to_json,
    uptime,
)
from demo.status_page import Dom

AT = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
GOOD, BAD = Verdict(True, "status 200", 0.12), Verdict(False, "status 500", 0.05)
UP, DOWN = CheckState("up", since=AT), CheckState("down", since=AT, reason="status 500")


def runs(history: History, count: int, verdict: Verdict = GOOD, **counted: bool) -> History:
    for minute in range(count):
        history = recorded(history, verdict, Transition(UP), AT + timedelta(minutes=minute), **counted)
    return history


# A run: minutes after the last, whether it was good, what it announced.
RUNS = st.lists(
    st.tuples(st.integers(1, 60 * 30), st.booleans(), st.sampled_from([None, "down", "up", "reminder"])),
    max_size=300,
)


@given(RUNS)
def test_the_history_stays_bounded_and_survives_its_stored_form(steps: list[tuple[int, bool, str | None]]) -> None:
    history, at = History(), AT
    for minutes, good, announce in steps:
        at += timedelta(minutes=minutes)
        state = CheckState("down" if announce in ("down", "reminder") else "up", since=at, reason="status 500")
        transition = Transition(state, announce)  # type: ignore[arg-type]  # a Literal drawn from its values
        history = recorded(history, GOOD if good else BAD, transition, at)

    assert len(history.samples) <= SAMPLES
    assert len(history.hours) <= HOURS
    assert len(history.days) <= DAYS
    assert len(history.incidents) <= INCIDENTS
    assert all(good <= runs for _, good, runs in history.hours + history.days)
    assert from_json(to_json({"shop": history})) == {"shop": history}


def test_forty_days_of_runs_fill_every_part_to_its_bound() -> None:
    history = History()
    for minute in range(0, 60 * 24 * 40, 7):  # forty days of runs every seven minutes, going down and up
        at = AT + timedelta(minutes=minute)
        announce: Announcement | None = "down" if minute % 700 == 0 else "up" if minute % 700 == 350 else None
        state = CheckState("down", since=at, reason="status 500") if announce == "down" else UP
        history = recorded(history, BAD if announce == "down" else GOOD, Transition(state, announce), at)

    assert (len(history.samples), len(history.hours), len(history.days)) == (SAMPLES, HOURS, DAYS)
    assert len(history.incidents) == INCIDENTS


def test_uptime_counts_good_runs_over_all_runs_of_the_period() -> None:
    history = runs(runs(History(), 2, BAD), 10)

    assert uptime(history.hours, f"{AT:%Y-%m-%dT%H}") == 0.8
    assert uptime(history.days, "2026-12-03") is None


def test_a_run_in_maintenance_shows_its_time_but_counts_toward_no_uptime() -> None:
    history = runs(History(), 3, BAD, counted=False)

    assert len(history.samples) == 3
    assert (history.hours, history.days) == ((), ())


def test_a_run_is_recorded_once_however_often_or_late_it_arrives() -> None:
    once = recorded(History(), GOOD, Transition(UP), AT + timedelta(minutes=1))

    assert recorded(once, GOOD, Transition(UP), AT + timedelta(minutes=1)) == once  # delivered again
    assert recorded(once, BAD, Transition(DOWN, "down"), AT) == once  # an older run, late


def test_an_outage_is_an_incident_from_its_first_failed_run_to_its_recovery() -> None:
    down = recorded(History(), BAD, Transition(DOWN, "down"), AT + timedelta(minutes=1))
    up = recorded(down, GOOD, Transition(UP, "up"), AT + timedelta(minutes=5))

    [incident] = up.incidents
    assert (incident.started, incident.ended, incident.reason) == (AT, AT + timedelta(minutes=5), "status 500")
    assert (up.state, down.state) == ("up", "down")


@pytest.mark.parametrize(
    "document",
    [b"", b"[]", b'{"shop": {"samples": "fast"}}', b'{"shop": {"hours": [["x", 1]]}}', b"\xff"],
)
def test_a_stored_form_that_is_not_a_history_is_refused(document: bytes) -> None:
    with pytest.raises(ValueError, match="not a status history"):
        from_json(document)


def test_a_stored_history_longer_than_the_bounds_is_cut_to_them() -> None:
    long = History(samples=(0.1,) * (SAMPLES * 3), hours=tuple((f"2026-12-{d:02d}T00", 1, 1) for d in range(1, 31)))

    [kept] = from_json(to_json({"shop": long})).values()
    assert (len(kept.samples), len(kept.hours)) == (SAMPLES, HOURS)


def test_the_page_shows_each_checks_state_and_uptimes_and_loads_nothing_from_elsewhere() -> None:
    shop = runs(History(), 20)
    broken = recorded(History(), BAD, Transition(DOWN, "down"), AT)
    page = Dom()
    page.feed(render([("shop", shop, False), ("docs <b>", broken, False), ("api", History(), True)], AT))

    assert page.fetches == []
    assert page.summary == "1 of 3 down: docs <b>"  # a name is text, never markup
    assert {name: cells[1] for name, cells in page.rows.items()} == {
        "shop": "up",
        "docs <b>": "down",
        "api": "maintenance",
    }
    assert page.rows["shop"][3:6] == ["100.00%"] * 3
    assert page.rows["api"][3:6] == ["\N{EN DASH}"] * 3  # no run counted yet
    assert len(page.polylines) == 2  # the sparklines of the checks that have samples
    assert [" ".join(incident.split()) for incident in page.incidents] == [
        "docs <b> down from 2026-12-02 10:00 UTC, still down: status 500"
    ]
