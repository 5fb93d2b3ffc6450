"""Snapshot bot: scheduled EBS snapshots across accounts, with retention that never touches others'.

Every snapshot opsbots takes is tagged `opsbots:managed=true`, `opsbots:policy=<name>` and
`opsbots:window=<start of the policy's time window>`. The window tag makes each run idempotent (a
second run, a duplicate SQS message or a retried worker finds the volume done for this window) and
gives retention a clock that tests and dry runs can move; the managed and policy tags are the only
way a snapshot becomes eligible for pruning, so hand-made snapshots and other tools' survive.

Work is cut into units of one account x region. The hourly `take_snapshots` sends one SQS message
per unit when `OPSBOTS_SNAPSHOT_QUEUE` is set, and otherwise runs the units itself in a bounded pool.
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
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import notify
from chalicelib.aws import Target
from chalicelib.dedupe import always
from chalicelib.names import ACCOUNT_ID, REGION_NAME, ROLE_ARN
from chalicelib.observability import logger, metrics

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import FilterTypeDef, SnapshotTypeDef, TagSpecificationTypeDef
    from mypy_boto3_sqs import SQSClient

    from chalicelib.aws import Clients
    from chalicelib.dedupe import Once
    from chalicelib.outbox import Mailer
    from chalicelib.policy import AccountsPolicy, Retention, SnapshotPolicy, SnapshotsPolicy

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
)
# The scheduler also learns the home account's id (the worker reads it from its message) and queues units.
SCHEDULER_PERMISSIONS = (*PERMISSIONS, "sts:GetCallerIdentity", "sqs:SendMessage")
MANAGED, POLICY, WINDOW, VOLUME, INSTANCE, COPY_OF = (
    "opsbots:managed",
    "opsbots:policy",
    "opsbots:window",
    "opsbots:volume",
    "opsbots:instance",
    "opsbots:copy-of",
)
CATCH_UP = timedelta(hours=6)  # a window is worked on in its first hours, so failed units are retried
UNIT_THREADS = 8
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
COMPLETED = "completed"
_WINDOW_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

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

    def owned_by(self, policy: str) -> bool:
        return self.tags.get(MANAGED) == "true" and self.tags.get(POLICY) == policy

    @property
    def copy_of(self) -> str | None:
        return self.tags.get(COPY_OF)


@dataclass(frozen=True)
class Pruning:
    prune: tuple[Snapshot, ...]
    skipped: tuple[tuple[Snapshot, str], ...]  # would go, but cannot yet: (snapshot, why)


def window_start(now: datetime, every: timedelta) -> datetime:
    """The start of the window `now` falls in; windows are aligned on the Unix epoch, in UTC."""
    return EPOCH + ((now - EPOCH) // every) * every


def window_tag(window: datetime) -> str:
    return window.astimezone(UTC).strftime(_WINDOW_FORMAT)


def is_due(policy: SnapshotPolicy, now: datetime) -> bool:
    """Worked on during the first hours of each window: later runs in the window have nothing to do."""
    return now - window_start(now, policy.every) < min(policy.every, CATCH_UP)


def volumes_to_take(
    volumes: Iterable[Volume], snapshots: Iterable[Snapshot], policy: str, window: datetime
) -> tuple[tuple[Volume, ...], tuple[Volume, ...]]:
    """(to take, already taken this window) for the policy's selected volumes."""
    done = {s.volume_id for s in snapshots if s.owned_by(policy) and s.window == window and not s.copy_of}
    chosen = sorted(volumes, key=lambda volume: volume.id)
    return tuple(v for v in chosen if v.id not in done), tuple(v for v in chosen if v.id in done)


def to_prune(snapshots: Iterable[Snapshot], policy: str, retention: Retention, now: datetime) -> Pruning:
    """Snapshots retention lets go: beyond the newest `count` of their volume AND older than `max_age`.

    Only snapshots this policy took are considered; pending ones are never deleted.
    """
    per_volume: dict[str, list[Snapshot]] = defaultdict(list)
    for snapshot in snapshots:
        if snapshot.owned_by(policy):
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


def to_copy(sources: Iterable[Snapshot], copies: Iterable[Snapshot], policy: str) -> tuple[Snapshot, ...]:
    """Each volume's newest completed snapshot, when it has no disaster-recovery copy yet.

    A snapshot taken this run is still pending on AWS; the next hourly run copies it.
    """
    copied = {copy.copy_of for copy in copies if copy.owned_by(policy)}
    newest: dict[str, Snapshot] = {}
    for snapshot in sorted(s for s in sources if s.owned_by(policy) and not s.copy_of and s.state == COMPLETED):
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
    """One account x region and the policies due there; the message a worker receives."""

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
        return json.dumps({**asdict(self), "now": self.now.isoformat()})

    @classmethod
    def from_message(cls, body: str) -> Unit:
        """The unit a queue message names; ValueError for anything the scheduler would not have written.

        Every field ends up in an endpoint name, an ARN or a time comparison, so each is checked here
        rather than failing later, outside the unit's own error handling.
        """
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("a snapshot message is a JSON object")
        role_arn, policies, now = data.get("role_arn"), data["policies"], data["now"]
        unit = cls(
            account_id=_matching(ACCOUNT_ID, data["account_id"], "account_id"),
            account_name=_text(data["account_name"], "account_name"),
            region=_matching(REGION_NAME, data["region"], "region"),
            role_arn=None if role_arn is None else _matching(ROLE_ARN, role_arn, "role_arn"),
            policies=tuple(_text(name, "policies") for name in policies) if isinstance(policies, list) else (),
            now=datetime.fromisoformat(_text(now, "now")),
        )
        if not unit.policies:
            raise ValueError("policies: a list of at least one policy name")
        if unit.now.tzinfo is None:
            raise ValueError(f"now: {now!r} has no timezone")
        return unit


def _text(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field}: {value!r} is not a non-empty string")
    return value


def _matching(pattern: re.Pattern[str], value: object, field: str) -> str:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise ValueError(f"{field}: {value!r} is not valid")
    return value


def plan_units(
    policies: SnapshotsPolicy, accounts: AccountsPolicy, targets: Sequence[tuple[Target, str]], now: datetime
) -> tuple[Unit, ...]:
    """The account x region units of this run, each with the policies due there."""
    due = [policy for policy in policies.policies if is_due(policy, now)]
    units = []
    for target, name in targets:
        member = accounts.member(target.account_id)
        account_key = target.account_id if member else "home"
        default_regions = accounts.regions_of(member) if member else accounts.defaults.regions
        names = tuple(
            policy.name
            for policy in due
            if (policy.accounts == "all" or account_key in policy.accounts)
            and target.region in (policy.regions or default_regions)
        )
        if names:
            units.append(Unit(target.account_id, name, target.region, target.role_arn, names, now))
    return tuple(units)


# ---------------------------------------------------------------------------------------------
# Executors.
# ---------------------------------------------------------------------------------------------


def _tag_filters(tags: Mapping[str, str]) -> list[FilterTypeDef]:
    return [{"Name": f"tag:{key}", "Values": [value]} for key, value in sorted(tags.items())]


def _tags(raw: Iterable[Mapping[str, str]] | None) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in raw or ()}


def _tag_specification(resource: str, tags: Mapping[str, str]) -> TagSpecificationTypeDef:
    return {"ResourceType": resource, "Tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]}  # type: ignore[typeddict-item]


def snapshot_from_api(raw: SnapshotTypeDef) -> Snapshot:
    tags = _tags(raw.get("Tags"))  # type: ignore[arg-type]
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
                tags=_tags(volume.get("Tags")),  # type: ignore[arg-type]
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

    def snapshots_of(self, policy: str) -> tuple[Snapshot, ...]:
        pages = self._ec2.get_paginator("describe_snapshots").paginate(
            OwnerIds=["self"], Filters=_tag_filters({MANAGED: "true", POLICY: policy})
        )
        return tuple(snapshot_from_api(raw) for page in pages for raw in page["Snapshots"])

    def take(self, policy: SnapshotPolicy, window: datetime, volume: Volume) -> str:
        return self._ec2.create_snapshot(
            VolumeId=volume.id,
            Description=f"opsbots {policy.name} {window_tag(window)}",
            TagSpecifications=[_tag_specification("snapshot", snapshot_tags(policy, window, volume))],
        )["SnapshotId"]

    def take_instance(
        self, policy: SnapshotPolicy, window: datetime, instance_id: str, volumes: Sequence[Volume]
    ) -> int:
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
        return len(created)

    def delete(self, snapshot: Snapshot) -> str | None:
        """None when deleted (or already gone); else why it was kept (in use by an AMI, ...)."""
        try:
            self._ec2.delete_snapshot(SnapshotId=snapshot.id)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code == "InvalidSnapshot.NotFound":
                return None
            if code == "InvalidSnapshot.InUse":
                return str(error.response.get("Error", {}).get("Message", "in use"))
            raise
        return None

    def copy(self, policy: SnapshotPolicy, source: Snapshot, source_region: str) -> str:
        tags = {**{k: v for k, v in source.tags.items() if not k.startswith("aws:")}, VOLUME: source.volume_id}
        tags[COPY_OF] = source.id
        return self._ec2.copy_snapshot(
            SourceRegion=source_region,
            SourceSnapshotId=source.id,
            Description=f"opsbots {policy.name} copy of {source.id} from {source_region}",
            TagSpecifications=[_tag_specification("snapshot", tags)],
        )["SnapshotId"]


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
    failed: list[str] = field(default_factory=list)


def run_unit(unit: Unit, policies: SnapshotsPolicy, ec2_for: Callable[[str], EC2Client]) -> UnitResult:
    """Take, prune and copy for every policy due in one account x region; failures are recorded."""
    result = UnitResult(unit.account_id, unit.account_name, unit.region)
    by_name = {policy.name: policy for policy in policies.policies}
    for name in unit.policies:
        policy = by_name.get(name)
        if policy is None:
            result.failed.append(f"{name}: no such policy (the message is older than the policies)")
            continue
        try:
            _run_policy(policy, unit, Ec2Snapshots(ec2_for(unit.region), unit.region), ec2_for, result)
        except (ClientError, BotoCoreError) as error:
            result.failed.append(f"{name}: {type(error).__name__}: {error}")
    return result


def _run_policy(
    policy: SnapshotPolicy, unit: Unit, here: Ec2Snapshots, ec2_for: Callable[[str], EC2Client], result: UnitResult
) -> None:
    window = window_start(unit.now, policy.every)
    ours = here.snapshots_of(policy.name)
    take, present = volumes_to_take(here.selected(policy), ours, policy.name, window)
    result.present += len(present)
    if policy.consistency == "instance":
        by_instance: dict[str | None, list[Volume]] = defaultdict(list)
        for volume in take:
            by_instance[volume.instance_id].append(volume)
        for instance_id, volumes in sorted(by_instance.items(), key=lambda item: item[0] or ""):
            if instance_id is None:
                result.taken += sum(bool(here.take(policy, window, volume)) for volume in volumes)
            else:
                result.taken += here.take_instance(policy, window, instance_id, volumes)
    else:
        result.taken += sum(bool(here.take(policy, window, volume)) for volume in take)
    _prune(here, ours, policy.name, policy.retention, unit.now, result)
    if policy.copy_to:
        there = Ec2Snapshots(ec2_for(policy.copy_to.region), policy.copy_to.region)
        copies = there.snapshots_of(policy.name)
        for source in to_copy(ours, copies, policy.name):
            there.copy(policy, source, unit.region)
            result.copied += 1
        _prune(there, copies, policy.name, policy.copy_to.retention or policy.retention, unit.now, result)


def _prune(
    here: Ec2Snapshots,
    snapshots: Sequence[Snapshot],
    policy: str,
    retention: Retention,
    now: datetime,
    result: UnitResult,
) -> None:
    pruning = to_prune(snapshots, policy, retention, now)
    for snapshot, why in pruning.skipped:
        logger.info("snapshot kept for now", extra={"snapshot": snapshot.id, "region": here.region, "reason": why})
    for snapshot in pruning.prune:
        in_use = here.delete(snapshot)
        if in_use is None:
            result.pruned += 1
        else:
            logger.info(
                "snapshot in use: kept", extra={"snapshot": snapshot.id, "region": here.region, "reason": in_use}
            )
            result.kept_in_use.append(snapshot.id)


def print_unit(unit: Unit, policies: SnapshotsPolicy, out: Any) -> None:
    """A dry run of one unit: the calls it would make, without making any."""
    out.write(f"    {unit.account_id} ({unit.account_name}) {unit.region}: {', '.join(unit.policies)}\n")
    for policy in (p for p in policies.policies if p.name in unit.policies):
        window = window_tag(window_start(unit.now, policy.every))
        selection = policy.select.model_dump(exclude_defaults=True)
        out.write(f"      ec2.describe_volumes({selection}) + describe_snapshots({POLICY}={policy.name})\n")
        out.write(f"      ec2.create_snapshot for each selected volume without a {WINDOW}={window} snapshot\n")
        out.write(f"      ec2.delete_snapshot for {policy.name} snapshots beyond {_retention_text(policy.retention)}\n")
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


BOT = "snapshots"  # the outbox's name for this bot's parked emails


@dataclass(frozen=True)
class SnapshotDeps:
    clients: Clients
    queue_url: str | None
    sqs: SQSClient | None


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
    """The hourly run: fan the due units out to SQS, or run them here when there is no queue.

    Given the scheduled event's id and a run-once guard, a second delivery of the same event returns
    the first run's result: nothing queued twice, no second failure email. Failure emails that SES
    refused earlier (parked by this run or a worker) are sent first.
    """

    def run() -> dict[str, Any]:
        mailer.flush()
        return _take_snapshots(policies, accounts, deps, mailer, now or datetime.now(UTC))

    return run() if event_id is None else once("take-snapshots", event_id, run)


def _take_snapshots(
    policies: SnapshotsPolicy, accounts: AccountsPolicy, deps: SnapshotDeps, mailer: Mailer, now: datetime
) -> dict[str, Any]:
    units = plan_units(policies, accounts, deps.clients.units(accounts), now)
    if deps.queue_url and deps.sqs:
        for start in range(0, len(units), 10):
            entries = [
                {"Id": str(i), "MessageBody": unit.to_message()} for i, unit in enumerate(units[start : start + 10])
            ]
            deps.sqs.send_message_batch(QueueUrl=deps.queue_url, Entries=entries)  # type: ignore[arg-type]
        logger.info("snapshot units queued", extra={"units": len(units)})
        metrics.add_metric(name="SnapshotUnitsQueued", unit="Count", value=len(units))
        return {"queued": len(units)}
    with ThreadPoolExecutor(max_workers=UNIT_THREADS) as pool:
        results = list(pool.map(lambda unit: run_unit(unit, policies, _ec2_for(deps.clients, unit)), units))
    return _summarize(results, policies, mailer)


def work_on(
    messages: Iterable[str], *, policies: SnapshotsPolicy, deps: SnapshotDeps, mailer: Mailer, once: Once = always
) -> dict[str, Any]:
    """The SQS worker: one unit per message; a malformed message is logged and dropped.

    SQS delivers at least once: with a run-once guard, a message seen before (the same body: the same
    unit of the same run) returns the first delivery's result, so a failing unit is emailed once.
    """
    bodies = list(messages)
    key = hashlib.sha256("\n".join(bodies).encode()).hexdigest()
    return once("snapshot-units", key, lambda: _work_on(bodies, policies, deps, mailer))


def _work_on(bodies: Sequence[str], policies: SnapshotsPolicy, deps: SnapshotDeps, mailer: Mailer) -> dict[str, Any]:
    results = []
    for body in bodies:
        try:
            unit = Unit.from_message(body)
        except (ValueError, KeyError, TypeError) as error:
            logger.warning("malformed snapshot message dropped", extra={"reason": str(error)})
            metrics.add_metric(name="MalformedEvents", unit="Count", value=1)
            continue
        results.append(run_unit(unit, policies, _ec2_for(deps.clients, unit)))
    return _summarize(results, policies, mailer)


def _ec2_for(clients: Clients, unit: Unit) -> Callable[[str], EC2Client]:
    return lambda region: clients.client("ec2", Target(unit.account_id, region, unit.role_arn))


def _summarize(results: Sequence[UnitResult], policies: SnapshotsPolicy, mailer: Mailer) -> dict[str, Any]:
    totals = {key: sum(getattr(r, key) for r in results) for key in ("taken", "present", "pruned", "copied")}
    failed = [f"{r.account_id}/{r.region}: {failure}" for r in results for failure in r.failed]
    for name, value in (*totals.items(), ("failed", len(failed))):
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
