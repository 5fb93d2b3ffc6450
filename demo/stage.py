"""The estate every chapter plays on: two accounts in moto, the app's Lambda handlers, sample events.

Built after `environment.fake_aws()` and inside `environment.moto_server()`: every client here, and
every client the bots build, talks to moto's HTTP server through `AWS_ENDPOINT_URL`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from chalice.test import Client

from chalicelib import bots, settings
from demo import show
from demo.environment import HOME, MEMBER, REGION, create_table, declared

if TYPE_CHECKING:
    from moto.ses.models import Message
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_route53 import Route53Client
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "tests" / "events"
SAMPLE_HOME = "111111111111"  # the home account the sample events were recorded in
SENDER = "opsbots@example.com"
# policies/accounts.yml's default roles: each bot reaches the member account through its own.
MEMBER_ROLES = {
    "security_groups": f"arn:aws:iam::{MEMBER}:role/opsbots-member-security-groups",
    "dns": f"arn:aws:iam::{MEMBER}:role/opsbots-member-dns",
    "snapshots": f"arn:aws:iam::{MEMBER}:role/opsbots-member-snapshots",
}
EXTERNAL_ID = "opsbots-demo-external-id"
IDEMPOTENCY_TABLE = "opsbots-idempotency"
DNS_TABLE = "opsbots-dns"  # the DNS bot's registry of the records it wrote
DNS_OWNER_INDEX = "by-owner"
SNAPSHOT_LEDGER = "opsbots-snapshot-ledger"  # the snapshots the snapshot bot took: its proof of ownership
WEBSITES_TABLE = "opsbots-websites"  # each website check's state: up or down, since when
CLOUDTRAIL_TIME = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Account:
    """An account as the people working in it see it: their own credentials, their own clients."""

    id: str
    name: str
    session: boto3.Session

    @property
    def ec2(self) -> EC2Client:
        return self.session.client("ec2")

    def other(self, account_id: str, name: str) -> Account:
        """Another account, as its own admins see it (through a set-up role moto lets anyone assume)."""
        credentials = self.session.client("sts").assume_role(
            RoleArn=f"arn:aws:iam::{account_id}:role/demo-setup", RoleSessionName="opsbots-demo-setup"
        )["Credentials"]
        session = boto3.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
            region_name=REGION,
        )
        return Account(account_id, name, session)

    def __str__(self) -> str:
        return f"{self.id} ({self.name})"


@dataclass
class Stage:
    endpoint: str
    home: Account
    member: Account
    lambdas: Any  # chalice.test.TestLambdaClient: the app's handlers, invoked as Lambda would

    def invoke(self, function: str, event: Mapping[str, Any]) -> dict[str, Any]:
        payload: dict[str, Any] = self.lambdas.invoke(function, dict(event)).payload
        return payload

    def emails(self) -> list[Message]:
        """Every email SES accepted in the home account, oldest first (moto keeps the HTML part)."""
        from moto.ses.models import ses_backends

        return list(ses_backends[HOME][REGION].sent_messages)

    @property
    def dynamodb(self) -> DynamoDBClient:
        return self.home.session.client("dynamodb")

    @property
    def route53(self) -> Route53Client:
        return self.home.session.client("route53")

    @property
    def s3(self) -> S3Client:
        return self.home.session.client("s3")

    @property
    def sqs(self) -> SQSClient:
        return self.home.session.client("sqs")


FUNCTION_IDS = frozenset(function.logical_id for function in bots.FUNCTIONS.values())


def build(endpoint: str) -> Stage:
    """Accounts, the SES sender, the run-once table and every bot's own tables, and the app wired to them."""
    home = Account(HOME, "home", boto3.Session(region_name=REGION))
    member = home.other(MEMBER, "workloads")
    home.session.client("sesv2").create_email_identity(EmailIdentity=SENDER)
    create_table(home.session.client("dynamodb"), "IdempotencyTable")
    os.environ.update({settings.IDEMPOTENCY_TABLE: IDEMPOTENCY_TABLE, settings.EXTERNAL_ID: EXTERNAL_ID})
    # Each bot's own tables, as the registry names them for its functions (a queue: the snapshot chapter's own;
    # a function: the DNS writer, which the DNS chapter's fanned-out scene makes)
    for variable, resource in {
        variable: resource for function in bots.FUNCTIONS.values() for variable, resource in function.resources.items()
    }.items():
        if resource not in FUNCTION_IDS and declared(resource)["Type"] == "AWS::DynamoDB::Table":
            os.environ[variable] = create_table(home.session.client("dynamodb"), resource)

    from app import app
    from chalicelib.runtime import current

    current.cache_clear()  # the container's runtime re-reads the environment set above
    lambdas = Client(app, stage_name="dev", project_dir=str(ROOT)).lambda_
    return Stage(endpoint, home, member, lambdas)


def introduce(stage: Stage) -> None:
    show.step(f"moto's HTTP server listening on {stage.endpoint} (AWS_ENDPOINT_URL)")
    show.note(
        f"home account {stage.home}: the Lambda's own; SES sender {SENDER} verified;\n"
        f"  DynamoDB table {IDEMPOTENCY_TABLE} (key id) for run-once delivery,\n"
        f"  DynamoDB table {DNS_TABLE} (key record, index {DNS_OWNER_INDEX}) for the DNS bot's registry,\n"
        f"  DynamoDB table {SNAPSHOT_LEDGER} (key scope, snapshot) for the snapshot bot's ledger,\n"
        f"  DynamoDB table {WEBSITES_TABLE} (key check) for the website checks' states\n"
        f"member account {stage.member}: each bot reaches it through its own role, with ExternalId {EXTERNAL_ID}:\n"
        f"  {', '.join(arn.rsplit('/', 1)[1] for arn in MEMBER_ROLES.values())}\n"
        "handlers: app.py through chalice.test.Client(stage 'dev'), the way Lambda invokes them"
    )


def sample_event(name: str, replacements: Mapping[str, str], at: datetime | None = None) -> dict[str, Any]:
    """A recorded sample made real: our home account and real ids swapped in, timed `at` (UTC).

    Raises if the sample no longer contains an id the demo means to replace, so a changed sample
    fails loudly instead of replaying an event about resources that do not exist.
    """
    text = (EVENTS / f"{name}.json").read_text().replace(SAMPLE_HOME, HOME)
    for old, new in replacements.items():
        if old not in text:
            raise ValueError(f"tests/events/{name}.json no longer contains {old}")
        text = text.replace(old, new)
    event: dict[str, Any] = json.loads(text)
    stamp = (at or datetime.now(UTC)).astimezone(UTC).strftime(CLOUDTRAIL_TIME)
    event["time"] = stamp
    if "eventTime" in event.get("detail", {}):
        event["detail"]["eventTime"] = stamp
    return event


@contextmanager
def own_policies() -> Iterator[None]:
    """A chapter that reads policies of its own (`read_policies`): afterwards the runtime reads those it read
    before, as a new container would."""
    previous = os.environ.get(settings.POLICIES_DIR)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(settings.POLICIES_DIR, None)
        else:
            os.environ[settings.POLICIES_DIR] = previous
        from chalicelib.runtime import current

        current.cache_clear()


def read_policies(folder: Path) -> None:
    """The functions read their policies from `folder`, from their next invocation on (a new container)."""
    from chalicelib.runtime import current

    os.environ[settings.POLICIES_DIR] = str(folder)
    current.cache_clear()
