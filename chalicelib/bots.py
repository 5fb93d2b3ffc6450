"""The bots, declared once: what each is called, which Lambda functions it runs and how they are sized.

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
    once_per_delivery: bool = False  # uses the run-once table: its emails and scheduled runs happen once

    @property
    def logical_id(self) -> str:
        """Its resource in the `chalice package` template: on_image_uploaded -> OnImageUploaded."""
        return "".join(part.title() for part in self.name.split("_"))


@dataclass(frozen=True)
class Bot:
    name: str  # its policy file's stem (policies/<name>.yml), and its role's key in member accounts
    module: str  # its code, which app.py's handlers import on their first event
    functions: tuple[Function, ...]
    emails: bool  # sends notifications (as its policy file's notify sender)
    in_member_accounts: bool  # acts in member accounts through its own role (deploy/member-role.yml)

    @property
    def policy_file(self) -> str:
        return f"{self.name}.yml"


BOTS: Final = (
    Bot(
        "security_groups",
        "chalicelib.sg_guard",
        (
            Function("on_security_group_change", "event", 256, 30, once_per_delivery=True),
            Function("sweep_security_groups", "schedule", 512, 300, once_per_delivery=True),
        ),
        emails=True,
        in_member_accounts=True,
    ),
    Bot(
        "dns",
        "chalicelib.dns",
        (
            Function("on_instance_state_change", "event", 256, 30),
            Function("reconcile_dns", "schedule", 1024, 600),
        ),
        emails=False,
        in_member_accounts=True,
    ),
    Bot(
        "snapshots",
        "chalicelib.snapshots",
        (
            Function("take_snapshots", "schedule", 512, 900, once_per_delivery=True),
            Function("snapshot_worker", "queue", 512, 900, once_per_delivery=True),
        ),
        emails=True,
        in_member_accounts=True,
    ),
    Bot(
        "thumbnails",
        "chalicelib.thumbnails",
        (Function("on_image_uploaded", "event", 1769, 60),),
        emails=False,
        in_member_accounts=False,
    ),
)
FUNCTIONS: Final = {function.name: function for bot in BOTS for function in bot.functions}
BOT_OF: Final = {function.name: bot for bot in BOTS for function in bot.functions}
