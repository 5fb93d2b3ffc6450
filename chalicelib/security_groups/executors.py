"""Executors: the only code of this bot that talks to AWS (or, for a dry run, prints)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.aws import error_code, is_transient, reason, tags_of
from chalicelib.security_groups.decisions import (
    _GONE_CODES,
    ALL_PROTOCOLS,
    DESCRIBE_BATCH,
    Failure,
    Revocation,
    RevokeResult,
    port_span,
)
from chalicelib.security_groups.events import (
    Direction,
    GroupSource,
    Network,
    Permission,
    PrefixListSource,
    Source,
    normalize_protocol,
)

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import SecurityGroupRuleTypeDef


# ---------------------------------------------------------------------------------------------
# Executors: the only code here that talks to AWS (or, for a dry run, prints what it would say).
# ---------------------------------------------------------------------------------------------


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
