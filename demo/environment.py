"""A fake AWS environment and moto's HTTP server; nothing here may ever reach real AWS.

`fake_aws()` must run before boto3, moto or the app are imported: Powertools reads its log level
when the app's logger is built, and boto3 must never see a real profile or real credentials.
"""

from __future__ import annotations

import json
import logging
import os
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
    *settings.VARIABLES,
)


def fake_aws() -> None:
    for variable in CLEARED:
        os.environ.pop(variable, None)
    os.environ.update(FAKE_AWS)


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
