"""Website-check runs against real local servers, their state in DynamoDB, their emails in SES and their
status page in S3 (moto): DOWN after two failed runs, UP with the outage's length, an overlapping run that
announces nothing, and a page whose history no run erases and whose outage stops no email."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
from mypy_boto3_dynamodb import DynamoDBClient
from mypy_boto3_s3 import S3Client

from chalicelib.aws import Clients
from chalicelib.outbox import mailer_for
from chalicelib.websites.decisions import CheckState
from chalicelib.websites.executors import HttpProber, StateStore, StatusPageStore
from chalicelib.websites.handlers import WebsiteDeps, run_checks
from chalicelib.websites.policy import StatusPage, WebsitesPolicy
from chalicelib.websites.status_page import History, from_json
from demo.web import SITE, http_site
from tests.support.aws import REGION, ROOT
from tests.support.estate import SENDER, Estate, sent_emails
from tests.support.lambdas import Emitted

AT = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
TABLE = "opsbots-websites"
BUCKET = "status-test"
PAGE = StatusPage(bucket=BUCKET, key="status/index.html")


def policy(port: int, path: str, *, page: StatusPage | None = None) -> WebsitesPolicy:
    return WebsitesPolicy.model_validate(
        {
            "notify": {"email": {"sender": SENDER, "recipients": ["oncall@example.com"]}},
            "checks": [{"name": "shop", "url": f"http://{SITE}:{port}{path}", "allow_private": True, "timeout": "2s"}],
            "status_page": page.model_dump() if page else None,
        }
    )


def state_table(dynamodb: DynamoDBClient) -> StateStore:
    dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "check", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "check", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return StateStore(dynamodb, TABLE)


def pages(page: StatusPage) -> StatusPageStore:
    return StatusPageStore(boto3.client("s3"), page.bucket, page.key, page.history_key)


def deps(store: StateStore, status_pages: Callable[[StatusPage], StatusPageStore] = pages) -> WebsiteDeps:
    return WebsiteDeps(HttpProber(lambda host, port: ["127.0.0.1"]), store, ROOT / "policies", status_pages)


def run(
    policy: WebsitesPolicy,
    store: StateStore,
    at: datetime,
    status_pages: Callable[[StatusPage], StatusPageStore] = pages,
) -> dict[str, object]:
    mailer = mailer_for("websites", Clients(), None)
    return run_checks(policy=policy, deps=deps(store, status_pages), mailer=mailer, at=at)


def status_bucket() -> S3Client:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    return s3


def stored_history(s3: S3Client) -> History:
    return from_json(s3.get_object(Bucket=BUCKET, Key=PAGE.history_key)["Body"].read())["shop"]


def test_down_after_two_failed_runs_then_up_with_the_outage(estate: Estate, tmp_path: Path) -> None:
    store = state_table(boto3.client("dynamodb"))
    with http_site() as (port, _):
        # Given a healthy site, then three runs failing with 500, then healthy again
        answers = [
            run(policy(port, path), store, AT + minute * MINUTE)
            for minute, path in enumerate(["/health", "/fail", "/fail", "/fail", "/health"])
        ]

    # Then DOWN is announced on the second failed run, UP on the first good one, nothing in between
    assert [answer["announced"] for answer in answers] == [[], [], ["shop: down"], [], ["shop: up"]]
    subjects = [email.subject for email in sent_emails()]
    assert subjects == ["[opsbots] shop is DOWN: status 500, expected 200-399", "[opsbots] shop is UP"]
    assert "after 3 min down" in sent_emails()[1].body
    assert store.read(["shop"])["shop"].state == "up"


def test_a_run_that_loses_the_race_for_the_state_announces_nothing(estate: Estate) -> None:
    # Given a check one failed run from DOWN, and another run of the same minute that has stored it already
    store = state_table(boto3.client("dynamodb"))
    store.write("shop", CheckState("up", failures=1, since=AT, version=1))
    with http_site() as (port, _):
        slow_run_reads = store.read(["shop"])
        first = run(policy(port, "/fail"), store, AT + MINUTE)
        # When the slower run, which read the state before the first wrote it, tries to store its own
        assert not store.write("shop", CheckState("down", failures=2, since=AT + MINUTE, version=2))

    # Then the change was announced once, by the run that stored it
    assert slow_run_reads["shop"].version == 1
    assert first["announced"] == ["shop: down"]
    assert len(sent_emails()) == 1


def test_each_run_writes_the_status_page_from_a_history_kept_next_to_it(estate: Estate) -> None:
    s3 = status_bucket()
    store = state_table(boto3.client("dynamodb"))
    with http_site() as (port, _):
        # Given a site that fails three runs of five, and a policy with a status page
        answers = [
            run(policy(port, path, page=PAGE), store, AT + minute * MINUTE)
            for minute, path in enumerate(["/health", "/fail", "/fail", "/fail", "/health"])
        ]

    # Then every run wrote the page, and the history holds each run once, with the outage as an incident
    assert [answer["status_page"] for answer in answers] == ["published"] * 5
    history = stored_history(s3)
    assert (history.state, history.since, history.last_run) == ("up", AT + 4 * MINUTE, AT + 4 * MINUTE)
    assert len(history.samples) == 5
    assert history.hours == (("2026-12-02T10", 2, 5),)
    [incident] = history.incidents
    assert (incident.started, incident.ended) == (AT + MINUTE, AT + 4 * MINUTE)
    page = s3.get_object(Bucket=BUCKET, Key=PAGE.key)
    assert page["ContentType"] == "text/html; charset=utf-8"
    html = page["Body"].read().decode()
    assert 'data-check="shop"' in html
    assert "40.00%" in html  # 2 good runs of 5 in the last 24 h
    assert "(3 min)" in html  # the incident's length


def test_a_redelivered_run_is_recorded_in_the_history_once(estate: Estate) -> None:
    s3 = status_bucket()
    store = state_table(boto3.client("dynamodb"))
    with http_site() as (port, _):
        # Given a run, then the same run delivered again, then an older run arriving late
        for at in (AT + MINUTE, AT + MINUTE, AT):
            run(policy(port, "/health", page=PAGE), store, at)

    # Then the history counts one run
    history = stored_history(s3)
    assert (len(history.samples), history.hours, history.last_run) == (1, (("2026-12-02T10", 1, 1),), AT + MINUTE)


class Overlapped(StatusPageStore):
    """A status page another run writes to between this run's read and its write, the first time."""

    def __init__(self, page: StatusPage, other_run: Callable[[], object]) -> None:
        super().__init__(boto3.client("s3"), page.bucket, page.key, page.history_key)
        self.other_run: Callable[[], object] | None = other_run

    def read(self) -> tuple[dict[str, History], str | None]:
        found = super().read()
        other_run, self.other_run = self.other_run, None
        if other_run:
            other_run()
        return found


def test_an_overlapping_run_does_not_erase_the_other_runs_record(estate: Estate) -> None:
    s3 = status_bucket()
    store = state_table(boto3.client("dynamodb"))
    with http_site() as (port, _):
        checks = policy(port, "/health", page=PAGE)
        # Given a slow run for 10:01 that read the history before the run for 10:00 wrote it
        overlapped = Overlapped(PAGE, lambda: run(checks, store, AT))
        answer = run(checks, store, AT + MINUTE, lambda page: overlapped)

    # Then its first write was refused, and it wrote again from the history with both runs
    assert answer["status_page"] == "published"
    history = stored_history(s3)
    assert (len(history.samples), history.hours, history.last_run) == (2, (("2026-12-02T10", 2, 2),), AT + MINUTE)


def test_a_status_page_that_cannot_be_written_stops_no_email(estate: Estate, emitted: Emitted) -> None:
    store = state_table(boto3.client("dynamodb"))
    with http_site() as (port, _):
        # Given a policy whose status page's bucket does not exist, and a site failing two runs
        answers = [run(policy(port, "/fail", page=PAGE), store, AT + minute * MINUTE) for minute in range(2)]

    # Then DOWN was announced all the same, and the page's failures are in the answers and alarmed on
    assert [answer["status_page"] for answer in answers] == ["failed", "failed"]
    assert emitted("StatusPageFailures") == 2
    assert answers[1]["announced"] == ["shop: down"]
    assert [email.subject for email in sent_emails()] == ["[opsbots] shop is DOWN: status 500, expected 200-399"]


def test_a_history_that_is_not_ours_is_started_again(estate: Estate) -> None:
    s3 = status_bucket()
    s3.put_object(Bucket=BUCKET, Key=PAGE.history_key, Body=b'{"shop": {"samples": "<script>"}}')
    store = state_table(boto3.client("dynamodb"))
    with http_site() as (port, _):
        answer = run(policy(port, "/health", page=PAGE), store, AT)

    assert answer["status_page"] == "published"
    assert len(stored_history(s3).samples) == 1
