"""What each event costs in AWS calls, counted with a botocore hook on a real session."""

from __future__ import annotations

from typing import Any

import pytest
from chalice.local import LambdaContext

from chalicelib.aws import HOME as HOME_KEY
from chalicelib.aws import Clients, Target
from chalicelib.outbox import mailer_for
from chalicelib.policy import load_policies
from chalicelib.security_groups.decisions import BOT
from chalicelib.security_groups.handlers import handle_change
from tests.support.aws import HOME, REGION, ROOT, load_event
from tests.support.estate import Estate, counting_clients, tcp
from tests.support.lambdas import calls_to


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


FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{HOME}:function:opsbots-dev-on_security_group_change"


def test_a_cold_container_learns_its_account_from_the_arn_lambda_invoked_it_by(estate: Estate) -> None:
    # Given a cold container: no account id known yet, as Lambda invokes it
    clients, calls = counting_clients()
    clients.know_home_account(FUNCTION_ARN)

    assert handle(ssh_event(estate), clients)["status"] == "reverted"

    # Then: no STS call to learn whose account the event came from
    assert calls == ["DescribeSecurityGroups", "RevokeSecurityGroupIngress", "SendEmail"]


@pytest.mark.parametrize(
    "arn",
    [
        "",
        f"arn:aws:iam::{HOME}:role/opsbots",  # not a function
        f"arn:aws:lambda:{REGION}:{HOME[:-1]}:function:opsbots",  # not an account id
        f"arn:aws:lambda:{REGION}:{HOME}:function:opsbots/../x",
    ],
)
def test_what_is_not_a_function_arn_leaves_the_account_to_sts(estate: Estate, arn: str) -> None:
    clients, calls = counting_clients()
    clients.know_home_account(arn)

    assert clients.home().account_id == HOME
    assert calls == ["GetCallerIdentity"]


def test_the_deployed_handler_learns_its_account_from_its_context(estate: Estate) -> None:
    # Given the container's STS calls counted, and the context Lambda hands a function it invokes
    from app import app

    asked = calls_to("sts.GetCallerIdentity", Target(HOME_KEY, REGION))
    context = LambdaContext("on_security_group_change", memory_size=256)
    context.invoked_function_arn = FUNCTION_ARN

    assert app.handler_map["on_security_group_change"](ssh_event(estate), context)["status"] == "reverted"

    assert asked == []
