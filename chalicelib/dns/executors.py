"""Executors: the only code of this bot that talks to AWS (or, for a dry run, prints)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict

from chalicelib.aws import Target, error_code, error_message, tags_of
from chalicelib.dns.decisions import (
    LIST_ZONES_ABOVE,
    OWNER_INDEX,
    PRIMARY_TYPES,
    RUNNING,
    TRANSACT_UP_TO,
    TYPES_AT_A_NAME,
    Conflict,
    HostedZone,
    Instance,
    OwnedRecord,
    Plan,
    Record,
    Settlement,
    account_of,
    after_their_names,
    after_write,
    batches,
    pointing_at_refused,
    reconcile_ready,
    route53_changes,
    settle_claims,
    to_claim,
)
from chalicelib.dns.policy import DnsPolicy

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import InstanceTypeDef
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_route53 import Route53Client
    from mypy_boto3_route53.type_defs import ChangeTypeDef


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


@dataclass(frozen=True)
class RegistryContents:
    held: tuple[OwnedRecord, ...]
    changed: Mapping[tuple[str, str, str], datetime]


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

    def everything(self) -> RegistryContents:
        """Every record opsbots holds (a name released by its instance, reserved for its account, is not held),
        and when each item, held or released, was last written."""
        pages = self._db.get_paginator("scan").paginate(TableName=self._table)
        items = [item for page in pages for item in page.get("Items", [])]
        return RegistryContents(
            held=tuple(_entry(item) for item in items if "owner" in item),
            changed={
                (item["zone_id"]["S"], item["name"]["S"], item["type"]["S"]): datetime.fromisoformat(
                    item["updated"]["S"]
                )
                for item in items
                if "updated" in item
            },
        )

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

    def mark_unwritten(self, entry: OwnedRecord, *, previous: str | None) -> None:
        """Route53 may not hold this claimed record: flag it, so the next plan writes it again (`previous`: the
        value an interrupted update was replacing, which Route53 may still hold)."""
        flags: dict[str, Any] = {"unwritten": {"BOOL": True}}
        if previous is not None:
            flags["previous"] = {"S": previous}
        with _unless_owned_by_another():
            self._db.put_item(TableName=self._table, Item={**_item(entry), **flags}, **_owned_by(entry.owner))

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
    return OwnedRecord(
        record,
        item["owner"]["S"],
        unwritten=bool(item.get("unwritten", {}).get("BOOL")),
        previous=item.get("previous", {}).get("S"),
    )


def _blocks(record: Record, name: str, record_type: str) -> bool:
    """Would an existing (name, type) stop us writing `record`? A CNAME shares its name with nothing."""
    return name.lower() == record.name and (record.type == "CNAME" or record_type in (record.type, "CNAME"))


class ExistingRecords:
    """Answers "does Route53 already hold this name?" for names the registry does not own, before they are written.

    Many names (a first reconcile) are checked by listing each zone once, so that one batch of CREATEs is not
    refused whole for one name someone holds. A few (an event's) are not looked up at all: each is written with
    a CREATE, which Route53 refuses over a record it holds (a conflict, settled from its answer).
    """

    def __init__(self, route53: Route53Client, claims: Sequence[OwnedRecord]) -> None:
        self._route53 = route53
        self._listed: dict[str, set[tuple[str, str]]] = {}
        if len(claims) > LIST_ZONES_ABOVE:
            zone_ids = sorted({claim.record.zone_id for claim in claims})
            self._listed = {zone_id: self._list_zone(zone_id) for zone_id in zone_ids}

    def hold(self, record: Record) -> bool:
        listed = self._listed.get(record.zone_id, set())
        return any(_blocks(record, name, kind) for name, kind in listed if name == record.name)

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

    A name just claimed is written with a CREATE, which Route53 refuses over a record it holds: that record is
    someone else's, left alone, and the claim given back. A CNAME or PTR is written only if its owner holds the
    name it points at: one pointing at a name claimed in the same round waits for Route53's answer on that
    name, so a name lost to a conflict never gets aliases or a reverse record pointing at someone else's address.
    """
    outcome = Outcome(conflicts=[_conflict_text(c) for c in plan.conflicts])
    held = {(entry.owner, entry.record.name) for entry in plan.kept if entry.record.type in PRIMARY_TYPES}
    updated = _still_ours(route53, _take_over(plan.updates, held, registry, outcome), held, registry, outcome)
    granted = _claim_free(plan.claims, held, registry, ExistingRecords(route53, plan.claims), outcome)
    first, waiting = after_their_names(granted)
    sent: set[tuple[str, str, str]] = set()
    try:
        refused = _write(route53, Plan(tuple(first), tuple(updated), plan.deletes), sent)
        orphans, then = pointing_at_refused(waiting, first, refused.keys())
        registry.withdraw_all(orphans)
        outcome.skipped.extend(_not_the_instances(entry) for entry in orphans)
        refused |= _write(route53, Plan(tuple(then)), sent)
    except (ClientError, BotoCoreError):
        _interrupted(sent, granted, updated, plan.deletes, registry)
        raise
    _settle(after_write(refused, [*first, *then], updated, plan.deletes), registry, outcome)
    return outcome


def _interrupted(
    sent: set[tuple[str, str, str]],
    granted: Sequence[OwnedRecord],
    updated: Sequence[tuple[OwnedRecord, OwnedRecord]],
    deletes: Sequence[OwnedRecord],
    registry: Registry,
) -> None:
    """Route53 failed part-way: what it confirmed is settled, what it did not is flagged to be written again.

    A failed change may still have been made (its answer was lost): the next plan writes it again after a look
    at the name (`_still_ours`), and releasing the claim instead would leave a record opsbots no longer calls
    its own. A DELETE that was not confirmed stays in the registry, so the retry deletes it.
    """
    for entry in granted:
        if entry.record.key not in sent:
            registry.mark_unwritten(entry, previous=None)
    for current, wanted in updated:
        if wanted.record.key not in sent:
            registry.mark_unwritten(wanted, previous=current.previous if current.unwritten else current.record.value)
    registry.release_all([entry for entry in deletes if entry.record.key in sent])


def _still_ours(
    route53: Route53Client,
    updates: Sequence[tuple[OwnedRecord, OwnedRecord]],
    held: set[tuple[str, str]],
    registry: Registry,
    outcome: Outcome,
) -> list[tuple[OwnedRecord, OwnedRecord]]:
    """The updates to write. One of a record whose last write was interrupted is written only if Route53 holds
    nothing at its name, or what opsbots wrote or was writing there; anything else was written by someone else
    meanwhile (or was there when the claim's CREATE went unanswered): a conflict, and the claim given back, with
    any alias or PTR of the owner's that points at that name, and the name taken out of `held` (so no new one
    is claimed for it)."""
    kept, lost = [], set()
    for current, wanted in sorted(updates, key=lambda update: update[1].record.type not in PRIMARY_TYPES):
        if wanted.record.type not in PRIMARY_TYPES and (wanted.owner, wanted.record.value) in lost:
            registry.withdraw_all([wanted])
            outcome.skipped.append(_not_the_instances(wanted))
            continue
        if current.unwritten:
            found = _held_at(route53, wanted.record)
            if found not in (None, wanted.record.value, current.record.value, current.previous):
                registry.withdraw_all([wanted])
                lost.add((wanted.owner, wanted.record.name))
                held.discard((wanted.owner, wanted.record.name))
                outcome.conflicts.append(
                    _conflict_text(Conflict(wanted.record, wanted.owner, "a record opsbots did not write"))
                )
                continue
        kept.append((current, wanted))
    return kept


def _held_at(route53: Route53Client, record: Record) -> str | None:
    """What Route53 holds at the record's name that would stop it being written: its value (a type that blocks
    it: "<type> record"), or None."""
    found = route53.list_resource_record_sets(
        HostedZoneId=record.zone_id, StartRecordName=record.name, MaxItems=str(TYPES_AT_A_NAME)
    )["ResourceRecordSets"]
    for existing in found:
        if _blocks(record, existing["Name"], existing["Type"]):
            if existing["Type"] != record.type:
                return f"{existing['Type']} record"
            values = existing.get("ResourceRecords", [])
            return values[0]["Value"] if values else "an alias"
    return None


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


def _settle(settlement: Settlement, registry: Registry, outcome: Outcome) -> None:
    """Make the registry say what Route53 now holds (decided by `after_write`), and count what really changed."""
    for entry, reason in settlement.refused:
        if entry in settlement.withdraw:  # a CREATE refused: Route53 holds someone else's record at the name
            holder = f"a record opsbots did not write (Route53: {reason})"
            outcome.conflicts.append(_conflict_text(Conflict(entry.record, entry.owner, holder)))
        else:
            outcome.conflicts.append(f"{entry.record.name} {entry.record.type}: Route53 refused it: {reason}")
    for current, holder in settlement.restore:
        registry.claim(current, holder=holder)
    registry.withdraw_all(list(settlement.withdraw))
    registry.release_all(list(settlement.release))
    outcome.added, outcome.updated, outcome.removed = settlement.added, settlement.updated, settlement.removed


def _claim_free(
    claims: Sequence[OwnedRecord],
    held: set[tuple[str, str]],
    registry: Registry,
    existing: ExistingRecords,
    outcome: Outcome,
) -> list[OwnedRecord]:
    """Claim the plan's free names (an event's few in one transaction), then give back what may not be kept.

    Given back (decided by `settle_claims`): a name Route53 already holds (a record opsbots did not write),
    and an alias or PTR whose name the instance did not get. Adds the names granted to `held`; returns the
    claims granted.
    """
    asked, pointing_elsewhere = to_claim(claims, held)
    verdict = settle_claims(asked, registry.claim_free(list(asked)), held, existing)
    outcome.conflicts.extend(_conflict_text(conflict) for conflict in verdict.conflicts)
    outcome.skipped.extend(_not_the_instances(entry) for entry in (*verdict.skipped, *pointing_elsewhere))
    registry.withdraw_all(list(verdict.given_back))
    held |= verdict.held
    return list(verdict.granted)


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


class RunWriter:
    """Hands a completed reconcile run to the DNS writer (`on_instance_state_change`, one at a time: its
    reserved concurrency is 1), asynchronously: Lambda queues it behind the events before it, retries it,
    and parks it in the failed-events queue if it keeps failing. Every Route53 write goes through that
    one function, so none competes with another for Route53's five requests a second."""

    def __init__(self, lambda_client: LambdaClient, function: str) -> None:
        self._lambda = lambda_client
        self._function = function

    def apply(self, run: str) -> None:
        self._lambda.invoke(
            FunctionName=self._function, InvocationType="Event", Payload=json.dumps(reconcile_ready(run)).encode()
        )
