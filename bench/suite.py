"""`python -m bench.suite` (`make bench`): every section into bench/results/latest.md.

Sections run one after the other, except that the DNS, deployment-size and thumbnail sections
(whose results are AWS call counts, sizes, and ratios of rows measured within one process, one
after the other) run beside the long snapshot section: each is one process held to one core by its
GIL, and the machine has two. That keeps `make bench` to about 14 minutes.

Each section runs as `python -m bench.<section> --out bench/results/<section>.md` in a process of
its own (its own moto, its own environment), prints its table, and writes its file; this then
writes latest.md: the date, the machine and the peers' versions once, the targets of every section
in one list, and every section's tables. A section that fails is reported there and makes the suite
exit 1 after the others have run; a missed target does not (it says MISSED), except in the
thumbnail section, which exits 1 on a missed target or a wrong thumbnail size.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.common import RESULTS, ROOT, peer_python
from bench.machine import header
from chalicelib.bots import BOTS

# The sections: the cold start, one per bot (bench/<bot>.py, against the peer its users would pick, as the
# registry lists the bots), the fleet (the sweep fanned out), and the deployment's size.
MODULES = ("coldstart", *(bot.name for bot in BOTS), "fleet", "package_size")
PEER_PACKAGES = ("c7n", "pyvips", "boto3")
# What the suite passes to a section beyond --out, to keep `make bench` to about 14 minutes on 2 CPUs.
ARGUMENTS: dict[str, tuple[str, ...]] = {"thumbnails": ("--rounds", "1")}
# Section -> the sections that run beside it, one after the other (their output shown when they end).
BESIDE: dict[str, tuple[str, ...]] = {"snapshots": ("dns", "package_size", "thumbnails")}


@dataclass(frozen=True)
class Section:
    module: str
    title: str
    seconds: float
    exit_code: int
    body: str  # the section's markdown from its first "## " heading; or why it failed

    @property
    def targets(self) -> list[str]:
        lines = self.body.splitlines()
        marks = ("Targets at", "Result (")
        return [line for line in lines if "(met)" in line or "MISSED" in line or line.startswith(marks)]


def sections() -> list[tuple[str, str]]:
    """(module, numbered title) of every section; each module's title is its TITLE."""
    return [
        (module, f"{number}. {importlib.import_module(f'bench.{module}').TITLE}")
        for number, module in enumerate(MODULES, 1)
    ]


def run_section(module: str, title: str, out: Path, *, quiet: bool = False) -> Section:
    """Run one section; `quiet` holds its output back and prints it in one piece when it ends."""
    print(f"\n===== {title}: python -m bench.{module}" + (" (beside the section running)" if quiet else ""), flush=True)
    started = time.perf_counter()
    command = [sys.executable, "-m", f"bench.{module}", "--out", str(out), *ARGUMENTS.get(module, ())]
    done = subprocess.run(command, cwd=ROOT, check=False, capture_output=quiet, text=True)
    seconds = time.perf_counter() - started
    if quiet:
        print(f"\n===== {title}, its output:\n{done.stdout}{done.stderr}", flush=True)
    text = out.read_text() if out.exists() and out.stat().st_mtime >= time.time() - seconds - 1 else ""
    body = text[text.index("## ") :] if "## " in text else ""
    if done.returncode:
        failed = f"**Failed**: `python -m bench.{module}` exited {done.returncode} (see its output in the log)."
        body = f"## {title}\n\n{failed}\n\n{body}"
    print(f"===== {title}: {seconds:.0f} s, exit {done.returncode}", flush=True)
    return Section(module, title, seconds, done.returncode, body)


def peer_versions() -> str:
    python = peer_python()
    if python is None:
        return "peers' venv missing (bench/.venv-peers): peer rows not run"
    code = (
        "from importlib.metadata import version, PackageNotFoundError\n"
        f"for name in {PEER_PACKAGES!r}:\n"
        "    try: print(f'{name} {version(name)}', end=', ')\n"
        "    except PackageNotFoundError: print(f'{name} missing', end=', ')\n"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    return f"peers' venv (bench/.venv-peers): {done.stdout.strip().rstrip(',')}"


def latest(sections: Sequence[Section], seconds: float, load: tuple[float, float, float]) -> str:
    lines = [
        *header("Benchmarks: opsbots against the peers users would deploy instead", "boto3", "moto", "chalice"),
        f"- {peer_versions()}",
        f"- load average when the run started: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (timings on a busy "
        "machine move by a third or more; compare the ratios, and the call counts, which do not move)",
        f"- `make bench`: {seconds:.0f} s in all ("
        + ", ".join(f"{s.title.split('. ')[1].lower()} {s.seconds:.0f} s" for s in sections)
        + ")",
        "",
        "## Targets",
        "",
    ]
    for section in sections:
        status = "" if section.exit_code == 0 else f" (**section failed, exit {section.exit_code}**)"
        lines += [f"**{section.title}**{status}", ""]
        lines += [line if line.startswith("- ") else f"- {line}" for line in section.targets] + [""]
    for section in sections:
        lines += ["", section.body.rstrip()]
    return "\n".join(lines) + "\n"


def run_all(chosen: Sequence[tuple[str, str]], results: Path) -> list[Section]:
    titles = dict(chosen)
    beside = {host: [m for m in modules if m in titles] for host, modules in BESIDE.items() if host in titles}
    moved = {module for modules in beside.values() for module in modules}
    done: dict[str, Section] = {}

    def lane(modules: Sequence[str]) -> None:
        for module in modules:
            done[module] = run_section(module, titles[module], results / f"{module}.md", quiet=True)

    for module, title in chosen:
        if module in moved:
            continue
        with ThreadPoolExecutor(max_workers=1) as pool:
            running_beside = pool.submit(lane, beside.get(module, []))
            done[module] = run_section(module, title, results / f"{module}.md")
            running_beside.result()
    return [done[module] for module, _ in chosen]


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    chosen = [(module, title) for module, title in sections() if not arguments.only or module in arguments.only]
    load = os.getloadavg()
    started = time.perf_counter()
    ran = run_all(chosen, arguments.results)
    text = latest(ran, time.perf_counter() - started, load)
    (arguments.results / "latest.md").write_text(text)
    print("\n" + text)
    print(f"written to {arguments.results / 'latest.md'}")
    return 1 if any(section.exit_code for section in ran) else 0


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.suite", description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", choices=MODULES, help="run only these")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the results files go")
    return parser


if __name__ == "__main__":
    sys.exit(main())
