"""Plain data and pure decisions; no AWS."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from chalicelib.aws import Target
from chalicelib.fanout import RejectedMessageError, member_in
from chalicelib.names import ACCOUNT_ID, REGION_NAME
from chalicelib.policy import MemberBot

if TYPE_CHECKING:
    from chalicelib.policy import AccountsPolicy
    from chalicelib.snapshots.policy import Consistency, Retention, SnapshotPolicy, SnapshotsPolicy


MANAGED, POLICY, WINDOW, VOLUME, INSTANCE, COPY_OF = (
    "opsbots:managed",
    "opsbots:policy",
    "opsbots:window",
    "opsbots:volume",
    "opsbots:instance",
    "opsbots:copy-of",
)
BOT: MemberBot = "snapshots"  # its role in member accounts, and the outbox's name for its parked emails
UNIT_THREADS = 8
# A unit's snapshot calls at once (creates, deletes, copies): 8 units x 4 = 32 in flight, within what EC2 lets
# one account do in a region before it throttles (and adaptive retries slow down when it does).
UNIT_CALLS = 4
# How far a queued unit's time may be from the worker's clock: SQS keeps a message invisible for 90
# minutes per try, 3 tries; past that, the next hourly run has queued the unit again anyway.
MESSAGE_AGE_LIMIT = timedelta(hours=6)
MESSAGE_CLOCK_SKEW = timedelta(minutes=5)
LEDGER_BATCH = 25  # BatchWriteItem's limit
LEDGER_ATTEMPTS = 4  # BatchWriteItem calls for one batch's unprocessed items (throttling) before giving up
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
COMPLETED = "completed"
_WINDOW_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_Item = TypeVar("_Item")
_Done = TypeVar("_Done")

# ---------------------------------------------------------------------------------------------
# Plain data and pure decisions; no AWS.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Volume:
    id: str
    tags: Mapping[str, str] = field(default_factory=dict)
    instance_id: str | None = None


@dataclass(frozen=True, order=True)
class Snapshot:
    window: datetime
    id: str
    volume_id: str
    state: str = COMPLETED
    tags: Mapping[str, str] = field(default_factory=dict, compare=False)
    copy_of: str | None = field(default=None, compare=False)  # the source, for a disaster-recovery copy


@dataclass(frozen=True)
class Entry:
    """What the ledger recorded when opsbots created a snapshot: the proof that it is opsbots'."""

    snapshot_id: str
    volume_id: str
    window: datetime
    copy_of: str | None = None


@dataclass(frozen=True)
class Holdings:
    """One policy's snapshots in one account x region, sorted by what the ledger says of them."""

    primaries: tuple[Snapshot, ...]  # taken here from a volume here
    copies: tuple[Snapshot, ...]  # copied here from another region
    foreign: tuple[Snapshot, ...]  # carrying the policy's tags, unknown to the ledger: someone else's


def holdings(tagged: Iterable[Snapshot], ledger: Mapping[str, Entry]) -> Holdings:
    """Ownership is the ledger's word, not the tags': a tagged snapshot it does not know is foreign.

    Volume, window and source come from the ledger too, so tags edited after the fact change nothing.
    """
    primaries: list[Snapshot] = []
    copies: list[Snapshot] = []
    foreign: list[Snapshot] = []
    for snapshot in tagged:
        entry = ledger.get(snapshot.id)
        if entry is None:
            foreign.append(snapshot)
            continue
        owned = Snapshot(entry.window, snapshot.id, entry.volume_id, snapshot.state, snapshot.tags, entry.copy_of)
        (copies if entry.copy_of else primaries).append(owned)
    return Holdings(tuple(sorted(primaries)), tuple(sorted(copies)), tuple(sorted(foreign)))


@dataclass(frozen=True)
class Pruning:
    prune: tuple[Snapshot, ...]
    skipped: tuple[tuple[Snapshot, str], ...]  # would go, but cannot yet: (snapshot, why)


def window_start(now: datetime, every: timedelta, at: timedelta = timedelta(0)) -> datetime:
    """The start of the window `now` falls in: windows are aligned on the Unix epoch in UTC, shifted by `at`."""
    return EPOCH + at + ((now - EPOCH - at) // every) * every


def window_tag(window: datetime) -> str:
    return window.astimezone(UTC).strftime(_WINDOW_FORMAT)


def policy_window(policy: SnapshotPolicy, now: datetime) -> datetime:
    return window_start(now, policy.every, policy.at or timedelta(0))


def volumes_to_take(
    volumes: Iterable[Volume], primaries: Iterable[Snapshot], window: datetime
) -> tuple[tuple[Volume, ...], tuple[Volume, ...]]:
    """(to take, already taken this window) among the selected volumes; only opsbots' own snapshots count."""
    done = {s.volume_id for s in primaries if s.window == window}
    chosen = sorted(volumes, key=lambda volume: volume.id)
    return tuple(v for v in chosen if v.id not in done), tuple(v for v in chosen if v.id in done)


@dataclass(frozen=True)
class Takes:
    """How a policy's volumes are snapshotted: one by one, or each instance's together (CreateSnapshots)."""

    volumes: tuple[Volume, ...]  # each its own CreateSnapshot
    instances: tuple[tuple[str, tuple[Volume, ...]], ...]  # (instance id, its volumes): one CreateSnapshots


def takes(volumes: Iterable[Volume], consistency: Consistency) -> Takes:
    """`consistency: instance` snapshots an instance's volumes in one call, at one moment; a volume attached
    to no instance, or any volume under `consistency: volume`, gets a snapshot of its own."""
    if consistency == "volume":
        return Takes(tuple(volumes), ())
    by_instance: dict[str, list[Volume]] = defaultdict(list)
    alone: list[Volume] = []
    for volume in volumes:
        (by_instance[volume.instance_id] if volume.instance_id else alone).append(volume)
    return Takes(tuple(alone), tuple((instance, tuple(by_instance[instance])) for instance in sorted(by_instance)))


def to_prune(snapshots: Iterable[Snapshot], retention: Retention, now: datetime) -> Pruning:
    """Of opsbots' own snapshots, those retention lets go: beyond the newest `count` of their volume AND
    older than `max_age`. Pending ones are never deleted."""
    per_volume: dict[str, list[Snapshot]] = defaultdict(list)
    for snapshot in snapshots:
        per_volume[snapshot.volume_id].append(snapshot)
    prune: list[Snapshot] = []
    skipped: list[tuple[Snapshot, str]] = []
    for group in per_volume.values():
        completed = sorted((s for s in group if s.state == COMPLETED), reverse=True)
        for rank, snapshot in enumerate(completed):
            beyond_count = retention.count is None or rank >= retention.count
            too_old = retention.max_age is None or now - snapshot.window > retention.max_age
            if beyond_count and too_old:
                prune.append(snapshot)
        skipped.extend((s, f"still {s.state}") for s in group if s.state != COMPLETED and _expired(s, retention, now))
    return Pruning(tuple(sorted(prune)), tuple(skipped))


def _expired(snapshot: Snapshot, retention: Retention, now: datetime) -> bool:
    return retention.max_age is not None and now - snapshot.window > retention.max_age


def to_copy(primaries: Iterable[Snapshot], copies: Iterable[Snapshot]) -> tuple[Snapshot, ...]:
    """Each volume's newest completed snapshot, when it has no disaster-recovery copy yet.

    A snapshot taken this run is still pending on AWS; the next hourly run copies it.
    """
    copied = {copy.copy_of for copy in copies}
    newest: dict[str, Snapshot] = {}
    for snapshot in sorted(s for s in primaries if s.state == COMPLETED):
        newest[snapshot.volume_id] = snapshot
    return tuple(sorted(s for s in newest.values() if s.id not in copied))


def snapshot_tags(policy: SnapshotPolicy, window: datetime, volume: Volume | None) -> dict[str, str]:
    own = {key: value for key, value in (volume.tags if volume and policy.copy_tags else {}).items()}
    tags = {k: v for k, v in own.items() if not k.startswith(("aws:", "opsbots:"))}
    tags.update({MANAGED: "true", POLICY: policy.name, WINDOW: window_tag(window)})
    if volume is not None:
        tags[VOLUME] = volume.id
        if volume.instance_id:
            tags[INSTANCE] = volume.instance_id
    return tags


@dataclass(frozen=True)
class Unit:
    """One account x region and the policies worked on there, with the time they are worked on for."""

    account_id: str
    account_name: str
    region: str
    role_arn: str | None
    policies: tuple[str, ...]
    now: datetime

    @property
    def target(self) -> Target:
        return Target(self.account_id, self.region, self.role_arn)

    def to_message(self) -> str:
        """What the queue carries: which unit, for when. The worker looks up everything else."""
        return json.dumps(
            {
                "account_id": self.account_id,
                "region": self.region,
                "policies": self.policies,
                "now": self.now.isoformat(),
            }
        )


@dataclass(frozen=True)
class UnitRequest:
    """A queue message as written: a request to work on a unit, to be checked against accounts.yml."""

    account_id: str
    region: str
    policies: tuple[str, ...]
    now: datetime

    @classmethod
    def from_message(cls, body: str) -> UnitRequest:
        """RejectedMessageError for anything that is not a unit message at all."""
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise RejectedMessageError("a snapshot message is a JSON object")
            policies, now = data["policies"], datetime.fromisoformat(_text(data["now"], "now"))
            request = cls(
                account_id=_matching(ACCOUNT_ID, data["account_id"], "account_id"),
                region=_matching(REGION_NAME, data["region"], "region"),
                policies=tuple(_text(name, "policies") for name in policies) if isinstance(policies, list) else (),
                now=now,
            )
        except (ValueError, KeyError, TypeError) as error:
            raise RejectedMessageError(str(error)) from None
        if not request.policies:
            raise RejectedMessageError("policies: a list of at least one policy name")
        if request.now.tzinfo is None:
            raise RejectedMessageError(f"now: {data['now']!r} has no timezone")
        return request


def resolve(request: UnitRequest, accounts: AccountsPolicy, home_account_id: str, clock: datetime) -> Unit:
    """The unit a request names, with the account's name, role and regions from accounts.yml, never from the
    message; RejectedMessageError for an account that is not listed, a region it is not worked in, or a time
    far from the worker's clock (a forged `now` would age every snapshot at once)."""
    member = member_in(accounts, request.account_id, request.region, home_account_id)
    if not clock - MESSAGE_AGE_LIMIT <= request.now <= clock + MESSAGE_CLOCK_SKEW:
        raise RejectedMessageError(f"now {request.now.isoformat()} is too far from the worker's clock")
    role_arn = accounts.role_arn(member, BOT) if member else None
    name = member.name if member else "home"
    return Unit(request.account_id, name, request.region, role_arn, request.policies, request.now)


def _text(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field}: {value!r} is not a non-empty string")
    return value


def _matching(pattern: re.Pattern[str], value: object, field: str) -> str:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise ValueError(f"{field}: {value!r} is not valid")
    return value


def applies(policy: SnapshotPolicy, accounts: AccountsPolicy, account_id: str, region: str) -> bool:
    """The policy covers this account (by id, or "home") and region (its own, or the account's)."""
    member = accounts.member(account_id)
    account_key = account_id if member else "home"
    default_regions = accounts.regions_of(member) if member else accounts.defaults.regions
    return (policy.accounts == "all" or account_key in policy.accounts) and region in (
        policy.regions or default_regions
    )


def plan_units(
    policies: SnapshotsPolicy, accounts: AccountsPolicy, targets: Sequence[tuple[Target, str]], now: datetime
) -> tuple[Unit, ...]:
    """The account x region units of this run, each with the policies that cover it.

    Every policy is worked on in every run: a volume whose window already has its snapshot costs nothing
    but the unit's describes, and a run missed (an outage, a role fixed late) is made up by the next one.
    """
    units = []
    for target, name in targets:
        names = tuple(
            policy.name for policy in policies.policies if applies(policy, accounts, target.account_id, target.region)
        )
        if names:
            units.append(Unit(target.account_id, name, target.region, target.role_arn, names, now))
    return tuple(units)
