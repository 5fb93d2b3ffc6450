"""One bot, one file: each function reads accounts.yml and its own bot's policy file, nothing else.

A deployment that wants only the guard ships security_groups.yml and accounts.yml; the other bots'
functions answer "off" and call nothing. A mistake in one bot's file stops that bot alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client

from chalicelib.policy import PolicyError
from chalicelib.runtime import current
from chalicelib.settings import POLICIES_DIR
from tests.support.aws import ROOT, load_event
from tests.support.estate import Estate, tcp
from tests.support.security_groups import SSH_EVENT_GROUP, SSH_EVENT_RULE

OFF = {
    "on_instance_state_change": ("dns", "ec2-state-running"),
    "reconcile_dns": ("dns", "scheduled-event"),
    "take_snapshots": ("snapshots", "scheduled-event"),
    "on_image_uploaded": ("thumbnails", "s3-object-created"),
}


@pytest.fixture
def policies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, estate: Estate) -> Path:
    """A policies directory holding only accounts.yml and security_groups.yml, as the functions' own."""
    directory = tmp_path / "policies"
    directory.mkdir()
    for name in ("accounts.yml", "security_groups.yml"):
        (directory / name).write_text((ROOT / "policies" / name).read_text())
    monkeypatch.setenv(POLICIES_DIR, str(directory))
    current.cache_clear()
    return directory


@pytest.fixture
def client(policies: Path) -> Iterator[Client]:
    from app import app

    with Client(app, stage_name="dev", project_dir=str(ROOT)) as client:
        yield client


def ssh_to_the_world(estate: Estate) -> tuple[str, str, dict[str, Any]]:
    """A group with SSH just opened to the world: the group, the rule, and CloudTrail's event for it."""
    group = estate.group()
    [rule] = estate.authorize(group, [tcp(22, "0.0.0.0/0")])
    return group, rule, load_event("sg-authorize-ingress-ssh-world", **{SSH_EVENT_GROUP: group, SSH_EVENT_RULE: rule})


def test_the_guard_runs_end_to_end_with_only_its_file_and_accounts_yml(estate: Estate, client: Client) -> None:
    # Given only accounts.yml and security_groups.yml, and SSH opened to the world
    group, rule, event = ssh_to_the_world(estate)
    # When CloudTrail's event reaches the guard
    answer = client.lambda_.invoke("on_security_group_change", event).payload
    # Then the rule is revoked
    assert answer["status"] == "reverted"
    assert rule not in estate.rule_ids(group)


@pytest.mark.parametrize("function", OFF)
def test_a_bot_without_its_file_is_off_and_says_so(function: str, client: Client, policies: Path) -> None:
    # Given no policy file for the function's bot
    bot, sample = OFF[function]
    # When the function is invoked
    answer = client.lambda_.invoke(function, load_event(sample)).payload
    # Then it answers off, naming the file it lacks, and does nothing else
    assert answer == {"status": "off", "bot": bot, "reason": f"no {policies / bot}.yml"}


def test_a_broken_dns_yml_stops_the_dns_bot_and_not_the_guard(
    estate: Estate, dns_registry: str, policies: Path, client: Client
) -> None:
    # Given a dns.yml with a mistake in it
    (policies / "dns.yml").write_text("zones:\n  - zone: example.com\n    adress: public\n")
    group, rule, event = ssh_to_the_world(estate)
    # When the guard and the DNS bot are invoked
    answer = client.lambda_.invoke("on_security_group_change", event).payload
    # Then the guard revokes as ever, and the DNS bot refuses to act, naming the mistake
    assert answer["status"] == "reverted"
    assert rule not in estate.rule_ids(group)
    with pytest.raises(PolicyError, match=r"dns.yml:3: zones\[0\].adress: unknown field"):
        client.lambda_.invoke("on_instance_state_change", load_event("ec2-state-running"))
