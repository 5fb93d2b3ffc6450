"""Snapshot bot: scheduled EBS snapshots across accounts, with retention that never touches others'.

Ownership is proven by the ledger, never by tags: every snapshot (and DR copy) opsbots takes is recorded
in a DynamoDB table only the bot writes (`OPSBOTS_SNAPSHOT_LEDGER`: its account, region, policy, volume,
window and, for a copy, its source). Tags (`opsbots:managed`, `opsbots:policy`, `opsbots:window`, ...)
are still written, because they let people and the IAM condition on `ec2:DeleteSnapshot` tell opsbots'
snapshots apart; but anyone allowed `ec2:CreateTags` can copy them onto a snapshot of their own, so a
tagged snapshot the ledger does not know is foreign: never deleted, never counted, reported.

Windows are aligned on the Unix epoch in UTC (shifted by a policy's `at`); a policy is worked on in
every hourly run of its window until each selected volume has its snapshot, so a missed hour costs
nothing. Work is cut into units of one account x region. The hourly `take_snapshots` sends one SQS
message per unit when `OPSBOTS_SNAPSHOT_QUEUE` is set, and otherwise runs the units itself in a
bounded pool; a worker treats a message as a request, never a command: account, role and regions come
from accounts.yml, and a time far from its own clock is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import notify
from chalicelib.aws import Target, error_code, error_message, reason, tags_of
from chalicelib.dedupe import always
from chalicelib.names import ACCOUNT_ID, REGION_NAME
from chalicelib.observability import logger, metrics

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import FilterTypeDef, SnapshotTypeDef, TagSpecificationTypeDef
    from mypy_boto3_sqs import SQSClient

    from chalicelib.aws import Clients
    from chalicelib.dedupe import Once
    from chalicelib.outbox import Mailer
    from chalicelib.policy import AccountsPolicy, MemberBot, Retention, SnapshotPolicy, SnapshotsPolicy

PERMISSIONS = (
    "ec2:DescribeVolumes",
    "ec2:DescribeInstances",
    "ec2:DescribeSnapshots",
    "ec2:CreateSnapshot",
    "ec2:CreateSnapshots",
    "ec2:CreateTags",
    "ec2:CopySnapshot",
    "ec2:DeleteSnapshot",
    "ses:SendEmail",
    "sts:AssumeRole",
    "sts:GetCallerIdentity",
    "dynamodb:Query",  # the ledger
    "dynamodb:BatchWriteItem",
)
SCHEDULER_PERMISSIONS = (*PERMISSIONS, "sqs:SendMessage")
MANAGED, POLICY, WINDOW, VOLUME, INSTANCE, COPY_OF = (
    "opsbots:managed",
    "opsbots:policy",
    "opsbots:window",
    "opsbots:volume",
    "opsbots:instance",
    "opsbots:copy-of",
)
UNIT_THREADS = 8
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


class RejectedMessageError(ValueError):
    """A queue message the scheduler would not have written, or not for this estate: dropped, never acted on."""


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
    member = accounts.member(request.account_id)
    if member is None and request.account_id != home_account_id:
        raise RejectedMessageError(f"account {request.account_id} is not in accounts.yml")
    regions = accounts.regions_of(member) if member else accounts.defaults.regions
    if request.region not in regions:
        raise RejectedMessageError(f"region {request.region} is not one of account {request.account_id}'s")
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


# ---------------------------------------------------------------------------------------------
# Executors.
# ---------------------------------------------------------------------------------------------


def _tag_filters(tags: Mapping[str, str]) -> list[FilterTypeDef]:
    return [{"Name": f"tag:{key}", "Values": [value]} for key, value in sorted(tags.items())]


def _tag_specification(resource: str, tags: Mapping[str, str]) -> TagSpecificationTypeDef:
    return {"ResourceType": resource, "Tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]}  # type: ignore[typeddict-item]


def snapshot_from_api(raw: SnapshotTypeDef) -> Snapshot:
    """A snapshot as EC2 describes it; its tags say what it claims to be, not whose it is."""
    tags = tags_of(raw.get("Tags"))
    try:
        window = datetime.strptime(tags.get(WINDOW, ""), _WINDOW_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        window = raw["StartTime"]
    return Snapshot(window, raw["SnapshotId"], tags.get(VOLUME) or raw.get("VolumeId", ""), raw.get("State", ""), tags)


class Ec2Snapshots:
    """EC2 calls for one account x region; every describe is paginated and filtered by tag server-side."""

    def __init__(self, ec2: EC2Client, region: str) -> None:
        self._ec2 = ec2
        self.region = region

    def selected(self, policy: SnapshotPolicy) -> tuple[Volume, ...]:
        filters = _tag_filters(policy.select.tags)
        if policy.select.instance_tags:
            attached = self._volumes_of_instances(policy.select.instance_tags)
            if not attached:
                return ()
            filters.append({"Name": "volume-id", "Values": sorted(attached)})
        volumes = self._ec2.get_paginator("describe_volumes").paginate(Filters=filters)
        return tuple(
            Volume(
                id=volume["VolumeId"],
                tags=tags_of(volume.get("Tags")),
                instance_id=next((a["InstanceId"] for a in volume.get("Attachments", []) if "InstanceId" in a), None),
            )
            for page in volumes
            for volume in page["Volumes"]
        )

    def _volumes_of_instances(self, instance_tags: Mapping[str, str]) -> set[str]:
        instances = self._ec2.get_paginator("describe_instances").paginate(Filters=_tag_filters(instance_tags))
        return {
            device["Ebs"]["VolumeId"]
            for page in instances
            for reservation in page["Reservations"]
            for instance in reservation.get("Instances", [])
            for device in instance.get("BlockDeviceMappings", [])
            if "Ebs" in device
        }

    def tagged(self, policy: str) -> tuple[Snapshot, ...]:
        """The account's snapshots carrying the policy's tags: opsbots' own, and any that copied them."""
        pages = self._ec2.get_paginator("describe_snapshots").paginate(
            OwnerIds=["self"], Filters=_tag_filters({MANAGED: "true", POLICY: policy})
        )
        return tuple(snapshot_from_api(raw) for page in pages for raw in page["Snapshots"])

    def take(self, policy: SnapshotPolicy, window: datetime, volume: Volume) -> Entry:
        snapshot_id = self._ec2.create_snapshot(
            VolumeId=volume.id,
            Description=f"opsbots {policy.name} {window_tag(window)}",
            TagSpecifications=[_tag_specification("snapshot", snapshot_tags(policy, window, volume))],
        )["SnapshotId"]
        return Entry(snapshot_id, volume.id, window)

    def take_instance(
        self, policy: SnapshotPolicy, window: datetime, instance_id: str, volumes: Sequence[Volume]
    ) -> tuple[Entry, ...]:
        """Crash-consistent snapshots of an instance's selected volumes, in one call."""
        described = self._ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        wanted = {volume.id for volume in volumes}
        others = [
            device["Ebs"]["VolumeId"]
            for device in described.get("BlockDeviceMappings", [])
            if "Ebs" in device and device["Ebs"]["VolumeId"] not in wanted
        ]
        tags = snapshot_tags(policy, window, None) | {INSTANCE: instance_id}
        copy_tags: dict[str, Any] = {"CopyTagsFromSource": "volume"} if policy.copy_tags else {}
        created = self._ec2.create_snapshots(
            InstanceSpecification={
                "InstanceId": instance_id,
                "ExcludeBootVolume": False,
                "ExcludeDataVolumeIds": others,
            },
            Description=f"opsbots {policy.name} {window_tag(window)}",
            TagSpecifications=[_tag_specification("snapshot", tags)],
            **copy_tags,
        )["Snapshots"]
        return tuple(Entry(snapshot["SnapshotId"], snapshot.get("VolumeId", ""), window) for snapshot in created)

    def delete(self, snapshot: Snapshot) -> str | None:
        """None when deleted (or already gone); else why it was kept (in use by an AMI, ...)."""
        try:
            self._ec2.delete_snapshot(SnapshotId=snapshot.id)
        except ClientError as error:
            code = error_code(error)
            if code == "InvalidSnapshot.NotFound":
                return None
            if code == "InvalidSnapshot.InUse":
                return error_message(error) or "in use"
            raise
        return None

    def copy(self, policy: SnapshotPolicy, source: Snapshot, source_region: str) -> Entry:
        tags = {**{k: v for k, v in source.tags.items() if not k.startswith("aws:")}, VOLUME: source.volume_id}
        tags[COPY_OF] = source.id
        snapshot_id = self._ec2.copy_snapshot(
            SourceRegion=source_region,
            SourceSnapshotId=source.id,
            Description=f"opsbots {policy.name} copy of {source.id} from {source_region}",
            TagSpecifications=[_tag_specification("snapshot", tags)],
        )["SnapshotId"]
        return Entry(snapshot_id, source.volume_id, source.window, copy_of=source.id)


class LedgerError(Exception):
    """The ledger could not record or forget some snapshots; what it lists is reported, never silently lost."""


class LedgerUnavailableError(Exception):
    """The ledger could not be read: nothing can be proven opsbots', so nothing is deleted."""


class Ledger:
    """The snapshots opsbots created, per account, region and policy, in a table only the bot writes.

    Partition key `scope` = "<account>/<region>/<policy>", sort key `snapshot`. A unit reads its scope once
    (one Query per policy and region) and writes what it created and deleted in batches of 25.
    """

    def __init__(self, dynamodb: DynamoDBClient, table: str) -> None:
        self._dynamodb = dynamodb
        self._table = table

    def entries(self, account_id: str, region: str, policy: str) -> dict[str, Entry]:
        pages = self._dynamodb.get_paginator("query").paginate(
            TableName=self._table,
            KeyConditionExpression="#scope = :scope",
            ExpressionAttributeNames={"#scope": "scope"},
            ExpressionAttributeValues={":scope": {"S": _scope(account_id, region, policy)}},
        )
        found = (_entry(item) for page in pages for item in page["Items"])
        return {entry.snapshot_id: entry for entry in found}

    def record(self, account_id: str, region: str, policy: str, entries: Sequence[Entry]) -> None:
        scope = _scope(account_id, region, policy)
        self._write([{"PutRequest": {"Item": _item(scope, entry)}} for entry in entries])

    def forget(self, account_id: str, region: str, policy: str, snapshot_ids: Sequence[str]) -> None:
        scope = {"S": _scope(account_id, region, policy)}
        self._write([{"DeleteRequest": {"Key": {"scope": scope, "snapshot": {"S": i}}}} for i in snapshot_ids])

    def _write(self, requests: Sequence[Mapping[str, Any]]) -> None:
        for start in range(0, len(requests), LEDGER_BATCH):
            pending: list[Any] = list(requests[start : start + LEDGER_BATCH])
            for _ in range(LEDGER_ATTEMPTS):
                answer = self._dynamodb.batch_write_item(RequestItems={self._table: pending})
                pending = list(answer.get("UnprocessedItems", {}).get(self._table, []))
                if not pending:
                    break
            if pending:
                raise LedgerError(f"{len(pending)} ledger write(s) left unprocessed after {LEDGER_ATTEMPTS} tries")


def _scope(account_id: str, region: str, policy: str) -> str:
    return f"{account_id}/{region}/{policy}"


def _item(scope: str, entry: Entry) -> dict[str, Any]:
    item = {
        "scope": {"S": scope},
        "snapshot": {"S": entry.snapshot_id},
        "volume": {"S": entry.volume_id},
        "window": {"S": window_tag(entry.window)},
    }
    return item | ({"copy_of": {"S": entry.copy_of}} if entry.copy_of else {})


def _entry(item: Mapping[str, Any]) -> Entry:
    window = datetime.strptime(item["window"]["S"], _WINDOW_FORMAT).replace(tzinfo=UTC)
    copy_of = item.get("copy_of", {}).get("S")
    return Entry(item["snapshot"]["S"], item["volume"]["S"], window, copy_of)


@dataclass
class UnitResult:
    account_id: str
    account_name: str
    region: str
    taken: int = 0
    present: int = 0
    pruned: int = 0
    copied: int = 0
    kept_in_use: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)  # tagged as opsbots', unknown to the ledger: left alone
    failed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Scope:
    """Where one policy's work happens in a unit: the region's snapshots and the ledger's scope for them."""

    unit: Unit
    policy: SnapshotPolicy
    ec2: Ec2Snapshots
    ledger: Ledger

    def holdings(self) -> Holdings:
        tagged = self.ec2.tagged(self.policy.name)
        try:
            entries = self.ledger.entries(self.unit.account_id, self.ec2.region, self.policy.name)
        except (ClientError, BotoCoreError) as error:
            raise LedgerUnavailableError(reason(error)) from error
        held = holdings(tagged, entries)
        if held.foreign:
            # Once per run and scope: someone copied opsbots' tags onto snapshots opsbots did not take.
            logger.warning(
                "snapshots carry opsbots' tags but are not in its ledger: never deleted, never counted",
                extra={
                    "account": self.unit.account_id,
                    "region": self.ec2.region,
                    "policy": self.policy.name,
                    "snapshots": [snapshot.id for snapshot in held.foreign],
                },
            )
            metrics.add_metric(name="ForeignSnapshots", unit="Count", value=len(held.foreign))
        return held

    def record(self, entries: Sequence[Entry], result: UnitResult) -> None:
        try:
            self.ledger.record(self.unit.account_id, self.ec2.region, self.policy.name, entries)
        except (LedgerError, ClientError, BotoCoreError) as error:
            ids = ", ".join(entry.snapshot_id for entry in entries)
            result.failed.append(
                f"{self.policy.name}: not recorded in the ledger (never pruned): {ids}: {reason(error)}"
            )

    def forget(self, snapshot_ids: Sequence[str], result: UnitResult) -> None:
        try:
            self.ledger.forget(self.unit.account_id, self.ec2.region, self.policy.name, snapshot_ids)
        except (LedgerError, ClientError, BotoCoreError) as error:
            result.failed.append(f"{self.policy.name}: deleted but still in the ledger: {reason(error)}")


def run_unit(
    unit: Unit,
    policies: SnapshotsPolicy,
    ec2_for: Callable[[str], EC2Client],
    ledger: Ledger,
    now: datetime | None = None,
) -> UnitResult:
    """Take, prune and copy for every policy of one account x region; each failure is recorded on its own.

    `now` is the clock retention ages snapshots by (default: the unit's time); the window comes from the unit.
    """
    result = UnitResult(unit.account_id, unit.account_name, unit.region)
    by_name = {policy.name: policy for policy in policies.policies}
    for name in unit.policies:
        policy = by_name.get(name)
        if policy is None:
            result.failed.append(f"{name}: no such policy (the message is older than the policies)")
            continue
        try:
            here = Scope(unit, policy, Ec2Snapshots(ec2_for(unit.region), unit.region), ledger)
            _run_policy(here, ec2_for, now or unit.now, result)
        except (ClientError, BotoCoreError) as error:
            result.failed.append(f"{name}: {type(error).__name__}: {error}")
    return result


def _run_policy(here: Scope, ec2_for: Callable[[str], EC2Client], now: datetime, result: UnitResult) -> None:
    policy, unit = here.policy, here.unit
    window = policy_window(policy, unit.now)
    try:
        held = here.holdings()
    except LedgerUnavailableError as error:
        _backups_without_the_ledger(here, window, result, error)
        return
    result.foreign += [snapshot.id for snapshot in held.foreign]
    take, present = volumes_to_take(here.ec2.selected(policy), held.primaries, window)
    result.present += len(present)
    created = _take(here, window, take, result)
    if created:
        here.record(created, result)
    result.taken += len(created)
    _prune(here, held.primaries, policy.retention, now, result)
    if policy.copy_to and policy.copy_to.region != unit.region:  # a copy in its own region recovers nothing
        there = Scope(unit, policy, Ec2Snapshots(ec2_for(policy.copy_to.region), policy.copy_to.region), here.ledger)
        copies = there.holdings().copies  # the DR region's own primaries are not copies
        copied = _each(
            to_copy(held.primaries, copies),
            lambda source: there.ec2.copy(policy, source, unit.region),
            lambda source: f"{policy.name}: copy of {source.id} to {there.ec2.region}",
            result,
        )
        if copied:
            there.record(copied, result)
        result.copied += len(copied)
        _prune(there, copies, policy.copy_to.retention or policy.retention, now, result)


def _backups_without_the_ledger(
    here: Scope, window: datetime, result: UnitResult, error: LedgerUnavailableError
) -> None:
    """The ledger cannot be read: backups go on, nothing is deleted or copied.

    Without the ledger nothing can be proven ours, so nothing is pruned; the tags, which are good enough to
    say "this window is done" (at worst a spoof skips one take while the ledger is also down), keep an
    outage from taking a snapshot every hour. What is taken is recorded if the ledger answers by then.
    """
    logger.error(
        "the snapshot ledger is unavailable: taking this window's snapshots, pruning and copying nothing",
        extra={"account": here.unit.account_id, "region": here.ec2.region, "reason": str(error)},
    )
    metrics.add_metric(name="LedgerUnavailable", unit="Count", value=1)
    result.failed.append(f"{here.policy.name}: the ledger is unavailable, nothing pruned or copied: {error}")
    tagged = [snapshot for snapshot in here.ec2.tagged(here.policy.name) if COPY_OF not in snapshot.tags]
    take, present = volumes_to_take(here.ec2.selected(here.policy), tagged, window)
    result.present += len(present)
    created = _take(here, window, take, result)
    if created:
        here.record(created, result)
    result.taken += len(created)


def _take(here: Scope, window: datetime, volumes: Sequence[Volume], result: UnitResult) -> list[Entry]:
    """Snapshots of each volume (or each instance's volumes together); one that fails is reported on its own."""
    policy = here.policy
    if policy.consistency == "volume":
        return _each(volumes, lambda v: here.ec2.take(policy, window, v), lambda v: f"{policy.name}: {v.id}", result)
    by_instance: dict[str | None, list[Volume]] = defaultdict(list)
    for volume in volumes:
        by_instance[volume.instance_id].append(volume)
    created = _each(
        by_instance.get(None, []),
        lambda v: here.ec2.take(policy, window, v),
        lambda v: f"{policy.name}: {v.id}",
        result,
    )
    instances = sorted(instance for instance in by_instance if instance is not None)
    for entries in _each(
        instances,
        lambda instance: here.ec2.take_instance(policy, window, instance, by_instance[instance]),
        lambda instance: f"{policy.name}: {instance}",
        result,
    ):
        created.extend(entries)
    return created


def _each(
    items: Iterable[_Item],
    act: Callable[[_Item], _Done],
    label: Callable[[_Item], str],
    result: UnitResult,
) -> list[_Done]:
    """`act` on each item; a failure is recorded with the item's label, and the others go on."""
    done = []
    for item in items:
        try:
            done.append(act(item))
        except (ClientError, BotoCoreError) as error:
            result.failed.append(f"{label(item)}: {reason(error)}")
    return done


def _prune(here: Scope, snapshots: Sequence[Snapshot], retention: Retention, now: datetime, result: UnitResult) -> None:
    pruning = to_prune(snapshots, retention, now)
    region = here.ec2.region
    for snapshot, why in pruning.skipped:
        logger.info("snapshot kept for now", extra={"snapshot": snapshot.id, "region": region, "reason": why})
    deleted = []
    for snapshot, in_use in zip(
        pruning.prune,
        _each(pruning.prune, here.ec2.delete, lambda s: f"{here.policy.name}: delete {s.id} in {region}", result),
        strict=False,
    ):
        if in_use is None:
            deleted.append(snapshot.id)
        else:
            logger.info("snapshot in use: kept", extra={"snapshot": snapshot.id, "region": region, "reason": in_use})
            result.kept_in_use.append(snapshot.id)
    if deleted:
        here.forget(deleted, result)
    result.pruned += len(deleted)


def print_unit(unit: Unit, policies: SnapshotsPolicy, out: Any) -> None:
    """A dry run of one unit: the calls it would make, without making any."""
    out.write(f"    {unit.account_id} ({unit.account_name}) {unit.region}: {', '.join(unit.policies)}\n")
    for policy in (p for p in policies.policies if p.name in unit.policies):
        window = window_tag(policy_window(policy, unit.now))
        selection = policy.select.model_dump(exclude_defaults=True)
        out.write(f"      ec2.describe_volumes({selection}) + describe_snapshots({POLICY}={policy.name})\n")
        out.write(
            f"      dynamodb.query(ledger {_scope(unit.account_id, unit.region, policy.name)})  # whose they are\n"
        )
        out.write(f"      ec2.create_snapshot for each selected volume without its {WINDOW}={window} snapshot\n")
        out.write(f"      ec2.delete_snapshot for ledger snapshots beyond {_retention_text(policy.retention)}\n")
        if policy.copy_to:
            out.write(
                f"      ec2.copy_snapshot to {policy.copy_to.region} for each volume's newest uncopied snapshot\n"
            )


def _retention_text(retention: Retention) -> str:
    count = f"the newest {retention.count}" if retention.count else ""
    age = f"{retention.max_age.days} days old" if retention.max_age and retention.max_age.days else ""
    age = age or (f"{retention.max_age.total_seconds() / 3600:g} hours old" if retention.max_age else "")
    return " and ".join(filter(None, (count, age)))


# ---------------------------------------------------------------------------------------------
# Entry points for app.py.
# ---------------------------------------------------------------------------------------------


BOT: MemberBot = "snapshots"  # its role in member accounts, and the outbox's name for its parked emails


@dataclass(frozen=True)
class SnapshotDeps:
    clients: Clients
    queue_url: str | None
    sqs: SQSClient | None
    ledger: Ledger


class UnitsNotQueuedError(Exception):
    """SQS refused some unit messages twice: the run fails so that Lambda retries it (the workers deduplicate
    the units already queued, which carry the same body)."""


def take_snapshots(
    *,
    policies: SnapshotsPolicy,
    accounts: AccountsPolicy,
    deps: SnapshotDeps,
    mailer: Mailer,
    now: datetime | None = None,
    once: Once = always,
    event_id: str | None = None,
) -> dict[str, Any]:
    """The hourly run: fan the units out to SQS, or run them here when there is no queue.

    `now` is the scheduled event's time, so a retried delivery works on its own windows. Given the event's
    id and a run-once guard, a second delivery of the same event returns the first run's result: nothing
    queued twice, no second failure email. Failure emails that SES refused earlier (parked by this run
    or a worker) are sent first.
    """

    def run() -> dict[str, Any]:
        mailer.flush()
        return _take_snapshots(policies, accounts, deps, mailer, now or datetime.now(UTC))

    return run() if event_id is None else once("take-snapshots", event_id, run)


def _take_snapshots(
    policies: SnapshotsPolicy, accounts: AccountsPolicy, deps: SnapshotDeps, mailer: Mailer, now: datetime
) -> dict[str, Any]:
    units = plan_units(policies, accounts, deps.clients.units(accounts, BOT), now)
    if deps.queue_url and deps.sqs:
        _queue(deps.sqs, deps.queue_url, units)
        return {"queued": len(units)}
    with ThreadPoolExecutor(max_workers=UNIT_THREADS) as pool:
        results = list(
            pool.map(lambda unit: run_unit(unit, policies, _ec2_for(deps.clients, unit), deps.ledger), units)
        )
    return _summarize(results, policies, mailer)


def _queue(sqs: SQSClient, queue_url: str, units: Sequence[Unit]) -> None:
    """One message per unit, in batches of 10; entries SQS refuses are sent again once, then reported."""
    refused: list[Unit] = []
    for start in range(0, len(units), 10):
        refused += _send_batch(sqs, queue_url, units[start : start + 10])
    if refused:
        refused = [
            unit
            for start in range(0, len(refused), 10)
            for unit in _send_batch(sqs, queue_url, refused[start : start + 10])
        ]
    queued = len(units) - len(refused)
    logger.info("snapshot units queued", extra={"units": queued})
    metrics.add_metric(name="SnapshotUnitsQueued", unit="Count", value=queued)
    if refused:
        names = [f"{unit.account_id}/{unit.region}" for unit in refused]
        logger.error("snapshot units not queued: the run fails for Lambda to retry it", extra={"units": names})
        metrics.add_metric(name="SnapshotUnitsNotQueued", unit="Count", value=len(refused))
        raise UnitsNotQueuedError(f"SQS refused {len(refused)} unit message(s) twice: {', '.join(names)}")


def _send_batch(sqs: SQSClient, queue_url: str, units: Sequence[Unit]) -> list[Unit]:
    """The units whose message SQS refused."""
    entries = [{"Id": str(i), "MessageBody": unit.to_message()} for i, unit in enumerate(units)]
    answer = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)  # type: ignore[arg-type]
    return [units[int(failure["Id"])] for failure in answer.get("Failed", [])]


def work_on(
    messages: Iterable[str],
    *,
    policies: SnapshotsPolicy,
    accounts: AccountsPolicy,
    deps: SnapshotDeps,
    mailer: Mailer,
    once: Once = always,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, Any]:
    """The SQS worker: one unit per message. A message is a request, not a command: a malformed one, or one
    naming an account that is not listed or a time far from `clock`, is logged, counted and dropped.

    SQS delivers at least once: with a run-once guard, a message seen before (the same body: the same
    unit of the same run) returns the first delivery's result, so a failing unit is emailed once.
    """
    bodies = list(messages)
    key = hashlib.sha256("\n".join(bodies).encode()).hexdigest()
    return once("snapshot-units", key, lambda: _work_on(bodies, policies, accounts, deps, mailer, clock()))


def _work_on(
    bodies: Sequence[str],
    policies: SnapshotsPolicy,
    accounts: AccountsPolicy,
    deps: SnapshotDeps,
    mailer: Mailer,
    now: datetime,
) -> dict[str, Any]:
    results = []
    for body in bodies:
        try:
            unit = resolve(UnitRequest.from_message(body), accounts, deps.clients.home().account_id, now)
        except RejectedMessageError as error:
            logger.warning("snapshot message rejected", extra={"reason": str(error)})
            metrics.add_metric(name="MalformedEvents", unit="Count", value=1)
            continue
        # Retention ages snapshots by the worker's own clock: a message's time only picks the window.
        results.append(run_unit(unit, policies, _ec2_for(deps.clients, unit), deps.ledger, min(now, unit.now)))
    return _summarize(results, policies, mailer)


def _ec2_for(clients: Clients, unit: Unit) -> Callable[[str], EC2Client]:
    return lambda region: clients.client("ec2", Target(unit.account_id, region, unit.role_arn))


def _summarize(results: Sequence[UnitResult], policies: SnapshotsPolicy, mailer: Mailer) -> dict[str, Any]:
    totals = {key: sum(getattr(r, key) for r in results) for key in ("taken", "present", "pruned", "copied")}
    totals["foreign"] = sum(len(r.foreign) for r in results)
    failed = [f"{r.account_id}/{r.region}: {failure}" for r in results for failure in r.failed]
    for name, value in (*totals.items(), ("failed", len(failed))):
        if name != "foreign":  # counted as ForeignSnapshots, where each is found
            metrics.add_metric(name=f"Snapshots{name.capitalize()}", unit="Count", value=value)
    for result in results:
        logger.info("snapshot unit done", extra=asdict(result))
    failed_accounts = {r.account_id for r in results if r.failed}
    if failed and policies.notify:
        notice = notify.notice(
            "snapshot_failures",
            to=policies.notify.email,
            subject=f"[opsbots] snapshots: {len(failed)} failure(s) in {len(failed_accounts)} account(s)",
            facts={"results": [asdict(result) for result in results]},
        )
        # Parked if SES refuses it; the next scheduled run sends it.
        mailer.deliver(f"snapshot-failures:{mailer.request_id}", notice)
    return {"units": len(results), **totals, "failed": failed}
