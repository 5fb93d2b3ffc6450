"""Security-group guard: revert rules that break the policy within seconds, and tell security.

Three sections, in order: pure decisions over frozen dataclasses (which permissions violate which
policy rule, what to revoke), executors that apply a plan with an injected EC2 client (or print it,
for a dry run), and the two entry points `app.py` calls. A compliant event is judged from the event
alone and costs no AWS call; only a violation pays for lookups (group tags for the exemption,
prefix-list entries, rule ids missing from old events).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import notify
from chalicelib.aws import Target
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
from chalicelib.policy import PortRange, SecurityGroupRule, SecurityGroupsPolicy

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import SecurityGroupRuleTypeDef

    from chalicelib.aws import Clients
    from chalicelib.dedupe import Once
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
SWEEP_THREADS = 8

# Private and special-purpose space; a source entirely inside one of these is not "the internet".
NOT_INTERNET = tuple(
    ipaddress.ip_network(block)
    for block in (
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
class RevokeResult:
    reverted: tuple[str, ...] = ()
    already_gone: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()


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


def needs_action(permissions: Sequence[Permission], rules: Sequence[SecurityGroupRule]) -> bool:
    """False when the event alone proves every permission compliant: then no AWS call is made."""
    return bool(find_violations(permissions, rules) or prefix_lists_to_resolve(permissions, rules))


def exempt_until(tags: Mapping[str, str], tag: str, now: datetime) -> datetime | None:
    """The end of a group's exemption if it is still running; a malformed date exempts nothing."""
    value = tags.get(tag, "").strip()
    try:
        until = datetime.fromisoformat(value)
    except ValueError:
        return None
    until = until if until.tzinfo else until.replace(tzinfo=UTC)
    return until if until > now else None


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


# ---------------------------------------------------------------------------------------------
# Executors: the only code here that talks to AWS (or, for a dry run, prints what it would say).
# ---------------------------------------------------------------------------------------------


class Executor(Protocol):
    def group_tags(self, group_id: str) -> Mapping[str, str]: ...
    def prefix_list_entries(self, prefix_list_ids: Iterable[str]) -> Mapping[str, tuple[Network, ...]]: ...
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

    def group_tags(self, group_id: str) -> Mapping[str, str]:
        try:
            groups = self._ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
        except ClientError as error:
            if _error_code(error) in _GONE_CODES:
                return {}
            raise
        return {tag["Key"]: tag["Value"] for group in groups for tag in group.get("Tags", [])}

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
            group["GroupId"]: {tag["Key"]: tag["Value"] for tag in group.get("Tags", [])}
            for page in paginator.paginate()
            for group in page["SecurityGroups"]
        }

    def revoke(self, revocation: Revocation) -> RevokeResult:
        """Revoke one group's rules in one direction; a failure is this revocation's, never the caller's.

        EC2 that does not answer (timeouts or throttling past the retries, an unreachable endpoint) fails
        these rules like a refusal does: they are reported as still open, and the other revocations go on.
        """
        try:
            self._revoke(revocation.group_id, revocation.direction, revocation.rule_ids)
            return RevokeResult(reverted=revocation.rule_ids)
        except BotoCoreError as error:
            return RevokeResult(failed=tuple((rule_id, _reason(error)) for rule_id in revocation.rule_ids))
        except ClientError as error:
            if _error_code(error) not in _GONE_CODES:
                return RevokeResult(failed=tuple((rule_id, _reason(error)) for rule_id in revocation.rule_ids))
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


class PrintingExecutor:
    """A dry run: prints each call it would make and assumes the answers that lead to action."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def group_tags(self, group_id: str) -> Mapping[str, str]:
        self._out.write(f"  ec2.describe_security_groups(GroupIds=['{group_id}'])  # exemption tag\n")
        return {}

    def prefix_list_entries(self, prefix_list_ids: Iterable[str]) -> Mapping[str, tuple[Network, ...]]:
        for prefix_list_id in sorted(prefix_list_ids):
            self._out.write(f"  ec2.get_managed_prefix_list_entries(PrefixListId='{prefix_list_id}')\n")
        return {}

    def complete(self, permissions: Sequence[Permission]) -> tuple[Permission, ...]:
        unknown = sorted({p.group_id for p in permissions if not (p.rule_id and p.direction)})
        if unknown:
            self._out.write(f"  ec2.describe_security_group_rules(Filters=[group-id={unknown}])\n")
        return tuple(permissions)

    def revoke(self, revocation: Revocation) -> RevokeResult:
        self._out.write(
            f"  ec2.revoke_security_group_{revocation.direction}(GroupId='{revocation.group_id}', "
            f"SecurityGroupRuleIds={list(revocation.rule_ids)})\n"
        )
        return RevokeResult(reverted=revocation.rule_ids)


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _reason(error: ClientError | BotoCoreError | Exception) -> str:
    if isinstance(error, ClientError):
        return f"{_error_code(error)}: {error.response.get('Error', {}).get('Message', '')}".strip()
    return f"{type(error).__name__}: {error}"


# ---------------------------------------------------------------------------------------------
# Entry points for app.py.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What happened to one event's violations; `status` is the one-word summary."""

    status: str
    violations: tuple[Violation, ...] = ()
    results: tuple[RevokeResult, ...] = ()
    exempt_until: datetime | None = None

    @property
    def reverted(self) -> tuple[str, ...]:
        return tuple(rule for result in self.results for rule in result.reverted)

    @property
    def already_gone(self) -> tuple[str, ...]:
        return tuple(rule for result in self.results for rule in result.already_gone)

    @property
    def failed(self) -> tuple[tuple[str, str], ...]:
        return tuple(failure for result in self.results for failure in result.failed)


def judge(change: SecurityGroupChange, policy: SecurityGroupsPolicy, executor: Executor, now: datetime) -> Verdict:
    """Decide on an event's permissions and, in enforce mode, revoke the offending ones."""
    prefix_lists = executor.prefix_list_entries(prefix_lists_to_resolve(change.permissions, policy.rules))
    violations = find_violations(change.permissions, policy.rules, prefix_lists)
    if not violations:
        return Verdict("compliant")
    for group_id in sorted({violation.permission.group_id for violation in violations}):
        until = exempt_until(executor.group_tags(group_id), policy.exemption_tag, now)
        if until:
            return Verdict("exempt", violations, exempt_until=until)
    violations = find_violations(
        executor.complete([violation.permission for violation in violations]), policy.rules, prefix_lists
    )
    return act_on(violations, policy, executor)


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


def could_not_act(change: SecurityGroupChange, policy: SecurityGroupsPolicy, reason: str) -> Verdict:
    """The account could not be inspected or changed: every violation stays open, and security must know."""
    violations = find_violations(change.permissions, policy.rules)
    failed = tuple((v.permission.rule_id or describe_traffic(v.permission), reason) for v in violations)
    return Verdict("revoke-failed", violations, (RevokeResult(failed=failed),))


def violation_email(
    change: SecurityGroupChange,
    verdict: Verdict,
    policy: SecurityGroupsPolicy,
    account_name: str,
    exposure: float | None,
) -> notify.Email:
    first = verdict.violations[0]
    outcome = {"reverted": "reverted", "revoke-failed": "REVOKE FAILED", "reported": "not reverted (report mode)"}
    subject = (
        f"[opsbots] {outcome[verdict.status]}: {describe_traffic(first.permission)} from "
        f"{describe_source(first.permission.source)} on {first.permission.group_id} "
        f"in {change.account_id} ({account_name}) {change.region} — {_rules_named(first.rules)}"
    )
    return notify.render(
        "sg_violation",
        to=policy.notify.email,
        subject=subject,
        change=change,
        verdict=verdict,
        account_name=account_name,
        exposure=exposure,
        mode=policy.mode,
        describe_traffic=describe_traffic,
        describe_source=describe_source,
    )


def _rules_named(rules: tuple[str, ...]) -> str:
    return rules[0] if len(rules) == 1 else f"{rules[0]} (+{len(rules) - 1} more)"


def handle_change(
    raw: Mapping[str, Any],
    *,
    policies: Policies,
    clients: Clients,
    notifier_for: Callable[[Target], notify.Notifier],
    once: Once,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, Any]:
    """Handle one CloudTrail security-group event end to end; returns a JSON summary."""
    try:
        change = parse_security_group_change(raw)
    except SkippedEvent as skipped:
        return skipped.report()

    policy = policies.security_groups
    metrics.add_metric(name="PermissionsEvaluated", unit="Count", value=len(change.permissions))
    if not needs_action(change.permissions, policy.rules):
        return {"event_id": change.event_id, "status": "compliant"}

    target = clients.target_for(change.account_id, change.region, policies.accounts)
    if target is None:
        logger.warning("event from an account opsbots does not manage", extra={"account": change.account_id})
        return {"event_id": change.event_id, "status": "unmanaged-account"}
    account_name = _account_name(change.account_id, policies.accounts)

    def enforce() -> dict[str, Any]:
        try:
            verdict = judge(change, policy, Ec2Executor(clients.client("ec2", target)), now())
        except (ClientError, BotoCoreError) as error:
            verdict = could_not_act(change, policy, _reason(error))
        exposure = (now() - change.time).total_seconds() if verdict.reverted else None
        _record(change, verdict, account_name, exposure)
        needs_email = verdict.violations and verdict.status != "exempt"
        email = violation_email(change, verdict, policy, account_name, exposure) if needs_email else None
        return {"status": verdict.status, "email": asdict(email) if email else None}

    decided = once("enforce", change.event_id, enforce)
    if decided["email"]:
        email = notify.Email(**{**decided["email"], "recipients": tuple(decided["email"]["recipients"])})
        once("notify", change.event_id, lambda: _send(notifier_for(clients.home()), email, change))
    return {"event_id": change.event_id, "status": decided["status"]}


def _send(notifier: notify.Notifier, email: notify.Email, change: SecurityGroupChange) -> dict[str, Any]:
    try:
        return {"message_id": notifier.send(email)}
    except (ClientError, BotoCoreError) as error:
        logger.error(
            "violation email failed; the event will be retried",
            extra={"event_id": change.event_id, "reason": _reason(error)},
        )
        metrics.add_metric(name="NotificationFailures", unit="Count", value=1)
        raise NotificationError(change.event_id, _reason(error)) from error


class NotificationError(Exception):
    """Raised so that Lambda retries the event; the revoke already happened and is not repeated."""

    def __init__(self, event_id: str, reason: str) -> None:
        super().__init__(f"event {event_id}: the violation email could not be sent: {reason}")


def _record(change: SecurityGroupChange, verdict: Verdict, account_name: str, exposure: float | None) -> None:
    for violation in verdict.violations:
        permission = violation.permission
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
                "action": verdict.status,
                "exempt_until": verdict.exempt_until.isoformat() if verdict.exempt_until else None,
                "exposure_seconds": exposure,
            },
        )
    if verdict.status == "exempt":
        return
    metrics.add_metric(name="Violations", unit="Count", value=len(verdict.violations))
    metrics.add_metric(name="RulesReverted", unit="Count", value=len(verdict.reverted) + len(verdict.already_gone))
    if verdict.failed:
        metrics.add_metric(name="RevokeFailures", unit="Count", value=len(verdict.failed))
    if exposure is not None:
        metrics.add_metric(name="ExposureSeconds", unit="Seconds", value=exposure)


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
    exempt_groups: tuple[str, ...] = ()


def sweep_target(
    target: Target, account_name: str, policy: SecurityGroupsPolicy, executor: Ec2Executor, now: datetime
) -> SweepFinding:
    tags = executor.all_group_tags()
    exempt = tuple(sorted(g for g, group_tags in tags.items() if exempt_until(group_tags, policy.exemption_tag, now)))
    permissions = [p for p in executor.rules_of() if p.group_id not in exempt]
    prefix_lists = executor.prefix_list_entries(prefix_lists_to_resolve(permissions, policy.rules))
    verdict = act_on(find_violations(permissions, policy.rules, prefix_lists), policy, executor)
    return SweepFinding(target.account_id, account_name, target.region, verdict, len(tags), exempt_groups=exempt)


def sweep(
    *,
    policies: Policies,
    clients: Clients,
    notifier_for: Callable[[Target], notify.Notifier],
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    once: Once = always,
    event_id: str | None = None,
) -> dict[str, Any]:
    """Check every group of the home account and of every member account/region; one digest email.

    Given the scheduled event's id and a run-once guard, a second delivery of the same scheduled
    event returns the first run's result: no second digest for what was already reported. (A run
    that raised left no record, so Lambda's retry runs it.)
    """

    def run() -> dict[str, Any]:
        return _sweep(policies=policies, clients=clients, notifier_for=notifier_for, now=now)

    return run() if event_id is None else once("sweep", event_id, run)


def _sweep(
    *,
    policies: Policies,
    clients: Clients,
    notifier_for: Callable[[Target], notify.Notifier],
    now: Callable[[], datetime],
) -> dict[str, Any]:
    policy = policies.security_groups
    home = clients.home()
    units = clients.units(policies.accounts)
    started = now()

    def run(unit: tuple[Target, str]) -> SweepFinding:
        target, name = unit
        try:
            return sweep_target(target, name, policy, Ec2Executor(clients.client("ec2", target)), started)
        except (ClientError, BotoCoreError) as error:
            logger.error(
                "sweep failed for an account",
                extra={"account": target.account_id, "region": target.region, "reason": _reason(error)},
            )
            return SweepFinding(target.account_id, name, target.region, Verdict("failed"), error=_reason(error))

    with ThreadPoolExecutor(max_workers=SWEEP_THREADS) as pool:
        findings = list(pool.map(run, units))
    violations = sum(len(finding.verdict.violations) for finding in findings)
    failures = [finding for finding in findings if finding.error]
    metrics.add_metric(name="GroupsEvaluated", unit="Count", value=sum(f.groups_checked for f in findings))
    metrics.add_metric(name="Violations", unit="Count", value=violations)
    revoke_failures = [
        f"{f.account_id}/{f.region}/{rule}: {reason}" for f in findings for rule, reason in f.verdict.failed
    ]
    metrics.add_metric(name="RulesReverted", unit="Count", value=sum(len(f.verdict.reverted) for f in findings))
    metrics.add_metric(name="RevokeFailures", unit="Count", value=len(revoke_failures))
    metrics.add_metric(name="SweepFailures", unit="Count", value=len(failures))
    message_id = None
    if violations or failures:
        email = notify.render(
            "sg_digest",
            to=policy.notify.email,
            subject=f"[opsbots] security-group sweep: {violations} violation(s), {len(failures)} account failure(s)",
            findings=findings,
            mode=policy.mode,
            exemption_tag=policy.exemption_tag,
            started=started,
            describe_traffic=describe_traffic,
            describe_source=describe_source,
        )
        message_id = notify.send_report(notifier_for(home), email)
    logger.info("sweep finished", extra={"units": len(units), "violations": violations, "failures": len(failures)})
    return {
        "units": len(units),
        "violations": violations,
        "reverted": sum(len(f.verdict.reverted) for f in findings),
        "failed_units": [f"{f.account_id}/{f.region}: {f.error}" for f in failures],
        "revoke_failures": revoke_failures,
        "exempt_groups": [f"{f.account_id}/{f.region}/{group}" for f in findings for group in f.exempt_groups],
        "email": message_id,
    }
