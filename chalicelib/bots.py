"""The bots, declared once: what each is called, which Lambda functions it runs, how they are sized and
what they may call.

Plain data, no imports beyond the standard library and chalicelib/triggers.py, so app.py, the CLI,
the tests, the demo and the bench can all read it for the price of a dataclass. Lists that used to
be kept by hand in each of them are derived from it; tests/test_registry.py checks it against what
it cannot generate: app.py's handlers, .chalice/config.json, the IAM files and the policy models.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from chalicelib.triggers import (
    INSTANCE_STATE_CHANGE,
    OBJECT_CREATED,
    RECONCILE_READY,
    S3_NOTIFICATION,
    SCHEDULED,
    SECURITY_GROUP_CHANGE,
    matches,
)

Trigger = Literal["event", "schedule", "queue"]


@dataclass(frozen=True)
class Function:
    """One Lambda function: a handler in app.py."""

    name: str  # the handler's name in app.py, and the function's in .chalice/config.json
    trigger: Trigger  # an EventBridge event, a schedule, or an SQS queue (invoked synchronously)
    memory_mb: int  # lambda_memory_size (Lambda's "MB" are MiB)
    timeout_s: int  # lambda_timeout
    calls: tuple[str, ...]  # the IAM actions its bot's code calls at home (the platform's are added by role: below)
    once_per_delivery: bool = False  # uses the run-once table: its emails and scheduled runs happen once
    reserved_concurrency: int | None = None  # at most this many invocations at once (Lambda queues the rest)
    # An event function's patterns (chalicelib/triggers.py): its EventBridge rule (app.py's), then any other
    # shape of event its handler reads. `opsbots simulate` finds the functions an event wakes by them.
    patterns: tuple[Mapping[str, Any], ...] = field(default=(), compare=False)
    # The environment variables naming its bot's own resources, each with the resource in deploy/resources.json
    # it names (deploy/wire_functions.py sets them in the packaged template; the handler reads Settings).
    resources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def event_pattern(self) -> dict[str, Any]:
        """Its EventBridge rule's pattern, as Chalice's `on_cw_event` takes it."""
        if not self.patterns:
            raise ValueError(f"{self.name} is woken by a {self.trigger}, not by an event pattern")
        return dict(self.patterns[0])

    def wakes_on(self, event: object) -> bool:
        """Whether this function would be invoked with `event` (a schedule: with any "Scheduled Event")."""
        patterns = (SCHEDULED,) if self.trigger == "schedule" else self.patterns
        return any(matches(pattern, event) for pattern in patterns)

    @property
    def logical_id(self) -> str:
        """Its resource in the `chalice package` template: on_image_uploaded -> OnImageUploaded."""
        return "".join(part.title() for part in self.name.split("_"))


@dataclass(frozen=True)
class Bot:
    name: str  # its package (chalicelib/<name>/), its policy file's stem (policies/<name>.yml), its member role's key
    policy_model: str  # the class in chalicelib/<name>/policy.py that <name>.yml holds
    functions: tuple[Function, ...]
    emails: bool  # sends notifications (as its policy file's notify sender)
    # What its own role in member accounts allows (deploy/member-role.yml); none: it acts at home only.
    member_calls: tuple[str, ...] = ()
    # Its functions run Pillow: they deploy the zip with the imaging libraries (deploy/package_zips.py), which
    # the others leave out.
    imaging: bool = False

    @property
    def in_member_accounts(self) -> bool:
        return bool(self.member_calls)

    @property
    def module(self) -> str:
        """Its package, which app.py's handlers import on their first event."""
        return f"chalicelib.{self.name}"

    @property
    def policy_module(self) -> str:
        return f"{self.module}.policy"

    @property
    def policy_file(self) -> str:
        return f"{self.name}.yml"


# The environment variables naming the bots' own resources (what each function gets: its `resources`).
DNS_TABLE: Final = "OPSBOTS_DNS_TABLE"  # the DNS bot's registry: what it owns
SNAPSHOT_LEDGER: Final = "OPSBOTS_SNAPSHOT_LEDGER"  # the snapshot bot's ledger: what it owns
SNAPSHOT_QUEUE: Final = "OPSBOTS_SNAPSHOT_QUEUE"  # where the hourly run queues its units (else it runs them)
WEBSITES_TABLE: Final = "OPSBOTS_WEBSITES_TABLE"  # each website check's state: up or down, since when
SWEEP_QUEUE: Final = (
    "OPSBOTS_SWEEP_QUEUE"  # where the hourly sweep queues its account x region units (else it runs them)
)
DNS_RECONCILE_QUEUE: Final = "OPSBOTS_DNS_RECONCILE_QUEUE"  # where the hourly reconcile queues its units
DNS_WRITER: Final = "OPSBOTS_DNS_WRITER"  # the function every Route53 write goes through (a completed run too)
RUNS: Final = "OPSBOTS_RUNS"  # each fanned-out run's units and what each found: what follows the run is built from it

# What each bot's code calls. Every function is also granted what the platform needs, by what it is
# (tests/support/iam.py adds it up): logs and traces; the on-failure queue for an EventBridge function;
# the email ledger for a bot that emails (and its outbox's index for its schedules); the run-once table
# for a schedule or queue function that runs once per delivery; the queue for a queue function.
_GUARD_EC2 = (
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSecurityGroupRules",
    "ec2:GetManagedPrefixListEntries",
    "ec2:RevokeSecurityGroupIngress",
    "ec2:RevokeSecurityGroupEgress",
)
_GUARD = (*_GUARD_EC2, "ses:SendEmail", "sts:AssumeRole", "sts:GetCallerIdentity")
_DNS = (
    "ec2:DescribeInstances",
    "route53:ListHostedZones",
    "route53:GetHostedZone",
    "route53:ListResourceRecordSets",
    "route53:ChangeResourceRecordSets",
    "dynamodb:PutItem",  # the registry
    "dynamodb:DeleteItem",
    "sts:AssumeRole",
    "sts:GetCallerIdentity",
)
_SNAPSHOT_EC2 = (
    "ec2:DescribeVolumes",
    "ec2:DescribeInstances",
    "ec2:DescribeSnapshots",
    "ec2:CreateSnapshot",
    "ec2:CreateSnapshots",
    "ec2:CreateTags",
    "ec2:CopySnapshot",
    "ec2:DeleteSnapshot",
)
_SNAPSHOTS = (
    *_SNAPSHOT_EC2,
    "ses:SendEmail",
    "sts:AssumeRole",
    "sts:GetCallerIdentity",
    "dynamodb:Query",  # the ledger
    "dynamodb:BatchWriteItem",
)

BOTS: Final = (
    Bot(
        "security_groups",
        "SecurityGroupsPolicy",
        (
            Function(
                "on_security_group_change",
                "event",
                256,
                30,
                _GUARD,
                once_per_delivery=True,
                patterns=(SECURITY_GROUP_CHANGE,),
            ),
            Function(
                "sweep_security_groups",
                "schedule",
                512,
                300,
                (*_GUARD, "sqs:SendMessage", "dynamodb:PutItem"),  # with a queue: the units, and the run's record
                once_per_delivery=True,
                resources={SWEEP_QUEUE: "SweepQueue", RUNS: "RunsTable"},
            ),
            Function(
                "sweep_worker",
                "queue",
                512,
                300,
                # the run's record (read; each unit's finding and the count, in one transaction; the digest's
                # claim), and every finding for the digest
                (*_GUARD, "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"),
                once_per_delivery=True,
                resources={RUNS: "RunsTable"},
            ),
        ),
        emails=True,
        member_calls=_GUARD_EC2,
    ),
    Bot(
        "dns",
        "DnsPolicy",
        (
            Function(
                # The DNS writer: every Route53 write goes through it, one invocation at a time (an instance's
                # change, or a reconcile run its last worker hands on), so none competes with another for
                # Route53's five requests a second.
                "on_instance_state_change",
                "event",
                1024,
                600,
                # the instance's records, by the owner index; for a run: the whole registry, and the run's scans
                (*_DNS, "dynamodb:Query", "dynamodb:Scan", "dynamodb:GetItem"),
                patterns=(INSTANCE_STATE_CHANGE, RECONCILE_READY),
                resources={DNS_TABLE: "DnsRegistryTable", RUNS: "RunsTable"},
                reserved_concurrency=1,
            ),
            Function(
                "reconcile_dns",
                "schedule",
                1024,
                600,
                # the whole registry; with a queue: the units, and the run's record
                (*_DNS, "dynamodb:Scan", "sqs:SendMessage"),
                resources={DNS_TABLE: "DnsRegistryTable", DNS_RECONCILE_QUEUE: "DnsReconcileQueue", RUNS: "RunsTable"},
            ),
            Function(
                "dns_reconcile_worker",
                "queue",
                512,
                300,
                # the run's record (read; each unit's scan and the count, in one transaction; the claim of its
                # completion), and the writer the run is handed to
                (
                    "ec2:DescribeInstances",
                    "sts:AssumeRole",
                    "sts:GetCallerIdentity",
                    "dynamodb:GetItem",
                    "dynamodb:PutItem",
                    "dynamodb:UpdateItem",
                    "lambda:InvokeFunction",
                ),
                resources={RUNS: "RunsTable", DNS_WRITER: "OnInstanceStateChange"},
            ),
        ),
        emails=False,
        member_calls=("ec2:DescribeInstances",),  # it reads tags anyone can set: it changes nothing there
    ),
    Bot(
        "snapshots",
        "SnapshotsPolicy",
        (
            Function(
                "take_snapshots",
                "schedule",
                512,
                900,
                (*_SNAPSHOTS, "sqs:SendMessage"),
                once_per_delivery=True,
                resources={SNAPSHOT_QUEUE: "SnapshotQueue", SNAPSHOT_LEDGER: "SnapshotLedgerTable"},
            ),
            Function(
                "snapshot_worker",
                "queue",
                512,
                900,
                _SNAPSHOTS,
                once_per_delivery=True,
                resources={SNAPSHOT_LEDGER: "SnapshotLedgerTable"},
            ),
        ),
        emails=True,
        member_calls=_SNAPSHOT_EC2,
    ),
    Bot(
        "thumbnails",
        "ThumbnailsPolicy",
        (
            Function(
                "on_image_uploaded",
                "event",
                1769,
                60,
                ("s3:GetObject", "s3:PutObject", "s3:ListBucket"),
                patterns=(OBJECT_CREATED, S3_NOTIFICATION),
            ),
        ),
        emails=False,
        imaging=True,
    ),
    Bot(
        "websites",
        "WebsitesPolicy",
        (
            Function(
                "check_websites",
                "schedule",
                512,
                60,
                # its states; its emails; its status page and the history it is drawn from
                (
                    "dynamodb:BatchGetItem",
                    "dynamodb:PutItem",
                    "ses:SendEmail",
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:ListBucket",
                ),
                once_per_delivery=True,
                resources={WEBSITES_TABLE: "WebsiteStateTable"},
            ),
        ),
        emails=True,
    ),
)
FUNCTIONS: Final = {function.name: function for bot in BOTS for function in bot.functions}
BOT_NAMED: Final = {bot.name: bot for bot in BOTS}
BOT_OF: Final = {function.name: bot for bot in BOTS for function in bot.functions}


def operations(service: str) -> frozenset[str]:
    """Every `service` API operation a bot calls, at home or in a member account: the IAM actions its functions and
    member roles are granted, whose names are the operations' (ec2:DescribeVolumes is DescribeVolumes)."""
    granted = [*(call for bot in BOTS for call in bot.member_calls), *(c for f in FUNCTIONS.values() for c in f.calls)]
    return frozenset(call.removeprefix(f"{service}:") for call in granted if call.startswith(f"{service}:"))
