"""What a test sees of a function as Lambda runs it: the context object it is handed, the metrics it emits,
and the calls it makes through its own clients."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from chalicelib.aws import Target
from chalicelib.observability import metrics
from chalicelib.runtime import current


class LambdaContext:
    """The parts of Lambda's context object the run-once guard reads."""

    function_name = "opsbots-test"
    aws_request_id = "c0ffee00-0000-4000-8000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@dataclass
class Emitted:
    """Metrics the bots emitted: flushed by the Lambda middleware (EMF lines on stdout) or still buffered."""

    capsys: pytest.CaptureFixture[str]
    flushed: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, name: str) -> float:
        out = self.capsys.readouterr().out
        self.flushed += [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]
        values = [line.get(name, []) for line in self.flushed]
        flushed = sum(sum(v) if isinstance(v, list) else v for v in values)
        return float(flushed + sum(metrics.metric_set.get(name, {}).get("Value", [])))


def calls_to(operation: str, target: Target) -> list[dict[str, Any]]:
    """Record the parameters of every call the bot makes to `operation` through its own client."""
    service, name = operation.split(".")
    seen: list[dict[str, Any]] = []
    client = current().clients.client(service, target)  # type: ignore[call-overload]
    client.meta.events.register(f"provide-client-params.{service}.{name}", lambda params, **_: seen.append(params))
    return seen
