"""`python -m bench.snapshots`: the snapshot bot against a plain serial loop, same estate, same moto.

Two ways to snapshot every volume tagged Backup=daily in 10 member accounts x 2 regions:

- ours: `chalicelib.snapshots.schedule_snapshots`, units of one account x region run in its thread pool,
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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import boto3
import botocore.session

from bench.common import Calls, verdict
from bench.machine import publish
from chalicelib.aws import HOME as HOME_KEY
from chalicelib.aws import Clients, Target
from chalicelib.outbox import mailer_for
from chalicelib.policy import MemberRoles, Policies, load_policies
from chalicelib.settings import SHIPPED_POLICIES
from chalicelib.snapshots.decisions import BOT, MANAGED, POLICY, VOLUME, WINDOW, Entry, window_start, window_tag
from chalicelib.snapshots.executors import Ledger
from chalicelib.snapshots.handlers import SnapshotDeps, schedule_snapshots
from chalicelib.snapshots.policy import SnapshotsPolicy
from demo.environment import create_table, moto_server

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import TagSpecificationTypeDef
    from mypy_boto3_sts import STSClient

TITLE = "Snapshots"  # its heading in bench/results/latest.md

RESULTS = Path(__file__).resolve().parent / "results" / "snapshots.md"
MEMBERS = tuple(f"2000000000{n:02d}" for n in range(1, 11))
REGIONS = ("eu-west-1", "us-east-1")
UNITS = tuple((account, region) for account in MEMBERS for region in REGIONS)
HOME_REGION = REGIONS[0]
LEDGER_TABLE = "opsbots-snapshot-ledger"  # deploy/resources.json: SnapshotLedgerTable
ROLE_NAME = MemberRoles().snapshots  # the snapshot bot's role in member accounts (accounts.yml default)
EXTERNAL_ID = "opsbots-bench"
SELECT = ("Backup", "daily")
NOW = datetime(2026, 1, 5, 1, 0, tzinfo=UTC)  # one hour into the daily window: the policy is due
SETUP_THREADS = 8
ACCOUNTS_YML = """\
defaults:
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
    (directory / "accounts.yml").write_text(ACCOUNTS_YML.format(regions=", ".join(REGIONS), accounts=accounts))
    (directory / "snapshots.yml").write_text(SNAPSHOTS_YML)
    return load_policies(directory)


def reset(endpoint: str) -> None:
    """Forget every resource of every account: each round starts from an empty moto, with an empty ledger."""
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=30).close()
    create_table(boto3.client("dynamodb", region_name=HOME_REGION), "SnapshotLedgerTable")


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


def scheduled_run(policies: Policies, clients: Clients) -> dict[str, Any]:
    """`take_snapshots` at NOW, running its units in-process, without a run-once table (its calls are the
    schedule's, not the work's), with the ledger that proves which snapshots are its own (those calls count)."""
    ledger = Ledger(clients.client("dynamodb", Target(HOME_KEY, HOME_REGION)), LEDGER_TABLE)
    return schedule_snapshots(
        policies=policies.of(SnapshotsPolicy),
        accounts=policies.accounts,
        deps=SnapshotDeps(clients, None, None, ledger),
        mailer=mailer_for(BOT, clients, None),
        now=NOW,
    )


def ours(round_: Round, policies: Policies) -> Measurement:
    calls = Calls()
    started = time.perf_counter()
    clients = Clients(
        external_id=EXTERNAL_ID, home_session=boto3.Session(region_name=HOME_REGION), handlers=handlers(calls, round_)
    )
    result = scheduled_run(policies, clients)
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


# ----- the prune of old snapshots --------------------------------------------------------------

SERIAL_TAG = ("ops-automator-task", "daily")  # how the serial way finds its own snapshots


@dataclass(frozen=True)
class PruneEstate:
    volumes_per_unit: int
    old_per_volume: int  # beyond retention, to delete: per approach

    @property
    def volumes(self) -> int:
        return self.volumes_per_unit * len(UNITS)

    @property
    def to_prune(self) -> int:
        return self.volumes * self.old_per_volume

    @property
    def held(self) -> int:
        """Snapshots of one approach per volume: the retained count plus the old ones."""
        return RETENTION + self.old_per_volume


@dataclass(frozen=True)
class Pruned:
    approach: str
    seconds: float
    calls: Counter[str]
    deleted: int

    @property
    def total(self) -> int:
        return sum(self.calls.values())


RETENTION = 7  # snapshots.yml: retention count 7


def build_prune_estate(endpoint: str, estate: PruneEstate, approach: str) -> None:
    """Straight into moto's backends (this process runs the server), on an empty moto: per tagged volume,
    `held` daily snapshots of one approach, the newest in today's window (so ours has nothing to
    take), tagged the way that approach finds them: ours by its managed/policy/window/volume tags,
    the serial way by its task tag, ranked by StartTime. One approach's at a time: moto's describes
    scan every tag of the account and region, so the other's would slow both down."""
    from moto.ec2.models import ec2_backends

    reset(endpoint)
    ledger = Ledger(boto3.client("dynamodb", region_name=HOME_REGION), LEDGER_TABLE)
    key, value = SELECT
    today = window_start(NOW, timedelta(days=1))
    for account, region in UNITS:
        backend = ec2_backends[account][region]
        recorded: list[Entry] = []
        for _ in range(estate.volumes_per_unit):
            volume = backend.create_volume(size=8, zone_name=f"{region}a")
            backend.create_tags([volume.id], {key: value})
            for age in range(estate.held):
                window = today - timedelta(days=age)
                snapshot = backend.create_snapshot(volume.id, f"{approach} daily {window_tag(window)}")
                if approach == "ours":
                    tags = {MANAGED: "true", POLICY: "daily", WINDOW: window_tag(window), VOLUME: volume.id}
                    backend.create_tags([snapshot.id], tags)
                    recorded.append(Entry(snapshot.id, volume.id, window))
                else:
                    backend.create_tags([snapshot.id], dict([SERIAL_TAG]))
                    snapshot.start_time -= timedelta(days=age)
        ledger.record(account, region, "daily", recorded)  # as the bot did when it took them


def held_by_moto(tag: tuple[str, str]) -> int:
    from moto.ec2.models import ec2_backends

    key, value = tag
    return sum(
        1
        for account, region in UNITS
        for snapshot in ec2_backends[account][region].snapshots.values()
        if ec2_backends[account][region].tags.get(snapshot.id, {}).get(key) == value
    )


def prune_ours(policies: Policies) -> Pruned:
    """The same scheduled run as above: with today's snapshots present, all it does is prune."""
    calls = Calls()
    started = time.perf_counter()
    clients = Clients(
        external_id=EXTERNAL_ID, home_session=boto3.Session(region_name=HOME_REGION), handlers=[("before-call", calls)]
    )
    result = scheduled_run(policies, clients)
    seconds = time.perf_counter() - started
    if result["failed"] or result["taken"]:
        raise RuntimeError(f"take_snapshots should only prune here: {result}")
    return Pruned("ours", seconds, calls.seen, int(result["pruned"]))


def prune_serial() -> Pruned:
    """Ops Automator's delete task, one account and region after the other: its snapshots by tag, the
    newest RETENTION per volume kept by StartTime, then per snapshot a describe by id and a delete
    (its 0.2 s sleep after each delete is left out: it would only make this row slower)."""
    calls = Calls()
    hooks = [("before-call", calls)]
    started = time.perf_counter()
    home = instrumented(boto3.Session(region_name=HOME_REGION), hooks)
    key, value = SERIAL_TAG
    deleted = 0
    for account in MEMBERS:
        member = instrumented(member_session(home, account, "ops-automator"), hooks)
        for region in REGIONS:
            ec2 = member.client("ec2", region_name=region)
            pages = ec2.get_paginator("describe_snapshots").paginate(
                OwnerIds=["self"], Filters=[{"Name": f"tag:{key}", "Values": [value]}]
            )
            by_volume: dict[str, list[Any]] = {}
            for snapshot in (snapshot for page in pages for snapshot in page["Snapshots"]):
                by_volume.setdefault(snapshot["VolumeId"], []).append(snapshot)
            for snapshots in by_volume.values():
                for old in sorted(snapshots, key=lambda s: s["StartTime"], reverse=True)[RETENTION:]:
                    ec2.describe_snapshots(SnapshotIds=[old["SnapshotId"]])
                    ec2.delete_snapshot(SnapshotId=old["SnapshotId"])
                    deleted += 1
    return Pruned("serial", time.perf_counter() - started, calls.seen, deleted)


def run_prune(endpoint: str, estate: PruneEstate, policies: Policies) -> list[Pruned]:
    print(f"prune: {estate.to_prune:,} old snapshots per approach on {estate.volumes:,} volumes", flush=True)
    done = []
    for measure, tag in ((prune_serial, SERIAL_TAG), (lambda: prune_ours(policies), (MANAGED, "true"))):
        build_prune_estate(endpoint, estate, "serial" if tag == SERIAL_TAG else "ours")
        pruned = measure()
        print(f"  {pruned.approach}: {pruned.seconds:.1f} s, {pruned.total:,} calls", flush=True)
        left = held_by_moto(tag)
        if pruned.deleted != estate.to_prune or left != estate.volumes * RETENTION:
            raise RuntimeError(f"{pruned.approach} deleted {pruned.deleted} of {estate.to_prune}, left {left}")
        done.append(pruned)
    return done


def prune_lines(estate: PruneEstate, pruned: Sequence[Pruned]) -> list[str]:
    lines = [
        f"Prune: {estate.to_prune:,} old snapshots per approach ({estate.old_per_volume} beyond the retained "
        f"{RETENTION} on each of {estate.volumes:,} volumes, {estate.volumes_per_unit} per account x region; "
        f"{estate.volumes * estate.held:,} snapshots, the same estate built anew for each approach), no added "
        "latency:",
        "",
        "| approach | wall time | API calls | calls / pruned snapshot | snapshots / s |",
        "|---|---:|---:|---:|---:|",
    ]
    for p in pruned:
        lines.append(
            f"| {PRUNE_APPROACHES[p.approach]} | {p.seconds:.1f} s | {p.total:,} | {p.total / estate.to_prune:.2f} "
            f"| {estate.to_prune / p.seconds:.0f} |"
        )
    pair = {p.approach: p for p in pruned}
    if {"ours", "serial"} <= pair.keys():
        lines.append(
            f"| **serial / ours** | **{pair['serial'].seconds / pair['ours'].seconds:.1f}x** "
            f"| **{pair['serial'].total / pair['ours'].total:.1f}x** | | |"
        )
    operations = sorted({op for p in pruned for op in p.calls})
    lines += [
        "",
        "| operation (prune) | " + " | ".join(p.approach for p in pruned) + " |",
        "|---|" + "---:|" * len(pruned),
    ]
    lines += [f"| {op} | " + " | ".join(f"{p.calls.get(op, 0):,}" for p in pruned) + " |" for op in operations]
    return lines


PRUNE_APPROACHES = {
    "ours": "ours: the same scheduled run, which prunes as it goes",
    "serial": "serial Ops Automator delete task: describe by id + delete each",
}


# ----- the report ------------------------------------------------------------------------------

APPROACHES = {
    "ours": "ours: take_snapshots, units in a pool of 8 threads",
    "serial": "serial, one client per account (Ops Automator)",
}


def report(
    measurements: Sequence[Measurement], total_seconds: float, prune: tuple[PruneEstate, Sequence[Pruned]] | None
) -> str:
    lines = [
        "## Snapshots: the snapshot bot against the serial way (Ops Automator)",
        "",
        "- moto's ThreadedMotoServer in the bench's process",
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
    if prune:
        lines += ["", *prune_lines(*prune)]
    lines += ["", *targets(measurements)]
    return "\n".join(lines) + "\n"


SPEED_TARGET = 6.0  # the issue: at least 6x faster than serial
CALLS_TARGET = 1.05  # and at most 1.05 calls per volume
LATENCY_SPEED_TARGET = 10.0  # issue 19: at least 10x faster than serial at 50 ms a call, 1,000 volumes


def targets(measurements: Sequence[Measurement]) -> list[str]:
    lines = ["Targets (the issues' estate: 1,000 volumes on moto's server):", ""]
    rounds = list(dict.fromkeys(m.round for m in measurements))
    for index, round_ in enumerate(rounds):
        pair = {m.approach: m for m in measurements if m.round == round_}
        if {"ours", "serial"} > pair.keys():
            continue
        speedup = pair["serial"].seconds / pair["ours"].seconds
        target = SPEED_TARGET if index == 0 else LATENCY_SPEED_TARGET
        lines.append(
            f"- >= {target:g}x faster than serial, latency {round_.latency_text}, {round_.volumes:,} volumes: "
            f"{speedup:.1f}x ({verdict(speedup >= target)})"
        )
        if index == 0:
            per_volume = pair["ours"].per_volume
            lines.append(
                f"- <= {CALLS_TARGET} calls per volume: {pair['ours'].total:,} / {round_.volumes:,} = {per_volume:.3f} "
                f"({verdict(per_volume <= CALLS_TARGET)})"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    rounds = (Round(0.0, arguments.volumes_per_unit), Round(arguments.latency_ms / 1000, arguments.latency_volumes))
    started = time.perf_counter()
    measurements: list[Measurement] = []
    prune = PruneEstate(arguments.prune_volumes_per_unit, arguments.prune_old)
    pruned: list[Pruned] = []
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
        if prune.to_prune:
            pruned = run_prune(endpoint, prune, policies)
    text = report(measurements, time.perf_counter() - started, (prune, pruned) if pruned else None)
    publish(text, arguments.out, "Snapshot bot benchmark", "boto3", "moto")
    return 0


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.snapshots", description=__doc__.split("\n")[0])
    parser.add_argument("--volumes-per-unit", type=int, default=50, help="first round (default 50: 1,000 volumes)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="second round's per-call latency")
    parser.add_argument(
        "--latency-volumes",
        type=int,
        default=50,
        metavar="N",
        help="second round's volumes per unit (default 50: 1,000 volumes, the issue's; serial then takes ~3 min)",
    )
    parser.add_argument(
        "--prune-volumes-per-unit", type=int, default=10, metavar="N", help="prune estate (default 10: 200 volumes)"
    )
    parser.add_argument(
        "--prune-old",
        type=int,
        default=35,
        metavar="N",
        help="snapshots beyond retention per volume and approach (default 35: 7,000 to prune; 0: no prune)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the markdown table goes")
    return parser


if __name__ == "__main__":
    sys.exit(main())
