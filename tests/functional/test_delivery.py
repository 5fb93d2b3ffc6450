"""At-least-once and out-of-order delivery, for every handler.

Each scenario is a list of steps: a change made in the estate and the event that reports it. It is
played three times in one estate, on its own resources each time:
- in order: each event handled right after its change;
- newest first, each event twice in a row: the same event twice, and every old event after newer ones;
- shuffled with duplicates.
In the last two every change is made first and the events arrive late. The end state of each copy
must equal the in-order copy's, and no email may be sent twice. The schedules are checked as the same
scheduled event delivered twice, and the snapshot worker as repeated SQS messages; those two carry
the run-once guard over the idempotency table that `app.py` passes them.
"""

from __future__ import annotations

import io
import random
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from chalice.test import Client
from PIL import Image

from chalicelib import dedupe
from chalicelib.runtime import current
from chalicelib.security_groups.handlers import sweep
from chalicelib.snapshots.decisions import WINDOW, Unit
from chalicelib.snapshots.handlers import schedule_snapshots, snapshot_deps, work_on
from chalicelib.snapshots.policy import SnapshotsPolicy
from tests.support.aws import HOME, MEMBER, REGION, ROOT, load_event
from tests.support.dns import Network, state_event
from tests.support.estate import SANDBOX, Estate, add_sandbox_account, sent_emails, tcp
from tests.support.faults import report_faults
from tests.support.lambdas import LambdaContext, calls_to
from tests.support.pictures import jpeg
from tests.support.security_groups import SSH_EVENT_GROUP, SSH_EVENT_RULE
from tests.support.snapshots import FIRST_RUN, snapshots_of, volume

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

Step = tuple[Callable[[], Any], dict[str, Any]]  # a change in the estate, and the event reporting it
Order = Callable[[list[Any]], list[Any]] | None


def newest_first_each_twice(events: list[Any]) -> list[Any]:
    return [event for event in reversed(events) for _ in range(2)]


def shuffled_with_duplicates(events: list[Any]) -> list[Any]:
    return random.Random(20250614).sample(events * 2, 2 * len(events))


ORDERS: dict[str, Order] = {
    "in-order": None,
    "newest-first-each-twice": newest_first_each_twice,
    "shuffled-with-duplicates": shuffled_with_duplicates,
}


def deliver(steps: list[Step], order: Order, handle: Callable[[dict[str, Any]], Any]) -> None:
    if order is None:
        for change, event in steps:
            change()
            handle(event)
        return
    for change, _ in steps:
        change()
    for event in order([event for _, event in steps]):
        handle(event)


def in_every_order(scenario: Callable[[int, str], list[Step]], handle: Callable[[dict[str, Any]], Any]) -> None:
    """Play a copy of the scenario per order; `scenario(n, copy)` builds copy n's steps on its own resources."""
    for n, (copy, order) in enumerate(ORDERS.items()):
        deliver(scenario(n, copy), order, handle)


@pytest.fixture(scope="module", autouse=True)
def _faults_summary(request: pytest.FixtureRequest) -> Iterator[None]:
    yield from report_faults(request)


@pytest.fixture
def app_client(estate: Estate) -> Iterator[Client]:
    from app import app

    with Client(app, stage_name="dev", project_dir=str(ROOT)) as client:
        yield client


# ----- on_security_group_change --------------------------------------------------------------------


def authorize_event(group: str, rule: str, port: int, cidr: str, event_id: str) -> dict[str, Any]:
    """CloudTrail's event for one ingress rule just created."""
    event = load_event("sg-authorize-ingress-ssh-world", **{SSH_EVENT_GROUP: group, SSH_EVENT_RULE: rule})
    event["id"] = event_id
    [created] = event["detail"]["responseElements"]["securityGroupRuleSet"]["items"]
    created.update(fromPort=port, toPort=port, cidrIpv4=cidr)
    [requested] = event["detail"]["requestParameters"]["ipPermissions"]["items"]
    requested.update(fromPort=port, toPort=port, ipRanges={"items": [{"cidrIp": cidr}]})
    return event


def test_security_group_events(estate: Estate, app_client: Client, idempotency_table: str) -> None:
    # Given, in two groups, SSH and RDP opened to the world, and a web and an internal rule that are fine
    rules: dict[str, dict[str, str]] = {}  # copy -> rule name -> rule id
    groups: dict[str, set[str]] = {}

    def scenario(n: int, copy: str) -> list[Step]:
        first, second = estate.group(), estate.group()
        groups[copy], rules[copy] = {first, second}, {}

        def opens(name: str, group: str, port: int, cidr: str) -> Step:
            event: dict[str, Any] = {}  # the rule id is known once the rule exists

            def change() -> None:
                [rules[copy][name]] = estate.authorize(group, [tcp(port, cidr)])
                event_id = f"d2e84a1f-5b6c-9037-e1d4-{n:04d}{len(rules[copy]):08d}"
                event.update(authorize_event(group, rules[copy][name], port, cidr, event_id))

            return change, event

        return [
            opens("ssh", first, 22, "0.0.0.0/0"),
            opens("web", first, 443, "0.0.0.0/0"),
            opens("rdp", second, 3389, "0.0.0.0/0"),
            opens("internal", second, 22, "10.0.0.0/8"),
        ]

    revokes = calls_to("ec2.RevokeSecurityGroupIngress", current().clients.home(REGION))

    in_every_order(scenario, lambda event: app_client.lambda_.invoke("on_security_group_change", event))

    # Then every copy ends as the in-order one: the two violations gone, one email about each
    emails = [email.body for email in sent_emails()]

    def state(copy: str) -> tuple[list[str], list[str], int]:
        remaining = set().union(*(estate.rule_ids(group) for group in groups[copy]))
        ids = rules[copy]
        kept = sorted(name for name, rule in ids.items() if rule in remaining)
        emailed = sorted(name for name, rule in ids.items() for body in emails if f"revoked {rule}" in body)
        return kept, emailed, sum(any(rule in body for rule in ids.values()) for body in emails)

    assert state("in-order") == (["internal", "web"], ["rdp", "ssh"], 2)
    for copy in ORDERS:
        assert state(copy) == state("in-order"), copy
    assert len(emails) == 2 * len(ORDERS)
    # And a redelivery may revoke again (a rule already gone is a no-op), but only ever a violating rule
    violating = {ids[name] for ids in rules.values() for name in ("ssh", "rdp")}
    assert {rule for call in revokes for rule in call["SecurityGroupRuleIds"]} == violating


# ----- on_instance_state_change, reconcile_dns ------------------------------------------------------


def test_instance_state_events(network: Network, app_client: Client) -> None:
    # Given one instance that keeps running, one started then stopped, one started then terminated
    ec2 = network.home_ec2

    def scenario(n: int, copy: str) -> list[Step]:
        ids = {name: network.launch(f"{copy}-{name}") for name in ("stays", "stops", "ends")}
        ec2.stop_instances(InstanceIds=[ids["stops"], ids["ends"]])

        def start(name: str) -> Callable[[], Any]:
            return lambda: ec2.start_instances(InstanceIds=[ids[name]])

        steps: list[Step] = [
            (start("stays"), state_event(ids["stays"], "running")),
            (start("stops"), state_event(ids["stops"], "running")),
            (start("ends"), state_event(ids["ends"], "running")),
            (lambda: ec2.stop_instances(InstanceIds=[ids["stops"]]), state_event(ids["stops"], "stopped")),
            (lambda: ec2.terminate_instances(InstanceIds=[ids["ends"]]), state_event(ids["ends"], "terminated")),
        ]
        for step, (_, event) in enumerate(steps):
            event["id"] = f"a84e2d17-c3b9-4f60-e5a1-{n:04d}{step:08d}"
        return steps

    in_every_order(scenario, lambda event: app_client.lambda_.invoke("on_instance_state_change", event))

    # Then in every copy only the running instance has names, as in order
    def state(copy: str) -> list[tuple[str, str, str]]:
        """The copy's records, its prefix removed (a PTR's name is the address: only its target counts)."""
        return sorted(
            (
                name.removeprefix(f"{copy}-") if kind != "PTR" else "<address>",
                kind,
                value.removeprefix(f"{copy}-") if kind not in ("A", "AAAA") else "<address>",
            )
            for zone in network.zones
            for (name, kind), values in network.records(zone).items()
            for value in values
            if name.startswith(f"{copy}-") or value.startswith(f"{copy}-")
        )

    assert [(name, kind) for name, kind, _ in state("in-order")] == [
        ("<address>", "PTR"),
        ("stays.example.com.", "A"),
        ("stays.internal.example.com.", "A"),
    ]
    for copy in ORDERS:
        assert state(copy) == state("in-order"), copy
    # And the same scheduled reconcile twice names a member instance no event reported, then changes nothing
    network.launch("worker", member=True)
    scheduled = load_event("scheduled-event")
    first = app_client.lambda_.invoke("reconcile_dns", scheduled).payload
    before = {zone: network.records(zone) for zone in network.zones}
    again = app_client.lambda_.invoke("reconcile_dns", scheduled).payload
    # (its private A and PTR: a public zone names only the home account's instances, by default)
    assert (first["added"], first["updated"], first["removed"]) == (2, 0, 0)
    assert (again["added"], again["updated"], again["removed"], again["conflicts"]) == (0, 0, 0, [])
    assert {zone: network.records(zone) for zone in network.zones} == before


# ----- on_image_uploaded -------------------------------------------------------------------------------


def upload(s3: S3Client, key: str, body: bytes, *, later: bool = False) -> Step:
    """An upload and its EventBridge event, completed with the ETag and version once uploaded."""
    event = load_event("s3-object-created")
    event["id"] = f"27d9c4e1-{key}-{len(body)}"

    def change() -> None:
        if later:  # S3 times uploads to the second: make this one later than the others, whatever the key
            time.sleep(1.01 - time.time() % 1)
        response = s3.put_object(Bucket="photos-upload", Key=key, Body=body)
        event["account"] = HOME
        event["detail"]["object"] = {
            "key": key,
            "size": len(body),
            "etag": response["ETag"].strip('"'),
            "version-id": response.get("VersionId"),
        }

    return change, event


def png(width: int = 320, height: int = 240) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (0, 160, 0)).save(out, "PNG")
    return out.getvalue()


def test_upload_events(estate: Estate, app_client: Client) -> None:
    # Given a photo uploaded, replaced by a new version, then by a PNG of the same name, and another photo
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="photos-upload", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_bucket_versioning(Bucket="photos-upload", VersioningConfiguration={"Status": "Enabled"})
    uploads: list[dict[str, Any]] = []

    def scenario(n: int, copy: str) -> list[Step]:
        steps = [
            upload(s3, f"uploads/{copy}/photo.jpg", jpeg(320, 240, colour=(200, 0, 0))),
            upload(s3, f"uploads/{copy}/other.jpg", jpeg(240, 320)),
            upload(s3, f"uploads/{copy}/photo.jpg", jpeg(320, 240, colour=(0, 0, 200))),
            upload(s3, f"uploads/{copy}/photo.png", png(), later=True),
        ]
        uploads.extend(event["detail"] for _, event in steps)
        return steps

    in_every_order(scenario, lambda event: app_client.lambda_.invoke("on_image_uploaded", event))

    # Then in every copy each thumbnail is made from the latest upload of its name, as in order
    latest = {upload["object"]["key"]: upload["object"]["etag"] for upload in uploads}

    def state(copy: str) -> dict[str, tuple[str, bool]]:
        listed = s3.list_objects_v2(Bucket="photos-upload", Prefix=f"thumbnails/{copy}/")["Contents"]
        made = {item["Key"]: s3.head_object(Bucket="photos-upload", Key=item["Key"])["Metadata"] for item in listed}
        return {
            key.removeprefix(f"thumbnails/{copy}/"): (
                meta["opsbots-source-key"].removeprefix(f"uploads/{copy}/"),
                latest[meta["opsbots-source-key"]] == meta["opsbots-source-etag"],
            )
            for key, meta in made.items()
        }

    assert state("in-order") == {
        f"{stem}/{size}.webp": (source, True)
        for stem, source in (("photo", "photo.png"), ("other", "other.jpg"))
        for size in ("small", "large")
    }
    for copy in ORDERS:
        assert state(copy) == state("in-order"), copy


# ----- snapshot_worker ---------------------------------------------------------------------------------


def run_once(table: str) -> dedupe.Once:
    """The run-once guard the runtime builds over the idempotency table, bound to an invocation."""
    return dedupe.DynamoDBOnce(table, boto3.client("dynamodb")).bind(LambdaContext())


def one_policy_per_copy(policies_dir: Path, every: str = "24h") -> None:
    """The shipped daily policy (every `every`) once per copy of the scenario, each selecting its own volumes."""
    path = policies_dir / "snapshots.yml"
    text = path.read_text()
    head, policy = text.split("policies:\n", 1)
    copies = [
        policy.replace("name: daily", f"name: {copy}")
        .replace("{Backup: daily}", f"{{Backup: {copy}}}")
        .replace("every: 24h", f"every: {every}")
        for copy in ORDERS
    ]
    path.write_text(head + "policies:\n" + "".join(copies))


def test_snapshot_unit_messages(
    estate: Estate, idempotency_table: str, policies_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given volumes in two accounts, units for the last hour's window and this hour's (an hourly policy),
    # and a unit for an account whose role refuses us
    one_policy_per_copy(policies_dir, every="1h")
    add_sandbox_account(policies_dir, monkeypatch)
    runtime, once = current(), run_once(idempotency_table)
    volumes: dict[str, list[tuple[Any, str]]] = {}

    def message(account: str, now: datetime, copy: str) -> Step:
        role = None if account == HOME else f"arn:aws:iam::{account}:role/opsbots-member-snapshots"
        return (lambda: None), {"body": Unit(account, account, REGION, role, (copy,), now).to_message()}

    def scenario(n: int, copy: str) -> list[Step]:
        volumes[copy] = [(estate.home_ec2, volume(estate.home_ec2, Backup=copy))]
        volumes[copy].append((estate.member_ec2, volume(estate.member_ec2, Backup=copy)))
        earlier = FIRST_RUN - timedelta(hours=1)
        return [
            message(HOME, earlier, copy),
            message(MEMBER, earlier, copy),
            message(HOME, FIRST_RUN, copy),
            message(MEMBER, FIRST_RUN, copy),
            message(SANDBOX, FIRST_RUN, copy),
        ]

    def worker(message: dict[str, Any]) -> Any:  # batch_size=1: one message per invocation
        policies = runtime.policies.of(SnapshotsPolicy)
        return work_on(
            [message["body"]],
            policies=policies,
            accounts=runtime.policies.accounts,
            deps=runtime.built(snapshot_deps),
            mailer=runtime.mailer("snapshots", None),
            once=once,
            clock=lambda: FIRST_RUN + timedelta(minutes=5),
        )

    in_every_order(scenario, worker)

    # Then in every copy each volume has one snapshot per window, and the failing unit was reported once
    emails = [email.body for email in sent_emails()]

    def state(copy: str) -> tuple[list[list[str]], int]:
        tags = [[tag for snapshot in snapshots_of(ec2, vol) for tag in snapshot["Tags"]] for ec2, vol in volumes[copy]]
        windows = [sorted(tag["Value"] for tag in each if tag["Key"] == WINDOW) for each in tags]
        return windows, sum(f"{copy}: ClientError" in body for body in emails)

    assert state("in-order") == ([["2026-11-23T00:00:00Z", "2026-11-23T01:00:00Z"]] * 2, 1)
    for copy in ORDERS:
        assert state(copy) == state("in-order"), copy
    assert len(emails) == len(ORDERS)


# ----- the schedules: the same scheduled event twice ---------------------------------------------------


def test_the_same_sweep_event_twice_reverts_and_reports_once(
    estate: Estate, idempotency_table: str, policies_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an account that fails every run: each run's digest would report it
    add_sandbox_account(policies_dir, monkeypatch)
    group = estate.group()
    [rule] = estate.authorize(group, [tcp(22)])
    runtime, once = current(), run_once(idempotency_table)
    scheduled = load_event("scheduled-event")

    def run() -> dict[str, Any]:
        return sweep(
            policies=runtime.policies,
            clients=runtime.clients,
            mailer=runtime.mailer("security_groups", None),
            at=datetime.fromisoformat(scheduled["time"]),
            once=once,
            event_id=scheduled["id"],
        )

    first, again = run(), run()

    assert first == again
    assert (first["reverted"], len(first["failed_units"])) == (1, 1)
    assert rule not in estate.rule_ids(group)
    assert len(sent_emails()) == 1


def test_the_same_snapshot_schedule_twice_takes_and_reports_once(
    estate: Estate, idempotency_table: str, policies_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_sandbox_account(policies_dir, monkeypatch)
    home = volume(estate.home_ec2, Backup="daily")
    runtime, once = current(), run_once(idempotency_table)
    scheduled = load_event("scheduled-event")

    def run() -> dict[str, Any]:  # the hourly run, at the time of the one scheduled event
        policies = runtime.policies
        return schedule_snapshots(
            policies=policies.of(SnapshotsPolicy),
            accounts=policies.accounts,
            deps=runtime.built(snapshot_deps),
            mailer=runtime.mailer("snapshots", None),
            now=FIRST_RUN,
            once=once,
            event_id=scheduled["id"],
        )

    first, again = run(), run()

    assert first == again
    assert (first["taken"], len(first["failed"])) == (1, 1)
    assert len(snapshots_of(estate.home_ec2, home)) == 1
    assert len(sent_emails()) == 1


def test_a_duplicate_scheduled_event_reports_once_through_the_app(
    estate: Estate, app_client: Client, idempotency_table: str, policies_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_sandbox_account(policies_dir, monkeypatch)
    scheduled = load_event("scheduled-event")

    app_client.lambda_.invoke("sweep_security_groups", scheduled)
    app_client.lambda_.invoke("sweep_security_groups", scheduled)

    assert len(sent_emails()) == 1
