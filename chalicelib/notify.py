"""Email notifications: Jinja2 templates rendered to text + HTML and sent with SES v2.

Rule descriptions, tag values and user agents in these emails are written by whoever changed the
resource, so the HTML part is autoescaped and the subject is flattened to one line: a hostile
description must not turn a security email into a phishing page or inject headers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import jinja2
    from mypy_boto3_sesv2 import SESV2Client

    from chalicelib.policy import EmailSettings

SUBJECT_LIMIT = 200
CHALICELIB = Path(__file__).resolve().parent
# The shared templates (what every bot's parked emails say), then each bot's own, in its package's. A
# template's name stays bare (`sg_violation`): parked emails in the outbox name their template.
TEMPLATES = (CHALICELIB / "templates", *sorted(CHALICELIB.glob("*/templates")))


@dataclass(frozen=True)
class Email:
    sender: str
    recipients: tuple[str, ...]
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class Notice:
    """An email as facts: the template to render and a JSON-able context, not the rendered text.

    What the outbox stores when an email cannot be sent (chalicelib/outbox.py): a few kilobytes of facts
    rather than two rendered bodies, and rendered by whichever invocation finally sends it.
    """

    template: str
    sender: str
    recipients: tuple[str, ...]
    subject: str
    facts: Mapping[str, Any]
    delayed_since: str | None = None  # when SES first refused it, for an email sent late from the outbox

    def render(self) -> Email:
        context = {**self.facts, "delayed_since": self.delayed_since}
        return _compose(self.template, self.sender, self.recipients, self.subject, context)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "recipients": list(self.recipients)}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Notice:
        fields = json.loads(text)
        return cls(**{**fields, "recipients": tuple(fields["recipients"])})


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


def one_line(text: str, limit: int = SUBJECT_LIMIT) -> str:
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def render(template: str, *, to: EmailSettings, subject: str, **context: Any) -> Email:
    """Render `templates/<template>.txt.j2` and `.html.j2` into one email from the policy's sender."""
    return _compose(template, to.sender, to.recipients, subject, context)


def notice(template: str, *, to: EmailSettings, subject: str, facts: Mapping[str, Any]) -> Notice:
    """The facts of an email from the policy's sender, to render when it is sent."""
    return Notice(template, to.sender, tuple(to.recipients), one_line(subject), facts)


def page(template: str, **context: Any) -> str:
    """Render `templates/<template>.html.j2` into one HTML document, autoescaped as the emails are."""
    return _environment().get_template(f"{template}.html.j2").render(**context)


def _compose(
    template: str, sender: str, recipients: tuple[str, ...], subject: str, context: Mapping[str, Any]
) -> Email:
    environment = _environment()
    return Email(
        sender=sender,
        recipients=recipients,
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
