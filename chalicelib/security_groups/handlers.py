"""Entry points: what each of this bot's Lambda functions does with its event."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.aws import Target, reason
from chalicelib.bots import SWEEP_QUEUE
from chalicelib.dedupe import always
from chalicelib.events import SkippedEvent
from chalicelib.fanout import (
    Fanout,
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
from chalicelib.security_groups.decisions import (
    BOT,
    SWEEP_DELIVERIES,
    SWEEP_THREADS,
    Failure,
    SweepFinding,
    Verdict,
    act_on,
    could_not_act,
    describe_source,
    describe_traffic,
    digest_due,
    digest_notice,
    find_violations,
    judge,
    keep_exempt,
    needs_action,
    prefix_lists_to_resolve,
    read_exemption,
    violation_notice,
)
from chalicelib.security_groups.events import SecurityGroupChange, parse_security_group_change
from chalicelib.security_groups.executors import Ec2Executor
from chalicelib.security_groups.policy import SecurityGroupsPolicy
from chalicelib.triggers import deliveries, delivery_id, delivery_time

if TYPE_CHECKING:
    from chalice.app import CloudWatchEvent, SQSEvent, SQSRecord

    from chalicelib.aws import Clients
    from chalicelib.dedupe import Once
    from chalicelib.outbox import Mailer
    from chalicelib.policy import AccountsPolicy, Policies
    from chalicelib.runtime import Runtime


# ---------------------------------------------------------------------------------------------
# Entry points: the bot's work, with what it needs injected (tests call these).
# ---------------------------------------------------------------------------------------------


class NotificationError(Exception):
    """Raised so that Lambda retries the event: the revoke happened; the email is parked, and the retry sends it."""

    def __init__(self, event_id: str, outcome: str) -> None:
        super().__init__(f"event {event_id}: the violation email was not sent ({outcome}); Lambda retries the event")


class RevokeRetryError(Exception):
    """Raised so that Lambda retries the event: a rule is still open for a reason that may pass (throttled,
    5xx, a timeout). Security has been told once; the retry revokes what is still open."""

    def __init__(self, event_id: str, failed: Sequence[Failure]) -> None:
        rules = ", ".join(f"{failure.rule} ({failure.reason})" for failure in failed)
        super().__init__(f"event {event_id}: still open after a transient failure, to retry: {rules}")


def handle_change(
    raw: Mapping[str, Any],
    *,
    policies: Policies,
    clients: Clients,
    mailer: Mailer,
    now: Callable[[], datetime] | None = None,
) -> dict[str, Any]:
    """Handle one CloudTrail security-group (or prefix-list) event end to end; returns a JSON summary.

    Revoke first, always; then the email, once per event and outcome. The invocation fails, so that
    Lambda retries it, when the email could not be sent (it is parked, and the retry sends it) and when
    a revoke failed for a reason that may pass (the retry revokes; the email is not repeated).
    """
    clock = now or (lambda: datetime.now(UTC))
    try:
        change = parse_security_group_change(raw)
    except SkippedEvent as skipped:
        return skipped.report()

    policy = policies.of(SecurityGroupsPolicy)
    metrics.add_metric(name="PermissionsEvaluated", unit="Count", value=len(change.permissions))
    if not needs_action(change, policy.rules):
        return {"event_id": change.event_id, "status": "compliant"}

    target = clients.target_for(change.account_id, change.region, policies.accounts, BOT)
    if target is None:
        logger.warning("event from an account opsbots does not manage", extra={"account": change.account_id})
        metrics.add_metric(name="EventsIgnored", unit="Count", value=1)
        return {"event_id": change.event_id, "status": "unmanaged-account"}
    account_name = _account_name(change.account_id, policies.accounts)

    try:
        verdict = judge(change, policy, Ec2Executor(clients.client("ec2", target)), clock())
    except (ClientError, BotoCoreError) as error:
        verdict = could_not_act(change, policy, error)
    if verdict.status == "compliant":
        return {"event_id": change.event_id, "status": "compliant"}
    exposure = (clock() - change.time).total_seconds() if verdict.reverted else None
    _record(change, verdict, account_name, exposure)

    key = f"sg-event:{change.event_id}:{verdict.status}"
    email = mailer.deliver(key, violation_notice(change, verdict, policy, account_name, exposure))
    if email in ("parked", "failed"):
        raise NotificationError(change.event_id, email)
    if verdict.retrying:
        mailer.settle(key)  # the retry acts again, but this email is not sent again
        raise RevokeRetryError(change.event_id, verdict.failed)
    return {"event_id": change.event_id, "status": verdict.status, "email": email}


def _record(change: SecurityGroupChange, verdict: Verdict, account_name: str, exposure: float | None) -> None:
    exemptions = {exemption.group_id: exemption for exemption in verdict.exemptions}
    for violation, action in [
        *((violation, verdict.status) for violation in verdict.violations),
        *((violation, "kept (exempt)") for violation in verdict.kept),
    ]:
        permission = violation.permission
        exemption = exemptions.get(permission.group_id)
        logger.info(
            "security-group violation",
            extra={
                "audit": True,
                "event_id": change.event_id,
                "account": change.account_id,
                "account_name": account_name,
                "region": change.region,
                "group_id": permission.group_id,
                "rule_id": permission.rule_id,
                "traffic": describe_traffic(permission),
                "source": describe_source(permission.source),
                "policy_rules": list(violation.rules),
                "actor": change.actor.arn,
                "api_call": change.api_call,
                "event_time": change.time.isoformat(),
                "action": action,
                "exemption": exemption.note if exemption else None,
                "exposure_seconds": exposure,
            },
        )
    _count([verdict])
    if exposure is not None:
        metrics.add_metric(name="ExposureSeconds", unit="Seconds", value=exposure)


def _count(verdicts: Sequence[Verdict]) -> None:
    metrics.add_metric(name="Violations", unit="Count", value=sum(len(v.violations) for v in verdicts))
    metrics.add_metric(name="RulesReverted", unit="Count", value=sum(len(v.reverted) for v in verdicts))
    metrics.add_metric(name="ViolationsExempted", unit="Count", value=sum(len(v.kept) for v in verdicts))
    metrics.add_metric(name="RevokeFailures", unit="Count", value=sum(len(v.failed) for v in verdicts))


def _account_name(account_id: str, accounts: AccountsPolicy) -> str:
    member = accounts.member(account_id)
    return member.name if member else "home"


# ----- the scheduled sweep -------------------------------------------------------------------


def sweep_target(
    target: Target, account_name: str, policy: SecurityGroupsPolicy, executor: Ec2Executor, now: datetime
) -> SweepFinding:
    tags = executor.all_group_tags()
    exemptions = tuple(
        exemption
        for group, group_tags in sorted(tags.items())
        if (exemption := read_exemption(group, group_tags, policy, now))
    )
    permissions = executor.rules_of()
    prefix_lists = executor.prefix_list_entries(prefix_lists_to_resolve(permissions, policy.rules))
    to_act, kept = keep_exempt(find_violations(permissions, policy.rules, prefix_lists), exemptions)
    verdict = replace(act_on(to_act, policy, executor), kept=kept, exemptions=exemptions)
    return SweepFinding(target.account_id, account_name, target.region, verdict, len(tags))


def sweep(
    *,
    policies: Policies,
    clients: Clients,
    mailer: Mailer,
    at: datetime | None = None,
    once: Once = always,
    event_id: str | None = None,
    fanout: Fanout | None = None,
) -> dict[str, Any]:
    """Check every group of the home account and of every member account/region; one digest email.

    With `fanout`, one queue message per account/region instead, each swept by `sweep_worker`, the last
    of which sends the digest. `at` is the scheduled event's time: exemptions are judged at it, so a
    retried delivery decides alike. Given the event's id and a run-once guard, a second delivery of the
    same scheduled event returns the first run's result: no second digest for what was already
    reported. (A run that raised left no record, so Lambda's retry runs it; a guard whose table is down
    lets the run go ahead.)
    """
    started = at or datetime.now(UTC)

    def run() -> dict[str, Any]:
        if fanout is not None:
            run_id = event_id or f"sweep-{started:%Y-%m-%dT%H:%M:%S}"
            return _fan_out(policies=policies, clients=clients, mailer=mailer, started=started, run=run_id, to=fanout)
        return _sweep(policies=policies, clients=clients, mailer=mailer, started=started, event_id=event_id)

    return run() if event_id is None else once("sweep", event_id, run)


def _sweep_one(
    target: Target, name: str, policy: SecurityGroupsPolicy, clients: Clients, started: datetime
) -> SweepFinding:
    """One account/region's finding; what AWS refuses or fails is the finding's error, for the digest."""
    try:
        return sweep_target(target, name, policy, Ec2Executor(clients.client("ec2", target)), started)
    except (ClientError, BotoCoreError) as error:
        logger.error(
            "sweep failed for an account",
            extra={"account": target.account_id, "region": target.region, "reason": reason(error)},
        )
        return SweepFinding(target.account_id, name, target.region, Verdict("failed"), error=reason(error))


def _sweep(
    *, policies: Policies, clients: Clients, mailer: Mailer, started: datetime, event_id: str | None
) -> dict[str, Any]:
    policy = policies.of(SecurityGroupsPolicy)
    outbox = mailer.flush()  # what earlier runs could not send goes first
    units = clients.units(policies.accounts, BOT)
    with ThreadPoolExecutor(max_workers=SWEEP_THREADS) as pool:
        findings = list(pool.map(lambda unit: _sweep_one(unit[0], unit[1], policy, clients, started), units))
    email = _report(findings, policy, started, mailer, f"sg-sweep:{event_id or mailer.request_id}")
    return {**_summary(findings), "email": email, "outbox": outbox}


def _fan_out(
    *, policies: Policies, clients: Clients, mailer: Mailer, started: datetime, run: str, to: Fanout
) -> dict[str, Any]:
    outbox = mailer.flush()
    units = clients.units(policies.accounts, BOT)
    to.runs.start(run, started, len(units))  # before any message: a worker acts only for a recorded run
    messages = {
        f"{target.account_id}/{target.region}": UnitRequest(run, target.account_id, target.region).to_message()
        for target, _ in units
    }
    queue_all(to.sqs, to.queue_url, messages, "SweepUnits")
    return {"run": run, "queued": len(units), "outbox": outbox}


def _report(
    findings: Sequence[SweepFinding], policy: SecurityGroupsPolicy, started: datetime, mailer: Mailer, key: str
) -> str | None:
    """Count what the sweep found and send its digest if anything calls for one; the email's outcome."""
    failures = [finding for finding in findings if finding.error]
    metrics.add_metric(name="GroupsEvaluated", unit="Count", value=sum(f.groups_checked for f in findings))
    metrics.add_metric(name="SweepFailures", unit="Count", value=len(failures))
    _count([finding.verdict for finding in findings])
    email = mailer.deliver(key, digest_notice(findings, policy, started)) if digest_due(findings, started) else None
    violations = sum(len(finding.verdict.violations) for finding in findings)
    logger.info("sweep finished", extra={"units": len(findings), "violations": violations, "failures": len(failures)})
    return email


def _summary(findings: Sequence[SweepFinding]) -> dict[str, Any]:
    return {
        "units": len(findings),
        "violations": sum(len(finding.verdict.violations) for finding in findings),
        "reverted": sum(len(f.verdict.reverted) for f in findings),
        "failed_units": [f"{f.account_id}/{f.region}: {f.error}" for f in findings if f.error],
        "revoke_failures": [
            f"{f.account_id}/{f.region}/{failure.rule}: {failure.reason}"
            for f in findings
            for failure in f.verdict.failed
        ],
        "kept": [
            f"{f.account_id}/{f.region}/{v.permission.rule_id} ({v.permission.group_id})"
            for f in findings
            for v in f.verdict.kept
        ],
        "exempt_groups": [
            f"{f.account_id}/{f.region}/{e.group_id}: {e.note}" for f in findings for e in f.verdict.exemptions
        ],
    }


def work_on_unit(
    body: str, attempt: int, *, policies: Policies, clients: Clients, runs: Runs, mailer: Mailer
) -> dict[str, Any]:
    """The sweep worker: one account/region of a fanned-out sweep (`handle_unit`), then, if it completes the run,
    the digest. The sweep's time is the run's record's, never the message's; a unit that fails every delivery
    is listed in the digest as failed."""
    policy = policies.of(SecurityGroupsPolicy)

    def work(request: UnitRequest, run: Run) -> SweepFinding:
        target, name = requested_unit(request, policies.accounts, clients, BOT)
        return _sweep_one(target, name, policy, clients, run.started)

    def failed(request: UnitRequest, run: Run, crash: str) -> SweepFinding:
        listed = policies.accounts.member(request.account_id)
        name = listed.name if listed else request.account_id
        return SweepFinding(request.account_id, name, request.region, Verdict("failed"), error=crash)

    def finish(request: UnitRequest, run: Run, finding: SweepFinding) -> dict[str, Any]:
        return _finish(request.run, finding, run.started, policy, runs, mailer)

    return handle_unit(
        body,
        attempt,
        runs,
        work=work,
        failed=failed,
        finish=finish,
        deliveries=SWEEP_DELIVERIES,
        crashed_metric="SweepUnitsCrashed",
    )


def _finish(
    run: str, finding: SweepFinding, started: datetime, policy: SecurityGroupsPolicy, runs: Runs, mailer: Mailer
) -> dict[str, Any]:
    unit = f"{finding.account_id}/{finding.region}"
    recorded = runs.record(run, unit, finding)
    metrics.add_metric(name="SweepUnitsDone", unit="Count", value=int(recorded))
    email = None
    if runs.claim_completion(run):  # this unit completed the run: its digest, once, from every unit's finding
        findings = runs.results(run, SweepFinding)
        email = _report(findings, policy, started, mailer, f"sg-sweep:{run}")
    return {
        "run": run,
        "unit": unit,
        "recorded": recorded,
        "violations": len(finding.verdict.violations),
        "digest": email,
    }


# ----- the Lambda functions app.py wires: (event, runtime) -> answer -----------------------------


def on_security_group_change(event: CloudWatchEvent, runtime: Runtime) -> dict[str, Any]:
    return handle_change(
        event.to_dict(),
        policies=runtime.policies,
        clients=runtime.clients,
        mailer=runtime.mailer(BOT, event.context),
    )


def sweep_security_groups(event: CloudWatchEvent, runtime: Runtime) -> dict[str, Any]:
    return sweep(
        policies=runtime.policies,
        clients=runtime.clients,
        mailer=runtime.mailer(BOT, event.context),
        at=delivery_time(event),
        once=runtime.once(event.context),
        event_id=delivery_id(event),
        fanout=runtime.built(sweep_fanout),
    )


def sweep_worker(event: SQSEvent, runtime: Runtime) -> dict[str, Any]:
    mailer = runtime.mailer(BOT, event.context)
    runs = runtime.built(runs_of)
    policies, clients, once = runtime.policies, runtime.clients, runtime.once(event.context)

    def unit(record: SQSRecord) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            return work_on_unit(
                record.body, deliveries(record), policies=policies, clients=clients, runs=runs, mailer=mailer
            )

        # a message delivered again after it was done returns what it did (a crash left no record: it runs)
        return once("sweep-unit", hashlib.sha256(record.body.encode()).hexdigest(), work)

    return {"units": [unit(record) for record in event]}


def sweep_fanout(runtime: Runtime) -> Fanout | None:
    """Built once per container: with a queue set, the sweep fans out to it (else it sweeps every unit itself)."""
    return fanout_to(runtime, SWEEP_QUEUE)
