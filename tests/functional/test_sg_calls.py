"""What each event costs in AWS calls, counted with a botocore hook on a real session."""

from __future__ import annotations

from typing import Any

from chalicelib.aws import Clients
from chalicelib.outbox import mailer_for
from chalicelib.policy import load_policies
from chalicelib.security_groups.decisions import BOT
from chalicelib.security_groups.handlers import handle_change
from tests.support.aws import ROOT, load_event
from tests.support.estate import Estate, counting_clients, tcp


def handle(event: dict[str, Any], clients: Clients, table: str | None = None) -> dict[str, Any]:
    return handle_change(
        event, policies=load_policies(ROOT / "policies"), clients=clients, mailer=mailer_for(BOT, clients, table)
    )


def ssh_event(estate: Estate) -> dict[str, Any]:
    group = estate.group()
    [rule] = estate.authorize(group, [tcp(22)])
    return load_event(
        "sg-authorize-ingress-ssh-world", **{"sg-0a7c3e91d54b26f80": group, "sgr-0e3b7d29a5c1f8464": rule}
    )


def test_a_compliant_event_costs_no_aws_call(estate: Estate) -> None:
    clients, calls = counting_clients()
    assert handle(load_event("sg-authorize-egress"), clients)["status"] == "compliant"
    assert calls == []


def test_a_compliant_prefix_list_edit_costs_no_aws_call(estate: Estate) -> None:
    # Given a prefix list that gains only private space
    event = load_event("sg-modify-prefix-list-world")
    event["detail"]["requestParameters"]["ModifyManagedPrefixListRequest"]["AddEntry"]["cidr"] = "10.20.0.0/16"
    clients, calls = counting_clients()
    assert handle(event, clients)["status"] == "compliant"
    assert calls == []


def test_a_violation_costs_a_lookup_a_revoke_and_an_email(estate: Estate) -> None:
    # Given a warm container (the home account id already known), and no run-once table
    clients, calls = counting_clients()
    clients.home()
    calls.clear()

    assert handle(ssh_event(estate), clients)["status"] == "reverted"

    # Then: the exemption look-up, one revoke, one email
    assert calls == ["DescribeSecurityGroups", "RevokeSecurityGroupIngress", "SendEmail"]


def test_as_deployed_a_violation_costs_four_calls_one_of_them_dynamodb(estate: Estate, idempotency_table: str) -> None:
    # Given a warm container with the run-once table, as deployed
    clients, calls = counting_clients()
    clients.home()
    calls.clear()

    assert handle(ssh_event(estate), clients, idempotency_table)["status"] == "reverted"

    # Then: look-up, revoke, one conditional write (the email's claim), email; the revoke waits on nothing
    assert calls == ["DescribeSecurityGroups", "RevokeSecurityGroupIngress", "PutItem", "SendEmail"]
