"""The snapshot bot's promises as an attacker or an unlucky operator tries them (issue 14, snapshots):

1. Tags are not proof: a hand-made snapshot carrying opsbots' tags is never pruned nor counted.
2. A DR region that is also a source region keeps its primaries and its copies apart.
3. One bad volume does not stop its account: the others are taken, pruned and copied.
4. A queue message is a request, not a command: forged time, unlisted account, SQS refusals.
5. A missed hour costs nothing: every run of a window works on it; the window is the scheduled event's.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from chalicelib.aws import HOME as HOME_KEY
from chalicelib.aws import Target
from chalicelib.bots import SNAPSHOT_QUEUE
from chalicelib.fanout import NotQueuedError
from chalicelib.runtime import current
from chalicelib.settings import POLICIES_DIR
from chalicelib.snapshots.decisions import MANAGED, POLICY, VOLUME, WINDOW, Unit, window_tag
from tests.support.aws import HOME, MEMBER, REGION, load_event
from tests.support.estate import Estate
from tests.support.faults import Faults, body_names
from tests.support.lambdas import Emitted
from tests.support.snapshots import DR_REGION, FIRST_RUN, run, snapshots_of, volume, work

DAILY = """\
policies:
  - name: daily
    every: 24h
    select: {tags: {Backup: daily}}
    regions: [eu-west-1, eu-central-1]
    retention: {count: 7}
    copy_to: {region: eu-central-1, retention: {count: 1}}
"""


def use_policy(policies_dir: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    (policies_dir / "snapshots.yml").write_text(text)
    accounts = policies_dir / "accounts.yml"
    accounts.write_text(accounts.read_text().replace("regions: [eu-west-1]", "regions: [eu-west-1, eu-central-1]", 1))
    monkeypatch.setenv(POLICIES_DIR, str(policies_dir))
    current.cache_clear()


def ours_tags(policy: str, window: datetime, volume_id: str) -> list[dict[str, str]]:
    tags = {MANAGED: "true", POLICY: policy, WINDOW: window_tag(window), VOLUME: volume_id}
    return [{"Key": key, "Value": value} for key, value in tags.items()]


# ----- 1. tags are not proof of ownership -----------------------------------------------------------


def test_a_golden_snapshot_carrying_opsbots_tags_is_never_pruned_nor_counted(estate: Estate, emitted: Emitted) -> None:
    # Given a volume, and a hand-made "golden" snapshot of it that someone tagged exactly like opsbots' own,
    # for an old window and for today's
    home = volume(estate.home_ec2, Backup="daily")
    golden = estate.home_ec2.create_snapshot(VolumeId=home, Description="golden image, keep forever")["SnapshotId"]
    estate.home_ec2.create_tags(Resources=[golden], Tags=ours_tags("daily", FIRST_RUN - timedelta(days=60), home))
    today = estate.home_ec2.create_snapshot(VolumeId=home, Description="manual")["SnapshotId"]
    estate.home_ec2.create_tags(Resources=[today], Tags=ours_tags("daily", FIRST_RUN, home))

    # When runs go on for 40 days with the shipped retention (newest 7, older than 30 days)
    results = [run(FIRST_RUN + timedelta(days=day)) for day in range(40)]

    # Then both hand-made snapshots survive; the first run still took today's, not fooled by the spoof
    kept = {s["SnapshotId"] for s in snapshots_of(estate.home_ec2, home)}
    assert {golden, today} <= kept
    assert results[0]["taken"] == 1
    assert len(kept) == 2 + 30  # the two, and opsbots' own younger than 30 days (more than the newest 7)
    # And every run reported them as foreign (its summary, a log line, the ForeignSnapshots metric)
    assert all(result["foreign"] == 2 for result in results)
    assert emitted("ForeignSnapshots") == 2 * len(results)


def test_a_snapshot_the_bot_took_is_pruned_even_with_its_tags_edited(estate: Estate) -> None:
    # Given opsbots' own snapshot, whose window tag someone moved into the future to keep it
    home = volume(estate.home_ec2, Backup="daily")
    run(FIRST_RUN)
    [ours] = snapshots_of(estate.home_ec2, home)
    estate.home_ec2.create_tags(Resources=[ours["SnapshotId"]], Tags=[{"Key": WINDOW, "Value": "2999-01-01T00:00:00Z"}])

    # When retention is due for it, the ledger's window decides
    for day in range(1, 40):
        run(FIRST_RUN + timedelta(days=day))

    assert ours["SnapshotId"] not in {s["SnapshotId"] for s in snapshots_of(estate.home_ec2, home)}


# ----- 2. the DR region's own snapshots are not copies ----------------------------------------------


def test_a_dr_region_that_is_also_a_source_keeps_its_primaries_and_copies_apart(
    estate: Estate, policies_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given eu-central-1 both a source region (a volume there) and the DR region (copies keep 1)
    use_policy(policies_dir, monkeypatch, DAILY)
    dr_ec2 = boto3.client("ec2", region_name=DR_REGION)
    here = volume(estate.home_ec2, Backup="daily")
    there = dr_ec2.create_volume(
        AvailabilityZone=f"{DR_REGION}a",
        Size=1,
        TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "Backup", "Value": "daily"}]}],
    )["VolumeId"]

    # When ten daily runs go by
    for day in range(10):
        run(FIRST_RUN + timedelta(days=day))

    # Then the DR region's own volume keeps its newest 7 primaries, and the one just taken (the copies'
    # retention of 1 never touched them), and is not copied into its own region
    def primaries_of(volume_id: str) -> list[dict[str, Any]]:
        found = dr_ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
        return [
            s
            for s in found
            if s["VolumeId"] == volume_id and not any(t["Key"] == "opsbots:copy-of" for t in s.get("Tags", []))
        ]

    assert len(primaries_of(there)) == 7 + 1
    # And the copies of eu-west-1's volume are pruned to 1 by their own retention (not the primaries' 7)
    copies = [
        s
        for s in dr_ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
        if any(t["Key"] == "opsbots:copy-of" for t in s.get("Tags", []))
    ]
    assert {t["Value"] for c in copies for t in c["Tags"] if t["Key"] == VOLUME} == {here}
    assert len(copies) in (1, 2)  # the newest copy is made after that run's pruning
    assert len(snapshots_of(estate.home_ec2, here)) == 7 + 1


# ----- 3. one bad volume must not stop an account ---------------------------------------------------


def test_one_volume_that_fails_does_not_stop_the_others_nor_prune_and_copy(estate: Estate) -> None:
    # Given four volumes, and EC2 refusing every snapshot of the one that sorts first
    volumes = sorted(volume(estate.home_ec2, Backup="daily") for _ in range(4))
    bad = volumes[0]
    faults = Faults()
    faults.fail("ec2", "CreateSnapshot", "denied", times=None, when=body_names(bad))
    faults.on(current().clients.client("ec2", Target(HOME_KEY, REGION)))

    # When six daily runs go by
    results = [run(FIRST_RUN + timedelta(days=day)) for day in range(6)]

    # Then the three others are backed up every day and copied, and the bad one is reported each run, by id
    assert [result["taken"] for result in results] == [3] * 6
    assert all(len(snapshots_of(estate.home_ec2, v)) == 6 for v in volumes[1:])
    assert sum(result["copied"] for result in results) > 0
    assert all(any(bad in failure for failure in result["failed"]) for result in results)


# ----- 4. a queue message is not a command ----------------------------------------------------------


def test_a_forged_message_from_the_future_deletes_nothing(estate: Estate, emitted: Emitted) -> None:
    # Given thirty days of snapshots kept by max_age (30 days)
    home = volume(estate.home_ec2, Backup="daily")
    for day in range(10):
        run(FIRST_RUN + timedelta(days=day))
    before = len(snapshots_of(estate.home_ec2, home))

    # When a message claiming it is the year 9999 reaches the worker
    forged = json.dumps(
        {"account_id": HOME, "region": REGION, "policies": ["daily"], "now": "9999-01-01T00:00:00+00:00"}
    )
    result = work([forged], at=FIRST_RUN + timedelta(days=10))

    # Then it is rejected, and nothing is deleted
    assert result["units"] == 0
    assert len(snapshots_of(estate.home_ec2, home)) == before == 10
    assert emitted("MalformedEvents") == 1


def test_a_message_for_an_account_not_listed_is_rejected(estate: Estate) -> None:
    unlisted = Unit(
        "999999999999", "x", REGION, "arn:aws:iam::999999999999:role/opsbots-member-snapshots", ("daily",), FIRST_RUN
    )
    assert work([unlisted.to_message()])["units"] == 0


def test_the_worker_takes_the_role_from_accounts_yml_not_the_message(estate: Estate) -> None:
    # Given a message for the member account that names another role (an older scheduler could write it)
    member = volume(estate.member_ec2, Backup="daily")
    body = json.loads(Unit(MEMBER, "x", REGION, None, ("daily",), FIRST_RUN).to_message())
    body["role_arn"] = f"arn:aws:iam::{MEMBER}:role/Admin"
    assume_role = []
    sts = current().clients.client("sts", Target(HOME_KEY, REGION))
    sts.meta.events.register("provide-client-params.sts.AssumeRole", lambda params, **_: assume_role.append(params))

    assert work([json.dumps(body)])["taken"] == 1

    assert len(snapshots_of(estate.member_ec2, member)) == 1
    assert [call["RoleArn"] for call in assume_role] == [f"arn:aws:iam::{MEMBER}:role/opsbots-member-snapshots"]


def refuse_entries(sqs: Any, times: int | None) -> None:
    """SQS answers the first entry of a batch as failed, `times` times (None: always)."""
    refused = {"left": times}

    def after(parsed: dict[str, Any], **_: Any) -> None:
        if refused["left"] == 0 or not parsed.get("Successful"):
            return
        refused["left"] = None if refused["left"] is None else refused["left"] - 1
        first = parsed["Successful"].pop(0)
        parsed["Failed"] = [{"Id": first["Id"], "SenderFault": False, "Code": "InternalError", "Message": "injected"}]

    sqs.meta.events.register("after-call.sqs.SendMessageBatch", after)


@pytest.mark.parametrize(("refusals", "queued"), [(1, True), (None, False)])
def test_unit_messages_sqs_refuses_are_sent_again_or_the_run_fails(
    estate: Estate, monkeypatch: pytest.MonkeyPatch, emitted: Emitted, refusals: int | None, queued: bool
) -> None:
    queue_url = boto3.client("sqs").create_queue(QueueName="opsbots-snapshots")["QueueUrl"]
    monkeypatch.setenv(SNAPSHOT_QUEUE, queue_url)
    current.cache_clear()
    refuse_entries(current().clients.client("sqs", Target(HOME_KEY, REGION)), refusals)

    if queued:
        assert run(FIRST_RUN) == {"queued": 2}
    else:
        with pytest.raises(NotQueuedError, match="refused 1 unit message"):
            run(FIRST_RUN)
        assert emitted("SnapshotUnitsNotQueued") == 1


# ----- 5. a missed hour does not cost a day's backup ------------------------------------------------


def test_a_run_late_in_the_window_still_takes_the_days_snapshot(estate: Estate, lambdas: Any) -> None:
    # Given the schedule missed 00:00 to 10:00 UTC (an outage, a role fixed at 10:00)
    home = volume(estate.home_ec2, Backup="daily")
    event = load_event("scheduled-event")
    event["time"] = "2026-11-23T10:00:00Z"

    # When the 10:00 run comes, delivered twice
    first = lambdas.invoke("take_snapshots", event).payload
    again = lambdas.invoke("take_snapshots", event).payload

    # Then the day's snapshot is taken, for the window of the scheduled event's time
    [taken] = snapshots_of(estate.home_ec2, home)
    assert {t["Key"]: t["Value"] for t in taken["Tags"]}[WINDOW] == "2026-11-23T00:00:00Z"
    assert (first["taken"], again["taken"], again["present"]) == (1, 0, 1)


def test_at_shifts_the_window_to_an_off_peak_start(
    estate: Estate, policies_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_policy(policies_dir, monkeypatch, DAILY.replace("every: 24h", 'every: 24h\n    at: "03:00"'))
    home = volume(estate.home_ec2, Backup="daily")

    # A run at 02:00 belongs to the window that began at 03:00 the day before; one at 03:00 to a new one
    assert run(datetime(2026, 11, 23, 2, tzinfo=UTC))["taken"] == 1
    assert run(datetime(2026, 11, 23, 2, 59, tzinfo=UTC))["taken"] == 0
    assert run(datetime(2026, 11, 23, 3, tzinfo=UTC))["taken"] == 1
    windows = sorted({t["Key"]: t["Value"] for t in s["Tags"]}[WINDOW] for s in snapshots_of(estate.home_ec2, home))
    assert windows == ["2026-11-22T03:00:00Z", "2026-11-23T03:00:00Z"]


def test_a_ledger_outage_keeps_backups_going_and_deletes_nothing(estate: Estate, emitted: Emitted) -> None:
    # Given the ledger answering 5xx to every call
    home = volume(estate.home_ec2, Backup="daily")
    faults = Faults()
    faults.fail("dynamodb", "*", "5xx", times=None, when=body_names("opsbots-snapshot-ledger"))
    faults.on(current().clients.client("dynamodb", Target(HOME_KEY, REGION)))

    # When the schedule runs twice a day for three days
    results = [run(FIRST_RUN + timedelta(days=day, hours=hour)) for day in range(3) for hour in (0, 1)]

    # Then each day's snapshot is taken once (the tags tell a window done), nothing is pruned, and it is reported
    assert [result["taken"] for result in results] == [1, 0] * 3
    assert all(result["pruned"] == 0 for result in results)
    assert all(any("the ledger is unavailable" in failure for failure in result["failed"]) for result in results)
    assert len(snapshots_of(estate.home_ec2, home)) == 3
    assert emitted("LedgerUnavailable") == 2 * len(results)  # each run, in each of its two units
