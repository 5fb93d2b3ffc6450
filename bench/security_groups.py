"""`python -m bench.security_groups`: one CloudTrail event, tcp 22 from 0.0.0.0/0, handled by the bot and by Custodian.

Both against the same moto server (its own process), each in a process of its own that plays a warm
Lambda container:

- ours: the Lambda entry point itself, `app.app.handler_map["on_security_group_change"](event,
  context)` (Chalice's wrapper, the Powertools logger and metrics middleware, the runtime, the
  email ledger in the deployed function's DynamoDB run-once table), the shipped policies;
- Custodian: `custodian_policy.run(event, context)` from the Lambda zip `c7n.mu` builds for a
  CloudTrail-mode policy with the `ingress` filter and `remove-permissions` (bench/custodian.py).

Each handles one violating and one compliant event untimed (the cold first invocation), then
`--events` of each, interleaved, every one on a fresh rule in a fresh group; the rule is checked
after each (gone if violating, still there if compliant). Calls are counted by a botocore
`before-call` handler on the clients (ours) or the session (Custodian) each one really uses.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    HOME_ACCOUNT,
    REGION,
    RESULTS,
    Calls,
    GroupFactory,
    measure_events,
    median,
    moto_process,
    ms,
    one_event,
    peer_has,
    peer_python,
    percentile,
    ratio,
    reset_moto,
    run_worker,
    verdict,
    write_result,
)
from bench.machine import publish
from chalicelib import settings
from demo.environment import create_table

TITLE = "Security-group event"  # its heading in bench/results/latest.md

FUNCTION = "on_security_group_change"
IDEMPOTENCY_TABLE = "opsbots-idempotency"
SENDER = "opsbots@example.com"  # policies/security_groups.yml
SPEED_TARGET = 5.0  # the issue: at least 5x faster warm
VIOLATING_CALLS_TARGET = 4  # the guard issue: the revoke never waits on the run-once table
# The deployed function's environment (.chalice/config.json, deploy/resources.json), less X-Ray:
# Powertools' Tracer is a no-op outside Lambda, so tracing is not measured on either side.
OURS_ENVIRONMENT: Mapping[str, str | None] = {
    "POWERTOOLS_SERVICE_NAME": "opsbots",
    "POWERTOOLS_METRICS_NAMESPACE": "opsbots",
    "POWERTOOLS_LOG_LEVEL": None,  # Powertools' default, INFO, as deployed
    "POWERTOOLS_METRICS_DISABLED": None,  # metrics on: one EMF line per invocation, as deployed
    settings.IDEMPOTENCY_TABLE: IDEMPOTENCY_TABLE,
    settings.TRACING: None,
}


# ----- ours, in a worker process ----------------------------------------------------------------


def _ours_estate() -> GroupFactory:
    import boto3

    boto3.client("sesv2", region_name=REGION).create_email_identity(EmailIdentity=SENDER)
    create_table(boto3.client("dynamodb", region_name=REGION), "IdempotencyTable")
    return GroupFactory(boto3.client("ec2", region_name=REGION))


def deployed_environment(endpoint: str, guard: bool) -> None:
    """The deployed function's environment, on top of the fake AWS one `import bench` made (which clears
    OPSBOTS_* and AWS_ENDPOINT_URL): set in this process, before the app is imported. Without `guard`,
    no run-once table, as the function runs when OPSBOTS_IDEMPOTENCY_TABLE is not set."""
    table = {} if guard else {settings.IDEMPOTENCY_TABLE: None}
    for key, value in {**OURS_ENVIRONMENT, **table, "AWS_ENDPOINT_URL": endpoint}.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def ours_worker(endpoint: str, events: int, guard: bool) -> dict[str, Any]:
    deployed_environment(endpoint, guard)
    groups = _ours_estate()
    started = time.perf_counter()
    from chalice.local import LambdaContext

    import app

    imported = time.perf_counter() - started
    from chalicelib.runtime import current

    handler = app.app.handler_map[FUNCTION]

    def handle(event: dict[str, Any]) -> None:
        handler(event, LambdaContext(FUNCTION, memory_size=256))

    calls = Calls()
    cold, _ = one_event(handle, groups, calls, violating=True)  # policies loaded, clients built, account id
    one_event(handle, groups, calls, violating=False)
    # The runtime's clients are cached per account, region and service: a handler registered on each
    # client of the home account sees every call the bot makes there (it makes none elsewhere).
    clients = current().clients
    home = clients.home(REGION)
    for service in ("ec2", "sesv2", "dynamodb", "sts"):
        clients.client(service, home).meta.events.register("before-call", calls)
    measured = measure_events(handle, groups, calls, events)
    return {"import_seconds": imported, "first_event_seconds": cold, **measured}


# ----- the parent -------------------------------------------------------------------------------


def merge(answers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One side's rounds as one answer: every event's time and calls; the first round's cold event."""
    merged = dict(answers[0])
    for kind in ("violating", "compliant"):
        operations: Counter[str] = Counter()
        for answer in answers:
            operations.update(answer[kind]["operations"])
        merged[kind] = {
            "seconds": [second for answer in answers for second in answer[kind]["seconds"]],
            "calls": [count for answer in answers for count in answer[kind]["calls"]],
            "operations": dict(operations),
        }
    return merged


def commands(events: int, endpoint: str, directory: str) -> tuple[dict[str, list[str]], str]:
    """The worker command of each side (the peer's only if its venv has c7n), and why not if not."""
    ours = [sys.executable, "-m", "bench.security_groups", "--worker", "--events", str(events), "--endpoint", endpoint]
    found = {"ours": ours, "unguarded": [*ours, "--no-guard"]}
    python = peer_python()
    if python is None or not peer_has("c7n"):
        return found, "not run: no c7n in bench/.venv-peers (`make bench` installs it)"
    print("  custodian: building the policy's Lambda zip with c7n.mu", flush=True)
    archive = run_worker([python, "-m", "bench.custodian", "archive", "--out", directory])
    found["custodian"] = [str(python), "-m", "bench.custodian", "sg", "--task", archive["task"]]
    found["custodian"] += ["--endpoint", endpoint, "--events", str(events)]
    return found, ""


def run(events: int, rounds: int) -> dict[str, Any]:
    """Every side against one moto server (reset before each worker), `rounds` workers each, interleaved
    so that a busy spell of the machine falls on all of them; a side not run is None."""
    answers: dict[str, Any] = {"ours": None, "unguarded": None, "custodian": None, "peer_note": ""}
    per_round = max(1, events // rounds)
    samples: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="opsbots-sg-") as directory, moto_process() as endpoint:
        sides, answers["peer_note"] = commands(per_round, endpoint, directory)
        for round_ in range(1, rounds + 1):
            for side, command in sides.items():
                print(f"  round {round_}, {side}: {per_round} violating + {per_round} compliant events", flush=True)
                reset_moto(endpoint)
                samples.setdefault(side, []).append(run_worker(command))
    answers.update({side: merge(found) for side, found in samples.items()})
    return answers


def _per_event(calls: list[int]) -> str:
    low, high = min(calls), max(calls)
    return f"{low}" if low == high else f"{median(calls):g} ({low}-{high})"


def _operations(operations: Mapping[str, int], events: int) -> str:
    parts = [f"{op.split(':')[1]} x{count / events:g}" for op, count in sorted(Counter(operations).items())]
    return ", ".join(parts) or "none"


def _cells(answer: Mapping[str, Any] | None, cell: Any) -> str:
    return cell(answer) if answer else "not run"


def table(answers: Mapping[str, Any], events: int) -> list[str]:
    sides = (answers["ours"], answers["unguarded"], answers["custodian"])
    lines = [
        "| | **ours** (as deployed) | ours without the run-once table | Custodian | **Custodian / ours** |",
        "|---|---:|---:|---:|---:|",
    ]
    rows: list[tuple[str, Any, bool]] = []
    for kind in ("violating", "compliant"):
        rows.append(
            (f"warm latency, {kind} event (median of {events})", lambda a, k=kind: median(a[k]["seconds"]), True)
        )
        rows.append(("same, 90th percentile", lambda a, k=kind: percentile(a[k]["seconds"], 0.9), False))
    for title, value, compare in rows:
        cells = [_cells(side, lambda a, v=value: ms(v(a))) for side in sides]
        speedup = ratio(value(sides[2]), value(sides[0]), 1) if compare and sides[2] else ""
        lines.append(f"| {title} | {' | '.join(cells)} | {f'**{speedup}**' if speedup else ''} |")
    for kind in ("violating", "compliant"):
        cells = [_cells(side, lambda a, k=kind: _per_event(a[k]["calls"])) for side in sides]
        lines.append(f"| AWS calls per {kind} event | {' | '.join(cells)} | |")
    cells = [_cells(side, lambda a: ms(a["first_event_seconds"])) for side in sides]
    title = "first event of a cold container (violating; after `import app` / `import custodian_policy`)"
    lines.append(f"| {title} | {' | '.join(cells)} | |")
    return lines


def report(answers: Mapping[str, Any], events: int, rounds: int, seconds: float) -> str:
    ours, peer = answers["ours"], answers["custodian"]
    peer_versions = (
        ", ".join(f"{name} {value}" for name, value in peer["versions"].items()) if peer else answers["peer_note"]
    )
    lines = [
        "## Security-group event: ours vs Cloud Custodian (CloudTrail mode, remove-permissions)",
        "",
        f"- the event: CloudTrail `AuthorizeSecurityGroupIngress`, tcp 22 from {'0.0.0.0/0'} (violating) or from "
        "10.20.0.0/16 (compliant), each on a fresh rule in a fresh group of the home account "
        f"({HOME_ACCOUNT}, {REGION}); both sides against one moto server in its own process",
        "- ours: the Lambda entry point `on_security_group_change` as deployed (Powertools logger and metrics, "
        "the email ledger in the DynamoDB run-once table), the shipped policies (revoke and email)",
        "- Custodian: `custodian_policy.run` from the Lambda zip c7n.mu builds for the policy in bench/custodian.py "
        f"({peer_versions}), the Lambda runtime's root log handler",
        f"- {events} violating and {events} compliant events each, interleaved, over {rounds} worker processes "
        "per side (the sides' workers interleaved), each after one event of each kind untimed (the first event "
        "shown is the first worker's); "
        f"whole section {seconds:.0f} s",
        "",
        *table(answers, events),
        "",
        "Calls by operation, per event:",
        "",
        "| event | ours (as deployed) | Custodian |",
        "|---|---|---|",
    ]
    for kind in ("violating", "compliant"):
        theirs = _operations(peer[kind]["operations"], events) if peer else "not run"
        lines.append(f"| {kind} | {_operations(ours[kind]['operations'], events)} | {theirs} |")
    lines += ["", *targets(answers)]
    return "\n".join(lines) + "\n"


def targets(answers: Mapping[str, Any]) -> list[str]:
    ours, peer = answers["ours"], answers["custodian"]
    compliant = max(ours["compliant"]["calls"])
    violating = max(ours["violating"]["calls"])
    lines = [
        f"- 0 AWS calls for a compliant event: {compliant} ({verdict(compliant == 0)})",
        f"- <= {VIOLATING_CALLS_TARGET} AWS calls for a violating event as deployed (look-up, revoke, one "
        f"conditional write, email): {violating} ({verdict(violating <= VIOLATING_CALLS_TARGET)})",
    ]
    for kind in ("violating", "compliant") if peer else ():
        speedup = median(peer[kind]["seconds"]) / median(ours[kind]["seconds"])
        lines.append(
            f"- >= {SPEED_TARGET:g}x faster warm than Custodian, {kind} event: {speedup:.1f}x "
            f"({verdict(speedup >= SPEED_TARGET)})"
        )
    return ["Targets (ours as deployed):", "", *lines]


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    if arguments.worker:
        write_result(arguments.result, ours_worker(arguments.endpoint, arguments.events, not arguments.no_guard))
        return 0
    started = time.perf_counter()
    answers = run(arguments.events, arguments.rounds)
    events = max(1, arguments.events // arguments.rounds) * arguments.rounds
    text = report(answers, events, arguments.rounds, time.perf_counter() - started)
    publish(text, arguments.out, "Security-group event benchmark", "boto3", "moto")
    return 0


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.security_groups", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50, help="violating and compliant events each (default 50)")
    parser.add_argument("--rounds", type=int, default=2, help="worker processes per side, interleaved (default 2)")
    parser.add_argument("--out", type=Path, default=RESULTS / "security_groups.md", help="where the markdown goes")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--no-guard", action="store_true", help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    sys.exit(main())
