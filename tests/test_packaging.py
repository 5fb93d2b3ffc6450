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

from chalicelib import outbox, triggers
from chalicelib.bots import BOT_OF, BOTS, DNS_TABLE, DNS_WRITER, SNAPSHOT_LEDGER, SNAPSHOT_QUEUE, operations
from chalicelib.bots import FUNCTIONS as REGISTERED
from chalicelib.dns.decisions import OWNER_INDEX
from chalicelib.policy import MemberBot, MemberRoles, Organization, load_policies
from chalicelib.security_groups.decisions import SWEEP_DELIVERIES
from chalicelib.settings import IDEMPOTENCY_TABLE, SERVICE_MODELS, TRACING
from chalicelib.snapshots.decisions import MANAGED
from chalicelib.thumbnails.policy import ThumbnailsPolicy
from chalicelib.websites.policy import WebsitesPolicy
from deploy.package_zips import THUMBNAILS_ZIP, as_on_lambda, imaging
from tests.support.aws import FAKE_AWS, ROOT
from tests.support.iam import (
    ASYNC_FUNCTIONS,
    DRAIN,
    LEDGER,
    MEMBER_ROLE_ACTIONS,
    MEMBER_ROLE_USERS,
    PACKAGED,
    RUN_ONCE,
    SQS_CONSUME,
    functions_of,
)

pytestmark = pytest.mark.packaging

BIN = Path(sys.executable).parent


def in_stack(service: str, rest: str) -> dict[str, str]:
    """A table, queue or identity ARN as the packaged template pins it: this stack's account and region."""
    return {"Fn::Sub": f"arn:${{AWS::Partition}}:{service}:${{AWS::Region}}:${{AWS::AccountId}}:{rest}"}


IDEMPOTENCY_TABLE_ARN = in_stack("dynamodb", "table/opsbots-idempotency")
OUTBOX_INDEX_ARN = in_stack("dynamodb", f"table/opsbots-idempotency/index/{outbox.OUTBOX_INDEX}")
DNS_TABLE_ARN = in_stack("dynamodb", "table/opsbots-dns")
DNS_INDEX_ARN = in_stack("dynamodb", "table/opsbots-dns/index/*")
HOSTED_ZONE_ARN = "arn:aws:route53:::hostedzone/*"
SNAPSHOT_QUEUE_ARN = in_stack("sqs", triggers.SNAPSHOT_QUEUE_NAME)
SNAPSHOT_LEDGER_ARN = in_stack("dynamodb", "table/opsbots-snapshot-ledger")
WEBSITES_TABLE_ARN = in_stack("dynamodb", "table/opsbots-websites")
SWEEP_QUEUE_ARN = in_stack("sqs", triggers.SWEEP_QUEUE_NAME)
RUNS_ARN = in_stack("dynamodb", "table/opsbots-runs")
FAILED_EVENTS_QUEUE_ARN = in_stack("sqs", "opsbots-failed-events")
SES_IDENTITIES_ARN = in_stack("ses", "identity/*")
ZIPPED_LIMIT = 50 * 2**20  # Lambda's limit on a directly uploaded zip
# Tags may be set only by the calls that create snapshots, and only opsbots' own snapshots deleted.
CREATE_TAGS_CONDITION = {"StringEquals": {"ec2:CreateAction": ["CreateSnapshot", "CreateSnapshots", "CopySnapshot"]}}
DELETE_SNAPSHOT_CONDITION = {"StringEquals": {f"aws:ResourceTag/{MANAGED}": "true"}}

DNS_FUNCTIONS = functions_of("dns")
# The DNS functions that hold the registry and write Route53: the writer, and the reconcile run in one function.
DNS_WRITERS = tuple(f.logical_id for f in REGISTERED.values() if DNS_TABLE in f.resources)
DNS_RECONCILE_QUEUE_ARN = in_stack("sqs", triggers.DNS_RECONCILE_QUEUE_NAME)
SNAPSHOT_FUNCTIONS = functions_of("snapshots")
# Those with the run-once table: the SG event (its email ledger), and the schedules and worker that email.
GUARDED_FUNCTIONS = tuple(f.logical_id for f in REGISTERED.values() if f.once_per_delivery)
# Which policy files' notify senders each emailing function may send as: its own bot's.
SENDERS = {f.logical_id: (bot.name,) for bot in BOTS if bot.emails for f in bot.functions}
SHIPPED = ("app.py", "policies/accounts.yml", *(f"policies/{bot.policy_file}" for bot in BOTS))
RUNTIME_PROVIDED = ("boto3/", "botocore/", "s3transfer/", "urllib3/", "dateutil/", "jmespath/", "six.py")
# deploy/member-role.yml: each bot's role in a member account (logical id -> bot), what it may do there,
# and the functions that assume it (logical ids at home).
MEMBER_ROLES: dict[str, MemberBot] = {
    "SecurityGroupsRole": "security_groups",
    "DnsRole": "dns",
    "SnapshotsRole": "snapshots",
}


def _environment() -> dict[str, str]:
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "MAKE")) and key not in {"MFLAGS", IDEMPOTENCY_TABLE, DNS_TABLE, SNAPSHOT_QUEUE}
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


def _granting(statements: Iterable[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [statement for statement in statements if action in _actions([statement])]


def _resources_of(statements: Iterable[dict[str, Any]], action: str) -> list[Any]:
    """The resources the statements granting `action` name (an `Fn::Sub` stays a dict), without repeats."""
    found: list[Any] = []
    for statement in statements:
        if action in _actions([statement]):
            resource = statement["Resource"]
            found += [
                item for item in ([resource] if isinstance(resource, str | dict) else resource) if item not in found
            ]
    return found


# ----- the zip ----------------------------------------------------------------------------------


def test_zip_ships_the_app_its_templates_and_the_policies(zip_names: frozenset[str]) -> None:
    templates = {path.relative_to(ROOT).as_posix() for path in (ROOT / "chalicelib" / "templates").glob("*.j2")}

    assert templates
    assert set(SHIPPED) | templates <= zip_names


def test_the_thumbnail_zip_ships_pillow_built_for_lambda_and_the_other_zip_none(
    package_dir: Path, zip_names: frozenset[str]
) -> None:
    with zipfile.ZipFile(package_dir / THUMBNAILS_ZIP) as thumbnails:
        native = [name for name in thumbnails.namelist() if name.startswith("PIL/_imaging.") and name.endswith(".so")]

    assert native == ["PIL/_imaging.cpython-311-x86_64-linux-gnu.so"]
    assert not {name for name in zip_names if imaging(name)}
    for code in ("deployment.zip", THUMBNAILS_ZIP):
        assert (package_dir / code).stat().st_size < ZIPPED_LIMIT


@pytest.mark.parametrize("function", sorted(REGISTERED))
def test_each_function_deploys_the_zip_its_bot_needs(resources: dict[str, Any], function: str) -> None:
    code = THUMBNAILS_ZIP if BOT_OF[function].imaging else "deployment.zip"

    assert resources[REGISTERED[function].logical_id]["Properties"]["CodeUri"] == f"./{code}"


def unzipped(package_dir: Path, tmp_path: Path) -> Path:
    task = tmp_path / "task"
    with zipfile.ZipFile(package_dir / "deployment.zip") as deployment:
        deployment.extractall(task)
    return task


def run_as_on_lambda(task: Path, script: str) -> subprocess.CompletedProcess[str]:
    """`script` run from the unzipped `task` as Lambda runs it: nothing of this environment on the path but the
    runtime's boto3, no bytecode written, no folder of cut models named (the zip's own are found)."""
    environment = {**os.environ, **FAKE_AWS}
    environment.pop(SERVICE_MODELS, None)
    return subprocess.run(
        as_on_lambda(task, script),
        cwd=task,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_zip_runs_every_function_from_the_bytecode_it_ships(package_dir: Path, tmp_path: Path) -> None:
    # Given the zip unpacked, with one of our sources changed after it was built, to fail if it were compiled
    task = unzipped(package_dir, tmp_path)
    (task / "chalicelib" / "bots.py").write_text('raise RuntimeError("compiled from the source")\n')
    imports = "\n".join(f"import {bot.module}.handlers" for bot in BOTS if not bot.imaging)
    script = (
        "import json, sys\n"
        f"import app\n{imports}\n"
        "from chalicelib.policy import load_policies\n"
        "load_policies('policies')\n"
        "modules = [m for m in list(sys.modules.values()) if getattr(m, '__file__', None)]\n"
        "print(json.dumps([m.__spec__.cached or m.__file__ for m in modules]))\n"
    )

    # When every function's bot is loaded from it, as on Lambda: nothing written, only the runtime's boto3 added
    done = run_as_on_lambda(task, script)

    # Then it ran from the bytecode shipped (the changed source was never read), and every module it loaded from
    # the zip was bytecode compiled for the runtime's Python; the imaging libraries were not needed
    assert done.returncode == 0, done.stderr
    from_zip = [Path(path) for path in json.loads(done.stdout) if path.startswith(str(task))]
    python = [path for path in from_zip if path.suffix != ".so"]  # a compiled extension is already machine code
    assert python
    assert [path for path in python if path.suffix != ".pyc" or not path.exists()] == []
    assert not any(path.relative_to(task).parts[0] in {"PIL", "pillow_heif"} for path in from_zip)


def test_the_zips_bots_build_their_ec2_clients_from_the_cut_model_it_ships(package_dir: Path, tmp_path: Path) -> None:
    # When a bot builds its EC2 client in the unzipped zip, as on Lambda
    done = run_as_on_lambda(
        unzipped(package_dir, tmp_path),
        "from chalicelib.aws import Target\n"
        "from chalicelib.runtime import current\n"
        "ec2 = current().clients.client('ec2', Target('home', 'eu-west-1'))\n"
        "print(sorted(ec2.meta.service_model.operation_names))\n",
    )

    # Then it has the operations the bots are granted, read from the model the zip ships, and no other
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(sorted(operations("ec2")))


def test_ours_ship_with_their_sources_and_a_dependency_as_bytecode_alone(zip_names: frozenset[str]) -> None:
    assert {"chalicelib/bots.py", "chalicelib/__pycache__/bots.cpython-311.pyc"} <= zip_names
    assert "pydantic/main.pyc" in zip_names
    assert "pydantic/main.py" not in zip_names


def test_every_compiled_dependency_in_the_zip_is_a_manylinux_wheel(package_dir: Path) -> None:
    # A wheel tagged plain linux_x86_64 was built from source on the packaging machine: linked to its
    # libraries, missing what it lacked headers for, and not loadable on Lambda
    with zipfile.ZipFile(package_dir / THUMBNAILS_ZIP) as deployment:  # every dependency: the other zip's too
        wheels = {
            name.split("/")[0]: deployment.read(name).decode()
            for name in deployment.namelist()
            if name.endswith(".dist-info/WHEEL")
        }
    tags = {
        dist: [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("Tag: ")]
        for dist, text in wheels.items()
    }
    built_here = {dist: found for dist, found in tags.items() if not any(_portable(tag) for tag in found)}
    assert "pillow_heif-1.0.0.dist-info" in tags
    assert not built_here


def _portable(tag: str) -> bool:
    platform = tag.rsplit("-", 1)[1]
    return platform == "any" or platform.startswith(("manylinux1_", "manylinux2014_", "manylinux_2_"))


def test_the_zips_own_pillow_and_pillow_heif_render_an_iphone_heic_and_write_avif(
    package_dir: Path, tmp_path: Path
) -> None:
    # Given the thumbnail bot's zip unpacked, and a portrait HEIC made here (this machine is x86_64 with
    # Python 3.11, as the Lambda runtime: the zip's manylinux2014 wheels load here too)
    with zipfile.ZipFile(package_dir / THUMBNAILS_ZIP) as deployment:
        deployment.extractall(tmp_path / "task")
    script = (
        "import io, sys\n"
        "from PIL import Image\n"
        "import pillow_heif\n"
        "pillow_heif.register_heif_opener()\n"
        "exif = Image.Exif(); exif[0x0112] = 6\n"
        "stored = Image.new('RGB', (64, 48), (200, 40, 40)); stored.info['exif'] = exif.tobytes()\n"
        "heic = io.BytesIO(); stored.save(heic, 'HEIF', quality=90)\n"
        "from chalicelib.thumbnails.imaging import render\n"
        "from chalicelib.thumbnails.policy import ThumbnailSize\n"
        "(made,) = render(heic.getvalue(), [ThumbnailSize(name='s', width=32, height=32)], output_format='avif',\n"
        "                 quality=80, max_pixels=10**8, memory_budget=10**9)\n"
        "print(Image.__file__, pillow_heif.__file__, made.width, made.height, made.body[4:12].decode())\n"
    )
    # When the zip's code, with the zip's Pillow and pillow-heif first on the path, renders it as AVIF
    # (boto3 and botocore, which the runtime provides, come from the test's environment)
    path = os.pathsep.join([str(tmp_path / "task"), *sys.path[1:]])
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
    )
    # Then the libraries it used are the zip's, and the thumbnail is upright (portrait) AVIF
    assert done.returncode == 0, done.stderr
    pillow, heif, width, height, brand = done.stdout.split()
    assert pillow.startswith(str(tmp_path / "task"))
    assert heif.startswith(str(tmp_path / "task"))
    assert (int(width), int(height), brand) == (24, 32, "ftypavif")


def test_zip_leaves_out_the_runtime_sdk_the_tests_and_what_no_function_runs(zip_names: frozenset[str]) -> None:
    assert not {name for name in zip_names if name.startswith(RUNTIME_PROVIDED)}
    assert not {name for name in zip_names if name.startswith(("tests/", "demo/")) or name.endswith("conftest.py")}
    assert not {name for name in zip_names if name.startswith(("yaml/_yaml.", "pydantic/v1/")) or name.endswith(".pyi")}
    assert not {name for name in zip_names if name.startswith("aws_lambda_powertools/event_handler/")}


# ----- IAM ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("function", sorted(PACKAGED))
def test_each_function_is_granted_exactly_what_it_calls(resources: dict[str, Any], function: str) -> None:
    actions, _, _ = PACKAGED[function]

    assert _actions(_statements(resources, function)) == actions


@pytest.mark.parametrize("function", sorted(PACKAGED))
def test_no_wildcard_actions_and_allow_only(resources: dict[str, Any], function: str) -> None:
    statements = _statements(resources, function)

    assert not {action for action in _actions(statements) if "*" in action}
    assert all(statement["Effect"] == "Allow" for statement in statements)
    assert not [statement for statement in statements if {"NotAction", "NotResource"} & statement.keys()]


@pytest.mark.parametrize("function", sorted(PACKAGED))
def test_functions_assume_only_their_own_bots_member_role(resources: dict[str, Any], function: str) -> None:
    assumes = _resources_of(_statements(resources, function), "sts:AssumeRole")
    bots = [bot for bot, users in MEMBER_ROLE_USERS.items() if function in users]

    # and, to find the members of an organization accounts.yml names, its reader (deploy/organization-role.yml)
    reader = [f"arn:aws:iam::*:role/{READER_ROLE}"] if bots else []
    assert assumes == [f"arn:aws:iam::*:role/{getattr(MemberRoles(), bot)}" for bot in bots] + reader
    assert ("sts:AssumeRole" in PACKAGED[function][0]) == bool(bots)


@pytest.mark.parametrize("function", sorted(PACKAGED))
def test_each_function_role_is_named_exactly_after_the_stack_and_the_function(
    resources: dict[str, Any], function: str
) -> None:
    # What the member roles trust: an exact ARN per function, so no other role of the stack can stand in.
    role = resources[_role_of(resources, function)]["Properties"]

    assert role["RoleName"] == {"Fn::Sub": f"${{AWS::StackName}}-{_function_name(function)}"}


# Each DynamoDB statement, by Sid: the actions it may grant and the one resource it names.
DYNAMODB_STATEMENTS = {
    "IdempotencyRecords": (RUN_ONCE, IDEMPOTENCY_TABLE_ARN),
    "EmailLedger": (LEDGER, IDEMPOTENCY_TABLE_ARN),
    "DrainTheOutbox": (DRAIN, OUTBOX_INDEX_ARN),
    "SnapshotLedger": (frozenset({"dynamodb:Query", "dynamodb:BatchWriteItem"}), SNAPSHOT_LEDGER_ARN),
    "CheckStates": (frozenset({"dynamodb:BatchGetItem", "dynamodb:PutItem"}), WEBSITES_TABLE_ARN),
    "StartSweepRuns": (frozenset({"dynamodb:PutItem"}), RUNS_ARN),
    "SweepRuns": (
        frozenset({"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"}),
        RUNS_ARN,
    ),
    "DnsRegistryRecords": (frozenset({"dynamodb:Scan", "dynamodb:PutItem", "dynamodb:DeleteItem"}), DNS_TABLE_ARN),
    "DnsRegistryByOwner": (frozenset({"dynamodb:Query"}), DNS_INDEX_ARN),
    "StartReconcileRuns": (frozenset({"dynamodb:PutItem"}), RUNS_ARN),
    "ReconcileRuns": (frozenset({"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"}), RUNS_ARN),
    "ReadReconcileRuns": (frozenset({"dynamodb:GetItem", "dynamodb:Query"}), RUNS_ARN),
}


@pytest.mark.parametrize("function", GUARDED_FUNCTIONS)
def test_idempotency_access_is_limited_to_its_table_and_outbox_index(resources: dict[str, Any], function: str) -> None:
    for statement in _statements(resources, function):
        if any(action.startswith("dynamodb:") for action in _actions([statement])):
            actions, resource = DYNAMODB_STATEMENTS[statement["Sid"]]
            assert _actions([statement]) <= actions
            assert statement["Resource"] == resource


@pytest.mark.parametrize("function", sorted(PACKAGED))
def test_only_the_snapshot_functions_read_and_write_the_snapshot_ledger(
    resources: dict[str, Any], function: str
) -> None:
    statements = _statements(resources, function)
    ledger = [statement for statement in statements if statement["Resource"] == SNAPSHOT_LEDGER_ARN]

    assert len(ledger) == (1 if function in SNAPSHOT_FUNCTIONS else 0)


def test_the_event_handler_keeps_only_an_email_ledger_in_the_table(resources: dict[str, Any]) -> None:
    # The revoke never waits on the table; the table only holds the email's claim (one PutItem per event).
    granted = PACKAGED["OnSecurityGroupChange"][0]

    assert {action for action in granted if action.startswith("dynamodb:")} == LEDGER


@pytest.mark.parametrize("function", sorted(SENDERS))
def test_email_is_sent_only_as_the_configured_sender(resources: dict[str, Any], function: str) -> None:
    policies = load_policies(ROOT / "policies")
    senders = sorted({policies.load(bot).notify.email.sender for bot in SENDERS[function]})
    [statement] = _granting(_statements(resources, function), "ses:SendEmail")

    # Edit .chalice/policy-<function>.json with the policy file's notify.email.sender: make test fails until they agree.
    assert statement["Condition"] == {"StringEquals": {"ses:FromAddress": senders[0] if len(senders) == 1 else senders}}
    assert statement["Resource"] == SES_IDENTITIES_ARN


@pytest.mark.parametrize("function", sorted(PACKAGED))
def test_tables_queues_and_identities_are_those_of_the_stacks_account_and_region(
    resources: dict[str, Any], function: str
) -> None:
    services = ("dynamodb:", "sqs:", "ses:")
    for statement in _statements(resources, function):
        if any(action.startswith(services) for action in _actions([statement])):
            resource = statement["Resource"]
            assert isinstance(resource, dict), statement
            assert resource["Fn::Sub"].startswith("arn:${AWS::Partition}:"), statement
            assert ":${AWS::Region}:${AWS::AccountId}:" in resource["Fn::Sub"], statement


@pytest.mark.parametrize("function", DNS_FUNCTIONS)
def test_dns_registry_and_run_access_is_limited_to_their_tables_and_index(
    resources: dict[str, Any], function: str
) -> None:
    statements = [s for s in _statements(resources, function) if any(a.startswith("dynamodb:") for a in _actions([s]))]

    assert statements
    for statement in statements:
        actions, resource = DYNAMODB_STATEMENTS[statement["Sid"]]
        assert _actions([statement]) <= actions
        assert statement["Resource"] == resource
    # Only the registry's writers reach it (and query only its by-owner index, whose ARN is not the table's).
    registry = [s for s in statements if s["Resource"] in (DNS_TABLE_ARN, DNS_INDEX_ARN)]
    assert bool(registry) == (function in DNS_WRITERS)


@pytest.mark.parametrize("function", DNS_WRITERS)
def test_route53_writes_are_limited_to_hosted_zones(resources: dict[str, Any], function: str) -> None:
    statements = _statements(resources, function)
    zone_actions = {a for a in PACKAGED[function][0] if a.startswith("route53:")} - {"route53:ListHostedZones"}

    assert zone_actions
    for action in zone_actions:
        assert _resources_of(statements, action) == [HOSTED_ZONE_ARN]
    assert _resources_of(statements, "route53:ListHostedZones") == ["*"]  # it supports no resource ARN


def test_the_dns_writer_runs_one_at_a_time_and_only_the_reconcile_worker_hands_it_runs(
    resources: dict[str, Any],
) -> None:
    # Every Route53 write of an instance event or a fanned-out reconcile is made by one invocation at a time.
    assert resources["OnInstanceStateChange"]["Properties"]["ReservedConcurrentExecutions"] == 1
    for function in PACKAGED:
        invokes = _resources_of(_statements(resources, function), "lambda:InvokeFunction")
        expected = [{"Fn::GetAtt": ["OnInstanceStateChange", "Arn"]}] if function == "DnsReconcileWorker" else []
        assert invokes == expected, function
        assert "ReservedConcurrentExecutions" not in resources[function]["Properties"] or (
            function == "OnInstanceStateChange"
        )
    variables = resources["DnsReconcileWorker"]["Properties"]["Environment"]["Variables"]
    assert variables[DNS_WRITER] == {"Ref": "OnInstanceStateChange"}
    # The workers write nothing to Route53: only the writer and the reconcile run in one function do.
    assert not {a for a in PACKAGED["DnsReconcileWorker"][0] if a.startswith("route53:")}


@pytest.mark.parametrize("function", SNAPSHOT_FUNCTIONS)
def test_snapshot_deletion_is_limited_to_managed_snapshots(resources: dict[str, Any], function: str) -> None:
    granting = _granting(_statements(resources, function), "ec2:DeleteSnapshot")

    assert granting
    for statement in granting:
        assert _actions([statement]) == {"ec2:DeleteSnapshot"}  # the condition covers nothing else
        assert statement["Condition"] == DELETE_SNAPSHOT_CONDITION


@pytest.mark.parametrize("function", SNAPSHOT_FUNCTIONS)
def test_snapshot_tags_are_set_only_by_the_calls_that_create_snapshots(
    resources: dict[str, Any], function: str
) -> None:
    granting = _granting(_statements(resources, function), "ec2:CreateTags")

    assert granting
    for statement in granting:
        assert _actions([statement]) == {"ec2:CreateTags"}
        assert statement["Condition"] == CREATE_TAGS_CONDITION


def test_thumbnails_read_only_uploads_and_write_only_under_output_prefixes(resources: dict[str, Any]) -> None:
    rules = load_policies(ROOT / "policies").of(ThumbnailsPolicy).buckets
    uploads = {f"arn:aws:s3:::{rule.bucket}/{rule.prefix}*" for rule in rules}
    outputs = {f"arn:aws:s3:::{rule.destination}/{rule.output_prefix}*" for rule in rules}
    statements = _statements(resources, "OnImageUploaded")

    assert rules, "policies/thumbnails.yml lists no bucket"
    # Edit .chalice/policy-on_image_uploaded.json with policies/thumbnails.yml: the role is scoped to it.
    assert set(_resources_of(statements, "s3:GetObject")) == uploads | outputs  # HeadObject is GetObject
    assert set(_resources_of(statements, "s3:PutObject")) == outputs
    assert set(_resources_of(statements, "s3:ListBucket")) == {f"arn:aws:s3:::{rule.destination}" for rule in rules}


def test_website_checks_write_only_the_status_page_and_its_history(resources: dict[str, Any]) -> None:
    page = load_policies(ROOT / "policies").of(WebsitesPolicy).status_page
    statements = _statements(resources, "CheckWebsites")

    assert page, "policies/websites.yml has no status_page"
    # Edit .chalice/policy-check_websites.json with policies/websites.yml: the role is scoped to it.
    history = f"arn:aws:s3:::{page.bucket}/{page.history_key}"
    assert _resources_of(statements, "s3:GetObject") == [history]
    assert set(_resources_of(statements, "s3:PutObject")) == {history, f"arn:aws:s3:::{page.bucket}/{page.key}"}
    assert _resources_of(statements, "s3:ListBucket") == [f"arn:aws:s3:::{page.bucket}"]


# Each scheduler that fans out, the queue only it sends to, and the worker that alone reads it.
FAN_OUTS = {
    "TakeSnapshots": (SNAPSHOT_QUEUE_ARN, "SnapshotWorker"),
    "SweepSecurityGroups": (SWEEP_QUEUE_ARN, "SweepWorker"),
    "ReconcileDns": (DNS_RECONCILE_QUEUE_ARN, "DnsReconcileWorker"),
}


def test_only_the_schedulers_send_to_their_queues_and_lambda_only_to_the_failed_events_queue(
    resources: dict[str, Any],
) -> None:
    for scheduler, (queue, _) in FAN_OUTS.items():
        sends = _resources_of(_statements(resources, scheduler), "sqs:SendMessage")
        assert sorted(map(str, sends)) == sorted(map(str, [queue, FAILED_EVENTS_QUEUE_ARN]))
    for function in set(PACKAGED) - set(FAN_OUTS):
        sends = _resources_of(_statements(resources, function), "sqs:SendMessage")
        assert sends == ([FAILED_EVENTS_QUEUE_ARN] if function in ASYNC_FUNCTIONS else [])


@pytest.mark.parametrize("scheduler", sorted(FAN_OUTS))
def test_each_worker_consumes_only_its_own_queue(resources: dict[str, Any], scheduler: str) -> None:
    queue, worker = FAN_OUTS[scheduler]
    statements = _statements(resources, worker)

    for action in SQS_CONSUME:
        assert _resources_of(statements, action) == [queue]


# ----- the template -------------------------------------------------------------------------------


@pytest.mark.parametrize("function", sorted(PACKAGED))
def test_functions_have_their_configured_memory_and_timeout(resources: dict[str, Any], function: str) -> None:
    _, memory, timeout = PACKAGED[function]
    properties = resources[function]["Properties"]

    assert (properties["MemorySize"], properties["Timeout"]) == (memory, timeout)
    assert properties["Tracing"] == "Active"
    assert properties["Environment"]["Variables"][TRACING] == "true"


def test_merge_template_adds_the_idempotency_table(resources: dict[str, Any]) -> None:
    table = resources["IdempotencyTable"]
    properties = table["Properties"]

    assert table["Type"] == "AWS::DynamoDB::Table"
    assert (table["DeletionPolicy"], table["UpdateReplacePolicy"]) == ("Retain", "Retain")
    assert properties["TableName"] == "opsbots-idempotency"
    assert properties["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert properties["AttributeDefinitions"] == [
        {"AttributeName": name, "AttributeType": "S"} for name in ("id", "outbox", "parked")
    ]
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    # The outbox: a sparse index of the emails SES refused, per bot, oldest first (chalicelib/outbox.py)
    assert properties["GlobalSecondaryIndexes"] == [
        {
            "IndexName": outbox.OUTBOX_INDEX,
            "KeySchema": [
                {"AttributeName": "outbox", "KeyType": "HASH"},
                {"AttributeName": "parked", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }
    ]


@pytest.mark.parametrize("function", ASYNC_FUNCTIONS)
def test_an_event_that_fails_every_attempt_is_parked_in_a_queue_with_an_alarm(
    resources: dict[str, Any], function: str
) -> None:
    invoke = resources[function]["Properties"]["EventInvokeConfig"]
    queue = resources["FailedEventsQueue"]

    assert invoke == {
        "MaximumRetryAttempts": 2,
        "DestinationConfig": {
            "OnFailure": {"Type": "SQS", "Destination": {"Fn::GetAtt": ["FailedEventsQueue", "Arn"]}}
        },
    }
    assert queue["Properties"]["QueueName"] == "opsbots-failed-events"
    assert queue["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    alarm = resources["FailedEventsAlarm"]["Properties"]
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["FailedEventsQueue", "QueueName"]}}]
    assert (alarm["MetricName"], alarm["Threshold"]) == ("ApproximateNumberOfMessagesVisible", 1)


ALARMED_METRICS = (
    "RevokeFailures",
    "NotificationFailures",
    "OutboxBacklog",
    "DedupeUnavailable",
    "SweepFailures",
    "ReconcileFailures",
    "StatusPageFailures",
    "OrganizationUnavailable",
    "InvalidPolicy",
)


def test_every_alarm_notifies_the_alarm_topic(resources: dict[str, Any]) -> None:
    alarms = {name: r["Properties"] for name, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    on_metrics = {a["MetricName"] for a in alarms.values() if a["Namespace"] == "opsbots"}

    assert on_metrics == set(ALARMED_METRICS)
    assert {"FailedEventsAlarm", "SnapshotDeadLettersAlarm"} <= set(alarms)
    for alarm in alarms.values():
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
        assert alarm["TreatMissingData"] == "notBreaching"
        if alarm["Namespace"] == "opsbots":  # Powertools Metrics' one dimension
            assert alarm["Dimensions"] == [{"Name": "service", "Value": "opsbots"}]


def test_merge_template_adds_the_dns_registry_table_with_its_owner_index(resources: dict[str, Any]) -> None:
    table = resources["DnsRegistryTable"]
    properties = table["Properties"]

    assert table["Type"] == "AWS::DynamoDB::Table"
    assert (table["DeletionPolicy"], table["UpdateReplacePolicy"]) == ("Retain", "Retain")
    assert properties["TableName"] == "opsbots-dns"
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["KeySchema"] == [{"AttributeName": "record", "KeyType": "HASH"}]
    assert sorted(properties["AttributeDefinitions"], key=lambda attribute: attribute["AttributeName"]) == [
        {"AttributeName": "owner", "AttributeType": "S"},
        {"AttributeName": "record", "AttributeType": "S"},
    ]
    assert properties["GlobalSecondaryIndexes"] == [
        {
            "IndexName": OWNER_INDEX,
            "KeySchema": [
                {"AttributeName": "owner", "KeyType": "HASH"},
                {"AttributeName": "record", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }
    ]
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["SSESpecification"] == {"SSEEnabled": True}


# Each fan-out's queue (by its resource), its name, its worker and its scheduler.
QUEUES = {
    "SnapshotQueue": (triggers.SNAPSHOT_QUEUE_NAME, "SnapshotWorker", "TakeSnapshots"),
    "SweepQueue": (triggers.SWEEP_QUEUE_NAME, "SweepWorker", "SweepSecurityGroups"),
}


@pytest.mark.parametrize("name", sorted(QUEUES))
def test_merge_template_adds_each_queue_with_its_dead_letter_queue(resources: dict[str, Any], name: str) -> None:
    queue_name, worker, _ = QUEUES[name]
    dead_letter_name = name.replace("Queue", "DeadLetterQueue")
    queue, dead_letters = resources[name], resources[dead_letter_name]
    worker_timeout = resources[worker]["Properties"]["Timeout"]

    assert queue["Type"] == dead_letters["Type"] == "AWS::SQS::Queue"
    assert queue["Properties"]["QueueName"] == queue_name
    assert queue["Properties"]["VisibilityTimeout"] >= 6 * worker_timeout  # AWS's advice for Lambda consumers
    assert queue["Properties"]["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dead_letter_name, "Arn"]},
        "maxReceiveCount": SWEEP_DELIVERIES,  # the sweep worker records a unit failed on its last delivery
    }
    assert dead_letters["Properties"]["QueueName"] == f"{queue_name}-dlq"
    assert dead_letters["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert queue["Properties"]["SqsManagedSseEnabled"] is True
    assert dead_letters["Properties"]["SqsManagedSseEnabled"] is True


@pytest.mark.parametrize("name", sorted(QUEUES))
def test_each_worker_listens_to_its_queue_once_it_exists(resources: dict[str, Any], name: str) -> None:
    queue_name, worker_name, _ = QUEUES[name]
    worker = resources[worker_name]
    (source,) = worker["Properties"]["Events"].values()

    assert source["Type"] == "SQS"
    assert source["Properties"]["BatchSize"] == 1
    # chalice names the queue by an ARN built from its name, so nothing orders the mapping after the
    # queue but this: SAM's mapping refers to the function, and the function waits for the queue.
    assert source["Properties"]["Queue"]["Fn::Sub"].endswith(f":{queue_name}")
    assert name in worker["DependsOn"]
    if name == "SweepQueue":  # a fleet's sweep: at most this many workers at once
        assert source["Properties"]["ScalingConfig"] == {"MaximumConcurrency": triggers.FLEET_WORKERS}


@pytest.mark.parametrize("function", sorted(PACKAGED))
def test_only_the_scheduler_gets_the_snapshot_queue(resources: dict[str, Any], function: str) -> None:
    variables = resources[function]["Properties"]["Environment"]["Variables"]

    assert variables["POWERTOOLS_SERVICE_NAME"] == "opsbots"  # merged into chalice's variables
    if function == "TakeSnapshots":
        assert variables[SNAPSHOT_QUEUE] == {"Ref": "SnapshotQueue"}  # the queue's URL
    else:
        assert SNAPSHOT_QUEUE not in variables


@pytest.mark.parametrize("function", sorted(PACKAGED))
def test_only_the_guarded_functions_get_the_idempotency_table(resources: dict[str, Any], function: str) -> None:
    variables = resources[function]["Properties"]["Environment"]["Variables"]

    assert variables["POWERTOOLS_SERVICE_NAME"] == "opsbots"  # merged into chalice's variables, not replacing them
    if function in GUARDED_FUNCTIONS:
        assert variables[IDEMPOTENCY_TABLE] == {"Ref": "IdempotencyTable"}
        assert PACKAGED[function][0] >= LEDGER
    else:
        assert IDEMPOTENCY_TABLE not in variables
        statements = _statements(resources, function)
        assert all(IDEMPOTENCY_TABLE_ARN not in _resources_of(statements, action) for action in RUN_ONCE | LEDGER)


@pytest.mark.parametrize("function", sorted(PACKAGED))
def test_only_the_dns_functions_get_the_dns_table(resources: dict[str, Any], function: str) -> None:
    variables = resources[function]["Properties"]["Environment"]["Variables"]

    assert variables["POWERTOOLS_SERVICE_NAME"] == "opsbots"  # merged into chalice's variables
    if function in DNS_WRITERS:
        assert variables[DNS_TABLE] == {"Ref": "DnsRegistryTable"}
    else:
        assert DNS_TABLE not in variables


# ----- the member-account role --------------------------------------------------------------------

MEMBER_ROLE = ROOT / "deploy" / "member-role.yml"


def test_member_role_template_passes_cfn_lint() -> None:
    done = subprocess.run(
        [str(BIN / "cfn-lint"), str(MEMBER_ROLE)], env=_environment(), capture_output=True, text=True, check=False
    )

    assert done.returncode == 0, done.stdout + done.stderr


def _member_roles() -> dict[MemberBot, dict[str, Any]]:
    from cfnlint.decode import cfn_yaml

    resources = cfn_yaml.load(str(MEMBER_ROLE))["Resources"]
    roles = {name for name, resource in resources.items() if resource["Type"] == "AWS::IAM::Role"}
    assert roles == set(MEMBER_ROLES) | {FORWARDER}
    for name in MEMBER_ROLES:  # named, so IAM (global) has them once: from the home region's stack instance
        assert resources[name]["Condition"] == "InHomeRegion"
    return {bot: resources[name]["Properties"] for name, bot in MEMBER_ROLES.items()}


def _member_statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [statement for policy in role["Policies"] for statement in policy["PolicyDocument"]["Statement"]]


def test_each_member_role_grants_only_what_its_bot_does_in_member_accounts() -> None:
    for bot, role in _member_roles().items():
        assert _actions(_member_statements(role)) == MEMBER_ROLE_ACTIONS[bot], bot
        assert role["RoleName"] == getattr(MemberRoles(), bot)  # policies/accounts.yml's default
    for bot in BOTS:  # what a bot may do in a member account, each of its functions may do at home
        assert all(set(bot.member_calls) <= set(function.calls) for function in bot.functions), bot.name


def test_each_member_role_trusts_only_its_own_bots_functions_by_exact_arn() -> None:
    # The DNS functions read tags anyone can set: they must not reach a role that revokes or deletes.
    for bot, role in _member_roles().items():
        [trust] = role["AssumeRolePolicyDocument"]["Statement"]
        trusted = trust["Condition"]["ArnEquals"]["aws:PrincipalArn"]
        expected = [
            {"Fn::Sub": f"arn:${{AWS::Partition}}:iam::${{HomeAccountId}}:role/${{HomeRolePrefix}}-{_function_name(f)}"}
            for f in MEMBER_ROLE_USERS[bot]
        ]

        assert (trust["Effect"], trust["Action"]) == ("Allow", "sts:AssumeRole"), bot
        assert trust["Principal"] == {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${HomeAccountId}:root"}}, bot
        assert trusted == expected, bot
        assert set(trust["Condition"]) == {"StringEquals", "ArnEquals"}, bot
        assert trust["Condition"]["StringEquals"] == {"sts:ExternalId": {"Ref": "ExternalId"}}, bot


def test_only_the_snapshot_role_deletes_only_managed_snapshots_and_tags_only_at_creation() -> None:
    roles = _member_roles()
    for bot, role in roles.items():
        statements = _member_statements(role)
        for action, condition in (
            ("ec2:DeleteSnapshot", DELETE_SNAPSHOT_CONDITION),
            ("ec2:CreateTags", CREATE_TAGS_CONDITION),
        ):
            granting = _granting(statements, action)
            assert bool(granting) == (bot == "snapshots"), (bot, action)
            for statement in granting:
                assert _actions([statement]) == {action}
                assert statement["Condition"] == condition


# ----- a member's events, forwarded to the home bus ----------------------------------------------------

FORWARDER = "ForwardEventsRole"
HOME_BUS = {"Fn::Sub": "arn:${AWS::Partition}:events:${HomeRegion}:${HomeAccountId}:event-bus/default"}
# The member rules of deploy/member-role.yml, by the home function whose events each forwards.
FORWARDED = {
    "ForwardSecurityGroupChanges": "on_security_group_change",
    "ForwardInstanceStateChanges": "on_instance_state_change",
}


def test_a_member_forwards_exactly_what_the_home_functions_react_to_to_the_home_bus() -> None:
    from cfnlint.decode import cfn_yaml

    resources = cfn_yaml.load(str(MEMBER_ROLE))["Resources"]
    rules = {
        name: resource["Properties"] for name, resource in resources.items() if resource["Type"] == "AWS::Events::Rule"
    }

    assert set(rules) == set(FORWARDED)
    for name, function in FORWARDED.items():
        # the member rule's pattern is the home rule's (chalicelib/bots.py), so nothing is lost between them
        assert json.loads(json.dumps(rules[name]["EventPattern"])) == REGISTERED[function].event_pattern, name
        assert rules[name]["Targets"] == [
            {"Id": "opsbots-home", "Arn": HOME_BUS, "RoleArn": {"Fn::GetAtt": [FORWARDER, "Arn"]}}
        ]
    # every event pattern function whose bot works in member accounts has its forwarding rule
    assert set(FORWARDED.values()) == {
        function.name for bot in BOTS if bot.member_calls for function in bot.functions if function.trigger == "event"
    }


def test_the_forwarding_role_only_puts_events_on_the_home_bus_for_this_accounts_eventbridge() -> None:
    from cfnlint.decode import cfn_yaml

    role = cfn_yaml.load(str(MEMBER_ROLE))["Resources"][FORWARDER]["Properties"]
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    [statement] = _member_statements(role)

    assert trust["Principal"] == {"Service": "events.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    assert (statement["Action"], statement["Resource"]) == (["events:PutEvents"], HOME_BUS)


def test_the_home_bus_takes_events_from_the_organization_or_the_accounts_given_and_no_one_else(
    resources: dict[str, Any],
) -> None:
    policies = {name: r for name, r in resources.items() if r["Type"] == "AWS::Events::EventBusPolicy"}
    by_organization = policies["MemberEventsFromOrganization"]
    by_account = policies["MemberEventsFromAccounts"]

    assert set(policies) == {"MemberEventsFromOrganization", "MemberEventsFromAccounts"}
    assert (by_organization["Condition"], by_account["Condition"]) == ("ForwardFromOrganization", "ForwardFromAccounts")
    for policy in policies.values():
        statement = policy["Properties"]["Statement"]
        assert (statement["Action"], policy["Properties"]["EventBusName"]) == ("events:PutEvents", "default")
    organization = by_organization["Properties"]["Statement"]
    assert organization["Principal"] == "*"
    assert organization["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": {"Ref": "OrganizationId"}}}
    assert by_account["Properties"]["Statement"]["Principal"] == {"AWS": {"Ref": "MemberAccountIds"}}


# ----- the organization reader (in the management or a delegated administrator account) ------------------

ORGANIZATION_ROLE = ROOT / "deploy" / "organization-role.yml"
READER_ROLE = Organization.model_fields["role"].default


def test_organization_role_template_passes_cfn_lint() -> None:
    done = subprocess.run(
        [str(BIN / "cfn-lint"), str(ORGANIZATION_ROLE)], env=_environment(), capture_output=True, text=True, check=False
    )

    assert done.returncode == 0, done.stdout + done.stderr


def test_the_organization_reader_only_lists_and_trusts_only_the_functions_that_work_in_members() -> None:
    from cfnlint.decode import cfn_yaml

    [role] = cfn_yaml.load(str(ORGANIZATION_ROLE))["Resources"].values()
    properties = role["Properties"]
    [trust] = properties["AssumeRolePolicyDocument"]["Statement"]
    users = [function for bot in MEMBER_ROLE_USERS.values() for function in bot]

    assert properties["RoleName"] == READER_ROLE  # policies/accounts.yml's default organization.role
    assert _actions(_member_statements(properties)) == {
        "organizations:ListAccounts",
        "organizations:ListAccountsForParent",
        "organizations:ListOrganizationalUnitsForParent",
    }
    assert trust["Condition"]["StringEquals"] == {"sts:ExternalId": {"Ref": "ExternalId"}}
    assert sorted(str(arn) for arn in trust["Condition"]["ArnEquals"]["aws:PrincipalArn"]) == sorted(
        str(
            {"Fn::Sub": f"arn:${{AWS::Partition}}:iam::${{HomeAccountId}}:role/${{HomeRolePrefix}}-{_function_name(f)}"}
        )
        for f in users
    )


# ----- the tag guard (an SCP: only security and opsbots may set opsbots:* tags) ------------------------

TAG_GUARD = ROOT / "deploy" / "protect-opsbots-tags.yml"
SECURITY = "arn:aws:iam::*:role/SecurityAdmin"


def test_the_tag_guard_template_passes_cfn_lint() -> None:
    done = subprocess.run(
        [str(BIN / "cfn-lint"), str(TAG_GUARD)], env=_environment(), capture_output=True, text=True, check=False
    )

    assert done.returncode == 0, done.stdout + done.stderr


def _tag_guard_denies(principal: str, action: str, keys: list[str]) -> bool:
    """The SCP's verdict, as deployed with SecurityPrincipalArns=SecurityAdmin and the default stack name."""
    import fnmatch

    from cfnlint.decode import cfn_yaml

    policy = cfn_yaml.load(str(TAG_GUARD))["Resources"]["ProtectOpsbotsTags"]["Properties"]
    [statement] = policy["Content"]["Statement"]
    separator, listed = statement["Condition"]["ArnNotLike"]["aws:PrincipalArn"]["Fn::Split"]
    exempt = listed["Fn::Sub"].replace("${SecurityPrincipalArns}", SECURITY).replace("${HomeRolePrefix}", "opsbots")
    tag_keys = statement["Condition"]["ForAnyValue:StringLike"]["aws:TagKeys"]
    return (
        statement["Effect"] == "Deny"
        and action in statement["Action"]
        and any(fnmatch.fnmatchcase(key, pattern) for key in keys for pattern in tag_keys)
        and not any(fnmatch.fnmatchcase(principal, pattern) for pattern in exempt.split(separator))
    )


@pytest.mark.parametrize(
    ("principal", "action", "keys", "denied"),
    [
        pytest.param(
            "arn:aws:iam::222222222222:role/developer",
            "ec2:CreateTags",
            ["opsbots:exempt-until"],
            True,
            id="a developer exempting a group",
        ),
        pytest.param(
            "arn:aws:iam::222222222222:role/developer",
            "ec2:DeleteTags",
            ["opsbots:managed"],
            True,
            id="a developer unmarking a snapshot",
        ),
        pytest.param(
            "arn:aws:iam::222222222222:role/developer",
            "ec2:CreateTags",
            ["Name", "opsbots:policy"],
            True,
            id="one opsbots key among others",
        ),
        pytest.param("arn:aws:iam::222222222222:role/developer", "ec2:CreateTags", ["Name"], False, id="any other tag"),
        pytest.param(
            "arn:aws:iam::222222222222:role/SecurityAdmin",
            "ec2:CreateTags",
            ["opsbots:exempt-until"],
            False,
            id="security",
        ),
        pytest.param(
            "arn:aws:iam::222222222222:role/opsbots-member-snapshots",
            "ec2:CreateTags",
            ["opsbots:managed"],
            False,
            id="the snapshot bot in a member",
        ),
        pytest.param(
            "arn:aws:iam::123456789012:role/opsbots-take_snapshots",
            "ec2:CreateTags",
            ["opsbots:managed"],
            False,
            id="the snapshot bot at home",
        ),
        pytest.param(
            "arn:aws:iam::222222222222:role/opsbots-member-dns",
            "ec2:CreateTags",
            ["opsbots:exempt-until"],
            True,
            id="the DNS bot in a member",
        ),
        pytest.param(
            "arn:aws:iam::123456789012:role/opsbots-reconcile_dns",
            "ec2:CreateTags",
            ["opsbots:exempt-until"],
            True,
            id="another opsbots function at home",
        ),
    ],
)
def test_the_tag_guard_lets_only_security_and_opsbots_set_opsbots_tags(
    principal: str, action: str, keys: list[str], denied: bool
) -> None:
    assert _tag_guard_denies(principal, action, keys) is denied


def test_merge_template_adds_the_snapshot_ledger_to_the_snapshot_functions_only(resources: dict[str, Any]) -> None:
    table = resources["SnapshotLedgerTable"]
    properties = table["Properties"]

    assert (table["DeletionPolicy"], table["UpdateReplacePolicy"]) == ("Retain", "Retain")
    assert properties["TableName"] == "opsbots-snapshot-ledger"
    assert properties["KeySchema"] == [
        {"AttributeName": "scope", "KeyType": "HASH"},
        {"AttributeName": "snapshot", "KeyType": "RANGE"},
    ]
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    for function in PACKAGED:
        variables = resources[function]["Properties"]["Environment"]["Variables"]
        if function in SNAPSHOT_FUNCTIONS:
            assert variables[SNAPSHOT_LEDGER] == {"Ref": "SnapshotLedgerTable"}
        else:
            assert SNAPSHOT_LEDGER not in variables


@pytest.mark.parametrize("name", sorted(QUEUES))
def test_only_its_scheduler_may_send_to_each_queue(resources: dict[str, Any], name: str) -> None:
    # A queue message is a request for work in a member account: no other principal may write one.
    scheduler = QUEUES[name][2]
    policy = resources[f"{name}Policy"]["Properties"]
    [statement] = policy["PolicyDocument"]["Statement"]

    assert policy["Queues"] == [{"Ref": name}]
    assert (statement["Effect"], statement["Principal"], statement["Action"]) == ("Deny", "*", "sqs:SendMessage")
    assert statement["Condition"] == {
        "ArnNotEquals": {"aws:PrincipalArn": {"Fn::GetAtt": [_role_of(resources, scheduler), "Arn"]}}
    }


def _function_name(logical_id: str) -> str:
    """OnSecurityGroupChange -> on_security_group_change, the name app.py gives it."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in logical_id).lstrip("_")


def _role_of(resources: dict[str, Any], function: str) -> str:
    role: str = resources[function]["Properties"]["Role"]["Fn::GetAtt"][0]
    return role
