"""An estate in moto (home + one member account, built by the functional tests' `estate` fixture), and what the
tests do in it: groups and rules, the emails sent, a client in the member account, an account that refuses us."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto.ses.models import ses_backends

from chalicelib.aws import Clients
from chalicelib.runtime import current
from chalicelib.settings import POLICIES_DIR
from tests.support.aws import HOME, MEMBER, REGION
from tests.support.faults import Faults, body_names

if TYPE_CHECKING:
    from moto.ses.models import Message
    from mypy_boto3_ec2 import EC2Client

SENDER = "opsbots@example.com"
SANDBOX = "333333333333"


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


def member_client(service: str, account: str = MEMBER) -> Any:
    """A client of another account (the member's unless said), as its own admins would use it."""
    credentials = boto3.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/test-setup", RoleSessionName="test-setup"
    )["Credentials"]
    return boto3.client(  # type: ignore[call-overload]  # any service's client
        service,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


def counting_clients() -> tuple[Clients, list[str]]:
    """Clients whose home-account calls are recorded by operation name, through a botocore hook."""
    calls: list[str] = []
    session = boto3.Session()
    session.events.register("before-call", lambda model, **_: calls.append(model.name))
    return Clients(home_session=session), calls


def add_sandbox_account(policies_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A third account whose role refuses us (AssumeRole answers AccessDenied, every time)."""
    accounts = policies_dir / "accounts.yml"
    accounts.write_text(accounts.read_text() + f'  - id: "{SANDBOX}"\n    name: sandbox\n')
    monkeypatch.setenv(POLICIES_DIR, str(policies_dir))
    current.cache_clear()
    faults = Faults()
    faults.fail("sts", "AssumeRole", "denied", times=None, when=body_names(SANDBOX))
    faults.on(current().clients.client("sts", current().clients.home()))
