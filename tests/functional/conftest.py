"""An estate in moto (home + one member account), and the Chalice test client over the real app."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from chalice.test import Client
from moto import mock_aws

from chalicelib.bots import DNS_TABLE, SNAPSHOT_LEDGER
from chalicelib.observability import metrics
from chalicelib.settings import IDEMPOTENCY_TABLE
from demo.environment import create_table
from tests.support.aws import ROOT
from tests.support.dns import MOTO_LAMBDA, Network, public_subnet, zones
from tests.support.estate import SENDER, Estate, member_client
from tests.support.lambdas import Emitted


@pytest.fixture
def estate(fresh_runtime: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Estate]:
    with mock_aws(config=MOTO_LAMBDA):
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
def network(estate: Estate, dns_registry: str) -> Network:
    """The DNS estate: a VPC with a public subnet in each account, the zones, and the registry table."""
    home_vpc, home_subnet = public_subnet(estate.home_ec2, "10.0.0.0/16")
    member_vpc, member_subnet = public_subnet(estate.member_ec2, "10.1.0.0/16")
    route53 = boto3.client("route53")
    return Network(
        route53, zones(route53, home_vpc, member_vpc), home_subnet, member_subnet, estate.member_ec2, estate.home_ec2
    )


@pytest.fixture
def lambdas(estate: Estate) -> Iterator[Any]:
    from app import app

    with Client(app, stage_name="dev", project_dir=str(ROOT)) as client:
        yield client.lambda_


@pytest.fixture
def emitted(capsys: pytest.CaptureFixture[str]) -> Iterator[Emitted]:
    metrics.clear_metrics()
    yield Emitted(capsys)
    metrics.clear_metrics()
