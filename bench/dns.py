"""`python -m bench.dns`: the DNS bot's AWS calls per event and per reconcile, against aws-lambda-ddns-function.

Everything against moto's server (ThreadedMotoServer, in this process: the large estates are built
straight into its backend); the home account only (no member accounts),
one VPC whose DHCP options name the private zone, three hosted zones (public `example.com`, private
`internal.example.com`, private reverse `0.10.in-addr.arpa`), the shipped dns.yml (private and
public A records, PTR; instances selected by the `opsbots:dns` tag; no Name tag, so each record is
named after its instance id).

- events, ours: `chalicelib.dns.handlers.handle_state_change` with a warm container's deps (zones cached,
  account id known) for a running event, then, after the instance is terminated, its terminated
  event; calls counted through `Clients(handlers=...)`;
- events, the peer: aws-lambda-ddns-function's `lambda_handler` call sequence (its union.py), written
  plainly below, for the same three records (the DHCP-options domain gives the private A and the
  PTR, a `ZONE` tag the public A). Its sleeps (60 s before describing a running instance, then up to
  1 s at random) are skipped and reported, not waited for;
- reconcile, ours: `chalicelib.dns.handlers.reconcile` over N running instances (made with `run_instances` in
  batches), first on an empty Route53 and registry, then again with nothing changed (the hourly run).
  The peer has no reconcile.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from bench.common import HOME_ACCOUNT, REGION, RESULTS, Calls, median, ms, reset_moto, verdict
from bench.machine import publish
from chalicelib.aws import BOTO_CONFIG, HOME, Clients, Target
from chalicelib.dns.decisions import Instance, OwnedRecord, Plan, desired_records
from chalicelib.dns.executors import Registry, hosted_zones, write
from chalicelib.dns.handlers import DnsDeps, ZoneCache, handle_state_change, reconcile
from chalicelib.dns.policy import DnsPolicy
from chalicelib.policy import Policies, load_policies
from chalicelib.settings import SHIPPED_POLICIES
from demo.environment import create_table, moto_server

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_route53 import Route53Client

TITLE = "DNS"  # its heading in bench/results/latest.md

TABLE = "opsbots-dns"
PEER_TABLE = "DDNS"  # the table aws-lambda-ddns-function keeps instances in
SELECT_TAG = "opsbots:dns"
PUBLIC_ZONE, PRIVATE_ZONE, REVERSE_ZONE = "example.com", "internal.example.com", "0.10.in-addr.arpa"
CALLS_TARGET = {"running": 6, "terminated": 5}  # issue 19: at most 6 calls per running event, 5 per terminated
ROUTE53_TARGET = 15  # and a reconcile of 5,000 instances in at most 15 Route53 calls
PEER_SLEEP = "60 s + up to 1 s"
MOTO_READ_TIMEOUT = 600
RUN_INSTANCES_DEFAULTS: dict[str, Any] = {
    "instance_type": "m1.small",
    "is_instance_type_default": True,
    "placement": None,
    "placement_hostid": None,
    "region_name": REGION,
    "key_name": None,
    "security_group_ids": [],
    "nics": [],
    "private_ip": None,
    "associate_public_ip": None,
    "ebs_optimized": False,
    "disable_api_stop": False,
    "instance_market_options": {},
    "instance_initiated_shutdown_behavior": None,
    "launch_template": {},
    "hibernation_options": {},
    "iam_instance_profile_name": None,
    "iam_instance_profile_arn": None,
    "monitoring_state": "disabled",
    "ipv6_address_count": None,
    "metadata_options": {},
    "client_token": "ABCDE",
}
BATCH = 500  # instances per run_instances call while building the estate
ACCOUNTS_YML = f"defaults:\n  regions: [{REGION}]\naccounts: []\n"


# ----- the estate ------------------------------------------------------------------------------


@dataclass
class Estate:
    ec2: EC2Client
    route53: Route53Client
    dynamodb: DynamoDBClient
    subnet: str = ""
    vpc: str = ""
    zones: dict[str, str] = field(default_factory=dict)

    def build(self, count: int, tags: Mapping[str, str]) -> list[Instance]:
        """`count` running instances with `tags`, straight into moto's EC2 backend (this process runs the
        server): through the API, moto would spend as long answering RunInstances as DescribeInstances.
        The arguments are those moto's RunInstances handler passes for ImageId, counts, SubnetId and tags."""
        from moto.ec2.models import ec2_backends

        backend = ec2_backends[HOME_ACCOUNT][REGION]
        made = []
        for start in range(0, count, BATCH):
            reservation = backend.run_instances(
                "ami-12345678",
                min(BATCH, count - start),
                None,
                [],
                **{**RUN_INSTANCES_DEFAULTS, "subnet_id": self.subnet, "tags": {"instance": dict(tags)}},
            )
            made += reservation.instances
        return [
            Instance(HOME_ACCOUNT, REGION, i.id, "running", dict(tags), i.vpc_id, i.private_ip, i.public_ip)
            for i in made
        ]

    def launch(self, count: int, tags: Mapping[str, str]) -> list[str]:
        """`count` running instances with `tags`, through RunInstances, in calls of up to BATCH."""
        specification = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        made: list[str] = []
        while len(made) < count:
            size = min(BATCH, count - len(made))
            reservation = self.ec2.run_instances(
                ImageId="ami-12345678",
                MinCount=size,
                MaxCount=size,
                SubnetId=self.subnet,
                TagSpecifications=specification,  # type: ignore[arg-type]
            )
            made += [instance["InstanceId"] for instance in reservation["Instances"]]
        return made

    def records(self) -> int:
        """Records other than SOA and NS across the three zones."""
        paginator = self.route53.get_paginator("list_resource_record_sets")
        return sum(
            record["Type"] not in ("SOA", "NS")
            for zone in self.zones.values()
            for page in paginator.paginate(HostedZoneId=zone)
            for record in page["ResourceRecordSets"]
        )


def build_estate(endpoint: str) -> Estate:
    """Tables, the VPC with its DHCP options, the subnet, the three zones: on an empty moto."""
    reset_moto(endpoint)
    session = boto3.Session(region_name=REGION)
    estate = Estate(session.client("ec2"), session.client("route53"), session.client("dynamodb"))
    _tables(estate.dynamodb)
    estate.vpc = estate.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    options = estate.ec2.create_dhcp_options(DhcpConfigurations=[{"Key": "domain-name", "Values": [PRIVATE_ZONE]}])[
        "DhcpOptions"
    ]["DhcpOptionsId"]
    estate.ec2.associate_dhcp_options(DhcpOptionsId=options, VpcId=estate.vpc)
    estate.subnet = estate.ec2.create_subnet(VpcId=estate.vpc, CidrBlock="10.0.0.0/17")["Subnet"]["SubnetId"]
    estate.ec2.modify_subnet_attribute(SubnetId=estate.subnet, MapPublicIpOnLaunch={"Value": True})
    for name in (PUBLIC_ZONE, PRIVATE_ZONE, REVERSE_ZONE):
        private: dict[str, Any] = {
            "HostedZoneConfig": {"PrivateZone": True},
            "VPC": {"VPCRegion": REGION, "VPCId": estate.vpc},
        }
        zone = estate.route53.create_hosted_zone(
            Name=name, CallerReference=name, **(private if name != PUBLIC_ZONE else {})
        )["HostedZone"]
        estate.zones[name] = zone["Id"].rsplit("/", 1)[-1]
    return estate


def _tables(dynamodb: DynamoDBClient) -> None:
    create_table(dynamodb, "DnsRegistryTable")
    dynamodb.create_table(  # the peer creates it on its first run; here it already exists
        TableName=PEER_TABLE,
        KeySchema=[{"AttributeName": "InstanceId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "InstanceId", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def write_policies(directory: Path) -> Policies:
    for name in ("dns.yml", "security_groups.yml", "snapshots.yml", "thumbnails.yml"):
        shutil.copy(SHIPPED_POLICIES / name, directory / name)
    (directory / "accounts.yml").write_text(ACCOUNTS_YML)
    return load_policies(directory)


def state_event(instance_id: str, state: str) -> dict[str, Any]:
    return {
        "version": "0",
        "id": f"bench-{instance_id}-{state}",
        "detail-type": "EC2 Instance State-change Notification",
        "source": "aws.ec2",
        "account": HOME_ACCOUNT,
        "time": "2026-01-05T08:00:27Z",
        "region": REGION,
        "resources": [f"arn:aws:ec2:{REGION}:{HOME_ACCOUNT}:instance/{instance_id}"],
        "detail": {"instance-id": instance_id, "state": state},
    }


# ----- ours ------------------------------------------------------------------------------------


def our_deps(calls: Calls, config: Config = BOTO_CONFIG) -> DnsDeps:
    """What the runtime builds for the DNS functions, with the counting handler on every session."""
    session = boto3.Session(region_name=REGION)
    clients = Clients(home_session=session, config=config, handlers=[("before-call", calls)])
    home = Target(HOME, REGION)
    route53 = clients.client("route53", home)
    return DnsDeps(clients, route53, Registry(clients.client("dynamodb", home), TABLE), ZoneCache(route53))


@dataclass
class EventRuns:
    """Per event kind: seconds and calls of each event, and the calls by operation over all of them."""

    seconds: dict[str, list[float]] = field(default_factory=lambda: {"running": [], "terminated": []})
    calls: dict[str, list[int]] = field(default_factory=lambda: {"running": [], "terminated": []})
    operations: dict[str, Counter[str]] = field(default_factory=lambda: {"running": Counter(), "terminated": Counter()})

    def add(self, state: str, seconds: float, seen: Counter[str]) -> None:
        self.seconds[state].append(seconds)
        self.calls[state].append(sum(seen.values()))
        self.operations[state].update(seen)


def ours_events(estate: Estate, policies: Policies, events: int) -> EventRuns:
    calls = Calls()
    deps = our_deps(calls)
    [warm] = estate.launch(1, {SELECT_TAG: "yes"})
    handle_state_change(state_event(warm, "running"), policies=policies, deps=deps)  # zones, account id
    runs = EventRuns()
    for instance in estate.launch(events, {SELECT_TAG: "yes"}):
        for state in ("running", "terminated"):
            if state == "terminated":
                estate.ec2.terminate_instances(InstanceIds=[instance])
            calls.take()
            started = time.perf_counter()
            outcome = handle_state_change(state_event(instance, state), policies=policies, deps=deps)
            runs.add(state, time.perf_counter() - started, calls.take())
            changed = outcome["added"] if state == "running" else outcome["removed"]
            if changed != 3 or outcome["conflicts"]:
                raise RuntimeError(f"ours, {state} {instance}: {outcome}")
    return runs


# ----- the peer: aws-lambda-ddns-function, its calls written plainly -----------------------------


class DdnsFunction:
    """aws-lambda-ddns-function's `lambda_handler`: the calls it makes, in its order, without its sleeps.

    Its module-level clients come from one session (a warm container keeps them). On `running` it
    sleeps 60 s (tags arrive late), describes the instance and stores it in its DDNS table; on any
    other state it reads it back. Then the subnet (for the reverse zone's prefix), both DNS
    attributes of the VPC, the hosted zones (listed again for every zone id it looks up), the
    reverse zone's VPCs, a random sleep of up to 1 s, the ZONE tag's public A record, and the
    DHCP options' domain: its private A and PTR records. One UPSERT or DELETE per record.
    """

    def __init__(self, session: boto3.Session) -> None:
        self.route53 = session.client("route53")
        self.ec2 = session.client("ec2")
        self.dynamodb = session.client("dynamodb")

    def handle(self, event: Mapping[str, Any]) -> int:
        """Returns the records written or deleted."""
        state, instance_id = event["detail"]["state"], event["detail"]["instance-id"]
        if PEER_TABLE not in self.dynamodb.list_tables()["TableNames"]:
            raise RuntimeError("the DDNS table is made with the estate")
        instance = self._instance(state, instance_id)
        cidr = self.ec2.describe_subnets(SubnetIds=[instance["SubnetId"]])["Subnets"][0]["CidrBlock"]
        for attribute in ("enableDnsHostnames", "enableDnsSupport"):
            self.ec2.describe_vpc_attribute(VpcId=instance["VpcId"], Attribute=attribute)
        zones = {zone["Name"]: zone for zone in self.route53.list_hosted_zones()["HostedZones"]}
        reverse = _reverse_zone(instance["PrivateIpAddress"], int(cidr.split("/")[1]))
        reverse_id = self._zone_id(reverse)
        self.route53.get_hosted_zone(Id=reverse_id)  # is the instance's VPC associated? (it is)
        action = "UPSERT" if state == "running" else "DELETE"  # time.sleep(random.random()) before: skipped
        changed = 0
        for tag in instance.get("Tags", []):
            zone = zones.get(tag["Value"]) if "ZONE" in tag["Key"].upper() else None
            if zone and not zone["Config"]["PrivateZone"]:
                host = instance["PublicDnsName"].split(".")[0]
                self._change(
                    self._zone_id(zone["Name"]), f"{host}.{zone['Name']}", "A", instance["PublicIpAddress"], action
                )
                changed += 1
        options = self.ec2.describe_vpcs(VpcIds=[instance["VpcId"]])["Vpcs"][0]["DhcpOptionsId"]
        described = self.ec2.describe_dhcp_options(DhcpOptionsIds=[options])["DhcpOptions"][0]["DhcpConfigurations"]
        for domain in (value["Value"] + "." for configuration in described for value in configuration["Values"]):
            if domain in zones and zones[domain]["Config"]["PrivateZone"]:
                zone_id = self._zone_id(domain)
                self.route53.get_hosted_zone(Id=zone_id)  # associated with the VPC? (it is)
                host, address = instance["PrivateDnsName"].split(".")[0], instance["PrivateIpAddress"]
                self._change(zone_id, f"{host}.{domain}", "A", address, action)
                pointer = ".".join(reversed(address.split("."))) + ".in-addr.arpa."
                self._change(reverse_id, pointer, "PTR", instance["PrivateDnsName"], action)
                changed += 2
        if state != "running":
            self.dynamodb.delete_item(TableName=PEER_TABLE, Key={"InstanceId": {"S": instance_id}})
        return changed

    def _instance(self, state: str, instance_id: str) -> dict[str, Any]:
        if state == "running":  # time.sleep(60) before this: skipped
            described = self.ec2.describe_instances(InstanceIds=[instance_id])
            instance: dict[str, Any] = dict(described["Reservations"][0]["Instances"][0])
            attributes = json.dumps(instance, default=str)
            self.dynamodb.put_item(
                TableName=PEER_TABLE, Item={"InstanceId": {"S": instance_id}, "InstanceAttributes": {"S": attributes}}
            )
            return instance
        item = self.dynamodb.get_item(TableName=PEER_TABLE, Key={"InstanceId": {"S": instance_id}})["Item"]
        stored: dict[str, Any] = json.loads(item["InstanceAttributes"]["S"])
        return stored

    def _zone_id(self, name: str) -> str:
        """Its get_zone_id: the zones listed again for every look-up."""
        zones = self.route53.list_hosted_zones()["HostedZones"]
        return next(zone["Id"].split("/")[2] for zone in zones if zone["Name"] == name)

    def _change(self, zone_id: str, name: str, kind: str, value: str, action: str) -> None:
        record = {"Name": name, "Type": kind, "TTL": 60, "ResourceRecords": [{"Value": value}]}
        change = {"Action": action, "ResourceRecordSet": record}
        self.route53.change_resource_record_sets(
            HostedZoneId=zone_id,
            ChangeBatch={"Comment": "Updated by Lambda DDNS", "Changes": [change]},  # type: ignore[list-item]
        )


def _reverse_zone(address: str, mask: int) -> str:
    """Its reverse zone: the first one, two or three octets by the subnet's mask, reversed."""
    octets = address.split(".")[: 3 if mask >= 24 else 2 if mask >= 16 else 1]
    return ".".join(reversed(octets)) + ".in-addr.arpa."


def peer_events(estate: Estate, events: int) -> EventRuns:
    calls = Calls()
    session = boto3.Session(region_name=REGION)
    session.events.register("before-call", calls)
    peer = DdnsFunction(session)
    runs = EventRuns()
    tags = {"ZONE": PUBLIC_ZONE + "."}  # its tag names the zone, trailing dot included
    for instance in estate.launch(events, tags):
        for state in ("running", "terminated"):
            if state == "terminated":
                estate.ec2.terminate_instances(InstanceIds=[instance])
            calls.take()
            started = time.perf_counter()
            changed = peer.handle(state_event(instance, state))
            runs.add(state, time.perf_counter() - started, calls.take())
            if changed != 3:
                raise RuntimeError(f"peer, {state} {instance}: {changed} records")
    return runs


# ----- reconcile -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reconcile:
    instances: int
    run: str  # "first" (empty Route53 and registry) or "steady" (nothing changed since)
    seconds: float
    calls: Counter[str]
    outcome: Mapping[str, Any]

    def service(self, name: str) -> int:
        return sum(count for operation, count in self.calls.items() if operation.startswith(f"{name}:"))


def reconcile_once(instances: int, run: str, policies: Policies) -> Reconcile:
    calls = Calls()
    started = time.perf_counter()
    # A cold container: clients built, zones listed. moto answers one DescribeInstances for thousands of
    # instances (it has no pages) in more than the bot's 15 s read timeout; AWS pages at 1,000.
    deps = our_deps(calls, BOTO_CONFIG.merge(Config(read_timeout=MOTO_READ_TIMEOUT)))
    outcome = reconcile(policies=policies, deps=deps)
    return Reconcile(instances, run, time.perf_counter() - started, calls.take(), outcome)


class BackendTable:
    """Just enough of a DynamoDB client for `Registry.claim`, writing straight into moto's backend (setup)."""

    def put_item(self, *, TableName: str, Item: dict[str, Any], **_: Any) -> None:  # noqa: N803  (boto3 names)
        from moto.dynamodb.models import dynamodb_backends

        dynamodb_backends[HOME_ACCOUNT][REGION].put_item(TableName, Item)


def seed(estate: Estate, instances: Sequence[Instance], policies: Policies) -> None:
    """What a first reconcile leaves behind, made quickly and untimed, through the bot's own planning and
    writers: every record in Route53 (`chalicelib.dns.executors.write`, the real batched calls) and claimed in the
    registry (`Registry.claim`, into moto's backend). The steady run then checks it has nothing to do."""
    zones = hosted_zones(estate.route53)
    claims = [
        OwnedRecord(record, instance.owner)
        for instance in instances
        for record in desired_records(instance, policies.of(DnsPolicy), zones, "home")[0]
    ]
    refused = write(estate.route53, Plan(claims=tuple(claims)))
    if refused:
        raise RuntimeError(f"seeding Route53: {len(refused)} changes refused")
    registry = Registry(BackendTable(), TABLE)  # type: ignore[arg-type]
    for claim in claims:
        registry.claim(claim)


def reconciles(
    policies: Policies, sizes: Sequence[int], first: Sequence[int], steady: Sequence[int], endpoint: str
) -> list[Reconcile]:
    """Per size: a first reconcile (if asked), else the records seeded; then the steady, hourly one (if asked)."""
    done: list[Reconcile] = []
    for size in sizes:
        print(f"  reconcile: building {size:,} instances", flush=True)
        estate = build_estate(endpoint)
        instances = estate.build(size, {SELECT_TAG: "yes"})
        runs = [run for run, wanted in (("first", first), ("steady", steady)) if size in wanted]
        if size not in first:
            seed(estate, instances, policies)
        for run in runs:
            result = reconcile_once(size, run, policies)
            print(f"  reconcile {size:,}, {run}: {result.seconds:.1f} s, {result.calls.total():,} calls", flush=True)
            _check(result, 3 * size if run == "first" else 0)
            done.append(result)
        if estate.records() != 3 * size:
            raise RuntimeError(f"reconcile {size}: {estate.records()} records in Route53, expected {3 * size}")
    return done


def _check(result: Reconcile, added: int) -> None:
    outcome = result.outcome
    changed = (outcome["added"], outcome["updated"], outcome["removed"])
    if changed != (added, 0, 0) or outcome["conflicts"] or outcome["failures"]:
        summary = {key: value[:3] if isinstance(value, list) else value for key, value in outcome.items()}
        raise RuntimeError(f"reconcile {result.instances} {result.run}: {summary}")


# ----- the report ------------------------------------------------------------------------------


def _operations(counter: Mapping[str, int], events: int) -> str:
    return ", ".join(f"{op.split(':')[1]} x{count / events:g}" for op, count in sorted(counter.items()))


def _calls(values: Sequence[int]) -> str:
    return f"{values[0]}" if min(values) == max(values) else f"{median(values):g} ({min(values)}-{max(values)})"


def events_table(ours: EventRuns, peer: EventRuns, events: int) -> list[str]:
    lines = [
        "| event | ours: calls | peer: calls | **peer / ours** | ours: wall time (median) "
        "| peer: wall time (median, its sleeps skipped) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for state in ("running", "terminated"):
        mine, theirs = median(ours.calls[state]), median(peer.calls[state])
        sleeps = f" + {PEER_SLEEP} of sleeps" if state == "running" else " + up to 1 s of sleep"
        lines.append(
            f"| {state} | {_calls(ours.calls[state])} | {_calls(peer.calls[state])} | **{theirs / mine:.1f}x** "
            f"| {ms(median(ours.seconds[state]))} | {ms(median(peer.seconds[state]))}{sleeps} |"
        )
    lines += ["", f"Calls by operation, per event ({events} of each):", "", "| event | ours | peer |", "|---|---|---|"]
    for state in ("running", "terminated"):
        by_ours, by_peer = _operations(ours.operations[state], events), _operations(peer.operations[state], events)
        lines.append(f"| {state} | {by_ours} | {by_peer} |")
    return lines


def reconcile_table(results: Sequence[Reconcile]) -> list[str]:
    lines = [
        "| instances | run | wall time | AWS calls | Route53 | DynamoDB | EC2 | STS | records written |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        written = r.outcome["added"] + r.outcome["updated"] + r.outcome["removed"]
        lines.append(
            f"| {r.instances:,} | {r.run} | {r.seconds:.1f} s | {r.calls.total():,} | {r.service('route53'):,} "
            f"| {r.service('dynamodb'):,} | {r.service('ec2'):,} | {r.service('sts'):,} | {written:,} |"
        )
    lines += ["", "Route53 calls by operation:", ""]
    for r in results:
        route53 = {op: count for op, count in r.calls.items() if op.startswith("route53:")}
        lines.append(f"- {r.instances:,}, {r.run}: {_operations(route53, 1)}")
    return lines


def targets(ours: EventRuns, results: Sequence[Reconcile]) -> list[str]:
    worst = {state: max(ours.calls[state]) for state in ("running", "terminated")}
    lines = [
        f"- <= {CALLS_TARGET[state]} calls per {state} event: {count} ({verdict(count <= CALLS_TARGET[state])})"
        for state, count in worst.items()
    ]
    for r in results:
        if r.instances >= 5000:
            route53 = r.service("route53")
            lines.append(
                f"- reconcile {r.instances:,} ({r.run} run) in <= {ROUTE53_TARGET} Route53 calls: {route53} "
                f"({verdict(route53 <= ROUTE53_TARGET)})"
            )
    return ["Targets:", "", *lines, "", *EVENT_FLOOR]


# What a state-change event cannot go below, whoever handles it.
EVENT_FLOOR = (
    "What bounds a state-change event with three records in three zones: Route53 changes one hosted zone per",
    "call (3), and a running instance must be described (1), so 4 calls before any bookkeeping. Ours adds, for",
    "ownership, one registry read and one registry transaction (all the event's claims or releases): 6 running.",
    "A new name is not looked up first: it is written with a CREATE, which Route53 refuses over a record it",
    "holds (someone else's, left alone). A terminated instance never runs again and only AWS puts an aws.ec2",
    "event on a bus, so that event is taken at its word, without a describe: 5. A repeated event costs 2.",
)


def report(ours: EventRuns, peer: EventRuns, results: Sequence[Reconcile], events: int, seconds: float) -> str:
    lines = [
        "## DNS: AWS calls per event and per reconcile, ours vs aws-lambda-ddns-function",
        "",
        f"- moto's ThreadedMotoServer in the bench's process; home account {HOME_ACCOUNT} only, {REGION}; "
        f"zones {PUBLIC_ZONE} (public), {PRIVATE_ZONE} and {REVERSE_ZONE} (private, the VPC's, whose DHCP "
        f"options name {PRIVATE_ZONE}); three records per instance on both sides: private A, public A, PTR",
        "- ours: `chalicelib.dns.handlers.handle_state_change` with a warm container's deps (zones cached), "
        "shipped dns.yml; `chalicelib.dns.handlers.reconcile` as the hourly schedule runs it, with a fresh "
        "container's deps: a first run on an empty Route53 and registry, and the steady run (nothing changed "
        "since, the hourly case); where no "
        "first run is listed, the records it would leave were seeded untimed through the bot's own `write` and "
        "`Registry.claim`",
        "- peer: aws-lambda-ddns-function's handler, its calls in its order (bench/dns.py `DdnsFunction`): the "
        f"DHCP-options domain for the private A and PTR, a ZONE tag for the public A; its sleeps ({PEER_SLEEP} on "
        "a running event) skipped. It has no reconcile",
        f"- events: {events} instances each side, running then (after TerminateInstances) terminated; "
        f"whole section {seconds:.0f} s",
        "",
        *events_table(ours, peer, events),
        "",
        "Reconcile, ours (the peer has none: an instance whose event was lost keeps or lacks its records for good):",
        "",
        *reconcile_table(results),
        "",
        *targets(ours, results),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="opsbots-dns-") as directory, moto_server() as endpoint:
        policies = write_policies(Path(directory))
        estate = build_estate(endpoint)
        print(f"  events: {arguments.events} instances each side", flush=True)
        ours, peer = ours_events(estate, policies, arguments.events), peer_events(estate, arguments.events)
        results = reconciles(policies, arguments.reconcile, arguments.first, arguments.steady, endpoint)
    text = report(ours, peer, results, arguments.events, time.perf_counter() - started)
    publish(text, arguments.out, "DNS benchmark", "boto3", "moto")
    return 0


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.dns", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10, help="instances per side for the events (default 10)")
    parser.add_argument(
        "--reconcile", type=int, nargs="*", default=[1000, 5000], help="estates to reconcile (default 1000 5000)"
    )
    parser.add_argument(
        "--first",
        type=int,
        nargs="*",
        default=[1000],
        help="estates whose first reconcile (empty Route53) is run; the others are seeded (default 1000)",
    )
    parser.add_argument(
        "--steady",
        type=int,
        nargs="*",
        default=[5000],
        help="estates whose steady reconcile (nothing changed) is run (default 5000)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "dns.md", help="where the markdown goes")
    return parser


if __name__ == "__main__":
    sys.exit(main())
