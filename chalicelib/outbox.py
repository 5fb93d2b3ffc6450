"""Emails sent once per event and outcome, and never lost: a ledger and an outbox in the run-once table.

An email must not wait on bookkeeping, must not go twice for one delivery, and must not vanish when SES
is down. One conditional write before each email does all three, in `OPSBOTS_IDEMPOTENCY_TABLE` beside
Powertools' records, under keys of its own (`notice#<key>`). An item moves through three states:

    (no item) --claim--> claimed --(email sent: nothing more is written)
                            |
                            +--SES failed--> unsent --claim (a Lambda retry) or take (the next drain)--> ...

- **claim**: one conditional `PutItem` before the email. It succeeds when the key is new, parked
  unsent, or claimed by this very invocation: Lambda retries a failed invocation with the same request
  id, so an attempt that claimed and then crashed or timed out is sent by its retry. Anything else
  (claimed by another invocation, or sent) is a duplicate delivery: no email.
- **The table failing never stops an email.** A claim that fails (table missing, 5xx, AccessDenied) is
  logged and counted (`DedupeUnavailable`) and the email goes out unclaimed: at least once, never not at
  all.
- **unsent**: SES failed. The email's facts (`notify.Notice`, a few kB compressed; rendered again when
  sent) are parked without a TTL in the sparse `outbox` index, counted (`NotificationsParked`), and the
  caller decides: the event handler fails the invocation so Lambda retries it; a scheduled run carries
  on. Either way the bot's next scheduled run drains the outbox (`Mailer.flush`). If even parking fails,
  the facts go into the error log line, the one place left where an operator finds them.
- **settle**: marks a claimed key sent. Written only off the fast path: after a drained email, and when an
  invocation fails on purpose after its email (a revoke to retry), so its retry does not send it again.
- **take**: a drain claims a parked item for a few minutes (`lease`); a drain that crashes leaves it to the
  next one once the lease is over.

Without a table there is no ledger: every email is sent, and a failure is logged with its facts.
"""

from __future__ import annotations

import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.aws import HOME, Target, error_code, reason
from chalicelib.dedupe import REMEMBER_SECONDS
from chalicelib.notify import Notice, Notifier, SesNotifier
from chalicelib.observability import logger, metrics
from chalicelib.settings import IDEMPOTENCY_TABLE

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from chalicelib.aws import Clients

OUTBOX_INDEX = "outbox"
LEDGER_PERMISSIONS = ("dynamodb:PutItem", "dynamodb:UpdateItem")  # claim and park; settle
DRAIN_PERMISSIONS = ("dynamodb:Query",)  # the outbox index, by the bots' scheduled runs
LEASE_SECONDS = 300  # a drain's hold on a parked email; more than one SES call with every retry
DRAIN_LIMIT = 100  # parked emails one drain sends at most; the rest wait for the next run
_ALREADY_TAKEN = "ConditionalCheckFailedException"

Outcome = Literal["sent", "duplicate", "parked", "failed"]


class OutboxUnavailableError(Exception):
    """The table could not be read or written; the caller degrades to sending without a ledger."""


@dataclass(frozen=True)
class Claim:
    claimed: bool
    parked: Notice | None = None


@dataclass(frozen=True)
class Parked:
    key: str
    notice: Notice  # says since when it waits, so the email can say it is late


class Outbox:
    """The ledger's items in DynamoDB; every call is one request, and every failure is the caller's to degrade."""

    def __init__(self, dynamodb: DynamoDBClient, table: str, clock: Callable[[], float] = time.time) -> None:
        self._dynamodb = dynamodb
        self._table = table
        self._clock = clock

    def claim(self, key: str, request_id: str) -> Claim:
        """Whether this invocation may send `key`'s email, and the email parked under it if SES refused it before:
        that one is sent as it was written then (a retry's own view may differ: the rule it revoked is now gone)."""
        now = int(self._clock())
        answer = self._conditional(
            lambda: self._dynamodb.put_item(
                TableName=self._table,
                Item={
                    "id": {"S": _item_id(key)},
                    "status": {"S": "claimed"},
                    "request": {"S": request_id},
                    "expiration": {"N": str(now + REMEMBER_SECONDS)},
                },
                ConditionExpression=(
                    "attribute_not_exists(id) OR #status = :unsent OR (#status = :claimed AND #request = :request)"
                ),
                ExpressionAttributeNames={"#status": "status", "#request": "request"},
                ExpressionAttributeValues={
                    ":unsent": {"S": "unsent"},
                    ":claimed": {"S": "claimed"},
                    ":request": {"S": request_id},
                },
                ReturnValues="ALL_OLD",
            )
        )
        if answer is None:
            return Claim(claimed=False)
        old = answer.get("Attributes", {})
        return Claim(claimed=True, parked=_parked(key, old).notice if "notice" in old else None)

    def park(self, key: str, notice: Notice, bot: str) -> None:
        """Keep an email SES refused, with no expiry, where the bot's next drain finds it."""
        self._call(
            lambda: self._dynamodb.put_item(
                TableName=self._table,
                Item={
                    "id": {"S": _item_id(key)},
                    "status": {"S": "unsent"},
                    OUTBOX_INDEX: {"S": bot},
                    # Parked again after a failed drain, it keeps its place: the oldest goes first.
                    "parked": {
                        "S": notice.delayed_since or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._clock()))
                    },
                    "notice": {"B": zlib.compress(notice.to_json().encode())},
                },
            )
        )

    def settle(self, key: str) -> None:
        """Mark `key` sent: out of the outbox, and never sent again by a retry."""
        self._call(
            lambda: self._dynamodb.update_item(
                TableName=self._table,
                Key={"id": {"S": _item_id(key)}},
                UpdateExpression=f"SET #status = :sent, expiration = :expiration REMOVE {OUTBOX_INDEX}, "
                "parked, notice, #request, lease",
                ExpressionAttributeNames={"#status": "status", "#request": "request"},
                ExpressionAttributeValues={
                    ":sent": {"S": "sent"},
                    ":expiration": {"N": str(int(self._clock()) + REMEMBER_SECONDS)},
                },
            )
        )

    def parked(self, bot: str, limit: int = DRAIN_LIMIT) -> Iterator[Parked]:
        """The bot's parked emails, oldest first."""
        paginator = self._dynamodb.get_paginator("query")
        pages = paginator.paginate(
            TableName=self._table,
            IndexName=OUTBOX_INDEX,
            KeyConditionExpression=f"{OUTBOX_INDEX} = :bot",
            ExpressionAttributeValues={":bot": {"S": bot}},
            PaginationConfig={"MaxItems": limit},
        )
        try:
            for page in pages:
                for item in page["Items"]:
                    yield _parked(item["id"]["S"].removeprefix("notice#"), item)
        except (ClientError, BotoCoreError) as error:
            raise OutboxUnavailableError(reason(error)) from error

    def take(self, key: str, request_id: str) -> bool:
        """Hold a parked email for one drain; False when another invocation holds or sent it."""
        now = int(self._clock())
        held = self._conditional(
            lambda: self._dynamodb.update_item(
                TableName=self._table,
                Key={"id": {"S": _item_id(key)}},
                UpdateExpression="SET #status = :claimed, #request = :request, lease = :lease",
                ConditionExpression="#status = :unsent OR (#status = :claimed AND lease < :now)",
                ExpressionAttributeNames={"#status": "status", "#request": "request"},
                ExpressionAttributeValues={
                    ":claimed": {"S": "claimed"},
                    ":unsent": {"S": "unsent"},
                    ":request": {"S": request_id},
                    ":lease": {"N": str(now + LEASE_SECONDS)},
                    ":now": {"N": str(now)},
                },
            )
        )
        return held is not None

    def _conditional(self, write: Callable[[], Any]) -> Any | None:
        """The write's answer, or None when its condition refused it."""
        try:
            return write()
        except ClientError as error:
            if error_code(error) == _ALREADY_TAKEN:
                return None
            raise OutboxUnavailableError(reason(error)) from error
        except BotoCoreError as error:
            raise OutboxUnavailableError(reason(error)) from error

    def _call(self, write: Callable[[], Any]) -> None:
        try:
            write()
        except (ClientError, BotoCoreError) as error:
            raise OutboxUnavailableError(reason(error)) from error


def _item_id(key: str) -> str:
    return f"notice#{key}"


def _parked(key: str, item: Mapping[str, Any]) -> Parked:
    notice = Notice.from_json(zlib.decompress(item["notice"]["B"]).decode())
    return Parked(key, replace(notice, delayed_since=notice.delayed_since or item["parked"]["S"]))


class Mailer:
    """One invocation's emails: claimed, sent, or parked when SES fails.

    Its clients are built on first use, so an event that sends nothing costs nothing.
    """

    def __init__(
        self,
        bot: str,
        notifier: Callable[[], Notifier],
        outbox: Callable[[], Outbox | None],
        request_id: str | None = None,
    ) -> None:
        self.bot = bot
        self._notifier_factory = notifier
        self._outbox_factory = outbox
        # Lambda retries an invocation with its request id; without one (a direct call), every call is its own.
        self.request_id = request_id or str(uuid.uuid4())

    @cached_property
    def _notifier(self) -> Notifier:
        return self._notifier_factory()

    @cached_property
    def _outbox(self) -> Outbox | None:
        return self._outbox_factory()

    def deliver(self, key: str, notice: Notice) -> Outcome:
        """Send `notice` unless `key` was sent (or is being sent) by another delivery; park it if SES fails."""
        claim = self._claim(key)
        if not claim.claimed:
            logger.info("email already sent for this delivery", extra={"key": key})
            metrics.add_metric(name="DuplicateDeliveries", unit="Count", value=1)
            return "duplicate"
        notice = claim.parked or notice
        if self._send(key, notice):
            return "sent"
        return "parked" if self._park(key, notice) else "failed"

    def settle(self, key: str) -> None:
        """This delivery's email for `key` is sent; a retry of this invocation must not send it again."""
        outbox = self._outbox
        if outbox is None:
            return
        try:
            outbox.settle(key)
        except OutboxUnavailableError as error:
            # The worst case is a second copy of the email on the retry: logged, counted, not raised.
            _unavailable("could not mark the email sent; a retry may send it again", key, str(error))

    def flush(self) -> dict[str, int]:
        """Send what earlier runs of this bot parked, oldest first. Returns the counts.

        The first email SES refuses again goes back to the outbox and ends the drain: SES is most likely
        still down, and retrying a hundred emails through botocore's retries would spend the run's time.
        """
        outbox = self._outbox
        counts = {"sent": 0, "parked": 0}
        if outbox is None:
            return counts
        try:
            for parked in outbox.parked(self.bot):
                if not outbox.take(parked.key, self.request_id):
                    continue
                if not self._send(parked.key, parked.notice):
                    outbox.park(parked.key, parked.notice, self.bot)
                    counts["parked"] += 1
                    break
                outbox.settle(parked.key)
                counts["sent"] += 1
        except OutboxUnavailableError as error:
            _unavailable("could not drain the outbox; parked emails wait for the next run", self.bot, str(error))
        metrics.add_metric(name="OutboxBacklog", unit="Count", value=counts["parked"])
        if counts["sent"] or counts["parked"]:
            logger.info("outbox drained", extra={"bot": self.bot, **counts})
        return counts

    def _claim(self, key: str) -> Claim:
        outbox = self._outbox
        if outbox is None:
            return Claim(claimed=True)
        try:
            return outbox.claim(key, self.request_id)
        except OutboxUnavailableError as error:
            _unavailable("the email ledger is unavailable: sending without it (at least once)", key, str(error))
            return Claim(claimed=True)

    def _send(self, key: str, notice: Notice) -> bool:
        try:
            self._notifier.send(notice.render())
        except (ClientError, BotoCoreError) as error:
            logger.error("email failed", extra={"key": key, "subject": notice.subject, "reason": reason(error)})
            metrics.add_metric(name="NotificationFailures", unit="Count", value=1)
            return False
        return True

    def _park(self, key: str, notice: Notice) -> bool:
        outbox = self._outbox
        try:
            if outbox is None:
                raise OutboxUnavailableError(f"{IDEMPOTENCY_TABLE} is not set")
            outbox.park(key, notice, self.bot)
        except OutboxUnavailableError as error:
            # Nowhere left to keep it but the log: the facts go with the error, for an operator to act on.
            logger.error(
                "email could not be sent or parked",
                extra={"key": key, "reason": str(error), "notice": notice.to_json()},
            )
            return False
        logger.warning("email parked in the outbox for the next run", extra={"key": key, "subject": notice.subject})
        metrics.add_metric(name="NotificationsParked", unit="Count", value=1)
        return True


def _unavailable(message: str, key: str, why: str) -> None:
    logger.error(message, extra={"key": key, "reason": why})
    metrics.add_metric(name="DedupeUnavailable", unit="Count", value=1)


def mailer_for(bot: str, clients: Clients, table: str | None, request_id: str | None = None) -> Mailer:
    """A mailer on the home account's SES and run-once table (none: no ledger), its clients built on first use."""
    home = Target(HOME, clients.home_region)
    return Mailer(
        bot,
        notifier=lambda: SesNotifier(clients.client("sesv2", home)),
        outbox=lambda: Outbox(clients.client("dynamodb", home), table) if table else None,
        request_id=request_id,
    )
