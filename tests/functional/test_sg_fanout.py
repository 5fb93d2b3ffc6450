"""The hourly sweep fanned out (moto SQS and DynamoDB): one message per account and region, each swept by
`sweep_worker`, one digest assembled from what the workers stored; a failing account that stops no other and
is listed, a unit that crashes on every delivery kept in the dead-letter queue and listed too, a
redelivery counted once, and messages the scheduler never wrote dropped."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from chalicelib.aws import Target
from chalicelib.bots import RUNS, SWEEP_QUEUE
from chalicelib.fanout import Runs, UnitRequest
from chalicelib.fleet import OrganizationUnavailableError
from chalicelib.runtime import current
from chalicelib.security_groups.decisions import SWEEP_DELIVERIES
from chalicelib.settings import POLICIES_DIR
from chalicelib.triggers import SWEEP_QUEUE_NAME
from demo.environment import create_table, sqs_event
from tests.support.aws import HOME, MEMBER, REGION, load_event
from tests.support.estate import Estate, sent_emails, tcp
from tests.support.faults import Faults, answer_with_error, body_names
from tests.support.lambdas import Emitted

BROKEN = "333333333333"


@pytest.fixture
def queue(estate: Estate, monkeypatch: pytest.MonkeyPatch) -> str:
    """The sweep's queue (redelivering at once: no visibility timeout) and its runs table, in the environment."""
    url = boto3.client("sqs").create_queue(QueueName=SWEEP_QUEUE_NAME, Attributes={"VisibilityTimeout": "0"})
    monkeypatch.setenv(SWEEP_QUEUE, url["QueueUrl"])
    monkeypatch.setenv(RUNS, create_table(boto3.client("dynamodb"), "RunsTable"))
    current.cache_clear()
    return url["QueueUrl"]


def schedule(lambdas: Any, event_id: str = "sweep-run-1") -> dict[str, Any]:
    event = load_event("scheduled-event")
    event["id"] = event_id
    answer: dict[str, Any] = lambdas.invoke("sweep_security_groups", event).payload
    return answer


def deliver(lambdas: Any, queue: str) -> dict[str, Any]:
    """The next message, to the worker as Lambda's SQS poller would hand it over; deleted once it succeeds."""
    sqs = boto3.client("sqs")
    [message] = sqs.receive_message(QueueUrl=queue, AttributeNames=["ApproximateReceiveCount"])["Messages"]
    answer: dict[str, Any] = lambdas.invoke("sweep_worker", sqs_event(message, SWEEP_QUEUE_NAME)).payload
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    [unit] = answer["units"]
    return dict(unit)


def test_the_sweep_fans_out_and_the_last_unit_sends_the_one_digest(estate: Estate, lambdas: Any, queue: str) -> None:
    # Given SSH open to the world at home and in the member account
    home_group, member_group = estate.group(), estate.group(estate.member_ec2)
    [home_rule] = estate.authorize(home_group, [tcp(22)])
    [member_rule] = estate.authorize(member_group, [tcp(22)], ec2=estate.member_ec2)

    # When the schedule fires, and the worker takes each unit
    scheduled = schedule(lambdas)
    units = [deliver(lambdas, queue) for _ in range(scheduled["queued"])]

    # Then one message per account/region; each unit revoked its rule; the last sent the only digest
    assert (scheduled["run"], scheduled["queued"]) == ("sweep-run-1", 2)
    assert sorted(unit["unit"] for unit in units) == [f"{HOME}/{REGION}", f"{MEMBER}/{REGION}"]
    assert [unit["digest"] for unit in units] == [None, "sent"]
    assert home_rule not in estate.rule_ids(home_group)
    assert member_rule not in estate.rule_ids(member_group, estate.member_ec2)
    [digest] = sent_emails()
    assert "sweep: 2 violation(s)" in digest.subject
    assert HOME in digest.body
    assert MEMBER in digest.body


def test_a_redelivered_unit_counts_once(estate: Estate, lambdas: Any, queue: str) -> None:
    estate.authorize(estate.group(), [tcp(22)])
    schedule(lambdas)
    sqs = boto3.client("sqs")
    body = sqs.receive_message(QueueUrl=queue)["Messages"][0]["Body"]
    sqs.send_message(QueueUrl=queue, MessageBody=body)  # the same unit again, as SQS may deliver it

    units = [deliver(lambdas, queue) for _ in range(3)]

    assert sorted(unit["recorded"] for unit in units) == [False, True, True]
    assert [unit["digest"] for unit in units].count("sent") == 1
    [digest] = sent_emails()
    assert "sweep: 1 violation(s)" in digest.subject


def test_a_failing_account_stops_no_other_and_the_digest_lists_it(
    estate: Estate, lambdas: Any, queue: str, policies_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a second member account that refuses the sweep, and SSH open at home
    accounts = policies_dir / "accounts.yml"
    accounts.write_text(accounts.read_text() + f'  - id: "{BROKEN}"\n    name: broken\n')
    monkeypatch.setenv(POLICIES_DIR, str(policies_dir))
    current.cache_clear()
    current().acting_as("sweep_worker")
    broken = Target(BROKEN, REGION, f"arn:aws:iam::{BROKEN}:role/opsbots-member-security-groups")
    answer_with_error(current().clients.client("ec2", broken), "DescribeSecurityGroups", "UnauthorizedOperation")
    group = estate.group()
    [rule] = estate.authorize(group, [tcp(22)])

    # When the run fans out and every unit is worked on
    units = [deliver(lambdas, queue) for _ in range(schedule(lambdas)["queued"])]

    # Then home was enforced all the same, and the one digest lists the failed account
    assert len(units) == 3
    assert rule not in estate.rule_ids(group)
    [digest] = sent_emails()
    assert "1 account failure(s)" in digest.subject
    assert "UnauthorizedOperation" in digest.body


def test_a_unit_that_crashes_on_every_delivery_goes_to_the_dead_letter_queue_and_into_the_digest(
    estate: Estate, lambdas: Any, queue: str, emitted: Emitted
) -> None:
    # Given a member account whose EC2 answers break the worker (not an AWS error: a bug), and SSH open at home
    current().acting_as("sweep_worker")
    member = Target(MEMBER, REGION, f"arn:aws:iam::{MEMBER}:role/opsbots-member-security-groups")

    def crash(**_: Any) -> None:
        raise RuntimeError("the worker cannot read this answer")

    current().clients.client("ec2", member).meta.events.register("before-call.ec2.DescribeSecurityGroups", crash)
    group = estate.group()
    [rule] = estate.authorize(group, [tcp(22)])
    schedule(lambdas)

    # When home's unit is done, and the member's fails every delivery
    outcomes: list[str] = []
    home = deliver(lambdas, queue) if _next_is(queue, HOME) else None
    for _ in range(SWEEP_DELIVERIES):
        try:
            deliver(lambdas, queue)
        except RuntimeError:
            outcomes.append("raised")
    home = home or deliver(lambdas, queue)

    # Then each delivery raised (the last one too, so SQS keeps it for the dead-letter queue), and the digest
    # came once every unit was accounted for, listing the crash
    assert outcomes == ["raised"] * SWEEP_DELIVERIES
    assert rule not in estate.rule_ids(group)
    [digest] = sent_emails()
    assert "RuntimeError: the worker cannot read this answer" in digest.body
    assert "1 account failure(s)" in digest.subject


def _next_is(queue: str, account: str) -> bool:
    """Whether the queue's next message is `account`'s, leaving it there (no visibility timeout)."""
    [message] = boto3.client("sqs").receive_message(QueueUrl=queue)["Messages"]
    return UnitRequest.from_message(message["Body"]).account_id == account


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "not a unit's message"),
        (UnitRequest("sweep-never-scheduled", HOME, REGION).to_message(), "never started by the scheduler"),
        (UnitRequest("sweep-run-1", "999999999999", REGION).to_message(), "not one the bots work in"),
        (UnitRequest("sweep-run-1", MEMBER, "ap-south-2").to_message(), "is not one of account"),
    ],
)
def test_a_message_the_scheduler_never_wrote_is_dropped_unacted(
    estate: Estate, lambdas: Any, queue: str, body: str, reason: str
) -> None:
    schedule(lambdas)
    boto3.client("sqs").purge_queue(QueueUrl=queue)
    boto3.client("sqs").send_message(QueueUrl=queue, MessageBody=body)

    assert reason in deliver(lambdas, queue)["rejected"]
    assert sent_emails() == []


def test_a_unit_whose_account_the_organization_cannot_confirm_is_retried_then_listed_as_failed(
    estate: Estate, lambdas: Any, queue: str, policies_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given accounts.yml naming an organization whose reader role is refused, and a run's unit in an account
    # only the organization could confirm
    accounts = policies_dir / "accounts.yml"
    accounts.write_text(accounts.read_text() + 'organization: {account: "111111111111"}\n')
    monkeypatch.setenv(POLICIES_DIR, str(policies_dir))
    current.cache_clear()
    faults = Faults()
    faults.fail("sts", "AssumeRole", "denied", times=None, when=body_names("opsbots-organization-reader"))
    faults.on(current().clients.client("sts", current().clients.home()))
    Runs(boto3.client("dynamodb"), os.environ[RUNS]).start("run-org", datetime.now(UTC), 1)
    unit = UnitRequest("run-org", "444455556666", REGION).to_message()
    boto3.client("sqs").send_message(QueueUrl=queue, MessageBody=unit)

    # When SQS delivers it as often as the queue allows, then every delivery fails (for SQS to retry it, then to
    # keep it in the dead-letter queue), never dropped
    for _ in range(SWEEP_DELIVERIES):
        with pytest.raises(OrganizationUnavailableError):
            deliver(lambdas, queue)

    # Then on its last delivery it was recorded failed: the run's digest lists it
    [digest] = sent_emails()
    assert "444455556666" in digest.body
    assert "OrganizationUnavailableError" in digest.body
