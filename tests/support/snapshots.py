"""The snapshot bot in the estate: tagged volumes, the snapshots taken of them, and its schedule and worker run
as the runtime builds them, at a clock of the test's choosing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from chalicelib.runtime import current
from chalicelib.snapshots.decisions import BOT
from chalicelib.snapshots.handlers import schedule_snapshots, snapshot_deps, work_on
from chalicelib.snapshots.policy import SnapshotsPolicy
from tests.support.aws import REGION

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

DR_REGION = "eu-central-1"
FIRST_RUN = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)


def volume(ec2: EC2Client, **tags: str) -> str:
    spec = [{"ResourceType": "volume", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}] if tags else []
    return ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=1, TagSpecifications=spec)["VolumeId"]  # type: ignore[arg-type]


def snapshots_of(ec2: EC2Client, volume_id: str | None = None) -> list[dict[str, Any]]:
    filters = [{"Name": "volume-id", "Values": [volume_id]}] if volume_id else []
    return ec2.describe_snapshots(OwnerIds=["self"], Filters=filters)["Snapshots"]  # type: ignore[arg-type, return-value]


def run(now: datetime) -> dict[str, Any]:
    runtime = current()
    return schedule_snapshots(
        policies=runtime.policies.of(SnapshotsPolicy),
        accounts=runtime.policies.accounts,
        deps=runtime.built(snapshot_deps),
        mailer=runtime.mailer(BOT, None),
        now=now,
    )


def work(bodies: list[str], at: datetime = FIRST_RUN) -> dict[str, Any]:
    """The worker's body, its clock at `at`."""
    runtime = current()
    return work_on(
        bodies,
        policies=runtime.policies.of(SnapshotsPolicy),
        accounts=runtime.policies.accounts,
        deps=runtime.built(snapshot_deps),
        mailer=runtime.mailer(BOT, None),
        clock=lambda: at,
    )
