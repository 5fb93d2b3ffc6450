"""Cloud Custodian, the peer of the security-group bot, run in the peers' venv (`bench/.venv-peers`).

`python -m bench.custodian archive --out DIR --result FILE` builds the policy's Lambda code the way
`custodian run` deploys it (`c7n.mu.PolicyLambda(policy).get_archive()`: the `c7n` package,
`config.json` with the policy and `custodian_policy.py`, whose `run` calls
`c7n.handler.dispatch_event`), writes it to DIR/custodian.zip and unzips it into DIR/task, which
plays /var/task. `python -m bench.custodian sg --task DIR --endpoint URL ...` then handles events
there as Lambda would: `import custodian_policy` from that directory, `custodian_policy.run(event,
context)` per event, against moto's server through AWS_ENDPOINT_URL (botocore reads it; Custodian's
sessions are plain boto3 sessions, so nothing else is needed).

This module runs under the peers' venv: it imports c7n only inside functions, and nothing of
opsbots, so `.venv` can import it too (`tests/test_bench_imports.py`).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import time
import zipfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.common import (
    HOME_ACCOUNT,
    REGION,
    Calls,
    GroupFactory,
    LambdaContext,
    measure_events,
    one_event,
    write_result,
)

POLICY_NAME = "sg-remove-world-ssh"
# The policy a Custodian user writes for "no tcp 22 from 0.0.0.0/0": CloudTrail mode on the ingress
# call, the ingress filter, remove-permissions of the matched permissions. Defaults everywhere else.
POLICY: dict[str, Any] = {
    "name": POLICY_NAME,
    "resource": "security-group",
    "description": "Remove tcp 22 from 0.0.0.0/0 as soon as it is authorized",
    "mode": {
        "type": "cloudtrail",
        "role": f"arn:aws:iam::{HOME_ACCOUNT}:role/custodian-lambda",
        "events": [
            {
                "source": "ec2.amazonaws.com",
                "event": "AuthorizeSecurityGroupIngress",
                "ids": "requestParameters.groupId",
            }
        ],
    },
    "filters": [{"type": "ingress", "Ports": [22], "Cidr": {"value": "0.0.0.0/0"}}],
    "actions": [{"type": "remove-permissions", "ingress": "matched"}],
}
LAMBDA_LOG_FORMAT = "[%(levelname)s]\t%(asctime)s\t%(message)s"


def versions() -> dict[str, str]:
    return {package: version(package) for package in ("c7n", "boto3", "botocore")}


# ----- the Lambda zip ---------------------------------------------------------------------------


def build_archive(out: Path) -> dict[str, Any]:
    """The policy's Lambda zip as c7n.mu builds it for `custodian run`; unzipped into out/task."""
    from c7n.config import Config
    from c7n.mu import PolicyLambda
    from c7n.policy import PolicyCollection
    from c7n.resources import load_resources
    from c7n.resources.aws import AWS

    load_resources(("aws.security-group",))
    options = AWS().initialize(Config.empty(region=REGION, account_id=HOME_ACCOUNT))
    [policy] = list(PolicyCollection.from_data({"policies": [POLICY]}, options))
    policy.validate()
    data = PolicyLambda(policy).get_archive().get_bytes()
    (out / "custodian.zip").write_bytes(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        archive.extractall(out / "task")
        members = archive.infolist()
    return {
        "zip_bytes": len(data),
        "files": len(members),
        "unzipped_bytes": sum(member.file_size for member in members),
        "compiled_files": sum(member.filename.endswith(".pyc") for member in members),
        "task": str(out / "task"),
        "versions": versions(),
    }


# ----- events, as the Lambda runtime delivers them ----------------------------------------------


def lambda_logging() -> None:
    """The Lambda Python runtime gives the root logger a handler; Custodian's INFO lines go through it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LAMBDA_LOG_FORMAT))
    logging.getLogger().addHandler(handler)


def handle_events(task: Path, endpoint: str, events: int) -> dict[str, Any]:
    """A cold first event pair, then `events` warm violating and compliant events, each timed and counted."""
    import boto3

    os.environ["AWS_ENDPOINT_URL"] = endpoint
    os.chdir(task)  # dispatch_event opens config.json from the working directory, /var/task on Lambda
    sys.path.insert(0, str(task))
    lambda_logging()
    groups = GroupFactory(boto3.client("ec2", region_name=REGION))
    started = time.perf_counter()
    import custodian_policy  # type: ignore[import-not-found]  # written by c7n.mu into the zip

    imported = time.perf_counter() - started
    from c7n.credentials import SessionFactory
    from c7n.utils import local_session

    context = LambdaContext(f"custodian-{POLICY_NAME}")

    def handle(event: dict[str, Any]) -> None:
        custodian_policy.run(event, context)

    calls = Calls()
    cold, _ = one_event(handle, groups, calls, violating=True)  # loads config.json, resources, account id
    one_event(handle, groups, calls, violating=False)
    # Custodian keeps one boto3 session per thread and region for 45 minutes (c7n.utils.local_session)
    # and makes its clients from it: a handler registered on that session sees every call it makes.
    local_session(SessionFactory(REGION)).events.register("before-call", calls)
    measured = measure_events(handle, groups, calls, events)
    if not measured["violating"]["calls"] or min(measured["violating"]["calls"]) == 0:
        raise RuntimeError("no call counted for a violating event: the hook is not on Custodian's session")
    return {
        "import_seconds": imported,
        "first_event_seconds": cold,
        "loaded_from": [sys.modules["c7n"].__file__],  # the c7n its zip ships, not the peers' venv's
        **measured,
        "versions": versions(),
    }


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    if arguments.command == "archive":
        arguments.out.mkdir(parents=True, exist_ok=True)
        write_result(arguments.result, build_archive(arguments.out))
    else:
        write_result(arguments.result, handle_events(arguments.task, arguments.endpoint, arguments.events))
    return 0


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.custodian", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    archive = commands.add_parser("archive", help="build the policy's Lambda zip with c7n.mu")
    archive.add_argument("--out", type=Path, required=True)
    archive.add_argument("--result", type=Path, required=True)
    events = commands.add_parser("sg", help="handle security-group events in-process, as the Lambda would")
    events.add_argument("--task", type=Path, required=True, help="the unzipped archive")
    events.add_argument("--endpoint", required=True, help="moto's server")
    events.add_argument("--events", type=int, default=50)
    events.add_argument("--result", type=Path, required=True)
    return parser


if __name__ == "__main__":
    sys.exit(main())
