"""Fan-out over SQS: a scheduled run sends one message per account x region, and a worker function does each.

Shared by the bots whose scheduled runs cover a fleet (the snapshots, the security-group sweep): 1,000
accounts x 3 regions are 3,000 small invocations in parallel, each within Lambda's limits, rather than
one invocation that must finish them all. A message is a request, not a command: each worker checks it
against what only the bot writes before acting on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from chalicelib.observability import logger, metrics

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

    from chalicelib.policy import AccountsPolicy, MemberAccount

BATCH: Final = 10  # SendMessageBatch's limit


class RejectedMessageError(ValueError):
    """A queue message the scheduler would not have written, or not for this estate: dropped, never acted on."""


def member_in(accounts: AccountsPolicy, account_id: str, region: str, home_account_id: str) -> MemberAccount | None:
    """The member account a message names (None: the home account), from accounts.yml (with the organization's
    accounts), never from the message; RejectedMessageError for an account that is not one of ours, or a
    region the bots do not work in there."""
    member = accounts.member(account_id)
    if member is None and account_id != home_account_id:
        raise RejectedMessageError(f"account {account_id} is not one the bots work in")
    regions = accounts.regions_of(member) if member else accounts.defaults.regions
    if region not in regions:
        raise RejectedMessageError(f"region {region} is not one of account {account_id}'s")
    return member


class NotQueuedError(Exception):
    """SQS refused some of a run's messages twice: the run fails, for Lambda to retry it whole."""


def queue_all(sqs: SQSClient, queue_url: str, messages: Mapping[str, str], metric: str) -> None:
    """Send each message (by a label saying whose it is: "account/region"), in batches of 10; what SQS
    refuses is sent again once, and what it refuses again fails the run. `<metric>Queued` and, on failure,
    `<metric>NotQueued` count them."""
    refused = _send(sqs, queue_url, messages)
    if refused:
        refused = _send(sqs, queue_url, {label: messages[label] for label in refused})
    queued = len(messages) - len(refused)
    logger.info("units queued", extra={"queue": queue_url, "units": queued})
    metrics.add_metric(name=f"{metric}Queued", unit="Count", value=queued)
    if refused:
        logger.error("units not queued: the run fails for Lambda to retry it", extra={"units": refused})
        metrics.add_metric(name=f"{metric}NotQueued", unit="Count", value=len(refused))
        raise NotQueuedError(f"SQS refused {len(refused)} unit message(s) twice: {', '.join(refused)}")


def _send(sqs: SQSClient, queue_url: str, messages: Mapping[str, str]) -> list[str]:
    """The labels of the messages SQS refused."""
    labels = list(messages)
    refused: list[str] = []
    for start in range(0, len(labels), BATCH):
        batch = labels[start : start + BATCH]
        entries: list[Any] = [{"Id": str(i), "MessageBody": messages[label]} for i, label in enumerate(batch)]
        answer = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        refused += [batch[int(failure["Id"])] for failure in answer.get("Failed", [])]
    return refused
