"""A fake AWS environment and moto's HTTP server; nothing here may ever reach real AWS.

`fake_aws()` must run before boto3, moto or the app are imported: Powertools reads its log level
when the app's logger is built, and boto3 must never see a real profile or real credentials.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from chalicelib import settings

REGION = "eu-west-1"
HOME = "123456789012"  # moto's default account: the Lambda's own account in the demo
MEMBER = "222222222222"  # the member account listed in policies/accounts.yml

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
    # Keep the timeline readable: the bots' JSON logs only from WARNING up, no EMF metric blobs.
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_DEV": "false",
}
# Anything that could send botocore elsewhere or make the bots read another policy or table.
CLEARED = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_LAMBDA_FUNCTION_NAME",
    # All of opsbots' but the cut service models' folder, which a parent process wrote for its children (below).
    *(variable for variable in settings.VARIABLES if variable != settings.SERVICE_MODELS),
)


def fake_aws() -> None:
    for variable in CLEARED:
        os.environ.pop(variable, None)
    os.environ.update(FAKE_AWS)
    route53_as_aws()
    cut_service_models()


def cut_service_models() -> None:
    """The bots' clients read the cut service models `make package` ships (deploy/service_models.py), as deployed,
    written once into a folder of their own for this process and the processes it starts (a bench's workers find
    it in their environment). A call the cut leaves out fails here as it would on Lambda: in the tests, the demo
    and the benchmarks."""
    from deploy.service_models import write

    written = os.environ.get(settings.SERVICE_MODELS)
    if written and Path(written).is_dir():
        return
    folder = Path(tempfile.mkdtemp(prefix="opsbots-service-models-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    write(folder)
    os.environ[settings.SERVICE_MODELS] = str(folder)


def route53_as_aws() -> None:
    """moto's Route53 applies a CREATE over a record it already holds with other values, and a CNAME beside other
    records at one name: Route53 refuses both (InvalidChangeBatch), and the DNS bot counts on that to never
    overwrite a record it did not write. This answers such a change batch as Route53 does, before it is sent,
    from moto's own state (no API call, so no call counted): registered, as moto registers its own interception,
    on every botocore session made from now on, in the tests, the demo and the benchmarks alike."""
    import botocore.handlers

    for handler in (
        ("before-parameter-build.route53.ChangeResourceRecordSets", _keep_the_changes),
        ("before-call.route53.ChangeResourceRecordSets", _refused_as_by_route53),
    ):
        if handler not in botocore.handlers.BUILTIN_HANDLERS:
            botocore.handlers.BUILTIN_HANDLERS.append(handler)


_CHANGES = "opsbots-route53-changes"


def _keep_the_changes(params: Mapping[str, Any], context: dict[str, Any], **_: Any) -> None:
    context[_CHANGES] = dict(params)  # the call's parameters, for its before-call (which sees the request body)


def _refused_as_by_route53(context: Mapping[str, Any], **_: Any) -> tuple[Any, dict[str, Any]] | None:
    from botocore.awsrequest import AWSResponse, HTTPHeaders
    from moto.route53.models import route53_backends

    params = context[_CHANGES]
    zone_id = str(params["HostedZoneId"]).rsplit("/", 1)[-1]
    zones = (route53_backends[account]["aws"].zones.get(zone_id) for account in list(route53_backends))
    zone = next((found for found in zones if found is not None), None)
    if zone is None:
        return None  # moto answers for a zone it does not know
    for change in params["ChangeBatch"]["Changes"]:
        wanted = change["ResourceRecordSet"]
        name, kind = wanted["Name"].rstrip(".").lower() + ".", wanted["Type"]
        clash = next(
            (
                existing
                for existing in zone.rrsets
                if existing.name.rstrip(".").lower() + "." == name
                and (existing.type == kind or "CNAME" in (existing.type, kind))
            ),
            None,
        )
        if change["Action"] == "CREATE" and clash is not None:
            message = (
                f"[Tried to create resource record set [name='{name}', type='{kind}'] but it already exists]"
                if clash.type == kind
                else f"[RRSet of type {kind} with DNS name {name} is not permitted as it conflicts with other records "
                f"with the same DNS name in zone {zone.name}]"
            )
            error = {
                "Error": {"Code": "InvalidChangeBatch", "Message": message},
                "ResponseMetadata": {"HTTPStatusCode": 400},
            }
            return AWSResponse("https://route53.invalid", 400, HTTPHeaders(), None), error
    return None


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's threaded HTTP server on a free port of 127.0.0.1; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        yield endpoint
    finally:
        os.environ.pop("AWS_ENDPOINT_URL", None)
        server.stop()


# What CreateTable takes of an AWS::DynamoDB::Table's properties (the rest is settings moto ignores).
_CREATE_TABLE_FIELDS = ("TableName", "KeySchema", "AttributeDefinitions", "GlobalSecondaryIndexes", "BillingMode")


def declared(logical_id: str) -> dict[str, Any]:
    """A resource as deploy/resources.json declares it: its Type and Properties."""
    resources = json.loads((Path(__file__).parent.parent / "deploy" / "resources.json").read_text())["Resources"]
    resource: dict[str, Any] = resources[logical_id]
    return resource


def create_table(dynamodb: Any, logical_id: str) -> str:
    """Create a table exactly as deploy/resources.json declares it (`IdempotencyTable`, `DnsRegistryTable`, ...),
    so the demo, tests and benchmarks run against the shape that is deployed; returns its name."""
    properties = declared(logical_id)["Properties"]
    dynamodb.create_table(**{key: properties[key] for key in _CREATE_TABLE_FIELDS if key in properties})
    return str(properties["TableName"])


def sqs_event(message: Mapping[str, Any], queue_name: str) -> dict[str, Any]:
    """The event Lambda's SQS poller hands a function for one received message (batch size 1)."""
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {"ApproximateReceiveCount": "1"}),
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:{HOME}:{queue_name}",
                "awsRegion": REGION,
            }
        ]
    }
