"""Faults injected through botocore's own event system: a real client stack, nothing patched."""

from __future__ import annotations

from typing import Any

from botocore.awsrequest import AWSResponse


def answer_with_error(client: Any, operation: str, code: str, status: int = 403) -> None:
    """Make every `operation` call on `client` fail with `code`, before anything is sent."""

    def fail(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        parsed = {
            "Error": {"Code": code, "Message": f"injected {code}"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        return AWSResponse("https://injected.invalid", status, {}, None), parsed

    client.meta.events.register(f"before-call.{client.meta.service_model.service_id.hyphenize()}.{operation}", fail)
