"""The DNS reconcile fanned out (moto SQS, DynamoDB and Lambda): one message per account and region, each scanned
by `dns_reconcile_worker`, which writes nothing to Route53; the last hands the run to the DNS writer, which plans
and writes it from what the workers stored. A unit that cannot be scanned keeps its records, a run applied late
leaves alone what events changed since, and messages or runs the scheduler never wrote are dropped."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from chalicelib.aws import Target
from chalicelib.bots import DNS_RECONCILE_QUEUE, DNS_WRITER, RUNS
from chalicelib.dns.decisions import RECONCILE_DELIVERIES, UnitScan, reconcile_ready
from chalicelib.dns.handlers import reconcile_worker
from chalicelib.fanout import ResultTooLargeError, Runs, UnitRequest
from chalicelib.runtime import current
from chalicelib.triggers import DNS_RECONCILE_QUEUE_NAME
from demo.environment import create_table, sqs_event
from tests.support.aws import HOME, MEMBER, REGION, load_event
from tests.support.dns import HandedRuns, Network, deliver, writer_function
from tests.support.faults import answer_with_error
from tests.support.lambdas import Emitted

PRIVATE = "internal.example.com"


@pytest.fixture
def queue(network: Network, monkeypatch: pytest.MonkeyPatch) -> str:
    """The reconcile's queue (redelivering at once), the runs table and the writer, in the environment."""
    url = boto3.client("sqs").create_queue(QueueName=DNS_RECONCILE_QUEUE_NAME, Attributes={"VisibilityTimeout": "0"})
    monkeypatch.setenv(DNS_RECONCILE_QUEUE, url["QueueUrl"])
    monkeypatch.setenv(RUNS, create_table(boto3.client("dynamodb"), "RunsTable"))
    monkeypatch.setenv(DNS_WRITER, writer_function())
    current.cache_clear()
    return url["QueueUrl"]


def schedule(lambdas: Any, event_id: str = "hour-1") -> dict[str, Any]:
    answer: dict[str, Any] = lambdas.invoke("reconcile_dns", {**load_event("scheduled-event"), "id": event_id}).payload
    return answer


def work(lambdas: Any, queue: str) -> dict[str, Any]:
    """The next message, to the worker as Lambda's SQS poller hands it over; deleted once it succeeds."""
    sqs = boto3.client("sqs")
    [message] = sqs.receive_message(QueueUrl=queue, AttributeNames=["ApproximateReceiveCount"])["Messages"]
    answer: dict[str, Any] = lambdas.invoke(
        "dns_reconcile_worker", sqs_event(message, DNS_RECONCILE_QUEUE_NAME)
    ).payload
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    [unit] = answer["units"]
    return dict(unit)


def write(lambdas: Any, run: str) -> dict[str, Any]:
    """What Lambda does with the last worker's asynchronous invocation: the writer runs with its payload."""
    answer: dict[str, Any] = lambdas.invoke("on_instance_state_change", reconcile_ready(run)).payload
    return answer


def reconcile(lambdas: Any, queue: str, event_id: str = "hour-1") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A whole fanned-out run: the schedule, every unit, and the writer."""
    scheduled = schedule(lambdas, event_id)
    units = [work(lambdas, queue) for _ in range(scheduled["queued"])]
    return units, write(lambdas, scheduled["run"])


def test_the_workers_only_scan_and_the_writer_applies_the_run_once(network: Network, lambdas: Any, queue: str) -> None:
    # Given instances no event reported, at home and in the member account
    for n in range(3):
        network.launch(f"h{n}")
    for n in range(2):
        network.launch(f"m{n}", member=True)

    # When the schedule fires and the worker takes each unit
    scheduled = schedule(lambdas)
    units = [work(lambdas, queue) for _ in range(scheduled["queued"])]

    # Then one message per account/region, each unit stored its scan, and only the last handed the run on; no
    # worker wrote Route53
    assert (scheduled["run"], scheduled["queued"], scheduled["complete"]) == ("dns-hour-1", 2, True)
    assert sorted((unit["unit"], unit["instances"]) for unit in units) == [
        (f"{HOME}/{REGION}", 3),
        (f"{MEMBER}/{REGION}", 2),
    ]
    assert [unit["handed_to_writer"] for unit in units] == [False, True]
    assert network.records(PRIVATE) == {}

    # And when the writer applies the run, every record comes (home's public ones too); applied again, nothing
    applied = write(lambdas, scheduled["run"])
    assert (applied["added"], applied["removed"], applied["failures"]) == (3 * 3 + 2 * 2, 0, [])
    assert len(network.records(PRIVATE)) == 5
    again = write(lambdas, scheduled["run"])
    assert (again["added"], again["updated"], again["removed"]) == (0, 0, 0)


def test_a_redelivered_unit_counts_once_and_hands_the_run_on_once(network: Network, lambdas: Any, queue: str) -> None:
    network.launch("app")
    schedule(lambdas)
    sqs = boto3.client("sqs")
    body = sqs.receive_message(QueueUrl=queue)["Messages"][0]["Body"]
    sqs.send_message(QueueUrl=queue, MessageBody=body)  # the same unit again, as SQS may deliver it

    units = [work(lambdas, queue) for _ in range(3)]

    assert sorted(unit["recorded"] for unit in units) == [False, True, True]
    assert [unit["handed_to_writer"] for unit in units].count(True) == 1


def test_a_unit_that_cannot_be_scanned_keeps_its_records_and_stops_no_other(
    network: Network, lambdas: Any, queue: str, emitted: Emitted
) -> None:
    # Given records for instances in both accounts, from a first run
    app = network.launch("app")
    network.launch("worker", member=True)
    reconcile(lambdas, queue, "hour-1")
    before = network.records(PRIVATE)

    # When the member account refuses the next run's scan, and the home instance is gone meanwhile
    current().acting_as("dns_reconcile_worker")
    member = Target(MEMBER, REGION, f"arn:aws:iam::{MEMBER}:role/opsbots-member-dns")
    answer_with_error(current().clients.client("ec2", member), "DescribeInstances", "UnauthorizedOperation")
    network.home_ec2.terminate_instances(InstanceIds=[app])
    units, applied = reconcile(lambdas, queue, "hour-2")

    # Then home was reconciled all the same, the member's records were kept, and the failure was reported
    assert applied["removed"] == 3  # app's private A, its PTR and its public A
    assert [f for f in applied["failures"] if "UnauthorizedOperation" in f] == applied["failures"] != []
    assert ("worker.internal.example.com.", "A") in network.records(PRIVATE)
    assert ("app.internal.example.com.", "A") not in network.records(PRIVATE)
    assert set(network.records(PRIVATE)) < set(before)
    assert emitted("ReconcileFailures") == 1
    assert sorted(bool(unit["error"]) for unit in units) == [False, True]


def test_a_unit_that_crashes_on_every_delivery_goes_to_the_dead_letter_queue_and_keeps_its_records(
    network: Network, lambdas: Any, queue: str
) -> None:
    # Given a member instance's records, and then a member account whose answers break the worker (a bug)
    network.launch("worker", member=True)
    reconcile(lambdas, queue, "hour-1")
    current().acting_as("dns_reconcile_worker")
    member = Target(MEMBER, REGION, f"arn:aws:iam::{MEMBER}:role/opsbots-member-dns")

    def crash(**_: Any) -> None:
        raise RuntimeError("the worker cannot read this answer")

    current().clients.client("ec2", member).meta.events.register("before-call.ec2.DescribeInstances", crash)
    scheduled = schedule(lambdas, "hour-2")

    # When home's unit is done and the member's fails every delivery
    raised, answers = 0, []
    for _ in range(RECONCILE_DELIVERIES + 1):
        try:
            answers.append(work(lambdas, queue))
        except RuntimeError:
            raised += 1

    # Then each of its deliveries raised (the last too, for SQS to keep it in the dead-letter queue); on the last
    # it was recorded failed, which completed the run, and the writer kept its records
    assert raised == RECONCILE_DELIVERIES
    assert [answer["handed_to_writer"] for answer in answers] == [False]
    applied = write(lambdas, scheduled["run"])
    assert applied["removed"] == 0
    assert any("RuntimeError: the worker cannot read this answer" in failure for failure in applied["failures"])
    assert ("worker.internal.example.com.", "A") in network.records(PRIVATE)


def test_a_run_applied_late_leaves_alone_what_events_changed_after_its_scans(
    network: Network, lambdas: Any, queue: str
) -> None:
    # Given a run whose units were scanned while `old` ran and `new` did not exist yet
    old = network.launch("old")
    scheduled = schedule(lambdas)
    units = [work(lambdas, queue) for _ in range(scheduled["queued"])]
    assert sum(unit["instances"] for unit in units) == 1

    # When, before the writer gets to the run, `new` starts and `old` ends, and their events are handled
    new = network.launch("new")
    deliver(lambdas, new, "running")
    deliver(lambdas, old, "running")
    network.home_ec2.terminate_instances(InstanceIds=[old])
    deliver(lambdas, old, "terminated")
    applied = write(lambdas, scheduled["run"])

    # Then the run neither takes away the new instance's records nor brings back the old one's
    assert (applied["added"], applied["removed"]) == (0, 0)
    assert ("new.internal.example.com.", "A") in network.records(PRIVATE)
    assert ("old.internal.example.com.", "A") not in network.records(PRIVATE)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "not a unit's message"),
        (UnitRequest("dns-never-scheduled", HOME, REGION).to_message(), "never started by the scheduler"),
        (UnitRequest("dns-hour-1", "999999999999", REGION).to_message(), "not one the bots work in"),
        (UnitRequest("dns-hour-1", MEMBER, "ap-south-2").to_message(), "is not one of account"),
    ],
)
def test_a_message_the_scheduler_never_wrote_is_dropped_unacted(
    network: Network, lambdas: Any, queue: str, body: str, reason: str
) -> None:
    schedule(lambdas)
    boto3.client("sqs").purge_queue(QueueUrl=queue)
    boto3.client("sqs").send_message(QueueUrl=queue, MessageBody=body)

    assert reason in work(lambdas, queue)["rejected"]


@pytest.mark.parametrize(
    ("run", "reason"),
    [
        ("dns-never-scheduled", "whose units are all done"),
        ("dns-hour-1", "whose units are all done"),  # scheduled, but no unit done yet
        ("../../etc", "is not valid"),
    ],
)
def test_a_run_the_writer_is_handed_must_be_a_completed_one(
    network: Network, lambdas: Any, queue: str, run: str, reason: str
) -> None:
    network.launch("app")
    schedule(lambdas)

    answer = write(lambdas, run)

    assert reason in answer["rejected"]
    assert network.records(PRIVATE) == {}


class RefusingLargeScans(Runs):
    """The runs table, as it is with a unit whose scan is over what one item holds."""

    def record(self, run: str, unit: str, result: object) -> bool:
        if isinstance(result, UnitScan) and result.instances:
            raise ResultTooLargeError("1,234,567 bytes compressed: over the 350,000 one item holds")
        return super().record(run, unit, result)


def test_a_scan_too_large_to_store_is_recorded_as_failed_so_its_unit_keeps_its_records(
    network: Network, queue: str
) -> None:
    network.launch("app")
    runs = RefusingLargeScans(boto3.client("dynamodb"), os.environ[RUNS])
    runs.start("dns-big", datetime.now(UTC), 1)
    writer = HandedRuns()
    runtime = current().acting_as("dns_reconcile_worker")
    body = UnitRequest("dns-big", HOME, REGION).to_message()

    answer = reconcile_worker(body, 1, policies=runtime.policies, clients=runtime.clients, runs=runs, writer=writer)

    assert answer["recorded"] is True
    assert "1 instances, too many to store" in answer["error"]
    assert writer.runs == ["dns-big"]
    [stored] = runs.results("dns-big", UnitScan)
    assert stored.error == answer["error"]


def test_one_item_holds_a_unit_s_result_compressed_up_to_a_limit(estate: Any) -> None:
    runs = Runs(boto3.client("dynamodb"), create_table(boto3.client("dynamodb"), "RunsTable"))
    runs.start("dns-big", datetime.now(UTC), 1)

    with pytest.raises(ResultTooLargeError, match="one item holds"):
        runs.record("dns-big", f"{HOME}/{REGION}", os.urandom(400_000).hex())  # incompressible
    assert runs.record("dns-big", f"{HOME}/{REGION}", "x" * 4_000_000)  # 4 MB that compresses to a few KB
    assert runs.results("dns-big", str) == ["x" * 4_000_000]
