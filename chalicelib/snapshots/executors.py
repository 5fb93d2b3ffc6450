"""Executors: the only code of this bot that talks to AWS (or, for a dry run, prints)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.aws import error_code, error_message, reason, tags_of
from chalicelib.observability import logger, metrics
from chalicelib.snapshots.decisions import (
    _WINDOW_FORMAT,
    COPY_OF,
    INSTANCE,
    LEDGER_ATTEMPTS,
    LEDGER_BATCH,
    MANAGED,
    POLICY,
    UNIT_CALLS,
    VOLUME,
    WINDOW,
    Entry,
    Holdings,
    Snapshot,
    Unit,
    Volume,
    _Done,
    _Item,
    holdings,
    policy_window,
    snapshot_tags,
    takes,
    to_copy,
    to_prune,
    volumes_to_take,
    window_tag,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import FilterTypeDef, SnapshotTypeDef, TagSpecificationTypeDef

    from chalicelib.snapshots.policy import Retention, SnapshotPolicy, SnapshotsPolicy


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
            ExpressionAttributeValues={":scope": {"S": ledger_scope(account_id, region, policy)}},
        )
        found = (_entry(item) for page in pages for item in page["Items"])
        return {entry.snapshot_id: entry for entry in found}

    def record(self, account_id: str, region: str, policy: str, entries: Sequence[Entry]) -> None:
        scope = ledger_scope(account_id, region, policy)
        self._write([{"PutRequest": {"Item": _item(scope, entry)}} for entry in entries])

    def forget(self, account_id: str, region: str, policy: str, snapshot_ids: Sequence[str]) -> None:
        scope = {"S": ledger_scope(account_id, region, policy)}
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


def ledger_scope(account_id: str, region: str, policy: str) -> str:
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
        copied = [
            entry
            for _, entry in _each(
                to_copy(held.primaries, copies),
                lambda source: there.ec2.copy(policy, source, unit.region),
                lambda source: f"{policy.name}: copy of {source.id} to {there.ec2.region}",
                result,
            )
        ]
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
    planned = takes(volumes, policy.consistency)
    created = [
        entry
        for _, entry in _each(
            planned.volumes, lambda v: here.ec2.take(policy, window, v), lambda v: f"{policy.name}: {v.id}", result
        )
    ]
    for _, entries in _each(
        planned.instances,
        lambda group: here.ec2.take_instance(policy, window, group[0], group[1]),
        lambda group: f"{policy.name}: {group[0]}",
        result,
    ):
        created.extend(entries)
    return created


def _each(
    items: Iterable[_Item],
    act: Callable[[_Item], _Done],
    label: Callable[[_Item], str],
    result: UnitResult,
) -> list[tuple[_Item, _Done]]:
    """`act` on each item, UNIT_CALLS at once (EC2's limits are the account's in the region: adaptive retries
    absorb a throttle); each item with what `act` gave back, in order. A failure is recorded with the item's
    label, and the others go on."""

    def attempt(item: _Item) -> tuple[_Item, _Done] | str:
        try:
            return item, act(item)
        except (ClientError, BotoCoreError) as error:
            return f"{label(item)}: {reason(error)}"

    listed = list(items)
    if len(listed) <= 1:
        outcomes = [attempt(item) for item in listed]
    else:
        with ThreadPoolExecutor(max_workers=UNIT_CALLS) as pool:
            outcomes = list(pool.map(attempt, listed))
    result.failed.extend(outcome for outcome in outcomes if isinstance(outcome, str))
    return [outcome for outcome in outcomes if not isinstance(outcome, str)]


def _prune(here: Scope, snapshots: Sequence[Snapshot], retention: Retention, now: datetime, result: UnitResult) -> None:
    pruning = to_prune(snapshots, retention, now)
    region = here.ec2.region
    for snapshot, why in pruning.skipped:
        logger.info("snapshot kept for now", extra={"snapshot": snapshot.id, "region": region, "reason": why})
    deleted = []
    for snapshot, in_use in _each(
        pruning.prune, here.ec2.delete, lambda s: f"{here.policy.name}: delete {s.id} in {region}", result
    ):
        if in_use is None:
            deleted.append(snapshot.id)
        else:
            logger.info("snapshot in use: kept", extra={"snapshot": snapshot.id, "region": region, "reason": in_use})
            result.kept_in_use.append(snapshot.id)
    if deleted:
        here.forget(deleted, result)
    result.pruned += len(deleted)
