"""What the fuzz targets found (fixed in events.py and policy.py), each pinned to a small input that shows it,
and what reading the same code again after them found ("review" below)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest

from chalicelib.cli import main
from chalicelib.dns.events import parse_state_change
from chalicelib.events import MalformedEventError
from chalicelib.security_groups.events import parse_security_group_change
from chalicelib.thumbnails.events import parse_object_created
from tests.support.aws import ROOT, load_event
from tests.support.policies import SHIPPED, write_policies

pytestmark = pytest.mark.fuzz

SSH_WORLD = "sg-authorize-ingress-ssh-world"


def ssh_world(**envelope: Any) -> dict[str, Any]:
    return {**load_event(SSH_WORLD), **envelope}


def created_rule(event: dict[str, Any]) -> dict[str, Any]:
    rule: dict[str, Any] = event["detail"]["responseElements"]["securityGroupRuleSet"]["items"][0]
    return rule


def with_rule(**changes: Any) -> dict[str, Any]:
    event = ssh_world()
    created_rule(event).update(changes)
    return event


@pytest.mark.parametrize(
    "event",
    [
        # Was ValueError from PortRange in port_span (security_groups/decisions.py): the guard crashed on the event.
        pytest.param(with_rule(fromPort=2**70), id="port-beyond-65535"),
        pytest.param(with_rule(toPort=70000), id="to-port-beyond-65535"),
        # Were AWS calls to endpoint "ec2..amazonaws.com" (ValueError: Invalid endpoint) or region "e".
        pytest.param(ssh_world(region=""), id="empty-region"),
        pytest.param(ssh_world(region="e"), id="region-cut-short"),
        pytest.param(ssh_world(account="1234"), id="account-not-12-digits"),  # review
        # Was sent to EC2 as it came (moto answered with XML botocore cannot parse: ResponseParserError).
        pytest.param(with_rule(groupId="sg-\x00"), id="group-id-with-nul"),
        # Review: a time without a timezone cannot be compared with now (exposure seconds): TypeError once reverted.
        pytest.param(ssh_world(time="2025-06-14T09:03:12"), id="time-without-timezone"),
        # Review: a number read as an address, ip_network(5) is 0.0.0.5/32.
        pytest.param(with_rule(cidrIpv4=5), id="cidr-as-number"),
    ],
)
def test_a_security_group_event_the_guard_cannot_trust_is_malformed(event: dict[str, Any]) -> None:
    with pytest.raises(MalformedEventError):
        parse_security_group_change(event)


def test_a_state_change_from_a_region_that_cannot_be_is_malformed() -> None:
    with pytest.raises(MalformedEventError):
        parse_state_change({**load_event("ec2-state-running"), "region": ""})


def test_a_classic_notification_without_records_is_malformed() -> None:
    # Review: was no upload and no metric, so Powertools warned "No application metrics to publish"
    with pytest.raises(MalformedEventError):
        parse_object_created({"Records": []})


def test_a_classic_notification_from_a_region_that_cannot_be_is_malformed() -> None:
    event = load_event("s3-notification-put")
    event["Records"][0]["awsRegion"] = ""
    with pytest.raises(MalformedEventError):
        parse_object_created(event)


def validate(directory: Path) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["validate", str(directory)])
    return code, err.getvalue()


def test_an_unknown_key_in_an_optional_section_is_reported_not_a_traceback(tmp_path: Path) -> None:
    # Given `notify:` (optional in snapshots.yml) holding an unknown key
    notify = "notify:\n  email: {sender: opsbots@example.com, recipients: [ops@example.com]}\n"
    assert notify in SHIPPED["snapshots.yml"]
    write_policies(tmp_path, "snapshots.yml", SHIPPED["snapshots.yml"].replace(notify, "notify: {'': null}\n"))
    # When validated (was: AttributeError, 'types.UnionType' object has no attribute 'model_fields')
    code, errors = validate(tmp_path)
    # Then both problems are listed
    assert code == 1
    assert "notify['']: unknown field; expected one of: email" in errors
    assert "notify.email: Field required" in errors


def test_a_key_that_is_not_a_plain_name_is_quoted_so_a_problem_stays_one_line(tmp_path: Path) -> None:
    # Given an unknown top-level key with a line break in it
    write_policies(tmp_path, "security_groups.yml", SHIPPED["security_groups.yml"] + '"sneaky\\nkey": 1\n')
    # When validated (review: the problem was printed over two lines)
    code, errors = validate(tmp_path)
    # Then the problem is one line, the key quoted
    assert code == 1
    [problem] = errors.splitlines()
    assert problem.endswith(
        "['sneaky\\nkey']: unknown field; expected one of: mode, notify, exemption_tag, max_exemption_days, rules"
    )


@pytest.mark.parametrize(
    ("text", "said"),
    [
        # Review: each was a traceback (JSONDecodeError, ValueError, TypeError naive - aware in snapshots.is_due).
        pytest.param("not json", "not a JSON event: Expecting value: line 1 column 1 (char 0)", id="not-json"),
        pytest.param(None, "cannot read: No such file or directory", id="missing-file"),
        pytest.param('{"detail-type": "Scheduled Event", "time": "yesterday"}', "skipped: ", id="time-not-iso"),
        pytest.param('{"detail-type": "Scheduled Event", "time": "2025-06-14T02:00:00"}', "skipped: ", id="no-zone"),
    ],
)
def test_opsbots_simulate_says_why_it_cannot_dry_run_an_event(tmp_path: Path, text: str | None, said: str) -> None:
    # Given an event file that is missing, not JSON, or a scheduled event at a time that is no time
    event = tmp_path / "event.json"
    if text is not None:
        event.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    # When `opsbots simulate` reads it
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["simulate", str(event), "--policies", str(ROOT / "policies")])
    # Then it says why, in one line, and no traceback
    assert said in out.getvalue() + err.getvalue()
    assert code == (0 if said == "skipped: " else 1)
