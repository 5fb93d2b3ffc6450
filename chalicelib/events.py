"""Raw EventBridge/CloudTrail dicts in, frozen dataclasses out.

Events come from outside and are not trusted: CloudTrail writes empty source families as `{}`,
old events carry no rule ids, ModifySecurityGroupRules is logged in PascalCase, and a forwarded or
hand-written event can be missing anything. Everything odd is turned into `MalformedEventError` or
`IgnoredEvent` here, so a handler logs and skips it instead of crashing the batch or being retried
forever: ids, accounts, regions and ports that cannot name anything real are malformed too, never sent
on to AWS. `triggers.LenientCloudWatchEvent` gets every event this far, even one Chalice could not read.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import unquote_plus

from pydantic import AliasChoices, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from chalicelib.names import ACCOUNT_ID, REGION_NAME, anchored
from chalicelib.observability import logger, metrics
from chalicelib.triggers import SECURITY_GROUP_CALLS

Direction = Literal["ingress", "egress"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_PROTOCOL_NAMES = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6", "all": "-1"}


class SkippedEvent(Exception):  # noqa: N818 - a verdict on an event, not a failure of ours
    """An event a handler logs, counts and skips: never retried, never acted on."""

    status: ClassVar[str]
    metric: ClassVar[str]

    warns: ClassVar[bool] = False

    def __init__(self, event_id: str, reason: str, **subject: str) -> None:
        super().__init__(f"event {event_id}: {reason}")
        self.event_id = event_id
        self.reason = reason
        self.subject = subject  # what the event was about (a key, an instance), for the log line

    def report(self) -> dict[str, Any]:
        """Log and count the skip; the handler returns this summary."""
        summary = {"event_id": self.event_id, **self.subject, "status": self.status, "reason": self.reason}
        (logger.warning if self.warns else logger.info)(f"{self.status} event skipped", extra=summary)
        metrics.add_metric(name=self.metric, unit="Count", value=1)
        return summary


class MalformedEventError(SkippedEvent):
    """The event is not what its type promises."""

    status = "malformed"
    metric = "MalformedEvents"
    warns = True


class IgnoredEvent(SkippedEvent):
    """A well-formed event with nothing to do (a failed call, another API)."""

    status = "ignored"
    metric = "EventsIgnored"


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
# Checked because they end up in endpoint names and ARNs: an event that names no real account or
# region (forwarded, hand-written, corrupted) is malformed, not a reason to call AWS somewhere odd.
_AccountId = Annotated[str, Field(pattern=anchored(ACCOUNT_ID))]
_RegionName = Annotated[str, Field(pattern=anchored(REGION_NAME))]
# Likewise the ids the guard sends back to EC2 (describe, revoke): anything else cannot name a real one.
_GROUP_ID = re.compile(r"sg-[0-9a-f]+")
_SgId = Annotated[str, Field(pattern=rf"^{_GROUP_ID.pattern}$")]
_SgrId = Annotated[str, Field(pattern=r"^sgr-[0-9a-f]+$")]
_PlId = Annotated[str, Field(pattern=r"^pl-[0-9a-f]+$")]


class _Lenient(BaseModel):
    # Built on first use, not at import: each Lambda function needs only some models (cold start).
    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)


class _Envelope(_Lenient):
    id: str
    account: _AccountId
    region: _RegionName
    time: AwareDatetime  # EventBridge writes UTC ("...Z"); a naive time could not be compared with now
    detail: dict[str, Any]


class _Identity(_Lenient):
    arn: str = ""
    userName: str = ""  # noqa: N815 - CloudTrail's field names
    principalId: str = ""  # noqa: N815


class _Detail(_Lenient):
    eventName: str  # noqa: N815
    userIdentity: _Identity = _Identity()  # noqa: N815
    sourceIPAddress: str = ""  # noqa: N815
    userAgent: str = ""  # noqa: N815
    errorCode: str | None = None  # noqa: N815
    requestParameters: dict[str, Any] | None = None  # noqa: N815
    responseElements: dict[str, Any] | None = None  # noqa: N815


class _GroupRef(_Lenient):
    groupId: _SgId  # noqa: N815
    userId: str | None = None  # noqa: N815


class _CreatedRule(_Lenient):
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


class _Items(_Lenient):
    items: list[dict[str, Any]] = []


class _CreatedRules(_Lenient):
    items: list[_CreatedRule] = []


class _IpRange(_Lenient):
    cidrIp: NetworkField  # noqa: N815
    description: str = ""


class _Ipv6Range(_Lenient):
    cidrIpv6: NetworkField  # noqa: N815
    description: str = ""


class _GroupPair(_Lenient):
    groupId: _SgId  # noqa: N815
    userId: str | None = None  # noqa: N815
    description: str = ""


class _PrefixListItem(_Lenient):
    prefixListId: _PlId  # noqa: N815
    description: str = ""


class _IpRanges(_Lenient):
    items: list[_IpRange] = []


class _Ipv6Ranges(_Lenient):
    items: list[_Ipv6Range] = []


class _GroupPairs(_Lenient):
    items: list[_GroupPair] = []


class _PrefixListItems(_Lenient):
    items: list[_PrefixListItem] = []


class _RequestedPermission(_Lenient):
    ipProtocol: str | int  # noqa: N815
    fromPort: _Port = -1  # noqa: N815
    toPort: _Port = -1  # noqa: N815
    ipRanges: _IpRanges = _IpRanges()  # noqa: N815
    ipv6Ranges: _Ipv6Ranges = _Ipv6Ranges()  # noqa: N815
    groups: _GroupPairs = _GroupPairs()
    prefixListIds: _PrefixListItems = _PrefixListItems()  # noqa: N815


class _ModifiedRuleSpec(_Lenient):
    IpProtocol: str | int
    FromPort: _Port = -1
    ToPort: _Port = -1
    CidrIpv4: NetworkField | None = None
    CidrIpv6: NetworkField | None = None
    ReferencedGroupId: _SgId | None = None
    PrefixListId: _PlId | None = None
    Description: str = ""


class _ModifiedRule(_Lenient):
    SecurityGroupRuleId: _SgrId
    SecurityGroupRule: _ModifiedRuleSpec


class _ModifyRequest(_Lenient):
    GroupId: _SgId
    SecurityGroupRule: list[_ModifiedRule] | _ModifiedRule  # one modified rule is logged as an object


class _ModifyParameters(_Lenient):
    ModifySecurityGroupRulesRequest: _ModifyRequest


class _PrefixListEntry(_Lenient):
    # CloudTrail logs the query API's `AddEntry.N.Cidr` as `cidr`; accept the API's own spelling too.
    cidr: NetworkField = Field(validation_alias=AliasChoices("cidr", "Cidr"))


def _listed(value: Any) -> Any:
    """CloudTrail logs one entry of a repeated request field as an object, several as a list, none as nothing."""
    if value is None:
        return []
    return [value] if isinstance(value, Mapping) else value


_PrefixListEntries = Annotated[list[_PrefixListEntry], BeforeValidator(_listed)]


class _ModifyPrefixListRequest(_Lenient):
    PrefixListId: _PlId
    AddEntry: _PrefixListEntries = []  # one entry is logged as an object, several as a list
    RemoveEntry: _PrefixListEntries = []


class _ModifyPrefixListParameters(_Lenient):
    ModifyManagedPrefixListRequest: _ModifyPrefixListRequest


def _event_id(raw: object) -> str:
    return str(raw.get("id", "<no id>")) if isinstance(raw, Mapping) else "<not an object>"


def parse_security_group_change(raw: Mapping[str, Any]) -> SecurityGroupChange:
    """Read an "AWS API Call via CloudTrail" event for a security-group call."""
    event_id = _event_id(raw)
    try:
        envelope = _Envelope.model_validate(raw)
        detail = _Detail.model_validate(envelope.detail)
        if detail.eventName not in SECURITY_GROUP_CALLS:
            raise IgnoredEvent(event_id, f"{detail.eventName} is not a security-group change")
        if detail.errorCode:
            raise IgnoredEvent(event_id, f"the call failed ({detail.errorCode}); nothing changed")
        permissions = _permissions(detail)
        prefix_list = _prefix_list_edit(detail)
    except ValidationError as error:
        raise MalformedEventError(event_id, _summary(error)) from None
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


def _summary(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


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


@dataclass(frozen=True)
class StateChange:
    """An "EC2 Instance State-change Notification": only a hint to look at the instance again."""

    event_id: str
    account_id: str
    region: str
    instance_id: str
    state: str


def parse_state_change(raw: Mapping[str, Any]) -> StateChange:
    event_id = _event_id(raw)
    try:
        envelope = _Envelope.model_validate(raw)
        instance_id, state = envelope.detail["instance-id"], envelope.detail["state"]
    except (ValidationError, KeyError) as error:
        raise MalformedEventError(event_id, f"not an EC2 state-change event: {error}") from None
    if not (isinstance(instance_id, str) and instance_id.startswith("i-") and isinstance(state, str)):
        raise MalformedEventError(event_id, f"bad instance-id/state: {instance_id!r}/{state!r}")
    return StateChange(envelope.id, envelope.account, envelope.region, instance_id, state)


@dataclass(frozen=True)
class ObjectCreated:
    """An S3 object was written. `key` is the key as stored: never URL-encoded."""

    event_id: str
    region: str
    bucket: str
    key: str
    size: int | None
    etag: str
    version_id: str | None


class _S3Object(_Lenient):
    key: str
    size: Annotated[int, Field(ge=0)] | None = None
    etag: str = Field(min_length=1)
    version_id: str | None = Field(None, alias="version-id")


class _S3Bucket(_Lenient):
    name: str


class _S3Detail(_Lenient):
    bucket: _S3Bucket
    object: _S3Object


class _ClassicObject(_Lenient):
    key: str
    size: Annotated[int, Field(ge=0)] | None = None
    eTag: str = Field(min_length=1)  # noqa: N815 - S3's field names
    versionId: str | None = None  # noqa: N815


class _ClassicS3(_Lenient):
    bucket: _S3Bucket
    object: _ClassicObject


class _ClassicRecord(_Lenient):
    eventName: str  # noqa: N815
    awsRegion: _RegionName  # noqa: N815
    responseElements: dict[str, Any] = {}  # noqa: N815
    s3: _ClassicS3


class _ClassicNotification(_Lenient):
    Records: Annotated[list[_ClassicRecord], Field(min_length=1)]  # S3 never sends an empty one


def parse_object_created(raw: Mapping[str, Any]) -> tuple[ObjectCreated, ...]:
    """Read an EventBridge "Object Created" event, or a classic S3 notification (`Records`).

    EventBridge delivers the key as stored; classic notifications form-encode it ("red flower.jpg"
    arrives as "red+flower.jpg", a literal "+" as "%2B"), so only those are decoded, exactly once.
    """
    event_id = _event_id(raw)
    try:
        if isinstance(raw, Mapping) and "Records" in raw:
            return tuple(_classic(record) for record in _ClassicNotification.model_validate(raw).Records)
        envelope = _Envelope.model_validate(raw)
        if raw.get("source") != "aws.s3" or raw.get("detail-type") != "Object Created":
            raise IgnoredEvent(event_id, f"{raw.get('source')} {raw.get('detail-type')!r} is not an S3 upload")
        detail = _S3Detail.model_validate(envelope.detail)
    except ValidationError as error:
        raise MalformedEventError(event_id, _summary(error)) from None
    except TypeError as error:
        raise MalformedEventError(event_id, f"not an S3 upload event: {error}") from None
    bucket, obj = detail.bucket.name, detail.object
    return (ObjectCreated(envelope.id, envelope.region, bucket, obj.key, obj.size, obj.etag, obj.version_id),)


def _classic(record: _ClassicRecord) -> ObjectCreated:
    request_id = str(record.responseElements.get("x-amz-request-id", ""))
    if not record.eventName.startswith("ObjectCreated:"):
        raise IgnoredEvent(request_id, f"{record.eventName} is not an upload")
    obj = record.s3.object
    key = unquote_plus(obj.key)
    return ObjectCreated(request_id, record.awsRegion, record.s3.bucket.name, key, obj.size, obj.eTag, obj.versionId)
