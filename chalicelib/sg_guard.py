"""Security-group guard: revert rules that break the policy within seconds, and tell security.

Three sections, in order: pure decisions over frozen dataclasses (which permissions violate which
policy rule, which exemptions hold, what to revoke, what the email says), executors that apply a plan
with an injected EC2 client (or print it, for a dry run), and the two entry points `app.py` calls.
A compliant event is judged from the event alone and costs no AWS call; only a violation pays for
lookups (group tags for the exemption, prefix-list entries, rule ids missing from old events, the
rules that reference an edited prefix list).

The revoke never waits on bookkeeping: it runs first, unguarded (revoking a rule that is already gone
is a no-op), and only the email is deduplicated, by the ledger in chalicelib/outbox.py, which sends
anyway when its table is down and parks the email when SES is.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import notify
from chalicelib.aws import Target, error_code, is_transient, reason, tags_of
from chalicelib.dedupe import always
from chalicelib.events import (
    Direction,
    GroupSource,
    Network,
    Permission,
    PrefixListSource,
    SecurityGroupChange,
    SkippedEvent,
    Source,
    normalize_protocol,
    parse_security_group_change,
)
from chalicelib.observability import logger, metrics
from chalicelib.policy import MemberBot, PortRange, SecurityGroupRule, SecurityGroupsPolicy

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import SecurityGroupRuleTypeDef

    from chalicelib.aws import Clients
    from chalicelib.dedupe import Once
    from chalicelib.outbox import Mailer
    from chalicelib.policy import AccountsPolicy, Policies

PERMISSIONS = (
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSecurityGroupRules",
    "ec2:GetManagedPrefixListEntries",
    "ec2:RevokeSecurityGroupIngress",
    "ec2:RevokeSecurityGroupEgress",
    "ses:SendEmail",
    "sts:AssumeRole",
    "sts:GetCallerIdentity",
)
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


def _traffic_matches(rule: SecurityGroupRule, permission: Permission) -> bool:
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
        if _traffic_matches(rule, permission) and _source_matches(rule, permission.source, entries)
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
        if isinstance(permission.source, PrefixListSource) and any(_traffic_matches(rule, permission) for rule in rules)
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


# ---------------------------------------------------------------------------------------------
# Executors: the only code here that talks to AWS (or, for a dry run, prints what it would say).
# ---------------------------------------------------------------------------------------------


class Executor(Protocol):
    def group_tags(self, group_ids: Sequence[str]) -> Mapping[str, Mapping[str, str]]: ...
    def prefix_list_entries(self, prefix_list_ids: Iterable[str]) -> Mapping[str, tuple[Network, ...]]: ...
    def referencing(self, prefix_list_id: str) -> tuple[Permission, ...]: ...
    def complete(self, permissions: Sequence[Permission]) -> tuple[Permission, ...]: ...
    def revoke(self, revocation: Revocation) -> RevokeResult: ...


def permission_from_api(rule: SecurityGroupRuleTypeDef) -> Permission:
    """A rule as `DescribeSecurityGroupRules` returns it."""
    referenced = rule.get("ReferencedGroupInfo")
    source: Source
    if "CidrIpv4" in rule or "CidrIpv6" in rule:
        source = ipaddress.ip_network(rule.get("CidrIpv4") or rule["CidrIpv6"], strict=False)
    elif "PrefixListId" in rule:
        source = PrefixListSource(rule["PrefixListId"])
    else:
        source = GroupSource((referenced or {}).get("GroupId", ""), (referenced or {}).get("UserId"))
    return Permission(
        group_id=rule["GroupId"],
        direction="egress" if rule.get("IsEgress") else "ingress",
        protocol=normalize_protocol(rule.get("IpProtocol", ALL_PROTOCOLS)),
        from_port=rule.get("FromPort", -1),
        to_port=rule.get("ToPort", -1),
        source=source,
        rule_id=rule["SecurityGroupRuleId"],
        description=rule.get("Description", ""),
    )


def _same_rule(requested: Permission, existing: Permission) -> bool:
    return (
        requested.group_id == existing.group_id
        and requested.direction == existing.direction
        and requested.protocol == existing.protocol
        and port_span(requested) == port_span(existing)
        and requested.source == existing.source
    )


class Ec2Executor:
    def __init__(self, ec2: EC2Client) -> None:
        self._ec2 = ec2

    def group_tags(self, group_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """Each group's tags, in one call per 200 groups; a group that is gone has none."""
        found: dict[str, dict[str, str]] = {}
        for start in range(0, len(group_ids), DESCRIBE_BATCH):
            batch = list(group_ids[start : start + DESCRIBE_BATCH])
            try:
                groups = self._ec2.describe_security_groups(GroupIds=batch)["SecurityGroups"]
            except ClientError as error:
                if error_code(error) not in _GONE_CODES:
                    raise
                if len(batch) == 1:
                    continue
                # One gone group fails the whole call: ask again group by group.
                for group_id in batch:
                    found.update(self.group_tags([group_id]))
                continue
            found.update({group["GroupId"]: tags_of(group.get("Tags")) for group in groups})
        return found

    def prefix_list_entries(self, prefix_list_ids: Iterable[str]) -> Mapping[str, tuple[Network, ...]]:
        paginator = self._ec2.get_paginator("get_managed_prefix_list_entries")
        return {
            prefix_list_id: tuple(
                ipaddress.ip_network(entry["Cidr"], strict=False)
                for page in paginator.paginate(PrefixListId=prefix_list_id)
                for entry in page.get("Entries", [])
            )
            for prefix_list_id in sorted(prefix_list_ids)
        }

    def referencing(self, prefix_list_id: str) -> tuple[Permission, ...]:
        """Every rule in the account and region whose source or destination is the prefix list.

        `GetManagedPrefixListAssociations` would name the groups in one call, but the emulator the tests
        run on has no such call (nor the `ip-permission.prefix-list-id` filter); reading every rule costs
        a page per 1,000 rules, and prefix lists rarely change.
        """
        return tuple(
            rule
            for rule in self.rules_of()
            if isinstance(rule.source, PrefixListSource) and rule.source.prefix_list_id == prefix_list_id
        )

    def complete(self, permissions: Sequence[Permission]) -> tuple[Permission, ...]:
        """Fill in what the event lacked (rule ids, direction) from the groups' current rules."""
        if all(permission.rule_id and permission.direction for permission in permissions):
            return tuple(permissions)
        existing = self.rules_of({permission.group_id for permission in permissions})
        by_id = {rule.rule_id: rule for rule in existing}
        completed = []
        for permission in permissions:
            if permission.rule_id:
                found = by_id.get(permission.rule_id)
                completed.append(replace(permission, direction=found.direction) if found else permission)
            else:
                match = next((rule for rule in existing if _same_rule(permission, rule)), None)
                completed.append(replace(permission, rule_id=match.rule_id) if match else permission)
        return tuple(completed)

    def rules_of(self, group_ids: Iterable[str] | None = None) -> tuple[Permission, ...]:
        paginator = self._ec2.get_paginator("describe_security_group_rules")
        filters = [{"Name": "group-id", "Values": sorted(group_ids)}] if group_ids is not None else []
        return tuple(
            permission_from_api(rule)
            for page in paginator.paginate(Filters=filters)  # type: ignore[arg-type]
            for rule in page["SecurityGroupRules"]
        )

    def all_group_tags(self) -> dict[str, dict[str, str]]:
        paginator = self._ec2.get_paginator("describe_security_groups")
        return {
            group["GroupId"]: tags_of(group.get("Tags"))
            for page in paginator.paginate()
            for group in page["SecurityGroups"]
        }

    def revoke(self, revocation: Revocation) -> RevokeResult:
        """Revoke one group's rules in one direction; a failure is this revocation's, never the caller's.

        EC2 that does not answer (timeouts or throttling past the retries, an unreachable endpoint) fails
        these rules like a refusal does: they are reported as still open, marked transient, and the other
        revocations go on.
        """
        try:
            self._revoke(revocation.group_id, revocation.direction, revocation.rule_ids)
            return RevokeResult(reverted=revocation.rule_ids)
        except BotoCoreError as error:
            return _failed(revocation, error)
        except ClientError as error:
            if error_code(error) not in _GONE_CODES:
                return _failed(revocation, error)
            if len(revocation.rule_ids) == 1:
                return RevokeResult(already_gone=revocation.rule_ids)
        # One of several rules was already gone, which fails the whole call: go one by one.
        results = [self.revoke(replace(revocation, rule_ids=(rule_id,))) for rule_id in revocation.rule_ids]
        return RevokeResult(
            reverted=tuple(rule for result in results for rule in result.reverted),
            already_gone=tuple(rule for result in results for rule in result.already_gone),
            failed=tuple(failure for result in results for failure in result.failed),
        )

    def _revoke(self, group_id: str, direction: Direction, rule_ids: tuple[str, ...]) -> None:
        if direction == "egress":
            self._ec2.revoke_security_group_egress(GroupId=group_id, SecurityGroupRuleIds=list(rule_ids))
        else:
            self._ec2.revoke_security_group_ingress(GroupId=group_id, SecurityGroupRuleIds=list(rule_ids))


def _failed(revocation: Revocation, error: ClientError | BotoCoreError) -> RevokeResult:
    why, transient = reason(error), is_transient(error)
    return RevokeResult(failed=tuple(Failure(rule_id, why, transient) for rule_id in revocation.rule_ids))


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
            (rule.direction for rule in self._rules if _traffic_matches(rule, permission)), "ingress"
        )
        return replace(permission, rule_id=permission.rule_id or LOOKED_UP, direction=direction)

    def revoke(self, revocation: Revocation) -> RevokeResult:
        self._out.write(
            f"  ec2.revoke_security_group_{revocation.direction}(GroupId='{revocation.group_id}', "
            f"SecurityGroupRuleIds={list(revocation.rule_ids)})\n"
        )
        return RevokeResult(reverted=revocation.rule_ids)


# ---------------------------------------------------------------------------------------------
# Entry points for app.py.
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

    policy = policies.security_groups
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


@dataclass(frozen=True)
class SweepFinding:
    account_id: str
    account_name: str
    region: str
    verdict: Verdict
    groups_checked: int = 0
    error: str | None = None


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


def sweep(
    *,
    policies: Policies,
    clients: Clients,
    mailer: Mailer,
    at: datetime | None = None,
    once: Once = always,
    event_id: str | None = None,
) -> dict[str, Any]:
    """Check every group of the home account and of every member account/region; one digest email.

    `at` is the scheduled event's time: exemptions are judged at it, so a retried delivery decides alike.
    Given the event's id and a run-once guard, a second delivery of the same scheduled event returns
    the first run's result: no second digest for what was already reported. (A run that raised left
    no record, so Lambda's retry runs it; a guard whose table is down lets the run go ahead.)
    """
    started = at or datetime.now(UTC)

    def run() -> dict[str, Any]:
        return _sweep(policies=policies, clients=clients, mailer=mailer, started=started, event_id=event_id)

    return run() if event_id is None else once("sweep", event_id, run)


def _sweep(
    *, policies: Policies, clients: Clients, mailer: Mailer, started: datetime, event_id: str | None
) -> dict[str, Any]:
    policy = policies.security_groups
    outbox = mailer.flush()  # what earlier runs could not send goes first
    units = clients.units(policies.accounts, BOT)

    def run(unit: tuple[Target, str]) -> SweepFinding:
        target, name = unit
        try:
            return sweep_target(target, name, policy, Ec2Executor(clients.client("ec2", target)), started)
        except (ClientError, BotoCoreError) as error:
            logger.error(
                "sweep failed for an account",
                extra={"account": target.account_id, "region": target.region, "reason": reason(error)},
            )
            return SweepFinding(target.account_id, name, target.region, Verdict("failed"), error=reason(error))

    with ThreadPoolExecutor(max_workers=SWEEP_THREADS) as pool:
        findings = list(pool.map(run, units))
    failures = [finding for finding in findings if finding.error]
    metrics.add_metric(name="GroupsEvaluated", unit="Count", value=sum(f.groups_checked for f in findings))
    metrics.add_metric(name="SweepFailures", unit="Count", value=len(failures))
    _count([finding.verdict for finding in findings])
    email = None
    if digest_due(findings, started):
        email = mailer.deliver(f"sg-sweep:{event_id or mailer.request_id}", digest_notice(findings, policy, started))
    violations = sum(len(finding.verdict.violations) for finding in findings)
    logger.info("sweep finished", extra={"units": len(units), "violations": violations, "failures": len(failures)})
    return {
        "units": len(units),
        "violations": violations,
        "reverted": sum(len(f.verdict.reverted) for f in findings),
        "failed_units": [f"{f.account_id}/{f.region}: {f.error}" for f in failures],
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
        "email": email,
        "outbox": outbox,
    }
