"""Give each function of a packaged template what the registry (chalicelib/bots.py) says it runs with.

`chalice package` writes one function and one role per handler; what each needs beyond that follows
from its registry entry, so it is written here rather than kept by hand per function in
deploy/resources.json (which holds the shared resources: tables, queues, alarms):
- its role's name, `<stack>-<function>`, which the member roles' trust policies name exactly;
- its environment: the run-once table for a function that runs once per delivery, and the resources
  its entry names (`Function.resources`: variable -> the resource in deploy/resources.json);
- for a function EventBridge invokes asynchronously: two retries, then the failed-events queue;
- for a queue's worker: the queue, created before the event source mapping that reads it;
- its code: the zip with the imaging libraries for a bot that runs Pillow, else the one without
  (deploy/package_zips.py makes both).
"""

from __future__ import annotations

from typing import Any

from chalicelib.bots import BOT_OF, FUNCTIONS, Function
from chalicelib.settings import IDEMPOTENCY_TABLE
from deploy.package_zips import THUMBNAILS_ZIP

ON_FAILURE: dict[str, Any] = {
    "MaximumRetryAttempts": 2,
    "DestinationConfig": {"OnFailure": {"Type": "SQS", "Destination": {"Fn::GetAtt": ["FailedEventsQueue", "Arn"]}}},
}


def environment(function: Function) -> dict[str, Any]:
    once = {IDEMPOTENCY_TABLE: {"Ref": "IdempotencyTable"}} if function.once_per_delivery else {}
    return once | {variable: {"Ref": resource} for variable, resource in function.resources.items()}


def queues_read_by(resource: dict[str, Any], resources: dict[str, Any]) -> list[str]:
    """The queue resources whose messages the function's SQS event sources read, by the queue's name."""
    arns = [event["Properties"]["Queue"] for event in resource["Properties"].get("Events", {}).values()]
    names = {arn["Fn::Sub"].rsplit(":", 1)[-1] for arn in arns if isinstance(arn, dict) and "Fn::Sub" in arn}
    return sorted(
        name
        for name, queue in resources.items()
        if queue.get("Type") == "AWS::SQS::Queue" and queue["Properties"].get("QueueName") in names
    )


def wire(template: dict[str, Any]) -> dict[str, Any]:
    resources = template["Resources"]
    for function in FUNCTIONS.values():
        resource = resources[function.logical_id]
        properties = resource["Properties"]
        if BOT_OF[function.name].imaging:
            properties["CodeUri"] = f"./{THUMBNAILS_ZIP}"
        if variables := environment(function):
            properties.setdefault("Environment", {}).setdefault("Variables", {}).update(variables)
        if function.trigger == "queue":
            resource["DependsOn"] = queues_read_by(resource, resources)
        else:
            properties["EventInvokeConfig"] = ON_FAILURE
        resources[f"{function.logical_id}Role"]["Properties"]["RoleName"] = {
            "Fn::Sub": f"${{AWS::StackName}}-{function.name}"
        }
    return template
