"""The snapshot bot against moto: member accounts through their role, DR copies, failures, duplicates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalice.test import Client

from chalicelib.aws import Target, tags_of
from chalicelib.bots import SNAPSHOT_QUEUE
from chalicelib.runtime import current
from chalicelib.settings import POLICIES_DIR
from chalicelib.snapshots.decisions import MANAGED, POLICY, Unit
from tests.support.aws import HOME, MEMBER, REGION, ROOT, load_event
from tests.support.estate import SENDER, Estate, add_sandbox_account, member_client, sent_emails
from tests.support.faults import Faults, answer_with_error, body_names
from tests.support.snapshots import DR_REGION, FIRST_RUN, run, snapshots_of, volume, work


def test_the_schedule_snapshots_selected_volumes_in_every_account(
    estate: Estate, lambdas: Any, policies_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an hourly policy (due whatever the time), tagged volumes in home and the member account
    path = policies_dir / "snapshots.yml"
    path.write_text(path.read_text().replace("every: 24h", "every: 1h"))
    monkeypatch.setenv(POLICIES_DIR, str(policies_dir))
    home = volume(estate.home_ec2, Backup="daily", Team="web")
    member = volume(estate.member_ec2, Backup="daily")
    untagged = volume(estate.home_ec2)

    # When the hourly schedule fires
    result = lambdas.invoke("take_snapshots", load_event("scheduled-event")).payload

    # Then each tagged volume has one snapshot, marked as opsbots', with its own tags copied
    assert (result["taken"], result["failed"]) == (2, [])
    [taken] = snapshots_of(estate.home_ec2, home)
    tags = tags_of(taken["Tags"])
    assert (tags[MANAGED], tags[POLICY], tags["Team"], tags["opsbots:volume"]) == ("true", "daily", "web", home)
    assert len(snapshots_of(estate.member_ec2, member)) == 1
    assert snapshots_of(estate.home_ec2, untagged) == []


def test_a_second_run_in_the_window_and_a_duplicate_message_take_nothing(estate: Estate) -> None:
    home = volume(estate.home_ec2, Backup="daily")
    assert run(FIRST_RUN)["taken"] == 1

    again = run(FIRST_RUN + timedelta(hours=1))
    unit = Unit(HOME, "home", REGION, None, ("daily",), FIRST_RUN)
    duplicates = work([unit.to_message(), unit.to_message()])

    assert (again["taken"], again["present"]) == (0, 1)
    assert (duplicates["taken"], duplicates["present"]) == (0, 2)
    assert len(snapshots_of(estate.home_ec2, home)) == 1


def test_the_worker_takes_a_queued_unit(estate: Estate) -> None:
    from app import app

    member = volume(estate.member_ec2, Backup="daily")
    # (the deployed worker reads its own clock: the unit is this hour's)
    unit = Unit(MEMBER, "workloads", REGION, None, ("daily",), datetime.now(UTC))
    with Client(app, stage_name="dev", project_dir=str(ROOT)) as client:
        event = client.events.generate_sqs_event(message_bodies=[unit.to_message(), "not json"])
        result = client.lambda_.invoke("snapshot_worker", event).payload

    assert result["taken"] == 1
    assert len(snapshots_of(estate.member_ec2, member)) == 1


def test_retention_prunes_only_owned_snapshots_and_copies_survive_in_the_dr_region(estate: Estate) -> None:
    # Given a volume with a hand-made snapshot, and eleven daily runs (two an hour apart each day)
    home = volume(estate.home_ec2, Backup="daily")
    by_hand = estate.home_ec2.create_snapshot(VolumeId=home, Description="before the upgrade")["SnapshotId"]
    for day in range(40):
        for hour in (1, 2):
            run(FIRST_RUN + timedelta(days=day, hours=hour - 1))

    # Then the source region keeps the newest 7 and anything younger than 30 days: 30 + the hand-made one
    kept = snapshots_of(estate.home_ec2, home)
    assert by_hand in {s["SnapshotId"] for s in kept}
    assert len(kept) == 30 + 1
    # And the DR region keeps 3 copies, each naming its source
    copies = boto3.client("ec2", region_name=DR_REGION).describe_snapshots(OwnerIds=["self"])["Snapshots"]
    assert len(copies) in (3, 4)  # the newest copy is made after that run's pruning
    assert all(any(t["Key"] == "opsbots:copy-of" for t in c["Tags"]) for c in copies)


def test_one_failing_account_does_not_stop_the_others(
    estate: Estate, policies_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a second member account whose role is denied
    accounts = policies_dir / "accounts.yml"
    accounts.write_text(accounts.read_text() + '  - id: "333333333333"\n    name: broken\n')
    monkeypatch.setenv(POLICIES_DIR, str(policies_dir))
    current.cache_clear()
    broken = current().clients.client(
        "ec2", Target("333333333333", REGION, "arn:aws:iam::333333333333:role/opsbots-member-snapshots")
    )
    answer_with_error(broken, "DescribeSnapshots", "UnauthorizedOperation")
    home = volume(estate.home_ec2, Backup="daily")

    result = run(FIRST_RUN)

    assert len(snapshots_of(estate.home_ec2, home)) == 1
    assert [failure.split(":")[0] for failure in result["failed"]] == [f"333333333333/{REGION}"]


def test_a_snapshot_in_use_is_kept_and_the_run_goes_on(estate: Estate) -> None:
    # Given every deletion in the source region refused as in use (by an AMI, say)
    home = volume(estate.home_ec2, Backup="daily")
    home_ec2 = current().clients.client("ec2", current().clients.home(REGION))
    answer_with_error(home_ec2, "DeleteSnapshot", "InvalidSnapshot.InUse", 400)

    # When forty daily runs would each prune the oldest
    results = [run(FIRST_RUN + timedelta(days=day)) for day in range(40)]

    # Then every snapshot is kept, and no run counts that as a failure
    assert all(result["failed"] == [] for result in results)
    assert len(snapshots_of(estate.home_ec2, home)) == 40


def test_a_deletion_that_fails_leaves_its_snapshot_owned_and_the_next_run_prunes_it(estate: Estate) -> None:
    # Given thirty daily snapshots, then a run four days later that prunes the four oldest at once (each unit
    # deletes UNIT_CALLS at a time), the oldest's deletion refused once
    home = volume(estate.home_ec2, Backup="daily")
    for day in range(30):
        run(FIRST_RUN + timedelta(days=day))
    oldest = min(snapshots_of(estate.home_ec2, home), key=lambda snapshot: snapshot["StartTime"])["SnapshotId"]
    faults = Faults()
    faults.fail("ec2", "DeleteSnapshot", "denied", times=1, when=body_names(oldest))
    faults.on(current().clients.client("ec2", current().clients.home(REGION)))

    refused = run(FIRST_RUN + timedelta(days=33))

    # Then that one failure is reported, the others are pruned, and the oldest is still the bot's: the next run
    # prunes it (the ledger forgot exactly the snapshots deleted)
    assert [failure for failure in refused["failed"] if oldest in failure] == refused["failed"] != []
    assert oldest in {snapshot["SnapshotId"] for snapshot in snapshots_of(estate.home_ec2, home)}
    run(FIRST_RUN + timedelta(days=34))
    assert oldest not in {snapshot["SnapshotId"] for snapshot in snapshots_of(estate.home_ec2, home)}


def test_a_member_snapshot_is_taken_with_the_member_role(estate: Estate) -> None:
    member = volume(estate.member_ec2, Backup="daily")
    run(FIRST_RUN)
    [snapshot] = snapshots_of(member_client("ec2"), member)
    assert snapshot["OwnerId"] == MEMBER


@pytest.mark.parametrize("copy_tags", ["true", "false"])
def test_instance_consistency_snapshots_an_instances_volumes_in_one_call(
    estate: Estate, policies_dir: Path, monkeypatch: pytest.MonkeyPatch, copy_tags: str
) -> None:
    # Given a policy selecting by instance tag, crash-consistent
    path = policies_dir / "snapshots.yml"
    text = path.read_text().replace("select: {tags: {Backup: daily}}", "select: {instance_tags: {Backup: daily}}")
    text = text.replace("copy_tags: true", f"copy_tags: {copy_tags}")
    path.write_text(text.replace("consistency: volume", "consistency: instance"))
    monkeypatch.setenv(POLICIES_DIR, str(policies_dir))
    current.cache_clear()
    instance = estate.home_ec2.run_instances(
        ImageId="ami-12345678",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Backup", "Value": "daily"}]}],
    )["Instances"][0]["InstanceId"]
    calls: list[str] = []
    ec2 = current().clients.client("ec2", current().clients.home(REGION))
    ec2.meta.events.register("before-call.ec2.*", lambda model, **_: calls.append(model.name))

    result = run(FIRST_RUN)

    assert result["taken"] >= 1
    assert "CreateSnapshots" in calls
    assert "CreateSnapshot" not in calls
    taken = estate.home_ec2.describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": "tag:opsbots:instance", "Values": [instance]}]
    )
    assert len(taken["Snapshots"]) == result["taken"]


def test_with_a_queue_the_run_fans_out_one_message_per_unit(estate: Estate, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the queue the template creates
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName="opsbots-snapshots")["QueueUrl"]
    monkeypatch.setenv(SNAPSHOT_QUEUE, queue_url)
    current.cache_clear()
    home, member = volume(estate.home_ec2, Backup="daily"), volume(estate.member_ec2, Backup="daily")

    # When the schedule runs, it only queues: one message per account x region
    assert run(FIRST_RUN) == {"queued": 2}
    assert snapshots_of(estate.home_ec2, home) == []
    bodies = [m["Body"] for m in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]]

    # Then the worker, given those messages, takes the snapshots in both accounts
    result = work(bodies)
    assert (result["units"], result["taken"]) == (2, 2)
    assert len(snapshots_of(estate.home_ec2, home)) == len(snapshots_of(estate.member_ec2, member)) == 1


def test_a_failure_email_ses_refused_is_sent_by_the_next_run(
    estate: Estate, idempotency_table: str, policies_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an account whose role refuses us (every run fails there), and SES refusing the sender
    add_sandbox_account(policies_dir, monkeypatch)
    volume(estate.home_ec2, Backup="daily")
    ses = boto3.client("sesv2")
    ses.delete_email_identity(EmailIdentity=SENDER)

    # When a run fails there, its failure email is parked, not lost
    assert len(run(FIRST_RUN)["failed"]) == 1
    assert sent_emails() == []

    # Then the next run, SES back, sends it first, marked as late, and then its own
    ses.create_email_identity(EmailIdentity=SENDER)
    assert len(run(FIRST_RUN + timedelta(hours=1))["failed"]) == 1
    delayed, fresh = sent_emails()
    assert "This email was delayed: SES refused it at" in delayed.body
    assert "This email was delayed" not in fresh.body
