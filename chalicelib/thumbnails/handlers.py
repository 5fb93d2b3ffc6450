"""Entry points: what each of this bot's Lambda functions does with its event."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chalicelib.aws import HOME, Target
from chalicelib.events import SkippedEvent
from chalicelib.observability import logger
from chalicelib.thumbnails.decisions import FUNCTION_MEMORY_MB, plan_thumbnails
from chalicelib.thumbnails.events import ObjectCreated, parse_object_created
from chalicelib.thumbnails.executors import S3Thumbnails, make_thumbnails
from chalicelib.thumbnails.policy import ThumbnailsPolicy

if TYPE_CHECKING:
    from chalice.app import CloudWatchEvent
    from mypy_boto3_s3 import S3Client

    from chalicelib.runtime import Runtime


# ---------------------------------------------------------------------------------------------
# Entry point: the bot's work, with what it needs injected (tests call these).
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThumbnailDeps:
    s3_for: Callable[[str], S3Client]  # an S3 client for a region
    memory_mb: int = FUNCTION_MEMORY_MB  # the function's memory: what a decode may take follows from it


def handle_upload(raw: Mapping[str, Any], *, policy: ThumbnailsPolicy, deps: ThumbnailDeps) -> dict[str, Any]:
    """Thumbnails for the upload(s) an S3 event announces; anything odd is logged and skipped."""
    try:
        uploads = parse_object_created(raw)
    except SkippedEvent as skipped:
        return skipped.report()
    outcomes = [_thumbnail(upload, policy, deps) for upload in uploads]
    return outcomes[0] if len(outcomes) == 1 else {"uploads": outcomes}


def _thumbnail(upload: ObjectCreated, policy: ThumbnailsPolicy, deps: ThumbnailDeps) -> dict[str, Any]:
    try:
        plan = plan_thumbnails(upload, policy)
        store = S3Thumbnails(deps.s3_for(upload.region))
        outcome = make_thumbnails(plan, store, policy.limits.max_bytes, policy.limits.max_pixels, deps.memory_mb)
    except SkippedEvent as skipped:
        return skipped.report()
    logger.info("thumbnails", extra=outcome)
    return outcome


# ----- the Lambda function app.py wires: (event, runtime) -> answer ------------------------------


def on_image_uploaded(event: CloudWatchEvent, runtime: Runtime) -> dict[str, Any]:
    return handle_upload(
        event.to_dict(), policy=runtime.policies.of(ThumbnailsPolicy), deps=runtime.built(thumbnail_deps)
    )


def thumbnail_deps(runtime: Runtime) -> ThumbnailDeps:
    clients = runtime.clients
    return ThumbnailDeps(
        lambda region: clients.client("s3", Target(HOME, region)),
        runtime.settings.function_memory_mb or FUNCTION_MEMORY_MB,
    )
