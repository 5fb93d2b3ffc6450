"""The deployable artefact: what `make package` puts in the zip and in the CloudFormation template.

One `make package` run (chalice package --stage prod with deploy/resources.json merged in, the
runtime's own SDK dropped from the zip, cfn-lint on the result) into a temporary directory, shared
by the whole module. It needs no AWS credentials; chalice downloads Lambda-compatible wheels from
PyPI. Deselect with `-m "not packaging"`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from chalicelib import sg_guard
from tests.conftest import FAKE_AWS, ROOT

pytestmark = pytest.mark.packaging

BIN = Path(sys.executable).parent

# What every function needs from the platform besides the bot's own calls (sg_guard.PERMISSIONS).
LOGS = frozenset({"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"})
XRAY = frozenset({"xray:PutTraceSegments", "xray:PutTelemetryRecords"})
# Powertools Idempotency's DynamoDB persistence layer; only the event handler uses it.
IDEMPOTENCY = frozenset({"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"})
IDEMPOTENCY_TABLE_ARN = "arn:aws:dynamodb:*:*:table/opsbots-idempotency"
MEMBER_ROLE_ARN = "arn:aws:iam::*:role/opsbots-member"

# Logical id in the template -> (expected extra actions, memory MB, timeout s).
FUNCTIONS = {
    "OnSecurityGroupChange": (LOGS | XRAY | IDEMPOTENCY, 256, 30),
    "SweepSecurityGroups": (LOGS | XRAY, 512, 300),
}
SHIPPED = ("app.py", "policies/accounts.yml", "policies/security_groups.yml")
RUNTIME_PROVIDED = ("boto3/", "botocore/")
MEMBER_ACCOUNT_ACTIONS = frozenset(
    {
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSecurityGroupRules",
        "ec2:GetManagedPrefixListEntries",
        "ec2:RevokeSecurityGroupIngress",
        "ec2:RevokeSecurityGroupEgress",
    }
)


def _environment() -> dict[str, str]:
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "MAKE")) and key not in {"MFLAGS", "OPSBOTS_IDEMPOTENCY_TABLE"}
    }
    environ.update(FAKE_AWS)
    return environ


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("package") / "package"
    # `-o` (--old-file): use the Makefile's venv as it is; never rebuild it from here.
    command = ["make", "-o", ".venv/bin/activate", "package", "STAGE=prod", f"PACKAGE_DIR={out}"]
    done = subprocess.run(command, cwd=ROOT, env=_environment(), capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return out


@pytest.fixture(scope="module")
def zip_names(package_dir: Path) -> frozenset[str]:
    with zipfile.ZipFile(package_dir / "deployment.zip") as deployment:
        return frozenset(deployment.namelist())


@pytest.fixture(scope="module")
def resources(package_dir: Path) -> dict[str, Any]:
    template: dict[str, Any] = json.loads((package_dir / "sam.json").read_text())
    return template["Resources"]


def _actions(statements: Iterable[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for statement in statements:
        action = statement["Action"]
        found.update([action] if isinstance(action, str) else action)
    return found


def _statements(resources: dict[str, Any], function: str) -> list[dict[str, Any]]:
    role = resources[function]["Properties"]["Role"]["Fn::GetAtt"][0]
    policies = resources[role]["Properties"]["Policies"]
    return [statement for policy in policies for statement in policy["PolicyDocument"]["Statement"]]


def _resources_of(statements: Iterable[dict[str, Any]], action: str) -> set[str]:
    found: set[str] = set()
    for statement in statements:
        if action in _actions([statement]):
            resource = statement["Resource"]
            found.update([resource] if isinstance(resource, str) else resource)
    return found


# ----- the zip ----------------------------------------------------------------------------------


def test_zip_ships_the_app_its_templates_and_the_policies(zip_names: frozenset[str]) -> None:
    templates = {path.relative_to(ROOT).as_posix() for path in (ROOT / "chalicelib" / "templates").glob("*.j2")}

    assert templates
    assert set(SHIPPED) | templates <= zip_names


def test_zip_leaves_out_the_runtime_sdk_and_the_tests(zip_names: frozenset[str]) -> None:
    assert not {name for name in zip_names if name.startswith(RUNTIME_PROVIDED)}
    assert not {name for name in zip_names if name.startswith(("tests/", "demo/")) or name.endswith("conftest.py")}


# ----- IAM ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_each_function_is_granted_exactly_what_it_calls(resources: dict[str, Any], function: str) -> None:
    extras, _, _ = FUNCTIONS[function]

    assert _actions(_statements(resources, function)) == set(sg_guard.PERMISSIONS) | extras


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_no_wildcard_actions_and_allow_only(resources: dict[str, Any], function: str) -> None:
    statements = _statements(resources, function)

    assert not {action for action in _actions(statements) if "*" in action}
    assert all(statement["Effect"] == "Allow" for statement in statements)
    assert not [statement for statement in statements if {"NotAction", "NotResource"} & statement.keys()]


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_functions_assume_only_the_member_role(resources: dict[str, Any], function: str) -> None:
    assert _resources_of(_statements(resources, function), "sts:AssumeRole") == {MEMBER_ROLE_ARN}


def test_idempotency_access_is_limited_to_its_table(resources: dict[str, Any]) -> None:
    statements = _statements(resources, "OnSecurityGroupChange")

    for action in IDEMPOTENCY:
        assert _resources_of(statements, action) == {IDEMPOTENCY_TABLE_ARN}


# ----- the template -------------------------------------------------------------------------------


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_functions_have_their_configured_memory_and_timeout(resources: dict[str, Any], function: str) -> None:
    _, memory, timeout = FUNCTIONS[function]
    properties = resources[function]["Properties"]

    assert (properties["MemorySize"], properties["Timeout"]) == (memory, timeout)
    assert properties["Tracing"] == "Active"
    assert properties["Environment"]["Variables"]["OPSBOTS_TRACING"] == "true"


def test_merge_template_adds_the_idempotency_table(resources: dict[str, Any]) -> None:
    table = resources["IdempotencyTable"]
    properties = table["Properties"]

    assert table["Type"] == "AWS::DynamoDB::Table"
    assert (table["DeletionPolicy"], table["UpdateReplacePolicy"]) == ("Retain", "Retain")
    assert properties["TableName"] == "opsbots-idempotency"
    assert properties["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert properties["AttributeDefinitions"] == [{"AttributeName": "id", "AttributeType": "S"}]
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}


def test_only_the_event_handler_gets_the_idempotency_table(resources: dict[str, Any]) -> None:
    handler = resources["OnSecurityGroupChange"]["Properties"]["Environment"]["Variables"]
    sweep = resources["SweepSecurityGroups"]["Properties"]["Environment"]["Variables"]

    assert handler["OPSBOTS_IDEMPOTENCY_TABLE"] == {"Ref": "IdempotencyTable"}
    assert handler["POWERTOOLS_SERVICE_NAME"] == "opsbots"  # merged into chalice's variables, not replacing them
    assert "OPSBOTS_IDEMPOTENCY_TABLE" not in sweep


# ----- the member-account role --------------------------------------------------------------------

MEMBER_ROLE = ROOT / "deploy" / "member-role.yml"


def test_member_role_template_passes_cfn_lint() -> None:
    done = subprocess.run(
        [str(BIN / "cfn-lint"), str(MEMBER_ROLE)], env=_environment(), capture_output=True, text=True, check=False
    )

    assert done.returncode == 0, done.stdout + done.stderr


def test_member_role_grants_only_what_the_bot_does_in_member_accounts() -> None:
    from cfnlint.decode import cfn_yaml

    role = cfn_yaml.load(str(MEMBER_ROLE))["Resources"]["MemberRole"]["Properties"]
    statements = [statement for policy in role["Policies"] for statement in policy["PolicyDocument"]["Statement"]]
    trust = role["AssumeRolePolicyDocument"]["Statement"]

    assert _actions(statements) == MEMBER_ACCOUNT_ACTIONS
    assert MEMBER_ACCOUNT_ACTIONS.issubset(sg_guard.PERMISSIONS)
    assert role["RoleName"] == MEMBER_ROLE_ARN.rsplit("/", 1)[1]
    assert all("sts:ExternalId" in statement["Condition"]["StringEquals"] for statement in trust)
