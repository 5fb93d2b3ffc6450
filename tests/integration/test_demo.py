"""`make demo` end to end: its chapters in a subprocess, against moto's real HTTP server.

The demo checks every outcome against moto's state itself and exits non-zero on any failed check. With
`--report PATH` it also writes what it observed as JSON (demo/show.py's `Report`): every chapter and scene,
each check under a stable key with its verdict and the state facts it was decided on. These tests assert on
that report: every check passed, each scene made exactly the checks expected here (a check removed is
noticed), and the state each scene left in moto. The timeline's wording is free to change; stdout is asserted
only where the printed text is itself the product (the emails as rendered, the command's own messages).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_plus

import pytest

from tests.support.aws import HOME, MEMBER, ROOT

pytestmark = pytest.mark.integration

DEMO_SECONDS = 60
CHAPTERS = {
    "security-groups": "security_groups",
    "dns": "dns",
    "snapshots": "snapshots",
    "thumbnails": "thumbnails",
    "websites": "websites",
}
PREFIXES = {"security-groups": "sg", "dns": "dns", "snapshots": "snap", "thumbnails": "thumb", "websites": "web"}

# The checks each scene makes, by scene (its method in demo/<chapter>.py): each check's key is
# "<prefix>.<scene>.<name>". A check added to or removed from the demo must be added or removed here.
EMAILED = ("reverted", "revoked", "one_email")
WRITTEN = (  # demo/thumbnails.py check_written: every upload that gets thumbnails
    "written",
    "exactly_these",
    "size_small",
    "size_large",
    "metadata_names_upload",
    "answer_is_moto_state",
    "one_download_two_writes",
)
EXPECTED_CHECKS: dict[str, dict[str, tuple[str, ...]]] = {
    "security-groups": {
        "ssh_to_the_world": (*EMAILED, "email_says_it_all", "exposure"),
        "redelivery": ("reverted_once_emailed", "revoke_ran_again", "no_second_email", "ledger_unchanged"),
        "table_unavailable": (*EMAILED, "outage_logged"),
        "multi_permission_call": ("reverted", "ssh_revoked", "others_stay", "one_email", "email_names_one_rule"),
        "cross_account": (*EMAILED, "member_role", "email_names_account"),
        "exemption": ("exempt_rule_kept", "kept_is_emailed", "far_tag_ignored", "ignored_tag_explained"),
        "prefix_list": ("reverted", "ssh_revoked", "https_stays", "one_email", "email_names_cause"),
        "compliant_egress": ("compliant", "rule_stays", "no_email", "no_ec2_call"),
        "sweep": ("one_violation_reverted", "only_rdp_removed", "earlier_rules_untouched", "one_email", "digest"),
        "organization": ("members", "revoked", "digest"),
    },
    "dns": {
        "estate": ("zones", "only_the_manual_record", "registry_empty"),
        "first_instance": (
            "added",
            "record_a",
            "record_cname",
            "record_ptr",
            "nothing_public",
            "registry",
            "manual_record_unchanged",
            "one_batch_per_zone",
        ),
        "conflict": ("manual_record_survives", "reported", "name_not_claimed", "others_untouched"),
        "duplicates": ("duplicate_changes_nothing", "stale_changes_nothing", "state_as_before"),
        "stop_and_terminate": (
            "stopped_removed",
            "records_and_claims_gone",
            "names_reserved",
            "others_untouched",
            "terminated_changes_nothing",
        ),
        "reconcile": ("counts", "records", "registry", "untagged_ignored", "conflict_again", "others_untouched"),
        "fanned_out": ("queued", "scanned", "workers_only_scan", "written", "others_untouched"),
        "public_name": ("private_names_added", "in_route53_and_registry", "nothing_public", "private_zones_only"),
    },
    "snapshots": {
        "estate": ("by_hand_untagged",),
        "first_run": (
            "both_accounts_ran",
            "one_per_volume",
            "volume_tags_copied",
            "untagged_untouched",
            "by_hand_untouched",
            "nothing_copied_yet",
        ),
        "days": (
            "counts_match",
            "second_run_takes_nothing",
            "never_too_few",
            "nothing_pruned_in_region",
            "newest_copied",
            "dr_keeps_copies",
            "by_hand_survive",
            "untagged_never",
        ),
        "short_retention": ("counts_match", "nothing_taken", "newest_kept", "dr_keeps_copies", "by_hand_survive"),
        "spoofed_golden": ("golden_kept", "foreign_reported", "counts_match"),
        "duplicate_message": ("taken_once", "one_per_volume", "by_hand_survive"),
        "late_run": ("counts_match", "day_snapshot_taken"),
    },
    "thumbnails": {
        "photo": ("moto_event_refused", *WRITTEN, "upright", "no_exif"),
        "iphone": (*WRITTEN, "upright", "colours_in_srgb", "no_profile_no_exif"),
        "transparent": (*WRITTEN, "alpha_kept"),
        "duplicate": ("up_to_date", "no_download", "thumbnails_unchanged", "nothing_written"),
        "corrupt": (
            *(f"broken.{name}" for name in ("rejected", "one_download_one_warning", "nothing_written")),
            *(f"truncated.{name}" for name in ("rejected", "one_download_one_warning", "nothing_written")),
            "no_output",
        ),
        "recursion": (
            "output_ignored",
            "output_no_s3_call",
            "output_nothing_written",
            "copy_ignored",
            "copy_nothing_written",
        ),
        "plus_key": (
            "keys_as_sent",
            "read_as_stored",
            *WRITTEN,
            "no_decoded_name",
            "classic_up_to_date",
            "classic_nothing_written",
        ),
    },
    "websites": {
        "healthy": ("up", "no_email"),
        "maintenance": ("no_email", "state_stood_still"),
        "down": ("after_two_runs", "one_email_why"),
        "recovered": ("up_once", "outage"),
        "guarded": ("both_down", "certificate", "metadata_refused"),
        "status_page": ("states", "uptime", "incident", "self_contained"),
    },
}

SENDER, RECIPIENT = "opsbots@example.com", "security@example.com"
DEFAULT_EGRESS = "all traffic to 0.0.0.0/0"  # every new group's own rule
INTERNAL, PUBLIC, REVERSE = "internal.example.com.", "example.com.", "10.in-addr.arpa."
MANUAL = {"web.internal.example.com. A": {"values": ["10.9.9.9"], "ttl": 300}}  # the record made by hand
VOLUMES = {HOME: ["web-data", "db-data"], MEMBER: ["app-data", "queue-data", "logs-data"]}
PHOTO, HEIC, LOGO = "uploads/summer holiday/été 01.JPG", "uploads/IMG_0042.HEIC", "uploads/logo.png"
PLUS = "uploads/c++ notes/a+b photo.png"


@dataclass(frozen=True)
class Played:
    """One run of `python -m demo --report`: its output and its report, the checks indexed by key."""

    returncode: int
    stdout: str
    stderr: str
    report: dict[str, Any]
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def facts(self, key: str) -> dict[str, Any]:
        facts: dict[str, Any] = self.checks[key]["facts"]
        return facts

    def check_keys(self) -> dict[str, dict[str, set[str]]]:
        """By chapter, then by scene key, the keys of its checks."""
        return {
            chapter["name"]: {scene["key"]: {check["key"] for check in scene["checks"]} for scene in chapter["scenes"]}
            for chapter in self.report.get("chapters", [])
        }


def run_demo(report: Path | None, *chapters: str) -> Played:
    result = subprocess.run(
        [sys.executable, "-m", "demo", *chapters, *(["--report", str(report)] if report else [])],
        cwd=ROOT,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=2 * DEMO_SECONDS,
        check=False,
    )
    data: dict[str, Any] = json.loads(report.read_text(encoding="utf-8")) if report and report.exists() else {}
    checks = {
        check["key"]: check
        for chapter in data.get("chapters", [])
        for scene in chapter["scenes"]
        for check in scene["checks"]
    }
    return Played(result.returncode, result.stdout, result.stderr, data, checks)


def expected_keys(chapter: str) -> dict[str, set[str]]:
    prefix = PREFIXES[chapter]
    return {
        f"{prefix}.{scene}": {f"{prefix}.{scene}.{name}" for name in names}
        for scene, names in EXPECTED_CHECKS[chapter].items()
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Played:
    return run_demo(tmp_path_factory.mktemp("demo") / "report.json")


def record(*values: str, ttl: int = 60) -> dict[str, Any]:
    return {"values": sorted(values), "ttl": ttl}


def reverse(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer + "."


def sg_ids_hidden(descriptions: Iterable[str]) -> list[str]:
    return sorted(re.sub(r"\bsg-[0-9a-f]+", "sg-*", description) for description in descriptions)


# ----- the whole run ----------------------------------------------------------------------------------------


def test_every_check_of_every_chapter_passes(demo: Played) -> None:
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert demo.report["passed"] is True
    assert demo.report["failed"] == []
    assert [(c["name"], c["bot"], c["passed"]) for c in demo.report["chapters"]] == [
        (name, bot, True) for name, bot in CHAPTERS.items()
    ]
    assert all(scene["passed"] for chapter in demo.report["chapters"] for scene in chapter["scenes"])
    assert all(check["passed"] for check in demo.checks.values())
    expected = sum(len(keys) for chapter in CHAPTERS for keys in expected_keys(chapter).values())
    assert demo.report["checks"] == len(demo.checks) == expected
    assert demo.report["endpoint"].startswith("http://127.0.0.1:")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_each_scene_makes_exactly_the_checks_expected(demo: Played, chapter: str) -> None:
    assert demo.check_keys()[chapter] == expected_keys(chapter)


# ----- chapter 1: the security-group guard ------------------------------------------------------------------


def test_ssh_to_the_world_is_revoked_and_reported_once(demo: Played) -> None:
    revoked = demo.facts("sg.ssh_to_the_world.revoked")
    assert demo.facts("sg.ssh_to_the_world.reverted") == {"status": "reverted", "email": "sent"}
    assert revoked["rule"] not in revoked["rules_left"]
    assert list(revoked["rules_left"].values()) == [DEFAULT_EGRESS]
    [email] = demo.facts("sg.ssh_to_the_world.one_email")["emails"]
    assert (email["from"], email["to"]) == (SENDER, [RECIPIENT])
    assert email["subject"] == (
        f"[opsbots] reverted: tcp 22 from 0.0.0.0/0 on {revoked['group']} in {HOME} (home) eu-west-1"
        " — no-admin-ports-from-internet (+1 more)"
    )
    said = demo.facts("sg.ssh_to_the_world.email_says_it_all")
    assert (said["missing"], said["revoked_in_email"]) == ([], [revoked["rule"]])
    assert demo.checks["sg.ssh_to_the_world.exposure"]["passed"]  # the email reports the exposure, in bounds


def test_the_same_event_again_revokes_again_but_emails_once(demo: Played) -> None:
    assert demo.facts("sg.redelivery.reverted_once_emailed") == {
        "first": {"status": "reverted", "email": "sent"},
        "second": {"status": "reverted", "email": "duplicate"},
    }
    assert demo.facts("sg.redelivery.revoke_ran_again")["ec2_calls"] == [
        "DescribeSecurityGroups",
        "RevokeSecurityGroupIngress",
    ]
    assert demo.facts("sg.redelivery.no_second_email")["emails"] == []
    ledger = demo.facts("sg.redelivery.ledger_unchanged")
    # one item: the email of the sample event's id (tests/events/sg-authorize-ingress-ssh-world.json), reverted
    assert (
        ledger["ledger_before"]
        == ledger["ledger_after"]
        == ["notice#sg-event:d2e84a1f-5b6c-9037-e1d4-7a2c8b5f9e03:reverted claimed"]
    )


def test_without_the_run_once_table_the_rule_still_goes_and_the_email_still_goes(demo: Played) -> None:
    revoked = demo.facts("sg.table_unavailable.revoked")
    assert demo.facts("sg.table_unavailable.reverted")["status"] == "reverted"
    assert list(revoked["rules_left"].values()) == [DEFAULT_EGRESS]
    assert len(demo.facts("sg.table_unavailable.one_email")["emails"]) == 1
    assert demo.facts("sg.table_unavailable.outage_logged")["bot_logs"] == [
        {"level": "ERROR", "message": "the email ledger is unavailable: sending without it (at least once)"}
    ]


def test_of_five_permissions_in_one_call_only_ssh_goes(demo: Played) -> None:
    facts = demo.facts("sg.multi_permission_call.others_stay")
    requested, ssh = facts["requested"], facts["ssh_rule"]
    assert demo.facts("sg.multi_permission_call.reverted")["status"] == "reverted"
    assert facts["revoked"] == [ssh]
    assert requested[ssh] == 'tcp 22 from 0.0.0.0/0 "bastion ssh"'
    assert sg_ids_hidden(requested[rule] for rule in facts["kept"]) == [
        'all traffic from 172.16.0.0/12 "corp vpn all traffic"',
        'tcp 0-65535 from 10.0.0.0/8 "internal all tcp"',
        'tcp 443 from 0.0.0.0/0 "public https"',
        "tcp 8080 from sg-*",
    ]
    assert len(demo.facts("sg.multi_permission_call.one_email")["emails"]) == 1
    assert demo.facts("sg.multi_permission_call.email_names_one_rule") == {
        "says_one_rule_broke": True,
        "revoked_in_email": [ssh],
    }


def test_the_member_account_is_reached_through_its_role_in_a_session_named_after_the_function(demo: Played) -> None:
    revoked = demo.facts("sg.cross_account.revoked")
    assert revoked["account"] == MEMBER
    assert list(revoked["rules_left"].values()) == [DEFAULT_EGRESS]
    assert demo.facts("sg.cross_account.member_role")["assumed"] == [
        {
            "role_arn": f"arn:aws:iam::{MEMBER}:role/opsbots-member-security-groups",
            "external_id": "opsbots-demo-external-id",
            "session_name": "opsbots-on_security_group_change",
        }
    ]
    [email] = demo.facts("sg.cross_account.one_email")["emails"]
    assert f"on {revoked['group']} in {MEMBER} (workloads) eu-west-1" in email["subject"]


def test_an_exemption_keeps_its_rule_and_says_so_while_a_far_one_is_ignored(demo: Played) -> None:
    kept, ignored = demo.facts("sg.exemption.exempt_rule_kept"), demo.facts("sg.exemption.far_tag_ignored")
    assert (kept["status"], kept["rule_exists"]) == ("exempt", True)
    assert (ignored["status"], ignored["rule_exists"]) == ("reverted", False)
    emailed = demo.facts("sg.exemption.kept_is_emailed")
    assert [email["subject"].split(":")[0] for email in emailed["emails"]] == [
        "[opsbots] kept (exempt)",
        "[opsbots] reverted",
    ]
    assert emailed["says_until"] is True
    assert demo.facts("sg.exemption.ignored_tag_explained")["ignored_in_emails"] == [
        "opsbots:exempt-until=9999-12-31 ignored: more than max_exemption_days (90) from now"
    ]


def test_a_prefix_list_gaining_the_internet_takes_ssh_but_leaves_https(demo: Played) -> None:
    ssh, https = demo.facts("sg.prefix_list.ssh_revoked"), demo.facts("sg.prefix_list.https_stays")
    assert demo.facts("sg.prefix_list.reverted")["status"] == "reverted"
    assert (ssh["rule_exists"], https["rule_exists"]) == (False, True)
    [email] = demo.facts("sg.prefix_list.one_email")["emails"]
    assert email["subject"].startswith(f"[opsbots] reverted: tcp 22 from prefix list {ssh['prefix_list']} on ")
    assert demo.facts("sg.prefix_list.email_names_cause") == {"says_cause": True, "revoked_in_email": [ssh["rule"]]}


def test_a_compliant_change_is_left_alone_without_a_call_or_an_email(demo: Played) -> None:
    stays = demo.facts("sg.compliant_egress.rule_stays")
    assert demo.facts("sg.compliant_egress.compliant") == {"status": "compliant"}
    assert stays["rules"][stays["rule"]] == 'tcp 25 to 0.0.0.0/0 "smtp relay"'
    assert demo.facts("sg.compliant_egress.no_email")["emails"] == []
    assert demo.facts("sg.compliant_egress.no_ec2_call")["ec2_calls"] == []


def test_the_sweep_revokes_the_rdp_rule_only_and_sends_one_digest(demo: Played) -> None:
    found, removed = demo.facts("sg.sweep.one_violation_reverted"), demo.facts("sg.sweep.only_rdp_removed")
    assert {key: found[key] for key in ("units", "violations", "reverted", "failed_units")} == {
        "units": 2,
        "violations": 1,
        "reverted": 1,
        "failed_units": [],
    }
    assert [kept.split(" ")[0] for kept in found["kept"]] == [
        f"{HOME}/eu-west-1/{demo.facts('sg.exemption.exempt_rule_kept')['rule']}"
    ]
    assert removed["removed"] == [removed["rdp_rule"]]
    untouched = demo.facts("sg.sweep.earlier_rules_untouched")
    assert (len(untouched["watched"]), untouched["missing"]) == (7, [])  # 4 of scene 4, 1 each of scenes 6, 7, 8
    [email] = demo.facts("sg.sweep.one_email")["emails"]
    assert (email["from"], email["to"]) == (SENDER, [RECIPIENT])
    assert email["subject"] == (
        "[opsbots] security-group sweep: 1 violation(s), 0 account failure(s), 1 kept open by exemptions"
    )


# ----- chapter 2: the DNS bot -------------------------------------------------------------------------------


def test_the_estate_holds_three_zones_and_the_record_made_by_hand(demo: Played) -> None:
    assert demo.facts("dns.estate.zones")["zones"] == {INTERNAL: "private", PUBLIC: "public", REVERSE: "private"}
    assert demo.facts("dns.estate.only_the_manual_record")["records"] == {INTERNAL: MANUAL, PUBLIC: {}, REVERSE: {}}
    assert demo.facts("dns.estate.registry_empty")["registry"] == {}


def test_app_1_gets_its_a_cname_and_ptr_records_and_claims_them(demo: Played) -> None:
    added = demo.facts("dns.first_instance.added")
    app1, answer = added["instance"], added["answer"]
    ip, fqdn = app1["private_ip"], "app-1.internal.example.com."
    assert (answer["state"], answer["added"], answer["updated"], answer["removed"], answer["conflicts"]) == (
        "running",
        3,
        0,
        0,
        [],
    )
    assert demo.facts("dns.first_instance.nothing_public")["records"] == {
        INTERNAL: {f"{fqdn} A": record(ip), "api.internal.example.com. CNAME": record(fqdn), **MANUAL},
        PUBLIC: {},
        REVERSE: {f"{reverse(ip)} PTR": record(fqdn)},
    }
    assert demo.facts("dns.first_instance.registry")["registry"] == {
        "app-1": [[reverse(ip), "PTR", fqdn], ["api.internal.example.com.", "CNAME", fqdn], [fqdn, "A", ip]]
    }
    assert demo.facts("dns.first_instance.one_batch_per_zone")["aws_calls"]["route53:ChangeResourceRecordSets"] == 3


def test_a_name_held_by_hand_stays_with_its_holder(demo: Played) -> None:
    survives = demo.facts("dns.conflict.manual_record_survives")
    web, reported = survives["instance"], demo.facts("dns.conflict.reported")
    assert survives["records"][INTERNAL]["web.internal.example.com. A"] == MANUAL["web.internal.example.com. A"]
    assert [conflict.split(" wanted by ")[0] for conflict in reported["answer"]["conflicts"]] == [
        "web.internal.example.com. A"
    ]
    assert f"{MEMBER}/eu-west-1/{web['id']}" in reported["answer"]["conflicts"][0]
    # its PTR would point at a name it does not hold: skipped
    assert [skipped.split(":")[0] for skipped in reported["answer"]["skipped"]] == [f"{reverse(web['private_ip'])} PTR"]
    assert [log["level"] for log in reported["bot_logs"]] == ["WARNING"]
    assert demo.facts("dns.conflict.name_not_claimed")["registry"].keys() == {"app-1"}
    untouched = demo.facts("dns.conflict.others_untouched")
    assert untouched["registry"] == untouched["registry_before"]
    assert untouched["records"] == untouched["records_before"]


def test_a_duplicate_and_a_stale_event_change_nothing(demo: Played) -> None:
    for label in ("duplicate", "stale"):
        facts = demo.facts(f"dns.duplicates.{label}_changes_nothing")
        answer = facts["answer"]
        assert (answer["state"], answer["added"], answer["updated"], answer["removed"], facts["writes"]) == (
            "running",
            0,
            0,
            0,
            [],
        ), label
    after = demo.facts("dns.duplicates.state_as_before")
    assert (after["records_changed"], after["registry_changed"]) == (False, False)


def test_stopping_removes_app_1s_records_and_keeps_its_names_for_its_account(demo: Played) -> None:
    ip = demo.facts("dns.first_instance.added")["instance"]["private_ip"]
    fqdn = "app-1.internal.example.com."
    stopped = demo.facts("dns.stop_and_terminate.stopped_removed")
    assert (stopped["ec2_state"], stopped["answer"]["state"], stopped["answer"]["removed"]) == ("stopped", "stopped", 3)
    assert demo.facts("dns.stop_and_terminate.records_and_claims_gone") == {"leftover_records": [], "claims": []}
    assert demo.facts("dns.stop_and_terminate.names_reserved")["reserved"] == [
        [reverse(ip), "PTR", MEMBER],
        ["api.internal.example.com.", "CNAME", MEMBER],
        [fqdn, "A", MEMBER],
    ]
    left = demo.facts("dns.stop_and_terminate.others_untouched")
    assert left == {"records": {INTERNAL: MANUAL, PUBLIC: {}, REVERSE: {}}, "registry": {}}
    ended = demo.facts("dns.stop_and_terminate.terminated_changes_nothing")
    assert (ended["ec2_state"], ended["answer"]["removed"], ended["writes"], ended["records_changed"]) == (
        "terminated",
        0,
        [],
        False,
    )


def test_the_reconcile_names_db_1_and_not_the_untagged_batch_7(demo: Played) -> None:
    answer = demo.facts("dns.reconcile.counts")["answer"]
    db = demo.facts("dns.reconcile.records")["instance"]
    ip, fqdn = db["private_ip"], "db-1.internal.example.com."
    assert {key: answer[key] for key in ("units", "added", "updated", "removed", "failures")} == {
        "units": 2,
        "added": 2,
        "updated": 0,
        "removed": 0,
        "failures": [],
    }
    assert demo.facts("dns.reconcile.records")["records"] == {
        INTERNAL: {f"{fqdn} A": record(ip), **MANUAL},
        PUBLIC: {},
        REVERSE: {f"{reverse(ip)} PTR": record(fqdn)},
    }
    assert demo.facts("dns.reconcile.registry")["registry"] == {"db-1": [[reverse(ip), "PTR", fqdn], [fqdn, "A", ip]]}
    batch = demo.facts("dns.reconcile.untagged_ignored")["instance"]
    assert batch["name"] == "batch-7"
    assert batch["private_ip"] != ip
    conflicts = demo.facts("dns.reconcile.conflict_again")["conflicts"]
    assert [conflict.split(" wanted by ")[0] for conflict in conflicts] == ["web.internal.example.com. A"]


def test_the_reconcile_fanned_out_scans_in_workers_and_writes_in_the_writer_alone(demo: Played) -> None:
    queued = demo.facts("dns.fanned_out.queued")["answer"]
    assert (queued["queued"], queued["complete"]) == (2, True)
    calls = demo.facts("dns.fanned_out.workers_only_scan")["aws_calls"]
    assert calls["ec2:DescribeInstances"] == 2
    assert not any(call.startswith("route53:") for call in calls)
    written = demo.facts("dns.fanned_out.written")["answer"]
    assert (written["units"], written["added"], written["removed"], written["failures"]) == (2, 2, 0, [])


def test_a_member_instance_with_a_public_address_gets_private_names_only(demo: Played) -> None:
    added = demo.facts("dns.public_name.private_names_added")
    ip, fqdn = added["instance"]["private_ip"], "login.internal.example.com."
    assert (added["answer"]["added"], added["answer"]["conflicts"]) == (3, [])
    records = demo.facts("dns.public_name.in_route53_and_registry")["records"]
    assert records[PUBLIC] == {}
    assert records[INTERNAL][f"{fqdn} A"] == record(ip)
    assert records[INTERNAL]["sso.internal.example.com. CNAME"] == record(fqdn)
    assert records[REVERSE][f"{reverse(ip)} PTR"] == record(fqdn)
    registry = demo.facts("dns.public_name.in_route53_and_registry")["registry"]
    assert sorted(registry) == ["cache-1", "db-1", "login"]
    assert len(registry["login"]) == 3
    public = demo.facts("dns.public_name.nothing_public")
    assert public["public_ip"]
    assert not any(
        public["public_ip"] in found["values"] for zone in public["records"].values() for found in zone.values()
    )
    assert [(log["level"], log["message"]) for log in public["bot_logs"]] == [("WARNING", "record skipped")]
    assert demo.facts("dns.public_name.private_zones_only")["aws_calls"]["route53:ChangeResourceRecordSets"] == 3


# ----- chapter 3: the snapshot bot --------------------------------------------------------------------------


def test_the_snapshot_estate(demo: Played) -> None:
    estate = demo.facts("snap.estate.by_hand_untagged")
    assert estate["volumes"] == VOLUMES
    assert estate["untagged"] == ["scratch"]
    assert [(hand["present"], hand["opsbots_tags"]) for hand in estate["by_hand"].values()] == [(True, [])] * 2


def test_the_first_run_takes_one_tagged_snapshot_per_tagged_volume(demo: Played) -> None:
    ran = demo.facts("snap.first_run.both_accounts_ran")
    assert ran["answer"] == {"units": 2, "taken": 5, "present": 0, "pruned": 0, "copied": 0, "foreign": 0, "failed": []}
    assert ran["tallies"] == {
        HOME: {"taken": 2, "present": 0, "pruned": 0, "copied": 0},
        MEMBER: {"taken": 3, "present": 0, "pruned": 0, "copied": 0},
    }
    taken = demo.facts("snap.first_run.one_per_volume")
    [window] = taken["window"]
    assert sorted((snapshot["account"], snapshot["volume"]) for snapshot in taken["taken"]) == sorted(
        (account, volume) for account, volumes in VOLUMES.items() for volume in volumes
    )
    for snapshot in taken["taken"]:
        tags = snapshot["tags"]
        assert snapshot["region"] == "eu-west-1"
        assert (tags["opsbots:managed"], tags["opsbots:policy"], tags["opsbots:window"]) == ("true", "daily", window)
        assert tags["opsbots:volume"] == snapshot["volume_id"]  # the volume moto says it was taken of
        assert (tags["Name"], tags["Backup"]) == (snapshot["volume"], "daily")  # copy_tags: true
    assert demo.facts("snap.first_run.untagged_untouched")["snapshots_of_untagged"] == 0
    assert all(hand["present"] for hand in demo.facts("snap.first_run.by_hand_untouched")["by_hand"].values())
    assert set(demo.facts("snap.first_run.nothing_copied_yet")["copies_in_dr"].values()) == {0}


def test_ten_days_of_runs_take_copy_and_prune_as_the_policy_says(demo: Played) -> None:
    runs = demo.facts("snap.days.counts_match")["runs"]
    assert len(runs) == 20
    for run in runs:
        for account, volumes in VOLUMES.items():
            n = len(volumes)
            if run["utc"] == "01:00":  # the day's snapshots; day 1 also copies the first run's; DR keeps 3 from day 4
                wanted = {
                    "taken": n,
                    "present": 0,
                    "pruned": n if run["day"] >= 4 else 0,
                    "copied": n if run["day"] == 1 else 0,
                }
            else:  # the same window again: nothing to take, the 01:00 snapshots copied
                wanted = {"taken": 0, "present": n, "pruned": 0, "copied": n}
            assert run["tallies"][account] == wanted, (run["day"], run["utc"], account)
    assert all(demo.facts(f"snap.days.{check}")["runs_failing"] == [] for check in EXPECTED_CHECKS["snapshots"]["days"])
    assert set(demo.facts("snap.days.nothing_pruned_in_region")["snapshots_at_the_end"].values()) == {11}
    assert set(demo.facts("snap.days.dr_keeps_copies")["copies_at_the_end"].values()) == {4}  # 3, and the 02:00 copy
    assert demo.facts("snap.days.untagged_never")["snapshots_of_untagged"] == 0


def test_a_shorter_retention_prunes_to_the_newest_two(demo: Played) -> None:
    assert demo.facts("snap.short_retention.counts_match")["tallies"] == {
        HOME: {"taken": 0, "present": 2, "pruned": 20, "copied": 0},  # 9 per volume, and one DR copy each
        MEMBER: {"taken": 0, "present": 3, "pruned": 30, "copied": 0},
    }
    kept = demo.facts("snap.short_retention.newest_kept")
    assert set(kept["snapshots_before"].values()) == {11}
    assert set(kept["snapshots_after"].values()) == {2}
    assert len(kept["newest_windows"]) == 2
    assert all(windows == kept["newest_windows"] for windows in kept["kept_windows"].values())
    assert set(demo.facts("snap.short_retention.dr_keeps_copies")["copies"].values()) == {3}


def test_a_golden_snapshot_with_copied_tags_is_foreign_and_kept(demo: Played) -> None:
    golden = demo.facts("snap.spoofed_golden.golden_kept")
    assert golden["by_hand"][HOME] == {
        "snapshot": golden["golden"],
        "present": True,
        "opsbots_tags": ["opsbots:managed", "opsbots:policy", "opsbots:volume", "opsbots:window"],
    }
    assert demo.facts("snap.spoofed_golden.foreign_reported")["answer"]["foreign"] == 1
    tallies = demo.facts("snap.spoofed_golden.counts_match")["tallies"]
    assert [tally["pruned"] for tally in tallies.values()] == [0, 0]


def test_a_message_delivered_twice_takes_each_snapshot_once(demo: Played) -> None:
    once = demo.facts("snap.duplicate_message.taken_once")
    assert once["answer"] == {
        "units": 2,
        "taken": 3,
        "present": 3,
        "pruned": 0,
        "copied": 3,
        "foreign": 0,
        "failed": [],
    }
    assert once["tallies"][HOME] == {"taken": 0, "present": 0, "pruned": 0, "copied": 0}
    per_volume = demo.facts("snap.duplicate_message.one_per_volume")
    assert per_volume["taken"] == sorted(VOLUMES[MEMBER])
    assert per_volume["in_the_window"] == dict.fromkeys(VOLUMES[MEMBER], 1)


def test_a_run_late_in_the_day_still_takes_the_days_snapshots(demo: Played) -> None:
    assert demo.facts("snap.late_run.counts_match")["tallies"] == {
        HOME: {"taken": 2, "present": 0, "pruned": 0, "copied": 0},
        MEMBER: {"taken": 3, "present": 0, "pruned": 3, "copied": 0},  # the duplicate message's copies, beyond 3
    }
    late = demo.facts("snap.late_run.day_snapshot_taken")
    assert late["taken"] == 5
    assert late["has_the_window"] == dict.fromkeys([volume for volumes in VOLUMES.values() for volume in volumes], True)


# ----- chapter 4: the thumbnail bot -------------------------------------------------------------------------


def assert_thumbnails(demo: Played, scene: str, upload: str, sizes: dict[str, tuple[int, int]], mode: str) -> None:
    """What check_written saw for `upload`: its two WebP thumbnails, their sizes, and the metadata naming it."""
    key = f"thumb.{scene}"
    folder = "thumbnails/" + upload.removeprefix("uploads/").rpartition(".")[0]
    written = demo.facts(f"{key}.written")
    assert (written["status"], written["upload"]["key"]) == ("written", upload)
    for size, (width, height) in sizes.items():
        thumbnail = demo.facts(f"{key}.size_{size}")["thumbnail"]
        assert thumbnail["key"] == f"{folder}/{size}.webp"
        assert (thumbnail["format"], thumbnail["content_type"], thumbnail["mode"]) == ("WEBP", "image/webp", mode)
        assert (thumbnail["width"], thumbnail["height"]) == (width, height), size
    named = demo.facts(f"{key}.metadata_names_upload")
    for metadata in named["metadata"].values():
        assert unquote(metadata["opsbots-source-key"]) == upload
        assert metadata["opsbots-source-etag"] == named["upload"]["etag"]
        assert metadata["opsbots-source-version"] == named["upload"]["version"]
    io = demo.facts(f"{key}.one_download_two_writes")
    assert io == {"downloads": [upload], "writes": [f"{folder}/small.webp", f"{folder}/large.webp"]}


def test_the_sideways_photo_gets_two_upright_thumbnails_without_exif(demo: Played) -> None:
    refused = demo.facts("thumb.photo.moto_event_refused")
    assert (refused["status"], refused["s3_calls"], refused["new_versions"]) == ("malformed", [], 0)
    assert "eTag" in refused["event_object_fields"]
    assert "etag" not in refused["event_object_fields"]
    assert_thumbnails(demo, "photo", PHOTO, {"small": (192, 256), "large": (1024, 1365)}, "RGB")
    named = demo.facts("thumb.photo.metadata_names_upload")["metadata"]
    assert named["small"]["opsbots-source-key"] == "uploads/summer%20holiday/%C3%A9t%C3%A9%2001.JPG"
    assert demo.facts("thumb.photo.upright")["sky_on_top"] == {"small": True, "large": True}
    assert demo.facts("thumb.photo.no_exif")["exif_tags"] == {"small": 0, "large": 0}


def test_the_iphone_heic_is_turned_once_and_converted_to_srgb(demo: Played) -> None:
    assert_thumbnails(demo, "iphone", HEIC, {"small": (192, 256), "large": (1008, 1344)}, "RGB")
    assert demo.facts("thumb.iphone.upright")["sky_on_top"] == {"small": True, "large": True}
    colours = demo.facts("thumb.iphone.colours_in_srgb")
    for size in ("small", "large"):
        assert colours["distance_to_srgb"][size] <= 10 < colours["distance_to_p3"][size], size
    assert demo.facts("thumb.iphone.no_profile_no_exif") == {
        "icc_profile": {"small": False, "large": False},
        "exif_tags": {"small": 0, "large": 0},
    }


def test_the_transparent_logo_keeps_its_alpha(demo: Played) -> None:
    assert_thumbnails(demo, "transparent", LOGO, {"small": (256, 128), "large": (1024, 512)}, "RGBA")
    assert demo.facts("thumb.transparent.alpha_kept") == {
        size: {"mode": "RGBA", "alpha_kept": True} for size in ("small", "large")
    }


def test_the_same_event_again_writes_nothing(demo: Played) -> None:
    up_to_date = demo.facts("thumb.duplicate.up_to_date")
    assert up_to_date["status"] == "up-to-date"
    assert sorted(up_to_date["current"]) == sorted(up_to_date["wanted"])
    assert [call[0] for call in demo.facts("thumb.duplicate.no_download")["s3_calls"]] == ["HeadObject"] * 2
    unchanged = demo.facts("thumb.duplicate.thumbnails_unchanged")
    assert unchanged["before"] == unchanged["after"]
    assert len(unchanged["after"]) == 2
    assert demo.facts("thumb.duplicate.nothing_written") == {"writes": [], "new_versions": [], "events_from_s3": 0}


@pytest.mark.parametrize(("upload", "reason"), [("broken", "not an image"), ("truncated", "truncated")])
def test_a_file_that_is_not_a_picture_is_rejected_once_and_writes_nothing(
    demo: Played, upload: str, reason: str
) -> None:
    key = f"thumb.corrupt.{upload}"
    rejected = demo.facts(f"{key}.rejected")
    assert (rejected["upload"], rejected["status"]) == (f"uploads/{upload}.jpg", "rejected")
    assert reason in rejected["reason"]
    once = demo.facts(f"{key}.one_download_one_warning")
    assert once["downloads"] == [f"uploads/{upload}.jpg"]
    assert [log["level"] for log in once["bot_logs"]] == ["WARNING"]
    assert demo.facts(f"{key}.nothing_written") == {"writes": [], "new_versions": [], "events_from_s3": 0}


def test_the_bots_own_writes_coming_back_are_ignored(demo: Played) -> None:
    output = demo.facts("thumb.recursion.output_ignored")
    assert (output["status"], output["s3_calls"]) == ("ignored", [])
    assert output["key"].startswith("thumbnails/")
    copy = demo.facts("thumb.recursion.copy_ignored")
    assert (copy["key"], copy["status"]) == ("uploads/copy of small.webp", "ignored")
    assert unquote(copy["metadata"]["opsbots-source-key"]) == PHOTO
    for check in ("output_nothing_written", "copy_nothing_written"):
        assert demo.facts(f"thumb.recursion.{check}") == {"writes": [], "new_versions": [], "events_from_s3": 0}


def test_a_key_with_plus_and_spaces_is_used_as_stored(demo: Played) -> None:
    keys = demo.facts("thumb.plus_key.keys_as_sent")
    assert keys["eventbridge_key"] == PLUS
    assert keys["classic_key"] != PLUS
    assert unquote_plus(keys["classic_key"]) == PLUS
    assert demo.facts("thumb.plus_key.read_as_stored")["downloads"] == [PLUS]
    assert_thumbnails(demo, "plus_key", PLUS, {"small": (256, 192), "large": (800, 600)}, "RGB")
    classic = demo.facts("thumb.plus_key.classic_up_to_date")
    assert classic["status"] == "up-to-date"
    assert [call[0] for call in classic["s3_calls"]] == ["HeadObject"] * 2
    assert demo.facts("thumb.plus_key.no_decoded_name")["thumbnails"] == sorted(
        f"thumbnails/{folder}/{size}.webp"
        for folder in ("summer holiday/été 01", "IMG_0042", "logo", "c++ notes/a+b photo")
        for size in ("small", "large")
    )


# ----- what is printed: the emails as rendered, and the command's own output --------------------------------


def test_the_emails_are_rendered_on_the_timeline(demo: Played) -> None:
    assert "Subject: [opsbots] security-group sweep: 1 violation(s), 0 account failure(s)" in demo.stdout
    assert "KEPT OPEN, not revoked: exempt until" in demo.stdout
    assert "from the change to the revoke." in demo.stdout  # the email's exposure line


def test_the_bots_logs_and_metrics_stay_out_of_the_timeline(demo: Played) -> None:
    assert not [line for line in demo.stdout.splitlines() if line.lstrip().startswith("{")]
    assert demo.stderr == ""


def test_an_unknown_chapter_is_refused() -> None:
    result = run_demo(None, "no-such-chapter")

    assert result.returncode == 2
    assert "known: security-groups, dns, snapshots, thumbnails" in result.stdout


# ----- a chapter alone --------------------------------------------------------------------------------------


@pytest.mark.parametrize("chapter", ["dns", "thumbnails", "websites"])
def test_a_chapter_plays_alone_with_the_same_checks(tmp_path: Path, chapter: str) -> None:
    alone = run_demo(tmp_path / "report.json", chapter)

    assert alone.returncode == 0, alone.stdout + alone.stderr
    assert [(c["number"], c["name"], c["passed"]) for c in alone.report["chapters"]] == [(1, chapter, True)]
    assert alone.check_keys() == {chapter: expected_keys(chapter)}


def test_a_site_down_after_its_maintenance_window_is_announced_once_and_its_recovery_with_the_outage(
    demo: Played,
) -> None:
    assert demo.facts("web.maintenance.no_email")["announced"] == [[], [], []]
    assert demo.facts("web.maintenance.state_stood_still")["states"] == {"shop": {"state": "up", "reason": ""}}
    assert demo.facts("web.down.after_two_runs")["announced"] == [[], ["shop: down"]]
    assert demo.facts("web.down.one_email_why")["subjects"] == ["[opsbots] shop is DOWN: status 500, expected 200-299"]
    assert demo.facts("web.recovered.up_once") == {"announced": ["shop: up"], "subjects": ["[opsbots] shop is UP"]}
    assert demo.facts("web.recovered.outage")["outage_line"] == "shop is UP again after 2 min down"


def test_a_certificate_about_to_expire_and_the_metadata_address_are_down_with_the_reason(demo: Played) -> None:
    subjects = demo.facts("web.guarded.both_down")["subjects"]
    assert [subject.split(":")[0] for subject in subjects] == [
        "[opsbots] metadata is DOWN",
        "[opsbots] secure is DOWN",
    ]
    assert demo.facts("web.guarded.certificate")["subject"].startswith(
        "[opsbots] secure is DOWN: certificate CN=localhost expires in 4 day(s), on "
    )
    assert demo.facts("web.guarded.metadata_refused")["subject"] == (
        "[opsbots] metadata is DOWN: 169.254.169.254 is the instance-metadata address: never checked"
    )


def test_every_run_wrote_the_status_page_with_each_checks_state_its_uptime_and_the_outage(demo: Played) -> None:
    states = demo.facts("web.status_page.states")
    assert states["states"] == {"shop": "up", "secure": "down", "metadata": "down"}
    assert states["summary"] == "2 of 3 down: secure, metadata"
    assert states["published"] == ["published"] * 9  # every run of the chapter
    # 4 good of the 6 runs outside the maintenance window; its 3 runs inside count for nothing, but show their times
    assert demo.facts("web.status_page.uptime") == {"uptime_24h": "66.67%", "sparkline_points": 9}
    incidents = demo.facts("web.status_page.incident")["incidents"]
    assert [incident.split(" down from ")[0] for incident in incidents] == ["secure", "metadata", "shop"]
    assert incidents[2].endswith("(2 min): status 500, expected 200-299")
    assert demo.facts("web.status_page.self_contained")["fetches"] == []


def test_the_sweep_reaches_the_organizations_accounts_under_the_ou_named_and_no_others(demo: Played) -> None:
    members = demo.facts("sg.organization.members")
    ids = members["ids"]
    assert members["members"] == ["shop", "web", "workloads"]
    assert members["ids_found"] == sorted([ids["shop"], ids["web"]])  # not lab (excluded), old (closed), sandbox
    assert demo.facts("sg.organization.revoked") == {"units": 4, "violations": 1, "ssh_left": False}
    assert demo.facts("sg.organization.digest")["subjects"] == [
        "[opsbots] security-group sweep: 1 violation(s), 0 account failure(s), 1 kept open by exemptions"
    ]
