"""The snapshot bot's decisions: windows, due-ness, selection, retention; plain data, no AWS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.aws import Target
from chalicelib.policy import AccountsPolicy, Retention, SnapshotPolicy, SnapshotsPolicy
from chalicelib.snapshots import (
    COPY_OF,
    MANAGED,
    POLICY,
    Snapshot,
    Unit,
    Volume,
    is_due,
    plan_units,
    to_copy,
    to_prune,
    volumes_to_take,
    window_start,
)

NOW = datetime(2026, 11, 23, 1, 30, tzinfo=UTC)
DAY = timedelta(days=1)
OURS = {MANAGED: "true", POLICY: "daily"}


def policy(**changes: object) -> SnapshotPolicy:
    fields: dict[str, object] = {
        "name": "daily",
        "every": "24h",
        "select": {"tags": {"Backup": "daily"}},
        "retention": {"count": 3, "max_age": "10d"},
        **changes,
    }
    return SnapshotPolicy.model_validate(fields)


def snap(volume: str, days_ago: int, tags: dict[str, str] | None = None, state: str = "completed") -> Snapshot:
    window = window_start(NOW, DAY) - days_ago * DAY
    return Snapshot(window, f"snap-{volume}-{days_ago}", volume, state, OURS if tags is None else tags)


@pytest.mark.parametrize(
    ("every", "now", "start"),
    [
        ("24h", datetime(2026, 11, 23, 17, 5, tzinfo=UTC), datetime(2026, 11, 23, tzinfo=UTC)),
        ("6h", datetime(2026, 11, 23, 17, 5, tzinfo=UTC), datetime(2026, 11, 23, 12, tzinfo=UTC)),
        ("1h", datetime(2026, 11, 23, 17, 5, tzinfo=UTC), datetime(2026, 11, 23, 17, tzinfo=UTC)),
        ("1w", datetime(2026, 11, 23, 17, 5, tzinfo=UTC), datetime(2026, 11, 19, tzinfo=UTC)),
    ],
)
def test_windows_are_aligned_on_the_epoch(every: str, now: datetime, start: datetime) -> None:
    assert window_start(now, policy(every=every).every) == start


@pytest.mark.parametrize(
    ("every", "hour", "due"),
    [("24h", 0, True), ("24h", 5, True), ("24h", 6, False), ("24h", 23, False), ("1h", 13, True), ("2h", 13, True)],
)
def test_a_policy_is_due_in_the_first_hours_of_its_window(every: str, hour: int, due: bool) -> None:
    assert is_due(policy(every=every), datetime(2026, 11, 23, hour, 30, tzinfo=UTC)) == due


def test_volumes_done_this_window_are_not_taken_again() -> None:
    volumes = [Volume("vol-a"), Volume("vol-b"), Volume("vol-c")]
    snapshots = [snap("vol-a", 0), snap("vol-b", 1), snap("vol-c", 0, tags={"Name": "by hand"})]
    take, present = volumes_to_take(volumes, snapshots, "daily", window_start(NOW, DAY))
    assert [v.id for v in take] == ["vol-b", "vol-c"]
    assert [v.id for v in present] == ["vol-a"]


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
    decision = to_prune([snap("vol-a", age) for age in ages], "daily", Retention.model_validate(retention), NOW)
    assert sorted(s.id for s in decision.prune) == sorted(f"snap-vol-a-{age}" for age in pruned)


def test_only_snapshots_of_this_policy_are_ever_pruned() -> None:
    foreign = [
        snap("vol-a", 40, tags={"Name": "by hand"}),
        snap("vol-a", 41, tags={MANAGED: "true", POLICY: "weekly"}),
        snap("vol-a", 42, tags={POLICY: "daily"}),
    ]
    decision = to_prune(foreign, "daily", Retention(count=1), NOW)
    assert decision.prune == ()


def test_pending_snapshots_are_kept_with_a_reason() -> None:
    decision = to_prune(
        [snap("vol-a", 0), snap("vol-a", 20, state="pending")],
        "daily",
        Retention(count=1, max_age=timedelta(days=1)),
        NOW,
    )
    assert decision.prune == ()
    assert [(s.id, why) for s, why in decision.skipped] == [("snap-vol-a-20", "still pending")]


def test_snapshots_of_deleted_volumes_still_age_out() -> None:
    decision = to_prune([snap("vol-gone", 30)], "daily", Retention(max_age=timedelta(days=10)), NOW)
    assert [s.id for s in decision.prune] == ["snap-vol-gone-30"]


def test_the_newest_snapshot_of_each_volume_is_copied_once() -> None:
    sources = [snap("vol-a", 0), snap("vol-a", 1), snap("vol-b", 2), snap("vol-c", 0, state="pending")]
    copies = [Snapshot(sources[2].window, "snap-copy", "vol-b", "completed", {**OURS, COPY_OF: "snap-vol-b-2"})]
    assert [s.id for s in to_copy(sources, copies, "daily")] == ["snap-vol-a-0"]


def test_units_cover_each_account_and_region_a_due_policy_names() -> None:
    accounts = AccountsPolicy.model_validate(
        {
            "defaults": {"regions": ["eu-west-1"]},
            "accounts": [{"id": "222222222222", "name": "w", "regions": ["eu-west-1", "us-east-1"]}],
        }
    )
    policies = SnapshotsPolicy.model_validate(
        {"policies": [policy().model_dump(), {**policy(name="member-only", accounts=("222222222222",)).model_dump()}]}
    )
    targets = [
        (Target("123456789012", "eu-west-1"), "home"),
        (Target("222222222222", "eu-west-1", "arn:role"), "w"),
        (Target("222222222222", "us-east-1", "arn:role"), "w"),
    ]
    units = plan_units(policies, accounts, targets, datetime(2026, 11, 23, 1, tzinfo=UTC))
    assert [(u.account_id, u.region, u.policies) for u in units] == [
        ("123456789012", "eu-west-1", ("daily",)),
        ("222222222222", "eu-west-1", ("daily", "member-only")),
        ("222222222222", "us-east-1", ("daily", "member-only")),
    ]
    assert plan_units(policies, accounts, targets, datetime(2026, 11, 23, 12, tzinfo=UTC)) == ()


def test_a_unit_survives_the_queue() -> None:
    unit = Unit("222222222222", "w", "eu-west-1", "arn:aws:iam::222222222222:role/opsbots-member", ("daily",), NOW)
    assert Unit.from_message(unit.to_message()) == unit


# ----- properties -----------------------------------------------------------------------------

tag_sets = st.sampled_from([OURS, {MANAGED: "true", POLICY: "weekly"}, {"Name": "by hand"}, {POLICY: "daily"}])
snapshots = st.lists(
    st.builds(
        lambda volume, age, tags, state: snap(volume, age, tags, state),
        st.sampled_from(["vol-a", "vol-b", "vol-c"]),
        st.integers(0, 60),
        tag_sets,
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


@given(snapshots, retentions)
def test_never_prunes_a_snapshot_it_does_not_own(existing: list[Snapshot], retention: Retention) -> None:
    assert all(s.owned_by("daily") for s in to_prune(existing, "daily", retention, NOW).prune)


@given(snapshots, retentions)
def test_never_leaves_fewer_than_count(existing: list[Snapshot], retention: Retention) -> None:
    pruned = set(to_prune(existing, "daily", retention, NOW).prune)
    for volume in {s.volume_id for s in existing}:
        completed = [s for s in existing if s.volume_id == volume and s.owned_by("daily") and s.state == "completed"]
        left = [s for s in completed if s not in pruned]
        assert len(left) >= min(len(completed), retention.count or 0)


@given(st.lists(st.sampled_from(["vol-a", "vol-b", "vol-c", "vol-d"]), unique=True), snapshots)
def test_running_twice_in_one_window_takes_nothing_new(volume_ids: list[str], existing: list[Snapshot]) -> None:
    window = window_start(NOW, DAY)
    volumes = [Volume(v) for v in volume_ids]
    take, _ = volumes_to_take(volumes, existing, "daily", window)
    taken = [Snapshot(window, f"new-{v.id}", v.id, "pending", OURS) for v in take]
    again, present = volumes_to_take(volumes, existing + taken, "daily", window)
    assert again == ()
    assert len(present) == len(volumes)
