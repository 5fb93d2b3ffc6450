"""Fan-out over SQS: a scheduled run sends one message per account x region, and a worker function does each.

Shared by the bots whose scheduled runs cover a fleet (the snapshots, the security-group sweep, the DNS
reconcile): 1,000 accounts x 3 regions are 3,000 small invocations in parallel, each within Lambda's limits,
rather than one invocation that must finish them all. A message is a request, not a command: each worker
checks it against what only the bot writes before acting on it. The sweep and the reconcile also record the
run (`Runs`): each unit's result is stored with the run's count, and the worker that completes the count
does what follows the run once (the sweep's digest; handing the reconcile to the DNS writer).
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar

from botocore.exceptions import ClientError

from chalicelib.aws import HOME, Target, error_code
from chalicelib.bots import RUNS
from chalicelib.names import ACCOUNT_ID, REGION_NAME
from chalicelib.observability import logger, metrics
from chalicelib.runtime import NotConfiguredError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient

    from chalicelib.aws import Clients
    from chalicelib.policy import AccountsPolicy, MemberAccount, MemberBot
    from chalicelib.runtime import Runtime

BATCH: Final = 10  # SendMessageBatch's limit
R = TypeVar("R")  # what a worker's work on its unit results in


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


def requested_unit(
    request: UnitRequest, accounts: AccountsPolicy, clients: Clients, bot: MemberBot
) -> tuple[Target, str]:
    """Where to work on the account/region a unit's message names, through `bot`'s role, and the account's name;
    checked against the fleet, never taken from the message (RejectedMessageError, `member_in`). An account
    accounts.yml does not list is looked for in its organization (OrganizationUnavailableError when that
    cannot be listed: the message is delivered again)."""
    if accounts.member(request.account_id) is None and accounts.organization is not None:
        accounts = clients.fleet(accounts)
    member = member_in(accounts, request.account_id, request.region, clients.home().account_id)
    if member is None:
        return Target(request.account_id, request.region), "home"
    return Target(request.account_id, request.region, accounts.role_arn(member, bot)), member.name


def handle_unit(
    body: str,
    attempt: int,
    runs: Runs,
    *,
    work: Callable[[UnitRequest, Run], R],
    failed: Callable[[UnitRequest, Run, str], R],
    finish: Callable[[UnitRequest, Run, R], dict[str, Any]],
    deliveries: int,
    crashed_metric: str,
) -> dict[str, Any]:
    """One queue message of a fanned-out run, as every worker takes it: `work` on the unit, then `finish` (store
    its result, and complete the run if it is the last).

    The message is a request: its run must be one the scheduler recorded, its account one of the fleet's in
    one of its regions (`requested_unit`, in `work`); anything else is logged, counted (`MalformedEvents`) and
    dropped. A unit whose work fails every delivery (a crash, an organization that cannot be listed) is
    finished as `failed` on its last one, so the run completes and says so, and raises all the same, so that
    SQS keeps it in the dead-letter queue (`deliveries`: the queue's maxReceiveCount).
    """
    try:
        request = UnitRequest.from_message(body)
        run = runs.get(request.run)
        if run is None:
            raise RejectedMessageError(f"run {request.run} was never started by the scheduler")
        try:
            result = work(request, run)
        except RejectedMessageError:
            raise
        except Exception as error:
            metrics.add_metric(name=crashed_metric, unit="Count", value=1)
            if attempt < deliveries:
                raise  # SQS delivers it again
            finish(request, run, failed(request, run, f"{type(error).__name__}: {error}"))
            raise  # and keeps it in the dead-letter queue
    except RejectedMessageError as error:
        logger.warning("unit message rejected", extra={"reason": str(error)})
        metrics.add_metric(name="MalformedEvents", unit="Count", value=1)
        return {"rejected": str(error)}
    return finish(request, run, result)


@dataclass(frozen=True)
class Fanout:
    """Where a fanned-out run queues its units, and keeps its record."""

    sqs: SQSClient
    queue_url: str
    runs: Runs


def runs_of(runtime: Runtime) -> Runs:
    """Built once per container: the table where each fanned-out run keeps its units' results."""
    table = runtime.settings.resource(RUNS)
    if not table:
        raise NotConfiguredError(f"{RUNS} is not set: a fanned-out run is recorded and completed from it")
    return Runs(runtime.clients.client("dynamodb", Target(HOME, runtime.clients.home_region)), table)


def fanout_to(runtime: Runtime, queue_variable: str) -> Fanout | None:
    """With the queue `queue_variable` names set, where a scheduled run fans out to (else it does every unit)."""
    queue = runtime.settings.resource(queue_variable)
    if not queue:
        return None
    return Fanout(runtime.clients.client("sqs", Target(HOME, runtime.clients.home_region)), queue, runs_of(runtime))


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


# ----- a fanned-out run: the message its scheduler queues per unit, and its record ----------------------------

RUN_ID = re.compile(r"[A-Za-z0-9:._-]{1,128}")  # the scheduled event's id, perhaps with the bot's prefix
RUN_ITEM = "#run"  # the run's own item, beside its units' (`unit#<account>/<region>`)
KEPT_DAYS = 7  # a run's items expire (TTL) after this
# A unit's result is stored compressed in one item, under DynamoDB's 400 KB: past this it is not stored.
MAX_RESULT_BYTES = 350_000


@dataclass(frozen=True)
class UnitRequest:
    """A unit's queue message as written: which run, which account and region. The worker trusts none of it:
    the run must be one the scheduler recorded (its time is taken from that record, never from a message),
    and the account one of the fleet's, in one of its regions (`member_in`)."""

    run: str
    account_id: str
    region: str

    @property
    def unit(self) -> str:
        return f"{self.account_id}/{self.region}"

    def to_message(self) -> str:
        return json.dumps({"run": self.run, "account_id": self.account_id, "region": self.region})

    @classmethod
    def from_message(cls, body: str) -> UnitRequest:
        """RejectedMessageError for anything that is not a unit's message at all."""
        try:
            data = json.loads(body)
            fields = (data["run"], data["account_id"], data["region"])
        except (ValueError, KeyError, TypeError) as error:
            raise RejectedMessageError(f"not a unit's message: {error}") from None
        for value, pattern, what in zip(
            fields, (RUN_ID, ACCOUNT_ID, REGION_NAME), ("run", "account_id", "region"), strict=True
        ):
            if not isinstance(value, str) or pattern.fullmatch(value) is None:
                raise RejectedMessageError(f"{what}: {value!r} is not valid in a unit's message")
        return cls(*fields)


@dataclass(frozen=True)
class Run:
    """A fanned-out run as its scheduler recorded it."""

    started: datetime  # the scheduled event's time: what the run decides from
    units: int
    # Whether the units are the whole fleet: False when the organization could not be listed and the run covers
    # only the accounts listed, so what it does not reach must not be taken as gone.
    complete: bool = True
    completed: bool = False  # every unit is done, and a worker claimed what follows


class ResultTooLargeError(ValueError):
    """A unit's result that one item cannot hold, even compressed."""


class Runs:
    """Each fanned-out run in a table only the bots write (`OPSBOTS_RUNS`): the run's item (when it started, how
    many units it queued, how many are done) and one item per unit with its result (the bot's own JSON).

    A unit's result and the run's count move together, in one transaction conditional on the unit not
    being recorded yet, so a redelivered message counts once; the worker whose unit completes the count
    claims the run's completion, on condition nobody has, so what follows a run (the sweep's digest, the
    DNS reconcile's writes) happens once, from what the workers stored.
    """

    def __init__(self, dynamodb: DynamoDBClient, table: str) -> None:
        self._dynamodb = dynamodb
        self._table = table

    def start(self, run: str, started: datetime, units: int, *, complete: bool = True) -> None:
        """Record the run before its units are queued; a retried run finds its record kept."""
        expires = int((started + timedelta(days=KEPT_DAYS)).timestamp())
        try:
            self._dynamodb.put_item(
                TableName=self._table,
                Item={
                    "run": {"S": run},
                    "unit": {"S": RUN_ITEM},
                    "started": {"S": started.isoformat()},
                    "units": {"N": str(units)},
                    "complete": {"BOOL": complete},
                    "done": {"N": "0"},
                    "expires": {"N": str(expires)},
                },
                ConditionExpression="attribute_not_exists(#run)",
                ExpressionAttributeNames={"#run": "run"},
            )
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise

    def get(self, run: str) -> Run | None:
        """The run as its scheduler recorded it; None for a run it never recorded."""
        item = self._dynamodb.get_item(
            TableName=self._table, Key={"run": {"S": run}, "unit": {"S": RUN_ITEM}}, ConsistentRead=True
        ).get("Item")
        if item is None:
            return None
        complete = item.get("complete", {}).get("BOOL", True)
        return Run(datetime.fromisoformat(item["started"]["S"]), int(item["units"]["N"]), complete, "completed" in item)

    def record(self, run: str, unit: str, result: object) -> bool:
        """Store a unit's result (a dataclass of its bot's, as JSON) and count it done; False when this unit was
        recorded already. ResultTooLargeError for a result that one item cannot hold."""
        stored = zlib.compress(as_json(result))
        if len(stored) > MAX_RESULT_BYTES:
            raise ResultTooLargeError(f"{len(stored):,} bytes compressed: over the {MAX_RESULT_BYTES:,} one item holds")
        expires = {"N": str(int((datetime.now(UTC) + timedelta(days=KEPT_DAYS)).timestamp()))}
        try:
            self._dynamodb.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": {
                                "run": {"S": run},
                                "unit": {"S": f"unit#{unit}"},
                                "result": {"B": stored},
                                "expires": expires,
                            },
                            "ConditionExpression": "attribute_not_exists(#unit)",
                            "ExpressionAttributeNames": {"#unit": "unit"},
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": {"run": {"S": run}, "unit": {"S": RUN_ITEM}},
                            "UpdateExpression": "ADD done :one",
                            "ConditionExpression": "attribute_exists(#units)",
                            "ExpressionAttributeNames": {"#units": "units"},
                            "ExpressionAttributeValues": {":one": {"N": "1"}},
                        }
                    },
                ]
            )
        except ClientError as error:
            if error_code(error) == "TransactionCanceledException":
                return False
            raise
        return True

    def claim_completion(self, run: str) -> bool:
        """True for the one worker that finds every unit done and claims the run's completion first."""
        try:
            self._dynamodb.update_item(
                TableName=self._table,
                Key={"run": {"S": run}, "unit": {"S": RUN_ITEM}},
                UpdateExpression="SET completed = :claimed",
                ConditionExpression="done = #units AND attribute_not_exists(completed)",
                ExpressionAttributeNames={"#units": "units"},
                ExpressionAttributeValues={":claimed": {"S": datetime.now(UTC).isoformat()}},
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def give_back_completion(self, run: str) -> None:
        """Undo a claim whose work could not be handed on, so the message's next delivery claims it again."""
        self._dynamodb.update_item(
            TableName=self._table,
            Key={"run": {"S": run}, "unit": {"S": RUN_ITEM}},
            UpdateExpression="REMOVE completed",
        )

    def results(self, run: str, kind: type[R]) -> list[R]:
        """What every unit of the run found, as its worker stored it: each a `kind`."""
        pages = self._dynamodb.get_paginator("query").paginate(
            TableName=self._table,
            KeyConditionExpression="#run = :run AND begins_with(#unit, :units)",
            ExpressionAttributeNames={"#run": "run", "#unit": "unit"},
            ExpressionAttributeValues={":run": {"S": run}, ":units": {"S": "unit#"}},
            ConsistentRead=True,
        )
        return [from_json(kind, zlib.decompress(item["result"]["B"])) for page in pages for item in page["Items"]]


def as_json(result: object) -> bytes:
    """A unit's result (a frozen dataclass of its bot's) as it is stored."""
    return bytes(_adapter(type(result)).dump_json(result))


def from_json(kind: type[R], stored: bytes) -> R:
    result: R = _adapter(kind).validate_json(stored)
    return result


_ADAPTERS: dict[type, Any] = {}  # by result type, built on first use (two threads at once build one twice)


def _adapter(kind: type) -> Any:
    if kind not in _ADAPTERS:
        from pydantic import TypeAdapter  # loaded by the policies already

        _ADAPTERS[kind] = TypeAdapter(kind)
    return _ADAPTERS[kind]
