"""Website-check runs against real local servers, their state in DynamoDB and their emails in SES (moto):
DOWN after two failed runs, UP with the outage's length, and an overlapping run that announces nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
from mypy_boto3_dynamodb import DynamoDBClient

from chalicelib.aws import Clients
from chalicelib.outbox import mailer_for
from chalicelib.websites.decisions import CheckState
from chalicelib.websites.executors import HttpProber, StateStore
from chalicelib.websites.handlers import WebsiteDeps, run_checks
from chalicelib.websites.policy import WebsitesPolicy
from demo.web import SITE, http_site
from tests.support.aws import ROOT
from tests.support.estate import SENDER, Estate, sent_emails

AT = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
TABLE = "opsbots-websites"


def policy(port: int, path: str) -> WebsitesPolicy:
    return WebsitesPolicy.model_validate(
        {
            "notify": {"email": {"sender": SENDER, "recipients": ["oncall@example.com"]}},
            "checks": [{"name": "shop", "url": f"http://{SITE}:{port}{path}", "allow_private": True, "timeout": "2s"}],
        }
    )


def state_table(dynamodb: DynamoDBClient) -> StateStore:
    dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "check", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "check", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return StateStore(dynamodb, TABLE)


def deps(store: StateStore) -> WebsiteDeps:
    return WebsiteDeps(HttpProber(lambda host, port: ["127.0.0.1"]), store, ROOT / "policies")


def run(policy: WebsitesPolicy, store: StateStore, at: datetime) -> dict[str, object]:
    return run_checks(policy=policy, deps=deps(store), mailer=mailer_for("websites", Clients(), None), at=at)


def test_down_after_two_failed_runs_then_up_with_the_outage(estate: Estate, tmp_path: Path) -> None:
    store = state_table(boto3.client("dynamodb"))
    with http_site() as (port, _):
        # Given a healthy site, then three runs failing with 500, then healthy again
        answers = [
            run(policy(port, path), store, AT + minute * MINUTE)
            for minute, path in enumerate(["/health", "/fail", "/fail", "/fail", "/health"])
        ]

    # Then DOWN is announced on the second failed run, UP on the first good one, nothing in between
    assert [answer["announced"] for answer in answers] == [[], [], ["shop: down"], [], ["shop: up"]]
    subjects = [email.subject for email in sent_emails()]
    assert subjects == ["[opsbots] shop is DOWN: status 500, expected 200-399", "[opsbots] shop is UP"]
    assert "after 3 min down" in sent_emails()[1].body
    assert store.read(["shop"])["shop"].state == "up"


def test_a_run_that_loses_the_race_for_the_state_announces_nothing(estate: Estate) -> None:
    # Given a check one failed run from DOWN, and another run of the same minute that has stored it already
    store = state_table(boto3.client("dynamodb"))
    store.write("shop", CheckState("up", failures=1, since=AT, version=1))
    with http_site() as (port, _):
        slow_run_reads = store.read(["shop"])
        first = run(policy(port, "/fail"), store, AT + MINUTE)
        # When the slower run, which read the state before the first wrote it, tries to store its own
        assert not store.write("shop", CheckState("down", failures=2, since=AT + MINUTE, version=2))

    # Then the change was announced once, by the run that stored it
    assert slow_run_reads["shop"].version == 1
    assert first["announced"] == ["shop: down"]
    assert len(sent_emails()) == 1
