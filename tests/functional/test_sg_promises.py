"""The guard's promises as an attacker and an operator try them: each test fails if its promise breaks.

1. A dedupe outage (the run-once table missing, answering 5xx, or denied) never stops a revoke or its
   email, for the event handler, the sweep and the snapshot bot: at least once, never not at all.
2. The exemption tag is no silent, endless bypass: a kept violation is still emailed, a date past
   `max_exemption_days` or unreadable exempts nothing, and the email says why.
3. A revoke that fails for a reason that may pass fails the invocation, so Lambda retries it; the
   "REVOKE FAILED, retrying" email is sent once. AccessDenied is reported and not retried.
4. A prefix list that gains the internet gets the rules that reference it revoked.
5. No violation email is lost: what SES refuses through every Lambda retry is parked, and the next
   sweep sends it; a stored email stays far below DynamoDB's 400 KB item limit.

Lambda retries a failed invocation with the same request id; `invoke_as` plays one invocation and its
retries by calling the app's handler with one Lambda context, as the runtime would.
"""

from __future__ import annotations

import ipaddress
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalice.local import LambdaContext as ChaliceContext

from chalicelib.aws import HOME as HOME_KEY
from chalicelib.aws import Target
from chalicelib.outbox import Outbox
from chalicelib.policy import load_policies
from chalicelib.runtime import current
from chalicelib.security_groups.decisions import DIGEST_ROWS, SweepFinding, Verdict, Violation, digest_notice
from chalicelib.security_groups.events import Permission
from chalicelib.security_groups.handlers import NotificationError, RevokeRetryError
from chalicelib.security_groups.policy import SecurityGroupsPolicy
from chalicelib.settings import IDEMPOTENCY_TABLE, POLICIES_DIR
from chalicelib.snapshots.handlers import schedule_snapshots, snapshot_deps
from chalicelib.snapshots.policy import SnapshotsPolicy
from demo.environment import create_table
from tests.support.aws import HOME, REGION, ROOT, load_event
from tests.support.estate import SENDER, Estate, sent_emails, tcp
from tests.support.faults import ATTEMPTS, Faults, answer_with_error, body_names
from tests.support.lambdas import Emitted, LambdaContext
from tests.support.security_groups import invoke, open_ssh
from tests.support.snapshots import FIRST_RUN, snapshots_of, volume

TAG = "opsbots:exempt-until"
SAMPLE_PREFIX_LIST = "pl-0b8e4d2a6c1f93507"


def invoke_as(function: str, event: dict[str, Any], request_id: str) -> dict[str, Any]:
    """One Lambda invocation of `function`; call again with the same request id to play Lambda's retry."""
    from app import app

    context = ChaliceContext(function, memory_size=256)
    context.aws_request_id = request_id
    result: dict[str, Any] = app.handler_map[function](event, context)
    return result


def sweep(event: dict[str, Any] | None = None) -> dict[str, Any]:
    return invoke_as("sweep_security_groups", event or load_event("scheduled-event"), "sweep-request")


def in_days(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).date().isoformat()


def the_bots_dynamodb() -> Any:
    return current().clients.client("dynamodb", Target(HOME_KEY, REGION))


def break_the_table(outage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run-once table as the functions find it: deleted, answering 5xx every time, or denied to their role."""
    if outage == "missing":
        monkeypatch.setenv(IDEMPOTENCY_TABLE, "opsbots-idempotency")  # named, never created
        return
    table = create_table(boto3.client("dynamodb"), "IdempotencyTable")
    monkeypatch.setenv(IDEMPOTENCY_TABLE, table)
    faults = Faults()  # every call naming that table, and only those: the bots' other tables answer
    faults.fail("dynamodb", "*", "5xx" if outage == "5xx" else "denied", times=None, when=body_names(table))
    faults.on(the_bots_dynamodb())


OUTAGES = ["missing", "5xx", "denied"]


# ----- 1. a dedupe outage never stops a revoke ------------------------------------------------------


@pytest.mark.parametrize("outage", OUTAGES)
def test_a_dedupe_outage_never_stops_a_revoke_or_its_email(
    estate: Estate, lambdas: Any, monkeypatch: pytest.MonkeyPatch, emitted: Emitted, outage: str
) -> None:
    # Given the run-once table unavailable, and SSH opened to the world
    break_the_table(outage, monkeypatch)
    group, rule, event = open_ssh(estate)

    # When CloudTrail's event arrives
    result = invoke(lambdas, event)

    # Then the rule is revoked and security is told, without the ledger, and the outage is counted
    assert (result["status"], result["email"]) == ("reverted", "sent")
    assert rule not in estate.rule_ids(group)
    [email] = sent_emails()
    assert f"revoked {rule}" in email.body
    assert emitted("DedupeUnavailable") >= 1


@pytest.mark.parametrize("outage", OUTAGES)
def test_a_dedupe_outage_never_stops_the_sweep_or_its_digest(
    estate: Estate, lambdas: Any, monkeypatch: pytest.MonkeyPatch, emitted: Emitted, outage: str
) -> None:
    break_the_table(outage, monkeypatch)
    group = estate.group()
    [rule] = estate.authorize(group, [tcp(22)])

    result = lambdas.invoke("sweep_security_groups", load_event("scheduled-event")).payload

    assert (result["reverted"], result["email"]) == (1, "sent")
    assert rule not in estate.rule_ids(group)
    [digest] = sent_emails()
    assert rule in digest.body
    assert emitted("DedupeUnavailable") >= 1


@pytest.mark.parametrize("outage", OUTAGES)
def test_a_dedupe_outage_never_stops_a_snapshot(
    estate: Estate, monkeypatch: pytest.MonkeyPatch, emitted: Emitted, outage: str
) -> None:
    # Given the table down under the snapshot schedule's run-once guard
    break_the_table(outage, monkeypatch)
    home = volume(estate.home_ec2, Backup="daily")
    runtime = current()

    def run() -> dict[str, Any]:
        return schedule_snapshots(
            policies=runtime.policies.of(SnapshotsPolicy),
            accounts=runtime.policies.accounts,
            deps=runtime.built(snapshot_deps),
            mailer=runtime.mailer("snapshots", None),
            now=FIRST_RUN,
            once=runtime.once(LambdaContext()),
            event_id="f3a8d1c6-2e9b-7b40-5d1e-c8a4f7b2e935",
        )

    # When the schedule fires, and is delivered again while the table is still down
    first, again = run(), run()

    # Then the snapshot is taken once: the window's tag, not the table, is what stops a second one
    assert (first["taken"], again["taken"], again["present"]) == (1, 0, 1)
    assert len(snapshots_of(estate.home_ec2, home)) == 1
    assert emitted("DedupeUnavailable") >= 2


# ----- 2. the exemption tag -------------------------------------------------------------------------


def test_a_violation_in_an_exempt_group_is_kept_and_still_emailed_once(
    estate: Estate, lambdas: Any, idempotency_table: str
) -> None:
    # Given a group exempt for 30 more days, and SSH opened in it
    until = in_days(30)
    group, rule, event = open_ssh(estate, tags={TAG: until})

    # When the event arrives, and again
    first, again = invoke(lambdas, event), invoke(lambdas, event)

    # Then the rule is kept open, and security got one email saying so, and until when
    assert (first["status"], first["email"], again["email"]) == ("exempt", "sent", "duplicate")
    assert rule in estate.rule_ids(group)
    [email] = sent_emails()
    assert "kept (exempt)" in email.subject
    assert "KEPT OPEN, not revoked" in email.body
    assert f"exempt until {until}T00:00:00+00:00" in email.body
    assert rule in email.body


@pytest.mark.parametrize(
    ("value", "why"),
    [
        pytest.param("9999-12-31", "ignored: more than max_exemption_days (90) from now", id="the endless bypass"),
        pytest.param(in_days(91), "ignored: more than max_exemption_days (90) from now", id="a day too far"),
        pytest.param("forever", "ignored: not an ISO date", id="unreadable"),
    ],
)
def test_an_exemption_too_far_or_unreadable_exempts_nothing_and_the_email_says_why(
    estate: Estate, lambdas: Any, value: str, why: str
) -> None:
    group, rule, event = open_ssh(estate, tags={TAG: value})

    assert invoke(lambdas, event)["status"] == "reverted"

    assert rule not in estate.rule_ids(group)
    [email] = sent_emails()
    assert why in email.body
    assert value in email.body


def test_max_exemption_days_comes_from_the_policy(
    estate: Estate, lambdas: Any, policies_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = policies_dir / "security_groups.yml"
    path.write_text(path.read_text().replace("rules:\n", "max_exemption_days: 7\nrules:\n", 1))
    monkeypatch.setenv(POLICIES_DIR, str(policies_dir))
    group, rule, event = open_ssh(estate, tags={TAG: in_days(10)})

    assert invoke(lambdas, event)["status"] == "reverted"
    assert rule not in estate.rule_ids(group)
    assert "more than max_exemption_days (7)" in sent_emails()[0].body


# ----- 3. a transient revoke failure is retried -----------------------------------------------------


def test_a_transient_revoke_failure_is_retried_by_lambda_and_reported_once(
    estate: Estate, idempotency_table: str, emitted: Emitted
) -> None:
    # Given EC2 answering 5xx to every attempt of the first two revokes (botocore's 9 retries each)
    group, rule, event = open_ssh(estate)
    faults = Faults()
    faults.fail("ec2", "RevokeSecurityGroupIngress", "5xx", times=2 * ATTEMPTS)
    faults.on(current().clients.client("ec2", current().clients.home(REGION)))

    # When the event is handled, the invocation fails so that Lambda retries it, after one email
    with pytest.raises(RevokeRetryError, match=rule):
        invoke_as("on_security_group_change", event, "request-1")
    assert rule in estate.rule_ids(group)
    [failed] = sent_emails()
    assert "REVOKE FAILED, retrying" in failed.subject
    assert "opsbots retries the revoke" in failed.body
    assert emitted("RevokeFailures") == 1

    # And when Lambda's first retry fails the same way, it fails again, and sends nothing more
    with pytest.raises(RevokeRetryError):
        invoke_as("on_security_group_change", event, "request-1")
    assert len(sent_emails()) == 1

    # Then Lambda's second retry revokes the rule, and security hears it is closed now
    assert invoke_as("on_security_group_change", event, "request-1")["status"] == "reverted"
    assert rule not in estate.rule_ids(group)
    failed_again, closed = sent_emails()
    assert failed_again.subject == failed.subject
    assert closed.subject.startswith("[opsbots] reverted:")
    assert f"revoked {rule}" in closed.body
    assert faults.injected == 2 * ATTEMPTS


def test_a_denied_revoke_is_reported_and_not_retried(estate: Estate, lambdas: Any) -> None:
    # Given the function's role denied the revoke
    group, rule, event = open_ssh(estate)
    ec2 = current().clients.client("ec2", current().clients.home(REGION))
    answer_with_error(ec2, "RevokeSecurityGroupIngress", "UnauthorizedOperation")

    # When the event arrives, the invocation succeeds: a retry would be refused alike
    assert invoke(lambdas, event)["status"] == "revoke-failed"

    assert rule in estate.rule_ids(group)
    [email] = sent_emails()
    assert "REVOKE FAILED" in email.subject
    assert "retrying" not in email.subject
    assert "UnauthorizedOperation" in email.body
    assert "act now" in email.body


# ----- 4. prefix lists ------------------------------------------------------------------------------


def from_list(port: int, prefix_list_id: str) -> dict[str, Any]:
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "PrefixListIds": [{"PrefixListId": prefix_list_id}]}


def test_the_guard_wakes_on_prefix_list_edits() -> None:
    from app import app

    [source] = [s for s in app.event_sources if s.name == "on_security_group_change"]
    assert "ModifyManagedPrefixList" in source.event_pattern["detail"]["eventName"]


def test_a_prefix_list_that_gains_the_internet_gets_the_rules_that_use_it_revoked(estate: Estate, lambdas: Any) -> None:
    # Given a prefix list of office ranges, used for SSH, for HTTPS and in an exempt group, and another SSH rule
    ec2 = estate.home_ec2
    prefix_list = ec2.create_managed_prefix_list(
        PrefixListName="partner-offices", MaxEntries=5, AddressFamily="IPv4", Entries=[{"Cidr": "10.8.0.0/16"}]
    )["PrefixList"]["PrefixListId"]
    ssh_group, web_group = estate.group(), estate.group()
    exempt_group, other_group = estate.group(tags={TAG: in_days(30)}), estate.group()
    [ssh] = estate.authorize(ssh_group, [from_list(22, prefix_list)])
    [web] = estate.authorize(web_group, [from_list(443, prefix_list)])
    [kept] = estate.authorize(exempt_group, [from_list(22, prefix_list)])
    [other] = estate.authorize(other_group, [tcp(22, "10.0.0.0/8")])

    # When someone adds 0.0.0.0/0 to the list: no security-group event, only ModifyManagedPrefixList
    ec2.modify_managed_prefix_list(PrefixListId=prefix_list, CurrentVersion=1, AddEntries=[{"Cidr": "0.0.0.0/0"}])
    result = invoke(lambdas, load_event("sg-modify-prefix-list-world", **{SAMPLE_PREFIX_LIST: prefix_list}))

    # Then the SSH rule that uses the list is revoked; HTTPS, the exempt group and the unrelated rule stay
    assert result["status"] == "reverted"
    assert ssh not in estate.rule_ids(ssh_group)
    assert web in estate.rule_ids(web_group)
    assert kept in estate.rule_ids(exempt_group)
    assert other in estate.rule_ids(other_group)
    # And the email names the cause, the revoke and what the exemption kept open
    [email] = sent_emails()
    for fact in (f"prefix list {prefix_list} gained 0.0.0.0/0", f"revoked {ssh}", kept, "KEPT OPEN", "bob@example.com"):
        assert fact in email.body, fact


# ----- 5. no violation email is lost ----------------------------------------------------------------


def test_an_email_ses_refuses_through_every_lambda_retry_is_sent_by_the_next_sweep(
    estate: Estate, lambdas: Any, idempotency_table: str, emitted: Emitted
) -> None:
    # Given SES refusing the sender, for longer than Lambda retries (1 attempt + 2 retries)
    ses = boto3.client("sesv2")
    ses.delete_email_identity(EmailIdentity=SENDER)
    group, rule, event = open_ssh(estate)
    for _ in range(3):
        with pytest.raises(NotificationError):
            invoke_as("on_security_group_change", event, "request-1")
    assert rule not in estate.rule_ids(group)
    assert sent_emails() == []
    assert emitted("NotificationsParked") == 3

    # When SES is back and the hourly sweep runs
    ses.create_email_identity(EmailIdentity=SENDER)
    result = sweep()

    # Then the parked email goes out, as the first attempt wrote it, saying it is late
    assert result["outbox"] == {"sent": 1, "parked": 0}
    [email] = sent_emails()
    assert f"revoked {rule}" in email.body
    assert "This email was delayed: SES refused it at" in email.body
    # And a late duplicate of the event sends nothing more
    assert invoke(lambdas, event)["email"] == "duplicate"
    assert len(sent_emails()) == 1


def test_a_stored_digest_stays_far_below_the_item_limit(estate: Estate, idempotency_table: str) -> None:
    # Given a digest for 5,000 violations across 10 accounts, each with a 255-character description
    policy = load_policies(ROOT / "policies").of(SecurityGroupsPolicy)
    findings = [
        SweepFinding(
            f"{account:012d}",
            f"account-{account}",
            REGION,
            Verdict(
                "reverted",
                tuple(
                    Violation(
                        Permission(
                            f"sg-{account:08x}{rule:09x}",
                            "ingress",
                            "tcp",
                            22,
                            22,
                            ipaddress.ip_network(f"52.{account}.{rule // 250}.{rule % 250}/32"),
                            f"sgr-{account:08x}{rule:09x}",
                            "d" * 255,
                        ),
                        ("no-admin-ports-from-internet", "only-web-from-internet"),
                    )
                    for rule in range(500)
                ),
            ),
        )
        for account in range(10)
    ]
    notice = digest_notice(findings, policy, datetime(2025, 6, 14, 2, tzinfo=UTC))

    # When it is parked
    Outbox(the_bots_dynamodb(), idempotency_table).park("sg-sweep:big", notice, "security_groups")

    # Then the stored item is a small fraction of 400 KB, and the email lists 500 rules and counts the rest
    [item] = boto3.client("dynamodb").scan(TableName=idempotency_table)["Items"]
    assert len(item["notice"]["B"]) < 40_000
    assert len(zlib.decompress(item["notice"]["B"])) < 400_000
    text = notice.render().text
    assert text.count("only-web-from-internet -> ") == DIGEST_ROWS
    assert "... and 500 more" in text
    assert "5000 violation(s)" in notice.subject


def test_without_a_table_an_unsent_email_fails_the_invocation_and_its_facts_are_logged(
    estate: Estate, lambdas: Any, caplog: pytest.LogCaptureFixture
) -> None:
    boto3.client("sesv2").delete_email_identity(EmailIdentity=SENDER)
    group, rule, event = open_ssh(estate)

    with pytest.raises(NotificationError, match="failed"):
        invoke(lambdas, event)

    assert rule not in estate.rule_ids(group)
    [logged] = [r for r in caplog.records if r.getMessage() == "email could not be sent or parked"]
    assert rule in str(logged.__dict__["notice"])
    assert HOME in str(logged.__dict__["notice"])
