"""What `opsbots simulate` shows for the DNS bot: its calls, and the records the handler's own decisions give.

The records come from the instance as EC2 describes it, which no event carries: given `--describe` (the
output of `aws ec2 describe-instances --instance-ids ...`), the dry run runs the handler's decisions on
it: the records it should have, the plan, the claims and the checks before anything is written.
Route53's zones are taken to be the policy's (a private zone associated with the instance's VPC), and
the registry to hold nothing for the instance yet: the answers only AWS could give are printed as such.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalicelib.dns.decisions import (
    BOT,
    RUNNING,
    HostedZone,
    OwnedRecord,
    Plan,
    Record,
    after_write,
    batches,
    desired_records,
    owner_of,
    plan_changes,
    ready_run,
    route53_changes,
    selected,
    settle_claims,
    to_claim,
)
from chalicelib.dns.events import parse_state_change
from chalicelib.dns.executors import instance_from_api
from chalicelib.dns.policy import DnsPolicy
from chalicelib.events import MalformedEventError
from chalicelib.fanout import RejectedMessageError
from chalicelib.triggers import RECONCILE_READY, matches

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import IO

    from chalicelib.cli import DryRun
    from chalicelib.dns.decisions import Instance


class PrintingNames:
    """Route53 as the dry run asks it: each look-up printed, every name answered free."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def hold(self, record: Record) -> bool:
        self.out.write(
            f"  route53.list_resource_record_sets(HostedZoneId='{record.zone_id}', StartRecordName='{record.name}')\n"
        )
        return False


def on_instance_state_change(raw: Mapping[str, Any], run: DryRun) -> None:
    if matches(RECONCILE_READY, raw):
        _show_run_applied(raw, run.out)
        return
    change = parse_state_change(raw)
    accounts, policy, out = run.policies.accounts, run.policies.of(DnsPolicy), run.out
    member = accounts.member(change.account_id)
    owner = owner_of(change.account_id, change.region, change.instance_id)
    out.write(
        f"event {change.event_id}: {change.instance_id} -> {change.state} in {change.account_id} {change.region}\n"
    )
    if member is None:
        out.write(f"account {change.account_id} is not in accounts.yml: acted on only if it is the home account\n")
    out.write("AWS calls it would make:\n")
    if member is not None:
        role = accounts.role_arn(member, BOT)
        out.write(f"  sts.assume_role(RoleArn='{role}', ExternalId=$OPSBOTS_EXTERNAL_ID)\n")
    out.write(f"  ec2.describe_instances(InstanceIds=['{change.instance_id}'])\n")
    out.write(f"  dynamodb.query(by-owner = '{owner}')  # the records opsbots holds for it\n")
    if run.described is None:
        out.write(
            "decision: from the instance's current state, not the event's: running, it gets its records (give\n"
            "  --describe with `aws ec2 describe-instances` output to see them); otherwise, or unknown to EC2,\n"
            "  the bot deletes exactly the records the registry holds for it\n"
        )
        return
    instance = _described(run.described, change.account_id, change.region, change.instance_id)
    if instance.state != RUNNING or not selected(instance, policy):
        why = instance.state if instance.state != RUNNING else f"not selected (no {policy.select_tag} tag)"
        out.write(f"decision: {why}: delete exactly the records the registry holds for it\n")
        return
    _show_records(instance, policy, "home" if member is None else change.account_id, out)


def _described(described: Mapping[str, Any], account_id: str, region: str, instance_id: str) -> Instance:
    """The instance in `aws ec2 describe-instances` output (or one instance's own object)."""
    found = [
        instance
        for reservation in described.get("Reservations", [{"Instances": [described]}])
        for instance in reservation.get("Instances", [])
        if instance.get("InstanceId") == instance_id
    ]
    if not found:
        raise MalformedEventError(instance_id, f"--describe holds no instance {instance_id}")
    return instance_from_api(account_id, region, found[0])


def _show_records(instance: Instance, policy: DnsPolicy, account: str, out: IO[str]) -> None:
    zones = tuple(
        HostedZone(
            f"<{zone.zone} {zone.address} zone>",
            zone.zone.lower().rstrip(".") + ".",
            zone.address == "private",
            frozenset({instance.vpc_id}) if instance.vpc_id else frozenset(),
        )
        for zone in policy.zones
    )
    wanted, reasons = desired_records(instance, policy, zones, account)
    for reason in reasons:
        out.write(f"  not made: {reason}\n")
    plan = plan_changes((OwnedRecord(record, instance.owner) for record in wanted), (), instance.owner.__eq__)
    asked, pointing_elsewhere = to_claim(plan.claims, set())
    out.write(
        f"  dynamodb: claim {len(asked)} name(s) in the registry, each only if free or already the instance's;\n"
        "  then each name claimed is looked up: a record there that opsbots did not write is a conflict\n"
    )
    verdict = settle_claims(asked, {}, set(), PrintingNames(out))
    granted = verdict.granted
    for zone_id, changes in route53_changes(Plan(granted, plan.updates, plan.deletes)).items():
        for batch in batches(changes):
            out.write(f"  route53.change_resource_record_sets(HostedZoneId='{zone_id}', {len(batch)} change(s))\n")
    settlement = after_write({}, granted, plan.updates, plan.deletes)
    out.write(f"decision: running: {settlement.added} record(s) written, each claimed first:\n")
    for entry in granted:
        out.write(f"  {entry.record.name} {entry.record.type} {entry.record.value} (TTL {entry.record.ttl})\n")
    for entry in (*verdict.skipped, *pointing_elsewhere):
        out.write(f"  not written: {entry.record.name} {entry.record.type}: its name is not the instance's\n")
    if policy.reverse:
        out.write("  and a PTR for each address in a reverse zone Route53 holds for it (only Route53 can list them)\n")


def _show_run_applied(raw: Mapping[str, Any], out: IO[str]) -> None:
    try:
        reconcile_run = ready_run(raw)
    except RejectedMessageError as error:
        raise MalformedEventError(str(raw.get("id")), str(error)) from None
    out.write(
        f"reconcile run {reconcile_run}, handed on by its last worker: the DNS writer (one at a time) would\n"
        "  read the run's record (every unit done, or it is dropped) and each unit's stored scan, scan the registry,\n"
        "  and write what the scans call for; a unit that failed keeps its records, and a name an event changed\n"
        "  after its unit's scan is left as it is\n"
    )


def reconcile_dns(raw: Mapping[str, Any], run: DryRun) -> None:
    policy = run.policies.of(DnsPolicy)
    zones = ", ".join(f"{zone.zone} ({zone.address})" for zone in policy.zones)
    units = run.units(BOT)
    run.out.write(
        f"  over {len(units)} account/region unit(s): ec2.describe_instances (running instances) per unit,\n"
        "  one registry scan, one listing per zone with new names, change batches of up to 1,000 records;\n"
        f"  zones: {zones}; a unit that fails keeps its records\n"
        "  deployed with its queue (OPSBOTS_DNS_RECONCILE_QUEUE), it records the run and queues one message per\n"
        "  unit instead: dns_reconcile_worker scans each, and the last hands the run to the DNS writer\n"
    )
