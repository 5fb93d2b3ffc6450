"""Chapter 5: the website checks, against real HTTP and HTTPS servers on 127.0.0.1.

A shop that is healthy, breaks inside a maintenance window (nothing is said), is still broken when
the window ends (DOWN, after two failed runs, saying why), then recovers (UP, with how long it was
down); then a site whose certificate expires in five days, and a check pointed at the
instance-metadata address, which is refused without a packet sent; last, the status page every run
wrote to S3, copied to a local file to open. Each run is the one-minute schedule's event for its
minute, handled by `check_websites` through the app; every state is read back from DynamoDB, every
email from SES and the page from S3.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from demo import show
from demo.stage import ROOT, SENDER, WEBSITES_TABLE, Stage, own_policies, read_policies
from demo.status_page import Dom
from demo.web import Traffic, http_site, https_site

if TYPE_CHECKING:
    from moto.ses.models import Message

FUNCTION = "check_websites"
RECIPIENT = "oncall@example.com"
STATUS_BUCKET = "opsbots-demo-status"
STATUS_PAGE = ROOT / "build" / "demo" / "status.html"  # where the demo leaves the page, to open in a browser


@dataclass
class WebsitesChapter:
    stage: Stage
    workdir: Path
    shop: Traffic
    shop_port: int
    secure_port: int
    ca: Path
    # The first run's minute: now, as the certificate's days left are counted from the run's time.
    start: datetime = field(default_factory=lambda: datetime.now(UTC).replace(second=0, microsecond=0))
    minute: int = 0
    emails_seen: int = 0
    answers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def window(self) -> tuple[datetime, datetime]:
        """The shop's maintenance window: the second to the fourth run."""
        return self.start + timedelta(minutes=1), self.start + timedelta(minutes=4)

    def play(self) -> bool:
        self.emails_seen = len(self.stage.emails())  # the earlier chapters' are theirs
        scenes: Sequence[tuple[str, Callable[[], bool]]] = (
            ("the shop answers: its first run finds it up, and says nothing", self.healthy),
            ("the shop breaks inside its maintenance window: nothing is said", self.maintenance),
            ("the window ends and the shop is still broken: DOWN after two failed runs", self.down),
            ("the shop recovers: UP, with how long it was down", self.recovered),
            ("a certificate that expires in five days, and a check aimed at the metadata address", self.guarded),
            ("the status page every run wrote: states, uptimes, response times, the shop's outage", self.status_page),
        )
        return show.play_scenes("web", scenes)

    # ----- the world ------------------------------------------------------------------------------

    def policies(self, *checks: str) -> None:
        """policies/ as shipped, with websites.yml holding `checks` (YAML flow mappings), read by a new container."""
        folder = self.workdir / "policies"
        folder.mkdir(exist_ok=True)
        for shipped in (ROOT / "policies").glob("*.yml"):
            (folder / shipped.name).write_text(shipped.read_text())
        (folder / "ca.pem").write_text(self.ca.read_text())
        start, end = (moment.strftime("%Y-%m-%dT%H:%M:%SZ") for moment in self.window)
        (folder / "websites.yml").write_text(
            f"notify: {{email: {{sender: {SENDER}, recipients: [{RECIPIENT}]}}}}\n"
            "defaults: {failure_threshold: 2, timeout: 5s}\n"
            "checks:\n" + "".join(f"  - {check}\n" for check in checks) + "maintenance:\n"
            f'  - {{checks: [shop], start: "{start}", end: "{end}"}}\n'
            f"status_page: {{bucket: {STATUS_BUCKET}, key: index.html}}\n"
        )
        read_policies(folder)

    def shop_check(self) -> str:
        return (
            f"{{name: shop, url: 'http://localhost:{self.shop_port}/health', allow_private: true, "
            "expect: {status: ['200-299'], body_contains: ok}}"
        )

    def run(self) -> dict[str, Any]:
        """The one-minute schedule's next run, through the app."""
        at = self.start + timedelta(minutes=self.minute)
        self.minute += 1
        event = {
            "version": "0",
            "id": f"demo-websites-{at:%H%M}",
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": self.stage.home.id,
            "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": "eu-west-1",
            "resources": [],
            "detail": {},
        }
        answer = self.stage.invoke(FUNCTION, event)
        announced = ", ".join(answer.get("announced", [])) or "nothing"
        show.step(f"{at:%H:%M} run: {answer.get('checks')} check(s), {answer.get('down')} down; announced {announced}")
        self.answers.append(answer)
        return answer

    def states(self) -> dict[str, dict[str, str]]:
        pages = self.stage.dynamodb.get_paginator("scan").paginate(TableName=WEBSITES_TABLE)
        return {
            item["check"]["S"]: {"state": item["state"]["S"], "reason": item["reason"]["S"]}
            for page in pages
            for item in page["Items"]
        }

    def new_emails(self) -> list[Message]:
        emails = self.stage.emails()[self.emails_seen :]
        self.emails_seen += len(emails)
        for email in emails:
            show.step(f"SES accepted an email from {email.source} to {', '.join(email.destinations['ToAddresses'])}")
            show.note(f"Subject: {email.subject}")
            show.note(show.quoted(show.html_as_text(email.body)))
        return emails

    # ----- the scenes -----------------------------------------------------------------------------

    def healthy(self) -> bool:
        self.policies(self.shop_check())
        answer = self.run()
        key, checks = "web.healthy", show.Checks()
        states = self.states()
        checks.that(
            states.get("shop", {}).get("state") == "up",
            "the shop is up in DynamoDB",
            f"{states}",
            key=f"{key}.up",
            facts={"states": states},
        )
        emails = self.new_emails()
        checks.that(
            not emails and answer.get("announced") == [],
            "no email: nothing changed that anyone needs to hear",
            key=f"{key}.no_email",
            facts={"emails": len(emails), "announced": answer.get("announced")},
        )
        return checks.ok

    def maintenance(self) -> bool:
        self.shop.failing = True
        show.step(
            f"the shop starts answering 500; its maintenance window runs {self.window[0]:%H:%M}-{self.window[1]:%H:%M}"
        )
        answers = [self.run() for _ in range(3)]
        key, checks = "web.maintenance", show.Checks()
        emails = self.new_emails()
        checks.that(
            not emails,
            "no email during the window, though three runs failed",
            f"{len(emails)} sent",
            key=f"{key}.no_email",
            facts={"announced": [a.get("announced") for a in answers]},
        )
        states = self.states()
        checks.that(
            states.get("shop", {}).get("state") == "up",
            "the state stood still: still up in DynamoDB",
            f"{states}",
            key=f"{key}.state_stood_still",
            facts={"states": states},
        )
        return checks.ok

    def down(self) -> bool:
        first, second = self.run(), self.run()
        key, checks = "web.down", show.Checks()
        checks.that(
            first.get("announced") == [] and second.get("announced") == ["shop: down"],
            "DOWN announced on the second failed run after the window, not the first",
            f"{first.get('announced')} then {second.get('announced')}",
            key=f"{key}.after_two_runs",
            facts={"announced": [first.get("announced"), second.get("announced")]},
        )
        emails = self.new_emails()
        subjects = [email.subject for email in emails]
        checks.that(
            subjects == ["[opsbots] shop is DOWN: status 500, expected 200-299"],
            "one email, saying why: the status and what was expected",
            f"{subjects}",
            key=f"{key}.one_email_why",
            facts={"subjects": subjects, "to": [RECIPIENT]},
        )
        return checks.ok

    def recovered(self) -> bool:
        self.shop.failing = False
        show.step("the shop answers again")
        answer = self.run()
        key, checks = "web.recovered", show.Checks()
        emails = self.new_emails()
        body = show.html_as_text(emails[0].body) if emails else ""
        checks.that(
            answer.get("announced") == ["shop: up"] and len(emails) == 1,
            "UP announced, once",
            f"{answer.get('announced')}, {len(emails)} email(s)",
            key=f"{key}.up_once",
            facts={"announced": answer.get("announced"), "subjects": [email.subject for email in emails]},
        )
        checks.that(
            "after 2 min down" in body,
            "the email says how long it was down: from its first failed run",
            body,
            key=f"{key}.outage",
            facts={"outage_line": next((line for line in body.splitlines() if "after" in line), "")},
        )
        return checks.ok

    def guarded(self) -> bool:
        self.policies(
            self.shop_check(),
            f"{{name: secure, url: 'https://localhost:{self.secure_port}/health', allow_private: true, "
            "ca_bundle: ca.pem, expect: {certificate_days: 14}}",
            "{name: metadata, url: 'http://169.254.169.254/latest/meta-data/', allow_private: true}",
        )
        answers = [self.run(), self.run()]
        key, checks = "web.guarded", show.Checks()
        emails = self.new_emails()
        subjects = sorted(email.subject for email in emails)
        checks.that(
            answers[1].get("announced") == ["secure: down", "metadata: down"] and len(emails) == 2,
            "both DOWN on the second run, one email each",
            f"{answers[1].get('announced')}",
            key=f"{key}.both_down",
            facts={"subjects": subjects},
        )
        secure = next((subject for subject in subjects if "secure" in subject), "")
        checks.that(
            "certificate CN=localhost expires in 4 day(s)" in secure,
            "the certificate's subject and days left, from the handshake itself",
            secure,
            key=f"{key}.certificate",
            facts={"subject": secure},
        )
        metadata = next((subject for subject in subjects if "metadata" in subject), "")
        checks.that(
            "169.254.169.254 is the instance-metadata address: never checked" in metadata,
            "the metadata address refused, whatever allow_private says",
            metadata,
            key=f"{key}.metadata_refused",
            facts={"subject": metadata},
        )
        return checks.ok

    def status_page(self) -> bool:
        page = self.stage.s3.get_object(Bucket=STATUS_BUCKET, Key="index.html")
        html = page["Body"].read().decode()
        STATUS_PAGE.parent.mkdir(parents=True, exist_ok=True)
        STATUS_PAGE.write_text(html, encoding="utf-8")
        show.step(f"every run wrote s3://{STATUS_BUCKET}/index.html; a copy to open in a browser:")
        show.note(f"  {STATUS_PAGE.as_uri()}")
        dom = Dom()
        dom.feed(html)
        states = {name: cells[1] for name, cells in dom.rows.items()}
        key, checks = "web.status_page", show.Checks()
        checks.that(
            states == {"shop": "up", "secure": "down", "metadata": "down"}
            and dom.summary == "2 of 3 down: secure, metadata",
            "every check with its state, the banner naming the ones down",
            f"{dom.summary}; {states}",
            key=f"{key}.states",
            facts={"states": states, "summary": dom.summary, "published": [a.get("status_page") for a in self.answers]},
        )
        shop_uptime = dom.rows.get("shop", ["", "", "", ""])[3]
        checks.that(
            shop_uptime == "66.67%",
            "the shop's 24 h uptime: 4 good of the 6 runs outside its window; the 3 inside count for nothing",
            shop_uptime,
            key=f"{key}.uptime",
            facts={
                "uptime_24h": shop_uptime,
                "sparkline_points": len(dom.polylines[0].split()) if dom.polylines else 0,
            },
        )
        outage = [" ".join(text.split()) for text in dom.incidents if text.strip().startswith("shop")]
        checks.that(
            len(outage) == 1 and "(2 min)" in outage[0],
            "the shop's outage is an incident, from its first failed run after the window, 2 min long",
            f"{outage}",
            key=f"{key}.incident",
            facts={"incidents": [" ".join(text.split()) for text in dom.incidents]},
        )
        checks.that(
            not dom.fetches,
            "self-contained: no script, style, font or image fetched from anywhere",
            f"{dom.fetches}",
            key=f"{key}.self_contained",
            facts={"fetches": dom.fetches, "bytes": len(html.encode())},
        )
        return checks.ok


def run(stage: Stage) -> bool:
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="opsbots-demo-websites-")))
        shop_port, shop = stack.enter_context(http_site())
        secure_port, _, ca = stack.enter_context(https_site(workdir, leaf_days=5, site="localhost"))
        stage.s3.create_bucket(Bucket=STATUS_BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        stack.enter_context(own_policies())
        return WebsitesChapter(stage, workdir, shop, shop_port, secure_port, ca).play()
