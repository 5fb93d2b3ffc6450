"""The status page as a browser shows it: written by real runs against local sites (S3 in moto), opened from
a file in headless Chromium (Debian's `chromium`, which `make test` installs where it is missing), its DOM
read and its screenshot looked at."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from PIL import Image

from chalicelib.aws import Clients
from chalicelib.outbox import mailer_for
from chalicelib.websites.executors import HttpProber, StateStore, StatusPageStore
from chalicelib.websites.handlers import WebsiteDeps, run_checks
from chalicelib.websites.policy import WebsitesPolicy
from demo.environment import create_table
from demo.status_page import Dom
from demo.web import SITE, http_site
from tests.support.aws import REGION, ROOT
from tests.support.estate import SENDER, Estate

AT = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
BUCKET = "status-browser"
# As the machine notes have it: without the background-networking flags Chromium calls home, and is refused.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
DOWN_RED = (0xCF, 0x22, 0x2E)  # the banner when a check is down


def chromium(profile: Path, *arguments: str) -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("Debian's chromium is not installed: `make test` installs it (make browser)")
    done = subprocess.run(
        [found, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def checks(port: int, api: str) -> WebsitesPolicy:
    return WebsitesPolicy.model_validate(
        {
            "notify": {"email": {"sender": SENDER, "recipients": ["oncall@example.com"]}},
            "defaults": {"timeout": "2s"},
            "checks": [
                {"name": name, "url": f"http://{SITE}:{port}{path}", "allow_private": True}
                for name, path in (("shop", "/health"), ("search", "/slow"), ("api", api))
            ],
            "status_page": {"bucket": BUCKET},
        }
    )


def test_the_status_page_renders_in_a_browser_with_every_check(estate: Estate, tmp_path: Path) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    deps = WebsiteDeps(
        HttpProber(lambda host, port: ["127.0.0.1"]),
        StateStore(boto3.client("dynamodb"), create_table(boto3.client("dynamodb"), "WebsiteStateTable")),
        ROOT / "policies",
        lambda page: StatusPageStore(s3, page.bucket, page.key, page.history_key),
    )
    with http_site(slow=0.05) as (port, _):
        # Given three sites, the api failing from the third run on, checked for six minutes with a status page
        for minute in range(6):
            policy = checks(port, api="/health" if minute < 2 else "/fail")
            mailer = mailer_for("websites", Clients(), None)
            run_checks(policy=policy, deps=deps, mailer=mailer, at=AT + timedelta(minutes=minute))

    page = tmp_path / "index.html"
    page.write_bytes(s3.get_object(Bucket=BUCKET, Key="index.html")["Body"].read())

    # When Chromium opens it
    dom = Dom()
    dom.feed(chromium(tmp_path / "profile", "--dump-dom", page.as_uri()))
    shot = tmp_path / "page.png"
    chromium(tmp_path / "profile", f"--screenshot={shot}", "--window-size=1024,768", page.as_uri())

    # Then every check has its row, its state and a sparkline of its six runs; the outage is an incident
    assert dom.summary == "1 of 3 down: api"
    assert {name: cells[1] for name, cells in dom.rows.items()} == {"shop": "up", "search": "up", "api": "down"}
    assert dom.rows["shop"][3:6] == ["100.00%"] * 3
    assert dom.rows["api"][3] == "33.33%"  # 2 good runs of 6
    assert [len(points.split()) for points in dom.polylines] == [6, 6, 6]
    [incident] = dom.incidents
    assert "api down from 2026-12-02 10:02 UTC, still down: status 500" in " ".join(incident.split())
    # And the screenshot is a page, not a blank: many colours, the red banner among them
    with Image.open(shot) as image:
        pixels = image.convert("RGB")
        colours = pixels.getcolors(maxcolors=1 << 16) or []
        assert pixels.size == (1024, 768)
        assert len(colours) > 20
        assert any(colour == DOWN_RED and count > 1000 for count, colour in colours)
