"""`python -m bench.websites`: 500 website checks in one run, ours against a sequential loop and a thread per check.

A local HTTP server on 127.0.0.1 (demo/web.py's, threads of this process) answers every request after
100 ms, as a healthy but not instant site does. Each approach checks the same 500 URLs once:
- ours: `chalicelib.websites.executors.HttpProber.probe_all`, as a run of the bot makes its requests
  (every address judged before a packet, http.client over its own sockets, every check at once in a
  bounded pool);
- naive: `urllib.request.urlopen` in a loop, one check after the other, as a cron script would;
- thread per check: `urllib.request` in one `threading.Thread` per check, started together.

And the HTTP client's cost at a cold start: a fresh interpreter importing each candidate (ours is the
standard library's http.client, which the Lambda runtime holds compiled; urllib3 ships with boto3).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from bench.common import RESULTS, median, ms, ratio, verdict
from bench.machine import publish
from chalicelib.websites.executors import HttpProber, Request
from demo.web import http_site

TITLE = "Website checks"  # its heading in bench/results/latest.md

CHECKS = 500
ANSWER_AFTER = 0.1  # seconds: each request's server-side wait
TARGET = 20.0  # ours at least this many times faster than the sequential loop


def ours(urls: list[str]) -> int:
    prober = HttpProber(lambda host, port: ["127.0.0.1"])
    probes = prober.probe_all([Request(f"c{n}", url, allow_private=True) for n, url in enumerate(urls)])
    return sum(probe.status == 200 for probe in probes.values())


def _fetch(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return bool(answer.status == 200 and answer.read())


def naive(urls: list[str]) -> int:
    return sum(_fetch(url) for url in urls)


def thread_per_check(urls: list[str]) -> int:
    results: list[bool] = []
    threads = [threading.Thread(target=lambda url=url: results.append(_fetch(url))) for url in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(results)


def timed(approach: Callable[[list[str]], int], urls: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    good = approach(urls)
    return time.perf_counter() - started, good


def import_seconds(statement: str, runs: int = 5) -> float:
    """A fresh interpreter's time to run `statement`, less the interpreter's own start (median)."""

    def once(code: str) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - started

    bare = median([once("pass") for _ in range(runs)])
    return median([once(statement) for _ in range(runs)]) - bare


def run(checks: int, naive_checks: int) -> str:
    with http_site(slow=ANSWER_AFTER) as (port, _):
        urls = [f"http://127.0.0.1:{port}/slow"] * checks
        timed(ours, urls[:10])  # warm: the pool's first threads, the server's
        rows = {
            "ours": timed(ours, urls),
            "thread per check": timed(thread_per_check, urls),
            # the loop takes checks x 100 ms; it runs a slice and is scaled, its per-check time being flat
            "naive": timed(naive, urls[:naive_checks]),
        }
    naive_seconds = rows["naive"][0] * checks / naive_checks
    ours_seconds = rows["ours"][0]
    imports = {
        "ours: the standard library's `http.client` and `ssl`": import_seconds("import http.client, ssl"),
        "`urllib3` (ships with boto3)": import_seconds("import urllib3"),
        "the bot's executors, boto3 included (every function loads boto3 anyway)": import_seconds(
            "import chalicelib.websites.executors"
        ),
    }
    lines = [
        f"## {TITLE}: {checks} checks in one run, ours vs a sequential loop and a thread per check",
        "",
        f"- a local HTTP server on 127.0.0.1 (threads of the bench's process) answers each request after "
        f"{ANSWER_AFTER * 1000:.0f} ms; every approach checks the same {checks} URLs once",
        f"- the sequential loop ran {naive_checks} checks and is scaled to {checks} (each costs the same)",
        "",
        "| approach | wall time | good answers | naive / this |",
        "|---|---:|---:|---:|",
        f"| **ours**: `HttpProber.probe_all` | {ms(ours_seconds)} | {rows['ours'][1]} | "
        f"**{ratio(naive_seconds, ours_seconds, 1)}** |",
        f"| a thread per check (`urllib.request`) | {ms(rows['thread per check'][0])} | "
        f"{rows['thread per check'][1]} | {ratio(naive_seconds, rows['thread per check'][0], 1)} |",
        f"| naive: `urllib.request` one after the other | {ms(naive_seconds)} (scaled) | "
        f"{rows['naive'][1]} of {naive_checks} | 1.0x |",
        "",
        "The HTTP client at a cold start (a fresh interpreter importing it, less the interpreter's start):",
        "",
        "| client | import |",
        "|---|---:|",
        *(f"| {name} | {ms(seconds)} |" for name, seconds in imports.items()),
        "",
        "Targets:",
        "",
        f"- >= {TARGET:g}x faster than the sequential loop: {naive_seconds / ours_seconds:.1f}x "
        f"({verdict(naive_seconds / ours_seconds >= TARGET)})",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    publish(run(arguments.checks, arguments.naive_checks), arguments.out, "Website checks benchmark")
    return 0


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.websites", description=__doc__.split("\n")[0])
    parser.add_argument("--checks", type=int, default=CHECKS, help="checks in the run")
    parser.add_argument("--naive-checks", type=int, default=50, help="checks the sequential loop runs (scaled)")
    parser.add_argument("--out", type=Path, default=RESULTS / "websites.md", help="where the markdown goes")
    return parser


if __name__ == "__main__":
    sys.exit(main())
