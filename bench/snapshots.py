"""`python -m bench.snapshots`: the snapshot bot against a plain serial loop, same estate, same moto.

Two ways to snapshot every volume tagged Backup=daily in 10 member accounts x 2 regions:

- ours: `chalicelib.snapshots.take_snapshots`, units of one account x region run in its thread pool,
  each unit one tag-filtered DescribeSnapshots and DescribeVolumes, then one CreateSnapshot per
  volume with its tags in the same call (TagSpecifications);
- serial: the way Ops Automator does it, one account after the other with one client each, and per
  volume DescribeSnapshots (volume-id filter), CreateSnapshot, then CreateTags.

Both run on the same estate, serial first: its snapshots carry no opsbots tag, so ours, which
finds its own by tag, starts from the same nothing. Each is timed from its first session to its
last call, client construction included (a Lambda container woken hourly is usually cold). API calls
are counted by a botocore `before-call` handler registered on every session either one builds
(`chalicelib.aws.Clients(handlers=...)` for ours). A second round adds a per-call latency with a
`before-send` handler that sleeps: moto answers in milliseconds from this very process, which caps
throughput and hides what concurrency buys against AWS, where a call takes tens of milliseconds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import boto3
import botocore.session

from bench.machine import header
from chalicelib.aws import Clients
from chalicelib.notify import SesNotifier
from chalicelib.policy import Policies, load_policies
from chalicelib.settings import SHIPPED_POLICIES
from chalicelib.snapshots import SnapshotDeps, take_snapshots
from demo.environment import moto_server

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import TagSpecificationTypeDef
    from mypy_boto3_sts import STSClient

RESULTS = Path(__file__).resolve().parent / "results" / "snapshots.md"
MEMBERS = tuple(f"2000000000{n:02d}" for n in range(1, 11))
REGIONS = ("eu-west-1", "us-east-1")
UNITS = tuple((account, region) for account in MEMBERS for region in REGIONS)
HOME_REGION = REGIONS[0]
ROLE_NAME = "opsbots-member"
EXTERNAL_ID = "opsbots-bench"
SELECT = ("Backup", "daily")
NOW = datetime(2026, 1, 5, 1, 0, tzinfo=UTC)  # one hour into the daily window: the policy is due
SETUP_THREADS = 8
ACCOUNTS_YML = """\
defaults:
  role_name: {role}
  regions: [{regions}]
accounts:
{accounts}
"""
SNAPSHOTS_YML = """\
policies:
  - name: daily
    every: 24h
    select: {tags: {Backup: daily}}
    retention: {count: 7}
"""


@dataclass(frozen=True)
class Round:
    latency: float  # seconds slept before each HTTP request
    volumes_per_unit: int

    @property
    def volumes(self) -> int:
        return self.volumes_per_unit * len(MEMBERS) * len(REGIONS)

    @property
    def latency_text(self) -> str:
        return f"{self.latency * 1000:g} ms" if self.latency else "none (moto only)"


@dataclass
class Calls:
    """A botocore `before-call` handler: counts each API call (not each retry) by service:operation."""

    seen: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, model: Any, **_: Any) -> None:
        with self.lock:
            self.seen[f"{model.service_model.service_name}:{model.name}"] += 1

    @property
    def total(self) -> int:
        return sum(self.seen.values())


@dataclass(frozen=True)
class Latency:
    """A botocore `before-send` handler: every HTTP request waits as if AWS were this far away."""

    seconds: float

    def __call__(self, **_: Any) -> None:
        time.sleep(self.seconds)


@dataclass(frozen=True)
class Measurement:
    approach: str
    round: Round
    seconds: float
    calls: Counter[str]

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    @property
    def per_volume(self) -> float:
        return self.total / self.round.volumes


def handlers(calls: Calls, round_: Round) -> list[tuple[str, Callable[..., Any]]]:
    hooks: list[tuple[str, Callable[..., Any]]] = [("before-call", calls)]
    if round_.latency:
        hooks.append(("before-send", Latency(round_.latency)))
    return hooks


def role_arn(account: str) -> str:
    return f"arn:aws:iam::{account}:role/{ROLE_NAME}"


def member_session(home: boto3.Session, account: str, session_name: str) -> boto3.Session:
    credentials = home.client("sts").assume_role(
        RoleArn=role_arn(account), RoleSessionName=session_name, ExternalId=EXTERNAL_ID
    )["Credentials"]
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=HOME_REGION,
    )


# ----- the estate ------------------------------------------------------------------------------


def write_policies(directory: Path) -> Policies:
    """accounts.yml with the 10 members, snapshots.yml with one daily policy (no DR copy), validated."""
    for name in ("dns.yml", "security_groups.yml", "thumbnails.yml"):
        (directory / name).write_text((SHIPPED_POLICIES / name).read_text())
    accounts = "\n".join(f'  - {{id: "{account}", name: bench-{account[-2:]}}}' for account in MEMBERS)
    (directory / "accounts.yml").write_text(
        ACCOUNTS_YML.format(role=ROLE_NAME, regions=", ".join(REGIONS), accounts=accounts)
    )
    (directory / "snapshots.yml").write_text(SNAPSHOTS_YML)
    return load_policies(directory)


def reset(endpoint: str) -> None:
    """Forget every resource of every account: each round starts from an empty moto."""
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=30).close()


class Setup:
    """Uninstrumented clients for building and checking one round's estate: one botocore session, so
    the EC2 model is loaded once, and each member's clients made with that member's assumed-role keys.
    Made after the round's reset: moto forgets the keys it handed out when it resets."""

    def __init__(self) -> None:
        self._core = botocore.session.get_session()
        self._sts = cast("STSClient", self._core.create_client("sts", region_name=HOME_REGION))
        self._clients: dict[tuple[str, str], EC2Client] = {}
        self._lock = threading.Lock()

    def ec2(self, account: str, region: str) -> EC2Client:
        with self._lock:
            if (account, region) not in self._clients:
                credentials = self._sts.assume_role(
                    RoleArn=role_arn(account), RoleSessionName="bench-setup", ExternalId=EXTERNAL_ID
                )["Credentials"]
                client = self._core.create_client(
                    "ec2",
                    region_name=region,
                    aws_access_key_id=credentials["AccessKeyId"],
                    aws_secret_access_key=credentials["SecretAccessKey"],
                    aws_session_token=credentials["SessionToken"],
                )
                self._clients[(account, region)] = cast("EC2Client", client)
            return self._clients[(account, region)]

    def snapshots_held(self) -> int:
        """Snapshots moto holds across the estate."""
        pages = (self.ec2(*unit).get_paginator("describe_snapshots").paginate() for unit in UNITS)
        return sum(len(page["Snapshots"]) for unit_pages in pages for page in unit_pages)


def build_estate(endpoint: str, round_: Round) -> Setup:
    """`volumes_per_unit` tagged volumes (and one untagged) in each member account x region."""
    reset(endpoint)
    setup = Setup()
    key, value = SELECT
    tagged: list[TagSpecificationTypeDef] = [
        {"ResourceType": "volume", "Tags": [{"Key": key, "Value": value}, {"Key": "Team", "Value": "bench"}]}
    ]

    def fill(unit: tuple[str, str]) -> None:
        ec2 = setup.ec2(*unit)
        zone = f"{unit[1]}a"
        for _ in range(round_.volumes_per_unit):
            ec2.create_volume(AvailabilityZone=zone, Size=8, TagSpecifications=tagged)
        ec2.create_volume(AvailabilityZone=zone, Size=8)

    with ThreadPoolExecutor(max_workers=SETUP_THREADS) as pool:
        list(pool.map(fill, UNITS))
    return setup


# ----- the two approaches ----------------------------------------------------------------------


def ours(round_: Round, policies: Policies) -> Measurement:
    calls = Calls()
    started = time.perf_counter()
    clients = Clients(
        external_id=EXTERNAL_ID, home_session=boto3.Session(region_name=HOME_REGION), handlers=handlers(calls, round_)
    )
    deps = SnapshotDeps(clients, None, None, lambda target: SesNotifier(clients.client("sesv2", target)))
    result = take_snapshots(policies=policies.snapshots, accounts=policies.accounts, deps=deps, now=NOW)
    seconds = time.perf_counter() - started
    if result["failed"]:
        raise RuntimeError(f"take_snapshots failed: {result['failed']}")
    return Measurement("ours", round_, seconds, calls.seen)


def serial(round_: Round) -> Measurement:
    """One account after the other, one client each; three calls per volume, as Ops Automator makes them."""
    calls = Calls()
    hooks = handlers(calls, round_)
    started = time.perf_counter()
    home = instrumented(boto3.Session(region_name=HOME_REGION), hooks)
    window = NOW.strftime("%Y-%m-%d")
    key, value = SELECT
    for account in MEMBERS:
        member = instrumented(member_session(home, account, "ops-automator"), hooks)
        for region in REGIONS:
            ec2 = member.client("ec2", region_name=region)
            pages = ec2.get_paginator("describe_volumes").paginate(Filters=[{"Name": f"tag:{key}", "Values": [value]}])
            for volume in (volume["VolumeId"] for page in pages for volume in page["Volumes"]):
                existing = ec2.describe_snapshots(
                    OwnerIds=["self"], Filters=[{"Name": "volume-id", "Values": [volume]}]
                )
                if any({"Key": "backup-window", "Value": window} in s.get("Tags", []) for s in existing["Snapshots"]):
                    continue
                snapshot = ec2.create_snapshot(VolumeId=volume, Description=f"ops automator {window}")
                ec2.create_tags(
                    Resources=[snapshot["SnapshotId"]],
                    Tags=[{"Key": "backup-window", "Value": window}, {"Key": "volume", "Value": volume}],
                )
    seconds = time.perf_counter() - started
    return Measurement("serial", round_, seconds, calls.seen)


def instrumented(session: boto3.Session, hooks: Sequence[tuple[str, Callable[..., Any]]]) -> boto3.Session:
    """The session, with the handlers on it; registered before any client is made from it."""
    for event, handler in hooks:
        session.events.register(event, handler)
    return session


# ----- the report ------------------------------------------------------------------------------

APPROACHES = {
    "ours": "ours: take_snapshots, units in a pool of 8 threads",
    "serial": "serial, one client per account (Ops Automator)",
}


def report(measurements: Sequence[Measurement], total_seconds: float) -> str:
    lines = [
        *header("Snapshot bot benchmark", "boto3", "moto", note=" (ThreadedMotoServer, in this process)"),
        f"- estate: {len(MEMBERS)} member accounts (assume-role) x {len(REGIONS)} regions ({', '.join(REGIONS)}), "
        "Backup=daily volumes plus one untagged per account x region; policy without copy_to, retention count 7",
        f"- whole run: {total_seconds:.0f} s (including building the estates)",
        "",
        "| latency per call | volumes | approach | wall time | API calls | calls / volume | volumes / s |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for round_ in dict.fromkeys(m.round for m in measurements):
        pair = {m.approach: m for m in measurements if m.round == round_}
        for m in pair.values():
            lines.append(
                f"| {round_.latency_text} | {round_.volumes:,} | {APPROACHES[m.approach]} | {m.seconds:.1f} s "
                f"| {m.total:,} | {m.per_volume:.2f} | {round_.volumes / m.seconds:.0f} |"
            )
        if {"ours", "serial"} <= pair.keys():
            fast, slow = pair["ours"], pair["serial"]
            lines.append(
                f"| {round_.latency_text} | | **serial / ours** | **{slow.seconds / fast.seconds:.1f}x** "
                f"| **{slow.total / fast.total:.1f}x** | | |"
            )
    lines += ["", "API calls by operation (first round):", "", "| operation | ours | serial |", "|---|---:|---:|"]
    first = [m for m in measurements if m.round == measurements[0].round]
    operations = sorted({op for m in first for op in m.calls})
    for op in operations:
        counts = {m.approach: m.calls.get(op, 0) for m in first}
        lines.append(f"| {op} | {counts.get('ours', 0):,} | {counts.get('serial', 0):,} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    rounds = (Round(0.0, arguments.volumes_per_unit), Round(arguments.latency_ms / 1000, arguments.latency_volumes))
    started = time.perf_counter()
    measurements: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="opsbots-bench-") as directory, moto_server() as endpoint:
        policies = write_policies(Path(directory))
        print(f"moto's server at {endpoint}; {len(MEMBERS)} member accounts x {len(REGIONS)} regions", flush=True)
        for round_ in rounds:
            print(f"latency {round_.latency_text}: building {round_.volumes:,} volumes", flush=True)
            setup = build_estate(endpoint, round_)
            for measure in (serial, lambda r: ours(r, policies)):
                held = setup.snapshots_held()
                measurement = measure(round_)
                taken = setup.snapshots_held() - held
                print(f"  {measurement.approach}: {measurement.seconds:.1f} s, {measurement.total:,} calls", flush=True)
                if taken != round_.volumes:
                    raise RuntimeError(f"{measurement.approach} took {taken} snapshots of {round_.volumes} volumes")
                measurements.append(measurement)
    text = report(measurements, time.perf_counter() - started)
    print("\n" + text)
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(text)
    print(f"written to {arguments.out}")
    return 0


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.snapshots", description=__doc__.split("\n")[0])
    parser.add_argument("--volumes-per-unit", type=int, default=50, help="first round (default 50: 1,000 volumes)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="second round's per-call latency")
    parser.add_argument(
        "--latency-volumes",
        type=int,
        default=10,
        metavar="N",
        help="second round's volumes per unit (default 10: 200 volumes; serial then takes ~40 s)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the markdown table goes")
    return parser


if __name__ == "__main__":
    sys.exit(main())
