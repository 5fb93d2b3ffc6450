"""What every bench section shares, importable from either venv: stdlib (and boto3) only.

The peers run in their own venv, `bench/.venv-peers` (made by `make bench` from
`bench/requirements.txt`: Cloud Custodian, pyvips), never in `.venv`, so nothing a peer needs can
leak into the Lambda. A section runs a peer as a worker process of that venv's Python; a worker
writes its answer as JSON to the file named by `--result` (its stdout and stderr are its logs).
moto's server runs in a process of its own when two processes must reach the same one.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PEERS_VENV = ROOT / "bench" / ".venv-peers"
HOME_ACCOUNT = "123456789012"  # moto's default account: the Lambda's own account in every section
REGION = "eu-west-1"
WORKER_TIMEOUT = 300


def peer_python() -> Path | None:
    """The peers' interpreter, or None when `make bench` could not build their venv."""
    python = PEERS_VENV / "bin" / "python"
    return python if python.exists() else None


def peer_has(module: str) -> bool:
    """Whether the peers' venv can import `module` (c7n, pyvips)."""
    python = peer_python()
    if python is None:
        return False
    done = subprocess.run([python, "-c", f"import {module}"], capture_output=True, check=False, cwd=ROOT)
    return done.returncode == 0


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))] if ordered else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms" if seconds < 0.1 else f"{seconds * 1000:,.0f} ms"


def ratio(numerator: float, denominator: float, digits: int = 2) -> str:
    return f"{numerator / denominator:.{digits}f}x" if denominator else "n/a"


def verdict(met: bool) -> str:
    return "met" if met else "**MISSED**"


class LambdaContext:
    """What the Lambda runtime passes as `context`: the function's name, memory, request id and ARN (which names
    the function's account), and its deadline."""

    def __init__(self, function_name: str, memory_mb: int = 512) -> None:
        self.function_name = function_name
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{HOME_ACCOUNT}:function:{function_name}"
        self._deadline = time.monotonic() + 900

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


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

    def take(self) -> Counter[str]:
        """What was counted since the last take, and start again."""
        with self.lock:
            seen, self.seen = self.seen, Counter()
        return seen


# ----- worker processes -------------------------------------------------------------------------


def worker_environment(**extra: str | None) -> dict[str, str]:
    """This process's (fake AWS) environment with `extra` set, or removed where its value is None."""
    environment = dict(os.environ)
    for key, value in extra.items():
        if value is None:
            environment.pop(key, None)
        else:
            environment[key] = value
    return environment


def run_worker(
    command: Sequence[str | Path], *, environment: Mapping[str, str] | None = None, cwd: Path = ROOT
) -> dict[str, Any]:
    """Run `command --result FILE` and return the JSON it wrote there; its output goes to a log, shown on failure."""
    with tempfile.TemporaryDirectory(prefix="opsbots-worker-") as directory:
        result, log = Path(directory) / "result.json", Path(directory) / "worker.log"
        with log.open("wb") as out:
            done = subprocess.run(
                [*map(str, command), "--result", str(result)],
                cwd=cwd,
                env=dict(environment or os.environ),
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=WORKER_TIMEOUT,
                check=False,
            )
        if done.returncode or not result.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            raise RuntimeError(f"worker {' '.join(map(str, command[:4]))} exited {done.returncode}:\n{tail}")
        answer: dict[str, Any] = json.loads(result.read_text())
        return answer


def write_result(path: str | Path, answer: Mapping[str, Any]) -> None:
    Path(path).write_text(json.dumps(answer, indent=1, default=str))


def reset_moto(endpoint: str) -> None:
    """Forget every resource of every account: the next worker starts from an empty moto."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=30).close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def moto_process() -> Iterator[str]:
    """moto's HTTP server (`moto_server` of this venv) in a process of its own; yields its endpoint.

    Its own process, not a thread of the bench: two workers (ours and a peer's) reach the same
    server, and neither shares its interpreter lock with it.
    """
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = Path(sys.executable).parent / "moto_server"
    process = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=worker_environment(MOTO_EC2_LOAD_DEFAULT_AMIS="false"),
    )
    try:
        _wait_for(endpoint, process)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_for(endpoint: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited {process.returncode}")
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise RuntimeError(f"moto_server did not answer at {endpoint}")


# ----- the security-group event both sides handle ---------------------------------------------


def authorize_event(group_id: str, rule_id: str, cidr: str, port: int = 22, event_id: str = "") -> dict[str, Any]:
    """The CloudTrail event EventBridge delivers for `AuthorizeSecurityGroupIngress` of tcp `port` from `cidr`."""
    permission = {"ipProtocol": "tcp", "fromPort": port, "toPort": port, "ipRanges": {"items": [{"cidrIp": cidr}]}}
    rule = {
        "groupOwnerId": HOME_ACCOUNT,
        "groupId": group_id,
        "securityGroupRuleId": rule_id,
        "isEgress": False,
        "ipProtocol": "tcp",
        "fromPort": port,
        "toPort": port,
        "cidrIpv4": cidr,
    }
    return {
        "version": "0",
        "id": event_id or f"bench-{rule_id}",
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.ec2",
        "account": HOME_ACCOUNT,
        "time": "2026-01-05T09:03:12Z",
        "region": REGION,
        "resources": [],
        "detail": {
            "eventVersion": "1.09",
            "userIdentity": {
                "type": "IAMUser",
                "principalId": "AIDABENCHBENCHBENCH01",
                "arn": f"arn:aws:iam::{HOME_ACCOUNT}:user/alice.devops",
                "accountId": HOME_ACCOUNT,
                "userName": "alice.devops",
            },
            "eventTime": "2026-01-05T09:03:12Z",
            "eventSource": "ec2.amazonaws.com",
            "eventName": "AuthorizeSecurityGroupIngress",
            "awsRegion": REGION,
            "sourceIPAddress": "198.51.100.23",
            "userAgent": "aws-cli/2.17.20",
            "requestParameters": {"groupId": group_id, "ipPermissions": {"items": [permission]}},
            "responseElements": {"_return": True, "securityGroupRuleSet": {"items": [rule]}},
            "eventID": event_id or f"bench-{rule_id}",
            "readOnly": False,
            "eventType": "AwsApiCall",
            "managementEvent": True,
            "recipientAccountId": HOME_ACCOUNT,
            "eventCategory": "Management",
        },
    }


class GroupFactory:
    """Fresh security groups with one rule each, made with an uninstrumented client (untimed setup)."""

    def __init__(self, ec2: Any) -> None:
        self._ec2 = ec2
        self._vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        self._made = 0

    def rule(self, cidr: str, port: int = 22) -> tuple[str, str]:
        """A new group holding one tcp `port` rule from `cidr`: (group id, rule id)."""
        self._made += 1
        group = self._ec2.create_security_group(GroupName=f"bench-{self._made}", Description="bench", VpcId=self._vpc)[
            "GroupId"
        ]
        permission = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "IpRanges": [{"CidrIp": cidr}]}
        rules = self._ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[permission])
        return group, rules["SecurityGroupRules"][0]["SecurityGroupRuleId"]

    def still_has(self, group: str, rule_id: str) -> bool:
        rules = self._ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group]}])
        return any(rule["SecurityGroupRuleId"] == rule_id for rule in rules["SecurityGroupRules"])


# ----- one security-group event after another, the same loop for ours and for the peer -------

VIOLATING_CIDR = "0.0.0.0/0"  # tcp 22 from anywhere: both policies revoke it
COMPLIANT_CIDR = "10.20.0.0/16"  # tcp 22 from a private range: both leave it


@dataclass
class EventStats:
    seconds: list[float] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)
    operations: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "calls": self.calls, "operations": dict(self.operations)}


def one_event(handle: Any, groups: GroupFactory, calls: Calls, violating: bool) -> tuple[float, Counter[str]]:
    """A fresh rule, its event handled and timed, and the rule checked: gone if violating, kept if not."""
    cidr = VIOLATING_CIDR if violating else COMPLIANT_CIDR
    group, rule = groups.rule(cidr)
    event = authorize_event(group, rule, cidr)
    calls.take()
    started = time.perf_counter()
    handle(event)
    seconds = time.perf_counter() - started
    seen = calls.take()
    if groups.still_has(group, rule) == violating:
        raise RuntimeError(
            f"{'violating' if violating else 'compliant'} rule {rule} was {'kept' if violating else 'revoked'}"
        )
    return seconds, seen


def measure_events(handle: Any, groups: GroupFactory, calls: Calls, events: int) -> dict[str, Any]:
    """`events` violating and `events` compliant events, interleaved, each on a fresh rule."""
    stats = {"violating": EventStats(), "compliant": EventStats()}
    for _ in range(events):
        for kind, entry in stats.items():
            seconds, seen = one_event(handle, groups, calls, violating=kind == "violating")
            entry.seconds.append(seconds)
            entry.calls.append(sum(seen.values()))
            entry.operations.update(seen)
    return {kind: entry.as_dict() for kind, entry in stats.items()}
