"""An estate in moto (home + one member account), and the Chalice test client over the real app."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from chalice.test import Client
from moto import mock_aws
from moto.ses.models import ses_backends

from chalicelib.aws import Clients
from chalicelib.observability import metrics
from chalicelib.settings import DNS_TABLE, IDEMPOTENCY_TABLE, SNAPSHOT_LEDGER
from demo.environment import create_table
from tests.conftest import HOME, MEMBER, REGION, ROOT

if TYPE_CHECKING:
    from moto.ses.models import Message
    from mypy_boto3_ec2 import EC2Client

SENDER = "opsbots@example.com"


@dataclass
class Estate:
    home_ec2: EC2Client
    member_ec2: EC2Client

    def group(self, ec2: EC2Client | None = None, tags: dict[str, str] | None = None) -> str:
        ec2 = ec2 or self.home_ec2
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        group = ec2.create_security_group(GroupName=f"g-{vpc}", Description="test", VpcId=vpc)["GroupId"]
        if tags:
            ec2.create_tags(Resources=[group], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
        return group

    def authorize(
        self, group: str, permissions: list[Any], ec2: EC2Client | None = None, egress: bool = False
    ) -> list[str]:
        ec2 = ec2 or self.home_ec2
        call = ec2.authorize_security_group_egress if egress else ec2.authorize_security_group_ingress
        return [
            rule["SecurityGroupRuleId"] for rule in call(GroupId=group, IpPermissions=permissions)["SecurityGroupRules"]
        ]

    def rule_ids(self, group: str, ec2: EC2Client | None = None) -> set[str]:
        rules = (ec2 or self.home_ec2).describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group]}])
        return {rule["SecurityGroupRuleId"] for rule in rules["SecurityGroupRules"]}


def tcp(port: int, cidr: str = "0.0.0.0/0", description: str = "") -> dict[str, Any]:
    ranges = (
        {"Ipv6Ranges": [{"CidrIpv6": cidr}]}
        if ":" in cidr
        else {"IpRanges": [{"CidrIp": cidr, "Description": description}]}
    )
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, **ranges}


def sent_emails() -> list[Message]:
    return list(ses_backends[HOME][REGION].sent_messages)


def member_client(service: str) -> Any:
    credentials = boto3.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{MEMBER}:role/test-setup", RoleSessionName="test-setup"
    )["Credentials"]
    return boto3.client(
        service,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


class LambdaContext:
    """The parts of Lambda's context object the run-once guard reads."""

    function_name = "opsbots-test"
    aws_request_id = "c0ffee00-0000-4000-8000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def counting_clients() -> tuple[Clients, list[str]]:
    """Clients whose home-account calls are recorded by operation name, through a botocore hook."""
    calls: list[str] = []
    session = boto3.Session()
    session.events.register("before-call", lambda model, **_: calls.append(model.name))
    return Clients(home_session=session), calls


@pytest.fixture
def estate(fresh_runtime: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Estate]:
    with mock_aws():
        boto3.client("sesv2").create_email_identity(EmailIdentity=SENDER)
        monkeypatch.setenv(SNAPSHOT_LEDGER, create_table(boto3.client("dynamodb"), "SnapshotLedgerTable"))
        yield Estate(home_ec2=boto3.client("ec2"), member_ec2=member_client("ec2"))


@pytest.fixture
def idempotency_table(estate: Estate, monkeypatch: pytest.MonkeyPatch) -> str:
    table = create_table(boto3.client("dynamodb"), "IdempotencyTable")
    monkeypatch.setenv(IDEMPOTENCY_TABLE, table)
    return table


@pytest.fixture
def dns_registry(estate: Estate, monkeypatch: pytest.MonkeyPatch) -> str:
    table = create_table(boto3.client("dynamodb"), "DnsRegistryTable")
    monkeypatch.setenv(DNS_TABLE, table)
    return table


@pytest.fixture
def lambdas(estate: Estate) -> Iterator[Any]:
    from app import app

    with Client(app, stage_name="dev", project_dir=str(ROOT)) as client:
        yield client.lambda_


@dataclass
class Emitted:
    """Metrics the bots emitted: flushed by the Lambda middleware (EMF lines on stdout) or still buffered."""

    capsys: pytest.CaptureFixture[str]
    flushed: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, name: str) -> float:
        out = self.capsys.readouterr().out
        self.flushed += [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]
        values = [line.get(name, []) for line in self.flushed]
        flushed = sum(sum(v) if isinstance(v, list) else v for v in values)
        return float(flushed + sum(metrics.metric_set.get(name, {}).get("Value", [])))


@pytest.fixture
def emitted(capsys: pytest.CaptureFixture[str]) -> Iterator[Emitted]:
    metrics.clear_metrics()
    yield Emitted(capsys)
    metrics.clear_metrics()
