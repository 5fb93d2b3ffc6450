"""Executors: the only code of this bot that talks to AWS (or, for a dry run, prints)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote

from botocore.exceptions import ClientError

from chalicelib.aws import error_code
from chalicelib.events import IgnoredEvent
from chalicelib.observability import logger, metrics
from chalicelib.thumbnails.decisions import (
    FUNCTION_MEMORY_MB,
    SOURCE_ETAG,
    SOURCE_KEY,
    SOURCE_MODIFIED,
    WRITE_ATTEMPTS,
    Dimensions,
    Existing,
    Plan,
    Refused,
    RejectedUpload,
    Write,
    Writes,
    _parse_time,
    after_refused_write,
    decode_budget,
    made_from_a_later_upload,
    thumbnail_metadata,
    to_write,
)
from chalicelib.thumbnails.events import ObjectCreated

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from chalicelib.thumbnails.imaging import Rendered


# ---------------------------------------------------------------------------------------------
# Executors.
# ---------------------------------------------------------------------------------------------


def _unquoted(etag: str) -> str:
    return etag.strip('"')


_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
_PRECONDITION_FAILED = frozenset({"412", "PreconditionFailed"})


class S3Thumbnails:
    """Reads uploads and writes thumbnails with one injected S3 client."""

    def __init__(self, s3: S3Client) -> None:
        self.s3 = s3

    def existing(self, bucket: str, keys: Iterable[str]) -> dict[str, Existing | None]:
        found: dict[str, Existing | None] = {}
        for key in keys:
            try:
                head = self.s3.head_object(Bucket=bucket, Key=key)
            except ClientError as error:
                if error_code(error) not in _MISSING:
                    raise
                found[key] = None
                continue
            metadata = head.get("Metadata", {})
            source_key = metadata.get(SOURCE_KEY)
            found[key] = Existing(
                _unquoted(head["ETag"]),
                unquote(source_key) if source_key is not None else None,
                metadata.get(SOURCE_ETAG),
                _parse_time(metadata.get(SOURCE_MODIFIED)),
            )
        return found

    def download(self, upload: ObjectCreated, max_bytes: int) -> Downloaded:
        """The upload's bytes, exactly the version the event announced, and when S3 stored it."""
        subject = {"bucket": upload.bucket, "key": upload.key}
        try:
            response = self.s3.get_object(Bucket=upload.bucket, Key=upload.key, IfMatch=f'"{upload.etag}"')
        except ClientError as error:
            code = error_code(error)
            if code in _PRECONDITION_FAILED:
                raise IgnoredEvent(
                    upload.event_id, "superseded: the object changed since this event", **subject
                ) from None
            if code in _MISSING:
                raise IgnoredEvent(upload.event_id, "the object is gone", **subject) from None
            raise
        body = response["Body"]
        try:
            if SOURCE_ETAG in response.get("Metadata", {}):
                raise IgnoredEvent(upload.event_id, "carries opsbots thumbnail metadata", **subject)
            if response["ContentLength"] > max_bytes:
                reason = f"{response['ContentLength']} bytes is over limits.max_bytes ({max_bytes})"
                raise RejectedUpload(upload.event_id, reason, **subject)
            return Downloaded(body.read(), response["LastModified"])
        finally:
            body.close()

    def is_current(self, upload: ObjectCreated) -> bool:
        """Whether the upload is still the object's current version: a later upload's event makes its own."""
        try:
            head = self.s3.head_object(Bucket=upload.bucket, Key=upload.key)
        except ClientError as error:
            if error_code(error) not in _MISSING:
                raise
            return False
        return _unquoted(head["ETag"]) == upload.etag

    def write(self, bucket: str, write: Write, body: bytes, content_type: str, metadata: dict[str, str]) -> bool:
        """Store one thumbnail; False when the key changed since it was looked at (a racing delivery)."""
        condition = {"IfMatch": f'"{write.replaces}"'} if write.replaces else {"IfNoneMatch": "*"}
        try:
            self.s3.put_object(
                Bucket=bucket,
                Key=write.output.key,
                Body=body,
                ContentType=content_type,
                Metadata=metadata,
                **condition,  # type: ignore[arg-type]
            )
        except ClientError as error:
            if error_code(error) in _PRECONDITION_FAILED | {"ConditionalRequestConflict"}:
                return False
            raise
        return True


@dataclass(frozen=True)
class Downloaded:
    data: bytes
    modified: datetime  # S3's LastModified: when this version was stored


@dataclass(frozen=True)
class Made:
    key: str
    size: str
    dimensions: str
    bytes: int


class ThumbnailRaceError(Exception):
    """A thumbnail key kept changing under every write: raised, so Lambda retries the event."""


def make_thumbnails(
    plan: Plan, store: S3Thumbnails, max_bytes: int, max_pixels: int, memory_mb: int = FUNCTION_MEMORY_MB
) -> dict[str, Any]:
    """Download once, decode once, write every thumbnail that is missing or stale."""
    from chalicelib.thumbnails import imaging  # Pillow: only this bot's cold path pays for it

    upload = plan.upload
    subject = {"bucket": upload.bucket, "key": upload.key}
    existing = store.existing(plan.bucket, (output.key for output in plan.outputs))
    decision = to_write(plan, existing)
    for conflict in decision.conflicts:
        logger.warning("thumbnail key held by an object opsbots did not write", extra={"thumbnail": conflict.key})
    metrics.add_metric(name="ThumbnailConflicts", unit="Count", value=len(decision.conflicts))
    summary: dict[str, Any] = {
        "event_id": upload.event_id,
        **subject,
        "current": [output.key for output in decision.current],
        "conflicts": [output.key for output in decision.conflicts],
        "kept": [],  # made from a later upload sharing their names: left as they are
        "superseded": [],  # not written: the object was uploaded again while these were made
    }
    if not decision.writes:
        return {**summary, "status": "up-to-date" if not decision.conflicts else "conflict", "written": []}
    source = store.download(upload, max_bytes)
    kept = made_from_a_later_upload(decision.writes, existing, upload, source.modified)
    writes = [write for write in decision.writes if write not in kept]
    _log_shared_names(decision, kept)
    summary["kept"] = [write.output.key for write in kept]
    if not writes:
        return {**summary, "status": "superseded", "written": []}
    started = time.perf_counter()
    try:
        rendered = imaging.render(
            source.data,
            [write.output.size for write in writes],
            output_format=plan.output_format,
            quality=plan.quality,
            max_pixels=max_pixels,
            memory_budget=decode_budget(memory_mb, len(source.data)),
        )
    except imaging.UnusableImageError as error:
        raise RejectedUpload(upload.event_id, str(error), **subject) from None
    render_ms = round((time.perf_counter() - started) * 1000, 1)
    written: list[Made] = []
    for write, picture in zip(writes, rendered, strict=True):
        dimensions = Dimensions(picture.width, picture.height)
        metadata = thumbnail_metadata(upload, write.output.size, dimensions, source.modified)
        stored = _store(store, plan, write, picture, metadata, source.modified)
        if stored == "written":
            written.append(Made(write.output.key, picture.name, str(dimensions), len(picture.body)))
            continue
        summary["conflicts" if stored == "conflict" else stored].append(write.output.key)
        if stored == "conflict":  # another writer took the key after it was looked at
            logger.warning(
                "thumbnail key held by an object opsbots did not write", extra={"thumbnail": write.output.key}
            )
            metrics.add_metric(name="ThumbnailConflicts", unit="Count", value=1)
    metrics.add_metric(name="ThumbnailsWritten", unit="Count", value=len(written))
    metrics.add_metric(name="RenderTime", unit="Milliseconds", value=render_ms)
    superseded = not written and (summary["superseded"] or summary["kept"])
    return {
        **summary,
        "status": "written" if written else "superseded" if superseded else "up-to-date",
        "source_bytes": len(source.data),
        "render_ms": render_ms,
        "written": [vars(made) for made in written],
    }


def _store(
    store: S3Thumbnails, plan: Plan, write: Write, picture: Rendered, metadata: dict[str, str], modified: datetime
) -> Literal["written", "superseded"] | Refused:
    """Write one thumbnail; when the write is refused, look again and decide again (a racing delivery).

    A refused write is not a lost race to shrug off: the other writer may have been an older upload
    of the same key, whose thumbnails would then stay beside the newer object for good.
    """
    key = write.output.key
    for _ in range(WRITE_ATTEMPTS):
        if store.write(plan.bucket, write, picture.body, picture.content_type, metadata):
            return "written"
        again = after_refused_write(write.output, store.existing(plan.bucket, [key])[key], plan.upload, modified)
        if isinstance(again, str):
            return again
        if not store.is_current(plan.upload):
            return "superseded"  # a later upload of this key: its own event makes (or made) its thumbnails
        write = again
    raise ThumbnailRaceError(f"s3://{plan.bucket}/{key} changed under each of {WRITE_ATTEMPTS} conditional writes")


def _log_shared_names(decision: Writes, kept: Iterable[Write]) -> None:
    not_replaced = {write.output.key for write in kept}
    for output in decision.taken_over:
        if output.key in not_replaced:
            logger.warning("thumbnail name shared with a later upload: kept", extra={"thumbnail": output.key})
        else:
            logger.warning("thumbnail name shared with another upload: replaced", extra={"thumbnail": output.key})
