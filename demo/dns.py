"""Chapter: the DNS bot (`on_instance_state_change` and `reconcile_dns`).

The hosted zones live in the home account, where the bots run; the instances run in the member
account, in a VPC the private zones are associated with. Every scene changes EC2 for real in moto
first, then delivers the state-change notification EC2 would have sent (the shape of the recorded
samples, with the real account, instance and time in it) through the real handler, and checks the
outcome against Route53 and the bot's DynamoDB registry as moto holds them, not the handler's word.
"""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import os
import textwrap
import threading
import urllib.request
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from chalicelib.bots import DNS_RECONCILE_QUEUE, DNS_WRITER
from chalicelib.dns.decisions import reconcile_ready
from chalicelib.dns.handlers import dns_deps
from chalicelib.triggers import DNS_RECONCILE_QUEUE_NAME
from demo import show
from demo.environment import MEMBER, REGION, sqs_event
from demo.stage import CLOUDTRAIL_TIME, DNS_TABLE, MEMBER_ROLES, Stage, sample_event

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import TagTypeDef
    from mypy_boto3_route53 import Route53Client
    from mypy_boto3_route53.type_defs import ChangeTypeDef

PRIVATE_ZONE = "internal.example.com."
PUBLIC_ZONE = "example.com."
REVERSE_ZONE = "10.in-addr.arpa."
VPC_CIDR = "10.20.0.0/16"
SUBNET_CIDR = "10.20.1.0/24"
IMAGE = "ami-0d1e2f3a4b5c6d7e8"
SELECT_TAG = "opsbots:dns"  # policies/dns.yml: select_tag
ALIAS_TAG = "opsbots:dns-aliases"  # policies/dns.yml: alias_tag
TTL = 60  # policies/dns.yml: internal.example.com's ttl
MANUAL = ("web.internal.example.com.", "A", "10.9.9.9")  # made by hand before the bot ever ran
BY_HAND = "by hand"
WRITES = {"route53:ChangeResourceRecordSets", "dynamodb:PutItem", "dynamodb:DeleteItem"}


@dataclass(frozen=True, order=True)
class RecordSet:
    """One record set as moto's Route53 holds it."""

    name: str
    type: str
    values: tuple[str, ...]
    ttl: int
    zone: str = field(default="", compare=False)  # the hosted zone's name

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.type)


@dataclass(frozen=True, order=True)
class Claim:
    """One item of the bot's registry: this record was written by opsbots for this owner."""

    name: str
    type: str
    value: str
    owner: str  # account/region/instance-id


@dataclass(frozen=True)
class Machine:
    """An instance the demo started, as EC2 describes it."""

    id: str
    name: str
    private_ip: str
    public_ip: str | None

    @property
    def owner(self) -> str:
        return f"{MEMBER}/{REGION}/{self.id}"

    @property
    def facts(self) -> dict[str, object]:
        return {"name": self.name, "id": self.id, "private_ip": self.private_ip, "public_ip": self.public_ip}

    @property
    def reverse(self) -> str:
        return ipaddress.ip_address(self.private_ip).reverse_pointer + "."


def state_change(instance_id: str, state: str, at: datetime | None = None) -> dict[str, Any]:
    """The notification EC2 sends through EventBridge (shape of ../shared/events/ec2-state-*.json)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "EC2 Instance State-change Notification",
        "source": "aws.ec2",
        "account": MEMBER,
        "time": (at or datetime.now(UTC)).astimezone(UTC).strftime(CLOUDTRAIL_TIME),
        "region": REGION,
        "resources": [f"arn:aws:ec2:{REGION}:{MEMBER}:instance/{instance_id}"],
        "detail": {"instance-id": instance_id, "state": state},
    }


@contextmanager
def bot_calls(function: str) -> Iterator[Counter[str]]:
    """The AWS calls `function`'s clients make meanwhile ("route53:ChangeResourceRecordSets": n); observe only."""
    from chalicelib.aws import HOME, Target
    from chalicelib.runtime import current

    runtime = current().acting_as(function)  # its member sessions are named after it
    clients = runtime.clients
    watched = (
        clients.client("ec2", Target(MEMBER, REGION, MEMBER_ROLES["dns"])),
        clients.client("ec2", Target(HOME, REGION)),
        clients.client("dynamodb", Target(HOME, REGION)),
        clients.client("sts", Target(HOME, clients.home_region)),
        runtime.built(dns_deps).route53,
    )
    seen: Counter[str] = Counter()
    lock = threading.Lock()  # the reconcile scans accounts from a thread pool

    def record(model: Any, **_: Any) -> None:
        with lock:
            seen[f"{model.service_model.service_name}:{model.name}"] += 1

    for client in watched:
        client.meta.events.register("before-call", record)
    try:
        yield seen
    finally:
        for client in watched:
            client.meta.events.unregister("before-call", record)


@contextmanager
def bot_logs() -> Iterator[list[dict[str, Any]]]:
    """The bots' JSON log lines meanwhile, kept out of the timeline and handed back parsed."""
    from chalicelib.observability import logger

    handler = logger.registered_handler
    if not isinstance(handler, logging.StreamHandler):
        yield []
        return
    lines: list[dict[str, Any]] = []
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    try:
        yield lines
    finally:
        handler.setStream(previous)
        for line in buffer.getvalue().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                lines.append({"level": "?", "message": line})


@contextmanager
def deployed_fan_out(stage: Stage) -> Iterator[str]:
    """The reconcile's queue and the DNS writer as the template deploys them (the writer known to moto's Lambda,
    which keeps it without running it: the demo hands the run over itself, as Lambda would); yields the queue."""
    from chalicelib.runtime import current

    request = urllib.request.Request(
        f"{stage.endpoint}/moto-api/config", data=json.dumps({"lambda": {"use_docker": False}}).encode(), method="POST"
    )
    urllib.request.urlopen(request).close()
    queue = stage.sqs.create_queue(QueueName=DNS_RECONCILE_QUEUE_NAME, Attributes={"VisibilityTimeout": "0"})
    iam = stage.home.session.client("iam")
    role = iam.create_role(RoleName="opsbots-dns-writer", AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST))
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("app.py", "")
    writer = stage.home.session.client("lambda").create_function(
        FunctionName="opsbots-demo-on_instance_state_change",
        Runtime="python3.11",
        Role=role["Role"]["Arn"],
        Handler="app.on_instance_state_change",
        Code={"ZipFile": code.getvalue()},
    )["FunctionName"]
    os.environ.update({DNS_RECONCILE_QUEUE: queue["QueueUrl"], DNS_WRITER: writer})
    current.cache_clear()  # the functions' runtime reads the environment again
    try:
        yield queue["QueueUrl"]
    finally:
        for variable in (DNS_RECONCILE_QUEUE, DNS_WRITER):
            os.environ.pop(variable, None)
        current.cache_clear()


LAMBDA_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def received(stage: Stage, queue: str) -> Iterator[dict[str, Any]]:
    """Each message of the queue, as Lambda's SQS poller takes it: received, handed over, deleted."""
    while messages := stage.sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            yield dict(message)
            stage.sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])


def wrapped(text: str, indent: str = "  ") -> str:
    """Text folded to the timeline's width, continuation lines indented."""
    width = show.WIDTH - len(show.MARGIN) - show.STAMP_WIDTH
    return textwrap.fill(text, width, subsequent_indent=indent, break_on_hyphens=False, break_long_words=False)


def answer_facts(answer: Mapping[str, Any]) -> dict[str, object]:
    """What a DNS handler answered, but the event id: counts, skipped, conflicts and failures."""
    return {key: value for key, value in answer.items() if key != "event_id"}


def calls_text(calls: Counter[str]) -> str:
    return ", ".join(f"{call} ({count})" if count > 1 else call for call, count in sorted(calls.items())) or "none"


@dataclass
class DnsChapter:
    stage: Stage
    zones: dict[str, str] = field(default_factory=dict)  # zone name -> hosted zone id
    vpc: str = ""
    subnet: str = ""
    machines: dict[str, Machine] = field(default_factory=dict)  # by Name tag
    first_running: dict[str, Any] | None = None  # scene 2's event, delivered again in scene 4
    last_logs: list[dict[str, Any]] = field(default_factory=list)  # what the bot logged in the last delivery

    def play(self) -> bool:
        scenes: Sequence[tuple[str, Callable[[], bool]]] = (
            ("the zones in the home account, and a record made by hand", self.estate),
            (f"app-1 starts in member account {MEMBER}: its records appear", self.first_instance),
            ("web starts: its name is taken by the record made by hand", self.conflict),
            ("the running event again, then a stale 'stopped' while app-1 still runs", self.duplicates),
            ("app-1 stops, then is terminated", self.stop_and_terminate),
            ("the hourly reconcile finds an instance no event told it about", self.reconcile),
            ("the reconcile as deployed: fanned out per account and region, one writer", self.fanned_out),
            ("a member-account instance with a public address asks for a public name", self.public_name),
        )
        return show.play_scenes("dns", scenes)

    # ----- moto's state -------------------------------------------------------------------------

    @property
    def route53(self) -> Route53Client:
        return self.stage.route53

    @property
    def ec2(self) -> EC2Client:
        return self.stage.member.ec2

    def records(self) -> dict[tuple[str, str], RecordSet]:
        """Every record set of the three zones but each zone's own NS and SOA, by (name, type)."""
        found: dict[tuple[str, str], RecordSet] = {}
        for zone, zone_id in self.zones.items():
            for page in self.route53.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone_id):
                for rrset in page["ResourceRecordSets"]:
                    if rrset["Name"] == zone and rrset["Type"] in {"NS", "SOA"}:
                        continue
                    values = tuple(sorted(r["Value"] for r in rrset.get("ResourceRecords", [])))
                    record = RecordSet(rrset["Name"], rrset["Type"], values, rrset.get("TTL", 0), zone)
                    found[record.key] = record
        return found

    def registry(self) -> set[Claim]:
        """The names opsbots holds (an item without an owner is a name released by its instance, kept for its
        account: not a record)."""
        items = self.stage.dynamodb.get_paginator("scan").paginate(TableName=DNS_TABLE)
        return {
            Claim(item["name"]["S"], item["type"]["S"], item["value"]["S"], item["owner"]["S"])
            for page in items
            for item in page.get("Items", [])
            if "owner" in item
        }

    def reserved(self) -> set[tuple[str, str, str]]:
        """(name, type, account) of the names released by their instances, kept for their account."""
        items = self.stage.dynamodb.get_paginator("scan").paginate(TableName=DNS_TABLE)
        return {
            (item["name"]["S"], item["type"]["S"], item["account"]["S"])
            for page in items
            for item in page.get("Items", [])
            if "owner" not in item
        }

    def record_facts(self, records: Mapping[tuple[str, str], RecordSet]) -> dict[str, dict[str, object]]:
        """The records as the report states them: by zone, then by "name TYPE", their values and ttl."""
        found: dict[str, dict[str, object]] = {zone: {} for zone in self.zones}
        for record in sorted(records.values()):
            found.setdefault(record.zone, {})[f"{record.name} {record.type}"] = {
                "values": record.values,
                "ttl": record.ttl,
            }
        return found

    def registry_facts(self, claims: set[Claim] | None = None) -> dict[str, list[tuple[str, str, str]]]:
        """The registry as the report states it: by instance name, the (name, type, value) claimed for it."""
        found: dict[str, list[tuple[str, str, str]]] = {}
        for claim in sorted(self.registry() if claims is None else claims):
            instance = claim.owner.rsplit("/", 1)[-1]
            name = next((m.name for m in self.machines.values() if m.id == instance), claim.owner)
            found.setdefault(name, []).append((claim.name, claim.type, claim.value))
        return found

    def log_facts(self) -> list[dict[str, object]]:
        return [{key: entry.get(key) for key in ("level", "message", "reason")} for entry in self.last_logs]

    def claims_of(self, machine: Machine) -> set[tuple[str, str, str]]:
        return {(c.name, c.type, c.value) for c in self.registry() if c.owner == machine.owner}

    def who(self, owner: str) -> str:
        instance = owner.rsplit("/", 1)[-1]
        name = next((m.name for m in self.machines.values() if m.id == instance), "?")
        return f"opsbots: {name} {instance}"

    def show_records(self, heading: str = "Route53 now") -> dict[tuple[str, str], RecordSet]:
        records = self.records()
        owners = {(c.name, c.type): self.who(c.owner) for c in self.registry()}
        rows = [
            [r.name, r.type, ", ".join(r.values), f"ttl {r.ttl}", owners.get(r.key, "not in the registry")]
            for r in sorted(records.values())
        ]
        mine = sum(key in owners for key in records)
        show.step(
            f"{heading}: {len(records)} record(s) besides NS/SOA, {mine} of them in the registry {DNS_TABLE}\n"
            + (show.columns(rows) if rows else "  (none)")
        )
        return records

    # ----- acting -------------------------------------------------------------------------------

    def start(self, name: str, tags: Mapping[str, str]) -> Machine:
        tag_list: list[TagTypeDef] = [{"Key": "Name", "Value": name}]
        tag_list += [{"Key": key, "Value": value} for key, value in tags.items()]
        started = self.ec2.run_instances(
            ImageId=IMAGE,
            MinCount=1,
            MaxCount=1,
            InstanceType="t3.micro",
            SubnetId=self.subnet,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list}],
        )["Instances"][0]
        state, public_ip = self.describe(started["InstanceId"])
        machine = Machine(started["InstanceId"], name, started["PrivateIpAddress"], public_ip)
        self.machines[name] = machine
        shown = ", ".join(f"{tag['Key']}={tag['Value']}" for tag in tag_list)
        show.step(
            f"run_instances in {MEMBER}: {machine.id} ({name}), now {state}, in {self.subnet}\n"
            f"tags {shown}\nprivate IPv4 {machine.private_ip}, public IPv4 {machine.public_ip or 'none'}"
        )
        return machine

    def describe(self, instance_id: str) -> tuple[str, str | None]:
        """The instance's state now, and its public IPv4 if it has one."""
        [reservation] = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        instance = reservation["Instances"][0]
        return instance["State"]["Name"], instance.get("PublicIpAddress")

    def deliver(
        self, function: str, event: Mapping[str, Any], what: str, source: str = ""
    ) -> tuple[dict[str, Any], Counter[str]]:
        source = source or ("EventBridge schedule" if function.startswith("reconcile") else "EC2 → EventBridge")
        when = f", time {event['time']}" if "time" in event else ""
        show.step(wrapped(f"{source} invokes {function}: {what} (event {event['id'][:8]}…{when})"))
        with bot_calls(function) as calls, bot_logs() as logs:
            answer = self.stage.invoke(function, event)
        self.last_logs = logs
        shown = {k: v for k, v in answer.items() if k not in {"event_id", "conflicts"}}
        show.step(wrapped(f"{function} answered {shown}"))
        for conflict in answer.get("conflicts", []):
            show.note(wrapped(f"conflict: {conflict}"))
        for entry in logs:
            reason = f" ({entry['reason']})" if "reason" in entry else ""
            show.note(f'the bot logged {entry.get("level")} "{entry.get("message")}"{reason}')
        show.note(wrapped(f"AWS calls by the bot: {calls_text(calls)}"))
        if calls["route53:ListHostedZones"]:
            show.note("(the first DNS invocation of this container lists the hosted zones once and keeps them)")
        return answer, calls

    def expected(self, machine: Machine, aliases: Sequence[str] = ()) -> set[tuple[str, str, str]]:
        """(name, type, value) of the records policies/dns.yml asks for, for a running member-account instance
        (the public zone example.com names only the home account's instances: it lists no `accounts:`)."""
        fqdn = f"{machine.name}.{PRIVATE_ZONE}"
        wanted = {(fqdn, "A", machine.private_ip), (machine.reverse, "PTR", fqdn)}
        wanted |= {(f"{alias}.{PRIVATE_ZONE}", "CNAME", fqdn) for alias in aliases}
        return wanted

    @staticmethod
    def public(records: Mapping[tuple[str, str], RecordSet]) -> list[RecordSet]:
        return [r for r in records.values() if r.name.endswith(PUBLIC_ZONE) and not r.name.endswith(PRIVATE_ZONE)]

    def holds(self, records: Mapping[tuple[str, str], RecordSet], wanted: set[tuple[str, str, str]]) -> bool:
        return all(
            (record := records.get((name, kind))) is not None and record.values == (value,) and record.ttl == TTL
            for name, kind, value in wanted
        )

    # ----- scenes -------------------------------------------------------------------------------

    def estate(self) -> bool:
        ec2 = self.ec2
        self.vpc = ec2.create_vpc(CidrBlock=VPC_CIDR)["Vpc"]["VpcId"]
        self.subnet = ec2.create_subnet(VpcId=self.vpc, CidrBlock=SUBNET_CIDR)["Subnet"]["SubnetId"]
        show.step(f"member account {self.stage.member}: {self.vpc} {VPC_CIDR} and {self.subnet} {SUBNET_CIDR}")
        vpc = {"VPCRegion": REGION, "VPCId": self.vpc}
        for zone, private in ((PRIVATE_ZONE, True), (PUBLIC_ZONE, False), (REVERSE_ZONE, True)):
            created = self.route53.create_hosted_zone(
                Name=zone,
                CallerReference=f"opsbots-demo-{zone}",
                HostedZoneConfig={"Comment": "opsbots demo", "PrivateZone": private},
                **({"VPC": vpc} if private else {}),  # type: ignore[arg-type]
            )["HostedZone"]
            self.zones[zone] = created["Id"].rsplit("/", 1)[-1]
        listed = self.route53.list_hosted_zones()["HostedZones"]
        rows = []
        for hosted in listed:
            private = hosted.get("Config", {}).get("PrivateZone", False)
            vpcs = [v["VPCId"] for v in self.route53.get_hosted_zone(Id=hosted["Id"]).get("VPCs", []) if "VPCId" in v]
            where = f"private, VPC {', '.join(vpcs)} of {MEMBER}" if private else "public"
            rows.append([hosted["Name"], hosted["Id"].rsplit("/", 1)[-1], where])
        show.step(f"Route53 in home account {self.stage.home}: hosted zones\n{show.columns(rows)}")

        name, kind, value = MANUAL
        by_hand: ChangeTypeDef = {
            "Action": "UPSERT",
            "ResourceRecordSet": {"Name": name, "Type": "A", "TTL": 300, "ResourceRecords": [{"Value": value}]},
        }
        self.route53.change_resource_record_sets(
            HostedZoneId=self.zones[PRIVATE_ZONE],
            ChangeBatch={"Comment": "made by hand, long before opsbots", "Changes": [by_hand]},
        )
        show.step(f"someone creates {name} {kind} {value} by hand (UPSERT, ttl 300)")
        records = self.show_records()

        key = "dns.estate"
        checks = show.Checks()
        checks.that(
            sorted(zone["Name"] for zone in listed) == sorted(self.zones),
            f"three hosted zones: {', '.join(self.zones)}",
            f"{[zone['Name'] for zone in listed]}",
            key=f"{key}.zones",
            facts={
                "zones": {
                    zone["Name"]: "private" if zone.get("Config", {}).get("PrivateZone") else "public"
                    for zone in listed
                }
            },
        )
        checks.that(
            records.get(MANUAL[:2]) == RecordSet(name, kind, (value,), 300) and len(records) == 1,
            f"the record made by hand is the only record: {name} {kind} {value}",
            f"{list(records.values())}",
            key=f"{key}.only_the_manual_record",
            facts={"records": self.record_facts(records)},
        )
        registry = self.registry()
        checks.that(
            not registry,
            f"the registry {DNS_TABLE} is empty",
            key=f"{key}.registry_empty",
            facts={"registry": self.registry_facts(registry)},
        )
        return checks.ok

    def first_instance(self) -> bool:
        app1 = self.start("app-1", {SELECT_TAG: "yes", ALIAS_TAG: "api"})
        show.note(
            f"{PUBLIC_ZONE} gets no record: a public zone names only the home account's instances unless it lists\n"
            "more under accounts: (and moto gives instances no public IPv4; scene 7 gives one an Elastic IP)"
        )
        event = state_change(app1.id, "running")
        answer, calls = self.deliver("on_instance_state_change", event, f"{app1.id} is running")
        records = self.show_records()
        wanted = self.expected(app1, ["api"])

        key = "dns.first_instance"
        checks = show.Checks()
        checks.that(
            (answer.get("state"), answer.get("added"), answer.get("conflicts")) == ("running", len(wanted), []),
            f"the handler found app-1 running and added {len(wanted)} records, no conflict",
            f"{answer}",
            key=f"{key}.added",
            facts={"instance": app1.facts, "answer": answer_facts(answer)},
        )
        for name, kind, value in sorted(wanted):
            found = records.get((name, kind))
            checks.that(
                self.holds(records, {(name, kind, value)}),
                f"{kind} {name} → {value}",
                key=f"{key}.record_{kind.lower()}",
                facts={
                    "record": f"{name} {kind}",
                    "wanted": {"values": [value], "ttl": TTL},
                    "found": None if found is None else {"values": found.values, "ttl": found.ttl},
                },
            )
        public = self.public(records)
        checks.that(
            not public,
            f"nothing in {PUBLIC_ZONE}",
            f"{public}",
            key=f"{key}.nothing_public",
            facts={"records": self.record_facts(records)},
        )
        checks.that(
            self.claims_of(app1) == wanted,
            f"the registry holds exactly those {len(wanted)} for {app1.owner}",
            f"{self.claims_of(app1)}",
            key=f"{key}.registry",
            facts={"owner": app1.owner, "registry": self.registry_facts()},
        )
        checks.that(
            records.get(MANUAL[:2]) == RecordSet(*MANUAL[:2], (MANUAL[2],), 300),
            "the record made by hand is unchanged",
            key=f"{key}.manual_record_unchanged",
            facts={"records": self.record_facts(records)},
        )
        checks.that(
            calls["route53:ChangeResourceRecordSets"] == 3,
            "3 Route53 change batches: the new name (a CREATE, which Route53 refuses over someone else's record), "
            "then, once Route53 took it, its alias and its PTR (internal.example.com, 10.in-addr.arpa)",
            f"{calls_text(calls)}",
            key=f"{key}.one_batch_per_zone",
            facts={"aws_calls": dict(calls)},
        )
        self.first_running = event
        return checks.ok

    def conflict(self) -> bool:
        before = self.records()
        registry_before = self.registry()
        web = self.start("web", {SELECT_TAG: "yes"})
        event = state_change(web.id, "running")
        answer, _ = self.deliver("on_instance_state_change", event, f"{web.id} is running")
        records = self.show_records()
        name, kind, value = MANUAL

        key = "dns.conflict"
        registry = self.registry()
        checks = show.Checks()
        checks.that(
            records.get((name, kind)) == before[(name, kind)],
            f"the record made by hand survives unchanged: {name} {kind} {value}",
            f"{records.get((name, kind))}",
            key=f"{key}.manual_record_survives",
            facts={"instance": web.facts, "records": self.record_facts(records)},
        )
        conflicts = answer.get("conflicts", [])
        checks.that(
            len(conflicts) == 1 and conflicts[0].startswith(f"{name} A wanted by {web.owner} is held by"),
            f"the handler reports the conflict on {name}",
            f"{conflicts}",
            key=f"{key}.reported",
            facts={"answer": answer_facts(answer), "bot_logs": self.log_facts()},
        )
        checks.that(
            not any(c.name == name for c in registry),
            f"the registry does not claim {name} for anyone",
            f"{[c for c in registry if c.name == name]}",
            key=f"{key}.name_not_claimed",
            facts={"registry": self.registry_facts(registry)},
        )
        checks.that(
            {c for c in registry if c.owner != web.owner} == registry_before
            and all(records.get(name_type) == record for name_type, record in before.items()),
            "app-1's records and claims are untouched",
            key=f"{key}.others_untouched",
            facts={
                "registry_before": self.registry_facts(registry_before),
                "registry": self.registry_facts(registry),
                "records_before": self.record_facts(before),
                "records": self.record_facts(records),
            },
        )
        written = sorted(self.claims_of(web))
        if written:
            pointer = ", ".join(f"{kind} {name} → {value}" for name, kind, value in written)
            show.note(
                f"besides the conflict, the bot wrote for web: {pointer}\n"
                f"(that name resolves to the record made by hand, {value}, not to web's {web.private_ip})"
            )
        return checks.ok

    def duplicates(self) -> bool:
        key = "dns.duplicates"
        checks = show.Checks()
        if self.first_running is None:
            return checks.that(False, "scene 2 left an event to deliver again", key=f"{key}.first_event")
        app1 = self.machines["app-1"]
        before, registry_before = self.records(), self.registry()
        again, again_calls = self.deliver(
            "on_instance_state_change", self.first_running, f"the same event {app1.id} is running, again"
        )
        after_again, registry_again = self.records(), self.registry()
        show.step(f"Route53 and the registry {'unchanged' if after_again == before else 'CHANGED'}")

        stale_at = datetime.now(UTC) - timedelta(minutes=20)
        stale = state_change(app1.id, "stopped", stale_at)
        show.step(f"app-1 is still {self.describe(app1.id)[0]}: a 'stopped' from a stop 20 minutes ago arrives late")
        late, late_calls = self.deliver("on_instance_state_change", stale, f"{app1.id} stopped (stale)")
        after_late, registry_late = self.records(), self.registry()
        show.step(f"Route53 and the registry {'unchanged' if after_late == before else 'CHANGED'}")

        for label, answer, calls in (("duplicate", again, again_calls), ("stale", late, late_calls)):
            counts = (answer.get("state"), answer.get("added"), answer.get("updated"), answer.get("removed"))
            checks.that(
                counts == ("running", 0, 0, 0) and not WRITES & set(calls),
                f"{label}: decided from app-1's current state (running): nothing added, changed or removed",
                f"{answer}; calls {calls_text(calls)}",
                key=f"{key}.{label}_changes_nothing",
                facts={"answer": answer_facts(answer), "writes": sorted(WRITES & set(calls))},
            )
        checks.that(
            after_again == before == after_late and registry_again == registry_before == registry_late,
            "every record and registry item is exactly as before",
            key=f"{key}.state_as_before",
            facts={
                "records_changed": not after_again == before == after_late,
                "registry_changed": not registry_again == registry_before == registry_late,
                "records": self.record_facts(after_late),
                "registry": self.registry_facts(registry_late),
            },
        )
        return checks.ok

    def stop_and_terminate(self) -> bool:
        app1, web = self.machines["app-1"], self.machines["web"]
        before = self.records()
        others = {key: record for key, record in before.items() if record.key not in self._keys_of(app1)}
        app1_wanted = self.expected(app1, ["api"])

        self.ec2.stop_instances(InstanceIds=[app1.id])
        stopped_state = self.describe(app1.id)[0]
        show.step(f"stop_instances {app1.id}: now {stopped_state}")
        stopped, _ = self.deliver("on_instance_state_change", state_change(app1.id, "stopped"), f"{app1.id} stopped")
        after_stop = self.show_records()
        claims_after_stop = self.claims_of(app1)

        self.ec2.terminate_instances(InstanceIds=[app1.id])
        ended_state = self.describe(app1.id)[0]
        show.step(f"terminate_instances {app1.id}: now {ended_state}")
        ended, ended_calls = self.deliver(
            "on_instance_state_change", state_change(app1.id, "terminated"), f"{app1.id} terminated"
        )
        after_end = self.records()
        show.step(f"Route53 {'unchanged' if after_end == after_stop else 'CHANGED'} by the terminated event")

        key = "dns.stop_and_terminate"
        checks = show.Checks()
        checks.that(
            (stopped_state, stopped.get("state"), stopped.get("removed")) == ("stopped", "stopped", len(app1_wanted)),
            f"the handler found app-1 stopped and removed its {len(app1_wanted)} records",
            f"{stopped}",
            key=f"{key}.stopped_removed",
            facts={"ec2_state": stopped_state, "answer": answer_facts(stopped)},
        )
        reserved = sorted(self.reserved())
        show.step(
            f"the registry keeps app-1's names for account {MEMBER} (released, no owner): no other account's\n"
            "instance can take them, here or ever\n"
            + show.columns([[name, kind, account] for name, kind, account in reserved])
        )
        leftovers = [key for key in after_stop if key in {(name, kind) for name, kind, _ in app1_wanted}]
        checks.that(
            not leftovers and not claims_after_stop,
            "app-1's records and claims are gone",
            f"{leftovers}",
            key=f"{key}.records_and_claims_gone",
            facts={"leftover_records": leftovers, "claims": claims_after_stop},
        )
        checks.that(
            {(name, kind) for name, kind, account in reserved if account == MEMBER}
            >= {(name, kind) for name, kind, _ in app1_wanted},
            f"and its {len(app1_wanted)} names stay reserved for account {MEMBER}",
            f"{reserved}",
            key=f"{key}.names_reserved",
            facts={"reserved": reserved},
        )
        checks.that(
            after_stop == others,
            f"everything else is untouched: the record made by hand, web's {self._list(self.claims_of(web))}",
            f"{sorted(set(others.items()) ^ set(after_stop.items()))}",
            key=f"{key}.others_untouched",
            facts={"records": self.record_facts(after_stop), "registry": self.registry_facts()},
        )
        checks.that(
            (ended_state, ended.get("state"), ended.get("removed"), ended.get("added")) == ("terminated",) * 2 + (0, 0)
            and after_end == after_stop
            and not WRITES & set(ended_calls),
            "terminated: nothing left to remove, nothing else touched",
            f"{ended}; calls {calls_text(ended_calls)}",
            key=f"{key}.terminated_changes_nothing",
            facts={
                "ec2_state": ended_state,
                "answer": answer_facts(ended),
                "writes": sorted(WRITES & set(ended_calls)),
                "records_changed": after_end != after_stop,
            },
        )
        return checks.ok

    def _keys_of(self, machine: Machine) -> set[tuple[str, str]]:
        return {(name, kind) for name, kind, _ in self.claims_of(machine)}

    def reconcile(self) -> bool:
        before, registry_before = self.records(), self.registry()
        db = self.start("db-1", {SELECT_TAG: "yes"})
        batch = self.start("batch-7", {})
        show.step(f"no event reaches the bot; batch-7 lacks the {SELECT_TAG} tag, so it is not the bot's")
        event = sample_event("scheduled-event", {})
        answer, _ = self.deliver("reconcile_dns", event, "every member account and region, and the home account")
        records = self.show_records()
        wanted = self.expected(db)
        registry = self.registry()
        show.step(
            f"counts: {answer.get('units')} account/region unit(s) scanned, added {answer.get('added')}, "
            f"updated {answer.get('updated')}, removed {answer.get('removed')}, "
            f"{len(answer.get('conflicts', []))} conflict(s), {len(answer.get('failures', []))} failure(s);\n"
            f"Route53 holds {len(records)} record(s), {len(registry)} of them in the registry"
        )

        key = "dns.reconcile"
        checks = show.Checks()
        checks.that(
            (answer.get("units"), answer.get("added"), answer.get("removed"), answer.get("failures"))
            == (2, len(wanted), 0, []),
            f"the reconcile reached both accounts and added db-1's {len(wanted)} records, removed none",
            f"{answer}",
            key=f"{key}.counts",
            facts={"answer": answer_facts(answer)},
        )
        checks.that(
            self.holds(records, wanted),
            f"db-1's records are there: {self._list(wanted)}",
            key=f"{key}.records",
            facts={"instance": db.facts, "records": self.record_facts(records)},
        )
        checks.that(
            self.claims_of(db) == wanted,
            "and the registry claims them for db-1",
            f"{self.claims_of(db)}",
            key=f"{key}.registry",
            facts={"owner": db.owner, "registry": self.registry_facts(registry)},
        )
        checks.that(
            not any(batch.private_ip in r.values or r.name.startswith("batch-7.") for r in records.values()),
            f"no record for batch-7 (no {SELECT_TAG} tag)",
            key=f"{key}.untagged_ignored",
            facts={"instance": batch.facts, "records": self.record_facts(records)},
        )
        web = self.machines["web"]
        conflicts = answer.get("conflicts", [])
        checks.that(
            [c.split(" wanted by ")[0] for c in conflicts] == [f"{MANUAL[0]} A"],
            f"the conflict on {MANUAL[0]} is reported again, and it is the only one",
            f"{conflicts}",
            key=f"{key}.conflict_again",
            facts={"conflicts": conflicts, "web": web.facts},
        )
        checks.that(
            all(records.get(name_type) == record for name_type, record in before.items())
            and {c for c in registry if c.owner != db.owner} == registry_before,
            f"the record made by hand and web's records ({self._list(self.claims_of(web))}) are untouched",
            key=f"{key}.others_untouched",
            facts={
                "records_before": self.record_facts(before),
                "registry_before": self.registry_facts(registry_before),
            },
        )
        return checks.ok

    def fanned_out(self) -> bool:
        before, registry_before = self.records(), self.registry()
        cache = self.start("cache-1", {SELECT_TAG: "yes"})
        show.step("no event reaches the bot again; this time the reconcile runs as the template deploys it")
        with deployed_fan_out(self.stage) as queue:
            event = sample_event("scheduled-event", {})
            scheduled, _ = self.deliver("reconcile_dns", event, "records the run, queues one message per unit")
            units: list[dict[str, Any]] = []
            worker_calls: Counter[str] = Counter()
            for message in received(self.stage, queue):
                show.step(wrapped(f"Lambda's SQS poller invokes dns_reconcile_worker with {message['Body']}"))
                with bot_calls("dns_reconcile_worker") as calls:
                    [unit] = self.stage.invoke("dns_reconcile_worker", sqs_event(message, DNS_RECONCILE_QUEUE_NAME))[
                        "units"
                    ]
                worker_calls.update(calls)
                units.append(unit)
                shown = {k: unit[k] for k in ("unit", "instances", "recorded", "handed_to_writer")}
                show.step(wrapped(f"dns_reconcile_worker answered {shown}"))
            show.note(wrapped(f"AWS calls by the workers: {calls_text(worker_calls)}"))
            after_workers = self.records()
            show.step(f"Route53 after the workers: {len(after_workers)} record(s), as before")
            run = str(scheduled.get("run"))
            applied, _ = self.deliver(
                "on_instance_state_change",
                reconcile_ready(run),
                f"the run {run}, as the last worker handed it on",
                source="Lambda (the last worker's asynchronous invocation)",
            )
        records = self.show_records()
        wanted = self.expected(cache)

        key = "dns.fanned_out"
        checks = show.Checks()
        checks.that(
            (scheduled.get("queued"), scheduled.get("complete")) == (2, True),
            "the hourly run recorded itself and queued one message per account/region (home, the member)",
            f"{scheduled}",
            key=f"{key}.queued",
            facts={"answer": answer_facts(scheduled)},
        )
        checks.that(
            sorted(unit["instances"] > 0 for unit in units) == [False, True]
            and [unit["handed_to_writer"] for unit in units].count(True) == 1,
            "each worker scanned its unit (the member's instances, none at home); the last handed the run on",
            f"{units}",
            key=f"{key}.scanned",
            facts={"units": units},
        )
        checks.that(
            not any(call.startswith("route53:") for call in worker_calls) and after_workers == before,
            "the workers wrote nothing to Route53: they only scan (ec2) and store (dynamodb)",
            f"{calls_text(worker_calls)}",
            key=f"{key}.workers_only_scan",
            facts={"aws_calls": dict(worker_calls)},
        )
        checks.that(
            (applied.get("added"), applied.get("removed"), applied.get("failures")) == (len(wanted), 0, [])
            and self.holds(records, wanted)
            and self.claims_of(cache) == wanted,
            f"the writer applied the run: cache-1's {len(wanted)} records, claimed in the registry",
            f"{applied}",
            key=f"{key}.written",
            facts={"answer": answer_facts(applied), "records": self.record_facts(records)},
        )
        checks.that(
            all(records.get(name_type) == record for name_type, record in before.items())
            and {c for c in self.registry() if c.owner != cache.owner} == registry_before,
            "every other record, and the registry, untouched",
            key=f"{key}.others_untouched",
            facts={"records_before": self.record_facts(before)},
        )
        return checks.ok

    def public_name(self) -> bool:
        login = self.start("login", {SELECT_TAG: "yes", ALIAS_TAG: "sso"})
        address = self.ec2.allocate_address(Domain="vpc")
        self.ec2.associate_address(InstanceId=login.id, AllocationId=address["AllocationId"])
        public_ip = self.describe(login.id)[1]
        show.step(
            wrapped(f"associate_address {address['PublicIp']} to {login.id}: public IPv4 now {public_ip or 'none'}")
        )
        show.note(
            wrapped(
                f"login.{PUBLIC_ZONE} and sso.{PUBLIC_ZONE} would be the company's sign-in page, "
                f"named by whoever runs member account {MEMBER}"
            )
        )
        answer, calls = self.deliver(
            "on_instance_state_change", state_change(login.id, "running"), f"{login.id} is running"
        )
        records = self.show_records()
        wanted = self.expected(login, ["sso"])

        key = "dns.public_name"
        checks = show.Checks()
        checks.that(
            (answer.get("added"), answer.get("conflicts")) == (len(wanted), []),
            f"login gets its {len(wanted)} private names ({self._list(wanted)})",
            f"{answer}",
            key=f"{key}.private_names_added",
            facts={"instance": login.facts, "answer": answer_facts(answer)},
        )
        checks.that(
            self.holds(records, wanted) and self.claims_of(login) == wanted,
            "in Route53 and in the registry",
            f"{self.claims_of(login)}",
            key=f"{key}.in_route53_and_registry",
            facts={"records": self.record_facts(records), "registry": self.registry_facts()},
        )
        public = self.public(records)
        checks.that(
            not public and not any(public_ip in r.values for r in records.values() if public_ip),
            f"nothing in {PUBLIC_ZONE}: it lists no accounts:, so it names the home account's instances only",
            f"{public}",
            key=f"{key}.nothing_public",
            facts={"public_ip": public_ip, "records": self.record_facts(records), "bot_logs": self.log_facts()},
        )
        checks.that(
            calls["route53:ChangeResourceRecordSets"] == 3,
            "Route53 changed 3 times, all in the private zones: the name, then its alias and its PTR",
            f"{calls_text(calls)}",
            key=f"{key}.private_zones_only",
            facts={"aws_calls": dict(calls)},
        )
        return checks.ok

    @staticmethod
    def _list(records: set[tuple[str, str, str]]) -> str:
        return ", ".join(f"{kind} {name}" for name, kind, _ in sorted(records)) or "none"


def run(stage: Stage) -> bool:
    return DnsChapter(stage).play()
