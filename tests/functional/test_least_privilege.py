"""Least privilege, enforced: each Lambda function's real path, run as a role holding exactly its policy.

For each of the seven functions, moto gets an IAM role named as the packaged stack names it
(`opsbots-<function>`) whose only inline policy is `.chalice/policy-<function>.json`, and the member
account gets the three roles of `deploy/member-role.yml`, one per bot. The app's runtime is given clients
on the function role's credentials (its bot's member role is assumed by the app itself, with the
ExternalId), and the function's scenarios run through
the Chalice test client with moto's IAM enforcement on. Two checks, because that enforcement has gaps:

1. moto denies what it can judge: a missing action fails the scenario with AccessDenied, as the
   `test_moto_denies_*` tests show by taking one action away per service moto enforces.
2. Every call is recorded by botocore hooks and mapped to what AWS authorizes for it (`needs`: action,
   resource ARN, condition keys). Each must be granted by the function's document (in a member account,
   by its bot's member role, the only one it assumed), and every action a document grants must be needed
   by a recorded call, so an unused grant fails as surely as a missing one. This is what covers the
   services moto does not judge.

What moto 5.2.5 judges (`ActionAuthenticatorMixin`, called by `BaseResponse.call_action` and by S3):
- S3: action and object/bucket ARN. SQS: action and queue ARN. STS AssumeRole: action
  and role ARN, but not the member role's trust policy (moto looks the role up in the caller's account)
  nor the ExternalId: the recorded AssumeRole calls are checked against the trust policy here.
- EC2: action only. moto judges every EC2 call against Resource "*" and treats conditions as met, so the
  `aws:ResourceTag/opsbots:managed` condition on DeleteSnapshot, and the `ec2:CreateTags` (with its
  `ec2:CreateAction` condition) that tagging snapshots on creation needs, are checked from the recorded
  calls only.
- DynamoDB and SES v2: not usefully: moto judges them against Resource "*", which no table-, index- or
  identity-scoped statement matches, and SES without the `ses:FromAddress` its condition needs.
  Route53: not at all: once enforcement is on, moto answers every Route53 request with
  SignatureDoesNotMatch. SQS SendMessageBatch: moto asks for `sqs:SendMessageBatch`, an action IAM does
  not have (AWS authorizes a batch as sqs:SendMessage). These are let through by moto (`UNJUDGED`) and
  checked from the recorded calls only.
- sts:GetCallerIdentity is always allowed, by moto as by AWS.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import botocore.loaders
import botocore.session
import pytest
from botocore.exceptions import ClientError
from chalice.test import Client
from moto import mock_aws
from moto import settings as moto_settings
from moto.core import enable_iam_authentication
from moto.core.authorization import ActionAuthenticatorMixin
from moto.core.models import botocore_stubber
from moto.ec2.models import ec2_backends
from PIL import Image

from chalicelib import triggers
from chalicelib.aws import HOME as HOME_KEY
from chalicelib.aws import Clients, Target, units_of
from chalicelib.bots import (
    BOT_OF,
    DNS_RECONCILE_QUEUE,
    DNS_WRITER,
    FUNCTIONS,
    RUNS,
    SNAPSHOT_LEDGER,
    SNAPSHOT_QUEUE,
    SWEEP_QUEUE,
    WEBSITES_TABLE,
)
from chalicelib.dns.decisions import reconcile_ready
from chalicelib.dns.handlers import dns_deps, reconcile, reconcile_worker
from chalicelib.fanout import Fanout, Runs, UnitRequest
from chalicelib.policy import MemberBot, MemberRoles, load_policies
from chalicelib.runtime import current
from chalicelib.security_groups.handlers import NotificationError, RevokeRetryError, sweep
from chalicelib.settings import POLICIES_DIR
from chalicelib.snapshots.decisions import Unit, plan_units
from chalicelib.snapshots.handlers import schedule_snapshots, snapshot_deps, work_on
from chalicelib.snapshots.policy import SnapshotsPolicy
from chalicelib.websites.policy import WebsitesPolicy
from demo.environment import create_table
from demo.web import http_site
from deploy.scope_to_stack import scope_document
from tests.support.aws import HOME, MEMBER, MOTO_LOCK, REGION, ROOT, TEST_EXTERNAL_ID, load_event
from tests.support.dns import MOTO_LAMBDA, HandedRuns, public_subnet, state_event, writer_function, zones
from tests.support.estate import SENDER, Estate, member_client, sent_emails, tcp
from tests.support.faults import ATTEMPTS, Faults
from tests.support.iam import ASYNC_FUNCTIONS, FAILED_EVENTS, LOGS, MEMBER_ROLE_ACTIONS, PACKAGED, XRAY
from tests.support.lambdas import LambdaContext
from tests.support.policies import local_websites

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_s3 import S3Client

STALE = "333333333333"  # a member account whose snapshot role grants nothing yet (its stack predates the bot)
STACK = "opsbots"  # deploy/resources.json names each Lambda role <stack>-<function>
EXTERNAL_ID = TEST_EXTERNAL_ID
# Within the last hours: the deployed worker refuses a unit far from its own clock.
FIRST_WINDOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
WINDOWS = 4  # take; keep; prune the first; prune the first copy (retention count 1, copies one run behind)
CONFIG = json.loads((ROOT / ".chalice" / "config.json").read_text())
FUNCTION_NAMES = tuple(FUNCTIONS)  # chalicelib/bots.py
# Granted for the Lambda runtime (logs) and the X-Ray SDK's daemon (traces): the code never calls them.
PLATFORM = LOGS | XRAY
# Statements for Lambda's own use of the role (logs, traces, the on-failure destination), never a code path's.
PLATFORM_STATEMENTS = frozenset({"WriteLogs", "WriteTraces", "ReportFailedEvents"})
# The stack the documents are deployed in: `make package` pins tables, queues and identities to it.
# The DNS writer, named as SAM names a packaged function.
WRITER = "opsbots-OnInstanceStateChange-1Q2W3E4R5T6Y"
STACK_PARAMETERS = {
    "AWS::Partition": "aws",
    "AWS::Region": REGION,
    "AWS::AccountId": HOME,
    "OnInstanceStateChange.Arn": f"arn:aws:lambda:{REGION}:{HOME}:function:{WRITER}",
}
# What moto cannot judge (a signing name, or signing name.operation): it lets these through, and the
# recorded calls are checked instead.
UNJUDGED = {
    "dynamodb": "moto judges every DynamoDB call against Resource '*': no table-scoped statement can match",
    "ses": "moto judges SES v2 against Resource '*' and without ses:FromAddress: no sender-scoped statement can match",
    "route53": "moto answers every Route53 request with SignatureDoesNotMatch once enforcement is on",
    "sqs.SendMessageBatch": "moto asks for sqs:SendMessageBatch, which IAM does not have: AWS asks for sqs:SendMessage",
    "lambda.Invoke": "moto asks for lambda:Invoke, which IAM does not have: AWS asks for lambda:InvokeFunction",
}
GUARD_IN_MEMBERS = MEMBER_ROLE_ACTIONS["security_groups"]
SNAPSHOTS_IN_MEMBERS = MEMBER_ROLE_ACTIONS["snapshots"]
# Whose member role each function assumes (None: it works in the home account only).
MEMBER_ROLE_OF: dict[str, MemberBot | None] = {
    name: bot.name if bot.in_member_accounts else None  # type: ignore[misc]  # test_registry: MemberBot's
    for name, bot in BOT_OF.items()
}
# What each function's scenarios do in the member account, through its bot's member role.
MEMBER_USE: dict[str, frozenset[str]] = {
    "on_security_group_change": frozenset({"ec2:DescribeSecurityGroups", "ec2:RevokeSecurityGroupIngress"}),
    "sweep_security_groups": GUARD_IN_MEMBERS,
    "sweep_worker": GUARD_IN_MEMBERS,
    "on_instance_state_change": frozenset({"ec2:DescribeInstances"}),
    "reconcile_dns": frozenset({"ec2:DescribeInstances"}),
    "dns_reconcile_worker": frozenset({"ec2:DescribeInstances"}),
    "take_snapshots": SNAPSHOTS_IN_MEMBERS,
    "snapshot_worker": SNAPSHOTS_IN_MEMBERS,
    "on_image_uploaded": frozenset(),
    "check_websites": frozenset(),
}


def logical_id(function: str) -> str:
    return "".join(part.title() for part in function.split("_"))


# Asynchronous functions whose code sends no SQS message: only Lambda sends, to the on-failure destination.
LAMBDA_SENDS_ONLY = frozenset(
    name
    for name in FUNCTION_NAMES
    if logical_id(name) in ASYNC_FUNCTIONS and "sqs:SendMessage" not in FUNCTIONS[name].calls
)


def declared(function: str) -> frozenset[str]:
    """What the code says the function calls (`<bot>.PERMISSIONS` & co., as tests/test_packaging.py adds them up),
    less what only Lambda does with the role: the on-failure destination, except where the code sends too."""
    lambda_only = FAILED_EVENTS if function in LAMBDA_SENDS_ONLY else frozenset()
    return frozenset(PACKAGED[logical_id(function)][0] - PLATFORM - lambda_only)


# ---------------------------------------------------------------------------------------------
# What AWS authorizes for a call, and whether a policy grants it.
# ---------------------------------------------------------------------------------------------


@dataclass
class Call:
    """One API call a function made, as a botocore hook saw it."""

    account: str
    region: str
    service: str  # botocore's name: sesv2, route53, ...
    operation: str
    params: dict[str, Any]
    status: int = 0  # the HTTP status of the answer
    error: str = ""
    tags: dict[str, str] = field(default_factory=dict)  # the resource's tags when a condition needs them

    def __str__(self) -> str:
        return f"{self.account} {self.region} {self.service}.{self.operation} -> {self.status} {self.error}".strip()


@dataclass(frozen=True)
class Need:
    """One authorization AWS makes for a call: action, resource ARN ("*" if none applies), condition keys."""

    action: str
    resource: str = "*"
    context: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        keys = ", ".join(f"{key}={value}" for key, value in self.context)
        return f"{self.action} on {self.resource}" + (f" with {keys}" if keys else "")


IAM_PREFIX = {"sesv2": "ses"}  # where IAM's service prefix is not botocore's service name
RENAMED = {
    ("s3", "HeadObject"): "GetObject",  # HEAD is authorized as s3:GetObject
    ("s3", "ListObjectsV2"): "ListBucket",
    ("sqs", "SendMessageBatch"): "SendMessage",
    ("sqs", "DeleteMessageBatch"): "DeleteMessage",
    ("lambda", "Invoke"): "InvokeFunction",
}
TAGGED_ON_CREATE = frozenset({"CreateSnapshot", "CreateSnapshots", "CopySnapshot"})


def _anything(call: Call) -> str:
    return "*"


def _s3_resource(call: Call) -> str:
    key = call.params.get("Key")
    return f"arn:aws:s3:::{call.params['Bucket']}" + (f"/{key}" if key is not None else "")


def _dynamodb_resource(call: Call) -> str:
    [name] = call.params["RequestItems"] if "RequestItems" in call.params else [call.params["TableName"]]
    table = f"arn:aws:dynamodb:{call.region}:{call.account}:table/{name}"
    return f"{table}/index/{call.params['IndexName']}" if "IndexName" in call.params else table


def _route53_resource(call: Call) -> str:
    zone = call.params.get("HostedZoneId") or call.params.get("Id")
    return f"arn:aws:route53:::hostedzone/{zone.rsplit('/', 1)[-1]}" if zone else "*"


def _sqs_resource(call: Call) -> str:
    account, name = call.params["QueueUrl"].rstrip("/").split("/")[-2:]
    return f"arn:aws:sqs:{call.region}:{account}:{name}"


def _ses_resource(call: Call) -> str:
    return f"arn:aws:ses:{call.region}:{call.account}:identity/{call.params['FromEmailAddress']}"


def _ses_context(call: Call) -> tuple[tuple[str, str], ...]:
    return (("ses:FromAddress", call.params["FromEmailAddress"]),) if call.operation == "SendEmail" else ()


def _no_context(call: Call) -> tuple[tuple[str, str], ...]:
    return ()


# Condition keys a service sets from the request itself.
REQUEST_CONTEXT: dict[str, Callable[[Call], tuple[tuple[str, str], ...]]] = {"sesv2": _ses_context}


def _lambda_resource(call: Call) -> str:
    name = call.params["FunctionName"]
    return name if name.startswith("arn:") else f"arn:aws:lambda:{call.region}:{call.account}:function:{name}"


def _sts_resource(call: Call) -> str:
    return str(call.params.get("RoleArn", "*"))


def _ec2_resource(call: Call) -> str:
    if call.operation == "DeleteSnapshot":
        return f"arn:aws:ec2:{call.region}:{call.account}:snapshot/{call.params['SnapshotId']}"
    return "*"  # every other EC2 action opsbots calls is granted on "*"


RESOURCES: dict[str, Callable[[Call], str]] = {
    "s3": _s3_resource,
    "dynamodb": _dynamodb_resource,
    "route53": _route53_resource,
    "sqs": _sqs_resource,
    "sesv2": _ses_resource,
    "sts": _sts_resource,
    "ec2": _ec2_resource,
    "lambda": _lambda_resource,
}


def _s3_implied(call: Call) -> list[Need]:
    # A missing key answers 404 only to a caller allowed to list the bucket; to anyone else, 403.
    if call.operation in {"HeadObject", "GetObject"} and call.status == 404:
        return [Need("s3:ListBucket", f"arn:aws:s3:::{call.params['Bucket']}")]
    return []


def _ec2_implied(call: Call) -> list[Need]:
    # Tags given to a create call (or copied by it) are authorized as ec2:CreateTags with ec2:CreateAction.
    if call.operation in TAGGED_ON_CREATE and (
        call.params.get("TagSpecifications") or "CopyTagsFromSource" in call.params
    ):
        snapshots_here = f"arn:aws:ec2:{call.region}:{call.account}:snapshot/*"
        return [Need("ec2:CreateTags", snapshots_here, (("ec2:CreateAction", call.operation),))]
    return []


def _nothing_more(call: Call) -> list[Need]:
    return []


IMPLIED: dict[str, Callable[[Call], list[Need]]] = {"s3": _s3_implied, "ec2": _ec2_implied}


# A transaction is authorized item by item, as the item's own action: IAM has no dynamodb:TransactWriteItems.
TRANSACTION_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


def needs(call: Call) -> list[Need]:
    """The authorizations AWS makes for one call."""
    if (call.service, call.operation) == ("dynamodb", "TransactWriteItems"):
        return [
            need
            for item in call.params["TransactItems"]
            for kind, write in item.items()
            for need in needs(dataclasses.replace(call, operation=TRANSACTION_ACTIONS[kind], params=write))
        ]
    operation = RENAMED.get((call.service, call.operation), call.operation)
    action = f"{IAM_PREFIX.get(call.service, call.service)}:{operation}"
    tags = ((f"aws:ResourceTag/{key}", value) for key, value in call.tags.items())
    context = tuple(sorted((*tags, *REQUEST_CONTEXT.get(call.service, _no_context)(call))))
    resource = RESOURCES.get(call.service, _anything)(call)
    return [Need(action, resource, context), *IMPLIED.get(call.service, _nothing_more)(call)]


def _listed(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _like(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """IAM's wildcard match: `*` any run of characters, `?` any one."""
    regex = "".join(".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


OPERATORS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda expected, actual: expected == actual,
    "StringLike": _like,
    "ArnEquals": lambda expected, actual: expected == actual,
    "ArnLike": _like,
}


def _holds(conditions: Mapping[str, Mapping[str, Any]], context: Mapping[str, str]) -> bool:
    """Every condition holds; a key the request does not carry fails its condition (no ...IfExists here)."""
    for operator, tests in conditions.items():
        compare = OPERATORS[operator]  # an operator this checker does not know fails the test loudly
        for key, expected in tests.items():
            actual = context.get(key)
            if actual is None or not any(compare(value, actual) for value in _listed(expected)):
                return False
    return True


def _applies(statement: Mapping[str, Any], need: Need) -> bool:
    return (
        any(_like(pattern, need.action, ignore_case=True) for pattern in _listed(statement["Action"]))
        and any(_like(pattern, need.resource) for pattern in _listed(statement["Resource"]))
        and _holds(statement.get("Condition", {}), dict(need.context))
    )


def grants(statements: Sequence[Mapping[str, Any]], need: Need) -> bool:
    """An identity policy's verdict: some statement allows the need and none denies it."""
    return {statement["Effect"] for statement in statements if _applies(statement, need)} == {"Allow"}


def trusts(statements: Sequence[Mapping[str, Any]], principal_arn: str, context: Mapping[str, str]) -> bool:
    """A trust policy's verdict on sts:AssumeRole by `principal_arn` (an account's root means any of its roles)."""
    root = f"arn:aws:iam::{principal_arn.split(':')[4]}:root"
    return any(
        statement["Effect"] == "Allow"
        and any(_like(pattern, "sts:AssumeRole", ignore_case=True) for pattern in _listed(statement["Action"]))
        and any(value in {"*", root, principal_arn} for value in _listed(statement["Principal"].get("AWS", [])))
        and _holds(statement.get("Condition", {}), context)
        for statement in statements
    )


def granted_actions(statements: Sequence[Mapping[str, Any]]) -> frozenset[str]:
    """What the statements grant a function's code (Lambda's own statements aside)."""
    return frozenset(
        action
        for statement in statements
        if statement.get("Sid") not in PLATFORM_STATEMENTS
        for action in _listed(statement["Action"])
    )


# ---------------------------------------------------------------------------------------------
# The IAM documents, and moto's roles built from them.
# ---------------------------------------------------------------------------------------------

LAMBDA_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def function_document(function: str) -> dict[str, Any]:
    """`.chalice/policy-<function>.json` as `make package` deploys it to this account and region."""
    document = json.loads((ROOT / ".chalice" / f"policy-{function}.json").read_text())
    scoped: dict[str, Any] = _resolved(scope_document(document), STACK_PARAMETERS)
    return scoped


def without(document: Mapping[str, Any], *actions: str) -> dict[str, Any]:
    """The document with `actions` taken out of every statement (and statements left empty dropped)."""
    changed = copy.deepcopy(dict(document))
    for statement in changed["Statement"]:
        statement["Action"] = [action for action in _listed(statement["Action"]) if action not in actions]
    changed["Statement"] = [statement for statement in changed["Statement"] if statement["Action"]]
    return changed


def edited(document: Mapping[str, Any], sid: str, **replacements: Any) -> dict[str, Any]:
    """The document with statement `sid`'s elements replaced."""
    changed = copy.deepcopy(dict(document))
    [statement] = [statement for statement in changed["Statement"] if statement.get("Sid") == sid]
    statement.update(replacements)
    return changed


def _resolved(node: Any, parameters: Mapping[str, str]) -> Any:
    """A CloudFormation fragment with its `Ref`s and `Fn::Sub`s replaced by the parameters' values."""
    if isinstance(node, Mapping):
        if set(node) == {"Ref"}:
            return parameters[node["Ref"]]
        if set(node) == {"Fn::GetAtt"}:
            return parameters[".".join(node["Fn::GetAtt"])]
        if set(node) == {"Fn::Sub"}:
            return re.sub(r"\$\{([^}]+)\}", lambda found: parameters[found.group(1)], node["Fn::Sub"])
        return {str(key): _resolved(value, parameters) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolved(value, parameters) for value in node]
    return str(node) if isinstance(node, str) else node


MEMBER_ROLE_IDS: dict[MemberBot, str] = {
    "security_groups": "SecurityGroupsRole",
    "dns": "DnsRole",
    "snapshots": "SnapshotsRole",
}


def member_roles() -> dict[MemberBot, dict[str, Any]]:
    """`deploy/member-role.yml`'s roles by bot, as a StackSet deploys them for this home account and ExternalId."""
    from cfnlint.decode import cfn_yaml  # type: ignore[import-untyped]

    template = cfn_yaml.load(str(ROOT / "deploy" / "member-role.yml"))
    parameters = {"HomeAccountId": HOME, "HomeRolePrefix": STACK, "ExternalId": EXTERNAL_ID, "AWS::Partition": "aws"}
    return {
        bot: _resolved(template["Resources"][name]["Properties"], parameters) for bot, name in MEMBER_ROLE_IDS.items()
    }


def home_role_arn(function: str) -> str:
    return f"arn:aws:iam::{HOME}:role/{STACK}-{function}"


def member_statements(role: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [statement for policy in role["Policies"] for statement in policy["PolicyDocument"]["Statement"]]


def client_in(account: str, service: str) -> Any:
    """A set-up client (no enforcement) in any account: moto picks the account from the credentials."""
    if account == HOME:
        return boto3.client(service)  # type: ignore[call-overload]
    credentials = boto3.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/test-setup", RoleSessionName="test-setup"
    )["Credentials"]
    return boto3.client(  # type: ignore[call-overload]
        service,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


def put_member_roles(account: str, roles: Iterable[Mapping[str, Any]]) -> None:
    """Create member roles in `account`, as the StackSet does."""
    iam = client_in(account, "iam")
    for role in roles:
        iam.create_role(
            RoleName=role["RoleName"],
            AssumeRolePolicyDocument=json.dumps(role["AssumeRolePolicyDocument"]),
            MaxSessionDuration=role["MaxSessionDuration"],
        )
        for policy in role["Policies"]:
            iam.put_role_policy(
                RoleName=role["RoleName"],
                PolicyName=policy["PolicyName"],
                PolicyDocument=json.dumps(policy["PolicyDocument"]),
            )


# ---------------------------------------------------------------------------------------------
# Running as a role, with moto judging, and every call recorded.
# ---------------------------------------------------------------------------------------------

CALL = "opsbots.least_privilege.call"  # where a call's record waits in botocore's request context


_sending = threading.local()  # whether the request this thread is about to send is one moto cannot judge


def _judge_or_pass(signing_name: str, operation_name: str, **_: Any) -> None:
    """Just before a request is signed: note whether moto can judge it (`_judging` acts on it)."""
    _sending.unjudged = signing_name in UNJUDGED or f"{signing_name}.{operation_name}" in UNJUDGED


@contextmanager
def _judging() -> Iterator[None]:
    """moto judges each request it serves, but the ones the sending thread noted it cannot judge.

    moto lets a request through unjudged while its (global) request count is below
    INITIAL_NO_AUTH_ACTION_COUNT, and counts it; so the number is set as the request is served, under the lock
    that has moto serve one request at a time (tests/support/aws.py): the functions' thread pools cannot mix up
    one request's verdict with another's. A request no hook noted (not a function's client) is judged."""
    serve = botocore_stubber.process_request

    def judged(request: Any) -> Any:
        with MOTO_LOCK:
            unjudged, _sending.unjudged = getattr(_sending, "unjudged", False), False
            moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = ActionAuthenticatorMixin.request_count + (1 if unjudged else 0)
            return serve(request)

    botocore_stubber.process_request = judged  # type: ignore[method-assign]
    try:
        yield
    finally:
        botocore_stubber.process_request = serve  # type: ignore[method-assign]


def _watch(client: Any, account: str, calls: list[Call]) -> None:
    region = client.meta.region_name

    def before(model: Any, params: Mapping[str, Any], context: dict[str, Any], **_: Any) -> None:
        call = Call(account, region, model.service_model.service_name, model.name, dict(params))
        if call.operation == "DeleteSnapshot":  # the condition is on the snapshot's tags, which go with it
            call.tags = dict(ec2_backends[account][region].tags.get(params["SnapshotId"], {}))
        context[CALL] = call
        calls.append(call)

    def after(http_response: Any, parsed: Mapping[str, Any], context: Mapping[str, Any], **_: Any) -> None:
        if CALL in context:
            context[CALL].status = http_response.status_code
            context[CALL].error = str(parsed.get("Error", {}).get("Code", ""))

    client.meta.events.register("before-parameter-build", before)  # the call's own parameters
    client.meta.events.register("after-call", after)
    client.meta.events.register("before-sign", _judge_or_pass)


# One cache of botocore's service models for every role's sessions: reading them is most of a new session's cost.
LOADER = botocore.loaders.create_loader()


def _core_session() -> botocore.session.Session:
    core = botocore.session.Session()
    core.register_component("data_loader", LOADER)
    return core


def role_session(credentials: Mapping[str, Any]) -> boto3.Session:
    """What the Lambda runtime gives the function: a session on its role's credentials."""
    session = boto3.Session(
        botocore_session=_core_session(),
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=REGION,
    )
    LOADER.search_paths[:] = list(dict.fromkeys(LOADER.search_paths))  # boto3 adds its path each time
    return session


class RecordingClients(Clients):
    """The app's own client factory on a role's session; every client it builds records its calls."""

    def __init__(self, session: boto3.Session, calls: list[Call]) -> None:
        super().__init__(external_id=EXTERNAL_ID, home_session=session)
        self._loader = LOADER  # the member sessions' models, read once for all the tests
        self.calls = calls
        self._watched: set[int] = set()
        self._watching = threading.Lock()

    def client(self, service: str, target: Target) -> Any:
        built = super().client(service, target)  # type: ignore[call-overload]
        with self._watching:
            if id(built) not in self._watched:
                self._watched.add(id(built))
                _watch(built, target.role_arn.split(":")[4] if target.role_arn else HOME, self.calls)
        return built


@contextmanager
def enforced() -> Iterator[None]:
    """moto's IAM enforcement, on around the functions' calls only: set-up and checks run without it."""
    with enable_iam_authentication(), _judging():
        yield


@dataclass
class Bot:
    """One Lambda function running as its own role."""

    function: str
    role_arn: str
    statements: list[dict[str, Any]]
    clients: RecordingClients
    calls: list[Call]

    def install(self) -> None:
        """Give the app's runtime this role's clients, as the deployed function has its role's credentials."""
        current().clients = self.clients


@dataclass(frozen=True)
class Findings:
    refused: tuple[str, ...]  # calls moto denied
    not_granted: frozenset[str]  # needs the function's document does not grant
    not_needed: frozenset[str]  # actions the document grants (logs and X-Ray aside) that no call needed
    used: frozenset[str]  # actions the recorded calls needed in the home account
    member_not_granted: frozenset[str]  # needs in the member account its bot's member role does not grant
    member_used: frozenset[str]
    member_roles: frozenset[str]  # the member roles it assumed
    untrusted: tuple[str, ...]  # AssumeRole calls the assumed role's trust policy refuses
    sessions: frozenset[str]  # the session names the member accounts' CloudTrail shows


@dataclass
class Iam:
    """The estate's IAM: a member role per bot in the member account, and a role per function at home."""

    roles: dict[MemberBot, dict[str, Any]]

    def member_statements(self, function: str) -> list[dict[str, Any]]:
        """What the function's bot's member role grants (nothing, for a function that works at home only)."""
        bot = MEMBER_ROLE_OF[function]
        return member_statements(self.roles[bot]) if bot else []

    def bot(self, function: str, document: Mapping[str, Any] | None = None) -> Bot:
        document = document or function_document(function)
        role_arn = home_role_arn(function)
        name = role_arn.rsplit("/", 1)[1]
        iam = client_in(HOME, "iam")
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST))
        iam.put_role_policy(RoleName=name, PolicyName=function, PolicyDocument=json.dumps(document))
        credentials = boto3.client("sts").assume_role(RoleArn=role_arn, RoleSessionName=function[:64])["Credentials"]
        calls: list[Call] = []
        bot = Bot(
            function, role_arn, list(document["Statement"]), RecordingClients(role_session(credentials), calls), calls
        )
        bot.install()
        return bot

    def member_without(self, *actions: str) -> None:
        """Re-put the member roles' policies with `actions` taken out (a policy left empty goes)."""
        iam = client_in(MEMBER, "iam")
        for role in self.roles.values():
            for policy in role["Policies"]:
                document = without(policy["PolicyDocument"], *actions)
                if document["Statement"]:
                    iam.put_role_policy(
                        RoleName=role["RoleName"], PolicyName=policy["PolicyName"], PolicyDocument=json.dumps(document)
                    )
                else:
                    iam.delete_role_policy(RoleName=role["RoleName"], PolicyName=policy["PolicyName"])

    def trust_of(self, role_arn: str) -> list[dict[str, Any]]:
        """The trust policy of the member role `role_arn` names (none, for a role that is not one of them)."""
        name = role_arn.rsplit("/", 1)[1]
        role = next((role for role in self.roles.values() if role["RoleName"] == name), None)
        return role["AssumeRolePolicyDocument"]["Statement"] if role else []

    def findings(self, bot: Bot) -> Findings:
        calls = [call for call in bot.calls if call.account != STALE]
        home = {need for call in calls if call.account == HOME for need in needs(call)}
        members = {need for call in calls if call.account == MEMBER for need in needs(call)}
        used = frozenset(need.action for need in home)
        assumed = [call for call in calls if call.operation == "AssumeRole"]
        return Findings(
            refused=tuple(str(call) for call in calls if call.status == 403),
            not_granted=frozenset(str(need) for need in home if not grants(bot.statements, need)),
            not_needed=granted_actions(bot.statements) - used,
            used=used,
            member_not_granted=frozenset(
                str(need) for need in members if not grants(self.member_statements(bot.function), need)
            ),
            member_used=frozenset(need.action for need in members),
            member_roles=frozenset(call.params["RoleArn"].rsplit("/", 1)[1] for call in assumed),
            untrusted=tuple(
                str(call)
                for call in assumed
                if not trusts(
                    self.trust_of(call.params["RoleArn"]),
                    bot.role_arn,
                    {"sts:ExternalId": call.params.get("ExternalId", ""), "aws:PrincipalArn": bot.role_arn},
                )
            ),
            sessions=frozenset(call.params["RoleSessionName"] for call in assumed),
        )

    def assert_least_privilege(self, bot: Bot) -> None:
        """What the function's calls needed is exactly what its document grants, at home and in members."""
        found = self.findings(bot)
        assert found == Findings(
            refused=(),
            not_granted=frozenset(),
            not_needed=frozenset(),
            used=declared(bot.function),
            member_not_granted=frozenset(),
            member_used=MEMBER_USE[bot.function],
            member_roles=frozenset(
                {getattr(MemberRoles(), bot_of)} if (bot_of := MEMBER_ROLE_OF[bot.function]) else ()
            ),
            untrusted=(),
            # Named after the function, so a member account's CloudTrail tells the bots apart.
            sessions=frozenset({f"opsbots-{bot.function}"}) if MEMBER_USE[bot.function] else frozenset(),
        )


@pytest.fixture
def estate(fresh_runtime: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Estate]:
    """conftest's estate, with boto3's default session on the shared model cache (the set-up's biggest cost)."""
    with mock_aws(config=MOTO_LAMBDA):
        boto3.setup_default_session(botocore_session=_core_session(), region_name=REGION)
        LOADER.search_paths[:] = list(dict.fromkeys(LOADER.search_paths))
        boto3.client("sesv2").create_email_identity(EmailIdentity=SENDER)
        monkeypatch.setenv(SNAPSHOT_LEDGER, create_table(boto3.client("dynamodb"), "SnapshotLedgerTable"))
        yield Estate(home_ec2=boto3.client("ec2"), member_ec2=member_client("ec2"))


@pytest.fixture
def iam(estate: Estate) -> Iam:
    roles = member_roles()
    put_member_roles(MEMBER, roles.values())
    return Iam(roles)


def handle(lambdas: Any, function: str, event: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = lambdas.invoke(function, event).payload
    return payload


# ---------------------------------------------------------------------------------------------
# Scenarios: the security-group guard.
# ---------------------------------------------------------------------------------------------

SAMPLE_IDS = {  # each sample event's group and rule ids, replaced by real ones
    "sg-authorize-ingress-ssh-world": ("sg-0a7c3e91d54b26f80", "sgr-0e3b7d29a5c1f8464"),
    "sg-authorize-egress": ("sg-0d3f6a2c8e17b5904", "sgr-06b2e8d4f1a9c7353"),
    "sg-modify-rules": ("sg-0d3f6a2c8e17b5904", "sgr-0d4a8f2c6e1b95737"),
    "sg-authorize-ingress-cross-account": ("sg-0b91c4e7a2d6f3580", "sgr-04c9e2a7b5f1d8364"),
}
EGRESS_RULE = """
  - name: no-smtp-to-the-internet
    direction: egress
    protocols: [tcp]
    ports: [25]
    sources: internet
"""


@pytest.fixture
def sg_policies(policies_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped guard policy plus an egress rule: a policy can hold both directions."""
    path = policies_dir / "security_groups.yml"
    path.write_text(path.read_text() + EGRESS_RULE)
    monkeypatch.setenv(POLICIES_DIR, str(policies_dir))
    return policies_dir


def prefix_list(ec2: EC2Client, cidr: str = "52.95.110.0/24") -> str:
    """A managed prefix list, by default holding an Amazon range: the internet, for the policy."""
    return ec2.create_managed_prefix_list(
        PrefixListName=f"partners-{uuid.uuid4().hex[:8]}",
        MaxEntries=5,
        AddressFamily="IPv4",
        Entries=[{"Cidr": cidr}],
    )["PrefixList"]["PrefixListId"]


def from_list(port: int, prefix_list_id: str) -> dict[str, Any]:
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "PrefixListIds": [{"PrefixListId": prefix_list_id}]}


@dataclass
class Opened:
    ec2: EC2Client
    group: str
    rule: str

    def gone(self, estate: Estate) -> bool:
        return self.rule not in estate.rule_ids(self.group, self.ec2)


def opened(estate: Estate, permission: dict[str, Any], ec2: EC2Client | None = None, egress: bool = False) -> Opened:
    ec2 = ec2 or estate.home_ec2
    group = estate.group(ec2)
    [rule] = estate.authorize(group, [permission], ec2=ec2, egress=egress)
    return Opened(ec2, group, rule)


def sg_event(sample: str, rule: Opened) -> dict[str, Any]:
    """CloudTrail's event for the call that opened `rule`, with an id of its own."""
    group_id, rule_id = SAMPLE_IDS[sample]
    event = load_event(sample, **{group_id: rule.group, rule_id: rule.rule})
    event["id"] = str(uuid.uuid4())
    return event


def prefix_list_event(rule: Opened, prefix_list_id: str) -> dict[str, Any]:
    """SSH from a prefix list rather than a CIDR."""
    event = sg_event("sg-authorize-ingress-ssh-world", rule)
    detail = event["detail"]
    detail["requestParameters"]["ipPermissions"]["items"][0].update(
        ipRanges={}, prefixListIds={"items": [{"prefixListId": prefix_list_id}]}
    )
    [created] = detail["responseElements"]["securityGroupRuleSet"]["items"]
    del created["cidrIpv4"]
    created["prefixListId"] = prefix_list_id
    return event


@contextmanager
def sdk_without_return_values_on_condition_check_failure(bot: Bot) -> Iterator[None]:
    """An SDK before boto3 1.26.164: Powertools reads an existing record back with GetItem.

    With a newer one, a failed conditional PutItem returns the record itself; GetItem is Powertools'
    fallback, and the reason `on_security_group_change` holds dynamodb:GetItem.
    """

    def drop(params: dict[str, Any], **_: Any) -> None:
        params.pop("ReturnValuesOnConditionCheckFailure", None)

    events = bot.clients.client("dynamodb", Target(HOME_KEY, REGION)).meta.events
    events.register("provide-client-params.dynamodb.PutItem", drop)
    try:
        yield
    finally:
        events.unregister("provide-client-params.dynamodb.PutItem", drop)


class CrashedRunError(Exception):
    pass


def crash() -> dict[str, Any]:
    raise CrashedRunError


def a_crashed_run_leaves_no_record(step: str) -> None:
    """The guard's third path, as the function's role: a run that raises deletes its record, so the retry runs.

    The other two (a first delivery, and a redelivery read back) are the handler's own runs; a crash is
    not something its real paths can be made to do, so the guard the runtime built is driven directly.
    """
    once = current().once(LambdaContext())
    with enforced():
        with pytest.raises(CrashedRunError):
            once(step, "crashed-delivery", crash)
        assert once(step, "crashed-delivery", lambda: {"retried": True}) == {"retried": True}


def test_on_security_group_change(
    iam: Iam, estate: Estate, lambdas: Any, sg_policies: Path, idempotency_table: str
) -> None:
    # Given one violation of each kind the handler acts on, at home and in the member account, and a prefix
    # list that a group uses for SSH and that is about to gain the internet
    prefixes, edited_list = prefix_list(estate.home_ec2), prefix_list(estate.home_ec2, "10.8.0.0/16")
    rules = {
        "ssh": opened(estate, tcp(22)),
        "smtp out": opened(estate, tcp(25), egress=True),
        "modified": opened(estate, tcp(22)),
        "prefix list": opened(estate, from_list(22, prefixes)),
        "prefix list edit": opened(estate, from_list(22, edited_list)),
        "member": opened(estate, tcp(22), ec2=estate.member_ec2),
    }
    estate.home_ec2.modify_managed_prefix_list(
        PrefixListId=edited_list, CurrentVersion=1, AddEntries=[{"Cidr": "0.0.0.0/0"}]
    )
    events = {
        "ssh": sg_event("sg-authorize-ingress-ssh-world", rules["ssh"]),
        "smtp out": sg_event("sg-authorize-egress", rules["smtp out"]),
        "modified": sg_event("sg-modify-rules", rules["modified"]),
        "prefix list": prefix_list_event(rules["prefix list"], prefixes),
        "prefix list edit": load_event("sg-modify-prefix-list-world", **{"pl-0b8e4d2a6c1f93507": edited_list}),
        "member": sg_event("sg-authorize-ingress-cross-account", rules["member"]),
    }
    bot = iam.bot("on_security_group_change")

    # When CloudTrail delivers each event, and the first one twice
    with enforced():
        statuses = {name: handle(lambdas, bot.function, event)["status"] for name, event in events.items()}
        again = handle(lambdas, bot.function, events["ssh"])

    # Then every offending rule is gone and security got one email per event (the ledger refused a second)
    assert statuses == dict.fromkeys(events, "reverted")
    assert (again["status"], again["email"]) == ("reverted", "duplicate")
    assert [name for name, rule in rules.items() if not rule.gone(estate)] == []
    assert len(sent_emails()) == len(events)

    # And when SES refuses the email, it is parked in the ledger, and Lambda's retry sends it
    late = opened(estate, tcp(3389))
    event = sg_event("sg-authorize-ingress-ssh-world", late)
    event["detail"]["requestParameters"]["ipPermissions"]["items"][0].update(fromPort=3389, toPort=3389)
    ses = boto3.client("sesv2")
    ses.delete_email_identity(EmailIdentity=SENDER)
    with enforced(), pytest.raises(NotificationError, match="parked"):
        handle(lambdas, bot.function, event)
    ses.create_email_identity(EmailIdentity=SENDER)
    with enforced():
        assert handle(lambdas, bot.function, event)["email"] == "sent"
    assert late.gone(estate)
    assert len(sent_emails()) == len(events) + 1

    # And when EC2 answers 5xx past the retries, security is told once, the email marked sent, and Lambda retries
    flaky = opened(estate, tcp(22))
    faults = Faults()
    faults.fail("ec2", "RevokeSecurityGroupIngress", "5xx", times=ATTEMPTS)
    faults.on(bot.clients.client("ec2", Target(HOME_KEY, REGION)))
    with enforced(), pytest.raises(RevokeRetryError):
        handle(lambdas, bot.function, sg_event("sg-authorize-ingress-ssh-world", flaky))
    assert not flaky.gone(estate)
    assert len(sent_emails()) == len(events) + 2
    iam.assert_least_privilege(bot)


def sg_violations(estate: Estate) -> list[Opened]:
    """SSH open to the internet and to a prefix list, at home and in the member account (and every group's
    default egress rule open to the internet, which the egress rule forbids)."""
    rules = []
    for ec2 in (estate.home_ec2, estate.member_ec2):
        rules += [opened(estate, tcp(22), ec2=ec2), opened(estate, from_list(22, prefix_list(ec2)), ec2=ec2)]
    return rules


@pytest.fixture
def sweep_queue(estate: Estate, monkeypatch: pytest.MonkeyPatch) -> str:
    """The sweep's queue and runs table, as the template creates them; not yet in the environment."""
    monkeypatch.setenv(RUNS, create_table(boto3.client("dynamodb"), "RunsTable"))
    return boto3.client("sqs").create_queue(QueueName=triggers.SWEEP_QUEUE_NAME)["QueueUrl"]


def test_sweep_security_groups(
    iam: Iam,
    estate: Estate,
    lambdas: Any,
    sg_policies: Path,
    idempotency_table: str,
    sweep_queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the sweep's two modes: without OPSBOTS_SWEEP_QUEUE it sweeps every unit itself, which is what its
    # EC2, SES and AssumeRole grants are for; with it, it records the run and queues the units
    rules = sg_violations(estate)
    bot = iam.bot("sweep_security_groups")

    # When the schedule fires, and EventBridge delivers it again
    with enforced():
        result = handle(lambdas, bot.function, load_event("scheduled-event"))
        with sdk_without_return_values_on_condition_check_failure(bot):
            again = handle(lambdas, bot.function, load_event("scheduled-event"))
    # And, deployed with its queue, the next run fans out
    monkeypatch.setenv(SWEEP_QUEUE, sweep_queue)
    current.cache_clear()
    bot.install()
    with enforced():
        queued = handle(lambdas, bot.function, {**load_event("scheduled-event"), "id": "next-hour"})

    # Then every account was checked and reverted, and one digest went out; then one message per unit
    assert result["failed_units"] == []
    assert result["reverted"] > len(rules)
    assert again == result
    assert all(rule.gone(estate) for rule in rules)
    assert len(sent_emails()) == 1
    assert queued["queued"] == queue_depth(sweep_queue) == 2
    a_crashed_run_leaves_no_record("sweep")
    iam.assert_least_privilege(bot)


def test_sweep_worker(
    iam: Iam, estate: Estate, chalice: Client, sg_policies: Path, idempotency_table: str, sweep_queue: str
) -> None:
    # Given a fanned-out run of the sweep, its units queued
    rules = sg_violations(estate)
    runtime = current().acting_as("sweep_security_groups")
    runs = Runs(boto3.client("dynamodb"), os.environ[RUNS])
    fanout = Fanout(boto3.client("sqs"), sweep_queue, runs)
    mailer = runtime.mailer("security_groups", None)
    sweep(policies=runtime.policies, clients=runtime.clients, mailer=mailer, event_id="run-1", fanout=fanout)
    bot = iam.bot("sweep_worker")
    sqs = bot.clients.client("sqs", Target(HOME_KEY, REGION))  # the event source mapping polls as the function

    # When the worker takes each unit, and SQS delivers the first again
    with enforced():
        results = consume(sqs, sweep_queue, chalice, "sweep_worker")
    again = UnitRequest("run-1", HOME, REGION).to_message()
    boto3.client("sqs").send_message(QueueUrl=sweep_queue, MessageBody=again)
    with enforced(), sdk_without_return_values_on_condition_check_failure(bot):
        redelivered = consume(sqs, sweep_queue, chalice, "sweep_worker")
    a_crashed_run_leaves_no_record("sweep-unit")

    # Then both units were swept and reverted, the last sent the one digest, and the redelivery did nothing again
    units = [unit for result in results for unit in result["units"]]
    assert [unit["digest"] for unit in units] == [None, "sent"]
    assert all(rule.gone(estate) for rule in rules)
    assert len(sent_emails()) == 1
    assert redelivered[0]["units"][0] in units
    iam.assert_least_privilege(bot)


# ---------------------------------------------------------------------------------------------
# Scenarios: the DNS bot.
# ---------------------------------------------------------------------------------------------


@dataclass
class Subnets:
    home: str
    member: str


@pytest.fixture
def dns(estate: Estate, dns_registry: str) -> Subnets:
    """The registry table, a public zone, and private forward and reverse zones both VPCs may use."""
    home_vpc, home_subnet = public_subnet(estate.home_ec2, "10.0.0.0/16")
    member_vpc, member_subnet = public_subnet(estate.member_ec2, "10.1.0.0/16")
    zones(boto3.client("route53"), home_vpc, member_vpc)
    return Subnets(home_subnet, member_subnet)


def launch(ec2: EC2Client, subnet: str, name: str, **tags: str) -> str:
    every_tag = {"opsbots:dns": "yes", "Name": name, **tags}
    return ec2.run_instances(
        ImageId="ami-12345678",
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in every_tag.items()]}
        ],
    )["Instances"][0]["InstanceId"]


def test_on_instance_state_change(iam: Iam, estate: Estate, lambdas: Any, dns: Subnets, reconcile_queue: str) -> None:
    # Given an instance with an alias at home, and one in the member account
    home = launch(estate.home_ec2, dns.home, "app", **{"opsbots:dns-aliases": "api"})
    member = launch(estate.member_ec2, dns.member, "worker")
    bot = iam.bot("on_instance_state_change")

    # When both start, and the home one is then terminated
    with enforced():
        started = [
            handle(lambdas, bot.function, state_event(home, "running")),
            handle(lambdas, bot.function, state_event(member, "running", MEMBER)),
        ]
    estate.home_ec2.terminate_instances(InstanceIds=[home])
    with enforced():
        ended = handle(lambdas, bot.function, state_event(home, "terminated"))

    # Then A, CNAME and PTR records came (private, public, reverse), and the home ones went
    assert [(result["added"], result["conflicts"]) for result in started] == [(5, []), (2, [])]
    assert ended["removed"] == 5

    # And a name someone wrote in Route53 by hand is left alone: the claim made for it is withdrawn
    web = launch(estate.home_ec2, dns.home, "web")
    write_by_hand("web.internal.example.com.")
    with enforced():
        refused = handle(lambdas, bot.function, state_event(web, "running"))
    assert any("a record opsbots did not write" in conflict for conflict in refused["conflicts"])

    # And a record whose write Route53 never confirmed is looked at before it is written again
    unconfirmed("worker.internal.example.com.")
    with enforced():
        rewritten = handle(lambdas, bot.function, state_event(member, "running", MEMBER))
    assert (rewritten["updated"], rewritten["conflicts"]) == (1, [])

    # And, as the DNS writer, it applies a fanned-out reconcile run its last worker hands it: web's is none of ours
    run = fanned_out_run(estate)
    with enforced():
        applied = handle(lambdas, bot.function, reconcile_ready(run))
    assert (applied["run"], applied["removed"], applied["failures"]) == (run, 0, [])
    iam.assert_least_privilege(bot)


def unconfirmed(name: str) -> None:
    """Flag the registry's record at `name` as its write went: Route53 failed before it confirmed it."""
    dynamodb = boto3.client("dynamodb")
    [item] = [item for item in dynamodb.scan(TableName="opsbots-dns")["Items"] if item["name"]["S"] == name]
    dynamodb.put_item(TableName="opsbots-dns", Item={**item, "unwritten": {"BOOL": True}})


def fanned_out_run(estate: Estate) -> str:
    """A reconcile run fanned out and every unit scanned (set-up, not what a scenario checks): its id."""
    runtime = current()
    previous = runtime.clients
    runtime.clients = Clients(external_id=EXTERNAL_ID)
    try:
        reconcile_runs = Runs(boto3.client("dynamodb"), runs_table())
        queue_url = boto3.client("sqs").create_queue(QueueName=triggers.DNS_RECONCILE_QUEUE_NAME)["QueueUrl"]
        deps = dns_deps(runtime)
        scheduled = reconcile(
            policies=runtime.policies,
            deps=deps,
            event_id="hour-1",
            fanout=Fanout(boto3.client("sqs"), queue_url, reconcile_runs),
        )
        sqs = boto3.client("sqs")
        while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
            for message in messages:
                reconcile_worker(
                    message["Body"],
                    1,
                    policies=runtime.policies,
                    clients=runtime.clients,
                    runs=reconcile_runs,
                    writer=HandedRuns(),
                )
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    finally:
        runtime.clients = previous
    return str(scheduled["run"])


def runs_table() -> str:
    """The runs table, as the template creates it, in the environment (made once per test)."""
    if RUNS not in os.environ or os.environ[RUNS] not in boto3.client("dynamodb").list_tables()["TableNames"]:
        os.environ[RUNS] = create_table(boto3.client("dynamodb"), "RunsTable")
    return os.environ[RUNS]


def write_by_hand(name: str) -> None:
    """An A record in the private zone that opsbots did not write."""
    route53 = boto3.client("route53")
    [zone] = [
        z["Id"]
        for z in route53.list_hosted_zones()["HostedZones"]
        if z["Name"] == "internal.example.com." and z["Config"]["PrivateZone"]
    ]
    record = {"Name": name, "Type": "A", "TTL": 60, "ResourceRecords": [{"Value": "10.9.9.9"}]}
    route53.change_resource_record_sets(
        HostedZoneId=zone,
        ChangeBatch={"Changes": [{"Action": "CREATE", "ResourceRecordSet": record}]},  # type: ignore[list-item, typeddict-item]
    )


def test_reconcile_dns(
    iam: Iam, estate: Estate, lambdas: Any, dns: Subnets, reconcile_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given running instances at home and in the member account, and one whose name someone wrote by hand
    launch(estate.home_ec2, dns.home, "app", **{"opsbots:dns-aliases": "api"})
    member = launch(estate.member_ec2, dns.member, "worker")
    launch(estate.home_ec2, dns.home, "mail")
    write_by_hand("mail.internal.example.com.")
    bot = iam.bot("reconcile_dns")

    # When the schedule reconciles, then again after the member instance is terminated
    with enforced():
        first = handle(lambdas, bot.function, load_event("scheduled-event"))
    estate.member_ec2.terminate_instances(InstanceIds=[member])
    unconfirmed("app.internal.example.com.")  # looked at before it is written again
    with enforced():
        second = handle(lambdas, bot.function, load_event("scheduled-event"))

    # Then every record came, and the member instance's went
    # (5 for app; 2 for the member instance, whose account a public zone does not name by default; mail's
    # public record, 1: not its private name, which someone else holds, nor the PTR that would point at it)
    assert (first["added"], first["failures"]) == (7 + 1, [])
    assert any("a record opsbots did not write" in conflict for conflict in first["conflicts"])
    assert (second["added"], second["updated"], second["removed"], second["failures"]) == (0, 1, 2, [])

    # And, deployed with its queue, the next run records itself and queues one message per account/region
    monkeypatch.setenv(DNS_RECONCILE_QUEUE, reconcile_queue)
    current.cache_clear()
    bot.install()
    with enforced():
        queued = handle(lambdas, bot.function, {**load_event("scheduled-event"), "id": "next-hour"})
    assert (queued["run"], queued["queued"]) == ("dns-next-hour", queue_depth(reconcile_queue)) == ("dns-next-hour", 2)
    iam.assert_least_privilege(bot)


@pytest.fixture
def reconcile_queue(estate: Estate, monkeypatch: pytest.MonkeyPatch) -> str:
    """The reconcile's queue, the runs table and the writer, as the template creates them; the queue not yet in
    the environment."""
    monkeypatch.setenv(RUNS, runs_table())
    monkeypatch.setenv(DNS_WRITER, writer_function(WRITER))
    return boto3.client("sqs").create_queue(QueueName=triggers.DNS_RECONCILE_QUEUE_NAME)["QueueUrl"]


def test_dns_reconcile_worker(
    iam: Iam, estate: Estate, chalice: Client, dns: Subnets, reconcile_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a fanned-out reconcile run, its units queued, with instances at home and in the member account
    launch(estate.home_ec2, dns.home, "app")
    launch(estate.member_ec2, dns.member, "worker")
    runtime = current().acting_as("reconcile_dns")
    runs = Runs(boto3.client("dynamodb"), os.environ[RUNS])
    fanout = Fanout(boto3.client("sqs"), reconcile_queue, runs)
    reconcile(policies=runtime.policies, deps=dns_deps(runtime), event_id="hour-1", fanout=fanout)
    bot = iam.bot("dns_reconcile_worker")
    sqs = bot.clients.client("sqs", Target(HOME_KEY, REGION))  # the event source mapping polls as the function

    # When the worker takes each unit, and SQS delivers the first again
    with enforced():
        results = consume(sqs, reconcile_queue, chalice, "dns_reconcile_worker")
    again = UnitRequest("dns-hour-1", HOME, REGION).to_message()
    boto3.client("sqs").send_message(QueueUrl=reconcile_queue, MessageBody=again)
    with enforced():
        redelivered = consume(sqs, reconcile_queue, chalice, "dns_reconcile_worker")

    # Then both units were scanned and stored, the last handed the run to the writer, the redelivery counted nothing
    units = [unit for result in results for unit in result["units"]]
    assert [(unit["instances"], unit["handed_to_writer"]) for unit in units] == [(1, False), (1, True)]
    assert redelivered[0]["units"][0]["recorded"] is False
    iam.assert_least_privilege(bot)


# ---------------------------------------------------------------------------------------------
# Scenarios: the snapshot bot.
# ---------------------------------------------------------------------------------------------

SNAPSHOT_POLICIES = """\
notify:
  email: {sender: opsbots@example.com, recipients: [ops@example.com]}
policies:
  - name: daily
    every: 1h
    select: {tags: {Backup: daily}}
    retention: {count: 1}
    copy_to: {region: eu-central-1, retention: {count: 1}}
    copy_tags: true
  - name: consistent
    every: 1h
    select: {instance_tags: {Backup: consistent}}
    retention: {count: 1}
    consistency: instance
    copy_tags: true
"""
ACCOUNTS = f"""\
defaults:
  regions: [{REGION}]
accounts:
  - {{id: "{MEMBER}", name: workloads}}
  - {{id: "{STALE}", name: stale}}
"""


@dataclass
class Backups:
    queue_url: str
    volumes: dict[str, str]  # account -> the volume tagged Backup=daily


@pytest.fixture
def backups(iam: Iam, estate: Estate, policies_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Backups:
    """Hourly policies keeping one snapshot (and one DR copy), a volume and an instance to back up in the
    home and member accounts, and a third account whose snapshot role grants nothing."""
    (policies_dir / "snapshots.yml").write_text(SNAPSHOT_POLICIES)
    (policies_dir / "accounts.yml").write_text(ACCOUNTS)
    monkeypatch.setenv(POLICIES_DIR, str(policies_dir))
    put_member_roles(
        STALE, (iam.roles["security_groups"], iam.roles["dns"], {**iam.roles["snapshots"], "Policies": []})
    )
    volumes = {}
    for account, ec2 in ((HOME, estate.home_ec2), (MEMBER, estate.member_ec2)):
        volumes[account] = ec2.create_volume(
            AvailabilityZone=f"{REGION}a",
            Size=1,
            TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "Backup", "Value": "daily"}]}],
        )["VolumeId"]
        ec2.run_instances(
            ImageId="ami-12345678",
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Backup", "Value": "consistent"}]}],
        )
    queue_url = boto3.client("sqs").create_queue(QueueName=triggers.SNAPSHOT_QUEUE_NAME)["QueueUrl"]
    return Backups(queue_url, volumes)


def window(hour: int) -> datetime:
    return FIRST_WINDOW + timedelta(hours=hour)


def stale_role_refused(failures: Sequence[str]) -> bool:
    """Both policies failed in the stale account, refused by its role: the other accounts were not."""
    refused = f"{STALE}/{REGION}: {{}}: ClientError: An error occurred (AccessDenied)"
    return sorted(failure.split(" when ")[0] for failure in failures) == [
        refused.format(name) for name in ("consistent", "daily")
    ] and all(failure.endswith("is not authorized to perform: ec2:DescribeSnapshots") for failure in failures)


def test_take_snapshots(
    iam: Iam,
    estate: Estate,
    lambdas: Any,
    backups: Backups,
    idempotency_table: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the scheduler's two modes: without OPSBOTS_SNAPSHOT_QUEUE (`chalice deploy` sets none) it runs
    # the units itself, which is what its EC2, SES and AssumeRole grants are for; with it, it only queues
    bot = iam.bot("take_snapshots")
    runtime = current().acting_as("take_snapshots")  # what the handler says first

    # When the schedule runs the units itself, in consecutive windows (the handler, to set the clock)
    with enforced():
        results = [
            schedule_snapshots(
                policies=runtime.policies.of(SnapshotsPolicy),
                accounts=runtime.policies.accounts,
                deps=runtime.built(snapshot_deps),
                mailer=runtime.mailer("snapshots", None),
                now=window(hour),
            )
            for hour in range(WINDOWS)
        ]

    # And, deployed by the template with its queue, fires and only queues them, once however often delivered
    monkeypatch.setenv(SNAPSHOT_QUEUE, backups.queue_url)
    current.cache_clear()
    bot.install()
    with enforced():
        queued = handle(lambdas, bot.function, load_event("scheduled-event"))
        with sdk_without_return_values_on_condition_check_failure(bot):
            assert handle(lambdas, bot.function, load_event("scheduled-event")) == queued
    a_crashed_run_leaves_no_record("take-snapshots")

    # Then snapshots were taken, pruned and copied in both accounts, ops heard of the stale one each run,
    # and one message per account x region was queued
    assert sum(result["taken"] for result in results) == 4 * WINDOWS
    assert [result["pruned"] for result in results] == [0, 0, 4, 6]
    assert [result["copied"] for result in results] == [0, 2, 2, 2]
    assert all(stale_role_refused(result["failed"]) for result in results)
    assert len(sent_emails()) == WINDOWS
    assert queued == {"queued": 3}
    assert queue_depth(backups.queue_url) == 3
    iam.assert_least_privilege(bot)


def queue_depth(queue_url: str) -> int:
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def consume(sqs: Any, queue_url: str, chalice: Client, worker: str = "snapshot_worker") -> list[dict[str, Any]]:
    """What Lambda's SQS event source mapping does, with the function's role: receive, invoke, delete."""
    sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"])
    results = []
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:  # batch_size=1: one invocation per message
            event = chalice.events.generate_sqs_event(message_bodies=[message["Body"]], queue_name=queue_url)
            results.append(chalice.lambda_.invoke(worker, event).payload)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return results


@pytest.fixture
def chalice(estate: Estate) -> Iterator[Client]:
    from app import app

    with Client(app, stage_name="dev", project_dir=str(ROOT)) as client:
        yield client


def test_snapshot_worker(iam: Iam, chalice: Client, backups: Backups, idempotency_table: str) -> None:
    bot = iam.bot("snapshot_worker")
    runtime = current()
    sqs = bot.clients.client("sqs", Target(HOME_KEY, REGION))  # the event source mapping polls as the function
    scheduler = boto3.client("sqs")
    results: list[dict[str, Any]] = []

    # When the scheduler's units of consecutive windows reach the worker through the queue
    bodies: list[str] = []
    for hour in range(WINDOWS):
        accounts = runtime.policies.accounts
        units = plan_units(
            runtime.policies.of(SnapshotsPolicy), accounts, units_of(accounts, HOME, "snapshots"), window(hour)
        )
        bodies = [unit.to_message() for unit in units]
        for body in bodies:
            scheduler.send_message(QueueUrl=backups.queue_url, MessageBody=body)
        with enforced():
            results.extend(consume(sqs, backups.queue_url, chalice))

    # And SQS delivers the last window's messages again
    for body in bodies:
        scheduler.send_message(QueueUrl=backups.queue_url, MessageBody=body)
    with enforced(), sdk_without_return_values_on_condition_check_failure(bot):
        redelivered = consume(sqs, backups.queue_url, chalice)
    a_crashed_run_leaves_no_record("snapshot-units")

    # Then snapshots were taken, pruned and copied in both accounts, and the stale account's failure was told
    assert len(results) == 3 * WINDOWS
    failing = [result["failed"] for result in results if result["failed"]]
    assert len(failing) == WINDOWS
    assert all(stale_role_refused(failed) for failed in failing)
    assert sum(result["taken"] for result in results) == 4 * WINDOWS
    assert sum(result["pruned"] for result in results) == 10
    assert sum(result["copied"] for result in results) == 6
    assert redelivered == results[-len(bodies) :]  # the first delivery's results; nothing done or told again
    assert len(sent_emails()) == WINDOWS
    iam.assert_least_privilege(bot)


# ---------------------------------------------------------------------------------------------
# Scenarios: the thumbnail bot.
# ---------------------------------------------------------------------------------------------

BUCKET = "photos-upload"
PHOTO_KEY = "uploads/summer holiday/été 01.JPG"


def jpeg(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (1200, 900), colour).save(out, "JPEG", quality=85)
    return out.getvalue()


def upload(s3: S3Client, body: bytes) -> dict[str, Any]:
    """Upload the photo, and return the EventBridge "Object Created" event S3 sends for it."""
    response = s3.put_object(Bucket=BUCKET, Key=PHOTO_KEY, Body=body)
    event = load_event("s3-object-created")
    event["id"] = str(uuid.uuid4())
    event["detail"]["object"] = {
        "key": PHOTO_KEY,
        "size": len(body),
        "etag": response["ETag"].strip('"'),
        "version-id": response.get("VersionId", "null"),
        "sequencer": "00684D3A1F2B7C9E41",
    }
    return event


@pytest.fixture
def s3(estate: Estate) -> S3Client:
    client = boto3.client("s3", region_name=REGION)
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return client


def test_on_image_uploaded(iam: Iam, lambdas: Any, s3: S3Client) -> None:
    bot = iam.bot("on_image_uploaded")
    first = upload(s3, jpeg((200, 40, 40)))

    # When an upload's event arrives twice, and then a new version's
    with enforced():
        outcomes = [handle(lambdas, bot.function, first) for _ in range(2)]
    newer = upload(s3, jpeg((20, 20, 200)))
    with enforced():
        outcomes.append(handle(lambdas, bot.function, newer))

    # Then the thumbnails were written, left alone, and overwritten
    assert [outcome["status"] for outcome in outcomes] == ["written", "up-to-date", "written"]
    assert [len(outcome["written"]) for outcome in outcomes] == [2, 0, 2]
    iam.assert_least_privilege(bot)


# ---------------------------------------------------------------------------------------------
# Scenarios: the website checks.
# ---------------------------------------------------------------------------------------------


def minute_event(minute: int) -> dict[str, Any]:
    """The one-minute schedule's event for 10:0<minute>, a run of its own."""
    return load_event(
        "scheduled-event",
        **{"2025-06-14T02:00:00Z": f"2026-12-02T10:0{minute}:00Z", "f3a8d1c6": f"f3a8d1c{minute}"},
    )


def test_check_websites(
    iam: Iam, lambdas: Any, policies_dir: Path, idempotency_table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a site on 127.0.0.1 that answers 500, and a policy checking it every minute, with a status page
    page = load_policies(ROOT / "policies").of(WebsitesPolicy).status_page
    assert page
    boto3.client("s3").create_bucket(Bucket=page.bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    with http_site() as (port, _):
        (policies_dir / "websites.yml").write_text(local_websites(port, "shop", "/fail", status_page=True))
        monkeypatch.setenv(POLICIES_DIR, str(policies_dir))
        monkeypatch.setenv(WEBSITES_TABLE, create_table(boto3.client("dynamodb"), "WebsiteStateTable"))
        bot = iam.bot("check_websites")

        # When two minutes' runs find it failing, and EventBridge delivers the second minute's again
        with enforced():
            first = handle(lambdas, bot.function, minute_event(0))
            second = handle(lambdas, bot.function, minute_event(1))
            with sdk_without_return_values_on_condition_check_failure(bot):
                again = handle(lambdas, bot.function, minute_event(1))

    # Then DOWN was announced once, by the second run; the redelivery returned its answer; each run wrote the page
    assert (first["announced"], second["announced"]) == ([], ["shop: down"])
    assert (first["status_page"], second["status_page"]) == ("published", "published")
    assert again == second
    assert len(sent_emails()) == 1
    a_crashed_run_leaves_no_record("check-websites")
    iam.assert_least_privilege(bot)


# ---------------------------------------------------------------------------------------------
# The member role, and the list of functions.
# ---------------------------------------------------------------------------------------------


def test_every_function_has_its_scenarios() -> None:
    assert set(MEMBER_USE) == set(FUNCTION_NAMES)
    assert {name.removeprefix("test_") for name in globals() if name.startswith("test_")} >= set(FUNCTION_NAMES)


def test_each_member_role_grants_exactly_what_its_bots_functions_do_in_member_accounts() -> None:
    for bot, role in member_roles().items():
        used = frozenset().union(*(MEMBER_USE[function] for function, of in MEMBER_ROLE_OF.items() if of == bot))

        assert granted_actions(member_statements(role)) == used, bot
        assert used == MEMBER_ROLE_ACTIONS[bot], bot  # as tests/test_packaging.py has it


@pytest.mark.parametrize("function", [function for function, bot in MEMBER_ROLE_OF.items() if bot])
def test_each_member_role_trusts_its_own_bots_functions_only(function: str) -> None:
    # The DNS functions read tags anyone can set: they must reach no role that revokes rules or deletes snapshots.
    principal = home_role_arn(function)
    context = {"sts:ExternalId": EXTERNAL_ID, "aws:PrincipalArn": principal}
    trusted_by = {
        bot
        for bot, role in member_roles().items()
        if trusts(role["AssumeRolePolicyDocument"]["Statement"], principal, context)
    }

    assert trusted_by == {MEMBER_ROLE_OF[function]}
    # Another role of the same stack is not enough, nor the right role without the ExternalId.
    for stranger in (
        f"arn:aws:iam::{HOME}:role/{STACK}-on_image_uploaded",
        f"arn:aws:iam::{HOME}:role/{STACK}-{function}-x",
    ):
        assert not any(
            trusts(role["AssumeRolePolicyDocument"]["Statement"], stranger, {**context, "aws:PrincipalArn": stranger})
            for role in member_roles().values()
        )
    assert not any(
        trusts(role["AssumeRolePolicyDocument"]["Statement"], principal, {**context, "sts:ExternalId": "guess"})
        for role in member_roles().values()
    )


# ---------------------------------------------------------------------------------------------
# Enforcement bites: moto denies what a document lacks, for every service it judges.
# ---------------------------------------------------------------------------------------------


def test_moto_denies_an_ec2_action_the_document_lacks(
    iam: Iam, estate: Estate, lambdas: Any, sg_policies: Path
) -> None:
    rule = opened(estate, tcp(22))
    document = without(function_document("on_security_group_change"), "ec2:RevokeSecurityGroupIngress")
    bot = iam.bot("on_security_group_change", document)

    with enforced():
        outcome = handle(lambdas, bot.function, sg_event("sg-authorize-ingress-ssh-world", rule))

    assert outcome["status"] == "revoke-failed"
    assert not rule.gone(estate)
    [email] = sent_emails()
    assert "ec2:RevokeSecurityGroupIngress" in email.body


def test_an_email_without_ses_send_email_is_caught_from_the_recorded_calls(
    iam: Iam, estate: Estate, lambdas: Any, sg_policies: Path
) -> None:
    rule = opened(estate, tcp(22))
    bot = iam.bot("on_security_group_change", without(function_document("on_security_group_change"), "ses:SendEmail"))

    with enforced():
        handle(lambdas, bot.function, sg_event("sg-authorize-ingress-ssh-world", rule))

    assert rule.gone(estate)
    assert actions_of(iam.findings(bot).not_granted) == {"ses:SendEmail"}


def test_an_email_from_another_sender_is_not_granted(iam: Iam, estate: Estate, lambdas: Any, sg_policies: Path) -> None:
    # Given the policy file's sender changed, and the function's document left as it was
    path = sg_policies / "security_groups.yml"
    path.write_text(path.read_text().replace("sender: opsbots@example.com", "sender: ceo@example.com"))
    boto3.client("sesv2").create_email_identity(EmailIdentity="ceo@example.com")
    rule = opened(estate, tcp(22))
    bot = iam.bot("on_security_group_change")

    with enforced():
        handle(lambdas, bot.function, sg_event("sg-authorize-ingress-ssh-world", rule))

    # Then the document's ses:FromAddress condition refuses it (moto does not judge conditions: the record does)
    assert iam.findings(bot).not_granted == {
        f"ses:SendEmail on arn:aws:ses:{REGION}:{HOME}:identity/ceo@example.com with ses:FromAddress=ceo@example.com"
    }


def test_tables_of_another_account_or_region_are_not_granted() -> None:
    statements = function_document("sweep_security_groups")["Statement"]
    table = "table/opsbots-idempotency"

    assert grants(statements, Need("dynamodb:PutItem", f"arn:aws:dynamodb:{REGION}:{HOME}:{table}"))
    assert not grants(statements, Need("dynamodb:PutItem", f"arn:aws:dynamodb:us-east-1:{HOME}:{table}"))
    assert not grants(statements, Need("dynamodb:PutItem", f"arn:aws:dynamodb:{REGION}:{MEMBER}:{table}"))
    index = f"arn:aws:dynamodb:{REGION}:{HOME}:{table}/index/outbox"
    assert grants(statements, Need("dynamodb:Query", index))
    assert not grants(statements, Need("dynamodb:Query", f"arn:aws:dynamodb:{REGION}:{HOME}:{table}"))


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(without(function_document("sweep_security_groups"), "sts:AssumeRole"), id="no sts:AssumeRole"),
        pytest.param(
            edited(
                function_document("sweep_security_groups"), "AssumeMemberRole", Resource="arn:aws:iam::*:role/other"
            ),
            id="another role",
        ),
    ],
)
def test_moto_denies_assuming_the_member_role_when_the_document_does_not_allow_it(
    iam: Iam, estate: Estate, lambdas: Any, sg_policies: Path, document: dict[str, Any]
) -> None:
    member = opened(estate, tcp(22), ec2=estate.member_ec2)
    bot = iam.bot("sweep_security_groups", document)

    with enforced():
        result = handle(lambdas, bot.function, load_event("scheduled-event"))

    [failure] = result["failed_units"]
    assert failure.startswith(f"{MEMBER}/{REGION}: ")
    assert "sts:AssumeRole" in failure
    assert not member.gone(estate)


THUMBNAILS = function_document("on_image_uploaded")
# An invocation that fails before its first metric makes Powertools warn that it has none to publish.
NO_METRICS = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(without(THUMBNAILS, "s3:PutObject"), id="no s3:PutObject"),
        pytest.param(
            edited(THUMBNAILS, "ReadUploads", Resource=f"arn:aws:s3:::{BUCKET}/elsewhere/*"), id="uploads elsewhere"
        ),
    ],
)
@NO_METRICS
def test_moto_denies_s3_actions_and_objects_the_document_does_not_grant(
    iam: Iam, lambdas: Any, s3: S3Client, document: dict[str, Any]
) -> None:
    bot = iam.bot("on_image_uploaded", document)
    event = upload(s3, jpeg((200, 40, 40)))

    with enforced(), pytest.raises(ClientError, match="AccessDenied"):
        handle(lambdas, bot.function, event)


WORKER = function_document("snapshot_worker")


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(without(WORKER, "sqs:ReceiveMessage"), id="no sqs:ReceiveMessage"),
        pytest.param(
            edited(WORKER, "ConsumeSnapshotUnits", Resource="arn:aws:sqs:*:*:another-queue"), id="another queue"
        ),
    ],
)
def test_moto_denies_sqs_actions_and_queues_the_document_does_not_grant(
    iam: Iam, chalice: Client, backups: Backups, document: dict[str, Any]
) -> None:
    bot = iam.bot("snapshot_worker", document)
    boto3.client("sqs").send_message(QueueUrl=backups.queue_url, MessageBody="{}")

    with enforced(), pytest.raises(ClientError, match="not authorized to perform: sqs:"):
        consume(bot.clients.client("sqs", Target(HOME_KEY, REGION)), backups.queue_url, chalice)


def test_moto_denies_a_dns_function_the_other_bots_member_roles(iam: Iam, estate: Estate) -> None:
    bot = iam.bot("on_instance_state_change")

    for role in (MemberRoles().security_groups, MemberRoles().snapshots):
        ec2 = bot.clients.client("ec2", Target(MEMBER, REGION, f"arn:aws:iam::{MEMBER}:role/{role}"))
        with enforced(), pytest.raises(ClientError, match="not authorized to perform: sts:AssumeRole"):
            ec2.describe_security_groups()


@NO_METRICS
def test_moto_denies_what_the_member_role_lacks(iam: Iam, estate: Estate, lambdas: Any, dns: Subnets) -> None:
    iam.member_without("ec2:DescribeInstances")
    member = launch(estate.member_ec2, dns.member, "worker")
    bot = iam.bot("on_instance_state_change")

    with enforced(), pytest.raises(ClientError, match="ec2:DescribeInstances"):
        handle(lambdas, bot.function, state_event(member, "running", MEMBER))


# ---------------------------------------------------------------------------------------------
# What moto lets through, the recorded calls catch.
# ---------------------------------------------------------------------------------------------

DNS_EVENTS = function_document("on_instance_state_change")


def actions_of(needs_found: frozenset[str]) -> set[str]:
    return {need.split(" ")[0] for need in needs_found}


REGISTRY = "arn:aws:dynamodb:*:*:table/opsbots-dns"


@pytest.mark.parametrize(
    ("document", "missing"),
    [
        pytest.param(without(DNS_EVENTS, "dynamodb:Query"), {"dynamodb:Query"}, id="no dynamodb:Query"),
        pytest.param(
            edited(DNS_EVENTS, "DnsRegistryByOwner", Resource=REGISTRY),
            {"dynamodb:Query"},
            id="the table, not its index",
        ),
        pytest.param(
            without(DNS_EVENTS, "route53:ListHostedZones"), {"route53:ListHostedZones"}, id="no route53:ListHostedZones"
        ),
        pytest.param(
            edited(DNS_EVENTS, "ManageRecordsInHostedZones", Resource="arn:aws:route53:::hostedzone/Z0THER"),
            {"route53:GetHostedZone", "route53:ChangeResourceRecordSets"},  # an event looks up no name
            id="another zone",
        ),
    ],
)
def test_a_dynamodb_or_route53_grant_moto_lets_through_is_caught_from_the_recorded_calls(
    iam: Iam, estate: Estate, lambdas: Any, dns: Subnets, document: dict[str, Any], missing: set[str]
) -> None:
    instance = launch(estate.home_ec2, dns.home, "app")
    bot = iam.bot("on_instance_state_change", document)

    with enforced():
        outcome = handle(lambdas, bot.function, state_event(instance, "running"))

    assert outcome["added"] == 3  # moto did not stop it
    assert actions_of(iam.findings(bot).not_granted) == missing


SCHEDULER = function_document("take_snapshots")


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(without(SCHEDULER, "sqs:SendMessage"), id="no sqs:SendMessage"),
        pytest.param(
            edited(SCHEDULER, "QueueSnapshotUnits", Resource="arn:aws:sqs:*:*:another-queue"), id="another queue"
        ),
    ],
)
def test_a_message_batch_moto_does_not_judge_is_checked_as_send_message(
    iam: Iam, lambdas: Any, backups: Backups, monkeypatch: pytest.MonkeyPatch, document: dict[str, Any]
) -> None:
    monkeypatch.setenv(SNAPSHOT_QUEUE, backups.queue_url)
    bot = iam.bot("take_snapshots", document)

    with enforced():
        queued = handle(lambdas, bot.function, load_event("scheduled-event"))

    assert queued == {"queued": 3}  # moto did not stop it
    assert iam.findings(bot).not_granted == {
        f"sqs:SendMessage on arn:aws:sqs:{REGION}:{HOME}:{triggers.SNAPSHOT_QUEUE_NAME}"
    }


MANAGED_ONLY = {"StringEquals": {"aws:ResourceTag/opsbots:managed": "yes"}}
TAGS_ON_SNAPSHOTS_ONLY = {"StringEquals": {"ec2:CreateAction": ["CreateSnapshot", "CreateSnapshots"]}}


@pytest.mark.parametrize(
    ("document", "missing"),
    [
        pytest.param(
            edited(WORKER, "DeleteOnlyManagedSnapshots", Condition=MANAGED_ONLY),
            {"ec2:DeleteSnapshot"},
            id="delete needs another tag",
        ),
        pytest.param(
            edited(WORKER, "TagSnapshotsOnlyAsTheyAreCreated", Condition=TAGS_ON_SNAPSHOTS_ONLY),
            {"ec2:CreateTags"},
            id="copies may not be tagged",
        ),
    ],
)
def test_an_ec2_condition_moto_ignores_is_checked_from_the_recorded_calls(
    iam: Iam, backups: Backups, document: dict[str, Any], missing: set[str]
) -> None:
    bot = iam.bot("snapshot_worker", document)
    runtime = current()
    units = [Unit(HOME, "home", REGION, None, ("daily",), window(hour)) for hour in range(WINDOWS)]

    with enforced():
        result = work_on(
            [unit.to_message() for unit in units],
            policies=runtime.policies.of(SnapshotsPolicy),
            accounts=runtime.policies.accounts,
            deps=runtime.built(snapshot_deps),
            mailer=runtime.mailer("snapshots", None),
            clock=lambda: window(WINDOWS),
        )

    assert (result["pruned"], result["copied"], result["failed"]) == (3, 3, [])  # moto did not stop it
    assert actions_of(iam.findings(bot).not_granted) == missing


def test_a_grant_no_call_needs_is_caught(iam: Iam, lambdas: Any, s3: S3Client) -> None:
    document = copy.deepcopy(THUMBNAILS)
    document["Statement"][1]["Action"].append("s3:DeleteObject")
    bot = iam.bot("on_image_uploaded", document)
    event = upload(s3, jpeg((200, 40, 40)))

    with enforced():
        handle(lambdas, bot.function, event)

    assert iam.findings(bot).not_needed == {"s3:DeleteObject"}
