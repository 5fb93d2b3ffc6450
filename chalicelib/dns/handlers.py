"""Entry points: what each of this bot's Lambda functions does with its event."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.aws import HOME, Target, reason
from chalicelib.bots import DNS_RECONCILE_QUEUE, DNS_TABLE, DNS_WRITER
from chalicelib.dns.decisions import (
    BOT,
    RECONCILE_DELIVERIES,
    RECONCILE_THREADS,
    RUNNING,
    TERMINATED,
    ZONE_CACHE_SECONDS,
    HostedZone,
    OwnedRecord,
    Record,
    UnitScan,
    desired_records,
    owner_of,
    plan_changes,
    ready_run,
    reconcile_plan,
    trimmed,
)
from chalicelib.dns.events import parse_state_change
from chalicelib.dns.executors import (
    Outcome,
    Registry,
    RunWriter,
    apply,
    describe_instance,
    hosted_zones,
    running_instances,
)
from chalicelib.dns.policy import DnsPolicy
from chalicelib.events import SkippedEvent
from chalicelib.fanout import (
    Fanout,
    RejectedMessageError,
    ResultTooLargeError,
    Run,
    Runs,
    UnitRequest,
    fanout_to,
    handle_unit,
    queue_all,
    requested_unit,
    runs_of,
)
from chalicelib.observability import logger, metrics
from chalicelib.runtime import NotConfiguredError
from chalicelib.triggers import RECONCILE_READY, deliveries, delivery_id, delivery_time, matches

if TYPE_CHECKING:
    from chalice.app import CloudWatchEvent, SQSEvent
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
    # Terminated is the one state an instance never leaves, and only AWS puts an aws.ec2 event on a bus: that
    # event is taken at its word. Every other state is a hint to look at the instance as it is now.
    terminated = change.state == TERMINATED
    instance = None if terminated else describe_instance(deps.clients.client("ec2", target), target, change.instance_id)
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
    state = instance.state if instance else TERMINATED if terminated else "gone"
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


def reconcile(
    *,
    policies: Policies,
    deps: DnsDeps,
    at: datetime | None = None,
    event_id: str | None = None,
    fanout: Fanout | None = None,
) -> dict[str, Any]:
    """Make Route53 match the running instances of every account and region; failed units keep their records.

    With `fanout`, one queue message per account/region instead: each is scanned by `reconcile_worker`, and
    the last hands the run to the DNS writer (`apply_run`), which plans and writes it from what the workers
    stored. A run that could not list the organization covers the accounts listed, and takes no other
    account's records for gone.
    """
    units, complete = deps.clients.units_known(policies.accounts, BOT)
    if fanout is not None:
        started = at or datetime.now(UTC)
        run = f"dns-{event_id or f'{started:%Y-%m-%dT%H:%M:%S}'}"
        fanout.runs.start(run, started, len(units), complete=complete)  # before any message: see reconcile_worker
        messages = {
            f"{target.account_id}/{target.region}": UnitRequest(run, target.account_id, target.region).to_message()
            for target, _ in units
        }
        queue_all(fanout.sqs, fanout.queue_url, messages, "ReconcileUnits")
        return {"run": run, "queued": len(units), "complete": complete}
    policy = policies.of(DnsPolicy)
    with ThreadPoolExecutor(max_workers=RECONCILE_THREADS) as pool:
        scans = list(pool.map(lambda unit: scan_unit(unit[0], policy, deps.clients), units))
    return _apply_scans(scans, complete, policies=policies, deps=deps)


def scan_unit(target: Target, policy: DnsPolicy, clients: Clients) -> UnitScan:
    """One account/region's running instances; what AWS refuses or fails is the scan's error."""
    scanned = datetime.now(UTC)
    try:
        found = running_instances(clients.client("ec2", target), target, policy)
    except (ClientError, BotoCoreError) as error:
        logger.error(
            "dns scan failed: the unit's records are kept",
            extra={"account": target.account_id, "region": target.region, "reason": reason(error)},
        )
        return UnitScan(target.account_id, target.region, scanned, error=reason(error))
    return UnitScan(target.account_id, target.region, scanned, tuple(trimmed(i, policy) for i in found))


def _apply_scans(scans: Sequence[UnitScan], complete: bool, *, policies: Policies, deps: DnsDeps) -> dict[str, Any]:
    """Plan a run from its units' scans and the registry, and write it."""
    registry = deps.registry.everything()
    plan = reconcile_plan(
        scans,
        registry.held,
        registry.changed,
        deps.zones.get(),
        policies.of(DnsPolicy),
        home_account_id=deps.clients.home().account_id,
        complete=complete,
    )
    outcome = apply(plan, route53=deps.route53, registry=deps.registry)
    outcome.failures = [f"{scan.unit}: {scan.error}" for scan in scans if scan.error]
    _report(outcome)
    metrics.add_metric(name="ReconcileFailures", unit="Count", value=len(outcome.failures))
    if not complete:
        logger.warning("the organization could not be listed: records of accounts only it names are kept")
    logger.info("dns reconciled", extra={"units": len(scans), "complete": complete, **outcome.as_dict()})
    return {"units": len(scans), "complete": complete, **outcome.as_dict()}


class Writer(Protocol):
    """Where a completed run goes to be written: the DNS writer (executors.RunWriter), or, in-process, a test's."""

    def apply(self, run: str) -> None: ...


def reconcile_worker(
    body: str, attempt: int, *, policies: Policies, clients: Clients, runs: Runs, writer: Writer
) -> dict[str, Any]:
    """One account/region of a fanned-out reconcile (`handle_unit`): scan it, store the scan, and if it completes
    the run, hand the run to the writer. A unit that fails every delivery is stored as failed (its records are
    kept). The worker writes nothing to Route53: only the writer does."""

    def work(request: UnitRequest, _: Run) -> UnitScan:
        target, _name = requested_unit(request, policies.accounts, clients, BOT)
        return scan_unit(target, policies.of(DnsPolicy), clients)

    def failed(request: UnitRequest, _: Run, crash: str) -> UnitScan:
        return UnitScan(request.account_id, request.region, datetime.now(UTC), error=crash)

    def finish(request: UnitRequest, _: Run, scan: UnitScan) -> dict[str, Any]:
        return _finish(request.run, scan, runs, writer)

    return handle_unit(
        body,
        attempt,
        runs,
        work=work,
        failed=failed,
        finish=finish,
        deliveries=RECONCILE_DELIVERIES,
        crashed_metric="ReconcileUnitsCrashed",
    )


def _finish(run: str, scan: UnitScan, runs: Runs, writer: Writer) -> dict[str, Any]:
    try:
        recorded = runs.record(run, scan.unit, scan)
    except ResultTooLargeError as error:
        logger.error("dns scan too large to store: the unit's records are kept", extra={"unit": scan.unit})
        scan = replace(scan, instances=(), error=f"{len(scan.instances)} instances, too many to store: {error}")
        recorded = runs.record(run, scan.unit, scan)
    metrics.add_metric(name="ReconcileUnitsDone", unit="Count", value=int(recorded))
    completes = runs.claim_completion(run)
    if completes:  # this unit completed the run: the writer applies it, once, from every unit's scan
        try:
            writer.apply(run)
        except (ClientError, BotoCoreError):
            runs.give_back_completion(run)  # this message's next delivery hands it on
            raise
    answer = {"run": run, "unit": scan.unit, "recorded": recorded, "instances": len(scan.instances)}
    return answer | {"error": scan.error, "handed_to_writer": completes}


def apply_run(event: Mapping[str, Any], *, policies: Policies, deps: DnsDeps, runs: Runs) -> dict[str, Any]:
    """The writer's half of a fanned-out reconcile: plan the run from its units' stored scans and write it.

    The event is a request, not proof: the run must be one the scheduler recorded, every unit of which was
    done. Applying a run twice writes nothing the second time, and a run applied late leaves alone every name
    an event changed after its unit's scan.
    """
    try:
        run_id = ready_run(event)
        run = runs.get(run_id)
        if run is None or not run.completed:
            raise RejectedMessageError(f"run {run_id} is not a reconcile run whose units are all done")
    except RejectedMessageError as error:
        logger.warning("reconcile-ready event rejected", extra={"reason": str(error)})
        metrics.add_metric(name="MalformedEvents", unit="Count", value=1)
        return {"rejected": str(error)}
    scans = runs.results(run_id, UnitScan)
    return {"run": run_id, **_apply_scans(scans, run.complete, policies=policies, deps=deps)}


# ----- the Lambda functions app.py wires: (event, runtime) -> answer -----------------------------


def on_instance_state_change(event: CloudWatchEvent, runtime: Runtime) -> dict[str, Any]:
    """The DNS writer: an instance's state change, or a reconcile run its last worker handed on."""
    raw = event.to_dict()
    if matches(RECONCILE_READY, raw):
        return apply_run(raw, policies=runtime.policies, deps=runtime.built(dns_deps), runs=runtime.built(runs_of))
    return handle_state_change(raw, policies=runtime.policies, deps=runtime.built(dns_deps))


def reconcile_dns(event: CloudWatchEvent, runtime: Runtime) -> dict[str, Any]:
    return reconcile(
        policies=runtime.policies,
        deps=runtime.built(dns_deps),
        at=delivery_time(event),
        event_id=delivery_id(event),
        fanout=runtime.built(reconcile_fanout),
    )


def dns_reconcile_worker(event: SQSEvent, runtime: Runtime) -> dict[str, Any]:
    runs, writer = runtime.built(runs_of), runtime.built(run_writer)
    return {
        "units": [
            reconcile_worker(
                record.body,
                deliveries(record),
                policies=runtime.policies,
                clients=runtime.clients,
                runs=runs,
                writer=writer,
            )
            for record in event
        ]
    }


def dns_deps(runtime: Runtime) -> DnsDeps:
    """Built once per container: the registry table is the bot's proof of what it owns."""
    table = runtime.settings.resource(DNS_TABLE)
    if not table:
        raise NotConfiguredError(f"{DNS_TABLE} is not set: the DNS bot needs its registry table")
    home = Target(HOME, runtime.clients.home_region)
    route53 = runtime.clients.client("route53", home)
    registry = Registry(runtime.clients.client("dynamodb", home), table)
    return DnsDeps(runtime.clients, route53, registry, ZoneCache(route53))


def reconcile_fanout(runtime: Runtime) -> Fanout | None:
    """Built once per container: with a queue set, the reconcile fans out to it (else it scans every unit itself)."""
    return fanout_to(runtime, DNS_RECONCILE_QUEUE)


def run_writer(runtime: Runtime) -> RunWriter:
    """Built once per container: the DNS writer a completed run is handed to."""
    function = runtime.settings.resource(DNS_WRITER)
    if not function:
        raise NotConfiguredError(f"{DNS_WRITER} is not set: the reconcile's workers hand their run to it")
    return RunWriter(runtime.clients.client("lambda", Target(HOME, runtime.clients.home_region)), function)
