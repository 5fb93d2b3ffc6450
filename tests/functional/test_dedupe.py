"""The run-once guard (chalicelib/dedupe.py) when its table fails half-way: the step runs once, and its own
outcome stands; the guard never turns a table outage into work not done or an error not its own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from chalicelib.dedupe import DynamoDBOnce, Once
from demo.environment import create_table
from tests.support.faults import answer_with_error
from tests.support.lambdas import Emitted, LambdaContext


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("dynamodb", region_name="eu-west-1")


def guard(dynamodb: Any) -> Once:
    return DynamoDBOnce(create_table(dynamodb, "IdempotencyTable"), dynamodb).bind(LambdaContext())


class StepFailedError(Exception):
    pass


def test_a_step_that_ran_is_not_run_again_when_its_record_cannot_be_completed(dynamodb: Any, emitted: Emitted) -> None:
    # Given a table that takes the in-progress record but refuses to mark it completed
    once = guard(dynamodb)
    answer_with_error(dynamodb, "UpdateItem", "InternalServerError", status=500)
    runs: list[str] = []

    def step() -> dict[str, Any]:
        runs.append("ran")
        return {"taken": 1}

    # When the step runs, its result stands, it ran once, and the outage is counted
    assert once("take-snapshots", "delivery-1", step) == {"taken": 1}
    assert runs == ["ran"]
    assert emitted("DedupeUnavailable") == 1


def test_a_step_that_failed_keeps_its_own_error_when_its_record_cannot_be_deleted(
    dynamodb: Any, emitted: Emitted
) -> None:
    once = guard(dynamodb)
    answer_with_error(dynamodb, "DeleteItem", "InternalServerError", status=500)

    def step() -> dict[str, Any]:
        raise StepFailedError

    with pytest.raises(StepFailedError):
        once("sweep", "delivery-1", step)
    assert emitted("DedupeUnavailable") == 1
