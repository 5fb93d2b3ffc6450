"""Entry points: what each of this bot's Lambda functions does with its event."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.aws import HOME, Target
from chalicelib.bots import DNS_TABLE
from chalicelib.dns.decisions import (
    BOT,
    RECONCILE_THREADS,
    RUNNING,
    ZONE_CACHE_SECONDS,
    HostedZone,
    Instance,
    OwnedRecord,
    Record,
    desired_records,
    owner_of,
    plan_changes,
)
from chalicelib.dns.events import parse_state_change
from chalicelib.dns.executors import Outcome, Registry, apply, describe_instance, hosted_zones, running_instances
from chalicelib.dns.policy import DnsPolicy
from chalicelib.events import SkippedEvent
from chalicelib.observability import logger, metrics
from chalicelib.runtime import NotConfiguredError

if TYPE_CHECKING:
    from chalice.app import CloudWatchEvent
    from mypy_boto3_route53 import Route53Client

    from chalicelib.aws import Clients
    from chalicelib.policy import Policies
    from chalicelib.runtime import Runtime


# ---------------------------------------------------------------------------------------------
# Entry points: the bot's work, with what it needs injected (tests call these).
# ---------------------------------------------------------------------------------------------


class ZoneCache:
    """Hosted zones of the home account, listed again after ZONE_CACHE_SECONDS (they rarely change)."""

    def __init__(self, route53: Route53Client, clock: Callable[[], float] = time.monotonic) -> None:
        self._route53 = route53
        self._clock = clock
        self._zones: tuple[HostedZone, ...] | None = None
        self._listed_at = 0.0

    def get(self) -> tuple[HostedZone, ...]:
        if self._zones is None or self._clock() - self._listed_at > ZONE_CACHE_SECONDS:
            self._zones = hosted_zones(self._route53)
            self._listed_at = self._clock()
        return self._zones


@dataclass(frozen=True)
class DnsDeps:
    clients: Clients
    route53: Route53Client
    registry: Registry
    zones: ZoneCache


def handle_state_change(raw: Mapping[str, Any], *, policies: Policies, deps: DnsDeps) -> dict[str, Any]:
    """Make one instance's records match its current state."""
    try:
        change = parse_state_change(raw)
    except SkippedEvent as skipped:
        return skipped.report()
    target = deps.clients.target_for(change.account_id, change.region, policies.accounts, BOT)
    if target is None:
        logger.warning("event from an account opsbots does not manage", extra={"account": change.account_id})
        metrics.add_metric(name="EventsIgnored", unit="Count", value=1)
        return {"event_id": change.event_id, "status": "unmanaged-account"}
    instance = describe_instance(deps.clients.client("ec2", target), target, change.instance_id)
    owner = owner_of(change.account_id, change.region, change.instance_id)
    wanted: tuple[Record, ...] = ()
    reasons: tuple[str, ...] = ()  # why a record the instance should have cannot be made
    if instance is not None and instance.state == RUNNING:
        wanted, reasons = desired_records(instance, policies.of(DnsPolicy), deps.zones.get(), _account_key(target))
        for reason in reasons:
            logger.warning("record skipped", extra={"instance": owner, "reason": reason})
    plan = plan_changes((OwnedRecord(r, owner) for r in wanted), deps.registry.owned_by(owner), owner.__eq__)
    outcome = apply(plan, route53=deps.route53, registry=deps.registry)
    _report(outcome)
    state = instance.state if instance else "gone"
    logger.info(
        "dns updated", extra={"instance": owner, "state": state, "event_state": change.state, **outcome.as_dict()}
    )
    answer = {"event_id": change.event_id, "instance": owner, "state": state, **outcome.as_dict()}
    return answer | {"not_made": list(reasons)}


def _account_key(target: Target) -> str:
    """How policies name an account: "home" for the functions' own, else its id."""
    return "home" if target.role_arn is None else target.account_id


def _report(outcome: Outcome) -> None:
    metrics.add_metric(name="RecordsAdded", unit="Count", value=outcome.added)
    metrics.add_metric(name="RecordsUpdated", unit="Count", value=outcome.updated)
    metrics.add_metric(name="RecordsRemoved", unit="Count", value=outcome.removed)
    metrics.add_metric(name="RecordConflicts", unit="Count", value=len(outcome.conflicts))
    for conflict in outcome.conflicts:
        logger.warning("dns conflict: name left to its holder", extra={"conflict": conflict})
    for skipped in outcome.skipped:
        logger.info("dns record skipped: it would point at a name the instance lost", extra={"record": skipped})


def reconcile(*, policies: Policies, deps: DnsDeps) -> dict[str, Any]:
    """Make Route53 match the running instances of every account and region; failed units keep their records."""
    targets = [target for target, _ in deps.clients.units(policies.accounts, BOT)]

    def scan(target: Target) -> tuple[Target, tuple[Instance, ...] | str]:
        try:
            return target, running_instances(deps.clients.client("ec2", target), target, policies.of(DnsPolicy))
        except (ClientError, BotoCoreError) as error:
            return target, f"{type(error).__name__}: {error}"

    with ThreadPoolExecutor(max_workers=RECONCILE_THREADS) as pool:
        scanned = list(pool.map(scan, targets))
    zones = deps.zones.get()
    failed = {(t.account_id, t.region) for t, found in scanned if isinstance(found, str)}
    wanted: list[OwnedRecord] = []
    for target, found in scanned:
        for instance in found if not isinstance(found, str) else ():
            records, _skipped = desired_records(instance, policies.of(DnsPolicy), zones, _account_key(target))
            wanted.extend(OwnedRecord(record, instance.owner) for record in records)

    def in_scope(owner: str) -> bool:
        """Reached, or no longer managed at all (an account or region taken out of accounts.yml): its records
        go. Only a unit that failed to answer keeps them, until it answers again."""
        account_id, region, _ = owner.split("/", 2)
        return (account_id, region) not in failed

    plan = plan_changes(wanted, deps.registry.everything(), in_scope)
    outcome = apply(plan, route53=deps.route53, registry=deps.registry)
    outcome.failures = [f"{t.account_id}/{t.region}: {found}" for t, found in scanned if isinstance(found, str)]
    _report(outcome)
    metrics.add_metric(name="ReconcileFailures", unit="Count", value=len(outcome.failures))
    logger.info("dns reconciled", extra={"units": len(targets), **outcome.as_dict()})
    return {"units": len(targets), **outcome.as_dict()}


# ----- the Lambda functions app.py wires: (event, runtime) -> answer -----------------------------


def on_instance_state_change(event: CloudWatchEvent, runtime: Runtime) -> dict[str, Any]:
    return handle_state_change(event.to_dict(), policies=runtime.policies, deps=runtime.built(dns_deps))


def reconcile_dns(event: CloudWatchEvent, runtime: Runtime) -> dict[str, Any]:
    return reconcile(policies=runtime.policies, deps=runtime.built(dns_deps))


def dns_deps(runtime: Runtime) -> DnsDeps:
    """Built once per container: the registry table is the bot's proof of what it owns."""
    table = runtime.settings.resource(DNS_TABLE)
    if not table:
        raise NotConfiguredError(f"{DNS_TABLE} is not set: the DNS bot needs its registry table")
    home = Target(HOME, runtime.clients.home_region)
    route53 = runtime.clients.client("route53", home)
    registry = Registry(runtime.clients.client("dynamodb", home), table)
    return DnsDeps(runtime.clients, route53, registry, ZoneCache(route53))
