"""A member account's events reach the home functions: deploy/member-role.yml's EventBridge rules, made in a
member account (moto), forward every sample event a home function wakes on to the home account's default
bus, where the home rules (the registry's patterns) take it; and nothing else is forwarded."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from chalicelib.bots import BOT_OF, FUNCTIONS
from tests.support.aws import EVENTS, HOME, MEMBER, REGION
from tests.support.estate import Estate, member_client

MEMBER_TEMPLATE = EVENTS.parent.parent / "deploy" / "member-role.yml"
HOME_BUS = f"arn:aws:events:{REGION}:{HOME}:event-bus/default"
# The samples that are EventBridge events (a classic S3 notification is not)
SAMPLES = sorted(path.stem for path in EVENTS.glob("*.json") if "detail-type" in json.loads(path.read_text()))


def member_rules() -> dict[str, Any]:
    """The template's rules, as CloudFormation would make them in the member account for this region."""
    from cfnlint.decode import cfn_yaml

    resources = cfn_yaml.load(str(MEMBER_TEMPLATE))["Resources"]
    return {name: r["Properties"] for name, r in resources.items() if r["Type"] == "AWS::Events::Rule"}


@pytest.fixture
def queues(estate: Estate) -> dict[str, str]:
    """The home rules of the functions that take events, each into a queue of its own; the member's rules."""
    sqs, events = boto3.client("sqs"), boto3.client("events")
    events.put_permission(Action="events:PutEvents", Principal=MEMBER, StatementId="opsbots-listed-members")
    found: dict[str, str] = {}
    for function in FUNCTIONS.values():
        if function.trigger != "event":
            continue
        url = sqs.create_queue(QueueName=function.name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name=function.name, EventPattern=json.dumps(function.event_pattern))
        events.put_targets(Rule=function.name, Targets=[{"Id": "function", "Arn": arn}])
        found[function.name] = url
    member = member_client("events")
    for name, rule in member_rules().items():
        member.put_rule(Name=name, EventPattern=json.dumps(rule["EventPattern"]), State=rule["State"])
        [target] = rule["Targets"]
        member.put_targets(
            Rule=name, Targets=[{"Id": target["Id"], "Arn": HOME_BUS, "RoleArn": f"arn:aws:iam::{MEMBER}:role/fwd"}]
        )
    return found


def received(url: str) -> list[dict[str, Any]]:
    answer = boto3.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10)
    return [json.loads(message["Body"]) for message in answer.get("Messages", [])]


@pytest.mark.parametrize("sample", SAMPLES)
def test_what_a_member_forwards_is_what_the_home_functions_wake_on(queues: dict[str, str], sample: str) -> None:
    # Given one of the sample events, happening in the member account
    event = json.loads((EVENTS / f"{sample}.json").read_text())

    # When the member's EventBridge sees it
    member_client("events").put_events(
        Entries=[{"Source": event["source"], "DetailType": event["detail-type"], "Detail": json.dumps(event["detail"])}]
    )

    # Then it reaches exactly the home functions that wake on it and work in member accounts (not the
    # thumbnails': their buckets are the home account's)
    woken = {name for name in queues if FUNCTIONS[name].wakes_on(event) and BOT_OF[name].member_calls}
    assert {name for name, url in queues.items() if received(url)} == woken
