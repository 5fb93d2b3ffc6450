"""The bots, declared once: what each is called, which Lambda functions it runs, how they are sized and
what they may call.

Plain data, no imports beyond the standard library, so app.py, the CLI, the tests, the demo and the
bench can all read it for the price of a dataclass. Lists that used to be kept by hand in each of
them are derived from it; tests/test_registry.py checks it against what it cannot generate: app.py's
handlers, .chalice/config.json, and the policy models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

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
            Function("on_security_group_change", "event", 256, 30, _GUARD, once_per_delivery=True),
            Function("sweep_security_groups", "schedule", 512, 300, _GUARD, once_per_delivery=True),
        ),
        emails=True,
        member_calls=_GUARD_EC2,
    ),
    Bot(
        "dns",
        "DnsPolicy",
        (
            Function("on_instance_state_change", "event", 256, 30, (*_DNS, "dynamodb:Query")),  # by the owner index
            Function("reconcile_dns", "schedule", 1024, 600, (*_DNS, "dynamodb:Scan")),  # the whole registry
        ),
        emails=False,
        member_calls=("ec2:DescribeInstances",),  # it reads tags anyone can set: it changes nothing there
    ),
    Bot(
        "snapshots",
        "SnapshotsPolicy",
        (
            Function("take_snapshots", "schedule", 512, 900, (*_SNAPSHOTS, "sqs:SendMessage"), once_per_delivery=True),
            Function("snapshot_worker", "queue", 512, 900, _SNAPSHOTS, once_per_delivery=True),
        ),
        emails=True,
        member_calls=_SNAPSHOT_EC2,
    ),
    Bot(
        "thumbnails",
        "ThumbnailsPolicy",
        (Function("on_image_uploaded", "event", 1769, 60, ("s3:GetObject", "s3:PutObject", "s3:ListBucket")),),
        emails=False,
    ),
)
FUNCTIONS: Final = {function.name: function for bot in BOTS for function in bot.functions}
BOT_NAMED: Final = {bot.name: bot for bot in BOTS}
BOT_OF: Final = {function.name: bot for bot in BOTS for function in bot.functions}
