"""Plain data and pure decisions; no AWS."""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from chalicelib import notify
from chalicelib.aws import is_transient, reason
from chalicelib.policy import MemberBot
from chalicelib.security_groups.events import (
    Direction,
    GroupSource,
    Network,
    Permission,
    PrefixListSource,
    SecurityGroupChange,
    Source,
)
from chalicelib.security_groups.policy import PortRange, SecurityGroupRule, SecurityGroupsPolicy

BOT: MemberBot = "security_groups"  # its role in member accounts, and the outbox's name for its parked emails
SWEEP_THREADS = 8
DIGEST_ROWS = 500  # a digest lists at most this many rules; the rest are counted (and in the audit log)
DESCRIBE_BATCH = 200  # group ids per DescribeSecurityGroups

# Private and special-purpose space; a source entirely inside one of these is not "the internet".
NOT_INTERNET = tuple(
    ipaddress.ip_network(block)
    for block in (
        "0.0.0.0/8",  # "this network": never a source on the internet (RFC 1122)
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    )
)
ALL_PORTS = PortRange(0, 65535)
PORTED_PROTOCOLS = frozenset({"tcp", "udp"})
ALL_PROTOCOLS = "-1"
_GONE_CODES = frozenset({"InvalidPermission.NotFound", "InvalidSecurityGroupRuleId.NotFound", "InvalidGroup.NotFound"})
# What the dry run prints where only the look-up it would make can tell.
LOOKED_UP = "<the rule id the look-up finds>"

# ---------------------------------------------------------------------------------------------
# Decisions: plain data in, plain data out; no AWS.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    permission: Permission
    rules: tuple[str, ...]


@dataclass(frozen=True)
class Revocation:
    """Rules to revoke from one group in one direction: one API call."""

    group_id: str
    direction: Direction
    rule_ids: tuple[str, ...]


@dataclass(frozen=True)
class Failure:
    """A rule that is still open, why, and whether trying again later may close it (a throttle, a 5xx, a
    timeout) or will fail the same way (AccessDenied, no ExternalId)."""

    rule: str
    reason: str
    transient: bool


@dataclass(frozen=True)
class RevokeResult:
    reverted: tuple[str, ...] = ()
    already_gone: tuple[str, ...] = ()
    failed: tuple[Failure, ...] = ()


ExemptionState = Literal["active", "expired", "too-far", "unreadable"]


@dataclass(frozen=True)
class Exemption:
    """A group's exemption tag as written, and what it is worth: only an `active` one keeps rules open."""

    group_id: str
    tag: str
    value: str
    until: datetime | None
    state: ExemptionState
    note: str  # one line for the email and the digest

    @property
    def active(self) -> bool:
        return self.state == "active"


def read_exemption(
    group_id: str, tags: Mapping[str, str], policy: SecurityGroupsPolicy, now: datetime
) -> Exemption | None:
    """The group's exemption, or None when it has no tag.

    Whoever may open a rule can often tag the group too, so a tag is a claim with limits: a date more than
    `max_exemption_days` from now, or no date at all, exempts nothing; a past one has ended. Every state is
    reported: a kept violation is still emailed, and an ignored tag says why.
    """
    if policy.exemption_tag not in tags:
        return None
    value = tags[policy.exemption_tag]
    tag, limit = policy.exemption_tag, policy.max_exemption_days
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        note = f"{tag}={value!r} ignored: not an ISO date (like 2026-12-31)"
        return Exemption(group_id, tag, value, None, "unreadable", note)
    until = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if until <= now:
        return Exemption(group_id, tag, value, until, "expired", f"exemption {tag}={value} ended {until.isoformat()}")
    if until - now > timedelta(days=limit):
        note = f"{tag}={value} ignored: more than max_exemption_days ({limit}) from now"
        return Exemption(group_id, tag, value, until, "too-far", note)
    return Exemption(group_id, tag, value, until, "active", f"exempt until {until.isoformat()} ({tag})")


def is_internet(network: Network) -> bool:
    return not any(
        network.version == special.version and network.subnet_of(special)  # type: ignore[arg-type]
        for special in NOT_INTERNET
    )


def port_span(permission: Permission) -> PortRange | None:
    """The ports a permission opens; None for protocols that have no ports (ICMP, ESP, ...)."""
    if permission.protocol == ALL_PROTOCOLS:
        return ALL_PORTS
    if permission.protocol not in PORTED_PROTOCOLS:
        return None
    if permission.from_port < 0 or permission.to_port < 0:
        return ALL_PORTS
    return PortRange(min(permission.from_port, permission.to_port), max(permission.from_port, permission.to_port))


def _covered(span: PortRange, allowed: Iterable[PortRange]) -> bool:
    next_port = span.first
    for allowed_range in sorted(allowed, key=lambda r: r.first):
        if allowed_range.first <= next_port <= allowed_range.last:
            next_port = allowed_range.last + 1
    return next_port > span.last


def _ports_match(rule: SecurityGroupRule, span: PortRange | None) -> bool:
    if rule.ports is not None:
        return span is not None and any(port.overlaps(span) for port in rule.ports)
    if rule.except_ports is not None:
        return span is None or not _covered(span, rule.except_ports)
    return True


def _network_matches(rule: SecurityGroupRule, network: Network) -> bool:
    if any(_within(network, allowed) for allowed in rule.allowed_sources):
        return False
    if rule.sources == "any":
        return True
    if rule.sources == "internet":
        return is_internet(network)
    return any(network.version == listed.version and network.overlaps(listed) for listed in rule.sources)


def _within(network: Network, block: Network) -> bool:
    return network.version == block.version and network.subnet_of(block)  # type: ignore[arg-type]


def _source_matches(rule: SecurityGroupRule, source: Source, prefix_lists: Mapping[str, tuple[Network, ...]]) -> bool:
    if isinstance(source, GroupSource):
        return rule.sources == "any"
    if isinstance(source, PrefixListSource):
        return any(_network_matches(rule, entry) for entry in prefix_lists.get(source.prefix_list_id, ()))
    return _network_matches(rule, source)


def traffic_matches(rule: SecurityGroupRule, permission: Permission) -> bool:
    """Direction, protocol and ports: everything but the source."""
    if permission.direction is not None and permission.direction != rule.direction:
        return False
    if (
        permission.protocol != ALL_PROTOCOLS
        and rule.protocols is not None
        and permission.protocol not in rule.protocols
    ):
        return False
    return _ports_match(rule, port_span(permission))


def broken_rules(
    permission: Permission,
    rules: Sequence[SecurityGroupRule],
    prefix_lists: Mapping[str, tuple[Network, ...]] | None = None,
) -> tuple[str, ...]:
    entries = prefix_lists or {}
    return tuple(
        rule.name
        for rule in rules
        if traffic_matches(rule, permission) and _source_matches(rule, permission.source, entries)
    )


def find_violations(
    permissions: Iterable[Permission],
    rules: Sequence[SecurityGroupRule],
    prefix_lists: Mapping[str, tuple[Network, ...]] | None = None,
) -> tuple[Violation, ...]:
    found = ((permission, broken_rules(permission, rules, prefix_lists)) for permission in permissions)
    return tuple(Violation(permission, names) for permission, names in found if names)


def prefix_lists_to_resolve(permissions: Iterable[Permission], rules: Sequence[SecurityGroupRule]) -> frozenset[str]:
    """Prefix lists whose entries decide a verdict; the others are never looked up."""
    return frozenset(
        permission.source.prefix_list_id
        for permission in permissions
        if isinstance(permission.source, PrefixListSource) and any(traffic_matches(rule, permission) for rule in rules)
    )


def risky_entries(added: Iterable[Network], rules: Sequence[SecurityGroupRule]) -> tuple[Network, ...]:
    """Entries added to a prefix list that some policy rule forbids as a source, whatever the traffic."""
    return tuple(entry for entry in added if any(_network_matches(rule, entry) for rule in rules))


def needs_action(change: SecurityGroupChange, rules: Sequence[SecurityGroupRule]) -> bool:
    """False when the event alone proves the change compliant: then no AWS call is made."""
    if change.prefix_list is not None:
        return bool(risky_entries(change.prefix_list.added, rules))
    permissions = change.permissions
    return bool(find_violations(permissions, rules) or prefix_lists_to_resolve(permissions, rules))


def plan_revocations(violations: Iterable[Violation]) -> tuple[Revocation, ...]:
    """One revocation per group and direction; permissions without a known rule no longer exist."""
    grouped: dict[tuple[str, Direction], list[str]] = defaultdict(list)
    for violation in violations:
        permission = violation.permission
        if permission.rule_id and permission.direction:
            grouped[(permission.group_id, permission.direction)].append(permission.rule_id)
    return tuple(
        Revocation(group_id, direction, tuple(dict.fromkeys(ids))) for (group_id, direction), ids in grouped.items()
    )


def describe_source(source: Source) -> str:
    if isinstance(source, GroupSource):
        return f"group {source.group_id}"
    if isinstance(source, PrefixListSource):
        return f"prefix list {source.prefix_list_id}"
    return str(source)


def describe_traffic(permission: Permission) -> str:
    span = port_span(permission)
    if permission.protocol == ALL_PROTOCOLS:
        return "all traffic"
    if span is None:
        return permission.protocol
    ports = str(span.first) if span.first == span.last else f"{span.first}-{span.last}"
    return f"{permission.protocol} {ports}"


class Executor(Protocol):
    def group_tags(self, group_ids: Sequence[str]) -> Mapping[str, Mapping[str, str]]: ...
    def prefix_list_entries(self, prefix_list_ids: Iterable[str]) -> Mapping[str, tuple[Network, ...]]: ...
    def referencing(self, prefix_list_id: str) -> tuple[Permission, ...]: ...
    def complete(self, permissions: Sequence[Permission]) -> tuple[Permission, ...]: ...
    def revoke(self, revocation: Revocation) -> RevokeResult: ...


@dataclass(frozen=True)
class Verdict:
    """What happened to one event's (or one account's) violations; `status` is the one-word summary.

    `violations` are the ones acted on (or reported, in report mode); `kept` the ones an active exemption
    keeps open, which are reported too; `exemptions` every exemption tag read, held or ignored.
    """

    status: str
    violations: tuple[Violation, ...] = ()
    results: tuple[RevokeResult, ...] = ()
    kept: tuple[Violation, ...] = ()
    exemptions: tuple[Exemption, ...] = ()

    @property
    def reverted(self) -> tuple[str, ...]:
        return tuple(rule for result in self.results for rule in result.reverted)

    @property
    def already_gone(self) -> tuple[str, ...]:
        return tuple(rule for result in self.results for rule in result.already_gone)

    @property
    def failed(self) -> tuple[Failure, ...]:
        return tuple(failure for result in self.results for failure in result.failed)

    @property
    def retrying(self) -> bool:
        """A rule is still open for a reason that may pass: the event is worth another attempt."""
        return any(failure.transient for failure in self.failed)


def act_on(violations: tuple[Violation, ...], policy: SecurityGroupsPolicy, executor: Executor) -> Verdict:
    """Revoke (enforce mode) or only report; a violation whose rule no longer exists counts as gone."""
    if not violations:
        return Verdict("compliant")
    if policy.mode == "report":
        return Verdict("reported", violations)
    results = tuple(executor.revoke(revocation) for revocation in plan_revocations(violations))
    missing = tuple(v.permission for v in violations if not (v.permission.rule_id and v.permission.direction))
    if missing:
        results += (RevokeResult(already_gone=tuple(describe_traffic(p) for p in missing)),)
    failed = any(result.failed for result in results)
    return Verdict("revoke-failed" if failed else "reverted", violations, results)


def keep_exempt(
    violations: Sequence[Violation], exemptions: Sequence[Exemption]
) -> tuple[tuple[Violation, ...], tuple[Violation, ...]]:
    """(to act on, kept open): only an active exemption keeps a group's violations open."""
    exempt = {exemption.group_id for exemption in exemptions if exemption.active}
    return (
        tuple(v for v in violations if v.permission.group_id not in exempt),
        tuple(v for v in violations if v.permission.group_id in exempt),
    )


def judge(change: SecurityGroupChange, policy: SecurityGroupsPolicy, executor: Executor, now: datetime) -> Verdict:
    """Decide on an event's permissions and, in enforce mode, revoke the offending ones."""
    permissions = executor.referencing(change.prefix_list.prefix_list_id) if change.prefix_list else change.permissions
    prefix_lists = executor.prefix_list_entries(prefix_lists_to_resolve(permissions, policy.rules))
    violations = find_violations(permissions, policy.rules, prefix_lists)
    if not violations:
        return Verdict("compliant")
    groups = sorted({violation.permission.group_id for violation in violations})
    tags = executor.group_tags(groups)
    exemptions = tuple(
        exemption for group in groups if (exemption := read_exemption(group, tags.get(group, {}), policy, now))
    )
    to_act, kept = keep_exempt(violations, exemptions)
    completed = find_violations(executor.complete([v.permission for v in to_act]), policy.rules, prefix_lists)
    verdict = act_on(completed, policy, executor)
    if verdict.status == "compliant" and kept:
        verdict = Verdict("exempt")
    return replace(verdict, kept=kept, exemptions=exemptions)


def could_not_act(change: SecurityGroupChange, policy: SecurityGroupsPolicy, error: BaseException) -> Verdict:
    """The account could not be inspected or changed: every violation stays open, and security must know."""
    why, transient = reason(error), is_transient(error)
    violations = find_violations(change.permissions, policy.rules)
    failed = tuple(Failure(v.permission.rule_id or describe_traffic(v.permission), why, transient) for v in violations)
    if change.prefix_list is not None:
        failed += (Failure(f"every rule that references {change.prefix_list.prefix_list_id}", why, transient),)
    return Verdict("revoke-failed", violations, (RevokeResult(failed=failed),))


# ----- what the emails say: facts, stored as they are when SES is down, rendered when sent ----------

OUTCOMES = {
    "reverted": "reverted",
    "revoke-failed": "REVOKE FAILED",
    "reported": "not reverted (report mode)",
    "exempt": "kept (exempt)",
}


def _row(violation: Violation) -> dict[str, Any]:
    permission = violation.permission
    return {
        "group_id": permission.group_id,
        "direction": permission.direction,
        "traffic": describe_traffic(permission),
        "source": describe_source(permission.source),
        "rule_id": permission.rule_id,
        "description": permission.description,
        "rules": list(violation.rules),
    }


def _kept_rows(verdict: Verdict) -> list[dict[str, Any]]:
    notes = {exemption.group_id: exemption.note for exemption in verdict.exemptions}
    return [{**_row(violation), "exemption": notes[violation.permission.group_id]} for violation in verdict.kept]


def _outcome_facts(verdict: Verdict) -> dict[str, Any]:
    return {
        "status": verdict.status,
        "violations": [_row(violation) for violation in verdict.violations],
        "kept": _kept_rows(verdict),
        "ignored_exemptions": [e.note for e in verdict.exemptions if not e.active and e.state != "expired"],
        "reverted": list(verdict.reverted),
        "already_gone": list(verdict.already_gone),
        "failed": [{"rule": f.rule, "reason": f.reason, "transient": f.transient} for f in verdict.failed],
        "retrying": verdict.retrying,
    }


def violation_notice(
    change: SecurityGroupChange,
    verdict: Verdict,
    policy: SecurityGroupsPolicy,
    account_name: str,
    exposure: float | None,
) -> notify.Notice:
    """The email for one event: every violation it made, what was done, and what an exemption kept open."""
    edit = change.prefix_list
    facts = {
        **_outcome_facts(verdict),
        "mode": policy.mode,
        "account_id": change.account_id,
        "account_name": account_name,
        "region": change.region,
        "event_id": change.event_id,
        "api_call": change.api_call,
        "time": change.time.isoformat(),
        "actor": {"arn": change.actor.arn, "source_ip": change.actor.source_ip, "user_agent": change.actor.user_agent},
        "prefix_list": {"id": edit.prefix_list_id, "added": [str(entry) for entry in edit.added]} if edit else None,
        "exposure": exposure,
    }
    return notify.notice(
        "sg_violation", to=policy.notify.email, subject=_subject(change, verdict, account_name), facts=facts
    )


def _subject(change: SecurityGroupChange, verdict: Verdict, account_name: str) -> str:
    outcome = OUTCOMES[verdict.status] + (", retrying" if verdict.retrying else "")
    where = f"in {change.account_id} ({account_name}) {change.region}"
    first = (verdict.violations or verdict.kept or (None,))[0]
    if first is None:
        what = verdict.failed[0].rule if verdict.failed else change.api_call
        return f"[opsbots] {outcome}: {what} {where}"
    return (
        f"[opsbots] {outcome}: {describe_traffic(first.permission)} from {describe_source(first.permission.source)} "
        f"on {first.permission.group_id} {where} — {_rules_named(first.rules)}"
    )


def _rules_named(rules: tuple[str, ...]) -> str:
    return rules[0] if len(rules) == 1 else f"{rules[0]} (+{len(rules) - 1} more)"


# ----- the sweep's digest ------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepFinding:
    account_id: str
    account_name: str
    region: str
    verdict: Verdict
    groups_checked: int = 0
    error: str | None = None


def digest_due(findings: Sequence[SweepFinding], started: datetime) -> bool:
    """Anything to act on sends a digest; exemptions keeping rules open are reminded once a day (the run of
    00:00 UTC), so an exemption is never silent and never an hourly email."""
    actionable = any(finding.error or finding.verdict.violations for finding in findings)
    return actionable or (started.hour == 0 and any(finding.verdict.kept for finding in findings))


def _digest_action(violation: Violation, verdict: Verdict) -> str:
    rule_id = violation.permission.rule_id or ""
    failures = {failure.rule: failure.reason for failure in verdict.failed}
    if rule_id in verdict.reverted:
        return "revoked"
    if verdict.status == "reported":
        return "not revoked (report mode)"
    if rule_id in failures:
        return f"NOT revoked: {failures[rule_id]} -- the rule is still open, act now"
    return "already gone"


def digest_notice(findings: Sequence[SweepFinding], policy: SecurityGroupsPolicy, started: datetime) -> notify.Notice:
    """The sweep's one email; at most DIGEST_ROWS rules are listed, the rest counted, so it stays small."""
    budget = DIGEST_ROWS
    units = []
    for finding in findings:
        verdict = finding.verdict
        rows = [{**_row(v), "action": _digest_action(v, verdict)} for v in verdict.violations]
        kept = _kept_rows(verdict)
        listed, kept_listed = rows[:budget], kept[: max(0, budget - len(rows))]
        budget -= len(listed) + len(kept_listed)
        units.append(
            {
                "account_id": finding.account_id,
                "account_name": finding.account_name,
                "region": finding.region,
                "error": finding.error,
                "violations": listed,
                "kept": kept_listed,
                "omitted": len(rows) + len(kept) - len(listed) - len(kept_listed),
                "exemptions": [
                    {"group_id": e.group_id, "note": e.note} for e in verdict.exemptions if e.state != "expired"
                ],
            }
        )
    violations = sum(len(f.verdict.violations) for f in findings)
    failures = sum(1 for f in findings if f.error)
    kept_count = sum(len(f.verdict.kept) for f in findings)
    subject = f"[opsbots] security-group sweep: {violations} violation(s), {failures} account failure(s)"
    subject += f", {kept_count} kept open by exemptions" if kept_count else ""
    facts = {"started": started.isoformat(), "mode": policy.mode, "units": units}
    return notify.notice("sg_digest", to=policy.notify.email, subject=subject, facts=facts)


# ----- the sweep fanned out: one queue message per account x region, one digest per run ---------------------

SWEEP_DELIVERIES = 3  # a unit's deliveries before its dead-letter queue (deploy/resources.json's maxReceiveCount)
