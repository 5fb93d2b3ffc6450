"""The `opsbots` command: validate, simulate (no AWS at all), schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chalicelib.cli import main
from chalicelib.dns.decisions import reconcile_ready
from chalicelib.policy import POLICY_FILES, json_schema
from tests.support.aws import EVENTS, ROOT


def test_validate_accepts_the_shipped_policies(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ROOT / "policies")]) == 0
    assert capsys.readouterr().out.startswith("ok:")


def test_validate_lists_every_problem_and_fails(policies_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given two mistakes in two files
    rules = policies_dir / "security_groups.yml"
    rules.write_text(rules.read_text().replace("ports: [22, 3389]", "ports: [22, ssh]"))
    accounts = policies_dir / "accounts.yml"
    accounts.write_text(accounts.read_text().replace("    regions: [eu-west-1]\n", "    regoins: [eu-west-1]\n"))

    # When validated
    assert main(["validate", str(policies_dir)]) == 1

    # Then both are reported with file and line, and no traceback
    errors = capsys.readouterr().err
    assert "security_groups.yml:33: rules[0].ports[1]: 'ssh' is not a port or range" in errors
    assert "accounts.yml:21: accounts[0].regoins: unknown field" in errors
    assert "Traceback" not in errors


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        (
            "sg-authorize-ingress-ssh-world",
            ["VIOLATES no-admin-ports-from-internet", "revoke_security_group_ingress", "Subject: [opsbots] reverted"],
        ),
        (
            "sg-authorize-ingress-cross-account",
            ["sts.assume_role(RoleArn='arn:aws:iam::222222222222:role/opsbots-member-security-groups'"],
        ),
        ("sg-authorize-egress", ["decision: compliant; no AWS call would be made"]),
        ("sg-authorize-ingress-failed", ["skipped:", "the call failed"]),
        ("sg-modify-rules", ["describe_security_group_rules", "revoke_security_group_ingress(GroupId="]),
        (
            "sg-modify-prefix-list-world",
            [
                "prefix list pl-0b8e4d2a6c1f93507 gains 0.0.0.0/0; forbidden as a source: 0.0.0.0/0",
                "ec2.describe_security_group_rules()  # the rules that reference pl-0b8e4d2a6c1f93507",
                "ec2.revoke_security_group_ingress(GroupId='<each group with a rule from pl-0b8e4d2a6c1f93507>'",
                "CAUSE",
            ],
        ),
        ("ec2-state-stopped", ["ec2.describe_instances(InstanceIds=['i-0c4f1a9e27b83d615'])", "current state"]),
        ("ec2-state-running-other-account", ["333333333333 is not in accounts.yml", "dynamodb.query"]),
        ("ec2-state-running", ["ec2.describe_instances", "exactly the records the registry holds"]),
        (
            "s3-object-created",
            [
                "s3.put_object(Key='thumbnails/summer holiday/été 01/small.webp', IfNoneMatch='*')",
                "decision: 2 thumbnail(s) to write",
            ],
        ),
        ("s3-notification-put", ["upload s3://photos-upload/uploads/summer holiday/été 01.JPG"]),
        (
            "scheduled-event",
            ["reconcile_dns", "sweep_security_groups", "222222222222 (workloads) eu-west-1: daily", "the newest 7"],
        ),
    ],
)
def test_simulate_prints_the_decision_the_calls_and_the_email(
    sample: str, expected: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Any AWS call would go to a closed port and fail the command.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert main(["simulate", str(EVENTS / f"{sample}.json"), "--policies", str(ROOT / "policies")]) == 0
    out = capsys.readouterr().out
    for line in expected:
        assert line in out


def test_simulate_shows_the_look_up_and_the_revoke_for_an_event_from_before_rule_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given SSH to the world as CloudTrail logged it before July 2021: no securityGroupRuleSet in the response
    event = json.loads((EVENTS / "sg-authorize-ingress-ssh-world.json").read_text())
    del event["detail"]["responseElements"]["securityGroupRuleSet"]
    path = tmp_path / "old-event.json"
    path.write_text(json.dumps(event))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")

    # When it is dry-run
    assert main(["simulate", str(path), "--policies", str(ROOT / "policies")]) == 0

    # Then it shows what the handler does: look the rule up, then revoke it; never "already gone"
    out = capsys.readouterr().out
    lookup = out.index("ec2.describe_security_group_rules(Filters=[group-id=['sg-0a7c3e91d54b26f80']])")
    revoke = out.index(
        "ec2.revoke_security_group_ingress(GroupId='sg-0a7c3e91d54b26f80', "
        "SecurityGroupRuleIds=['<the rule id the look-up finds>'])"
    )
    assert lookup < revoke
    assert "revoked <the rule id the look-up finds>" in out
    assert "already gone" not in out


def test_simulate_shows_the_dns_writer_applying_a_reconcile_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given what the reconcile's last worker hands the DNS writer
    path = tmp_path / "ready.json"
    path.write_text(json.dumps(reconcile_ready("dns-hour-1")))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")

    # When it is dry-run
    assert main(["simulate", str(path), "--policies", str(ROOT / "policies")]) == 0

    # Then it says what the writer does with the run
    out = capsys.readouterr().out
    assert "reconcile run dns-hour-1" in out
    assert "a unit that failed keeps its records" in out


@pytest.mark.parametrize("name", sorted(POLICY_FILES))
def test_the_committed_schema_matches_the_models(name: str) -> None:
    committed = json.loads((ROOT / "schema" / f"{name}.json").read_text())
    assert committed == json_schema(name), "run: opsbots schema --write schema"


def test_every_policy_file_points_editors_at_its_schema() -> None:
    for path in (ROOT / "policies").glob("*.yml"):
        assert path.read_text().startswith(f"# yaml-language-server: $schema=../schema/{path.stem}.json\n")


def test_schema_prints_one_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "security_groups"]) == 0
    assert "rules" in json.loads(capsys.readouterr().out)["properties"]


def test_simulate_runs_the_dns_decisions_on_a_described_instance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the instance a state-change event names, as `aws ec2 describe-instances` shows it
    described = tmp_path / "instance.json"
    instance = {
        "InstanceId": "i-0c4f1a9e27b83d615",
        "State": {"Name": "running"},
        "VpcId": "vpc-0a1b2c3d",
        "PrivateIpAddress": "10.0.1.17",
        "PublicIpAddress": "203.0.113.17",
        "Tags": [{"Key": "Name", "Value": "web-1"}, {"Key": "opsbots:dns", "Value": "yes"}],
    }
    described.write_text(json.dumps({"Reservations": [{"Instances": [instance]}]}))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")

    # When the event is dry-run with it
    event = str(EVENTS / "ec2-state-running.json")
    assert main(["simulate", event, "--policies", str(ROOT / "policies"), "--describe", str(described)]) == 0

    # Then the handler's own decisions give the records: claimed, looked up, then written
    out = capsys.readouterr().out
    assert "dynamodb: claim 2 name(s) in the registry" in out
    assert "route53.list_resource_record_sets(HostedZoneId='<example.com public zone>'" in out
    assert "decision: running: 2 record(s) written, each claimed first:" in out
    assert "  web-1.internal.example.com. A 10.0.1.17 (TTL 60)\n" in out
    assert "  web-1.example.com. A 203.0.113.17 (TTL 60)\n" in out


def test_simulate_of_an_instance_the_policy_does_not_select_deletes_its_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    described = tmp_path / "instance.json"
    described.write_text(json.dumps({"InstanceId": "i-0c4f1a9e27b83d615", "State": {"Name": "running"}}))
    event = str(EVENTS / "ec2-state-running.json")

    assert main(["simulate", event, "--policies", str(ROOT / "policies"), "--describe", str(described)]) == 0

    assert "decision: not selected (no opsbots:dns tag): delete exactly the records" in capsys.readouterr().out


def test_simulate_says_which_functions_of_a_schedule_are_off(
    policies_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a deployment without the DNS bot
    (policies_dir / "dns.yml").unlink()

    # When a scheduled event is dry-run
    assert main(["simulate", str(EVENTS / "scheduled-event.json"), "--policies", str(policies_dir)]) == 0

    # Then the other scheduled functions show their run and the DNS one says it is off
    out = capsys.readouterr().out
    assert "reconcile_dns:\n  off: no dns.yml\n" in out
    assert "sweep_security_groups:\n  over 2 account/region unit(s)" in out
    assert "take_snapshots:\n  2 unit(s) with a policy due" in out


def test_an_event_that_wakes_no_function_is_skipped_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"source": "aws.rds", "detail-type": "RDS DB Instance Event", "id": "e-1"}))

    assert main(["simulate", str(event), "--policies", str(ROOT / "policies")]) == 0

    said = capsys.readouterr().out
    assert said == "skipped: event e-1: no opsbots function is woken by 'aws.rds' 'RDS DB Instance Event' events\n"


def test_a_describe_file_that_is_not_an_object_is_said_to_be_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    described = tmp_path / "described.json"
    described.write_text("[1, 2]")
    event = str(EVENTS / "ec2-state-running.json")

    assert main(["simulate", event, "--policies", str(ROOT / "policies"), "--describe", str(described)]) == 1

    assert capsys.readouterr().err == f"{described}: not a JSON object, as `aws ec2 describe-...` prints\n"
