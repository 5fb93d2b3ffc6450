"""The scheduled sweep: every group of every account/region, one digest, one failing account tolerated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chalicelib.aws import Target
from chalicelib.runtime import current
from chalicelib.settings import POLICIES_DIR
from tests.support.aws import HOME, MEMBER, REGION, load_event
from tests.support.estate import Estate, sent_emails, tcp
from tests.support.faults import answer_with_error

BROKEN_MEMBER = "333333333333"


def sweep(lambdas: Any) -> dict[str, Any]:
    payload: dict[str, Any] = lambdas.invoke("sweep_security_groups", load_event("scheduled-event")).payload
    return payload


def test_the_sweep_reverts_what_no_event_reported_in_every_account(estate: Estate, lambdas: Any) -> None:
    # Given SSH open in home, RDP open in the member, an exempt group with SSH open too (the scheduled run is
    # for 2025-06-14 02:00), and a group tagged exempt "forever"
    home_group = estate.group()
    [home_rule] = estate.authorize(home_group, [tcp(22)])
    member_group = estate.group(estate.member_ec2)
    [member_rule] = estate.authorize(member_group, [tcp(3389, "::/0")], ec2=estate.member_ec2)
    exempt_group = estate.group(tags={"opsbots:exempt-until": "2025-07-01"})
    [exempt_rule] = estate.authorize(exempt_group, [tcp(22)])
    forever_group = estate.group(tags={"opsbots:exempt-until": "9999-12-31"})
    [forever_rule] = estate.authorize(forever_group, [tcp(22)])
    [web_rule] = estate.authorize(home_group, [tcp(443)])

    # When the schedule fires
    result = sweep(lambdas)

    # Then the three violations are reverted, the exempt and compliant rules stay, and one digest is sent
    assert result["violations"] == 3
    assert result["failed_units"] == []
    assert result["kept"] == [f"{HOME}/{REGION}/{exempt_rule} ({exempt_group})"]
    assert home_rule not in estate.rule_ids(home_group)
    assert forever_rule not in estate.rule_ids(forever_group)
    assert member_rule not in estate.rule_ids(member_group, estate.member_ec2)
    assert {exempt_rule, web_rule} <= estate.rule_ids(exempt_group) | estate.rule_ids(home_group)
    # And the digest lists the kept rule with its exemption's end, and the ignored tag with why
    [digest] = sent_emails()
    for fact in (HOME, MEMBER, home_rule, member_rule, forever_rule, "revoked", exempt_group, exempt_rule):
        assert fact in digest.body
    assert "KEPT OPEN" in digest.body
    assert "exempt until 2025-07-01T00:00:00+00:00" in digest.body
    assert f"{forever_group}: opsbots:exempt-until=9999-12-31 ignored: more than max_exemption_days (90)" in digest.body
    assert "1 kept open by exemptions" in digest.subject


def test_exempt_violations_alone_are_reminded_daily_not_hourly(estate: Estate, lambdas: Any) -> None:
    # Given only an exempt group with SSH open
    group = estate.group(tags={"opsbots:exempt-until": "2025-07-01"})
    [rule] = estate.authorize(group, [tcp(22)])
    hourly, midnight = load_event("scheduled-event"), load_event("scheduled-event")
    midnight["time"], midnight["id"] = "2025-06-15T00:00:00Z", "a1b2c3d4-0000-4000-8000-000000000000"

    # When the 02:00 run and the next midnight run fire
    quiet = lambdas.invoke("sweep_security_groups", hourly).payload
    emails_after_the_hourly_run = len(sent_emails())
    reminder = lambdas.invoke("sweep_security_groups", midnight).payload

    # Then the rule is kept open by both, only the midnight run sends a digest, and it names the rule
    assert quiet["kept"] == reminder["kept"] == [f"{HOME}/{REGION}/{rule} ({group})"]
    assert (quiet["email"], emails_after_the_hourly_run) == (None, 0)
    assert reminder["email"] == "sent"
    [digest] = sent_emails()
    assert rule in digest.body
    assert rule in estate.rule_ids(group)


def test_a_clean_estate_sends_no_digest(estate: Estate, lambdas: Any) -> None:
    estate.authorize(estate.group(), [tcp(443)])
    assert sweep(lambdas)["violations"] == 0
    assert sent_emails() == []


def test_one_failing_account_does_not_stop_the_others(
    estate: Estate, lambdas: Any, policies_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a second member account whose role denies access
    accounts = policies_dir / "accounts.yml"
    accounts.write_text(accounts.read_text() + f'  - id: "{BROKEN_MEMBER}"\n    name: broken\n')
    monkeypatch.setenv(POLICIES_DIR, str(policies_dir))
    current().acting_as("sweep_security_groups")  # its member sessions are named after it
    broken = Target(BROKEN_MEMBER, REGION, f"arn:aws:iam::{BROKEN_MEMBER}:role/opsbots-member-security-groups")
    answer_with_error(current().clients.client("ec2", broken), "DescribeSecurityGroups", "UnauthorizedOperation")
    group = estate.group()
    [rule] = estate.authorize(group, [tcp(22)])

    # When the schedule fires
    result = sweep(lambdas)

    # Then home was still enforced, and the failure is in the result and in the digest
    assert rule not in estate.rule_ids(group)
    assert [unit.split(":")[0] for unit in result["failed_units"]] == [f"{BROKEN_MEMBER}/{REGION}"]
    [digest] = sent_emails()
    assert "SWEEP FAILED" in digest.body
    assert "UnauthorizedOperation" in digest.body
