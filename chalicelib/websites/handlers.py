"""Entry points: what a run of the website checks does at its scheduled time, with what it needs injected."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.aws import HOME, Target
from chalicelib.bots import WEBSITES_TABLE
from chalicelib.observability import logger, metrics
from chalicelib.runtime import NotConfiguredError
from chalicelib.triggers import delivery_id, delivery_time
from chalicelib.websites.decisions import BOT, CheckState, Transition, Verdict, advance, is_due, judge, state_notice
from chalicelib.websites.executors import HttpProber, Request, StateStore, StatusPageStore
from chalicelib.websites.policy import StatusPage, WebsitesPolicy
from chalicelib.websites.status_page import History, recorded, render

if TYPE_CHECKING:
    from chalice.app import CloudWatchEvent

    from chalicelib.outbox import Mailer
    from chalicelib.runtime import Runtime
    from chalicelib.websites.policy import Check

PAGE_ATTEMPTS: Final = 3  # reads and conditional writes of the status history before leaving it to the other runs
Run = tuple["Check", Verdict, Transition]


@dataclass(frozen=True)
class WebsiteDeps:
    prober: HttpProber
    store: StateStore
    policies_dir: Path  # where a check's ca_bundle is read from
    pages: Callable[[StatusPage], StatusPageStore]  # where a policy's status page is kept


def request_for(policy: WebsitesPolicy, check: Check, policies_dir: Path) -> Request:
    return Request(
        name=check.name,
        url=check.url,
        method=check.method,
        headers=tuple(check.headers.items()),
        body=check.body.encode() if check.body is not None else None,
        timeout=policy.setting(check, "timeout").total_seconds(),
        allow_private=check.allow_private,
        ca_file=str(policies_dir / check.ca_bundle) if check.ca_bundle else None,
    )


def run_checks(*, policy: WebsitesPolicy, deps: WebsiteDeps, mailer: Mailer, at: datetime) -> dict[str, Any]:
    """The checks due at `at`, all at once; each state that changed is stored, and announced once."""
    due = [check for check in policy.checks if is_due(policy.setting(check, "every"), at)]
    probes = deps.prober.probe_all([request_for(policy, check, deps.policies_dir) for check in due])
    states = deps.store.read([check.name for check in due])
    announced: list[str] = []
    lost_races: list[str] = []
    runs: list[Run] = []
    down = 0
    for check in due:
        verdict = judge(check, probes[check.name], at)
        before = states.get(check.name, CheckState())
        transition = advance(policy, check, before, verdict, at)
        runs.append((check, verdict, transition))
        down += transition.state.state == "down"
        metrics.add_metric(name=f"ResponseTime.{check.name}", unit="Seconds", value=verdict.seconds)
        if transition.state != before and not deps.store.write(check.name, transition.state):
            lost_races.append(check.name)  # another run of this minute stored it first, and announces it
            continue
        if transition.announce:
            key = f"website:{check.name}:{transition.announce}:{transition.state.version}"
            mailer.deliver(key, state_notice(policy, check, transition, verdict, at))
            announced.append(f"{check.name}: {transition.announce}")
    metrics.add_metric(name="ChecksRun", unit="Count", value=len(due))
    metrics.add_metric(name="ChecksDown", unit="Count", value=down)
    answer = {"at": at.isoformat(), "checks": len(due), "down": down, "announced": announced, "lost_races": lost_races}
    if policy.status_page and runs:
        answer["status_page"] = publish_status(policy, deps.pages(policy.status_page), runs, at)
    logger.info("website checks run", extra=answer)
    return answer


def publish_status(policy: WebsitesPolicy, pages: StatusPageStore, runs: Sequence[Run], at: datetime) -> str:
    """Record the run in the status page's history, then write the page from it: `published`, `left` to
    the other runs that kept writing first, or `failed`.

    The page is bookkeeping: it comes after every state is stored and every email handed over, and an
    S3 failure costs this minute's page (counted, and alarmed on), never a check or an email.
    """
    try:
        for _ in range(PAGE_ATTEMPTS):
            histories, read_at = pages.read()
            for check, verdict, transition in runs:
                counted = not policy.in_maintenance(check.name, at)
                histories[check.name] = recorded(
                    histories.get(check.name, History()), verdict, transition, at, counted=counted
                )
            kept = {check.name: histories.get(check.name, History()) for check in policy.checks}  # the policy's only
            if pages.store(kept, read_at):
                checks = [
                    (check.name, kept[check.name], policy.in_maintenance(check.name, at)) for check in policy.checks
                ]
                pages.publish(render(checks, at))
                return "published"
    except (BotoCoreError, ClientError):
        logger.exception("status page not written", extra={"bucket": pages.bucket, "key": pages.key})
        metrics.add_metric(name="StatusPageFailures", unit="Count", value=1)
        return "failed"
    return "left"


# ----- the Lambda function app.py wires: (event, runtime) -> answer ------------------------------


def check_websites(event: CloudWatchEvent, runtime: Runtime) -> dict[str, Any]:
    at = (delivery_time(event) or datetime.now(UTC)).replace(second=0, microsecond=0)  # the minute it is for
    mailer = runtime.mailer(BOT, event.context)

    def run() -> dict[str, Any]:
        mailer.flush()  # what an earlier run could not send goes first
        policy = runtime.policies.of(WebsitesPolicy)
        return run_checks(policy=policy, deps=runtime.built(website_deps), mailer=mailer, at=at)

    event_id = delivery_id(event)
    return run() if event_id is None else runtime.once(event.context)("check-websites", event_id, run)


def website_deps(runtime: Runtime) -> WebsiteDeps:
    """Built once per container: the states table is where each check's up or down is kept; the status page
    is where the policy says."""
    table = runtime.settings.resource(WEBSITES_TABLE)
    if not table:
        raise NotConfiguredError(f"{WEBSITES_TABLE} is not set: the website checks keep their states in it")
    home = Target(HOME, runtime.clients.home_region)
    store = StateStore(runtime.clients.client("dynamodb", home), table)

    def pages(page: StatusPage) -> StatusPageStore:  # its S3 client made on first use: most runs' policies have none
        return StatusPageStore(runtime.clients.client("s3", home), page.bucket, page.key, page.history_key)

    return WebsiteDeps(HttpProber(), store, runtime.settings.policies_dir, pages)
