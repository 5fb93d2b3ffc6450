"""Entry points: what a run of the website checks does at its scheduled time, with what it needs injected."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chalicelib.aws import HOME, Target
from chalicelib.bots import WEBSITES_TABLE
from chalicelib.observability import logger, metrics
from chalicelib.runtime import NotConfiguredError
from chalicelib.triggers import delivery_id, delivery_time
from chalicelib.websites.decisions import BOT, CheckState, advance, is_due, judge, state_notice
from chalicelib.websites.executors import HttpProber, Request, StateStore
from chalicelib.websites.policy import WebsitesPolicy

if TYPE_CHECKING:
    from chalice.app import CloudWatchEvent

    from chalicelib.outbox import Mailer
    from chalicelib.runtime import Runtime
    from chalicelib.websites.policy import Check


@dataclass(frozen=True)
class WebsiteDeps:
    prober: HttpProber
    store: StateStore
    policies_dir: Path  # where a check's ca_bundle is read from


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
    down = 0
    for check in due:
        verdict = judge(check, probes[check.name], at)
        before = states.get(check.name, CheckState())
        transition = advance(policy, check, before, verdict, at)
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
    logger.info("website checks run", extra={"due": len(due), "announced": announced, "lost_races": lost_races})
    return {"at": at.isoformat(), "checks": len(due), "down": down, "announced": announced, "lost_races": lost_races}


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
    """Built once per container: the states table is where each check's up or down is kept."""
    table = runtime.settings.resource(WEBSITES_TABLE)
    if not table:
        raise NotConfiguredError(f"{WEBSITES_TABLE} is not set: the website checks keep their states in it")
    store = StateStore(runtime.clients.client("dynamodb", Target(HOME, runtime.clients.home_region)), table)
    return WebsiteDeps(HttpProber(), store, runtime.settings.policies_dir)
