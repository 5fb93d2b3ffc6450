"""DNS bot: Route53 records that follow EC2 instance state, without touching anyone else's records.

Every record opsbots writes is claimed first in a DynamoDB registry (`OPSBOTS_DNS_TABLE`, one item
per zone/name/type, with its owner instance): the claim is a conditional write, so when two
instances ask for one name the current owner keeps it, and the records to remove for a terminated
instance come from the registry rather than from EC2. A name already present in Route53 that the
registry does not hold belongs to someone else: it is reported as a conflict and never written.

Events only say "something happened to instance X": the bot decides from the instance's current
state (one describe), so duplicates and out-of-order deliveries converge on the same records.

Three sections: pure planning over frozen dataclasses, executors (EC2, Route53, the registry),
and the two entry points app.py calls.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict

from chalicelib.aws import Target, error_code, error_message, tags_of
from chalicelib.events import SkippedEvent, parse_state_change
from chalicelib.observability import logger, metrics
from chalicelib.policy import DnsPolicy, DnsZone, MemberBot

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import InstanceTypeDef
    from mypy_boto3_route53 import Route53Client
    from mypy_boto3_route53.type_defs import ChangeTypeDef

    from chalicelib.aws import Clients
    from chalicelib.policy import Policies

PERMISSIONS = (
    "ec2:DescribeInstances",
    "route53:ListHostedZones",
    "route53:GetHostedZone",
    "route53:ListResourceRecordSets",
    "route53:ChangeResourceRecordSets",
    "dynamodb:PutItem",
    "dynamodb:DeleteItem",
    "sts:AssumeRole",
    "sts:GetCallerIdentity",
)
EVENT_PERMISSIONS = (*PERMISSIONS, "dynamodb:Query")  # one instance's records, by the owner index
RECONCILE_PERMISSIONS = (*PERMISSIONS, "dynamodb:Scan")  # the whole registry
BOT: MemberBot = "dns"  # its role in member accounts
RUNNING = "running"
MAX_RECORDS_PER_BATCH = 1000
# An event's few registry writes go in one transaction: one round trip. Past this many (a reconcile),
# each is written on its own: a transaction costs two write units per item, and one refused name
# cancels it whole, so a large one would be resent once per conflict.
TRANSACT_UP_TO = 25
# Past this many new names, listing the zones once is cheaper than one look-up per name.
LIST_ZONES_ABOVE = 20
TYPES_AT_A_NAME = 20
ZONE_CACHE_SECONDS = 900
PRIMARY_TYPES = frozenset({"A", "AAAA"})
RECONCILE_THREADS = 8
OWNER_INDEX = "by-owner"
RecordType = Literal["A", "AAAA", "CNAME", "PTR"]
_INVALID = re.compile(r"[^a-z0-9-]+")

# ---------------------------------------------------------------------------------------------
# Plain data and pure planning; no AWS.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostedZone:
    id: str
    name: str  # lowercase, with the trailing dot
    private: bool
    vpc_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Instance:
    account_id: str
    region: str
    instance_id: str
    state: str
    tags: Mapping[str, str]
    vpc_id: str | None = None
    private_ipv4: str | None = None
    public_ipv4: str | None = None
    ipv6: tuple[str, ...] = ()

    @property
    def owner(self) -> str:
        return owner_of(self.account_id, self.region, self.instance_id)


@dataclass(frozen=True, order=True)
class Record:
    zone_id: str
    name: str
    type: RecordType
    value: str
    ttl: int

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.zone_id, self.name, self.type)


@dataclass(frozen=True, order=True)
class OwnedRecord:
    """A registry entry: this record was written by opsbots for this owner.

    `unwritten`: claimed, but Route53 failed (throttled or unavailable past the retries, unreachable)
    before it confirmed the change, so it may not hold the record; the next plan writes it again.
    """

    record: Record
    owner: str
    unwritten: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class Conflict:
    record: Record
    owner: str
    held_by: str  # another instance, or "route53" for a record opsbots did not write


@dataclass(frozen=True)
class Plan:
    claims: tuple[OwnedRecord, ...] = ()  # names not yet owned: claim, check Route53, then write
    updates: tuple[tuple[OwnedRecord, OwnedRecord], ...] = ()  # (current, wanted) of an owned name
    deletes: tuple[OwnedRecord, ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    kept: tuple[OwnedRecord, ...] = ()  # owned, wanted and unchanged: nothing to write

    def __bool__(self) -> bool:
        return bool(self.claims or self.updates or self.deletes)


def owner_of(account_id: str, region: str, instance_id: str) -> str:
    return f"{account_id}/{region}/{instance_id}"


def account_of(owner: str) -> str:
    return owner.split("/", 1)[0]


def dns_label(value: str) -> str | None:
    """A tag value as one DNS label (dots too become '-': a tag can never leave its zone)."""
    label = _INVALID.sub("-", value.strip().lower()).strip("-")[:63].strip("-")
    return label or None


def record_names(instance: Instance, policy: DnsPolicy) -> tuple[str | None, tuple[str, ...]]:
    """The instance's own label (None if its tag cannot be made valid) and its alias labels."""
    tag = instance.tags.get(policy.name_tag)
    name = dns_label(tag) if tag else instance.instance_id
    raw_aliases = instance.tags.get(policy.alias_tag, "") if policy.alias_tag else ""
    aliases = (dns_label(alias) for alias in raw_aliases.split(","))
    return name, tuple(sorted({alias for alias in aliases if alias and alias != name}))


def selected(instance: Instance, policy: DnsPolicy) -> bool:
    return policy.select_tag is None or policy.select_tag in instance.tags


def _address(instance: Instance, kind: str) -> tuple[RecordType, str] | None:
    if kind == "private" and instance.private_ipv4:
        return "A", instance.private_ipv4
    if kind == "public" and instance.public_ipv4:
        return "A", instance.public_ipv4
    if kind == "ipv6" and instance.ipv6:
        return "AAAA", instance.ipv6[0]
    return None


def zone_for(config: DnsZone, zones: Sequence[HostedZone]) -> HostedZone | None:
    """The hosted zone a configured zone means: split horizon is resolved by the kind of address."""
    name = config.zone.lower().rstrip(".") + "."
    candidates = [zone for zone in zones if zone.name == name]
    wanted_private = config.address == "private"
    return next((zone for zone in candidates if zone.private == wanted_private), None) or (
        candidates[0] if config.address == "ipv6" and candidates else None
    )


def reverse_zone(address: str, zones: Sequence[HostedZone]) -> tuple[HostedZone, str] | None:
    """The longest hosted zone holding the address's PTR name, and that name."""
    pointer = ipaddress.ip_address(address).reverse_pointer + "."
    holding = [zone for zone in zones if pointer.endswith("." + zone.name) or pointer == zone.name]
    return (max(holding, key=lambda zone: len(zone.name)), pointer) if holding else None


def desired_records(
    instance: Instance, policy: DnsPolicy, zones: Sequence[HostedZone], account: str
) -> tuple[tuple[Record, ...], tuple[str, ...]]:
    """The records a running instance of `account` ("home" or a member's id) should have, and why any
    expected one cannot be made. A zone names only the accounts it admits (`accounts:`; by default every
    account in a private zone, the home account only in a public one)."""
    if instance.state != RUNNING or not selected(instance, policy):
        return (), ()
    name, aliases = record_names(instance, policy)
    if name is None:
        return (), (f"tag {policy.name_tag}={instance.tags.get(policy.name_tag)!r} cannot be made a DNS name",)
    records: list[Record] = []
    skipped: list[str] = []
    for config in policy.zones:
        address = _address(instance, config.address)
        zone = zone_for(config, zones)
        if address is None:
            continue
        if zone is None or (zone.private and instance.vpc_id not in zone.vpc_ids):
            skipped.append(f"no {config.address} hosted zone {config.zone} for {instance.vpc_id or 'this instance'}")
            continue
        if not config.admits(account, zone.private):
            skipped.append(f"account {account} may not have names in {config.zone} (its accounts:)")
            continue
        fqdn = f"{name}.{zone.name}"
        records.append(Record(zone.id, fqdn, address[0], address[1], config.ttl))
        records.extend(Record(zone.id, f"{alias}.{zone.name}", "CNAME", fqdn, config.ttl) for alias in aliases)
        if policy.reverse and (found := reverse_zone(address[1], zones)):
            records.append(Record(found[0].id, found[1], "PTR", fqdn, config.ttl))
    return tuple(_first_per_key(records)), tuple(skipped)


def _first_per_key(records: Iterable[Record]) -> Iterator[Record]:
    seen: set[tuple[str, str, str]] = set()
    for record in records:
        if record.key not in seen:
            seen.add(record.key)
            yield record


def plan_changes(wanted: Iterable[OwnedRecord], owned: Iterable[OwnedRecord], in_scope: Callable[[str], bool]) -> Plan:
    """What to write so that Route53 holds `wanted`, touching only `owned` records of in-scope owners.

    `wanted` holds every record every in-scope running instance should have; `owned` is the registry.
    A name owned by someone else stays theirs (a conflict), and when two instances want one free
    name the smaller owner id wins, so the outcome does not depend on the order of events.
    """
    owned_by_key = {entry.record.key: entry for entry in owned}
    wanted_by_key: dict[tuple[str, str, str], list[OwnedRecord]] = defaultdict(list)
    for entry in wanted:
        wanted_by_key[entry.record.key].append(entry)
    claims: list[OwnedRecord] = []
    updates: list[tuple[OwnedRecord, OwnedRecord]] = []
    kept: list[OwnedRecord] = []
    conflicts: list[Conflict] = []
    for key, candidates in sorted(wanted_by_key.items()):
        current = owned_by_key.get(key)
        keeper = next((c for c in candidates if current and c.owner == current.owner), None)
        if current is None:
            keeper = min(candidates, key=lambda entry: entry.owner)
            claims.append(keeper)
        elif keeper is None and in_scope(current.owner):
            # The holder no longer wants the name: hand it over in one compare-and-swap, but only within its
            # account: another account's instance never inherits a name (it is a conflict instead).
            same_account = [c for c in candidates if account_of(c.owner) == account_of(current.owner)]
            keeper = min(same_account, key=lambda entry: entry.owner) if same_account else None
        if current is not None and keeper is not None:
            unchanged = keeper == current and not current.unwritten
            (kept.append(current) if unchanged else updates.append((current, keeper)))
        holder = keeper.owner if keeper else current.owner if current else ""
        conflicts.extend(Conflict(c.record, c.owner, holder) for c in candidates if c is not keeper)
    handed_over = {current.record.key for current, _ in updates}
    deletes = [
        entry
        for key, entry in sorted(owned_by_key.items())
        if in_scope(entry.owner)
        and key not in handed_over
        and not any(c.owner == entry.owner for c in wanted_by_key.get(key, ()))
    ]
    return Plan(tuple(claims), tuple(updates), tuple(deletes), tuple(conflicts), tuple(kept))


def route53_changes(plan: Plan) -> dict[str, list[ChangeTypeDef]]:
    """Route53 changes per zone: UPSERT what opsbots owns or has just claimed, DELETE with exact values."""
    changes: dict[str, list[ChangeTypeDef]] = defaultdict(list)
    for entry in (*plan.claims, *(wanted for _, wanted in plan.updates)):
        changes[entry.record.zone_id].append(_change("UPSERT", entry.record))
    for entry in plan.deletes:
        changes[entry.record.zone_id].append(_change("DELETE", entry.record))
    return dict(changes)


def _change(action: Literal["UPSERT", "DELETE"], record: Record) -> ChangeTypeDef:
    return {
        "Action": action,
        "ResourceRecordSet": {
            "Name": record.name,
            "Type": record.type,
            "TTL": record.ttl,
            "ResourceRecords": [{"Value": record.value}],
        },
    }


def _weight(change: ChangeTypeDef) -> int:
    # Route53 counts an UPSERT twice towards a batch's 1,000 ResourceRecord elements.
    values = len(change["ResourceRecordSet"].get("ResourceRecords", []))
    return values * (2 if change["Action"] == "UPSERT" else 1)


def batches(changes: Sequence[ChangeTypeDef], limit: int = MAX_RECORDS_PER_BATCH) -> Iterator[list[ChangeTypeDef]]:
    """As few change batches as Route53 allows: at most `limit` ResourceRecord elements each."""
    batch: list[ChangeTypeDef] = []
    weight = 0
    for change in changes:
        if batch and weight + _weight(change) > limit:
            yield batch
            batch, weight = [], 0
        batch.append(change)
        weight += _weight(change)
    if batch:
        yield batch


# ---------------------------------------------------------------------------------------------
# Executors.
# ---------------------------------------------------------------------------------------------


class _InstanceModel(BaseModel):
    # Built on first use, not at import: each Lambda function needs only some models (cold start).
    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)
    InstanceId: str
    State: dict[str, Any]
    Tags: list[dict[str, str]] = []
    VpcId: str | None = None
    PrivateIpAddress: str | None = None
    PublicIpAddress: str | None = None
    NetworkInterfaces: list[dict[str, Any]] = []


def instance_from_api(account_id: str, region: str, raw: InstanceTypeDef) -> Instance:
    model = _InstanceModel.model_validate(raw)
    ipv6 = tuple(
        str(ipaddress.ip_address(address["Ipv6Address"]))
        for interface in model.NetworkInterfaces
        for address in interface.get("Ipv6Addresses", [])
    )
    return Instance(
        account_id=account_id,
        region=region,
        instance_id=model.InstanceId,
        state=str(model.State.get("Name", "")),
        tags=tags_of(model.Tags),
        vpc_id=model.VpcId,
        private_ipv4=model.PrivateIpAddress,
        public_ipv4=model.PublicIpAddress,
        ipv6=ipv6,
    )


def describe_instance(ec2: EC2Client, target: Target, instance_id: str) -> Instance | None:
    """The instance as it is now; None when EC2 no longer knows it."""
    try:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except ClientError as error:
        if error_code(error) == "InvalidInstanceID.NotFound":
            return None
        raise
    found = [i for reservation in reservations for i in reservation.get("Instances", [])]
    return instance_from_api(target.account_id, target.region, found[0]) if found else None


def running_instances(ec2: EC2Client, target: Target, policy: DnsPolicy) -> tuple[Instance, ...]:
    filters = [{"Name": "instance-state-name", "Values": [RUNNING]}]
    if policy.select_tag:
        filters.append({"Name": "tag-key", "Values": [policy.select_tag]})
    pages = ec2.get_paginator("describe_instances").paginate(Filters=filters)  # type: ignore[arg-type]
    return tuple(
        instance_from_api(target.account_id, target.region, raw)
        for page in pages
        for reservation in page["Reservations"]
        for raw in reservation.get("Instances", [])
    )


def hosted_zones(route53: Route53Client) -> tuple[HostedZone, ...]:
    zones = []
    for page in route53.get_paginator("list_hosted_zones").paginate():
        for zone in page["HostedZones"]:
            private = bool(zone.get("Config", {}).get("PrivateZone"))
            vpcs = route53.get_hosted_zone(Id=zone["Id"]).get("VPCs", []) if private else []
            zones.append(
                HostedZone(
                    id=zone["Id"].rsplit("/", 1)[-1],
                    name=zone["Name"].lower(),
                    private=private,
                    vpc_ids=frozenset(vpc["VPCId"] for vpc in vpcs if "VPCId" in vpc),
                )
            )
    return tuple(zones)


class Registry:
    """The DynamoDB table of records opsbots wrote: key `record`, index `by-owner` on `owner`."""

    def __init__(self, dynamodb: DynamoDBClient, table: str) -> None:
        self._db = dynamodb
        self._table = table

    def owned_by(self, owner: str) -> tuple[OwnedRecord, ...]:
        pages = self._db.get_paginator("query").paginate(
            TableName=self._table,
            IndexName=OWNER_INDEX,
            KeyConditionExpression="#owner = :owner",
            ExpressionAttributeNames={"#owner": "owner"},
            ExpressionAttributeValues={":owner": {"S": owner}},
        )
        return tuple(_entry(item) for page in pages for item in page.get("Items", []))

    def everything(self) -> tuple[OwnedRecord, ...]:
        """Every record opsbots holds (a name released by its instance, reserved for its account, is not held)."""
        pages = self._db.get_paginator("scan").paginate(TableName=self._table)
        return tuple(_entry(item) for page in pages for item in page.get("Items", []) if "owner" in item)

    def claim(self, entry: OwnedRecord, holder: str | None = None) -> str | None:
        """Take the name if it is free (or already ours), or from `holder` if it still holds it.

        Returns None on success, else whoever holds the name now: the write is conditional, so two
        invocations racing for one name cannot both win.
        """
        try:
            self._db.put_item(**self._claim_request(entry, holder))
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise
            held: Any = error.response.get("Item")
            return _holder(held)
        return None

    def claim_free(self, entries: Sequence[OwnedRecord]) -> dict[tuple[str, str, str], str]:
        """`claim` each of `entries` (free names); returns who holds each name refused."""
        if len(entries) <= TRANSACT_UP_TO:
            return self._transact([(entry, {"Put": self._claim_request(entry, None)}) for entry in entries])
        holders = {entry.record.key: self.claim(entry) for entry in entries}
        return {key: holder for key, holder in holders.items() if holder is not None}

    def release_all(self, entries: Sequence[OwnedRecord]) -> None:
        """Release each of `entries`, records their owners held and no longer do (an entry another owner took is
        left to it): the name stays reserved for the owner's account, so no other account's instance can take
        it while, say, a server is stopped."""
        self._write_all(entries, "Put", self._release_request, self._db.put_item)

    def withdraw_all(self, entries: Sequence[OwnedRecord]) -> None:
        """Drop each of `entries`, claims never written to Route53: the owner never held the name."""
        self._write_all(entries, "Delete", self._withdraw_request, self._db.delete_item)

    def _write_all(
        self,
        entries: Sequence[OwnedRecord],
        action: Literal["Put", "Delete"],
        request: Callable[[OwnedRecord], dict[str, Any]],
        write_one: Callable[..., object],
    ) -> None:
        """One transaction for a few entries; past TRANSACT_UP_TO one conditional write each (a refused one would
        cancel a large transaction whole). An entry another owner took is left to it."""
        if len(entries) <= TRANSACT_UP_TO:
            self._transact([(entry, {action: request(entry)}) for entry in entries])
            return
        for entry in entries:
            with _unless_owned_by_another():
                write_one(**request(entry))

    def _withdraw_request(self, entry: OwnedRecord) -> dict[str, Any]:
        return {
            "TableName": self._table,
            "Key": {"record": {"S": _registry_key(entry.record)}},
            **_owned_by(entry.owner),
        }

    def _claim_request(self, entry: OwnedRecord, holder: str | None) -> dict[str, Any]:
        """Free: never written, already this owner's, or released by an instance of the same account."""
        if holder is not None:
            return {
                "TableName": self._table,
                "Item": _item(entry),
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                **_owned_by(holder),
            }
        return {
            "TableName": self._table,
            "Item": _item(entry),
            "ConditionExpression": (
                "attribute_not_exists(#record) OR #owner = :owner"
                " OR (attribute_not_exists(#owner) AND #account = :account)"
            ),
            "ExpressionAttributeNames": {"#record": "record", "#owner": "owner", "#account": "account"},
            "ExpressionAttributeValues": {":owner": {"S": entry.owner}, ":account": {"S": account_of(entry.owner)}},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }

    def _transact(self, writes: Sequence[tuple[OwnedRecord, dict[str, Any]]]) -> dict[tuple[str, str, str], str]:
        """Send conditional writes in one transaction, all or nothing.

        A write whose condition fails cancels the transaction: it is dropped (its key mapped to who
        holds the name) and the rest sent again. Any other cancellation reason is raised.
        """
        refused: dict[tuple[str, str, str], str] = {}
        batch = list(writes)
        while batch:
            try:
                self._db.transact_write_items(TransactItems=[write for _, write in batch])  # type: ignore[misc]
                break
            except ClientError as error:
                reasons: list[Any] = list(error.response.get("CancellationReasons", []))
                codes = {reason.get("Code", "None") for reason in reasons}
                if len(reasons) != len(batch) or not codes <= {"None", "ConditionalCheckFailed"} or codes == {"None"}:
                    raise
                for (entry, _), reason in zip(batch, reasons, strict=True):
                    if reason.get("Code") == "ConditionalCheckFailed":
                        refused[entry.record.key] = _holder(reason.get("Item"))
                batch = [write for write in batch if write[0].record.key not in refused]
        return refused

    def mark_unwritten(self, entry: OwnedRecord) -> None:
        """Route53 may not hold this claimed record: flag it, so the next plan writes it again."""
        with _unless_owned_by_another():
            self._db.put_item(
                TableName=self._table, Item={**_item(entry), "unwritten": {"BOOL": True}}, **_owned_by(entry.owner)
            )

    def _release_request(self, entry: OwnedRecord) -> dict[str, Any]:
        """The claim's item without owner and record data: the name, reserved for its account since `updated`."""
        reserved = {key: value for key, value in _item(entry).items() if key not in {"owner", "value", "ttl"}}
        return {"TableName": self._table, "Item": reserved, **_owned_by(entry.owner)}


def _owned_by(owner: str) -> dict[str, Any]:
    """The condition that makes a registry write touch only an entry `owner` still holds."""
    return {
        "ConditionExpression": "#owner = :owner",
        "ExpressionAttributeNames": {"#owner": "owner"},
        "ExpressionAttributeValues": {":owner": {"S": owner}},
    }


@contextmanager
def _unless_owned_by_another() -> Iterator[None]:
    """An entry another owner took (or that is gone) is left as it is: that is the condition doing its job."""
    try:
        yield
    except ClientError as error:
        if error_code(error) != "ConditionalCheckFailedException":
            raise


def _holder(item: Mapping[str, Any] | None) -> str:
    """Who holds a name, from the registry item a failed condition returned."""
    found = item or {}
    if "owner" not in found and "account" in found:
        return f"account {found['account']['S']} (its instance released it; names stay with their account)"
    return str(found.get("owner", {}).get("S", "another owner"))


def _registry_key(record: Record) -> str:
    return "|".join(record.key)


def _item(entry: OwnedRecord) -> dict[str, Any]:
    record = entry.record
    return {
        "record": {"S": _registry_key(record)},
        "owner": {"S": entry.owner},
        "account": {"S": account_of(entry.owner)},
        "zone_id": {"S": record.zone_id},
        "name": {"S": record.name},
        "type": {"S": record.type},
        "value": {"S": record.value},
        "ttl": {"N": str(record.ttl)},
        "updated": {"S": datetime.now(UTC).isoformat()},
    }


def _entry(item: Mapping[str, Any]) -> OwnedRecord:
    record = Record(
        zone_id=item["zone_id"]["S"],
        name=item["name"]["S"],
        type=item["type"]["S"],
        value=item["value"]["S"],
        ttl=int(item["ttl"]["N"]),
    )
    return OwnedRecord(record, item["owner"]["S"], unwritten=bool(item.get("unwritten", {}).get("BOOL")))


def _blocks(record: Record, name: str, record_type: str) -> bool:
    """Would an existing (name, type) stop us writing `record`? A CNAME shares its name with nothing."""
    return name.lower() == record.name and (record.type == "CNAME" or record_type in (record.type, "CNAME"))


class ExistingRecords:
    """Answers "does Route53 already hold this name?" for names the registry does not own.

    A few names are looked up one by one; many (a first reconcile) by listing each zone once.
    """

    def __init__(self, route53: Route53Client, claims: Sequence[OwnedRecord]) -> None:
        self._route53 = route53
        self._listed: dict[str, set[tuple[str, str]]] | None = None
        if len(claims) > LIST_ZONES_ABOVE:
            zone_ids = sorted({claim.record.zone_id for claim in claims})
            self._listed = {zone_id: self._list_zone(zone_id) for zone_id in zone_ids}

    def hold(self, record: Record) -> bool:
        if self._listed is not None:
            return any(
                _blocks(record, name, kind) for name, kind in self._listed[record.zone_id] if name == record.name
            )
        # Every type at the name: an A blocks a CNAME although it sorts before it.
        found = self._route53.list_resource_record_sets(
            HostedZoneId=record.zone_id, StartRecordName=record.name, MaxItems=str(TYPES_AT_A_NAME)
        )["ResourceRecordSets"]
        return any(_blocks(record, existing["Name"], existing["Type"]) for existing in found)

    def _list_zone(self, zone_id: str) -> set[tuple[str, str]]:
        pages = self._route53.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone_id)
        return {(entry["Name"].lower(), entry["Type"]) for page in pages for entry in page["ResourceRecordSets"]}


@dataclass
class Outcome:
    added: int = 0
    updated: int = 0
    removed: int = 0
    conflicts: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # aliases and PTRs of a name the instance lost
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "conflicts": self.conflicts,
            "skipped": self.skipped,
            "failures": self.failures,
        }


def apply(plan: Plan, *, route53: Route53Client, registry: Registry) -> Outcome:
    """Claim, then write Route53, then release: a crash leaves a claim (retried) but no stray record.

    A CNAME or PTR is written only if its owner holds the name it points at, so a name lost to a
    conflict never gets aliases or a reverse record pointing at someone else's address.
    """
    outcome = Outcome(conflicts=[_conflict_text(c) for c in plan.conflicts])
    held = {(entry.owner, entry.record.name) for entry in plan.kept if entry.record.type in PRIMARY_TYPES}
    updated = _take_over(plan.updates, held, registry, outcome)
    granted = _claim_free(plan.claims, held, registry, ExistingRecords(route53, plan.claims), outcome)
    sent: set[tuple[str, str, str]] = set()
    try:
        refused = _write(route53, Plan(tuple(granted), tuple(updated), plan.deletes), sent)
    except (ClientError, BotoCoreError):
        _interrupted(sent, granted, updated, plan.deletes, registry)
        raise
    _settle(refused, granted, updated, plan.deletes, registry, outcome)
    return outcome


def _interrupted(
    sent: set[tuple[str, str, str]],
    granted: Sequence[OwnedRecord],
    updated: Sequence[tuple[OwnedRecord, OwnedRecord]],
    deletes: Sequence[OwnedRecord],
    registry: Registry,
) -> None:
    """Route53 failed part-way: what it confirmed is settled, what it did not is flagged to be written again.

    A failed change may still have been made (its answer was lost): writing it again is an UPSERT, safe
    either way, and releasing the claim instead would leave a record opsbots no longer calls its own.
    A DELETE that was not confirmed stays in the registry, so the retry deletes it.
    """
    for entry in (*granted, *(wanted for _, wanted in updated)):
        if entry.record.key not in sent:
            registry.mark_unwritten(entry)
    registry.release_all([entry for entry in deletes if entry.record.key in sent])


def _take_over(
    updates: Iterable[tuple[OwnedRecord, OwnedRecord]], held: set[tuple[str, str]], registry: Registry, outcome: Outcome
) -> list[tuple[OwnedRecord, OwnedRecord]]:
    """Compare-and-swap each owned name to its new value (or new owner); lost races are conflicts."""
    updated = []
    for current, wanted in updates:
        holder = registry.claim(wanted, holder=current.owner)
        if holder is None:
            updated.append((current, wanted))
            held.add((wanted.owner, wanted.record.name))
        else:
            outcome.conflicts.append(_conflict_text(Conflict(wanted.record, wanted.owner, holder)))
    return updated


def _settle(
    refused: Mapping[tuple[str, str, str], str],
    granted: Sequence[OwnedRecord],
    updated: Sequence[tuple[OwnedRecord, OwnedRecord]],
    deletes: Sequence[OwnedRecord],
    registry: Registry,
    outcome: Outcome,
) -> None:
    """Make the registry say what Route53 now holds, and count what really changed.

    A refused claim is not ours to keep, a refused update keeps what Route53 still holds, and a
    refused DELETE means someone changed the record: it is no longer the one opsbots wrote.
    """
    for entry in (*granted, *(wanted for _, wanted in updated), *deletes):
        if entry.record.key in refused:
            outcome.conflicts.append(
                f"{entry.record.name} {entry.record.type}: Route53 refused it: {refused[entry.record.key]}"
            )
    for current, wanted in updated:
        if wanted.record.key in refused:
            registry.claim(current, holder=wanted.owner)
    registry.withdraw_all([entry for entry in granted if entry.record.key in refused])
    registry.release_all(list(deletes))
    outcome.added = sum(entry.record.key not in refused for entry in granted)
    outcome.updated = sum(wanted.record.key not in refused for _, wanted in updated)
    outcome.removed = sum(entry.record.key not in refused for entry in deletes)


def _claim_free(
    claims: Sequence[OwnedRecord],
    held: set[tuple[str, str]],
    registry: Registry,
    existing: ExistingRecords,
    outcome: Outcome,
) -> list[OwnedRecord]:
    """Claim the plan's free names (an event's few in one transaction), then give back what may not be kept.

    Given back: a name Route53 already holds (a record opsbots did not write: checked after the claim,
    so no other invocation can write it meanwhile), and an alias or PTR whose name the instance did
    not get. Adds the names granted to `held`; returns the claims granted.
    """
    wanted_names = held | {(entry.owner, entry.record.name) for entry in claims if entry.record.type in PRIMARY_TYPES}
    asked: list[OwnedRecord] = []
    pointing_elsewhere: list[OwnedRecord] = []
    for entry in claims:
        (asked if _is_primary_or_points_into(entry, wanted_names) else pointing_elsewhere).append(entry)
    refused = registry.claim_free(asked)
    granted, give_back = [], []
    for entry in sorted(asked, key=lambda claim: claim.record.type not in PRIMARY_TYPES):
        holder = refused.get(entry.record.key)
        if holder is None and not _is_primary_or_points_into(entry, held):
            give_back.append(entry)  # its name went to someone else
            outcome.skipped.append(_not_the_instances(entry))
        elif holder is None and existing.hold(entry.record):
            give_back.append(entry)
            outcome.conflicts.append(
                _conflict_text(Conflict(entry.record, entry.owner, "a record opsbots did not write"))
            )
        elif holder is None:
            granted.append(entry)
            held.add((entry.owner, entry.record.name))
        else:
            outcome.conflicts.append(_conflict_text(Conflict(entry.record, entry.owner, holder)))
    outcome.skipped.extend(_not_the_instances(entry) for entry in pointing_elsewhere)
    registry.withdraw_all(give_back)
    return granted


def _is_primary_or_points_into(entry: OwnedRecord, names: set[tuple[str, str]]) -> bool:
    """A CNAME or PTR is written only if its owner holds the name it points at."""
    return entry.record.type in PRIMARY_TYPES or (entry.owner, entry.record.value) in names


def _not_the_instances(entry: OwnedRecord) -> str:
    return f"{entry.record.name} {entry.record.type}: {entry.record.value} is not the instance's"


def write(route53: Route53Client, plan: Plan) -> dict[tuple[str, str, str], str]:
    """Send the plan's changes in batches; returns the changes Route53 refused, with its reason.

    Route53 rejects a whole batch for one bad change (a name someone changed or took meanwhile),
    so a refused batch is retried change by change to keep every good one.
    """
    return _write(route53, plan, set())


def _write(route53: Route53Client, plan: Plan, sent: set[tuple[str, str, str]]) -> dict[tuple[str, str, str], str]:
    """`write`, adding to `sent` the key of each change as Route53 confirms it."""
    refused: dict[tuple[str, str, str], str] = {}
    for zone_id, changes in route53_changes(plan).items():
        for batch in batches(changes):
            for change, reason in _send(route53, zone_id, batch, sent, retry_alone=len(batch) > 1):
                refused[_change_key(zone_id, change)] = reason
    return refused


def _change_key(zone_id: str, change: ChangeTypeDef) -> tuple[str, str, str]:
    record = change["ResourceRecordSet"]
    return (zone_id, record["Name"], record["Type"])


def _send(
    route53: Route53Client,
    zone_id: str,
    batch: list[ChangeTypeDef],
    sent: set[tuple[str, str, str]],
    *,
    retry_alone: bool,
) -> list[tuple[ChangeTypeDef, str]]:
    try:
        route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": batch})
    except ClientError as error:
        if error_code(error) != "InvalidChangeBatch":
            raise
        if not retry_alone:
            return [(batch[0], error_message(error))]
        return [failure for change in batch for failure in _send(route53, zone_id, [change], sent, retry_alone=False)]
    sent.update(_change_key(zone_id, change) for change in batch)
    return []


def _conflict_text(conflict: Conflict) -> str:
    record = conflict.record
    return f"{record.name} {record.type} wanted by {conflict.owner} is held by {conflict.held_by}"


# ---------------------------------------------------------------------------------------------
# Entry points for app.py.
# ---------------------------------------------------------------------------------------------


class ZoneCache:
    """Hosted zones of the home account, listed again after ZONE_CACHE_SECONDS (they rarely change)."""

    def __init__(self, route53: Route53Client, clock: Callable[[], float] = time.monotonic) -> None:
        self._route53 = route53
        self._clock = clock
        self._zones: tuple[HostedZone, ...] | None = None
        self._listed_at = 0.0

    def get(self) -> tuple[HostedZone, ...]:
        if self._zones is None or self._clock() - self._listed_at > ZONE_CACHE_SECONDS:
            self._zones = hosted_zones(self._route53)
            self._listed_at = self._clock()
        return self._zones


@dataclass(frozen=True)
class DnsDeps:
    clients: Clients
    route53: Route53Client
    registry: Registry
    zones: ZoneCache


def handle_state_change(raw: Mapping[str, Any], *, policies: Policies, deps: DnsDeps) -> dict[str, Any]:
    """Make one instance's records match its current state."""
    try:
        change = parse_state_change(raw)
    except SkippedEvent as skipped:
        return skipped.report()
    target = deps.clients.target_for(change.account_id, change.region, policies.accounts, BOT)
    if target is None:
        logger.warning("event from an account opsbots does not manage", extra={"account": change.account_id})
        metrics.add_metric(name="EventsIgnored", unit="Count", value=1)
        return {"event_id": change.event_id, "status": "unmanaged-account"}
    instance = describe_instance(deps.clients.client("ec2", target), target, change.instance_id)
    owner = owner_of(change.account_id, change.region, change.instance_id)
    wanted: tuple[Record, ...] = ()
    if instance is not None and instance.state == RUNNING:
        wanted, reasons = desired_records(instance, policies.dns, deps.zones.get(), _account_key(target))
        for reason in reasons:
            logger.warning("record skipped", extra={"instance": owner, "reason": reason})
    plan = plan_changes((OwnedRecord(r, owner) for r in wanted), deps.registry.owned_by(owner), owner.__eq__)
    outcome = apply(plan, route53=deps.route53, registry=deps.registry)
    _report(outcome)
    state = instance.state if instance else "gone"
    logger.info(
        "dns updated", extra={"instance": owner, "state": state, "event_state": change.state, **outcome.as_dict()}
    )
    return {"event_id": change.event_id, "instance": owner, "state": state, **outcome.as_dict()}


def _account_key(target: Target) -> str:
    """How policies name an account: "home" for the functions' own, else its id."""
    return "home" if target.role_arn is None else target.account_id


def _report(outcome: Outcome) -> None:
    metrics.add_metric(name="RecordsAdded", unit="Count", value=outcome.added)
    metrics.add_metric(name="RecordsUpdated", unit="Count", value=outcome.updated)
    metrics.add_metric(name="RecordsRemoved", unit="Count", value=outcome.removed)
    metrics.add_metric(name="RecordConflicts", unit="Count", value=len(outcome.conflicts))
    for conflict in outcome.conflicts:
        logger.warning("dns conflict: name left to its holder", extra={"conflict": conflict})
    for skipped in outcome.skipped:
        logger.info("dns record skipped: it would point at a name the instance lost", extra={"record": skipped})


def reconcile(*, policies: Policies, deps: DnsDeps) -> dict[str, Any]:
    """Make Route53 match the running instances of every account and region; failed units keep their records."""
    targets = [target for target, _ in deps.clients.units(policies.accounts, BOT)]

    def scan(target: Target) -> tuple[Target, tuple[Instance, ...] | str]:
        try:
            return target, running_instances(deps.clients.client("ec2", target), target, policies.dns)
        except (ClientError, BotoCoreError) as error:
            return target, f"{type(error).__name__}: {error}"

    with ThreadPoolExecutor(max_workers=RECONCILE_THREADS) as pool:
        scanned = list(pool.map(scan, targets))
    zones = deps.zones.get()
    failed = {(t.account_id, t.region) for t, found in scanned if isinstance(found, str)}
    wanted: list[OwnedRecord] = []
    for target, found in scanned:
        for instance in found if not isinstance(found, str) else ():
            records, _skipped = desired_records(instance, policies.dns, zones, _account_key(target))
            wanted.extend(OwnedRecord(record, instance.owner) for record in records)

    def in_scope(owner: str) -> bool:
        """Reached, or no longer managed at all (an account or region taken out of accounts.yml): its records
        go. Only a unit that failed to answer keeps them, until it answers again."""
        account_id, region, _ = owner.split("/", 2)
        return (account_id, region) not in failed

    plan = plan_changes(wanted, deps.registry.everything(), in_scope)
    outcome = apply(plan, route53=deps.route53, registry=deps.registry)
    outcome.failures = [f"{t.account_id}/{t.region}: {found}" for t, found in scanned if isinstance(found, str)]
    _report(outcome)
    metrics.add_metric(name="ReconcileFailures", unit="Count", value=len(outcome.failures))
    logger.info("dns reconciled", extra={"units": len(targets), **outcome.as_dict()})
    return {"units": len(targets), **outcome.as_dict()}
