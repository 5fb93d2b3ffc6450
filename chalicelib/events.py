"""Raw EventBridge/CloudTrail dicts in, frozen dataclasses out.

Events come from outside and are not trusted: CloudTrail writes empty source families as `{}`,
old events carry no rule ids, ModifySecurityGroupRules is logged in PascalCase, and a forwarded or
hand-written event can be missing anything. Everything odd is turned into `MalformedEventError` or
`IgnoredEvent` here, so a handler logs and skips it instead of crashing the batch or being retried
forever: ids, accounts, regions and ports that cannot name anything real are malformed too, never sent
on to AWS. `triggers.LenientCloudWatchEvent` gets every event this far, even one Chalice could not read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from chalicelib.names import ACCOUNT_ID, REGION_NAME, anchored
from chalicelib.observability import logger, metrics


class SkippedEvent(Exception):  # noqa: N818 - a verdict on an event, not a failure of ours
    """An event a handler logs, counts and skips: never retried, never acted on."""

    status: ClassVar[str]
    metric: ClassVar[str]

    warns: ClassVar[bool] = False

    def __init__(self, event_id: str, reason: str, **subject: str) -> None:
        super().__init__(f"event {event_id}: {reason}")
        self.event_id = event_id
        self.reason = reason
        self.subject = subject  # what the event was about (a key, an instance), for the log line

    def report(self) -> dict[str, Any]:
        """Log and count the skip; the handler returns this summary."""
        summary = {"event_id": self.event_id, **self.subject, "status": self.status, "reason": self.reason}
        (logger.warning if self.warns else logger.info)(f"{self.status} event skipped", extra=summary)
        metrics.add_metric(name=self.metric, unit="Count", value=1)
        return summary


class MalformedEventError(SkippedEvent):
    """The event is not what its type promises."""

    status = "malformed"
    metric = "MalformedEvents"
    warns = True


class IgnoredEvent(SkippedEvent):
    """A well-formed event with nothing to do (a failed call, another API)."""

    status = "ignored"
    metric = "EventsIgnored"


# Checked because they end up in endpoint names and ARNs: an event that names no real account or
# region (forwarded, hand-written, corrupted) is malformed, not a reason to call AWS somewhere odd.
AccountId = Annotated[str, Field(pattern=anchored(ACCOUNT_ID))]
RegionName = Annotated[str, Field(pattern=anchored(REGION_NAME))]


class Lenient(BaseModel):
    # Built on first use, not at import: each Lambda function needs only some models (cold start).
    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)


class Envelope(Lenient):
    id: str
    account: AccountId
    region: RegionName
    time: AwareDatetime  # EventBridge writes UTC ("...Z"); a naive time could not be compared with now
    detail: dict[str, Any]


def id_of(raw: object) -> str:
    return str(raw.get("id", "<no id>")) if isinstance(raw, Mapping) else "<not an object>"


def summary(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"
