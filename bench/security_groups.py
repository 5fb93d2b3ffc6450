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
import shutil
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    HOME_ACCOUNT,
    REGION,
    RESULTS,
    ROOT,
    Calls,
    GroupFactory,
    LambdaContext,
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
    worker_environment,
    write_result,
)
from bench.machine import publish
from bench.package_size import package
from chalicelib import settings
from demo.environment import create_table
from deploy.package_zips import as_on_lambda

TITLE = "Security-group event"  # its heading in bench/results/latest.md

FUNCTION = "on_security_group_change"
BOT_MODULE = "chalicelib.security_groups"
IDEMPOTENCY_TABLE = "opsbots-idempotency"
SENDER = "opsbots@example.com"  # policies/security_groups.yml
SPEED_TARGET = 5.0  # the issue: at least 5x faster warm
VIOLATING_CALLS_TARGET = 4  # the guard issue: the revoke never waits on the run-once table
COLD_TARGET = 1.0  # issue 19: a cold container's first violating event, as deployed, no slower than Custodian's
COLD_RUNS = 5  # cold containers per side from its zip
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
    # From its zip, the cut service models it ships (in the repository, those `import bench` wrote).
    models = {settings.SERVICE_MODELS: None} if settings.SHIPPED_MODELS.is_dir() else {}
    for key, value in {**OURS_ENVIRONMENT, **table, **models, "AWS_ENDPOINT_URL": endpoint}.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def ours_worker(endpoint: str, events: int, guard: bool) -> dict[str, Any]:
    deployed_environment(endpoint, guard)
    groups = _ours_estate()
    started = time.perf_counter()
    import app

    imported = time.perf_counter() - started
    from chalicelib.runtime import current

    handler = app.app.handler_map[FUNCTION]

    def handle(event: dict[str, Any]) -> None:
        handler(event, LambdaContext(FUNCTION, memory_mb=256))

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
    return {
        "import_seconds": imported,
        "first_event_seconds": cold,
        # what a cold container as deployed must have read from its zip: the bot's code and the cut service models
        "loaded_from": [sys.modules[f"{BOT_MODULE}.handlers"].__file__, str(current().settings.service_models)],
        **measured,
    }


# ----- the parent -------------------------------------------------------------------------------


def merge(answers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One side's rounds as one answer: every event's time and calls, and every worker's first event."""
    merged = dict(answers[0])
    merged["first_event_seconds"] = [answer["first_event_seconds"] for answer in answers]
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


def commands(events: int, endpoint: str, directory: Path) -> tuple[dict[str, list[str]], str, Path | None]:
    """The worker command of each side (the peer's only if its venv has c7n), why not if not, and the
    directory of Custodian's unzipped Lambda zip."""
    ours = [sys.executable, "-m", "bench.security_groups", "--worker", "--events", str(events), "--endpoint", endpoint]
    found = {"ours": ours, "unguarded": [*ours, "--no-guard"]}
    python = peer_python()
    if python is None or not peer_has("c7n"):
        return found, "not run: no c7n in bench/.venv-peers (`make bench` installs it)", None
    print("  custodian: building the policy's Lambda zip with c7n.mu", flush=True)
    task = Path(run_worker([python, "-m", "bench.custodian", "archive", "--out", directory])["task"])
    found["custodian"] = [str(python), "-m", "bench.custodian", "sg", "--task", str(task)]
    found["custodian"] += ["--endpoint", endpoint, "--events", str(events)]
    return found, "", task


def from_zips(endpoint: str, directory: Path, custodian_task: Path | None) -> dict[str, Worker]:
    """Each side's cold container as deployed: one event pair in a fresh process run from its Lambda zip.

    Ours: `make package`'s deployment.zip unzipped, first on the path of `python -I -B`, so the app and its
    dependencies load from the bytecode the zip ships and nothing is written. Custodian: an untouched copy
    of its unzipped zip, with no bytecode written, so c7n compiles at start as on Lambda.
    """
    print("  ours: make package's zips", flush=True)
    ours_task = directory / "ours-task"
    with zipfile.ZipFile(package(directory) / "deployment.zip") as deployment:
        deployment.extractall(ours_task)
    # The bench's own modules after everything else on the path: the app and chalicelib come from the zip.
    main = f"sys.path.append({str(ROOT)!r})\nfrom bench.security_groups import main\nsys.exit(main(sys.argv[1:]))"
    ours = as_on_lambda(ours_task, main)
    found = {"ours": Worker([*ours, "--worker", "--events", "1", "--endpoint", endpoint], ours_task)}
    python = peer_python()
    if python is not None and custodian_task is not None:
        task = shutil.copytree(custodian_task, directory / "custodian-zip-task")
        command = [str(python), "-m", "bench.custodian", "sg", "--task", str(task), "--endpoint", endpoint]
        found["custodian"] = Worker([*command, "--events", "1"], task, worker_environment(PYTHONDONTWRITEBYTECODE="1"))
    return found


@dataclass(frozen=True)
class Worker:
    command: list[str]
    task: Path  # where what it loads must come from
    environment: Mapping[str, str] | None = None

    def run(self) -> dict[str, Any]:
        answer = run_worker(self.command, environment=self.environment)
        elsewhere = [path for path in answer["loaded_from"] if not Path(path).is_relative_to(self.task)]
        if elsewhere:
            raise RuntimeError(f"{self.command[0]}: loaded {elsewhere}, not from {self.task}")
        return answer


def run(events: int, rounds: int, cold_runs: int) -> dict[str, Any]:
    """Every side against one moto server (reset before each worker), `rounds` workers each, interleaved
    so that a busy spell of the machine falls on all of them, then `cold_runs` cold containers of each
    side as deployed from its zip, interleaved too; a side not run is None."""
    answers: dict[str, Any] = {"ours": None, "unguarded": None, "custodian": None, "peer_note": "", "zips": {}}
    per_round = max(1, events // rounds)
    samples: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="opsbots-sg-") as directory, moto_process() as endpoint:
        sides, answers["peer_note"], custodian_task = commands(per_round, endpoint, Path(directory))
        zips = from_zips(endpoint, Path(directory), custodian_task)
        if "custodian" in sides:  # untimed: Custodian's bytecode written in its task, as ours is in the repo
            reset_moto(endpoint)
            run_worker([*sides["custodian"][:-2], "--events", "1"])
        for round_ in range(1, rounds + 1):
            for side, command in sides.items():
                print(f"  round {round_}, {side}: {per_round} violating + {per_round} compliant events", flush=True)
                reset_moto(endpoint)
                samples.setdefault(side, []).append(run_worker(command))
        for run_ in range(1, cold_runs + 1):
            for side, worker in zips.items():
                print(f"  cold container {run_}, {side}, from its zip", flush=True)
                reset_moto(endpoint)
                answers["zips"].setdefault(side, []).append(worker.run())
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
    cells = [_cells(side, lambda a: ms(median(a["first_event_seconds"]))) for side in sides]
    title = (
        f"first event of a cold container (violating; after `import app` / `import custodian_policy`; median of "
        f"{len(sides[0]['first_event_seconds'])} workers, bytecode caches warm)"
    )
    lines.append(f"| {title} | {' | '.join(cells)} | |")
    zips = answers["zips"]
    for title, seconds in COLD_PARTS:
        ours, theirs = (zips.get(side) for side in ("ours", "custodian"))
        cells = [
            _cells(ours, lambda a, v=seconds: ms(_cold(a, v))),
            "",
            _cells(theirs, lambda a, v=seconds: ms(_cold(a, v))),
        ]
        speedup = ratio(_cold(theirs, seconds), _cold(ours, seconds), 2) if ours and theirs else ""
        lines.append(f"| {title} | {' | '.join(cells)} | {speedup} |")
    return lines


# The cold container as deployed, from its zip: what Lambda's init runs, its first event, and both.
COLD_PARTS: tuple[tuple[str, Callable[[Mapping[str, Any]], float]], ...] = (
    (
        "cold container as deployed, from its zip: init (`import app` / `import custodian_policy`)",
        lambda a: a["import_seconds"],
    ),
    ("same: its first event (violating)", lambda a: a["first_event_seconds"]),
    (
        "**same: init + first violating event, the revoke's wait in a cold container**",
        lambda a: a["import_seconds"] + a["first_event_seconds"],
    ),
)


def _cold(workers: Sequence[Mapping[str, Any]] | None, seconds: Callable[[Mapping[str, Any]], float]) -> float:
    """The median over a side's cold containers of one part of their time."""
    return median([seconds(worker) for worker in workers or ()])


def report(answers: Mapping[str, Any], events: int, rounds: int, cold_runs: int, seconds: float) -> str:
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
        "per side (the sides' workers interleaved), each after one event of each kind untimed, its first event "
        "(bytecode caches warm: Custodian's written by one untimed worker first)",
        f"- cold containers as deployed: {cold_runs} fresh processes per side, interleaved, each from its Lambda zip "
        "(ours: `make package`'s deployment.zip unzipped, first on the path of `python -I -B`, running from the "
        "bytecode it ships; Custodian: its zip unzipped, compiled at start, nothing written), with the runtime's "
        "boto3; init is `import app` or `import custodian_policy` after boto3 is loaded, then one violating event",
        f"- whole section {seconds:.0f} s",
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
    ours_zip, peer_zip = (answers["zips"].get(side) for side in ("ours", "custodian"))
    if ours_zip and peer_zip:
        cold = COLD_PARTS[-1][1]
        share = _cold(ours_zip, cold) / _cold(peer_zip, cold)
        lines.append(
            f"- a cold container's first violating event as deployed (init + the event, from the zips) <= "
            f"{COLD_TARGET:g}x Custodian's: {share:.2f}x ({verdict(share <= COLD_TARGET)})"
        )
    return ["Targets (ours as deployed):", "", *lines]


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    if arguments.worker:
        write_result(arguments.result, ours_worker(arguments.endpoint, arguments.events, not arguments.no_guard))
        return 0
    started = time.perf_counter()
    answers = run(arguments.events, arguments.rounds, arguments.cold_runs)
    events = max(1, arguments.events // arguments.rounds) * arguments.rounds
    text = report(answers, events, arguments.rounds, arguments.cold_runs, time.perf_counter() - started)
    publish(text, arguments.out, "Security-group event benchmark", "boto3", "moto")
    return 0


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.security_groups", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50, help="violating and compliant events each (default 50)")
    parser.add_argument("--rounds", type=int, default=2, help="worker processes per side, interleaved (default 2)")
    parser.add_argument(
        "--cold-runs", type=int, default=COLD_RUNS, help=f"cold containers per side from its zip (default {COLD_RUNS})"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "security_groups.md", help="where the markdown goes")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--no-guard", action="store_true", help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    sys.exit(main())
