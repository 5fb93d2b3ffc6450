"""The snapshot bot's decisions: windows, ownership, selection, retention, queue messages; plain data, no AWS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.aws import Target
from chalicelib.fanout import RejectedMessageError
from chalicelib.policy import AccountsPolicy
from chalicelib.snapshots.decisions import (
    MANAGED,
    POLICY,
    Entry,
    Snapshot,
    Unit,
    UnitRequest,
    Volume,
    holdings,
    plan_units,
    policy_window,
    resolve,
    to_copy,
    to_prune,
    volumes_to_take,
    window_start,
)
from chalicelib.snapshots.policy import Retention, SnapshotPolicy, SnapshotsPolicy

NOW = datetime(2026, 11, 23, 1, 30, tzinfo=UTC)
DAY = timedelta(days=1)
OURS = {MANAGED: "true", POLICY: "daily"}
HOME = "123456789012"
MEMBER = "222222222222"
ACCOUNTS = AccountsPolicy.model_validate(
    {
        "defaults": {"regions": ["eu-west-1"]},
        "accounts": [{"id": MEMBER, "name": "w", "regions": ["eu-west-1", "us-east-1"]}],
    }
)


def policy(**changes: object) -> SnapshotPolicy:
    fields: dict[str, object] = {
        "name": "daily",
        "every": "24h",
        "select": {"tags": {"Backup": "daily"}},
        "retention": {"count": 3, "max_age": "10d"},
        **changes,
    }
    return SnapshotPolicy.model_validate(fields)


def snap(volume: str, days_ago: int, state: str = "completed", copy_of: str | None = None) -> Snapshot:
    window = window_start(NOW, DAY) - days_ago * DAY
    return Snapshot(window, f"snap-{volume}-{days_ago}", volume, state, OURS, copy_of)


def recorded(*snapshots: Snapshot) -> dict[str, Entry]:
    """The ledger entries opsbots wrote for these snapshots when it took them."""
    return {s.id: Entry(s.id, s.volume_id, s.window, s.copy_of) for s in snapshots}


@pytest.mark.parametrize(
    ("every", "at", "now", "start"),
    [
        ("24h", None, datetime(2026, 11, 23, 17, 5, tzinfo=UTC), datetime(2026, 11, 23, tzinfo=UTC)),
        ("6h", None, datetime(2026, 11, 23, 17, 5, tzinfo=UTC), datetime(2026, 11, 23, 12, tzinfo=UTC)),
        ("1h", None, datetime(2026, 11, 23, 17, 5, tzinfo=UTC), datetime(2026, 11, 23, 17, tzinfo=UTC)),
        ("1w", None, datetime(2026, 11, 23, 17, 5, tzinfo=UTC), datetime(2026, 11, 19, tzinfo=UTC)),
        pytest.param(
            "24h",
            "03:00",
            datetime(2026, 11, 23, 17, 5, tzinfo=UTC),
            datetime(2026, 11, 23, 3, tzinfo=UTC),
            id="at 03:00, later that day",
        ),
        pytest.param(
            "24h",
            "03:00",
            datetime(2026, 11, 23, 2, 5, tzinfo=UTC),
            datetime(2026, 11, 22, 3, tzinfo=UTC),
            id="at 03:00, before it: the day before's window",
        ),
        pytest.param(
            "6h",
            "01:30",
            datetime(2026, 11, 23, 7, 0, tzinfo=UTC),
            datetime(2026, 11, 23, 1, 30, tzinfo=UTC),
            id="every 6h from 01:30",
        ),
    ],
)
def test_windows_are_aligned_on_the_epoch_shifted_by_at(
    every: str, at: str | None, now: datetime, start: datetime
) -> None:
    assert policy_window(policy(every=every, at=at), now) == start


@pytest.mark.parametrize(
    ("at", "every", "problem"),
    [
        ("3:00", "24h", "is not a UTC time of day"),
        ("24:00", "24h", "is not a UTC time of day"),
        ("02:00", "1h", "at must fall within one window of every"),
    ],
)
def test_at_is_a_time_of_day_within_a_window(at: str, every: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        policy(at=at, every=every)


def test_volumes_done_this_window_are_not_taken_again() -> None:
    volumes = [Volume("vol-a"), Volume("vol-b"), Volume("vol-c")]
    take, present = volumes_to_take(volumes, [snap("vol-a", 0), snap("vol-b", 1)], window_start(NOW, DAY))
    assert [v.id for v in take] == ["vol-b", "vol-c"]
    assert [v.id for v in present] == ["vol-a"]


def test_a_tagged_snapshot_the_ledger_does_not_know_is_foreign_never_pruned_never_counted() -> None:
    # Given opsbots' own snapshot of vol-a, and a hand-made "golden" one someone tagged exactly like it
    ours, golden = snap("vol-a", 0), snap("vol-a", 40)
    held = holdings([ours, golden], recorded(ours))
    # When retention keeps one and a volume is checked for this window
    pruning = to_prune(held.primaries, Retention(count=1), NOW)
    # Then the golden snapshot is foreign: not pruned, not counted as this window's snapshot of anything
    assert [s.id for s in held.foreign] == [golden.id]
    assert pruning.prune == ()
    assert held.primaries == (ours,)


def test_a_spoofed_snapshot_for_this_window_does_not_stop_the_take() -> None:
    spoof = snap("vol-a", 0)
    held = holdings([spoof], {})
    take, _ = volumes_to_take([Volume("vol-a")], held.primaries, window_start(NOW, DAY))
    assert [v.id for v in take] == ["vol-a"]


def test_the_ledger_decides_volume_window_and_source_not_the_tags() -> None:
    # Given a snapshot whose tags were edited after the fact to look ten days older, of another volume
    edited = Snapshot(window_start(NOW, DAY) - 10 * DAY, "snap-1", "vol-other", "completed", OURS)
    entry = Entry("snap-1", "vol-a", window_start(NOW, DAY))
    [owned] = holdings([edited], {"snap-1": entry}).primaries
    assert (owned.volume_id, owned.window) == ("vol-a", entry.window)


def test_copies_and_primaries_are_separate_sets() -> None:
    # Given a DR region that is also a source region: its own snapshots and copies from elsewhere
    primary, copy = snap("vol-dr", 0), snap("vol-src", 0, copy_of="snap-src")
    held = holdings([primary, copy], recorded(primary, copy))
    assert (held.primaries, held.copies) == ((primary,), (copy,))
    # Then a copy's retention never prunes a primary, nor a primary's a copy
    assert to_prune(held.copies, Retention(count=1), NOW).prune == ()
    assert to_prune(held.primaries, Retention(count=1), NOW).prune == ()


@pytest.mark.parametrize(
    ("retention", "ages", "pruned"),
    [
        pytest.param({"count": 3, "max_age": "10d"}, [0, 1, 2, 11, 12], [11, 12], id="beyond count and too old"),
        pytest.param({"count": 3, "max_age": "10d"}, [0, 11, 12, 13], [13], id="count wins over age"),
        pytest.param({"count": 3, "max_age": "10d"}, [0, 1, 2, 3, 4], [], id="age wins over count"),
        pytest.param({"count": 2}, [0, 1, 2, 3], [2, 3], id="count only"),
        pytest.param({"max_age": "2d"}, [0, 1, 2, 3], [2, 3], id="age only: measured from the window's start"),
    ],
)
def test_retention_keeps_the_newest_count_and_the_young(
    retention: dict[str, object], ages: list[int], pruned: list[int]
) -> None:
    decision = to_prune([snap("vol-a", age) for age in ages], Retention.model_validate(retention), NOW)
    assert sorted(s.id for s in decision.prune) == sorted(f"snap-vol-a-{age}" for age in pruned)


def test_pending_snapshots_are_kept_with_a_reason() -> None:
    decision = to_prune(
        [snap("vol-a", 0), snap("vol-a", 20, state="pending")], Retention(count=1, max_age=timedelta(days=1)), NOW
    )
    assert decision.prune == ()
    assert [(s.id, why) for s, why in decision.skipped] == [("snap-vol-a-20", "still pending")]


def test_snapshots_of_deleted_volumes_still_age_out() -> None:
    decision = to_prune([snap("vol-gone", 30)], Retention(max_age=timedelta(days=10)), NOW)
    assert [s.id for s in decision.prune] == ["snap-vol-gone-30"]


def test_the_newest_snapshot_of_each_volume_is_copied_once() -> None:
    sources = [snap("vol-a", 0), snap("vol-a", 1), snap("vol-b", 2), snap("vol-c", 0, state="pending")]
    copies = [snap("vol-b", 2, copy_of="snap-vol-b-2")]
    assert [s.id for s in to_copy(sources, copies)] == ["snap-vol-a-0"]


def test_every_run_works_on_every_policy_that_covers_a_unit() -> None:
    policies = SnapshotsPolicy.model_validate(
        {"policies": [policy().model_dump(), {**policy(name="member-only", accounts=(MEMBER,)).model_dump()}]}
    )
    targets = [
        (Target(HOME, "eu-west-1"), "home"),
        (Target(MEMBER, "eu-west-1", "arn:role"), "w"),
        (Target(MEMBER, "us-east-1", "arn:role"), "w"),
    ]
    expected = [
        (HOME, "eu-west-1", ("daily",)),
        (MEMBER, "eu-west-1", ("daily", "member-only")),
        (MEMBER, "us-east-1", ("daily", "member-only")),
    ]
    # At 01:00 as at 12:00: a run missed early in the window is made up by a later one
    for hour in (1, 12, 23):
        units = plan_units(policies, ACCOUNTS, targets, datetime(2026, 11, 23, hour, tzinfo=UTC))
        assert [(u.account_id, u.region, u.policies) for u in units] == expected


def test_a_message_carries_a_request_and_the_worker_looks_up_the_rest() -> None:
    # Given the scheduler's unit, with the member's role and name
    unit = Unit(MEMBER, "w", "eu-west-1", f"arn:aws:iam::{MEMBER}:role/opsbots-member-snapshots", ("daily",), NOW)
    # When it crosses the queue and a worker resolves it against accounts.yml
    resolved = resolve(UnitRequest.from_message(unit.to_message()), ACCOUNTS, HOME, NOW + timedelta(minutes=3))
    # Then it is the same unit; the message never named the role
    assert resolved == unit
    assert "role" not in unit.to_message()


@pytest.mark.parametrize(
    ("account", "region", "sent", "why"),
    [
        pytest.param("999999999999", "eu-west-1", NOW, "is not one the bots work in", id="an account not listed"),
        pytest.param(MEMBER, "ap-south-1", NOW, "is not one of account", id="a region the account is not worked in"),
        pytest.param(HOME, "us-east-1", NOW, "is not one of account", id="a member's region for home"),
        pytest.param(MEMBER, "eu-west-1", datetime(9999, 1, 1, tzinfo=UTC), "too far", id="now in 9999"),
        pytest.param(MEMBER, "eu-west-1", NOW - timedelta(days=2), "too far", id="two days old"),
    ],
)
def test_a_forged_or_stale_message_is_rejected(account: str, region: str, sent: datetime, why: str) -> None:
    request = UnitRequest(account, region, ("daily",), sent)
    with pytest.raises(RejectedMessageError, match=why):
        resolve(request, ACCOUNTS, HOME, NOW)


@pytest.mark.parametrize(
    "body",
    [
        '{"account_id": "2222", "region": "eu-west-1", "policies": ["daily"], "now": "2026-11-23T01:00:00+00:00"}',
        '{"account_id": "222222222222", "region": "eu-west-1", "policies": [], "now": "2026-11-23T01:00:00+00:00"}',
        '{"account_id": "222222222222", "region": "eu-west-1", "policies": ["daily"], "now": "2026-11-23T01:00:00"}',
        '["not", "an", "object"]',
        "not json",
    ],
)
def test_a_malformed_message_is_rejected(body: str) -> None:
    with pytest.raises(RejectedMessageError):
        UnitRequest.from_message(body)


# ----- properties -----------------------------------------------------------------------------

snapshots = st.lists(
    st.builds(
        lambda volume, age, state: snap(volume, age, state),
        st.sampled_from(["vol-a", "vol-b", "vol-c"]),
        st.integers(0, 60),
        st.sampled_from(["completed", "completed", "pending", "error"]),
    ),
    max_size=30,
    unique_by=lambda s: s.id,
)
retentions = (
    st.tuples(st.one_of(st.none(), st.integers(1, 10)), st.one_of(st.none(), st.integers(1, 40)))
    .filter(lambda pair: pair != (None, None))
    .map(lambda pair: Retention(count=pair[0], max_age=timedelta(days=pair[1]) if pair[1] else None))
)


@given(snapshots, st.data(), retentions)
def test_never_prunes_a_snapshot_the_ledger_does_not_hold(
    existing: list[Snapshot], data: st.DataObject, retention: Retention
) -> None:
    ledger = recorded(*data.draw(st.lists(st.sampled_from(existing), unique=True) if existing else st.just([])))
    pruned = to_prune(holdings(existing, ledger).primaries, retention, NOW).prune
    assert {s.id for s in pruned} <= set(ledger)


@given(snapshots, retentions)
def test_never_leaves_fewer_than_count(existing: list[Snapshot], retention: Retention) -> None:
    pruned = set(to_prune(existing, retention, NOW).prune)
    for volume in {s.volume_id for s in existing}:
        completed = [s for s in existing if s.volume_id == volume and s.state == "completed"]
        left = [s for s in completed if s not in pruned]
        assert len(left) >= min(len(completed), retention.count or 0)


@given(st.lists(st.sampled_from(["vol-a", "vol-b", "vol-c", "vol-d"]), unique=True), snapshots)
def test_running_twice_in_one_window_takes_nothing_new(volume_ids: list[str], existing: list[Snapshot]) -> None:
    window = window_start(NOW, DAY)
    volumes = [Volume(v) for v in volume_ids]
    take, _ = volumes_to_take(volumes, existing, window)
    taken = [Snapshot(window, f"new-{v.id}", v.id, "pending", OURS) for v in take]
    again, present = volumes_to_take(volumes, existing + taken, window)
    assert again == ()
    assert len(present) == len(volumes)
