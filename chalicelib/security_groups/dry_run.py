"""What `opsbots simulate` shows for the security-group guard: the handler's own decisions, on a printing executor.

`judge` runs as the handler runs it; the executor prints each call instead of making it, and where only
a look-up can tell it goes on as if the look-up found what makes the violation real.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from chalicelib.security_groups.decisions import (
    ALL_PROTOCOLS,
    BOT,
    LOOKED_UP,
    Revocation,
    RevokeResult,
    broken_rules,
    describe_source,
    describe_traffic,
    judge,
    needs_action,
    risky_entries,
    traffic_matches,
    violation_notice,
)
from chalicelib.security_groups.events import Permission, PrefixListSource, parse_security_group_change
from chalicelib.security_groups.policy import SecurityGroupsPolicy

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import IO

    from chalicelib.cli import DryRun
    from chalicelib.security_groups.events import Direction, Network
    from chalicelib.security_groups.policy import SecurityGroupRule


class PrintingExecutor:
    """A dry run: prints each call it would make and assumes the answers that lead to action.

    Where only a look-up can tell (an old event's rule ids, a modified rule's direction, which groups use an
    edited prefix list), it prints the look-up and goes on as if it found what makes the violation real, so
    the dry run shows the revoke the handler would make, never a "gone" it cannot know.
    """

    def __init__(
        self, out: IO[str], rules: Sequence[SecurityGroupRule], known_entries: Mapping[str, tuple[Network, ...]]
    ) -> None:
        self._out = out
        self._rules = rules
        self._known_entries = known_entries  # what the event itself says a prefix list now holds

    def group_tags(self, group_ids: Sequence[str]) -> Mapping[str, Mapping[str, str]]:
        self._out.write(f"  ec2.describe_security_groups(GroupIds={list(group_ids)})  # exemption tags\n")
        return {}

    def prefix_list_entries(self, prefix_list_ids: Iterable[str]) -> Mapping[str, tuple[Network, ...]]:
        for prefix_list_id in sorted(prefix_list_ids):
            self._out.write(f"  ec2.get_managed_prefix_list_entries(PrefixListId='{prefix_list_id}')\n")
        return {pl: entries for pl, entries in self._known_entries.items() if pl in prefix_list_ids}

    def referencing(self, prefix_list_id: str) -> tuple[Permission, ...]:
        self._out.write(f"  ec2.describe_security_group_rules()  # the rules that reference {prefix_list_id}\n")
        directions: tuple[Direction, ...] = ("ingress", "egress")
        return tuple(
            Permission(
                group_id=f"<each group with a rule from {prefix_list_id}>",
                direction=direction,
                protocol=ALL_PROTOCOLS,
                from_port=-1,
                to_port=-1,
                source=PrefixListSource(prefix_list_id),
                rule_id=LOOKED_UP,
            )
            for direction in directions
            if any(rule.direction == direction for rule in self._rules)
        )

    def complete(self, permissions: Sequence[Permission]) -> tuple[Permission, ...]:
        unknown = sorted({p.group_id for p in permissions if not (p.rule_id and p.direction)})
        if unknown:
            self._out.write(f"  ec2.describe_security_group_rules(Filters=[group-id={unknown}])\n")
        return tuple(self._as_found(permission) for permission in permissions)

    def _as_found(self, permission: Permission) -> Permission:
        """The permission as the look-up would complete it: its rule's id, and the direction it breaks."""
        direction = permission.direction or next(
            (rule.direction for rule in self._rules if traffic_matches(rule, permission)), "ingress"
        )
        return replace(permission, rule_id=permission.rule_id or LOOKED_UP, direction=direction)

    def revoke(self, revocation: Revocation) -> RevokeResult:
        self._out.write(
            f"  ec2.revoke_security_group_{revocation.direction}(GroupId='{revocation.group_id}', "
            f"SecurityGroupRuleIds={list(revocation.rule_ids)})\n"
        )
        return RevokeResult(reverted=revocation.rule_ids)


def on_security_group_change(raw: Mapping[str, Any], run: DryRun) -> None:
    change = parse_security_group_change(raw)
    policies, out = run.policies, run.out
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
        return
    member = policies.accounts.member(change.account_id)
    out.write("AWS calls it would make:\n")
    if member:
        role = policies.accounts.role_arn(member, BOT)
        out.write(f"  sts.assume_role(RoleArn='{role}', ExternalId=$OPSBOTS_EXTERNAL_ID)\n")
    executor = PrintingExecutor(out, policy.rules, known_entries)
    verdict = judge(change, policy, executor, datetime.now(UTC))  # as the handler: exemptions at the time it runs
    if verdict.status == "compliant":
        out.write("decision: compliant once prefix lists are resolved\n")
        return
    email = violation_notice(change, verdict, policy, member.name if member else "home", None).render()
    out.write(f"  dynamodb.put_item(opsbots-idempotency, notice#sg-event:{change.event_id}:{verdict.status})")
    out.write("  # once per event and outcome\n")
    out.write(f"  sesv2.send_email(FromEmailAddress='{email.sender}', To={list(email.recipients)})\n")
    out.write(f"decision: {verdict.status} (mode: {policy.mode})\n\nSubject: {email.subject}\n\n{email.text}")


def sweep_security_groups(raw: Mapping[str, Any], run: DryRun) -> None:
    policy = run.policies.of(SecurityGroupsPolicy)
    units = run.units(BOT)
    action = "revoke" if policy.mode == "enforce" else "report"
    run.out.write(
        f"  over {len(units)} account/region unit(s): describe_security_groups and describe_security_group_rules\n"
        f"  per unit; {action} what breaks the policy; one digest email if anything was found or failed\n"
        "  (and at 00:00 UTC while exemptions keep rules open)\n"
    )
