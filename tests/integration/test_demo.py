"""`make demo` end to end: its chapters in a subprocess, against moto's real HTTP server.

The demo checks every outcome against moto's state itself and exits non-zero on any failed check;
this test runs it the way `make demo` does and pins the lines a reader relies on.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

DEMO_SECONDS = 60


def run_demo(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "demo", *arguments],
        cwd=ROOT,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=2 * DEMO_SECONDS,
        check=False,
    )


@pytest.fixture(scope="module")
def demo() -> subprocess.CompletedProcess[str]:
    return run_demo()


def test_every_check_of_every_chapter_passes(demo: subprocess.CompletedProcess[str]) -> None:
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "✘" not in demo.stdout
    assert "✔ chapter security-groups: passed" in demo.stdout
    assert "✔ chapter dns: passed" in demo.stdout
    assert "✔ chapter snapshots: passed" in demo.stdout
    assert "✔ chapter thumbnails: passed" in demo.stdout
    assert "all checks passed in" in demo.stdout


@pytest.mark.parametrize(
    "line",
    [
        "moto's HTTP server listening on http://127.0.0.1:",
        # 1. SSH to the world in the home account
        "alice.devops opens tcp 22 from 0.0.0.0/0",
        "decision: reverted, breaks policy rule no-admin-ports-from-internet",
        "✔ the email says who, what, where, which policy rule and what was done",
        "seconds from the change to the revoke.",
        # 2. the same event again
        "✔ the revoke ran again, unguarded, and was a no-op: the rule was already gone",
        "✔ no second email",
        # 3. the run-once table gone
        "someone deletes the DynamoDB table opsbots-idempotency",
        "✔ the outage is logged (and counted as DedupeUnavailable): at least once, never not at all",
        # 4. five permissions in one call
        '"bastion ssh"',
        "REVOKED",
        "✔ the other four entries stay",
        # 5. the member account, through its role, in a session named after the function
        "(session opsbots-on_security_group_change, ExternalId opsbots-demo-external-id)",
        "✔ the bot reached 222222222222 through its own role/opsbots-member-security-groups with the ExternalId",
        "✔ the email names the member account 222222222222 (workloads)",
        # 6. an exemption: kept and reported; 9999-12-31 ignored
        "KEPT OPEN, not revoked: exempt until",
        "✔ and security is still told: one email saying it was kept, and until when",
        "✔ and its email says why the tag was ignored",
        # 7. a prefix list gains the internet
        "✔ the email names the cause (the list's new entry) and the rule revoked",
        # 8. compliant
        "✔ the handler found it compliant",
        # 9. the sweep
        "Subject: [opsbots] security-group sweep: 1 violation(s), 0 account failure(s)",
        "✔ the compliant rules of the earlier scenes are untouched",
    ],
)
def test_the_security_group_timeline_tells_the_story(demo: subprocess.CompletedProcess[str], line: str) -> None:
    assert line in demo.stdout


@pytest.mark.parametrize(
    "line",
    [
        # 1. the zones in the home account, and a record made by hand
        "Chapter 2: the DNS bot (chalicelib/dns/)",
        "internal.example.com.  ",
        "private, VPC vpc-",
        "someone creates web.internal.example.com. A 10.9.9.9 by hand",
        # 2. app-1 starts in the member account
        "tags Name=app-1, opsbots:dns=yes, opsbots:dns-aliases=api",
        "✔ the handler found app-1 running and added 3 records, no conflict",
        "✔ A app-1.internal.example.com. → 10.20.1.",
        "✔ CNAME api.internal.example.com. → app-1.internal.example.com.",
        ".1.20.10.in-addr.arpa. → app-1.internal.example.com.",
        "✔ the registry holds exactly those 3 for 222222222222/eu-west-1/i-",
        # 3. web's name is taken by the record made by hand
        "✔ the record made by hand survives unchanged: web.internal.example.com. A 10.9.9.9",
        "is held by a record opsbots did not write",
        "the bot logged WARNING",
        # 4. duplicate and stale events
        "✔ duplicate: decided from app-1's current state (running): nothing added, changed or removed",
        "✔ stale: decided from app-1's current state (running): nothing added, changed or removed",
        # 5. stop, then terminate
        "✔ the handler found app-1 stopped and removed its 3 records",
        "✔ terminated: nothing left to remove, nothing else touched",
        "✔ and its 3 names stay reserved for account 222222222222",
        # 6. the reconcile
        "✔ the reconcile reached both accounts and added db-1's 2 records, removed none",
        "✔ no record for batch-7 (no opsbots:dns tag)",
        "counts: 2 account/region unit(s) scanned, added 2, updated 0, removed 0, 1 conflict(s), 0 failure(s)",
        # 7. a member account's instance asks for a public name
        "✔ login gets its 3 private names",
        "(account 222222222222 may not have names in example.com (its accounts:))",
        "✔ nothing in example.com.: it lists no accounts:, so it names the home account's instances only",
    ],
)
def test_the_dns_timeline_tells_the_story(demo: subprocess.CompletedProcess[str], line: str) -> None:
    assert line in demo.stdout


@pytest.mark.parametrize(
    "line",
    [
        # 1. the estate, and the policy as shipped
        "Chapter 3: the snapshot bot (chalicelib/snapshots/)",
        "policy daily: every 24h, volumes tagged Backup=daily",
        "222222222222 (workloads): scratch vol-",
        "someone snapshots web-data by hand in 123456789012: snap-",
        "someone snapshots app-data by hand in 222222222222: snap-",
        # 2. the real handler, no queue
        "EventBridge schedule invokes take_snapshots",
        "take_snapshots answered units 2, taken 5, present 0, pruned 0, copied 0, foreign 0, failed []",
        "✔ each of the 5 tagged volumes has one snapshot, tagged opsbots:managed=true, opsbots:policy=daily",
        "✔ no snapshot of scratch, the volume without the tag",
        "✔ the snapshots made by hand in both accounts are untouched",
        # 3. ten days at 01:00 and 02:00: copies the next hour, DR copies pruned beyond 3
        "taken present pruned copied  taken present pruned copied",
        " 01:00      2       0      2      0      3       0      3      0",
        " 02:00      0       2      0      2      0       3      0      3",
        "✔ on all 20 runs the bot's counts match moto's state",
        "✔ every 02:00 run took nothing: a second run in the same window finds every volume done",
        "✔ no volume ever had fewer than min(7, windows so far) snapshots in eu-west-1",
        "✔ after every 02:00 run, each volume's newest snapshot has a copy in eu-central-1 tagged opsbots:copy-of",
        "✔ eu-central-1 keeps 3 copies per volume",
        "✔ the snapshots made by hand in both accounts survived all 20 runs",
        "✔ scratch (no Backup tag) was never snapshotted",
        # 4. retention {count: 2}
        "take_snapshots answered units 2, taken 0, present 5, pruned 50, copied 0, foreign 0, failed []",
        "✔ each volume keeps exactly its newest 2 snapshots in eu-west-1, pruned down from 11",
        "✔ the snapshots made by hand survive: retention considers only opsbots'",
        # 5. a golden snapshot tagged as opsbots' survives; 6. one SQS message delivered twice
        "✔ the run reports one foreign snapshot",
        "✔ the bot's counts match moto's state: it pruned none of it",
        "work_on answered units 2, taken 3, present 3, pruned 0, copied 3, foreign 0, failed []",
        "✔ the first delivery took 3 snapshots, the second found those 3 done and took nothing",
        "✔ moto holds exactly one snapshot per member volume for the window",
        # 7. a run late in the day still takes the day's snapshot
        "✔ each of the 5 tagged volumes got the day's snapshot",
    ],
)
def test_the_snapshot_timeline_tells_the_story(demo: subprocess.CompletedProcess[str], line: str) -> None:
    assert line in demo.stdout


@pytest.mark.parametrize(
    "line",
    [
        # 1. the photo, stored sideways, and the event moto's S3 itself sent through EventBridge
        "Chapter 4: the thumbnail bot (chalicelib/thumbnails/)",
        "someone uploads s3://photos-upload/uploads/summer holiday/été 01.JPG: a 4000x3000 JPEG",
        "the event moto's S3 sent through EventBridge to opsbots-demo-s3-events:",
        '"key": "uploads/summer holiday/été 01.JPG"',
        "✔ moto's event as sent is refused as malformed (no object.etag): no S3 call, nothing written",
        "on_image_uploaded answered in",
        "written 2 thumbnail(s) from",
        "thumbnails/summer holiday/été 01/small.webp  192x256 ",
        "thumbnails/summer holiday/été 01/large.webp  1024x1365 ",
        "opsbots-source-key: uploads/summer%20holiday/%C3%A9t%C3%A9%2001.JPG",
        "✔ small: a WebP 192x256, inside 256x256, ContentType image/webp",
        "✔ large: a WebP 1024x1365, at most 1024 wide, ContentType image/webp",
        "✔ their metadata names the upload: its key (percent-encoded), ETag and version",
        "✔ both are portrait with the sky on top: the EXIF rotation was applied, clockwise",
        "✔ no EXIF in either: no Orientation to turn them a second time, no GPS position",
        "render (decode once, resize to 2 sizes, encode WebP):",
        # 2. the transparent logo
        "✔ small: a WebP 256x128, inside 256x256, ContentType image/webp",
        "✔ both keep the alpha channel (RGBA): the corner pixel is transparent, the badge's centre opaque",
        # 3. the same event again
        "up-to-date, 2 thumbnail(s) already made from this ETag",
        "✔ no download: one HeadObject per thumbnail, whose metadata names this ETag",
        "✔ both keep their ETag, version and LastModified",
        # 4. not a picture, and a truncated one
        "✔ broken.jpg: rejected, the reason says 'not an image'",
        "✔ truncated.jpg: rejected, the reason says 'truncated'",
        "✔ nothing under thumbnails/broken/ or thumbnails/truncated/",
        # 5. the bot's own writes come back
        "key 'thumbnails/summer holiday/été 01/small.webp')",
        "✔ ignored: the key is under the output prefix thumbnails/",
        "✔ the bot made no S3 call at all",
        "✔ ignored: it carries opsbots' thumbnail metadata, so it is a thumbnail wherever it lies",
        # 6. '+' and spaces
        "'uploads/c++ notes/a+b photo.png'",
        "✔ S3 sent the key raw to EventBridge, form-encoded in the classic notification",
        "✔ the bot read 'uploads/c++ notes/a+b photo.png' exactly as stored, undecoded",
        "thumbnails/c++ notes/a+b photo/large.webp  800x600 ",
        "✔ the classic key, decoded once by the bot, is the same object: up-to-date, no download",
        "✔ nothing written: no write call, no new object version under thumbnails/, no event from S3",
    ],
)
def test_the_thumbnail_timeline_tells_the_story(demo: subprocess.CompletedProcess[str], line: str) -> None:
    assert line in demo.stdout


def test_the_thumbnail_chapter_plays_alone() -> None:
    result = run_demo("thumbnails")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "✔ chapter thumbnails: passed" in result.stdout
    assert "Chapter 1: the thumbnail bot" in result.stdout


def test_the_dns_chapter_plays_alone() -> None:
    result = run_demo("dns")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "✔ chapter dns: passed" in result.stdout
    assert "chapter security-groups" not in result.stdout


def test_the_bots_logs_and_metrics_stay_out_of_the_timeline(demo: subprocess.CompletedProcess[str]) -> None:
    assert not [line for line in demo.stdout.splitlines() if line.lstrip().startswith("{")]
    assert demo.stderr == ""


def test_an_unknown_chapter_is_refused() -> None:
    result = run_demo("no-such-chapter")

    assert result.returncode == 2
    assert "known: security-groups, dns, snapshots, thumbnails" in result.stdout
