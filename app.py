"""Chalice wiring only: which event or schedule wakes which bot. The bots live in chalicelib/.

Each handler imports its bot when it first runs, not here: every handler is its own Lambda function,
and this way a function loads only the bot it runs (chalicelib/triggers.py says why that matters).
"""

from __future__ import annotations

from typing import Any

from chalice.app import Chalice, CloudWatchEvent, ConvertToMiddleware, EventSourceHandler, Rate, SQSEvent

from chalicelib.observability import handler_wrappers
from chalicelib.runtime import answer_when_off, current
from chalicelib.settings import Settings
from chalicelib.triggers import (
    SECURITY_GROUP_CALLS,
    SNAPSHOT_QUEUE_NAME,
    LenientCloudWatchEvent,
    delivery_id,
    delivery_time,
)

app = Chalice(app_name="opsbots")
for wrapper in handler_wrappers(Settings.from_environ()):
    app.register_middleware(ConvertToMiddleware(wrapper))
app.register_middleware(answer_when_off)  # inside the wrappers: logged with the invocation's context


@app.on_cw_event(
    {
        "source": ["aws.ec2"],
        "detail-type": ["AWS API Call via CloudTrail"],
        "detail": {"eventSource": ["ec2.amazonaws.com"], "eventName": sorted(SECURITY_GROUP_CALLS)},
    }
)
def on_security_group_change(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib import sg_guard

    runtime = current().acting_as("on_security_group_change")
    return sg_guard.handle_change(
        event.to_dict(),
        policies=runtime.policies,
        clients=runtime.clients,
        mailer=runtime.mailer(sg_guard.BOT, event.context),
    )


@app.schedule(Rate(1, unit=Rate.HOURS))
def sweep_security_groups(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib import sg_guard

    runtime = current().acting_as("sweep_security_groups")
    return sg_guard.sweep(
        policies=runtime.policies,
        clients=runtime.clients,
        mailer=runtime.mailer(sg_guard.BOT, event.context),
        at=delivery_time(event),
        once=runtime.once(event.context),
        event_id=delivery_id(event),
    )


@app.on_cw_event({"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]})
def on_instance_state_change(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib import dns

    runtime = current().acting_as("on_instance_state_change")
    return dns.handle_state_change(event.to_dict(), policies=runtime.policies, deps=runtime.dns)


@app.schedule(Rate(1, unit=Rate.HOURS))
def reconcile_dns(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib import dns

    runtime = current().acting_as("reconcile_dns")
    return dns.reconcile(policies=runtime.policies, deps=runtime.dns)


@app.schedule(Rate(1, unit=Rate.HOURS))
def take_snapshots(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib import snapshots

    runtime = current().acting_as("take_snapshots")
    return snapshots.take_snapshots(
        policies=runtime.policies.snapshots,
        accounts=runtime.policies.accounts,
        deps=runtime.snapshots,
        mailer=runtime.mailer(snapshots.BOT, event.context),
        now=delivery_time(event),
        once=runtime.once(event.context),
        event_id=delivery_id(event),
    )


@app.on_sqs_message(queue=SNAPSHOT_QUEUE_NAME, batch_size=1)
def snapshot_worker(event: SQSEvent) -> dict[str, Any]:
    from chalicelib import snapshots

    runtime = current().acting_as("snapshot_worker")
    return snapshots.work_on(
        (record.body for record in event),
        policies=runtime.policies.snapshots,
        accounts=runtime.policies.accounts,
        deps=runtime.snapshots,
        mailer=runtime.mailer(snapshots.BOT, event.context),
        once=runtime.once(event.context),
    )


@app.on_cw_event({"source": ["aws.s3"], "detail-type": ["Object Created"]})
def on_image_uploaded(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib import thumbnails

    runtime = current().acting_as("on_image_uploaded")
    return thumbnails.handle_upload(event.to_dict(), policy=runtime.policies.thumbnails, deps=runtime.thumbnails)


# Chalice reads the EventBridge envelope with event[...] before any of our code runs; read it leniently
# instead, so an event missing a field is logged and skipped by the bot, not a KeyError (chalicelib/triggers.py).
for function in app.handler_map.values():
    if isinstance(function, EventSourceHandler) and function.event_class is CloudWatchEvent:
        function.event_class = LenientCloudWatchEvent
