"""What the fuzz targets share: the sample events, the smallest moto estate in which each, unmutated, makes its
bot do real work, and the check on what a handler returns.

Sample ids (security groups and rules, the instance, the upload's ETag and version) are swapped for
ids moto really holds, so a valid event gets past parsing into the AWS calls: a revoke and an email,
a describe and Route53 records, a download and rendered thumbnails, snapshots taken and copied.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from PIL import Image

from chalicelib.aws import Clients, Target
from chalicelib.dns.executors import Registry
from chalicelib.dns.handlers import DnsDeps, ZoneCache
from chalicelib.fanout import Runs, UnitRequest
from chalicelib.outbox import Mailer, mailer_for
from chalicelib.policy import Policies, load_policies
from chalicelib.snapshots.decisions import Unit
from chalicelib.snapshots.executors import Ledger
from chalicelib.snapshots.handlers import SnapshotDeps
from chalicelib.snapshots.policy import SnapshotsPolicy
from chalicelib.thumbnails.handlers import ThumbnailDeps
from demo.environment import create_table
from tests.support.aws import EVENTS, HOME, MEMBER, REGION, ROOT, load_event
from tests.support.dns import SAMPLE_INSTANCE, public_subnet, zones
from tests.support.estate import SENDER

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

SG_EVENTS = sorted(path.stem for path in EVENTS.glob("sg-*.json"))
EC2_EVENTS = sorted(path.stem for path in EVENTS.glob("ec2-state-*.json"))
S3_EVENTS = ["s3-object-created", "s3-notification-put"]
SAMPLES = {name: load_event(name) for name in (*SG_EVENTS, *EC2_EVENTS, *S3_EVENTS, "scheduled-event")}
DNS_TABLE = "opsbots-dns"
SNAPSHOT_LEDGER = "opsbots-snapshot-ledger"
RUNS_TABLE = "opsbots-runs"
SWEEP_RUN = "fuzz-sweep-run"  # the fanned-out sweep the worker's messages belong to
DNS_RUN = "dns-fuzz-run"  # the fanned-out DNS reconcile the worker's messages belong to
WEBSITES_TABLE = "opsbots-websites"
SAMPLE_ETAG = "7f3e9a1c5b2d8e4f6a0c9b3d1e7f5a28"
SAMPLE_VERSION = "kX3vQ8nR1tW6yB4mZ9pL2dF7hJ0sC5aE"
UPLOAD_KEY = "uploads/summer holiday/été 01.JPG"
BUCKET = "photos-upload"
SNAPSHOT_TIME = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
SETUP_ROLE = f"arn:aws:iam::{MEMBER}:role/fuzz-setup"  # the world's own hands in the member account
SNAPSHOT_ROLE = f"arn:aws:iam::{MEMBER}:role/opsbots-member-snapshots"  # accounts.yml's default


def tagged(resource: str, tags: list[dict[str, str]]) -> Any:
    return {"ResourceType": resource, "Tags": tags}


@cache
def _shipped_policies() -> Policies:
    return load_policies(ROOT / "policies")


@cache
def _home_session() -> boto3.Session:
    """One home session for every test: it keeps the parsed service models (~0.3 s a session to read).

    Safe to share: it holds only the fake credentials; the clients and assumed roles live in each `Clients`.
    """
    return boto3.Session()


@dataclass
class World:
    """What every handler needs, built inside the caller's `mock_aws`, the way the runtime builds it."""

    policies: Policies
    clients: Clients

    @classmethod
    def build(cls) -> World:
        boto3.client("sesv2", region_name=REGION).create_email_identity(EmailIdentity=SENDER)
        create_table(boto3.client("dynamodb", region_name=REGION), "SnapshotLedgerTable")
        create_table(boto3.client("dynamodb", region_name=REGION), "WebsiteStateTable")
        create_table(boto3.client("dynamodb", region_name=REGION), "RunsTable")
        return cls(_shipped_policies(), Clients(external_id="test-external-id", home_session=_home_session()))

    def mailer(self, bot: str) -> Mailer:
        return mailer_for(bot, self.clients, None)

    def ec2(self, account: str) -> EC2Client:
        target = Target(account, REGION, SETUP_ROLE if account == MEMBER else None)
        return self.clients.client("ec2", target)

    def sg_kwargs(self) -> dict[str, Any]:
        return {
            "policies": self.policies,
            "clients": self.clients,
            "mailer": self.mailer("security_groups"),
        }

    def sweep_runs(self) -> Runs:
        return Runs(self.clients.client("dynamodb", Target(HOME, REGION)), RUNS_TABLE)

    def sweep_kwargs(self) -> dict[str, Any]:
        """The sweep worker's arguments."""
        return {**self.sg_kwargs(), "runs": self.sweep_runs()}

    def dns_deps(self) -> DnsDeps:
        home = Target(HOME, REGION)
        route53 = self.clients.client("route53", home)
        registry = Registry(self.clients.client("dynamodb", home), DNS_TABLE)
        return DnsDeps(self.clients, route53, registry, ZoneCache(route53))

    def thumbnail_deps(self) -> ThumbnailDeps:
        return ThumbnailDeps(lambda region: self.clients.client("s3", Target(HOME, region)))

    def snapshot_kwargs(self) -> dict[str, Any]:
        """The worker's arguments, its clock at the messages' time."""
        return {
            "policies": self.policies.of(SnapshotsPolicy),
            "accounts": self.policies.accounts,
            "deps": self.snapshot_deps(),
            "mailer": self.mailer("snapshots"),
            "clock": lambda: SNAPSHOT_TIME,
        }

    def snapshot_deps(self) -> SnapshotDeps:
        ledger = Ledger(self.clients.client("dynamodb", Target(HOME, REGION)), SNAPSHOT_LEDGER)
        return SnapshotDeps(self.clients, None, None, ledger)


def with_ids(value: Any, ids: dict[str, str]) -> Any:
    """`value` with every sample id in its strings (keys included) swapped for the real one."""
    if isinstance(value, str):
        for sample, real in ids.items():
            value = value.replace(sample, real)
        return value
    if isinstance(value, dict):
        return {with_ids(key, ids): with_ids(item, ids) for key, item in value.items()}
    if isinstance(value, list):
        return [with_ids(item, ids) for item in value]
    return value


def security_group_ids(world: World, names: list[str]) -> dict[str, str]:
    """Real groups and rules for the samples' ids (each rule opens a port to the world in its event's first group)."""
    real: dict[str, str] = {}
    vpcs: dict[str, str] = {}
    for name in names:
        sample = load_event(name)
        text = json.dumps(sample)
        account = sample["account"] if sample["account"] in (HOME, MEMBER) else HOME
        ec2 = world.ec2(account)
        if account not in vpcs:
            vpcs[account] = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        groups = list(dict.fromkeys(re.findall(r"\bsg-[0-9a-f]+", text)))
        for group in groups:
            if group not in real:
                created = ec2.create_security_group(GroupName=group, Description="fuzz", VpcId=vpcs[account])
                real[group] = created["GroupId"]
        for rule in dict.fromkeys(re.findall(r"\bsgr-[0-9a-f]+", text)):
            port = 20 + len(real)
            permission = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
            rules = ec2.authorize_security_group_ingress(GroupId=real[groups[0]], IpPermissions=[permission])  # type: ignore[list-item]
            real[rule] = rules["SecurityGroupRules"][0]["SecurityGroupRuleId"]
    return real


def dns_ids(world: World) -> dict[str, str]:
    """A running, selected, named instance for the samples' instance, in a VPC with a private and a public zone."""
    create_table(boto3.client("dynamodb", region_name=REGION), "DnsRegistryTable")
    ec2 = world.ec2(HOME)
    vpc, subnet = public_subnet(ec2, "10.0.0.0/16")
    zones(boto3.client("route53", region_name=REGION), vpc)
    named = [{"Key": "Name", "Value": "app-1"}, {"Key": "opsbots:dns", "Value": "yes"}]
    instance = ec2.run_instances(
        ImageId="ami-12345678", MinCount=1, MaxCount=1, SubnetId=subnet, TagSpecifications=[tagged("instance", named)]
    )["Instances"][0]["InstanceId"]
    return {SAMPLE_INSTANCE: instance}


def upload_ids(world: World) -> dict[str, str]:
    """A small JPEG really stored at the samples' key (versioned bucket): its real ETag and version."""
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    picture = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(picture, "JPEG")
    stored = s3.put_object(Bucket=BUCKET, Key=UPLOAD_KEY, Body=picture.getvalue())
    return {SAMPLE_ETAG: stored["ETag"].strip('"'), SAMPLE_VERSION: stored["VersionId"]}


def snapshot_volumes(world: World) -> None:
    """A volume the shipped `daily` policy selects, in the home and in the member account."""
    for account in (HOME, MEMBER):
        world.ec2(account).create_volume(
            AvailabilityZone=f"{REGION}a",
            Size=1,
            TagSpecifications=[tagged("volume", [{"Key": "Backup", "Value": "daily"}])],
        )


def unit_message(account: str) -> dict[str, Any]:
    """The worker's message for the shipped `daily` policy in `account`, as the schedule queues it."""
    name, role = ("home", None) if account == HOME else ("workloads", SNAPSHOT_ROLE)
    message: dict[str, Any] = json.loads(Unit(account, name, REGION, role, ("daily",), SNAPSHOT_TIME).to_message())
    return message


def sweep_message(account: str, run: str = SWEEP_RUN) -> dict[str, Any]:
    """The sweep worker's message for `account` in the run `SWEEP_RUN` (or the DNS reconcile's in `run`), as the
    schedule queues it."""
    message: dict[str, Any] = json.loads(UnitRequest(run, account, REGION).to_message())
    return message


def summary(result: Any) -> dict[str, Any]:
    """What a handler returns is a dict Lambda can send back as JSON."""
    assert isinstance(result, dict), result
    json.dumps(result)
    return result
