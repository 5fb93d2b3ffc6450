"""What each event costs in AWS calls, counted with a botocore hook on a real session."""

from __future__ import annotations

from typing import Any

from chalicelib import dedupe
from chalicelib.aws import Clients
from chalicelib.notify import SesNotifier
from chalicelib.policy import load_policies
from chalicelib.sg_guard import handle_change
from tests.conftest import ROOT, load_event
from tests.functional.conftest import Estate, counting_clients, tcp


def handle(event: dict[str, Any], clients: Clients) -> dict[str, Any]:
    return handle_change(
        event,
        policies=load_policies(ROOT / "policies"),
        clients=clients,
        notifier_for=lambda target: SesNotifier(clients.client("sesv2", target)),
        once=dedupe.always,
    )


def test_a_compliant_event_costs_no_aws_call(estate: Estate) -> None:
    clients, calls = counting_clients()
    assert handle(load_event("sg-authorize-egress"), clients)["status"] == "compliant"
    assert calls == []


def test_a_violation_costs_a_lookup_a_revoke_and_an_email(estate: Estate) -> None:
    # Given a warm container (the home account id already known)
    clients, calls = counting_clients()
    clients.home()
    calls.clear()
    group = estate.group()
    [rule] = estate.authorize(group, [tcp(22)])
    event = load_event(
        "sg-authorize-ingress-ssh-world", **{"sg-0a7c3e91d54b26f80": group, "sgr-0e3b7d29a5c1f8464": rule}
    )

    assert handle(event, clients)["status"] == "reverted"

    # Then: the exemption look-up, one revoke, one email
    assert calls == ["DescribeSecurityGroups", "RevokeSecurityGroupIngress", "SendEmail"]
