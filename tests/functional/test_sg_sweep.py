"""The scheduled sweep: every group of every account/region, one digest, one failing account tolerated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chalicelib.aws import Target
from chalicelib.runtime import current
from tests.conftest import HOME, MEMBER, REGION, load_event
from tests.functional.conftest import Estate, sent_emails, tcp
from tests.functional.faults import answer_with_error

BROKEN_MEMBER = "333333333333"


def sweep(lambdas: Any) -> dict[str, Any]:
    payload: dict[str, Any] = lambdas.invoke("sweep_security_groups", load_event("scheduled-event")).payload
    return payload


def test_the_sweep_reverts_what_no_event_reported_in_every_account(estate: Estate, lambdas: Any) -> None:
    # Given SSH open in home, RDP open in the member, and an exempt group with SSH open too
    home_group = estate.group()
    [home_rule] = estate.authorize(home_group, [tcp(22)])
    member_group = estate.group(estate.member_ec2)
    [member_rule] = estate.authorize(member_group, [tcp(3389, "::/0")], ec2=estate.member_ec2)
    exempt_group = estate.group(tags={"opsbots:exempt-until": "2999-01-01"})
    [exempt_rule] = estate.authorize(exempt_group, [tcp(22)])
    [web_rule] = estate.authorize(home_group, [tcp(443)])

    # When the schedule fires
    result = sweep(lambdas)

    # Then both violations are reverted, the exempt and compliant rules stay, and one digest is sent
    assert result["violations"] == 2
    assert result["failed_units"] == []
    assert result["exempt_groups"] == [f"{HOME}/{REGION}/{exempt_group}"]
    assert home_rule not in estate.rule_ids(home_group)
    assert member_rule not in estate.rule_ids(member_group, estate.member_ec2)
    assert {exempt_rule, web_rule} <= estate.rule_ids(exempt_group) | estate.rule_ids(home_group)
    [digest] = sent_emails()
    for fact in (HOME, MEMBER, home_rule, member_rule, "revoked", exempt_group):
        assert fact in digest.body


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
    monkeypatch.setenv("OPSBOTS_POLICIES", str(policies_dir))
    broken = Target(BROKEN_MEMBER, REGION, f"arn:aws:iam::{BROKEN_MEMBER}:role/opsbots-member")
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
