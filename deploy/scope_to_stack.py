"""Scope the tables, queues and SES identities in a packaged template's IAM policies to the stack's account and region.

`.chalice/policy-<function>.json` is uploaded as it is by `chalice deploy`, which knows no account or region, so
those documents say `arn:aws:dynamodb:*:*:table/opsbots-idempotency`. The template `make package` writes is
deployed by CloudFormation, which does know them: this rewrites each such ARN there into
`{"Fn::Sub": "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/opsbots-idempotency"}`, so a
function can reach its own stack's tables, queues and sender, and no other account's or region's.

A function of opsbots that another may invoke is named as `chalice deploy` names it,
`arn:aws:lambda:*:*:function:opsbots-*-<function>`; in the template it becomes that function's own ARN.
"""

from __future__ import annotations

import re
from typing import Any

from chalicelib.bots import FUNCTIONS

SCOPED_SERVICES = ("dynamodb", "sqs", "ses")
_ANY_ACCOUNT_OR_REGION = re.compile(rf"arn:aws:({'|'.join(SCOPED_SERVICES)}):\*:\*:(.+)")
_OUR_FUNCTION = re.compile(r"arn:aws:lambda:\*:\*:function:opsbots-\*-(\w+)")


def scoped(resource: Any) -> Any:
    """One statement's Resource, its table, queue and identity ARNs pinned to the stack's account and region."""
    if isinstance(resource, list):
        return [scoped(item) for item in resource]
    function = _OUR_FUNCTION.fullmatch(resource) if isinstance(resource, str) else None
    if function is not None:
        return {"Fn::GetAtt": [FUNCTIONS[function.group(1)].logical_id, "Arn"]}
    found = _ANY_ACCOUNT_OR_REGION.fullmatch(resource) if isinstance(resource, str) else None
    if found is None:
        return resource
    service, rest = found.groups()
    return {"Fn::Sub": f"arn:${{AWS::Partition}}:{service}:${{AWS::Region}}:${{AWS::AccountId}}:{rest}"}


def scope_document(document: dict[str, Any]) -> dict[str, Any]:
    return {**document, "Statement": [{**s, "Resource": scoped(s["Resource"])} for s in document["Statement"]]}


def scope_template(template: dict[str, Any]) -> dict[str, Any]:
    for resource in template["Resources"].values():
        if resource.get("Type") == "AWS::IAM::Role":
            for policy in resource["Properties"].get("Policies", []):
                policy["PolicyDocument"] = scope_document(policy["PolicyDocument"])
    return template
