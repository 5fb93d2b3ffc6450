"""The guard end to end through Chalice's test client, against moto, with real-shaped events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chalicelib.aws import HOME as HOME_KEY
from chalicelib.aws import Target
from chalicelib.policy import PolicyError
from chalicelib.runtime import current
from chalicelib.security_groups.handlers import NotificationError
from chalicelib.settings import EXTERNAL_ID, POLICIES_DIR
from tests.support.aws import HOME, MEMBER, REGION, load_event
from tests.support.estate import Estate, sent_emails, tcp
from tests.support.lambdas import calls_to
from tests.support.security_groups import SSH_EVENT_GROUP, SSH_EVENT_RULE, invoke, open_ssh


def edit_policy(directory: Path, monkeypatch: pytest.MonkeyPatch, old: str, new: str) -> None:
    path = directory / "security_groups.yml"
    path.write_text(path.read_text().replace(old, new))
    monkeypatch.setenv(POLICIES_DIR, str(directory))


def test_ssh_from_the_internet_is_revoked_and_security_is_told(estate: Estate, lambdas: Any) -> None:
    # Given a group with a web rule and a freshly opened SSH rule with a hostile description
    group = estate.group()
    [web] = estate.authorize(group, [tcp(443)])
    [ssh] = estate.authorize(group, [tcp(22, description="<script>alert(1)</script>")])
    event = load_event("sg-authorize-ingress-ssh-world", **{SSH_EVENT_GROUP: group, SSH_EVENT_RULE: ssh})
    event["detail"]["responseElements"]["securityGroupRuleSet"]["items"][0]["description"] = "<script>alert(1)</script>"

    # When CloudTrail's event reaches the guard
    result = invoke(lambdas, event)

    # Then only the SSH rule is gone
    assert result["status"] == "reverted"
    assert estate.rule_ids(group) == {web} | (estate.rule_ids(group) - {ssh, web})
    assert ssh not in estate.rule_ids(group)
    # And one email says who, what, where, when, which rule and what was done, escaped
    [email] = sent_emails()
    assert email.destinations["ToAddresses"] == ["security@example.com"]
    for fact in (
        HOME,
        REGION,
        group,
        "tcp 22",
        "0.0.0.0/0",
        "no-admin-ports-from-internet",
        "alice.devops",
        "2025-06-14T09:03:12",
        f"revoked {ssh}",
    ):
        assert fact in email.body, fact
    assert "<script>" not in email.body
    assert "&lt;script&gt;" in email.body
    for fact in (HOME, REGION, group, "no-admin-ports-from-internet", "reverted"):
        assert fact in email.subject


@pytest.mark.parametrize(
    ("sample", "opened", "sample_rules"),
    [
        pytest.param("sg-authorize-ingress-ipv6-world", [tcp(3389, "::/0")], ["sgr-0a6d2f8b4e9c13570"], id="ipv6"),
        pytest.param(
            "sg-authorize-ingress-split-ranges",
            [tcp(22, "0.0.0.0/1"), tcp(22, "128.0.0.0/1")],
            ["sgr-0e7c3a9f5b1d24681", "sgr-09b4f1d6c8e2a7353"],
            id="split-ranges",
        ),
    ],
)
def test_every_offending_entry_is_revoked(
    estate: Estate, lambdas: Any, sample: str, opened: list[dict[str, Any]], sample_rules: list[str]
) -> None:
    group = estate.group()
    rule_ids = [rule for permission in opened for rule in estate.authorize(group, [permission])]
    event = load_event(sample, **{SSH_EVENT_GROUP: group}, **dict(zip(sample_rules, rule_ids, strict=True)))

    assert invoke(lambdas, event)["status"] == "reverted"

    assert not set(rule_ids) & estate.rule_ids(group)
    assert len(sent_emails()) == 1


def test_a_multi_permission_call_loses_only_the_offending_entry(estate: Estate, lambdas: Any) -> None:
    # Given Terraform's five-permission call, made for real
    group = estate.group()
    other = estate.group()
    permissions = [
        tcp(443),
        tcp(22),
        {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "UserIdGroupPairs": [{"GroupId": other}]},
        {"IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "172.16.0.0/12"}]},
    ]
    created = [rule for permission in permissions for rule in estate.authorize(group, [permission])]
    samples = [
        "sgr-0c18e5a7d2b94f630",
        "sgr-07f4a2c9e6d1b3852",
        "sgr-0b5e9d3a1f7c26e48",
        "sgr-02d7c4f8b1e9a5636",
        "sgr-0f9a3e6c5d2b78141",
    ]
    event = load_event(
        "sg-authorize-ingress-multi",
        **{SSH_EVENT_GROUP: group, "sg-05e8b1d7c2a94f36e": other},
        **dict(zip(samples, created, strict=True)),
    )

    invoke(lambdas, event)

    # Then the four compliant entries stay and only SSH is gone
    remaining = estate.rule_ids(group)
    assert created[1] not in remaining
    assert {created[0], created[2], created[3], created[4]} <= remaining


@pytest.mark.parametrize(
    ("sample", "port", "sample_rule"),
    [
        pytest.param("sg-authorize-egress", 25, "sgr-06b2e8d4f1a9c7353", id="egress smtp"),
        # The event does not say the modified rule is egress; the look-up does, and no rule covers egress.
        pytest.param("sg-modify-rules", 22, "sgr-0d4a8f2c6e1b95737", id="modified rule that is egress"),
    ],
)
def test_a_compliant_egress_rule_is_left_alone(
    estate: Estate, lambdas: Any, sample: str, port: int, sample_rule: str
) -> None:
    group = estate.group()
    [rule] = estate.authorize(group, [tcp(port)], egress=True)
    event = load_event(sample, **{"sg-0d3f6a2c8e17b5904": group, sample_rule: rule})

    assert invoke(lambdas, event)["status"] == "compliant"

    assert rule in estate.rule_ids(group)
    assert sent_emails() == []


def test_a_modified_rule_is_judged_from_the_request_and_revoked(estate: Estate, lambdas: Any) -> None:
    # Given a rule that was internal and was just modified to SSH from anywhere
    group = estate.group()
    [rule] = estate.authorize(group, [tcp(22)])
    event = load_event("sg-modify-rules", **{"sg-0d3f6a2c8e17b5904": group, "sgr-0d4a8f2c6e1b95737": rule})

    assert invoke(lambdas, event)["status"] == "reverted"

    assert rule not in estate.rule_ids(group)
    assert "carol@example.com" in sent_emails()[0].body


def test_an_event_without_rule_ids_is_resolved_by_looking_the_rules_up(estate: Estate, lambdas: Any) -> None:
    # Given an event from before rule ids existed (no securityGroupRuleSet in the response)
    group = estate.group()
    [rule] = estate.authorize(group, [tcp(22)])
    event = load_event("sg-authorize-ingress-ssh-world", **{SSH_EVENT_GROUP: group})
    del event["detail"]["responseElements"]["securityGroupRuleSet"]

    assert invoke(lambdas, event)["status"] == "reverted"

    assert rule not in estate.rule_ids(group)


def test_a_failed_call_is_skipped(estate: Estate, lambdas: Any) -> None:
    assert invoke(lambdas, load_event("sg-authorize-ingress-failed"))["status"] == "ignored"
    assert sent_emails() == []


def malformed(event_id: str, time: str = "2025-06-14T09:03:12Z", **detail: Any) -> dict[str, Any]:
    envelope = {"version": "0", "detail-type": "AWS API Call via CloudTrail", "source": "aws.ec2", "resources": []}
    return {**envelope, "id": event_id, "account": HOME, "time": time, "region": REGION, "detail": detail}


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(malformed("x"), id="empty detail"),
        pytest.param(malformed("y", "not a time", eventName="AuthorizeSecurityGroupIngress"), id="bad time"),
        pytest.param(
            malformed("z", eventName="AuthorizeSecurityGroupIngress", requestParameters={"ipPermissions": "junk"}),
            id="junk permissions",
        ),
    ],
)
def test_a_malformed_event_is_logged_and_skipped(estate: Estate, lambdas: Any, event: dict[str, Any]) -> None:
    assert invoke(lambdas, event)["status"] == "malformed"


def test_a_member_account_is_handled_through_its_role_with_the_external_id(
    estate: Estate, lambdas: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given SSH opened in the member account
    monkeypatch.setenv(EXTERNAL_ID, "ext-1234")
    group = estate.group(estate.member_ec2)
    [rule] = estate.authorize(group, [tcp(22)], ec2=estate.member_ec2)
    event = load_event(
        "sg-authorize-ingress-cross-account", **{"sg-0b91c4e7a2d6f3580": group, "sgr-04c9e2a7b5f1d8364": rule}
    )
    current.cache_clear()
    assume_role = calls_to("sts.AssumeRole", Target(HOME_KEY, REGION))

    # When the event arrives
    assert invoke(lambdas, event)["status"] == "reverted"

    # Then the member role was assumed with the ExternalId, and the rule is gone from the member account
    assert assume_role == [
        {
            "RoleArn": f"arn:aws:iam::{MEMBER}:role/opsbots-member-security-groups",
            "RoleSessionName": "opsbots-on_security_group_change",  # member CloudTrail tells the bots apart
            "ExternalId": "ext-1234",
        }
    ]
    assert rule not in estate.rule_ids(group, estate.member_ec2)
    assert MEMBER in sent_emails()[0].subject


def test_a_member_account_that_cannot_be_reached_is_still_reported(
    estate: Estate, lambdas: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given SSH opened in the member account, and no ExternalId configured to assume its role with
    monkeypatch.delenv(EXTERNAL_ID)
    group = estate.group(estate.member_ec2)
    [rule] = estate.authorize(group, [tcp(22)], ec2=estate.member_ec2)
    ids = {"sg-0b91c4e7a2d6f3580": group, "sgr-04c9e2a7b5f1d8364": rule}

    # When the event arrives, nothing is assumed and nothing is revoked, but security hears why
    assert invoke(lambdas, load_event("sg-authorize-ingress-cross-account", **ids))["status"] == "revoke-failed"

    assert rule in estate.rule_ids(group, estate.member_ec2)
    [email] = sent_emails()
    assert "REVOKE FAILED" in email.subject
    assert f"{EXTERNAL_ID} is not set" in email.body


def test_an_event_from_an_unknown_account_changes_nothing(estate: Estate, lambdas: Any) -> None:
    event = load_event("sg-authorize-ingress-ssh-world", **{HOME: "999999999999"})
    assert invoke(lambdas, event)["status"] == "unmanaged-account"


def test_a_past_exemption_exempts_nothing(estate: Estate, lambdas: Any) -> None:
    group, rule, event = open_ssh(estate, tags={"opsbots:exempt-until": "2020-01-01"})

    assert invoke(lambdas, event)["status"] == "reverted"

    assert rule not in estate.rule_ids(group)
    assert len(sent_emails()) == 1


def test_report_mode_emails_without_revoking(
    estate: Estate, lambdas: Any, policies_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edit_policy(policies_dir, monkeypatch, "mode: enforce", "mode: report")
    group, rule, event = open_ssh(estate)

    assert invoke(lambdas, event)["status"] == "reported"

    assert rule in estate.rule_ids(group)
    [email] = sent_emails()
    assert "report mode" in email.body


def test_an_invalid_policy_stops_the_bot_from_acting(
    estate: Estate, lambdas: Any, policies_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edit_policy(policies_dir, monkeypatch, "ports: [22, 3389]", "ports: [22, ssh]")
    group, rule, event = open_ssh(estate)

    with pytest.raises(PolicyError, match="'ssh' is not a port or range"):
        invoke(lambdas, event)

    assert rule in estate.rule_ids(group)


def test_a_failed_email_is_retried_and_says_what_the_first_attempt_did(
    estate: Estate, lambdas: Any, idempotency_table: str
) -> None:
    # Given SES refuses the sender (not verified yet)
    import boto3

    boto3.client("sesv2").delete_email_identity(EmailIdentity="opsbots@example.com")
    group, rule, event = open_ssh(estate)
    revokes = calls_to("ec2.RevokeSecurityGroupIngress", current().clients.home(REGION))

    # When the event is handled, the rule is revoked anyway and the failure raised for a retry
    with pytest.raises(NotificationError, match="parked"):
        invoke(lambdas, event)
    assert rule not in estate.rule_ids(group)
    assert len(revokes) == 1

    # And when SES is back and Lambda retries, the email the first attempt wrote goes out: "revoked", not "gone"
    boto3.client("sesv2").create_email_identity(EmailIdentity="opsbots@example.com")
    assert invoke(lambdas, event)["email"] == "sent"
    [email] = sent_emails()
    assert f"revoked {rule}" in email.body
    assert "This email was delayed" in email.body
    assert "Exposure" in email.body


def test_a_duplicate_delivery_sends_no_second_email(estate: Estate, lambdas: Any, idempotency_table: str) -> None:
    group, rule, event = open_ssh(estate)

    first, second = invoke(lambdas, event), invoke(lambdas, event)

    assert (first["status"], first["email"]) == ("reverted", "sent")
    assert (second["status"], second["email"]) == ("reverted", "duplicate")
    assert rule not in estate.rule_ids(group)
    assert len(sent_emails()) == 1


def test_a_rule_already_gone_counts_as_reverted(estate: Estate, lambdas: Any) -> None:
    # Given the rule was removed by someone else before the event arrived (Custodian crashes here)
    group = estate.group()
    [rule] = estate.authorize(group, [tcp(22)])
    estate.home_ec2.revoke_security_group_ingress(GroupId=group, SecurityGroupRuleIds=[rule])
    event = load_event("sg-authorize-ingress-ssh-world", **{SSH_EVENT_GROUP: group, SSH_EVENT_RULE: rule})

    assert invoke(lambdas, event)["status"] == "reverted"

    assert f"{rule} was already gone" in sent_emails()[0].body
