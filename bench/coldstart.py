"""`python -m bench.coldstart`: a fresh process importing the app, against the boto3 floor and Cloud Custodian.

Every row is a new interpreter (`python -c CODE`), timed from the parent from spawn to exit, so
interpreter start-up is in every row alike; the rows are interleaved over `--runs` rounds after one
untimed round (which also writes the bytecode caches every row then reads), and the median is shown.

- ours: `import app` in `.venv`, as every function's Lambda init does (Chalice, Powertools, the runtime;
  each bot's module is imported by its handler on its first event), and the security-group function's
  whole cold start: `import app`, its bot, and the policies loaded as its first event does;
- the floor: `import boto3`, which the Lambda runtime itself holds;
- Custodian: `import custodian_policy` in the unzipped policy Lambda zip (its handler module, c7n.handler),
  then its security-group policy loaded as its handler's first invocation does (config.json,
  `load_resources`, `PolicyCollection.from_data`, `validate`), in the peers' venv.

Then where the security-group function's cold start goes: `python -X importtime` on it against the
same for `import boto3`, every module it imports beyond boto3's, by package, with the module of ours
that first pulls it in.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    HOME_ACCOUNT,
    RESULTS,
    ROOT,
    median,
    ms,
    peer_has,
    peer_python,
    ratio,
    run_worker,
    verdict,
    worker_environment,
)
from bench.machine import publish
from bench.package_size import package
from chalicelib import settings
from chalicelib.bots import BOTS
from deploy.package_zips import as_on_lambda

TITLE = "Cold start"  # its heading in bench/results/latest.md

FLOOR_TARGET = 1.3  # the issue: import app within 1.3x of import boto3
PEER_TARGET = 0.5  # and at most half of Custodian's, both warm (an earlier issue)
ZIP_PEER_TARGET = 0.9  # the security-group function as from its zip, at most 0.9x Custodian's (issue 19)
IMPORTTIME_RUNS = 3
# What the Lambda Python runtime itself holds, compiled: boto3 and the packages it needs.
STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()
LAMBDA_RUNTIME = frozenset({"boto3", "botocore", "s3transfer", "urllib3", "jmespath", "dateutil", "six"})
EVERY_BOT = "import app\n" + "\n".join(f"import {bot.module}.handlers" for bot in BOTS)
# What on_security_group_change's first event adds to `import app` before it can judge a rule.
LOAD_OURS_SG = """\
import app
from chalicelib.security_groups import handlers
from chalicelib.runtime import current
current().policies"""
LOAD_CUSTODIAN = f"""\
import json
import custodian_policy
from c7n.handler import init_config
from c7n.policy import PolicyCollection
from c7n.resources import load_resources
from c7n.structure import StructureParser
with open("config.json") as f:
    data = json.load(f)
# dispatch_event's one-time init, less the STS call init_config makes when no account id is given
options = init_config({{**data, "execution-options": {{**data["execution-options"], "account_id": "{HOME_ACCOUNT}"}}}})
load_resources(StructureParser().get_resource_types(data))
for policy in PolicyCollection.from_data(data, options):
    policy.validate()
"""


@dataclass(frozen=True)
class Row:
    key: str
    title: str
    python: Path
    code: str
    cwd: Path = ROOT
    environment: Mapping[str, str | None] | None = None
    compiles: bool = False  # its own modules compiled at every start, as from a Lambda zip (no .pyc)
    # Run as Lambda runs the deployed zip unpacked there (deploy/package_zips.py `as_on_lambda`: `-I -B`, the zip
    # then the runtime's boto3 alone on the path); it reads the bytecode the zip ships.
    lambda_task: Path | None = None


class Bytecode:
    """Where the rows' bytecode caches live (PYTHONPYCACHEPREFIX), whatever PYTHONDONTWRITEBYTECODE says here.

    `warm`: every module's cache, written by the untimed round. `zip`: only the caches the Lambda
    runtime has (the standard library, and boto3 with its dependencies), read but never written:
    everything a Lambda zip ships (ours: the app, chalicelib and its requirements; Custodian: c7n)
    compiles at every start, as on Lambda, where the zip holds no .pyc and /var/task is read-only.
    """

    def __init__(self, directory: Path) -> None:
        self.warm, self.zip = directory / "warm", directory / "zip"

    def environment(self, row: Row) -> dict[str, str]:
        extra: dict[str, str | None]
        if row.compiles:
            extra = {"PYTHONPYCACHEPREFIX": str(self.zip), "PYTHONDONTWRITEBYTECODE": "1"}
        else:
            extra = {"PYTHONPYCACHEPREFIX": str(self.warm), "PYTHONDONTWRITEBYTECODE": None}
        return worker_environment(**{**(row.environment or {}), **extra})

    def keep_runtimes_only(self) -> None:
        for cached in self.warm.rglob("*.pyc"):
            relative = cached.relative_to(self.warm)
            if _in_runtime(relative):
                target = self.zip / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(cached, target)


def _in_runtime(relative: Path) -> bool:
    """The standard library's modules, or boto3's and its dependencies' (in the Lambda runtime, compiled)."""
    parts = relative.parts
    if "site-packages" in parts:
        package = parts[parts.index("site-packages") + 1]
        return package.split(".")[0] in LAMBDA_RUNTIME
    return Path("/", *parts).is_relative_to(STDLIB)


def rows(task: Path | None, ours_task: Path) -> list[Row]:
    ours = Path(sys.executable)
    found = [
        Row("python", "interpreter alone: `python -c pass`", ours, "pass"),
        Row("boto3", "**the floor**: `import boto3`", ours, "import boto3"),
        Row(
            "ours", "**ours**: `import app` (every function's init; a bot loads on its first event)", ours, "import app"
        ),
        Row("ours-every-bot", "ours, `import app` + every bot's modules", ours, EVERY_BOT),
        Row(
            "ours-traced",
            "ours, prod stage (`OPSBOTS_TRACING=true`: Powertools Tracer, X-Ray SDK)",
            ours,
            "import app",
            environment={settings.TRACING: "true"},
        ),
        Row("ours-sg", "**ours, security-group function**: app + its bot + its policies loaded", ours, LOAD_OURS_SG),
        Row(
            "ours-sg-zip",
            "ours, security-group function, as from its zip: `make package`'s deployment.zip unzipped as /var/task, "
            "with the bytecode it ships",
            ours,
            LOAD_OURS_SG,
            ours_task,
            lambda_task=ours_task,
        ),
    ]
    peer = peer_python()
    if peer is not None and task is not None:
        found += [
            Row(
                "custodian-import",
                "Custodian: `import custodian_policy` (c7n.handler)",
                peer,
                "import custodian_policy",
                task,
            ),
            Row(
                "custodian", "**Custodian**: its handler + its security-group policy loaded", peer, LOAD_CUSTODIAN, task
            ),
            Row(
                "custodian-zip",
                "Custodian, as from its zip: c7n compiled at start",
                peer,
                LOAD_CUSTODIAN,
                task,
                compiles=True,
            ),
            Row("boto3-peers", "the floor in the peers' venv (Custodian's boto3)", peer, "import boto3"),
        ]
    return found


def spawn(row: Row, bytecode: Bytecode) -> float:
    """One fresh process running the row's code: seconds from spawn to exit."""
    environment = bytecode.environment(row)
    command = as_on_lambda(row.lambda_task, row.code) if row.lambda_task else [str(row.python), "-c", row.code]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=row.cwd, env=environment, capture_output=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{row.title} failed:\n{done.stderr.decode(errors='replace')[-2000:]}")
    return seconds


def measure(found: Sequence[Row], runs: int, bytecode: Bytecode) -> dict[str, list[float]]:
    for row in found:  # untimed: bytecode caches written, files in the page cache
        if not row.compiles:
            spawn(row, bytecode)
    bytecode.keep_runtimes_only()
    seconds: dict[str, list[float]] = {row.key: [] for row in found}
    for _ in range(runs):
        for row in found:
            seconds[row.key].append(spawn(row, bytecode))
    return seconds


# ----- where the time goes ----------------------------------------------------------------------

_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


@dataclass(frozen=True)
class Imported:
    name: str
    self_us: int
    level: int


def importtime(python: Path, code: str, bytecode: Bytecode) -> list[Imported]:
    done = subprocess.run(
        [str(python), "-X", "importtime", "-c", code],
        cwd=ROOT,
        env=bytecode.environment(Row("importtime", "", python, code)),
        capture_output=True,
        check=True,
    )
    found = [_LINE.match(line) for line in done.stderr.decode().splitlines()]
    return [Imported(m.group(4), int(m.group(1)), len(m.group(3)) // 2) for m in found if m]


def _owner(entries: Sequence[Imported], index: int) -> str:
    """The first module of ours (app, chalicelib.*) above entry `index` in the import tree."""
    level = entries[index].level
    for entry in entries[index + 1 :]:  # -X importtime lists a module's imports before the module itself
        if entry.level < level:
            level = entry.level
            if entry.name == "app" or entry.name.startswith("chalicelib"):
                return entry.name
    return "app"


def _group(name: str) -> str:
    top = name.split(".")[0]
    if name.startswith("chalicelib"):
        return f"{name} (its own code)"
    return f"{top} (stdlib)" if top in sys.stdlib_module_names else top


@dataclass(frozen=True)
class Breakdown:
    app_ms: float  # every module's self time in the security-group function's cold start
    floor_ms: float  # the same under `import boto3`
    extra: list[tuple[str, float, str]]  # (package, self ms beyond boto3's modules, first pulled in by)


def breakdown(bytecode: Bytecode) -> Breakdown:
    """Median self time per module over IMPORTTIME_RUNS; the modules boto3 does not import, by package."""
    python = Path(sys.executable)
    app_runs = [importtime(python, LOAD_OURS_SG, bytecode) for _ in range(IMPORTTIME_RUNS)]
    floor_runs = [importtime(python, "import boto3", bytecode) for _ in range(IMPORTTIME_RUNS)]
    floor_names = {entry.name for entry in floor_runs[0]}
    self_us: dict[str, list[int]] = defaultdict(list)
    for run in app_runs:
        for entry in run:
            self_us[entry.name].append(entry.self_us)
    first = app_runs[0]
    owners = {entry.name: _owner(first, index) for index, entry in enumerate(first)}
    groups: dict[str, float] = defaultdict(float)
    pulled_by: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for name, values in self_us.items():
        if name in floor_names:
            continue
        group, cost = _group(name), median(values) / 1000
        groups[group] += cost
        pulled_by[group][owners.get(name, "app")] += cost
    extra = [
        (group, cost, max(pulled_by[group].items(), key=lambda item: item[1])[0])
        for group, cost in sorted(groups.items(), key=lambda item: -item[1])
    ]
    app_total = sum(median(values) for values in self_us.values()) / 1000
    floor_total = sum(entry.self_us for entry in floor_runs[0]) / 1000
    return Breakdown(app_total, floor_total, extra)


# ----- the report -------------------------------------------------------------------------------


def table(found: Sequence[Row], seconds: Mapping[str, list[float]]) -> list[str]:
    floor = median(seconds["boto3"])
    lines = [
        "| process | median | vs the boto3 floor | vs Custodian (the row alike: both warm, or both from the zip) |",
        "|---|---:|---:|---:|",
    ]
    for row in found:
        value = median(seconds[row.key])
        peer_key = "custodian-zip" if row.compiles or row.lambda_task else "custodian"
        against_peer = (
            ratio(value, median(seconds[peer_key])) if peer_key in seconds and row.key.startswith("ours") else ""
        )
        lines.append(f"| {row.title} | {ms(value)} | {ratio(value, floor)} | {against_peer} |")
    return lines


def targets(seconds: Mapping[str, list[float]], peer_note: str) -> list[str]:
    ours, floor = median(seconds["ours"]), median(seconds["boto3"])
    met = ours / floor <= FLOOR_TARGET
    lines = [f"- `import app` <= {FLOOR_TARGET}x `import boto3`: {ours / floor:.2f}x ({verdict(met)})"]
    if "custodian" in seconds:
        for key, peer_key, what, target in (
            ("ours-sg", "custodian", "both with warm bytecode caches", PEER_TARGET),
            ("ours-sg-zip", "custodian-zip", "both as from their zips, as on Lambda", ZIP_PEER_TARGET),
        ):
            against = median(seconds[key]) / median(seconds[peer_key])
            lines.append(
                f"- security-group function's cold start <= {target}x Custodian's handler with its policy, "
                f"{what}: {against:.2f}x ({verdict(against <= target)})"
            )
    else:
        lines.append(f"- against Custodian: {peer_note}")
    return ["Targets:", "", *lines]


def breakdown_lines(found: Breakdown, limit: int = 14) -> list[str]:
    extra_total = sum(cost for _, cost, _ in found.extra)
    lines = [
        "Where the security-group function's cold start spends its time beyond boto3's "
        f"(`-X importtime`, median of {IMPORTTIME_RUNS}; importtime inflates every figure, read the shares): "
        f"{found.app_ms:,.0f} ms in all, of which "
        f"{found.app_ms - extra_total:,.0f} ms in modules `import boto3` also loads ({found.floor_ms:,.0f} ms there) "
        f"and {extra_total:,.0f} ms in these:",
        "",
        "| package (self time of its modules) | ms | share of the extra | first pulled in by |",
        "|---|---:|---:|---|",
    ]
    for group, cost, owner in found.extra[:limit]:
        lines.append(f"| {group} | {cost:,.1f} | {cost / extra_total:.0%} | {owner} |")
    rest = sum(cost for _, cost, _ in found.extra[limit:])
    lines.append(f"| {len(found.extra) - limit} more | {rest:,.1f} | {rest / extra_total:.0%} | |")
    return lines


def run(runs: int) -> str:
    started = time.perf_counter()
    task, note, versions = None, "not run: no c7n in bench/.venv-peers (`make bench` installs it)", ""
    with tempfile.TemporaryDirectory(prefix="opsbots-coldstart-") as directory:
        python = peer_python()
        if python is not None and peer_has("c7n"):
            archive = run_worker([python, "-m", "bench.custodian", "archive", "--out", directory])
            task, versions = Path(archive["task"]), ", ".join(f"{k} {v}" for k, v in archive["versions"].items())
        print("  make package's zips", flush=True)
        ours_task = Path(directory) / "ours-task"
        with zipfile.ZipFile(package(Path(directory)) / "deployment.zip") as deployment:
            deployment.extractall(ours_task)
        found = rows(task, ours_task)
        bytecode = Bytecode(Path(directory))
        print(f"  {len(found)} rows x {runs} fresh processes", flush=True)
        seconds = measure(found, runs, bytecode)
        print("  -X importtime breakdown", flush=True)
        where = breakdown(bytecode)
    lines = [
        "## Cold start: a fresh process importing the app",
        "",
        f"- each row a new interpreter from spawn to exit, rows interleaved, one untimed round then median of {runs}; "
        "bytecode caches warm for every row but the two 'as from its zip', where only the Lambda runtime's own "
        "modules (stdlib, boto3 and its dependencies) are compiled beforehand, and /var/task is read-only: "
        "Custodian's zip holds no .pyc, so what it ships compiles at every cold start; ours ships bytecode for "
        "what its functions import (deploy/package_zips.py) and runs from it, as `-I -B` with the zip's "
        "directory and the runtime's boto3 alone on its path; fake AWS environment, no AWS call",
        f"- Custodian: the Lambda zip c7n.mu builds for bench/custodian.py's policy, unzipped, run from its "
        f"directory as /var/task ({versions or note})",
        f"- whole section {time.perf_counter() - started:.0f} s",
        "",
        *table(found, seconds),
        "",
        *targets(seconds, note),
        "",
        *breakdown_lines(where),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    text = run(arguments.runs)
    publish(text, arguments.out, "Cold-start benchmark", "boto3")
    return 0


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.coldstart", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed fresh processes per row (default 7)")
    parser.add_argument("--out", type=Path, default=RESULTS / "coldstart.md", help="where the markdown goes")
    return parser


if __name__ == "__main__":
    sys.exit(main())
