"""Powertools Logger and Metrics shared by every bot, and Tracer only when tracing is on.

Tracer pulls in the X-Ray SDK (~150 ms of imports), so it is built only when `OPSBOTS_TRACING` is
set: a cold start should not pay for tracing nobody reads.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths

from chalicelib.settings import Settings

NAMESPACE = "opsbots"

logger = Logger(service=NAMESPACE)
metrics = Metrics(namespace=NAMESPACE, service=NAMESPACE)

LambdaWrapper = Callable[[Callable[..., Any]], Callable[..., Any]]


def handler_wrappers(settings: Settings) -> list[LambdaWrapper]:
    """Lambda-handler decorators, outermost first, for app.py to register as Chalice middleware."""
    wrappers: list[LambdaWrapper] = [
        partial(logger.inject_lambda_context, correlation_id_path=correlation_paths.EVENT_BRIDGE),
        metrics.log_metrics,
    ]
    if settings.tracing:
        from aws_lambda_powertools import Tracer

        wrappers.append(Tracer(service=NAMESPACE).capture_lambda_handler)
    return wrappers
