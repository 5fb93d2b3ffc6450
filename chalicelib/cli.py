"""`opsbots`: check policies, dry-run an event, export the policy schema. Never calls AWS.

opsbots validate [DIR]          exit 1 with file:line errors when a policy is wrong
opsbots simulate EVENT.json     the decision, the AWS calls it would make, the email
opsbots schema NAME | --write DIR   JSON Schema for editor autocompletion
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from chalicelib.aws import HOME, units_of
from chalicelib.bots import BOTS
from chalicelib.dns.decisions import BOT as DNS_BOT
from chalicelib.dns.decisions import owner_of
from chalicelib.dns.events import parse_state_change
from chalicelib.dns.policy import DnsPolicy
from chalicelib.events import MalformedEventError, SkippedEvent
from chalicelib.policy import POLICY_FILES, Policies, PolicyError, json_schema, load_policies
from chalicelib.security_groups.decisions import (
    BOT,
    broken_rules,
    describe_source,
    describe_traffic,
    judge,
    needs_action,
    risky_entries,
    violation_notice,
)
from chalicelib.security_groups.events import parse_security_group_change
from chalicelib.security_groups.executors import PrintingExecutor
from chalicelib.security_groups.policy import SecurityGroupsPolicy
from chalicelib.settings import BotOffError, Settings
from chalicelib.snapshots.decisions import BOT as SNAPSHOTS_BOT
from chalicelib.snapshots.decisions import plan_units
from chalicelib.snapshots.executors import print_unit
from chalicelib.snapshots.policy import SnapshotsPolicy
from chalicelib.thumbnails.decisions import plan_thumbnails
from chalicelib.thumbnails.events import parse_object_created
from chalicelib.thumbnails.executors import print_plan
from chalicelib.thumbnails.policy import ThumbnailsPolicy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="opsbots", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="validate the policy files")
    validate.add_argument("directory", nargs="?", type=Path, help="default: $OPSBOTS_POLICIES or ./policies")
    simulate = commands.add_parser("simulate", help="dry-run one event: no AWS call is made")
    simulate.add_argument("event", type=Path)
    simulate.add_argument("--policies", type=Path, help="default: $OPSBOTS_POLICIES or ./policies")
    schema = commands.add_parser("schema", help="print or write the JSON Schema of the policy files")
    schema.add_argument("name", nargs="?", choices=sorted(POLICY_FILES))
    schema.add_argument("--write", type=Path, metavar="DIR", help="write <name>.json for every policy file")
    arguments = parser.parse_args(argv)

    if arguments.command == "schema":
        return _schema(arguments.name, arguments.write, sys.stdout)
    try:
        if arguments.command == "validate":
            print(validated(load_policies(_policies_dir(arguments.directory))))
            return 0
        return simulate_event(arguments.event, load_policies(_policies_dir(arguments.policies)), sys.stdout)
    except (PolicyError, BotOffError) as error:
        print(error, file=sys.stderr)
        return 1


def validated(policies: Policies) -> str:
    """What `opsbots validate` says of a valid directory: each bot on, with what it holds, or off."""
    holds: dict[str, Callable[[], str]] = {
        "security_groups": lambda: f"{len(policies.of(SecurityGroupsPolicy).rules)} rule(s)",
        "dns": lambda: f"{len(policies.of(DnsPolicy).zones)} zone(s)",
        "snapshots": lambda: f"{len(policies.of(SnapshotsPolicy).policies)} policy(ies)",
        "thumbnails": lambda: f"{len(policies.of(ThumbnailsPolicy).buckets)} upload location(s)",
    }
    on = [
        f"{bot.name} ({holds[bot.name]()})" if bot.name in holds else bot.name
        for bot in BOTS
        if policies.is_on(bot.name)
    ]
    off = [f"{bot.name} (no {bot.policy_file})" for bot in BOTS if not policies.is_on(bot.name)]
    lines = [
        f"ok: {len(policies.accounts.accounts)} member account(s) in accounts.yml",
        f"on: {', '.join(on) or 'none'}",
    ]
    return "\n".join(lines + ([f"off: {', '.join(off)}"] if off else []))


def _policies_dir(given: Path | None) -> Path:
    settings = Settings.from_environ()
    return given or (settings.policies_dir if settings.policies_dir.is_dir() else Path("policies"))


def _schema(name: str | None, directory: Path | None, out: IO[str]) -> int:
    if directory:
        directory.mkdir(parents=True, exist_ok=True)
        for policy_name in sorted(POLICY_FILES):
            (directory / f"{policy_name}.json").write_text(json.dumps(json_schema(policy_name), indent=2) + "\n")
        return 0
    if not name:
        print("give a policy name or --write DIR", file=sys.stderr)
        return 2
    out.write(json.dumps(json_schema(name), indent=2) + "\n")
    return 0


def simulate_event(path: Path, policies: Policies, out: IO[str]) -> int:
    """Print what the bot the event wakes would decide and do; no AWS call is made."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        print(f"{path}: cannot read: {error.strerror}", file=sys.stderr)
        return 1
    except ValueError as error:  # not UTF-8, or not JSON
        print(f"{path}: not a JSON event: {error}", file=sys.stderr)
        return 1
    kind = raw.get("detail-type") if isinstance(raw, dict) else None
    try:
        if kind == "EC2 Instance State-change Notification":
            return _simulate_state_change(raw, policies, out)
        if kind == "Scheduled Event":
            return _simulate_schedule(raw, policies, out)
        if kind == "Object Created" or (isinstance(raw, dict) and "Records" in raw):
            return _simulate_upload(raw, policies, out)
        return _simulate_security_group_change(raw, policies, out)
    except SkippedEvent as skipped:
        out.write(f"skipped: {skipped}\n")
        return 0


def _simulate_state_change(raw: dict[str, Any], policies: Policies, out: IO[str]) -> int:
    change = parse_state_change(raw)
    member = policies.accounts.member(change.account_id)
    owner = owner_of(change.account_id, change.region, change.instance_id)
    out.write(
        f"event {change.event_id}: {change.instance_id} -> {change.state} in {change.account_id} {change.region}\n"
    )
    if member is None:
        out.write(f"account {change.account_id} is not in accounts.yml: acted on only if it is the home account\n")
    out.write("AWS calls it would make:\n")
    if member is not None:
        role = policies.accounts.role_arn(member, DNS_BOT)
        out.write(f"  sts.assume_role(RoleArn='{role}', ExternalId=$OPSBOTS_EXTERNAL_ID)\n")
    out.write(f"  ec2.describe_instances(InstanceIds=['{change.instance_id}'])\n")
    out.write(f"  dynamodb.query(by-owner = '{owner}')  # the records opsbots holds for it\n")
    out.write(
        "decision: from the instance's current state, not the event's.\n"
        f"  running: {_record_names(policies)};\n"
        "    each claimed in the registry, then written; a name held by anything else is a conflict\n"
        "  otherwise, or unknown to EC2: delete exactly the records the registry holds for it\n"
    )
    return 0


def _record_names(policies: Policies) -> str:
    zones = ", ".join(
        f"<{policies.of(DnsPolicy).name_tag}>.{zone.zone} ({zone.address})" for zone in policies.of(DnsPolicy).zones
    )
    extras = [
        f"CNAMEs from {policies.of(DnsPolicy).alias_tag}" if policies.of(DnsPolicy).alias_tag else "",
        "PTRs" if policies.of(DnsPolicy).reverse else "",
    ]
    return ", ".join([zones, *filter(None, extras)])


def _simulate_schedule(raw: dict[str, Any], policies: Policies, out: IO[str]) -> int:
    accounts = policies.accounts
    targets = units_of(accounts, HOME, SNAPSHOTS_BOT)
    now = _event_time(raw) if raw.get("time") else datetime.now(UTC)
    out.write(f"scheduled run at {now.isoformat()} over {len(targets)} account/region unit(s)\n")
    out.write("  sweep_security_groups: describe_security_groups + describe_security_group_rules per unit;\n")
    out.write("    revoke what breaks the policy; one digest email if anything was found or failed\n")
    out.write("  reconcile_dns: describe_instances (running) per unit, one registry scan, one listing per\n")
    out.write("    zone with new names, change batches of up to 1,000 records; failed units keep their records\n")
    units = plan_units(policies.of(SnapshotsPolicy), accounts, targets, now)
    out.write(f"  take_snapshots: {len(units)} unit(s) with a policy due (nothing is taken or deleted here):\n")
    for unit in units:
        print_unit(unit, policies.of(SnapshotsPolicy), out)
    return 0


def _event_time(raw: dict[str, Any]) -> datetime:
    try:
        time = datetime.fromisoformat(raw["time"]) if isinstance(raw["time"], str) else None
    except ValueError:
        time = None
    if time is None or time.tzinfo is None:
        raise MalformedEventError(str(raw.get("id", "<no id>")), f"time {raw['time']!r} is not an ISO time with a zone")
    return time


def _simulate_upload(raw: dict[str, Any], policies: Policies, out: IO[str]) -> int:
    uploads = parse_object_created(raw)
    for upload in uploads:
        try:
            print_plan(plan_thumbnails(upload, policies.of(ThumbnailsPolicy)), out)
        except SkippedEvent as skipped:
            out.write(f"skipped: {skipped}\n")
    out.write(
        "AWS calls it would make: s3.head_object per thumbnail (metadata says whose it is and from which ETag);\n"
        "  if any is missing or stale: s3.get_object(IfMatch=ETag), then s3.put_object per missing or stale one,\n"
        "  conditional on the key being free or still ours\n"
    )
    return 0


def _simulate_security_group_change(raw: Any, policies: Policies, out: IO[str]) -> int:
    change = parse_security_group_change(raw)
    policy = policies.of(SecurityGroupsPolicy)
    out.write(
        f"event {change.event_id}: {change.api_call} by {change.actor.arn} in {change.account_id} {change.region}\n"
    )
    for permission in change.permissions:
        broken = broken_rules(permission, policy.rules)
        judged = f"VIOLATES {', '.join(broken)}" if broken else "compliant"
        out.write(
            f"  {permission.direction or '?'} {describe_traffic(permission)} from "
            f"{describe_source(permission.source)} ({permission.rule_id or 'no rule id'}): {judged}\n"
        )
    known_entries = {}
    if change.prefix_list is not None:
        edit = change.prefix_list
        risky = risky_entries(edit.added, policy.rules)
        added = ", ".join(str(entry) for entry in edit.added) or "nothing"
        out.write(f"  prefix list {edit.prefix_list_id} gains {added}; forbidden as a source: ")
        out.write(f"{', '.join(str(entry) for entry in risky) or 'none'}\n")
        known_entries = {edit.prefix_list_id: edit.added}
    if not needs_action(change, policy.rules):
        out.write("decision: compliant; no AWS call would be made\n")
        return 0
    member = policies.accounts.member(change.account_id)
    out.write("AWS calls it would make:\n")
    if member:
        role = policies.accounts.role_arn(member, BOT)
        out.write(f"  sts.assume_role(RoleArn='{role}', ExternalId=$OPSBOTS_EXTERNAL_ID)\n")
    executor = PrintingExecutor(out, policy.rules, known_entries)
    verdict = judge(change, policy, executor, datetime.now(UTC))
    if verdict.status == "compliant":
        out.write("decision: compliant once prefix lists are resolved\n")
        return 0
    email = violation_notice(change, verdict, policy, member.name if member else "home", None).render()
    out.write(f"  dynamodb.put_item(opsbots-idempotency, notice#sg-event:{change.event_id}:{verdict.status})")
    out.write("  # once per event and outcome\n")
    out.write(f"  sesv2.send_email(FromEmailAddress='{email.sender}', To={list(email.recipients)})\n")
    out.write(f"decision: {verdict.status} (mode: {policy.mode})\n\nSubject: {email.subject}\n\n{email.text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
