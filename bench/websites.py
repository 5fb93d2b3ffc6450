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

And the AWS calls of whole runs of `check_websites` (the app's handler, on moto's ThreadedMotoServer,
with its run-once table, the shipped state table and a status page): a first run of 500 checks, a
steady one, 10 sites failing once, then DOWN, then steady again; each call counted by operation and
table as botocore builds it (not each retry).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3

from bench.common import HOME_ACCOUNT, REGION, RESULTS, ROOT, LambdaContext, median, ms, ratio, verdict
from bench.machine import publish
from chalicelib import settings
from chalicelib.bots import WEBSITES_TABLE
from chalicelib.websites.executors import READ_BATCH, HttpProber, Request
from demo.environment import create_table, moto_server
from demo.web import Traffic, http_site

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


# ----- AWS calls per run ----------------------------------------------------------------------------

FAILING = 10  # sites that fail, then are announced DOWN
STATUS_BUCKET = "opsbots-bench-status"
SENDER = "opsbots@example.com"


class TableCalls:
    """A botocore `before-parameter-build` handler: each call (not each retry) by operation and the table it names."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        table = params.get("TableName") or next(iter(params.get("RequestItems", {})), "")
        where = f" {table}" if table else f" {params['Bucket']}" if "Bucket" in params else ""
        with self.lock:
            self.seen[f"{model.service_model.service_name}:{model.name}{where}"] += 1

    def take(self) -> Counter[str]:
        with self.lock:
            seen, self.seen = self.seen, Counter()
        return seen


@dataclass(frozen=True)
class Run:
    name: str
    changed: int  # checks whose state changed: each is one conditional write
    seconds: float
    calls: Counter[str]

    def count(self, prefix: str) -> int:
        return sum(n for operation, n in self.calls.items() if operation.startswith(prefix))


def websites_yml(healthy_port: int, failing_port: int, checks: int) -> str:
    lines = [
        f"notify: {{email: {{sender: {SENDER}, recipients: [oncall@example.com]}}}}",
        "defaults: {timeout: 5s}",
        f"status_page: {{bucket: {STATUS_BUCKET}}}",
        "checks:",
    ]
    for n in range(checks):
        port = failing_port if n < FAILING else healthy_port
        lines.append(f"  - {{name: c{n}, url: 'http://127.0.0.1:{port}/health', allow_private: true}}")
    return "\n".join(lines) + "\n"


@contextmanager
def deployed(checks: int) -> Iterator[tuple[Callable[[datetime], dict[str, Any]], TableCalls, Traffic]]:
    """The app's `check_websites` as deployed, on moto's server, with `checks` checks (the first FAILING on a site
    that can be made to fail); yields the handler for a minute, the call counter and that site's traffic."""
    with ExitStack() as stack:
        stack.enter_context(moto_server())
        healthy_port, _ = stack.enter_context(http_site())
        failing_port, failing = stack.enter_context(http_site())
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="opsbots-bench-websites-")))
        (folder / "accounts.yml").write_text((ROOT / "policies" / "accounts.yml").read_text())
        (folder / "websites.yml").write_text(websites_yml(healthy_port, failing_port, checks))
        session = boto3.Session(region_name=REGION)
        session.client("sesv2").create_email_identity(EmailIdentity=SENDER)
        session.client("s3").create_bucket(
            Bucket=STATUS_BUCKET,
            CreateBucketConfiguration={"LocationConstraint": "eu-west-1"},  # REGION's
        )
        os.environ.update(
            {
                settings.POLICIES_DIR: str(folder),
                settings.IDEMPOTENCY_TABLE: create_table(session.client("dynamodb"), "IdempotencyTable"),
                WEBSITES_TABLE: create_table(session.client("dynamodb"), "WebsiteStateTable"),
            }
        )

        import app
        from chalicelib.runtime import current

        current.cache_clear()
        calls = TableCalls()
        clients = current().clients
        for service in ("dynamodb", "sesv2", "s3"):  # the runtime's own, cached: every call it makes goes through
            clients.client(service, clients.home(REGION)).meta.events.register("before-parameter-build", calls)
        handler = app.app.handler_map["check_websites"]

        def handle(at: datetime) -> dict[str, Any]:
            event = {
                "version": "0",
                "id": f"bench-{at:%H%M}",
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "account": HOME_ACCOUNT,
                "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "region": REGION,
                "resources": [],
                "detail": {},
            }
            answer: dict[str, Any] = handler(event, LambdaContext("check_websites"))
            return answer

        yield handle, calls, failing


def aws_runs(checks: int) -> list[Run]:
    start = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    scenes = (  # what the run is, whether the FAILING sites fail, how many states it changes
        (f"first run: {checks} checks never seen", False, checks),
        ("steady: nothing changed", False, 0),
        (f"{FAILING} sites answer 500: their first failed run", True, FAILING),
        (f"{FAILING} sites DOWN: their second failed run, {FAILING} emails", True, FAILING),
        ("steady while down", True, 0),
    )
    runs: list[Run] = []
    with deployed(checks) as (handle, calls, failing):
        for minute, (name, fails, changed) in enumerate(scenes):
            failing.failing = fails
            calls.take()
            started = time.perf_counter()
            answer = handle(start + timedelta(minutes=minute))
            seconds = time.perf_counter() - started
            if answer.get("checks") != checks or answer.get("status_page") != "published":
                raise RuntimeError(f"{name}: {answer}")
            runs.append(Run(name, changed, seconds, calls.take()))
    return runs


def calls_table(checks: int, runs: list[Run]) -> list[str]:
    table = os.environ.get(WEBSITES_TABLE, "opsbots-websites")
    batches = -(-checks // READ_BATCH)
    lines = [
        f"### AWS calls per run: {checks} checks, the app's handler on moto's server",
        "",
        "| run | states changed | state reads (BatchGetItem) | state writes (PutItem) | run-once and email ledger "
        "| SES | S3 (history read, history write, page) | wall time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    met = True
    for run in runs:
        reads = run.calls[f"dynamodb:BatchGetItem {table}"]
        writes = run.calls[f"dynamodb:PutItem {table}"]
        ledger = run.count("dynamodb:") - reads - writes
        met &= reads == batches and writes == run.changed
        lines.append(
            f"| {run.name} | {run.changed} | {reads} | {writes} | {ledger} | {run.count('sesv2:')} "
            f"| {run.count('s3:')} | {ms(run.seconds)} |"
        )
    lines += [
        "",
        f"- target: one batch read per {READ_BATCH} checks and one write per changed check, none for the rest: "
        f"{verdict(met)}",
    ]
    return lines


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
        "",
        *calls_table(checks, aws_runs(checks)),
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
