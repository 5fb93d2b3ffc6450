"""Run a step once per event id, so at-least-once delivery does not do a scheduled run's work twice.

Backed by Powertools Idempotency on the DynamoDB table named by `OPSBOTS_IDEMPOTENCY_TABLE`
(partition key `id`, Powertools' default layout). A step that raises leaves no record, so the
retry runs it again; a step that succeeded returns its stored result instead of running. Without
a table every step simply runs.

The guard is bookkeeping and never stands between a bot and its work: when the table cannot be
read or written (missing, 5xx, AccessDenied) the step runs anyway, once, and the outage is logged
and counted (`DedupeUnavailable`). A duplicate delivery during an outage may then run twice; every
step guarded here is safe to run twice (window tags stop a second snapshot, a revoke of a gone rule
is a no-op), and emails have their own ledger (chalicelib/outbox.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from chalicelib.observability import logger, metrics

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

Result = dict[str, Any]
# Powertools' persistence layer: a first run (PutItem, UpdateItem), a redelivery read back with SDKs before
# ReturnValuesOnConditionCheckFailure (GetItem), a run that raised (DeleteItem).
PERMISSIONS = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")
# EventBridge retries an asynchronous invocation for up to 24 hours.
REMEMBER_SECONDS = 24 * 3600


class Once(Protocol):
    def __call__(self, step: str, event_id: str, action: Callable[[], Result]) -> Result: ...


def always(step: str, event_id: str, action: Callable[[], Result]) -> Result:
    return action()


class DynamoDBOnce:
    """Powertools Idempotency over DynamoDB; `bind` it to each invocation's Lambda context."""

    def __init__(self, table: str, client: DynamoDBClient) -> None:
        # Imported here: without a table the idempotency machinery is never loaded.
        from aws_lambda_powertools.utilities.idempotency import (
            DynamoDBPersistenceLayer,
            IdempotencyConfig,
            idempotent_function,
        )

        self._config = IdempotencyConfig(expires_after_seconds=REMEMBER_SECONDS)
        persistence = DynamoDBPersistenceLayer(table_name=table, boto3_client=client)
        decorate = idempotent_function(data_keyword_argument="key", persistence_store=persistence, config=self._config)

        @decorate  # type: ignore[untyped-decorator]
        def run(*, key: dict[str, str], action: Callable[[], Result]) -> Result:
            return action()

        self._run = run

    def bind(self, lambda_context: Any) -> Once:
        # The in-progress lock expires with the invocation, so a crashed run does not block the retry.
        self._config.register_lambda_context(lambda_context)
        return self

    def __call__(self, step: str, event_id: str, action: Callable[[], Result]) -> Result:
        from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyPersistenceLayerError

        ran = False
        outcome: Result | BaseException | None = None

        def run_and_mark() -> Result:
            nonlocal ran, outcome
            ran = True
            try:
                outcome = action()
            except BaseException as failure:
                outcome = failure
                raise
            return outcome

        try:
            result: Result = self._run(key={"step": step, "event_id": event_id}, action=run_and_mark)
        except IdempotencyPersistenceLayerError as error:
            logger.error(
                "run-once table unavailable: the step runs without it (at least once)",
                extra={"step": step, "id": event_id, "reason": str(error.__cause__ or error)},
            )
            metrics.add_metric(name="DedupeUnavailable", unit="Count", value=1)
            if not ran:
                return action()
            if isinstance(outcome, BaseException):  # the step failed, and so did deleting its record
                raise outcome from error
            return outcome or {}
        if not ran:  # every invocation reports something, and a redelivery storm shows on a graph
            logger.info("delivered before: the first delivery's result stands", extra={"step": step, "id": event_id})
            metrics.add_metric(name="DuplicateDeliveries", unit="Count", value=1)
        return result
