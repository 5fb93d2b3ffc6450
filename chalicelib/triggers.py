"""What wakes each bot: the event patterns, the queue, and the envelope of every EventBridge event.

app.py reads only this module (and the runtime) when it is imported; each bot's own module is
imported by its handler on first use, so a Lambda function loads the bot it runs and no other
(pydantic's event and policy models are most of the import cost). Keep this module light.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

# Every call that can widen what a security group lets through. ModifyManagedPrefixList changes no group,
# but a group rule that references the list opens to whatever the list gains, and no group event says so.
SECURITY_GROUP_CALLS = frozenset(
    {
        "AuthorizeSecurityGroupIngress",
        "AuthorizeSecurityGroupEgress",
        "ModifySecurityGroupRules",
        "ModifyManagedPrefixList",
    }
)
SNAPSHOT_QUEUE_NAME = "opsbots-snapshots"
SWEEP_QUEUE_NAME = "opsbots-sweep"
DNS_RECONCILE_QUEUE_NAME = "opsbots-dns-reconcile"
# Each fleet run's workers at once, at most (the sweep's, the DNS reconcile's): 3,000 account/regions in 30
# waves, without one hour's run taking all of the account's Lambda concurrency or flooding the home table and STS.
FLEET_WORKERS = 100

# The EventBridge patterns of the event-driven functions (chalicelib/bots.py names which is whose).
SECURITY_GROUP_CHANGE: Final[Mapping[str, Any]] = {
    "source": ["aws.ec2"],
    "detail-type": ["AWS API Call via CloudTrail"],
    "detail": {"eventSource": ["ec2.amazonaws.com"], "eventName": sorted(SECURITY_GROUP_CALLS)},
}
INSTANCE_STATE_CHANGE: Final[Mapping[str, Any]] = {
    "source": ["aws.ec2"],
    "detail-type": ["EC2 Instance State-change Notification"],
}
# What the DNS reconcile's last worker hands the DNS writer (the instance state-change function): the run to apply.
RECONCILE_READY: Final[Mapping[str, Any]] = {"source": ["opsbots.dns"], "detail-type": ["DNS Reconcile Ready"]}
OBJECT_CREATED: Final[Mapping[str, Any]] = {"source": ["aws.s3"], "detail-type": ["Object Created"]}
# S3's classic notification, for a bucket that invokes the function itself rather than through EventBridge.
S3_NOTIFICATION: Final[Mapping[str, Any]] = {"Records": {"eventSource": ["aws:s3"]}}
SCHEDULED: Final[Mapping[str, Any]] = {"source": ["aws.events"], "detail-type": ["Scheduled Event"]}


def matches(pattern: Mapping[str, Any], event: object) -> bool:
    """Whether `event` matches `pattern` as EventBridge matches a rule's: the exact-value lists and nested
    fields these patterns use, where a list in the event matches if any of its items does."""
    if isinstance(event, list):
        return any(matches(pattern, item) for item in event)
    if not isinstance(event, Mapping):
        return False
    for field, wanted in pattern.items():
        value = event.get(field)
        if isinstance(wanted, Mapping):
            if not matches(wanted, value):
                return False
        elif not any(item in wanted for item in (value if isinstance(value, list) else [value])):
            return False
    return True


class LenientCloudWatchEvent:
    """The event object Chalice hands an `on_cw_event` or `schedule` handler, read without trusting it.

    Chalice's own `CloudWatchEvent` reads the nine envelope fields with `event[...]` when Chalice builds
    it, before any middleware or handler runs: an event missing one (hand-written, replayed, forwarded
    by a rule with an input transformer) fails the invocation with a KeyError inside Chalice, which
    EventBridge then retries, and which nothing of ours logs or counts. app.py installs this class as
    those handlers' `event_class`. It has the same attributes (None when the field is missing, any
    value as given) and the same `to_dict()`, the raw event untouched, so the bot's own parser reports
    the event as malformed (log, `MalformedEvents`, skip) like any other.

    Duck-typed rather than a subclass: chalicelib does not import chalice (`opsbots` runs without it),
    and all Chalice and its middleware use is `event_class(event, context)`, `to_dict()` and `context`.
    """

    def __init__(self, event_dict: Any, context: Any) -> None:
        self._event_dict = event_dict
        self.context = context
        fields: Mapping[str, Any] = event_dict if isinstance(event_dict, Mapping) else {}
        self.version: Any = fields.get("version")
        self.account: Any = fields.get("account")
        self.region: Any = fields.get("region")
        self.detail: Any = fields.get("detail")
        self.detail_type: Any = fields.get("detail-type")
        self.source: Any = fields.get("source")
        self.time: Any = fields.get("time")
        self.event_id: Any = fields.get("id")
        self.resources: Any = fields.get("resources")

    def to_dict(self) -> Any:
        return self._event_dict


def delivery_time(event: Any) -> datetime | None:
    """When EventBridge says the event happened (for a schedule: the time the run is for), or None if it
    does not say it in a form to trust; retries of a delivery keep it, so a retried run decides alike."""
    time = getattr(event, "time", None)
    try:
        parsed = datetime.fromisoformat(time) if isinstance(time, str) else None
    except ValueError:
        return None
    return parsed if parsed is not None and parsed.tzinfo is not None else None


def delivery_id(event: Any) -> str | None:
    """The id EventBridge gives a delivery, which its retries keep; None when the event carries no usable one
    (the run then goes unguarded rather than keyed on a value every such event would share)."""
    event_id = getattr(event, "event_id", None)
    return event_id if isinstance(event_id, str) and event_id.strip() else None


def deliveries(record: Any) -> int:
    """How many times SQS has delivered this message, this time included (1 when it does not say)."""
    attributes = record.to_dict().get("attributes", {}) if hasattr(record, "to_dict") else {}
    count = attributes.get("ApproximateReceiveCount") if isinstance(attributes, dict) else None
    return int(count) if isinstance(count, str) and count.isdigit() else 1
