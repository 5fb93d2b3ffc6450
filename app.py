"""Chalice wiring only: which event or schedule wakes which bot. Each bot is a package in chalicelib/.

Every handler has one shape: it imports its bot's handlers module when it first runs, not here (every
handler is its own Lambda function, and this way a function loads only the bot it runs;
chalicelib/triggers.py says why that matters), and hands it the event and the container's runtime,
which first checks that the bot is on and its policy valid (chalicelib/runtime.py).
"""

from __future__ import annotations

from typing import Any

from chalice.app import Chalice, CloudWatchEvent, ConvertToMiddleware, EventSourceHandler, Rate, SQSEvent

from chalicelib.bots import FUNCTIONS
from chalicelib.observability import handler_wrappers
from chalicelib.runtime import answer_when_off, current, know_own_account
from chalicelib.settings import Settings
from chalicelib.triggers import (
    DNS_RECONCILE_QUEUE_NAME,
    FLEET_WORKERS,
    SNAPSHOT_QUEUE_NAME,
    SWEEP_QUEUE_NAME,
    LenientCloudWatchEvent,
)

app = Chalice(app_name="opsbots")
for wrapper in handler_wrappers(Settings.from_environ()):
    app.register_middleware(ConvertToMiddleware(wrapper))
app.register_middleware(answer_when_off)  # inside the wrappers: logged with the invocation's context
app.register_middleware(know_own_account)


@app.on_cw_event(FUNCTIONS["on_security_group_change"].event_pattern)
def on_security_group_change(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib.security_groups import handlers

    return handlers.on_security_group_change(event, current().acting_as("on_security_group_change"))


@app.schedule(Rate(1, unit=Rate.HOURS))
def sweep_security_groups(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib.security_groups import handlers

    return handlers.sweep_security_groups(event, current().acting_as("sweep_security_groups"))


@app.on_sqs_message(queue=SWEEP_QUEUE_NAME, batch_size=1, maximum_concurrency=FLEET_WORKERS)
def sweep_worker(event: SQSEvent) -> dict[str, Any]:
    from chalicelib.security_groups import handlers

    return handlers.sweep_worker(event, current().acting_as("sweep_worker"))


@app.on_cw_event(FUNCTIONS["on_instance_state_change"].event_pattern)
def on_instance_state_change(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib.dns import handlers

    return handlers.on_instance_state_change(event, current().acting_as("on_instance_state_change"))


@app.schedule(Rate(1, unit=Rate.HOURS))
def reconcile_dns(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib.dns import handlers

    return handlers.reconcile_dns(event, current().acting_as("reconcile_dns"))


@app.on_sqs_message(queue=DNS_RECONCILE_QUEUE_NAME, batch_size=1, maximum_concurrency=FLEET_WORKERS)
def dns_reconcile_worker(event: SQSEvent) -> dict[str, Any]:
    from chalicelib.dns import handlers

    return handlers.dns_reconcile_worker(event, current().acting_as("dns_reconcile_worker"))


@app.schedule(Rate(1, unit=Rate.HOURS))
def take_snapshots(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib.snapshots import handlers

    return handlers.take_snapshots(event, current().acting_as("take_snapshots"))


@app.on_sqs_message(queue=SNAPSHOT_QUEUE_NAME, batch_size=1)
def snapshot_worker(event: SQSEvent) -> dict[str, Any]:
    from chalicelib.snapshots import handlers

    return handlers.snapshot_worker(event, current().acting_as("snapshot_worker"))


@app.on_cw_event(FUNCTIONS["on_image_uploaded"].event_pattern)
def on_image_uploaded(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib.thumbnails import handlers

    return handlers.on_image_uploaded(event, current().acting_as("on_image_uploaded"))


@app.schedule(Rate(1, unit=Rate.MINUTES))
def check_websites(event: CloudWatchEvent) -> dict[str, Any]:
    from chalicelib.websites import handlers

    return handlers.check_websites(event, current().acting_as("check_websites"))


# Chalice reads the EventBridge envelope with event[...] before any of our code runs; read it leniently
# instead, so an event missing a field is logged and skipped by the bot, not a KeyError (chalicelib/triggers.py).
for function in app.handler_map.values():
    if isinstance(function, EventSourceHandler) and function.event_class is CloudWatchEvent:
        function.event_class = LenientCloudWatchEvent
