"""CloudTrail's security-group calls, read into frozen dataclasses: what was opened, where, by whom."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BeforeValidator, Field, ValidationError

from chalicelib.events import Envelope, IgnoredEvent, Lenient, MalformedEventError, id_of, summary
from chalicelib.triggers import SECURITY_GROUP_CALLS

Direction = Literal["ingress", "egress"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_PROTOCOL_NAMES = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6", "all": "-1"}


@dataclass(frozen=True)
class GroupSource:
    group_id: str
    account_id: str | None = None


@dataclass(frozen=True)
class PrefixListSource:
    prefix_list_id: str


Source = Network | GroupSource | PrefixListSource


@dataclass(frozen=True)
class Permission:
    """One security-group rule: one protocol and port range from one source.

    `direction` is None when the event does not say (ModifySecurityGroupRules); `rule_id` is None for
    events from before rule ids existed. `from_port`/`to_port` are -1 when the protocol has no ports.
    """

    group_id: str
    direction: Direction | None
    protocol: str
    from_port: int
    to_port: int
    source: Source
    rule_id: str | None = None
    description: str = ""


@dataclass(frozen=True)
class Actor:
    arn: str
    name: str
    source_ip: str
    user_agent: str


@dataclass(frozen=True)
class PrefixListEdit:
    """A managed prefix list's entries changed: every group rule that references it changed with it."""

    prefix_list_id: str
    added: tuple[Network, ...]
    removed: tuple[Network, ...] = ()


@dataclass(frozen=True)
class SecurityGroupChange:
    """A call that may have opened a security group: its permissions as the event states them, or, for a
    prefix-list edit, none (the rules that reference the list are looked up when an added entry matters)."""

    event_id: str
    account_id: str
    region: str
    time: datetime
    api_call: str
    actor: Actor
    permissions: tuple[Permission, ...]
    prefix_list: PrefixListEdit | None = None


def normalize_protocol(value: str | int) -> str:
    text = str(value).strip().lower()
    return _PROTOCOL_NAMES.get(text, text)


def _network(value: Any) -> Network:
    # Only text: ip_network(5) or ip_network(2**70) would quietly read a number as an address.
    if not isinstance(value, str):
        raise ValueError(f"{type(value).__name__} is not a CIDR")
    return ipaddress.ip_network(value, strict=False)


NetworkField = Annotated[Network, BeforeValidator(_network)]
# Ports as EC2 logs them: -1 (every port, or no ports), or 0-65535; ICMP type and code fit too.
_Port = Annotated[int, Field(ge=-1, le=65535)]
# Likewise the ids the guard sends back to EC2 (describe, revoke): anything else cannot name a real one.
_GROUP_ID = re.compile(r"sg-[0-9a-f]+")
_SgId = Annotated[str, Field(pattern=rf"^{_GROUP_ID.pattern}$")]
_SgrId = Annotated[str, Field(pattern=r"^sgr-[0-9a-f]+$")]
_PlId = Annotated[str, Field(pattern=r"^pl-[0-9a-f]+$")]


class _Identity(Lenient):
    arn: str = ""
    userName: str = ""  # noqa: N815 - CloudTrail's field names
    principalId: str = ""  # noqa: N815


class _Detail(Lenient):
    eventName: str  # noqa: N815
    userIdentity: _Identity = _Identity()  # noqa: N815
    sourceIPAddress: str = ""  # noqa: N815
    userAgent: str = ""  # noqa: N815
    errorCode: str | None = None  # noqa: N815
    requestParameters: dict[str, Any] | None = None  # noqa: N815
    responseElements: dict[str, Any] | None = None  # noqa: N815


class _GroupRef(Lenient):
    groupId: _SgId  # noqa: N815
    userId: str | None = None  # noqa: N815


class _CreatedRule(Lenient):
    """An item of `responseElements.securityGroupRuleSet`: the rules the call really created."""

    groupId: _SgId  # noqa: N815
    securityGroupRuleId: _SgrId  # noqa: N815
    isEgress: bool  # noqa: N815
    ipProtocol: str | int  # noqa: N815
    fromPort: _Port = -1  # noqa: N815
    toPort: _Port = -1  # noqa: N815
    cidrIpv4: NetworkField | None = None  # noqa: N815
    cidrIpv6: NetworkField | None = None  # noqa: N815
    referencedGroupInfo: _GroupRef | None = None  # noqa: N815
    prefixListId: _PlId | None = None  # noqa: N815
    description: str = ""


class _Items(Lenient):
    items: list[dict[str, Any]] = []


class _CreatedRules(Lenient):
    items: list[_CreatedRule] = []


class _IpRange(Lenient):
    cidrIp: NetworkField  # noqa: N815
    description: str = ""


class _Ipv6Range(Lenient):
    cidrIpv6: NetworkField  # noqa: N815
    description: str = ""


class _GroupPair(Lenient):
    groupId: _SgId  # noqa: N815
    userId: str | None = None  # noqa: N815
    description: str = ""


class _PrefixListItem(Lenient):
    prefixListId: _PlId  # noqa: N815
    description: str = ""


class _IpRanges(Lenient):
    items: list[_IpRange] = []


class _Ipv6Ranges(Lenient):
    items: list[_Ipv6Range] = []


class _GroupPairs(Lenient):
    items: list[_GroupPair] = []


class _PrefixListItems(Lenient):
    items: list[_PrefixListItem] = []


class _RequestedPermission(Lenient):
    ipProtocol: str | int  # noqa: N815
    fromPort: _Port = -1  # noqa: N815
    toPort: _Port = -1  # noqa: N815
    ipRanges: _IpRanges = _IpRanges()  # noqa: N815
    ipv6Ranges: _Ipv6Ranges = _Ipv6Ranges()  # noqa: N815
    groups: _GroupPairs = _GroupPairs()
    prefixListIds: _PrefixListItems = _PrefixListItems()  # noqa: N815


class _ModifiedRuleSpec(Lenient):
    IpProtocol: str | int
    FromPort: _Port = -1
    ToPort: _Port = -1
    CidrIpv4: NetworkField | None = None
    CidrIpv6: NetworkField | None = None
    ReferencedGroupId: _SgId | None = None
    PrefixListId: _PlId | None = None
    Description: str = ""


class _ModifiedRule(Lenient):
    SecurityGroupRuleId: _SgrId
    SecurityGroupRule: _ModifiedRuleSpec


class _ModifyRequest(Lenient):
    GroupId: _SgId
    SecurityGroupRule: list[_ModifiedRule] | _ModifiedRule  # one modified rule is logged as an object


class _ModifyParameters(Lenient):
    ModifySecurityGroupRulesRequest: _ModifyRequest


class _PrefixListEntry(Lenient):
    # CloudTrail logs the query API's `AddEntry.N.Cidr` as `cidr`; accept the API's own spelling too.
    cidr: NetworkField = Field(validation_alias=AliasChoices("cidr", "Cidr"))


def _listed(value: Any) -> Any:
    """CloudTrail logs one entry of a repeated request field as an object, several as a list, none as nothing."""
    if value is None:
        return []
    return [value] if isinstance(value, Mapping) else value


_PrefixListEntries = Annotated[list[_PrefixListEntry], BeforeValidator(_listed)]


class _ModifyPrefixListRequest(Lenient):
    PrefixListId: _PlId
    AddEntry: _PrefixListEntries = []  # one entry is logged as an object, several as a list
    RemoveEntry: _PrefixListEntries = []


class _ModifyPrefixListParameters(Lenient):
    ModifyManagedPrefixListRequest: _ModifyPrefixListRequest


def parse_security_group_change(raw: Mapping[str, Any]) -> SecurityGroupChange:
    """Read an "AWS API Call via CloudTrail" event for a security-group call."""
    event_id = id_of(raw)
    try:
        envelope = Envelope.model_validate(raw)
        detail = _Detail.model_validate(envelope.detail)
        if detail.eventName not in SECURITY_GROUP_CALLS:
            raise IgnoredEvent(event_id, f"{detail.eventName} is not a security-group change")
        if detail.errorCode:
            raise IgnoredEvent(event_id, f"the call failed ({detail.errorCode}); nothing changed")
        permissions = _permissions(detail)
        prefix_list = _prefix_list_edit(detail)
    except ValidationError as error:
        raise MalformedEventError(event_id, summary(error)) from None
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise MalformedEventError(event_id, f"{type(error).__name__}: {error}") from None
    identity = detail.userIdentity
    return SecurityGroupChange(
        event_id=envelope.id,
        account_id=envelope.account,
        region=envelope.region,
        time=envelope.time,
        api_call=detail.eventName,
        actor=Actor(
            arn=identity.arn or identity.principalId,
            name=identity.userName or identity.arn.rsplit("/", 1)[-1],
            source_ip=detail.sourceIPAddress,
            user_agent=detail.userAgent,
        ),
        permissions=permissions,
        prefix_list=prefix_list,
    )


def _prefix_list_edit(detail: _Detail) -> PrefixListEdit | None:
    if detail.eventName != "ModifyManagedPrefixList":
        return None
    request = _ModifyPrefixListParameters.model_validate(detail.requestParameters or {})
    edit = request.ModifyManagedPrefixListRequest
    return PrefixListEdit(
        edit.PrefixListId,
        added=tuple(entry.cidr for entry in edit.AddEntry),
        removed=tuple(entry.cidr for entry in edit.RemoveEntry),
    )


def _permissions(detail: _Detail) -> tuple[Permission, ...]:
    request = detail.requestParameters or {}
    if detail.eventName == "ModifyManagedPrefixList":
        return ()
    if detail.eventName == "ModifySecurityGroupRules":
        return _modified(request)
    created = (detail.responseElements or {}).get("securityGroupRuleSet")
    if created:
        return tuple(_from_created(rule) for rule in _CreatedRules.model_validate(created).items)
    direction: Direction = "egress" if detail.eventName.endswith("Egress") else "ingress"
    group_id = request.get("groupId")
    if not (isinstance(group_id, str) and _GROUP_ID.fullmatch(group_id)):
        raise ValueError("the request names no groupId and the response lists no created rules")
    return _requested(request, group_id, direction)


def _from_created(rule: _CreatedRule) -> Permission:
    return Permission(
        group_id=rule.groupId,
        direction="egress" if rule.isEgress else "ingress",
        protocol=normalize_protocol(rule.ipProtocol),
        from_port=rule.fromPort,
        to_port=rule.toPort,
        source=_one_source(
            rule.cidrIpv4,
            rule.cidrIpv6,
            GroupSource(rule.referencedGroupInfo.groupId, rule.referencedGroupInfo.userId)
            if rule.referencedGroupInfo
            else None,
            rule.prefixListId and PrefixListSource(rule.prefixListId),
        ),
        rule_id=rule.securityGroupRuleId,
        description=rule.description,
    )


def _one_source(*candidates: Source | str | None) -> Source:
    present = [candidate for candidate in candidates if candidate]
    if len(present) != 1:
        raise ValueError(f"a rule needs exactly one source, found {len(present)}")
    source = present[0]
    assert not isinstance(source, str)
    return source


def _requested(request: Mapping[str, Any], group_id: str, direction: Direction) -> tuple[Permission, ...]:
    items = _Items.model_validate(request.get("ipPermissions") or {}).items
    if not items and "ipProtocol" in request:
        # The flat form of `aws ec2 authorize-security-group-ingress --protocol --port --cidr`.
        items = [{**request, "ipRanges": {"items": [{"cidrIp": request["cidrIp"]}]}}]
    permissions: list[Permission] = []
    for item in items:
        requested = _RequestedPermission.model_validate(item)
        for source, description in _requested_sources(requested):
            permissions.append(
                Permission(
                    group_id=group_id,
                    direction=direction,
                    protocol=normalize_protocol(requested.ipProtocol),
                    from_port=requested.fromPort,
                    to_port=requested.toPort,
                    source=source,
                    description=description,
                )
            )
    return tuple(permissions)


def _requested_sources(requested: _RequestedPermission) -> list[tuple[Source, str]]:
    return [
        *((entry.cidrIp, entry.description) for entry in requested.ipRanges.items),
        *((entry.cidrIpv6, entry.description) for entry in requested.ipv6Ranges.items),
        *((GroupSource(entry.groupId, entry.userId), entry.description) for entry in requested.groups.items),
        *((PrefixListSource(entry.prefixListId), entry.description) for entry in requested.prefixListIds.items),
    ]


def _modified(request: Mapping[str, Any]) -> tuple[Permission, ...]:
    wrapper = _ModifyParameters.model_validate(request).ModifySecurityGroupRulesRequest
    group_id = wrapper.GroupId
    entries = wrapper.SecurityGroupRule
    rules = entries if isinstance(entries, list) else [entries]
    return tuple(
        Permission(
            group_id=group_id,
            direction=None,
            protocol=normalize_protocol(rule.SecurityGroupRule.IpProtocol),
            from_port=rule.SecurityGroupRule.FromPort,
            to_port=rule.SecurityGroupRule.ToPort,
            source=_one_source(
                rule.SecurityGroupRule.CidrIpv4,
                rule.SecurityGroupRule.CidrIpv6,
                rule.SecurityGroupRule.ReferencedGroupId and GroupSource(rule.SecurityGroupRule.ReferencedGroupId),
                rule.SecurityGroupRule.PrefixListId and PrefixListSource(rule.SecurityGroupRule.PrefixListId),
            ),
            rule_id=rule.SecurityGroupRuleId,
            description=rule.SecurityGroupRule.Description,
        )
        for rule in rules
    )
