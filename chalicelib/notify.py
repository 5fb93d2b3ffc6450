"""Email notifications: Jinja2 templates rendered to text + HTML and sent with SES v2.

Rule descriptions, tag values and user agents in these emails are written by whoever changed the
resource, so the HTML part is autoescaped and the subject is flattened to one line: a hostile
description must not turn a security email into a phishing page or inject headers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.observability import logger, metrics

if TYPE_CHECKING:
    import jinja2
    from mypy_boto3_sesv2 import SESV2Client

    from chalicelib.policy import EmailSettings

SUBJECT_LIMIT = 200
TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass(frozen=True)
class Email:
    sender: str
    recipients: tuple[str, ...]
    subject: str
    text: str
    html: str


class Notifier(Protocol):
    def send(self, email: Email) -> str:
        """Deliver the email and return the provider's message id."""
        ...


class SesNotifier:
    def __init__(self, ses: SESV2Client) -> None:
        self._ses = ses

    def send(self, email: Email) -> str:
        response = self._ses.send_email(
            FromEmailAddress=email.sender,
            Destination={"ToAddresses": list(email.recipients)},
            Content={
                "Simple": {
                    "Subject": {"Data": email.subject, "Charset": "UTF-8"},
                    "Body": {
                        "Text": {"Data": email.text, "Charset": "UTF-8"},
                        "Html": {"Data": email.html, "Charset": "UTF-8"},
                    },
                }
            },
        )
        return response.get("MessageId", "")


def send_report(notifier: Notifier, email: Email) -> str | None:
    """Send a run's report; a failure is logged and counted, not raised.

    Not retried: a re-run would find the work done and have nothing left to report, while the
    findings are already in the log lines, and `NotificationFailures` is there to alarm on.
    """
    try:
        return notifier.send(email)
    except (ClientError, BotoCoreError) as error:
        logger.error("report email failed", extra={"subject": email.subject, "reason": str(error)})
        metrics.add_metric(name="NotificationFailures", unit="Count", value=1)
        return None


def one_line(text: str, limit: int = SUBJECT_LIMIT) -> str:
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def render(template: str, *, to: EmailSettings, subject: str, **context: Any) -> Email:
    """Render `templates/<template>.txt.j2` and `.html.j2` into one email from the policy's sender."""
    environment = _environment()
    return Email(
        sender=to.sender,
        recipients=to.recipients,
        subject=one_line(subject),
        text=environment.get_template(f"{template}.txt.j2").render(**context),
        html=environment.get_template(f"{template}.html.j2").render(**context),
    )


@cache
def _environment() -> jinja2.Environment:
    # Imported on first email, not at cold start: a compliant event never renders anything.
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
