"""Faults on the wire (tests/support/faults.py): throttling, 5xx, timeouts and AccessDenied, answered
through botocore's `before-send`, so the bots' real clients, retry handler and error paths are what is tested.

- throttling bursts on Route53, EC2, SES (and DynamoDB, S3) are absorbed by retries and the work completes,
  with the shipped adaptive configuration too;
- Route53 failing part-way through an event's changes: the event fails, and its retry writes what is missing;
- a revoke EC2 does not answer: reported as still open, with the reason, and the other rules still go;
- AccessDenied or an unreachable region in 1 of N accounts: every other account is processed, and the failure
  is in the result, in a metric and, for the bots that send one, in the email;
- SES down: the violating rule is revoked anyway, the failure is logged and counted, and Lambda's retry sends
  the email without a second revoke;
- S3 PutObject failing on the second size: the invocation fails (Lambda retries it), and the retry writes only
  the missing size.

Each test asserts exactly how many faults it injected; the module prints the total when it ends.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import botocore.loaders
import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from chalicelib.aws import BOTO_CONFIG, Clients, Target
from chalicelib.aws import HOME as HOME_KEY
from chalicelib.bots import SNAPSHOT_LEDGER
from chalicelib.dns.executors import Registry
from chalicelib.dns.handlers import DnsDeps, ZoneCache, handle_state_change, reconcile
from chalicelib.outbox import Mailer, mailer_for
from chalicelib.policy import Policies, load_policies
from chalicelib.runtime import current
from chalicelib.security_groups.handlers import NotificationError, handle_change, sweep
from chalicelib.settings import EXTERNAL_ID
from chalicelib.snapshots.executors import Ledger
from chalicelib.snapshots.handlers import SnapshotDeps, schedule_snapshots
from chalicelib.snapshots.policy import SnapshotsPolicy
from chalicelib.thumbnails.handlers import ThumbnailDeps, handle_upload
from chalicelib.thumbnails.policy import ThumbnailsPolicy
from tests.support.aws import HOME, MEMBER, REGION, ROOT, load_event
from tests.support.dns import Network, state_event
from tests.support.estate import SANDBOX, Estate, sent_emails, tcp
from tests.support.faults import ATTEMPTS, FAST_RETRIES, Faults, Kind, body_names, report_faults
from tests.support.lambdas import Emitted, calls_to
from tests.support.pictures import jpeg
from tests.support.security_groups import invoke, open_ssh
from tests.support.snapshots import FIRST_RUN, snapshots_of, volume

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

FAR_REGION = "eu-west-3"
ACCOUNTS = f"""
defaults: {{regions: [{REGION}]}}
accounts:
  - {{id: "{MEMBER}", name: workloads, regions: [{REGION}, {FAR_REGION}]}}
  - {{id: "{SANDBOX}", name: sandbox}}
"""
BUCKET = "photos-upload"


@pytest.fixture(scope="module", autouse=True)
def _faults_summary(request: pytest.FixtureRequest) -> Iterator[None]:
    yield from report_faults(request)


def fast_clients(faults: Faults, config: Config = FAST_RETRIES) -> Clients:
    """The bots' client factory as the runtime builds it, with the faults on every session it makes."""
    return Clients(
        external_id=os.environ[EXTERNAL_ID],
        home_session=home_session(),
        config=config,
        handlers=faults.handlers(),
    )


_MODELS = botocore.loaders.create_loader()


def home_session() -> boto3.Session:
    """What `boto3.Session()` gives the runtime, but with one model loader for every test of the module.

    A new loader parses the service models again (EC2's alone takes ~0.2 s); sharing one is what `Clients`
    itself does for its member sessions.
    """
    core = botocore.session.Session()
    core.register_component("data_loader", _MODELS)
    session = boto3.Session(botocore_session=core)
    _MODELS.search_paths[:] = list(dict.fromkeys(_MODELS.search_paths))  # boto3 appends its data path each time
    return session


def mailer(clients: Clients, bot: str = "security_groups") -> Mailer:
    """The bots' mailer on these clients, without a run-once table (no ledger: every email is sent)."""
    return mailer_for(bot, clients, None)


def account_client(service: str, account: str, region: str = REGION) -> Any:
    """A setup client in a member account (through its role), outside the bots' clients and faults."""
    credentials = boto3.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/test-setup", RoleSessionName="test-setup"
    )["Credentials"]
    return boto3.client(  # type: ignore[call-overload]
        service,
        region_name=region,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


def three_accounts(policies_dir: Path) -> Policies:
    (policies_dir / "accounts.yml").write_text(ACCOUNTS)
    path = policies_dir / "snapshots.yml"  # each account's own regions, not just eu-west-1
    path.write_text(path.read_text().replace("    regions: [eu-west-1]", ""))
    return load_policies(policies_dir)


# The unit that fails in each "1 of N" scenario, and how many faults that takes per call that reaches it.
ONE_OF_N = [
    pytest.param("denied", f"{SANDBOX}/{REGION}", "AccessDenied", 1, id="role-access-denied"),
    pytest.param("unreachable", f"{MEMBER}/{FAR_REGION}", "Could not connect", ATTEMPTS, id="region-unreachable"),
]


def break_one_unit(faults: Faults, kind: str) -> None:
    if kind == "denied":  # the sandbox account's role does not trust us: AssumeRole answers AccessDenied
        faults.fail("sts", "AssumeRole", "denied", times=None, when=body_names(SANDBOX))
    else:  # every endpoint of the far region is down, whatever the account
        faults.fail("ec2", "*", "unreachable", times=None, region=FAR_REGION)


# ----- throttling bursts are absorbed ---------------------------------------------------------------


def route53_bursts(faults: Faults) -> int:
    faults.fail("route53", "ChangeResourceRecordSets", "throttle", times=2)
    faults.fail("route53", "ChangeResourceRecordSets", "throttle", code="PriorRequestNotComplete", times=1, skip=1)
    faults.fail("dynamodb", "TransactWriteItems", "throttle", times=1)
    faults.fail("ec2", "DescribeInstances", "timeout", times=1)
    return 5  # an event's new names are not looked up: Route53 refuses a CREATE over a record it holds


def route53_last_batch_throttled(faults: Faults) -> int:
    # Adaptive mode paces a client after a throttle (a token bucket from 0.5 requests/s up): throttling
    # the event's last call keeps that wait to the retry itself, about two seconds.
    faults.fail("route53", "ChangeResourceRecordSets", "throttle", times=1, skip=2)
    return 1


@pytest.mark.parametrize(
    ("config", "plan"),
    [
        pytest.param(FAST_RETRIES, route53_bursts, id="standard-retries"),
        pytest.param(BOTO_CONFIG, route53_last_batch_throttled, id="shipped-adaptive-retries"),
    ],
)
def test_route53_throttling_is_absorbed_and_every_record_written(
    network: Network, config: Config, plan: Callable[[Faults], int]
) -> None:
    faults = Faults()
    planned = plan(faults)
    deps = dns_deps(fast_clients(faults, config))
    instance = network.launch("app")
    policies = load_policies(ROOT / "policies")

    result = handle_state_change(state_event(instance, "running"), policies=policies, deps=deps)

    assert (result["added"], result["conflicts"], result["failures"]) == (3, [], [])
    assert ("app.internal.example.com.", "A") in network.records("internal.example.com")
    assert ("app.example.com.", "A") in network.records("example.com")
    assert len(network.records("10.in-addr.arpa")) == 1
    assert faults.injected == planned


def test_ec2_and_ses_throttling_is_absorbed_by_the_guard(estate: Estate) -> None:
    faults = Faults()
    faults.fail("ec2", "DescribeSecurityGroups", "throttle", times=2)
    faults.fail("ec2", "RevokeSecurityGroupIngress", "throttle", times=2)
    faults.fail("ec2", "RevokeSecurityGroupIngress", "5xx", times=1)
    faults.fail("sesv2", "SendEmail", "throttle", times=2)
    clients = fast_clients(faults)
    group, rule, event = open_ssh(estate)

    result = handle_change(
        event,
        policies=load_policies(ROOT / "policies"),
        clients=clients,
        mailer=mailer(clients),
    )

    assert result["status"] == "reverted"
    assert rule not in estate.rule_ids(group)
    [email] = sent_emails()
    assert f"revoked {rule}" in email.body
    assert faults.injected == 7


@dataclass
class Interrupted:
    """A running event whose second change batch (one zone's) Route53 failed at every attempt: what retries it."""

    faults: Faults
    deps: DnsDeps
    policies: Policies
    instance: str
    event: dict[str, Any]

    def retry(self) -> dict[str, Any]:
        return handle_state_change(self.event, policies=self.policies, deps=self.deps)


def interrupted(network: Network) -> Interrupted:
    faults = Faults()
    faults.fail("route53", "ChangeResourceRecordSets", "5xx", times=ATTEMPTS, skip=1)
    deps = dns_deps(fast_clients(faults))
    instance = network.launch("app")
    run = Interrupted(faults, deps, load_policies(ROOT / "policies"), instance, state_event(instance, "running"))
    with pytest.raises(ClientError, match="InternalError"):  # the invocation fails, so Lambda retries it
        run.retry()
    return run


def test_route53_failing_part_way_fails_the_event_and_the_retry_writes_what_is_missing(network: Network) -> None:
    # Given Route53 down for the second of the event's three change batches (one per zone), every attempt: the
    # event's invocation failed with one zone written
    run = interrupted(network)
    assert sum(len(network.records(zone)) for zone in network.zones) == 1

    # Then the retry writes the two records Route53 never confirmed, and nothing else
    retried = run.retry()
    assert (retried["added"], retried["updated"], retried["conflicts"]) == (0, 2, [])
    assert ("app.internal.example.com.", "A") in network.records("internal.example.com")
    assert ("app.example.com.", "A") in network.records("example.com")
    assert len(network.records("10.in-addr.arpa")) == 1
    # And once written, a repeated event only reads again
    again = run.retry()
    assert (again["added"], again["updated"], again["removed"]) == (0, 0, 0)
    assert run.faults.injected == ATTEMPTS


def test_a_name_whose_write_went_unconfirmed_and_someone_took_meanwhile_is_left_to_them(network: Network) -> None:
    # Given Route53 down for the second change batch of an event (one zone's), every attempt
    run = interrupted(network)
    [(zone, name)] = [
        (zone, f"app.{zone}.") for zone in ("internal.example.com", "example.com") if not network.records(zone)
    ]

    # When someone writes that name by hand before the retry
    network.upsert(zone, name, "203.0.113.9")
    retried = run.retry()

    # Then the retry looks before it writes again: the name is left to its holder, a conflict, its claim given back
    assert network.records(zone)[(name, "A")] == ["203.0.113.9"]
    [conflict] = retried["conflicts"]
    assert conflict.startswith(f"{name} A")
    assert "a record opsbots did not write" in conflict
    claimed = boto3.client("dynamodb").scan(TableName="opsbots-dns")["Items"]
    assert name not in {item["name"]["S"] for item in claimed if "owner" in item}


def test_an_alias_is_not_claimed_for_a_name_someone_took_while_its_write_went_unconfirmed(network: Network) -> None:
    # Given an event interrupted at one zone's batch, that name then written by hand, and the instance then given
    # an alias, which asks for a CNAME to it
    run = interrupted(network)
    [(zone, name)] = [
        (zone, f"app.{zone}.") for zone in ("internal.example.com", "example.com") if not network.records(zone)
    ]
    network.upsert(zone, name, "203.0.113.9")
    network.home_ec2.create_tags(Resources=[run.instance], Tags=[{"Key": "opsbots:dns-aliases", "Value": "api"}])

    retried = run.retry()

    # Then the name is left to its holder, and no alias points at it
    assert (f"api.{zone}.", "CNAME") not in network.records(zone)
    assert f"api.{zone}. CNAME" in " ".join(retried["skipped"])


def test_a_revoke_that_times_out_is_reported_and_the_other_rules_still_go(estate: Estate, emitted: Emitted) -> None:
    # Given SSH open in two groups, and EC2 not answering one revoke, attempt after attempt
    faults = Faults()
    faults.fail("ec2", "RevokeSecurityGroupIngress", "timeout", times=ATTEMPTS)
    clients = fast_clients(faults)
    first, second = estate.group(), estate.group()
    rules = {group: estate.authorize(group, [tcp(22)])[0] for group in (first, second)}

    result = sweep(policies=load_policies(ROOT / "policies"), clients=clients, mailer=mailer(clients))

    # Then the other group's rule is revoked, the unit is not a failed one, and the digest names the rule still open
    remaining = {group: rules[group] in estate.rule_ids(group) for group in (first, second)}
    assert sorted(remaining.values()) == [False, True]
    (still_open,) = (rules[group] for group, kept in remaining.items() if kept)
    assert (result["violations"], result["reverted"], result["failed_units"]) == (2, 1, [])
    [failure] = result["revoke_failures"]
    assert failure.startswith(f"{HOME}/{REGION}/{still_open}: ConnectTimeoutError")
    assert emitted("RevokeFailures") == 1
    [digest] = sent_emails()
    assert still_open in digest.body
    assert "NOT revoked" in digest.body
    assert "ConnectTimeoutError" in digest.body
    assert faults.injected == ATTEMPTS


# ----- one account or region of N fails; the others are done and the failure reported --------------


@pytest.mark.parametrize(("kind", "failed_unit", "reason", "per_call"), ONE_OF_N)
def test_the_sweep_checks_every_other_account_and_reports_the_one_that_failed(
    estate: Estate, policies_dir: Path, emitted: Emitted, kind: str, failed_unit: str, reason: str, per_call: int
) -> None:
    # Given SSH open in home and in the member account, and the other units throttled on the way
    policies = three_accounts(policies_dir)
    faults = Faults()
    break_one_unit(faults, kind)
    faults.fail("ec2", "DescribeSecurityGroupRules", "throttle", times=3)
    faults.fail("ec2", "RevokeSecurityGroupIngress", "throttle", times=2)
    faults.fail("sesv2", "SendEmail", "5xx", times=2)
    clients = fast_clients(faults)
    home_group, member_group = estate.group(), estate.group(estate.member_ec2)
    [home_rule] = estate.authorize(home_group, [tcp(22)])
    [member_rule] = estate.authorize(member_group, [tcp(3389)], ec2=estate.member_ec2)

    result = sweep(policies=policies, clients=clients, mailer=mailer(clients))

    # Then every reachable unit was enforced, the throttling absorbed
    assert (result["units"], result["violations"], result["reverted"]) == (4, 2, 2)
    assert home_rule not in estate.rule_ids(home_group)
    assert member_rule not in estate.rule_ids(member_group, estate.member_ec2)
    # And the one that was not is in the result, the metric and the digest, with its reason
    [failure] = result["failed_units"]
    assert failure.startswith(f"{failed_unit}: ")
    assert reason in failure
    assert emitted("SweepFailures") == 1
    [digest] = sent_emails()
    assert "1 account failure(s)" in digest.subject
    assert "SWEEP FAILED" in digest.body
    assert failed_unit.split("/")[0] in digest.body
    assert emitted("NotificationFailures") == 0
    assert faults.injected == per_call + 7


@pytest.mark.parametrize(("kind", "failed_unit", "reason", "per_call"), ONE_OF_N)
def test_reconcile_updates_every_other_account_and_keeps_the_records_of_the_one_that_failed(
    network: Network, policies_dir: Path, emitted: Emitted, kind: str, failed_unit: str, reason: str, per_call: int
) -> None:
    # Given instances in every unit, and a first reconcile that gave them all their records
    dns_file = policies_dir / "dns.yml"  # every account may have public names here
    dns_file.write_text(dns_file.read_text().replace("address: public", "address: public\n    accounts: all"))
    policies = three_accounts(policies_dir)
    failing_account, failing_region = failed_unit.split("/")
    home_instances = [network.launch("home-1"), network.launch("home-2")]
    network.launch("member-1", member=True)
    launch_public(account_client("ec2", failing_account, failing_region), "far-away")
    first = reconcile(policies=policies, deps=dns_deps(fast_clients(Faults())))
    assert (first["added"], first["failures"]) == (3 + 3 + 3 + 1, [])

    # When that unit fails (in a new container: no credentials cached), and a home instance has ended
    faults = Faults()
    break_one_unit(faults, kind)
    network.home_ec2.terminate_instances(InstanceIds=home_instances[:1])
    second = reconcile(policies=policies, deps=dns_deps(fast_clients(faults)))

    # Then the ended instance lost its records, the unit that could not be read kept its own,
    # and the failure is in the result and the metric (the DNS bot sends no email)
    assert (second["added"], second["removed"]) == (0, 3)
    assert ("far-away.example.com.", "A") in network.records("example.com")
    assert ("home-1.example.com.", "A") not in network.records("example.com")
    assert ("member-1.internal.example.com.", "A") in network.records("internal.example.com")
    [failure] = second["failures"]
    assert failure.startswith(f"{failed_unit}: ")
    assert reason in failure
    assert emitted("ReconcileFailures") == 1
    assert sent_emails() == []
    assert faults.injected == per_call


def dns_deps(clients: Clients) -> DnsDeps:
    home = Target(HOME_KEY, REGION)
    route53 = clients.client("route53", home)
    return DnsDeps(clients, route53, Registry(clients.client("dynamodb", home), "opsbots-dns"), ZoneCache(route53))


def launch_public(ec2: EC2Client, name: str) -> str:
    """A selected instance with a public address, in its own VPC (associated with no private zone)."""
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.7.0.0/20")["Subnet"]["SubnetId"]
    ec2.modify_subnet_attribute(SubnetId=subnet, MapPublicIpOnLaunch={"Value": True})
    tags = [{"Key": "Name", "Value": name}, {"Key": "opsbots:dns", "Value": "yes"}]
    return ec2.run_instances(
        ImageId="ami-12345678",
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],  # type: ignore[list-item, misc]
    )["Instances"][0]["InstanceId"]


@pytest.mark.parametrize(("kind", "failed_unit", "reason", "per_call"), ONE_OF_N)
def test_the_snapshot_run_serves_every_other_account_and_emails_the_one_that_failed(
    estate: Estate, policies_dir: Path, emitted: Emitted, kind: str, failed_unit: str, reason: str, per_call: int
) -> None:
    policies = three_accounts(policies_dir)
    faults = Faults()
    break_one_unit(faults, kind)
    faults.fail("ec2", "CreateSnapshot", "throttle", times=2)
    faults.fail("ec2", "DescribeVolumes", "5xx", times=1)
    faults.fail("ec2", "DescribeSnapshots", "timeout", times=1)
    clients = fast_clients(faults)
    home, member = volume(estate.home_ec2, Backup="daily"), volume(estate.member_ec2, Backup="daily")
    ledger = Ledger(clients.client("dynamodb", Target(HOME_KEY, REGION)), os.environ[SNAPSHOT_LEDGER])
    deps = SnapshotDeps(clients, None, None, ledger)

    result = schedule_snapshots(
        policies=policies.of(SnapshotsPolicy),
        accounts=policies.accounts,
        deps=deps,
        mailer=mailer(clients, "snapshots"),
        now=FIRST_RUN,
    )

    assert (result["units"], result["taken"]) == (4, 2)
    assert len(snapshots_of(estate.home_ec2, home)) == len(snapshots_of(estate.member_ec2, member)) == 1
    [failure] = result["failed"]
    assert failure.startswith(f"{failed_unit}: daily: ")
    assert reason in failure
    assert (emitted("SnapshotsFailed"), emitted("SnapshotsTaken")) == (1, 2)
    [email] = sent_emails()
    assert email.destinations["ToAddresses"] == ["ops@example.com"]
    assert "1 failure(s) in 1 account(s)" in email.subject
    assert failed_unit.split("/")[0] in email.body
    assert faults.injected == per_call + 4


# ----- SES down -------------------------------------------------------------------------------------


def test_ses_down_the_rule_is_revoked_the_failure_reported_and_the_retry_emails_once(
    estate: Estate, lambdas: Any, idempotency_table: str, emitted: Emitted, caplog: pytest.LogCaptureFixture
) -> None:
    # Given SES failing every attempt of one SendEmail call (the shipped 9: 1 + 8 retries)
    faults = Faults()
    faults.fail("sesv2", "SendEmail", "5xx", times=ATTEMPTS)
    faults.on(current().clients.client("sesv2", current().clients.home()))
    group, rule, event = open_ssh(estate)
    revokes = calls_to("ec2.RevokeSecurityGroupIngress", current().clients.home(REGION))

    # When the event is handled, the rule is revoked anyway, and the invocation fails so Lambda retries it
    with pytest.raises(NotificationError):
        invoke(lambdas, event)
    assert rule not in estate.rule_ids(group)
    assert len(revokes) == 1
    assert sent_emails() == []
    # And the failure was logged with its reason, counted, and the email parked
    [logged] = [r for r in caplog.records if r.getMessage() == "email failed"]
    assert event["id"] in str(logged.__dict__.get("key"))
    assert (emitted("NotificationFailures"), emitted("NotificationsParked")) == (1, 1)
    assert faults.injected == ATTEMPTS

    # When Lambda retries the event with SES back, the email goes out once; the rule stays revoked
    assert invoke(lambdas, event)["email"] == "sent"
    assert invoke(lambdas, event)["email"] == "duplicate"  # and a late duplicate sends nothing
    assert rule not in estate.rule_ids(group)
    [email] = sent_emails()
    assert f"revoked {rule}" in email.body
    assert faults.injected == ATTEMPTS


def test_ses_unreachable_during_a_sweep_still_reverts_and_the_next_sweep_sends_the_digest(
    estate: Estate, lambdas: Any, idempotency_table: str, emitted: Emitted, caplog: pytest.LogCaptureFixture
) -> None:
    # Given SES timing out, attempt after attempt, for one digest
    faults = Faults()
    faults.fail("sesv2", "SendEmail", "timeout", times=ATTEMPTS)
    faults.on(current().clients.client("sesv2", current().clients.home()))
    group = estate.group()
    [rule] = estate.authorize(group, [tcp(22)])
    first, second = load_event("scheduled-event"), load_event("scheduled-event")
    second["id"], second["time"] = "0d6b1f3e-8a2c-4e57-9b14-c3a7e5d20f68", "2025-06-14T03:00:00Z"

    # When the sweep runs, the rule is revoked and the digest parked in the outbox
    result = lambdas.invoke("sweep_security_groups", first).payload
    assert (result["reverted"], result["email"]) == (1, "parked")
    assert rule not in estate.rule_ids(group)
    assert any(r.getMessage() == "email failed" for r in caplog.records)
    assert (emitted("NotificationFailures"), emitted("NotificationsParked")) == (1, 1)
    assert sent_emails() == []

    # Then the next hourly sweep, SES back, sends it first (it has nothing new of its own to report)
    later = lambdas.invoke("sweep_security_groups", second).payload
    assert (later["outbox"], later["email"]) == ({"sent": 1, "parked": 0}, None)
    [digest] = sent_emails()
    assert rule in digest.body
    assert "This email was delayed: SES refused it at" in digest.body
    assert faults.injected == ATTEMPTS


# ----- S3 failing part-way through the sizes ---------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "times"), [pytest.param("5xx", ATTEMPTS, id="5xx-every-attempt"), pytest.param("denied", 1, id="denied")]
)
def test_a_put_failing_on_the_second_size_fails_the_invocation_and_the_retry_writes_only_what_is_missing(
    estate: Estate, kind: Kind, times: int
) -> None:
    # Given an upload, and S3 failing the second thumbnail's PutObject
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    body = jpeg(320, 240)
    etag = s3.put_object(Bucket=BUCKET, Key="uploads/a.jpg", Body=body)["ETag"].strip('"')
    event = load_event("s3-object-created", **{"photos-upload": BUCKET})
    event["detail"]["object"] |= {"key": "uploads/a.jpg", "size": len(body), "etag": etag, "version-id": None}
    faults = Faults()
    faults.fail("s3", "PutObject", kind, times=times, skip=1)
    clients = fast_clients(faults)
    calls: list[str] = []
    s3_of_bot = clients.client("s3", Target(HOME_KEY, REGION))
    s3_of_bot.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    policy = load_policies(ROOT / "policies").of(ThumbnailsPolicy)
    deps = ThumbnailDeps(lambda region: s3_of_bot)

    # When the event is handled, the invocation fails (so Lambda retries it) after the first size
    with pytest.raises(s3_of_bot.exceptions.ClientError):
        handle_upload(event, policy=policy, deps=deps)
    small = s3.head_object(Bucket=BUCKET, Key="thumbnails/a/small.webp")
    with pytest.raises(s3.exceptions.ClientError, match="404"):  # the failed put did not happen
        s3.head_object(Bucket=BUCKET, Key="thumbnails/a/large.webp")
    assert faults.injected == times

    # Then the retry writes the missing size only: the first is recognised as made from this upload
    calls.clear()
    retried = handle_upload(event, policy=policy, deps=deps)
    assert [made["key"] for made in retried["written"]] == ["thumbnails/a/large.webp"]
    assert retried["current"] == ["thumbnails/a/small.webp"]
    assert calls == ["HeadObject", "HeadObject", "GetObject", "PutObject"]
    assert s3.head_object(Bucket=BUCKET, Key="thumbnails/a/small.webp")["ETag"] == small["ETag"]
    assert s3.head_object(Bucket=BUCKET, Key="thumbnails/a/large.webp")["Metadata"]["opsbots-source-etag"] == etag
    # And a third delivery finds the set complete
    assert handle_upload(event, policy=policy, deps=deps)["status"] == "up-to-date"
    assert faults.injected == times
