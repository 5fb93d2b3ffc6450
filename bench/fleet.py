"""`python -m bench.fleet`: the hourly security-group sweep of a fleet, fanned out, against the same sweep run
serially in one function, on moto's server with a latency injected per call.

The estate: ACCOUNTS member accounts x 2 regions, each with 10 security groups, one of them with SSH open to
the world (reopened before each approach, untimed). Two ways to sweep it, with the same decisions:

- serial: one function, one account/region after the other (`sweep_target` in a loop), over the first
  40 units and scaled (each unit costs the same; the whole would take minutes);
- ours, fanned out: `sweep()` as the template deploys it: it records the run and queues one message per
  account/region; then WORKERS workers at once (threads here, Lambda invocations there; warm, their clients
  built) each run `work_on_unit` on one message at a time, the last sending the digest.

Every HTTP request waits LATENCY first (a botocore `before-send` handler), as AWS would be tens of
milliseconds away; moto alone answers in a few and caps throughput. Calls are counted by a `before-call`
handler on every session the bot builds. The projection for 1,000 accounts x 3 regions with 100 concurrent
workers scales the scheduler's time by the units and adds ceil(units / 100) waves of the median unit.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from bench.common import Calls, verdict
from bench.machine import publish
from bench.snapshots import Latency
from chalicelib.aws import HOME, Clients, Target
from chalicelib.fanout import Fanout, Runs
from chalicelib.outbox import mailer_for
from chalicelib.policy import Policies, load_policies
from chalicelib.security_groups.executors import Ec2Executor
from chalicelib.security_groups.handlers import sweep, sweep_target, work_on_unit
from chalicelib.security_groups.policy import SecurityGroupsPolicy
from chalicelib.settings import SHIPPED_POLICIES
from chalicelib.triggers import FLEET_WORKERS, SWEEP_QUEUE_NAME
from demo.environment import create_table, moto_server

TITLE = "Fleet: the security-group sweep fanned out"  # its heading in bench/results/latest.md

RESULTS = Path(__file__).resolve().parent / "results" / "fleet.md"
REGIONS = ("eu-west-1", "us-east-1")
GROUPS = 10  # per account and region
EXTERNAL_ID = "bench-external-id"
SETUP_THREADS = 16
PROJECTED_UNITS = 1_000 * 3
PROJECTED_WORKERS = FLEET_WORKERS  # the worker's maximum concurrency, as deployed
TARGET_SECONDS = 300.0  # the projection, end to end
ACCOUNTS_YML = """\
defaults:
  regions: [{regions}]
accounts:
{accounts}
"""


def members(count: int) -> list[str]:
    return [f"3{n:011d}" for n in range(1, count + 1)]


def write_policies(directory: Path, accounts: list[str]) -> Policies:
    (directory / "security_groups.yml").write_text((SHIPPED_POLICIES / "security_groups.yml").read_text())
    listed = "\n".join(f'  - {{id: "{account}", name: fleet-{account[-3:]}}}' for account in accounts)
    (directory / "accounts.yml").write_text(ACCOUNTS_YML.format(regions=", ".join(REGIONS), accounts=listed))
    return load_policies(directory)


class Estate:
    """The fleet's groups, built and reopened with uninstrumented clients (one session per account)."""

    def __init__(self, accounts: list[str]) -> None:
        self.units = [(account, region) for account in accounts for region in REGIONS]
        self._sts = boto3.client("sts", region_name=REGIONS[0])
        self._sessions: dict[str, boto3.Session] = {}
        self._open: dict[tuple[str, str], str] = {}  # the group with SSH open, per unit
        self._lock = threading.Lock()

    def ec2(self, account: str, region: str) -> Any:
        with self._lock:
            if account not in self._sessions:
                credentials = self._sts.assume_role(
                    RoleArn=f"arn:aws:iam::{account}:role/fleet-setup", RoleSessionName="bench-setup"
                )["Credentials"]
                self._sessions[account] = boto3.Session(
                    aws_access_key_id=credentials["AccessKeyId"],
                    aws_secret_access_key=credentials["SecretAccessKey"],
                    aws_session_token=credentials["SessionToken"],
                )
            session = self._sessions[account]
        return session.client("ec2", region_name=region)

    def build(self) -> None:
        def fill(unit: tuple[str, str]) -> None:
            ec2 = self.ec2(*unit)
            vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
            groups = [
                ec2.create_security_group(GroupName=f"app-{n}", Description="bench", VpcId=vpc)["GroupId"]
                for n in range(GROUPS)
            ]
            with self._lock:
                self._open[unit] = groups[0]

        with ThreadPoolExecutor(max_workers=SETUP_THREADS) as pool:
            list(pool.map(fill, self.units))

    def reopen(self) -> None:
        """SSH open to the world again in one group of every unit: each approach has as much to revert."""

        def open_ssh(unit: tuple[str, str]) -> None:
            permission: Any = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
            try:
                self.ec2(*unit).authorize_security_group_ingress(GroupId=self._open[unit], IpPermissions=[permission])
            except ClientError as error:
                if error.response["Error"]["Code"] != "InvalidPermission.Duplicate":  # still open: not swept yet
                    raise

        with ThreadPoolExecutor(max_workers=SETUP_THREADS) as pool:
            list(pool.map(open_ssh, self.units))


class OneTransactionAtATime:
    """moto's `TransactWriteItems` is not thread-safe: one that fails restores the table as it copied it,
    erasing a concurrent one's write (DynamoDB itself serializes them). This lets one through moto at a
    time, after its latency: botocore `before-send` takes the lock, `needs-retry` (after every attempt)
    gives it back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def handlers(self) -> list[tuple[str, Callable[..., Any]]]:
        return [
            ("before-send.dynamodb.TransactWriteItems", self.enter),
            ("needs-retry.dynamodb.TransactWriteItems", self.leave),
        ]

    def enter(self, **_: Any) -> None:
        self._lock.acquire()

    def leave(self, **_: Any) -> None:
        self._lock.release()


TRANSACTIONS = OneTransactionAtATime()


def instrumented(calls: Calls, latency: float) -> Clients:
    handlers: list[tuple[str, Callable[..., Any]]] = [
        ("before-call", calls),
        ("before-send", Latency(latency)),
        *TRANSACTIONS.handlers(),
    ]
    return Clients(external_id=EXTERNAL_ID, home_session=boto3.Session(region_name=REGIONS[0]), handlers=handlers)


@dataclass(frozen=True)
class Measured:
    approach: str
    seconds: float
    calls: Counter[str]
    reverted: int
    scheduler_seconds: float = 0.0
    unit_seconds: tuple[float, ...] = ()


def serial(policies: Policies, latency: float, started: datetime, units: int) -> Measured:
    """The first `units` account/regions one after the other; its time and calls scale with the units."""
    calls = Calls()
    clock = time.perf_counter()
    clients = instrumented(calls, latency)
    policy = policies.of(SecurityGroupsPolicy)
    findings = [
        sweep_target(target, name, policy, Ec2Executor(clients.client("ec2", target)), started)
        for target, name in clients.units(policies.accounts, "security_groups")[:units]
    ]
    reverted = sum(len(finding.verdict.reverted) for finding in findings)
    return Measured("serial", time.perf_counter() - clock, calls.seen, reverted)


def fanned_out(policies: Policies, latency: float, started: datetime, workers: int) -> Measured:
    sqs = boto3.client("sqs", region_name=REGIONS[0])
    queue = sqs.create_queue(QueueName=f"{SWEEP_QUEUE_NAME}-{int(time.time() * 1000)}")["QueueUrl"]
    table = "opsbots-runs"
    calls = Calls()
    clock = time.perf_counter()
    clients = instrumented(calls, latency)
    home = Target(HOME, REGIONS[0])
    runs = Runs(clients.client("dynamodb", home), table)
    fanout = Fanout(clients.client("sqs", home), queue, runs)
    mailer = mailer_for("security_groups", clients, None)
    queued = sweep(policies=policies, clients=clients, mailer=mailer, at=started, event_id="bench-run", fanout=fanout)
    scheduler_seconds = time.perf_counter() - clock
    # What Lambda's poller hands the workers, each message once (untimed: it is not the functions' time)
    bodies: dict[str, str] = {}
    while len(bodies) < queued["queued"]:
        answer = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=900)
        bodies |= {message["MessageId"]: message["Body"] for message in answer.get("Messages", [])}
    # Warm workers: the containers' clients are built (this machine's 2 CPUs cannot build 50 botocore
    # sessions at once the way 50 Lambda containers do, each on its own CPU; the cold start is its own section)
    workers_clients = instrumented(calls, latency)
    workers_clients.home()
    worker_runs = Runs(workers_clients.client("dynamodb", home), table)
    for target, _ in workers_clients.units(policies.accounts, "security_groups"):
        workers_clients.client("ec2", target)
    calls.take()  # the warm-up's calls are the containers', before this run

    def work(body: str) -> tuple[float, int, bool]:
        began = time.perf_counter()
        done = work_on_unit(body, 1, policies=policies, clients=workers_clients, runs=worker_runs, mailer=mailer)
        return time.perf_counter() - began, int(done.get("violations", 0)), done.get("digest") == "sent"

    clock = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(work, bodies.values()))
    seconds = scheduler_seconds + time.perf_counter() - clock
    digests = sum(sent for _, _, sent in results)
    if digests != 1:
        raise RuntimeError(f"the fanned-out run sent {digests} digests, not one")
    unit_seconds = tuple(seconds for seconds, _, _ in results)
    reverted = sum(violations for _, violations, _ in results)
    return Measured("fanned out", seconds, calls.seen, reverted, scheduler_seconds, unit_seconds)


def report(
    serial_run: Measured,
    fan: Measured,
    units: int,
    serial_units: int,
    accounts: int,
    latency: float,
    workers: int,
    total: float,
) -> str:
    scale = units / serial_units
    serial_seconds = serial_run.seconds * scale
    serial_calls = sum(serial_run.calls.values()) * scale
    fan_calls = sum(fan.calls.values())
    median_unit = statistics.median(fan.unit_seconds)
    waves = math.ceil(PROJECTED_UNITS / PROJECTED_WORKERS)
    projected = fan.scheduler_seconds * PROJECTED_UNITS / units + waves * median_unit
    projected_serial = serial_seconds * PROJECTED_UNITS / units
    lines = [
        f"## {TITLE}: {accounts} member accounts x {len(REGIONS)} regions, {latency * 1000:g} ms a call",
        "",
        f"- moto's ThreadedMotoServer in the bench's process; {units} account/region units (the home account's "
        f"included) of {GROUPS} groups, one with SSH open to the world (reopened before each approach)",
        f"- fanned out: the scheduler, then {workers} workers at once (threads here, Lambda invocations there), "
        "warm (their clients built: 2 CPUs cannot build 50 containers' at once); the queue's polling is not timed",
        f"- serially: the first {serial_units} units one after the other, scaled to {units} (each costs the same)",
        f"- whole section {total:.0f} s",
        "",
        "| approach | wall time | AWS calls | calls per account | rules reverted |",
        "|---|---:|---:|---:|---:|",
        f"| **fanned out**: scheduler + {workers} workers | {fan.seconds:.1f} s | {fan_calls:,} | "
        f"{fan_calls / (accounts + 1):.1f} | {fan.reverted} |",
        f"| serially in one function | {serial_seconds:.0f} s (scaled) | {serial_calls:,.0f} (scaled) | "
        f"{serial_calls / (accounts + 1):.1f} | {serial_run.reverted} of its {serial_units} units |",
        "",
        f"Fanned out: the scheduler took {fan.scheduler_seconds:.1f} s (the run's record and {units} messages in "
        f"batches of 10); a unit's worker took {median_unit * 1000:.0f} ms (median), "
        f"{max(fan.unit_seconds) * 1000:.0f} ms at most. Serial / fanned out: **{serial_seconds / fan.seconds:.1f}x**.",
        "",
        "Calls by operation, fanned out: "
        + ", ".join(f"{operation} x{count}" for operation, count in sorted(fan.calls.items())),
        "",
        f"Projected for 1,000 accounts x 3 regions ({PROJECTED_UNITS:,} units): fanned out with "
        f"{PROJECTED_WORKERS} concurrent workers {projected:.0f} s; serially in one function "
        f"{projected_serial / 3600:.1f} h (past Lambda's 15 minutes).",
        "",
        "Targets:",
        "",
        f"- a sweep of 1,000 accounts x 3 regions under {TARGET_SECONDS:.0f} s end to end with "
        f"{PROJECTED_WORKERS} concurrent workers: {projected:.0f} s ({verdict(projected < TARGET_SECONDS)})",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    began = time.perf_counter()
    accounts = members(arguments.accounts)
    latency = arguments.latency_ms / 1000
    started = datetime.now(UTC).replace(microsecond=0)
    with tempfile.TemporaryDirectory(prefix="opsbots-bench-fleet-") as directory, moto_server():
        policies = write_policies(Path(directory), accounts)
        boto3.client("sesv2", region_name=REGIONS[0]).create_email_identity(EmailIdentity="opsbots@example.com")
        create_table(boto3.client("dynamodb", region_name=REGIONS[0]), "RunsTable")
        estate = Estate(accounts)
        print(f"  building {len(estate.units)} units x {GROUPS} groups", flush=True)
        estate.build()
        estate.reopen()
        serial_units = min(arguments.serial_units, len(estate.units))
        serial_run = serial(policies, latency, started, serial_units)
        print(f"  serial, {serial_units} units: {serial_run.seconds:.1f} s", flush=True)
        estate.reopen()
        fan = fanned_out(policies, latency, started, arguments.workers)
        print(f"  fanned out: {fan.seconds:.1f} s, {sum(fan.calls.values()):,} calls", flush=True)
        if fan.reverted < len(estate.units):
            raise RuntimeError(f"fanned out, {fan.reverted} of {len(estate.units)} rules reverted")
    units = len(estate.units) + len(REGIONS)  # the home account's regions are swept too
    total = time.perf_counter() - began
    text = report(serial_run, fan, units, serial_units, len(accounts), latency, arguments.workers, total)
    publish(text, arguments.out, "Fleet benchmark", "boto3", "moto")
    return 0


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=200, help="member accounts (default 200)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="per-call latency (default 50)")
    parser.add_argument("--workers", type=int, default=50, help="workers at once (default 50)")
    parser.add_argument("--serial-units", type=int, default=40, help="units the serial sweep runs, scaled (default 40)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the markdown goes")
    return parser


if __name__ == "__main__":
    sys.exit(main())
