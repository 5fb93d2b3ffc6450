"""Hostile input: what anyone who can change a resource or make an API call writes reaches the bots.

- HTML and script in rule descriptions, user agents, identities, group names and tags never reach an
  email unescaped (moto keeps only the HTML body of a sent email; the text part is checked through
  the renderer), and never break the subject onto a second header line;
- DNS Name and alias tags that try to leave the zone (`a.b.example.org`, `..`, 300 characters, `*`,
  trailing dots, unicode) never write a record outside the configured zones, nor more than one label;
- S3 keys with `../`, `./`, `//`, `%2e%2e/` under the upload prefix: every write lands under the
  output prefix (S3 keys are literal: `thumbnails/../x` is a key under `thumbnails/`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import boto3
import pytest

from chalicelib import notify
from chalicelib.observability import metrics
from chalicelib.policy import load_policies
from chalicelib.security_groups.decisions import SweepFinding, Verdict, digest_notice, find_violations, violation_notice
from chalicelib.security_groups.events import parse_security_group_change
from chalicelib.security_groups.policy import SecurityGroupsPolicy
from chalicelib.snapshots.executors import UnitResult
from chalicelib.thumbnails.decisions import SOURCE_KEY, output_key
from chalicelib.thumbnails.handlers import ThumbnailDeps, handle_upload
from chalicelib.thumbnails.policy import ThumbnailsPolicy
from tests.support.aws import HOME, REGION, ROOT, load_event
from tests.support.dns import Network
from tests.support.estate import Estate, sent_emails, tcp
from tests.support.pictures import jpeg
from tests.support.security_groups import SSH_EVENT_GROUP, SSH_EVENT_RULE

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SCRIPT = '<script>alert("xss")</script>'
IMG = "<img src=x onerror=alert(1)>"
ENTITY = "&lt;b&gt;not bold&lt;/b&gt; & friends; {a} [b] $c"  # what EC2 itself allows in a description
CRLF = "\r\nBcc: attacker@example.net\r\n"
HOSTILE = (SCRIPT, IMG)


def assert_escaped(html: str, *raw: str) -> None:
    """No hostile markup survives into the HTML; each value is there, escaped."""
    assert "<script" not in html.lower()
    assert "<img" not in html.lower()
    for value in raw:
        escaped = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert escaped in html.replace("&#34;", '"').replace("&#39;", "'"), value


@pytest.fixture(autouse=True)
def _no_metrics_left_behind() -> None:
    metrics.clear_metrics()


# ----- emails ------------------------------------------------------------------------------------------


def hostile_event(group: str, rule: str) -> dict[str, Any]:
    event = load_event("sg-authorize-ingress-ssh-world", **{SSH_EVENT_GROUP: group, SSH_EVENT_RULE: rule})
    detail = event["detail"]
    detail["userAgent"] = f"aws-cli/2.17 {SCRIPT}"
    detail["userIdentity"]["arn"] = f"arn:aws:sts::{HOME}:assumed-role/dev/{IMG}"
    detail["userIdentity"]["userName"] = IMG
    [created] = detail["responseElements"]["securityGroupRuleSet"]["items"]
    created["description"] = f"{ENTITY} {SCRIPT}"
    return event


def test_violation_emails_and_digests_escape_descriptions_actors_and_user_agents(estate: Estate, lambdas: Any) -> None:
    # Given SSH opened by a caller with a hostile user agent and identity, with a hostile description,
    # in a group whose name and tags are hostile too
    vpc = estate.home_ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    group = estate.home_ec2.create_security_group(GroupName=f"web {IMG}", Description=SCRIPT, VpcId=vpc)["GroupId"]
    estate.home_ec2.create_tags(Resources=[group], Tags=[{"Key": "Owner", "Value": SCRIPT}, {"Key": IMG, "Value": "x"}])
    [rule] = estate.authorize(group, [tcp(22, description=SCRIPT)])
    event = hostile_event(group, rule)

    assert lambdas.invoke("on_security_group_change", event).payload["status"] == "reverted"

    # Then the HTML part (what moto keeps) shows every hostile value escaped, and the subject is one line
    [email] = sent_emails()
    assert_escaped(email.body, SCRIPT, IMG, ENTITY)
    assert not set(email.subject) & {"\r", "\n"}
    # And the text part, rendered the same way, carries the values as plain text: nothing to interpret
    policies = load_policies(ROOT / "policies")
    change = parse_security_group_change(event)
    verdict = Verdict("reverted", find_violations(change.permissions, policies.of(SecurityGroupsPolicy).rules))
    rendered = violation_notice(change, verdict, policies.of(SecurityGroupsPolicy), "home", 1.0).render()
    assert all(value in rendered.text for value in (SCRIPT, IMG, ENTITY))
    assert_escaped(rendered.html, SCRIPT, IMG, ENTITY)

    # And when the sweep finds a rule no event reported, its digest escapes the description too
    estate.authorize(group, [tcp(3389, description=f"{IMG} {ENTITY}")])
    assert lambdas.invoke("sweep_security_groups", load_event("scheduled-event")).payload["violations"] == 1
    digest = sent_emails()[-1]
    assert_escaped(digest.body, f"{IMG} {ENTITY}")


@pytest.mark.parametrize("template", ["sg_digest", "snapshot_failures"])
def test_reports_escape_account_names_and_error_messages(template: str) -> None:
    # Account names come from accounts.yml, error messages from AWS (which echo what they were sent)
    policies = load_policies(ROOT / "policies")
    finding = SweepFinding("222222222222", SCRIPT, REGION, Verdict("failed"), error=f"AccessDenied: {IMG}")
    notices = {
        "sg_digest": digest_notice([finding], policies.of(SecurityGroupsPolicy), datetime(2025, 6, 14, tzinfo=UTC)),
        "snapshot_failures": notify.notice(
            "snapshot_failures",
            to=policies.of(SecurityGroupsPolicy).notify.email,
            subject="[opsbots] snapshots",
            facts={"results": [asdict(UnitResult("222222222222", SCRIPT, REGION, failed=[f"daily: {IMG}"]))]},
        ),
    }

    # When it is rendered, from a subject carrying a header injection
    email = replace(notices[template], subject=f"[opsbots] {CRLF}").render()

    assert_escaped(email.html, SCRIPT, IMG)
    assert all(value in email.text for value in (SCRIPT, IMG))
    assert not set(email.subject) & {"\r", "\n"}


# ----- DNS names ---------------------------------------------------------------------------------------

NAME_TAGS = [
    "a.b.example.org",
    "..",
    "x" * 300,
    "*",
    "web.",
    "web.internal.example.com.",
    "café",
    "例え",
    "a\nb",
    "@",
    "\\052",
    "-lead-",
    "UPPER_case",
    "../../etc",
    "%2e%2e",
]
ALIAS_TAGS = "a.b.example.org,..,*, ok ,x.example.com.,evil.com.,\\100,," + "y" * 300
LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def test_hostile_name_and_alias_tags_never_leave_the_configured_zones(network: Network, lambdas: Any) -> None:
    # Given zones that a sloppy name would land in: example.org, evil.com and a deeper internal zone
    trap_zones = {}
    for name in ("example.org", "evil.com", "b.example.org", "deep.internal.example.com"):
        created = network.route53.create_hosted_zone(Name=name, CallerReference=f"trap-{name}")["HostedZone"]
        trap_zones[name] = created["Id"].rsplit("/", 1)[-1]
    for n, tag in enumerate(NAME_TAGS):
        aliases: Any = {"opsbots:dns-aliases": ALIAS_TAGS if n == 0 else f"alias-{n}"}
        network.launch(tag, **aliases)

    result = lambdas.invoke("reconcile_dns", load_event("scheduled-event")).payload

    # Then nothing at all was written in any zone opsbots was not configured for
    assert result["failures"] == []
    for zone_id in trap_zones.values():
        listed = network.route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
        assert {record["Type"] for record in listed} == {"SOA", "NS"}
    # And every record written is exactly one valid label under its configured zone
    written = {zone: network.records(zone) for zone in ("internal.example.com", "example.com")}
    for zone, records in written.items():
        for name, kind in records:
            label, _, rest = name.partition(".")
            assert rest == f"{zone}.", name
            assert LABEL.match(label), name
            assert kind in ("A", "CNAME"), name
    names = {name.partition(".")[0] for records in written.values() for name, _ in records}
    assert {"a-b-example-org", "x" * 63, "web", "caf", "a-b", "052", "lead", "upper-case", "etc", "2e-2e"} <= names
    assert {"ok", "evil-com", "x-example-com", "y" * 63, "100"} <= names  # the aliases, each one label too
    # PTRs name the address in the reverse zone and point at a name opsbots wrote
    for (name, kind), targets in network.records("10.in-addr.arpa").items():
        assert (kind, name.endswith(".10.in-addr.arpa.")) == ("PTR", True)
        assert all(target.endswith(".internal.example.com.") for target in targets)


# ----- S3 keys -----------------------------------------------------------------------------------------

KEYS = [
    "uploads/../escape.jpg",
    "uploads/../../escape2.jpg",
    "uploads/a/../../../escape3.jpg",
    "uploads/./dot.jpg",
    "uploads//lead.jpg",
    "uploads/%2e%2e/encoded.jpg",
    "uploads/..%2f..%2fencoded2.jpg",
    "uploads/..\\..\\windows.jpg",
    "uploads/thumbnails/../thumbnails/x.jpg",
]


@pytest.fixture
def bucket(estate: Estate) -> S3Client:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="photos-upload", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return s3


def test_upload_keys_with_dot_segments_only_ever_write_under_the_output_prefix(bucket: S3Client) -> None:
    policy = load_policies(ROOT / "policies").of(ThumbnailsPolicy)
    rule = policy.buckets[0]
    writes: list[str] = []
    bucket.meta.events.register("provide-client-params.s3.PutObject", lambda params, **_: writes.append(params["Key"]))
    body = jpeg(64, 48)
    for key in KEYS:
        etag = bucket.put_object(Bucket="photos-upload", Key=key, Body=body)["ETag"].strip('"')
        event = load_event("s3-object-created")
        event["account"] = HOME
        event["detail"]["object"] = {"key": key, "size": len(body), "etag": etag}
        writes.clear()

        summary = handle_upload(event, policy=policy, deps=ThumbnailDeps(lambda region: bucket))

        # Each thumbnail is written where output_key says, under the output prefix, and names its source
        assert summary["status"] == "written", key
        expected = [output_key(key, rule, size.name, "webp") for size in rule.sizes]
        assert writes == expected, key
        assert all(written.startswith(rule.output_prefix) for written in writes), key
        head = bucket.head_object(Bucket="photos-upload", Key=expected[0])
        assert unquote(head["Metadata"][SOURCE_KEY]) == key
    # And nothing was written anywhere else in the bucket
    stored = [item["Key"] for item in bucket.list_objects_v2(Bucket="photos-upload")["Contents"]]
    assert sorted(key for key in stored if not key.startswith(rule.output_prefix)) == sorted(KEYS)
