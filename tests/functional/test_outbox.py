"""The email ledger and outbox (chalicelib/outbox.py) against moto: each state change of one item."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from chalicelib.notify import Email, Notice
from chalicelib.outbox import LEASE_SECONDS, Mailer, Outbox
from demo.environment import create_table
from tests.support.faults import answer_with_error

NOTICE = Notice("snapshot_failures", "opsbots@example.com", ("ops@example.com",), "subject", {"results": []})


@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeSes:
    """A notifier that sends, or refuses like SES does when it is down; it keeps what it sent."""

    down: bool = False
    sent: list[Email] = field(default_factory=list)

    def send(self, email: Email) -> str:
        if self.down:
            raise answer_error()
        self.sent.append(email)
        return f"message-{len(self.sent)}"


def answer_error() -> Exception:
    return ClientError({"Error": {"Code": "InternalFailure", "Message": "SES is down"}}, "SendEmail")


@dataclass
class Ledger:
    outbox: Outbox
    clock: Clock
    dynamodb: Any


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="eu-west-1")
        clock = Clock()
        yield Ledger(Outbox(dynamodb, create_table(dynamodb, "IdempotencyTable"), clock), clock, dynamodb)


def test_a_key_is_claimed_once_except_by_a_retry_of_the_same_invocation(ledger: Ledger) -> None:
    outbox = ledger.outbox
    assert outbox.claim("k", "request-1").claimed
    assert not outbox.claim("k", "request-2").claimed  # a duplicate delivery: another invocation
    assert outbox.claim("k", "request-1").claimed  # Lambda's retry keeps the request id: it crashed before


def test_a_parked_email_is_claimed_by_anyone_and_handed_back_as_first_written(ledger: Ledger) -> None:
    outbox = ledger.outbox
    outbox.claim("k", "request-1")
    outbox.park("k", NOTICE, "snapshots")

    claim = outbox.claim("k", "request-2")

    assert claim.claimed
    assert claim.parked is not None
    assert (claim.parked.facts, claim.parked.subject) == (NOTICE.facts, NOTICE.subject)
    assert claim.parked.delayed_since  # when SES first refused it
    assert list(outbox.parked("snapshots")) == []  # claimed: out of the outbox


def test_a_settled_key_is_never_claimed_again_and_leaves_the_outbox(ledger: Ledger) -> None:
    outbox = ledger.outbox
    outbox.claim("k", "request-1")
    outbox.park("k", NOTICE, "snapshots")
    outbox.settle("k")

    assert not outbox.claim("k", "request-1").claimed
    assert list(outbox.parked("snapshots")) == []


def test_a_drain_holds_a_parked_email_until_its_lease_ends(ledger: Ledger) -> None:
    outbox, clock = ledger.outbox, ledger.clock
    outbox.park("k", NOTICE, "snapshots")

    assert outbox.take("k", "drain-1")
    assert not outbox.take("k", "drain-2")  # the first drain is sending it
    assert not outbox.claim("k", "request-9").claimed  # and so is no event's to send
    clock.now += LEASE_SECONDS + 1
    assert outbox.take("k", "drain-2")  # the first drain crashed: the next one sends it
    assert [parked.key for parked in outbox.parked("snapshots")] == ["k"]


def test_a_drain_sends_oldest_first_and_stops_at_the_first_refusal(ledger: Ledger) -> None:
    outbox, clock = ledger.outbox, ledger.clock
    for key in ("first", "second", "third"):
        outbox.park(key, replace(NOTICE, subject=key), "snapshots")
        clock.now += 60
    ses = FakeSes(down=True)
    mailer = Mailer("snapshots", lambda: ses, lambda: outbox, "drain-1")

    # When SES is still down, one email is tried and the drain stops; all three stay parked
    assert mailer.flush() == {"sent": 0, "parked": 1}
    assert len(list(outbox.parked("snapshots"))) == 3

    # When SES is back, the next drain sends them all, oldest first, and empties the outbox
    ses.down = False
    assert Mailer("snapshots", lambda: ses, lambda: outbox, "drain-2").flush() == {"sent": 3, "parked": 0}
    assert [email.subject for email in ses.sent] == ["first", "second", "third"]
    assert list(outbox.parked("snapshots")) == []


def test_a_table_that_refuses_the_claim_never_stops_the_email(ledger: Ledger) -> None:
    answer_with_error(ledger.dynamodb, "PutItem", "AccessDeniedException", status=400)
    ses = FakeSes()

    assert Mailer("snapshots", lambda: ses, lambda: ledger.outbox, "request-1").deliver("k", NOTICE) == "sent"
    assert len(ses.sent) == 1
