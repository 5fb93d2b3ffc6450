"""Plain data and pure decisions; no AWS."""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from chalicelib.dns.policy import DnsPolicy, DnsZone
from chalicelib.fanout import RUN_ID, RejectedMessageError
from chalicelib.policy import MemberBot
from chalicelib.triggers import RECONCILE_READY

if TYPE_CHECKING:
    from mypy_boto3_route53.type_defs import ChangeTypeDef


BOT: MemberBot = "dns"  # its role in member accounts
RUNNING = "running"
TERMINATED = "terminated"
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
    before it confirmed the change, so it may not hold the record; the next plan writes it again, after a look
    at what Route53 holds there: nothing, this record, or `previous` (the value it had before an update that
    was interrupted) is opsbots'; anything else is someone else's, and left alone.
    """

    record: Record
    owner: str
    unwritten: bool = field(default=False, compare=False)
    previous: str | None = field(default=None, compare=False)


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


# ----- claim, then check: which claims the instance keeps, decided from the registry's and Route53's answers


class NameHolders(Protocol):
    """Route53, asked whether it already holds a record at a record's name (one the registry does not own)."""

    def hold(self, record: Record) -> bool: ...


@dataclass(frozen=True)
class ClaimVerdict:
    """What becomes of the names a plan claims once the registry and Route53 have answered."""

    granted: tuple[OwnedRecord, ...]  # claimed and free in Route53: to be written
    given_back: tuple[OwnedRecord, ...]  # claimed, but not to be kept: the registry item is withdrawn
    conflicts: tuple[Conflict, ...]
    skipped: tuple[OwnedRecord, ...]  # a CNAME or PTR pointing at a name the instance does not hold
    held: frozenset[tuple[str, str]]  # (owner, name) of every name held after these claims


def points_into(entry: OwnedRecord, names: Set[tuple[str, str]]) -> bool:
    """A CNAME or PTR is written only if its owner holds the name it points at; a primary always may be."""
    return entry.record.type in PRIMARY_TYPES or (entry.owner, entry.record.value) in names


def to_claim(
    claims: Sequence[OwnedRecord], held: Set[tuple[str, str]]
) -> tuple[tuple[OwnedRecord, ...], tuple[OwnedRecord, ...]]:
    """The claims worth asking the registry for, and those pointing at a name their owner will not hold.

    `held` is (owner, name) of the primary names the registry already holds for their owners.
    """
    could_hold = set(held) | {
        (entry.owner, entry.record.name) for entry in claims if entry.record.type in PRIMARY_TYPES
    }
    asked: list[OwnedRecord] = []
    pointing_elsewhere: list[OwnedRecord] = []
    for entry in claims:
        (asked if points_into(entry, could_hold) else pointing_elsewhere).append(entry)
    return tuple(asked), tuple(pointing_elsewhere)


def settle_claims(
    asked: Iterable[OwnedRecord],
    refused: Mapping[tuple[str, str, str], str],
    held: Set[tuple[str, str]],
    route53: NameHolders,
) -> ClaimVerdict:
    """Decide each claim from the registry's answer (`refused`: key -> the holder that kept it), then Route53's.

    Primaries first, so an alias or PTR is kept only if the name it points at was granted. Route53 (its zones
    listed, for a reconcile's many names; an event's few are written with a CREATE, which Route53 itself
    refuses over a record it holds) is asked only about claims the registry granted, after the claim: no other
    invocation can write the name meanwhile, so a record found there is someone else's (a conflict), never one
    of ours half-written.
    """
    held_now = set(held)
    granted: list[OwnedRecord] = []
    given_back: list[OwnedRecord] = []
    conflicts: list[Conflict] = []
    skipped: list[OwnedRecord] = []
    for entry in sorted(asked, key=lambda claim: claim.record.type not in PRIMARY_TYPES):
        holder = refused.get(entry.record.key)
        if holder is not None:
            conflicts.append(Conflict(entry.record, entry.owner, holder))
        elif not points_into(entry, held_now):
            given_back.append(entry)  # the name it points at went to someone else
            skipped.append(entry)
        elif route53.hold(entry.record):
            given_back.append(entry)
            conflicts.append(Conflict(entry.record, entry.owner, "a record opsbots did not write"))
        else:
            granted.append(entry)
            held_now.add((entry.owner, entry.record.name))
    return ClaimVerdict(tuple(granted), tuple(given_back), tuple(conflicts), tuple(skipped), frozenset(held_now))


@dataclass(frozen=True)
class Settlement:
    """What the registry must say once Route53 has taken (or refused) a plan's changes, and what changed."""

    refused: tuple[tuple[OwnedRecord, str], ...]  # each record Route53 refused, with its reason
    restore: tuple[tuple[OwnedRecord, str], ...]  # an update Route53 refused: the registry goes back to it
    withdraw: tuple[OwnedRecord, ...]  # a claim Route53 refused: not ours to keep
    release: tuple[OwnedRecord, ...]  # every delete: done, or refused because the record is no longer ours
    added: int
    updated: int
    removed: int


def after_write(
    refused: Mapping[tuple[str, str, str], str],
    granted: Sequence[OwnedRecord],
    updated: Sequence[tuple[OwnedRecord, OwnedRecord]],
    deletes: Sequence[OwnedRecord],
) -> Settlement:
    """The registry after Route53's answer (`refused`: key -> reason): it must say what Route53 now holds.

    A refused claim is not ours to keep, a refused update keeps what Route53 still holds, and a refused
    DELETE means someone changed the record: it is no longer the one opsbots wrote.
    """
    return Settlement(
        refused=tuple(
            (entry, refused[entry.record.key])
            for entry in (*granted, *(wanted for _, wanted in updated), *deletes)
            if entry.record.key in refused
        ),
        restore=tuple((current, wanted.owner) for current, wanted in updated if wanted.record.key in refused),
        withdraw=tuple(entry for entry in granted if entry.record.key in refused),
        release=tuple(deletes),
        added=sum(entry.record.key not in refused for entry in granted),
        updated=sum(wanted.record.key not in refused for _, wanted in updated),
        removed=sum(entry.record.key not in refused for entry in deletes),
    )


def route53_changes(plan: Plan) -> dict[str, list[ChangeTypeDef]]:
    """Route53 changes per zone: CREATE a name just claimed (Route53 refuses it over a record it already holds:
    someone else's, never overwritten), UPSERT what opsbots owns, DELETE with exact values."""
    changes: dict[str, list[ChangeTypeDef]] = defaultdict(list)
    for entry in plan.claims:
        changes[entry.record.zone_id].append(_change("CREATE", entry.record))
    for _, wanted in plan.updates:
        changes[wanted.record.zone_id].append(_change("UPSERT", wanted.record))
    for entry in plan.deletes:
        changes[entry.record.zone_id].append(_change("DELETE", entry.record))
    return dict(changes)


def after_their_names(granted: Sequence[OwnedRecord]) -> tuple[list[OwnedRecord], list[OwnedRecord]]:
    """The claims to write first, and those to write once Route53 has taken the names they point at: a CNAME or
    PTR whose name is claimed in the same round waits, so that it is never written if Route53 refuses that name."""
    claimed = {(entry.owner, entry.record.name) for entry in granted if entry.record.type in PRIMARY_TYPES}
    waiting = [
        entry
        for entry in granted
        if entry.record.type not in PRIMARY_TYPES and (entry.owner, entry.record.value) in claimed
    ]
    return [entry for entry in granted if entry not in waiting], waiting


def pointing_at_refused(
    waiting: Sequence[OwnedRecord], first: Sequence[OwnedRecord], refused: Set[tuple[str, str, str]]
) -> tuple[list[OwnedRecord], list[OwnedRecord]]:
    """Of the claims that waited: those whose name Route53 refused (given back, never written), and the rest."""
    lost = {(entry.owner, entry.record.name) for entry in first if entry.record.key in refused}
    orphans = [entry for entry in waiting if (entry.owner, entry.record.value) in lost]
    return orphans, [entry for entry in waiting if entry not in orphans]


def _change(action: Literal["CREATE", "UPSERT", "DELETE"], record: Record) -> ChangeTypeDef:
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
    # Route53 counts an UPSERT twice towards a batch's 1,000 ResourceRecord elements (a CREATE or DELETE once).
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


# ----- the reconcile: each account/region scanned (perhaps by a worker of its own), then one plan for the run ----


@dataclass(frozen=True)
class UnitScan:
    """What one account/region's scan found: its running instances, or why it could not be scanned (then its
    records are kept as they are until a scan succeeds)."""

    account_id: str
    region: str
    # The clock when the scan began: a registry entry changed after it was written by an event that knows
    # better than this scan (an instance launched or terminated meanwhile), and the run leaves it alone.
    scanned: datetime
    instances: tuple[Instance, ...] = ()
    error: str | None = None

    @property
    def unit(self) -> str:
        return f"{self.account_id}/{self.region}"


def unit_of(owner: str) -> str:
    """The account/region of an owner ("<account>/<region>/<instance>")."""
    return owner.rsplit("/", 1)[0]


def trimmed(instance: Instance, policy: DnsPolicy) -> Instance:
    """The instance with only the tags the policy reads: what a worker stores of it is small."""
    read = {policy.name_tag, policy.alias_tag, policy.select_tag}
    return replace(instance, tags={key: value for key, value in instance.tags.items() if key in read})


def reconcile_plan(
    scans: Sequence[UnitScan],
    registry: Sequence[OwnedRecord],
    changed: Mapping[tuple[str, str, str], datetime],
    zones: Sequence[HostedZone],
    policy: DnsPolicy,
    *,
    home_account_id: str,
    complete: bool,
) -> Plan:
    """What one reconcile run writes, from every unit's scan and the registry (`changed`: when each of its items,
    held or released, was last written).

    Its scope: a unit scanned is reconciled whole; a unit that failed keeps its records; a unit the run did
    not cover is no longer managed (taken out of accounts.yml), so its records go, but only when the run
    covered the whole fleet (`complete`: a run that could not list the organization covers the accounts
    listed, and an account only the organization knows is not gone). A name whose registry item changed after
    its unit's scan is left as the event that changed it left it.
    """
    scanned_at = {scan.unit: scan.scanned for scan in scans if scan.error is None}
    failed = {scan.unit for scan in scans if scan.error is not None}

    def newer_than_scan(key: tuple[str, str, str], unit: str) -> bool:
        at = changed.get(key)
        return at is not None and unit in scanned_at and at > scanned_at[unit]

    wanted = [
        OwnedRecord(record, instance.owner)
        for scan in scans
        if scan.error is None
        for instance in scan.instances
        for record in desired_records(
            instance, policy, zones, "home" if scan.account_id == home_account_id else scan.account_id
        )[0]
        if not newer_than_scan(record.key, scan.unit)
    ]
    owned = [entry for entry in registry if not newer_than_scan(entry.record.key, unit_of(entry.owner))]

    def in_scope(owner: str) -> bool:
        unit = unit_of(owner)
        return unit not in failed and (unit in scanned_at or complete)

    return plan_changes(wanted, owned, in_scope)


RECONCILE_DELIVERIES = 3  # a unit's deliveries before its dead-letter queue (deploy/resources.json's maxReceiveCount)


def reconcile_ready(run: str) -> dict[str, Any]:
    """What the reconcile's last worker hands the DNS writer: an event in EventBridge's shape, which the writer's
    function reads like the instance events it is woken by (chalicelib/triggers.py's RECONCILE_READY)."""
    return {
        "version": "0",
        "id": f"{run}-ready",
        "source": RECONCILE_READY["source"][0],
        "detail-type": RECONCILE_READY["detail-type"][0],
        "detail": {"run": run},
    }


def ready_run(event: Mapping[str, Any]) -> str:
    """The run a reconcile-ready event names; RejectedMessageError for one that names none validly."""
    detail = event.get("detail")
    run = detail.get("run") if isinstance(detail, Mapping) else None
    if not isinstance(run, str) or RUN_ID.fullmatch(run) is None:
        raise RejectedMessageError(f"run: {run!r} is not valid in a reconcile-ready event")
    return run
