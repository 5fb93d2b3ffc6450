"""Entry points: what a run of the website checks does at its scheduled time, with what it needs injected."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chalicelib.observability import logger, metrics
from chalicelib.websites.decisions import CheckState, advance, is_due, judge, state_notice
from chalicelib.websites.executors import Request

if TYPE_CHECKING:
    from chalicelib.outbox import Mailer
    from chalicelib.websites.executors import HttpProber, StateStore
    from chalicelib.websites.policy import Check, WebsitesPolicy


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
