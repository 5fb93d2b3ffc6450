"""Entry points: what each of this bot's Lambda functions does with its event."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from chalicelib import notify
from chalicelib.aws import HOME, Target
from chalicelib.bots import SNAPSHOT_LEDGER, SNAPSHOT_QUEUE
from chalicelib.dedupe import always
from chalicelib.fanout import RejectedMessageError, queue_all
from chalicelib.observability import logger, metrics
from chalicelib.runtime import NotConfiguredError
from chalicelib.snapshots.decisions import (
    BOT,
    UNIT_THREADS,
    Unit,
    UnitRequest,
    plan_units,
    resolve,
)
from chalicelib.snapshots.executors import Ledger, UnitResult, run_unit
from chalicelib.snapshots.policy import SnapshotsPolicy
from chalicelib.triggers import delivery_id, delivery_time

if TYPE_CHECKING:
    from chalice.app import CloudWatchEvent, SQSEvent
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_sqs import SQSClient

    from chalicelib.aws import Clients
    from chalicelib.dedupe import Once
    from chalicelib.outbox import Mailer
    from chalicelib.policy import AccountsPolicy
    from chalicelib.runtime import Runtime


# ---------------------------------------------------------------------------------------------
# Entry points: the bot's work, with what it needs injected (tests call these).
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotDeps:
    clients: Clients
    queue_url: str | None
    sqs: SQSClient | None
    ledger: Ledger


def schedule_snapshots(
    *,
    policies: SnapshotsPolicy,
    accounts: AccountsPolicy,
    deps: SnapshotDeps,
    mailer: Mailer,
    now: datetime | None = None,
    once: Once = always,
    event_id: str | None = None,
) -> dict[str, Any]:
    """The hourly run: fan the units out to SQS, or run them here when there is no queue.

    `now` is the scheduled event's time, so a retried delivery works on its own windows. Given the event's
    id and a run-once guard, a second delivery of the same event returns the first run's result: nothing
    queued twice, no second failure email. Failure emails that SES refused earlier (parked by this run
    or a worker) are sent first.
    """

    def run() -> dict[str, Any]:
        mailer.flush()
        return _take_snapshots(policies, accounts, deps, mailer, now or datetime.now(UTC))

    return run() if event_id is None else once("take-snapshots", event_id, run)


def _take_snapshots(
    policies: SnapshotsPolicy, accounts: AccountsPolicy, deps: SnapshotDeps, mailer: Mailer, now: datetime
) -> dict[str, Any]:
    units = plan_units(policies, accounts, deps.clients.units(accounts, BOT), now)
    if deps.queue_url and deps.sqs:
        queue_all(
            deps.sqs, deps.queue_url, {f"{u.account_id}/{u.region}": u.to_message() for u in units}, "SnapshotUnits"
        )
        return {"queued": len(units)}
    with ThreadPoolExecutor(max_workers=UNIT_THREADS) as pool:
        results = list(
            pool.map(lambda unit: run_unit(unit, policies, _ec2_for(deps.clients, unit), deps.ledger), units)
        )
    return _summarize(results, policies, mailer)


def work_on(
    messages: Iterable[str],
    *,
    policies: SnapshotsPolicy,
    accounts: AccountsPolicy,
    deps: SnapshotDeps,
    mailer: Mailer,
    once: Once = always,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, Any]:
    """The SQS worker: one unit per message. A message is a request, not a command: a malformed one, or one
    naming an account that is neither listed nor in the organization accounts.yml names, or a time far from
    `clock`, is logged, counted and dropped.

    SQS delivers at least once: with a run-once guard, a message seen before (the same body: the same
    unit of the same run) returns the first delivery's result, so a failing unit is emailed once.
    """
    bodies = list(messages)
    key = hashlib.sha256("\n".join(bodies).encode()).hexdigest()
    return once("snapshot-units", key, lambda: _work_on(bodies, policies, accounts, deps, mailer, clock()))


def _work_on(
    bodies: Sequence[str],
    policies: SnapshotsPolicy,
    accounts: AccountsPolicy,
    deps: SnapshotDeps,
    mailer: Mailer,
    now: datetime,
) -> dict[str, Any]:
    results = []
    for body in bodies:
        try:
            request = UnitRequest.from_message(body)
            if accounts.member(request.account_id) is None and accounts.organization is not None:
                # An account of the organization: checked against its listing (unavailable: the batch is retried).
                accounts = deps.clients.fleet(accounts)
            unit = resolve(request, accounts, deps.clients.home().account_id, now)
        except RejectedMessageError as error:
            logger.warning("snapshot message rejected", extra={"reason": str(error)})
            metrics.add_metric(name="MalformedEvents", unit="Count", value=1)
            continue
        # Retention ages snapshots by the worker's own clock: a message's time only picks the window.
        results.append(run_unit(unit, policies, _ec2_for(deps.clients, unit), deps.ledger, min(now, unit.now)))
    return _summarize(results, policies, mailer)


def _ec2_for(clients: Clients, unit: Unit) -> Callable[[str], EC2Client]:
    return lambda region: clients.client("ec2", Target(unit.account_id, region, unit.role_arn))


def _summarize(results: Sequence[UnitResult], policies: SnapshotsPolicy, mailer: Mailer) -> dict[str, Any]:
    totals = {key: sum(getattr(r, key) for r in results) for key in ("taken", "present", "pruned", "copied")}
    totals["foreign"] = sum(len(r.foreign) for r in results)
    failed = [f"{r.account_id}/{r.region}: {failure}" for r in results for failure in r.failed]
    for name, value in (*totals.items(), ("failed", len(failed))):
        if name != "foreign":  # counted as ForeignSnapshots, where each is found
            metrics.add_metric(name=f"Snapshots{name.capitalize()}", unit="Count", value=value)
    for result in results:
        logger.info("snapshot unit done", extra=asdict(result))
    failed_accounts = {r.account_id for r in results if r.failed}
    if failed and policies.notify:
        notice = notify.notice(
            "snapshot_failures",
            to=policies.notify.email,
            subject=f"[opsbots] snapshots: {len(failed)} failure(s) in {len(failed_accounts)} account(s)",
            facts={"results": [asdict(result) for result in results]},
        )
        # Parked if SES refuses it; the next scheduled run sends it.
        mailer.deliver(f"snapshot-failures:{mailer.request_id}", notice)
    return {"units": len(results), **totals, "failed": failed}


# ----- the Lambda functions app.py wires: (event, runtime) -> answer -----------------------------


def take_snapshots(event: CloudWatchEvent, runtime: Runtime) -> dict[str, Any]:
    return schedule_snapshots(
        policies=runtime.policies.of(SnapshotsPolicy),
        accounts=runtime.policies.accounts,
        deps=runtime.built(snapshot_deps),
        mailer=runtime.mailer(BOT, event.context),
        now=delivery_time(event),
        once=runtime.once(event.context),
        event_id=delivery_id(event),
    )


def snapshot_worker(event: SQSEvent, runtime: Runtime) -> dict[str, Any]:
    return work_on(
        (record.body for record in event),
        policies=runtime.policies.of(SnapshotsPolicy),
        accounts=runtime.policies.accounts,
        deps=runtime.built(snapshot_deps),
        mailer=runtime.mailer(BOT, event.context),
        once=runtime.once(event.context),
    )


def snapshot_deps(runtime: Runtime) -> SnapshotDeps:
    """Built once per container: the ledger is the bot's proof of what it owns."""
    ledger_table, queue = runtime.settings.resource(SNAPSHOT_LEDGER), runtime.settings.resource(SNAPSHOT_QUEUE)
    if not ledger_table:
        raise NotConfiguredError(f"{SNAPSHOT_LEDGER} is not set: the snapshot bot proves what it owns by its ledger")
    home = Target(HOME, runtime.clients.home_region)
    sqs = runtime.clients.client("sqs", home) if queue else None
    return SnapshotDeps(runtime.clients, queue, sqs, Ledger(runtime.clients.client("dynamodb", home), ledger_table))
