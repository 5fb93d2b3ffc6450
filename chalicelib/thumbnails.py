"""Thumbnail bot: resized copies of every image uploaded under a configured bucket prefix.

Every thumbnail carries S3 metadata naming its source key and ETag. That metadata is the whole
state of the bot:
- ownership: an object at a thumbnail key without it was not written by opsbots and is never
  overwritten (a conflict, reported);
- idempotency: a duplicate event, or a re-upload of the same bytes, finds every thumbnail already
  made from that ETag and downloads nothing;
- no loops: an event for an object carrying it is ignored, as is any key under an output prefix.
Writes are conditional (`If-None-Match: *` for a new key, `If-Match` for one of ours), so two
deliveries racing each other cannot overwrite anything they did not look at; a refused write is
looked at and decided again, so when two uploads of one key race, the one S3 holds last wins. The
source is read with `If-Match` on the event's ETag: an event that arrives after a newer upload
changes nothing, because the newer upload's own event makes its thumbnails. Two uploads sharing
thumbnail names (`a.jpg`, `a.png`) are ordered by the time S3 stored them, kept in each thumbnail's
metadata: the later upload's thumbnails win whichever event arrives last.

Pillow is imported only by the render step (`chalicelib.imaging`), never by app.py.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import quote, unquote

from botocore.exceptions import ClientError

from chalicelib.aws import error_code
from chalicelib.bots import FUNCTIONS
from chalicelib.events import IgnoredEvent, ObjectCreated, SkippedEvent, parse_object_created
from chalicelib.observability import logger, metrics

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from chalicelib.imaging import Rendered
    from chalicelib.policy import ThumbnailBucket, ThumbnailSize, ThumbnailsPolicy

BOT: Final = "thumbnails"  # its name in chalicelib/bots.py: its policy file's
PERMISSIONS = ("s3:GetObject", "s3:PutObject", "s3:ListBucket")
OutputFormat = Literal["webp", "jpeg", "png", "avif"]
CONTENT_TYPES: Final[Mapping[OutputFormat, str]] = {
    "webp": "image/webp",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "avif": "image/avif",
}
EXTENSIONS: Final[Mapping[OutputFormat, str]] = {"webp": ".webp", "jpeg": ".jpg", "png": ".png", "avif": ".avif"}
SAME_FORMATS: Final[Mapping[str, OutputFormat]] = {
    "jpg": "jpeg",
    "jpeg": "jpeg",
    "jpe": "jpeg",
    "png": "png",
    "webp": "webp",
    "avif": "avif",
    # Phones' HEIC: browsers other than Safari cannot show it, so its thumbnails are JPEG, as iOS
    # itself converts a HEIC photo it shares.
    "heic": "jpeg",
    "heif": "jpeg",
    "hif": "jpeg",
}
DRAFT_GAP: Final = 2.0  # decode at least twice the largest output, as Pillow's thumbnail() does
MIB: Final = 1 << 20
# The function's memory as declared (chalicelib/bots.py); on Lambda the runtime says
# (AWS_LAMBDA_FUNCTION_MEMORY_SIZE), so a redeploy with more memory admits bigger pictures.
FUNCTION_MEMORY_MB: Final = FUNCTIONS["on_image_uploaded"].memory_mb
# What the decode may not use: the interpreter, boto3, Pillow and its libraries (about 120 MiB
# measured), the rendered thumbnails, and room for the allocator.
RUNTIME_RESERVE: Final = 256 * MIB
WRITE_ATTEMPTS: Final = 4  # a refused conditional write is looked at again and retried this often
MAX_KEY_BYTES: Final = 1024  # S3's limit on a key, in UTF-8 bytes
# S3 user metadata (x-amz-meta-*); values must be ASCII, so the source key is percent-encoded.
SOURCE_KEY, SOURCE_ETAG, SOURCE_VERSION, SOURCE_MODIFIED, SIZE, DIMENSIONS = (
    "opsbots-source-key",
    "opsbots-source-etag",
    "opsbots-source-version",
    "opsbots-source-modified",  # when S3 stored the upload (ISO 8601, UTC): which of two uploads is later
    "opsbots-size",
    "opsbots-dimensions",
)

# ---------------------------------------------------------------------------------------------
# Plain data and pure decisions; no AWS, no Pillow.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dimensions:
    width: int
    height: int

    def transposed(self) -> Dimensions:
        return Dimensions(self.height, self.width)

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


@dataclass(frozen=True)
class Fit:
    """A thumbnail's size, and the part of the source it shows (source pixels: left, top, right, bottom)."""

    width: int
    height: int
    crop: tuple[float, float, float, float]


def _scale(source: Dimensions, size: ThumbnailSize) -> float:
    ratios = [wanted / have for wanted, have in ((size.width, source.width), (size.height, source.height)) if wanted]
    scale = max(ratios) if size.fit == "cover" else min(ratios)
    return min(scale, 1.0)  # never enlarge


def fit(source: Dimensions, size: ThumbnailSize) -> Fit:
    """Contain: the whole picture inside the box. Cover: the box's shape, cut from the picture's centre.

    Neither ever enlarges: a picture smaller than a cover box gives the largest crop of the box's
    shape it holds (an 80x300 picture into a 256x256 box gives 80x80), so a grid of covers stays even.
    """
    if size.fit == "contain":
        scale = _scale(source, size)
        width = min(max(1, round(source.width * scale)), size.width or source.width)
        height = min(max(1, round(source.height * scale)), size.height or source.height)
        return Fit(width, height, (0.0, 0.0, float(source.width), float(source.height)))
    box_width, box_height = size.width or source.width, size.height or source.height
    shown_width = min(float(source.width), source.height * box_width / box_height)
    shown_height = min(float(source.height), source.width * box_height / box_width)
    scale = min(1.0, box_width / shown_width)
    width = min(box_width, max(1, round(shown_width * scale)))
    height = min(box_height, max(1, round(shown_height * scale)))
    left, top = (source.width - shown_width) / 2, (source.height - shown_height) / 2
    return Fit(width, height, (left, top, left + shown_width, top + shown_height))


def decode_request(source: Dimensions, sizes: Iterable[ThumbnailSize]) -> Dimensions:
    """The smallest decode that every size can still be resampled cleanly from (JPEG draft mode)."""
    scale = min(1.0, max(_scale(source, size) for size in sizes) * DRAFT_GAP)
    return Dimensions(math.ceil(source.width * scale), math.ceil(source.height * scale))


@dataclass(frozen=True)
class Output:
    key: str
    size: ThumbnailSize


@dataclass(frozen=True)
class Plan:
    upload: ObjectCreated
    bucket: str
    output_format: OutputFormat
    quality: int
    outputs: tuple[Output, ...]


class RejectedUpload(SkippedEvent):
    """An upload opsbots will not make thumbnails of: too big, not an image, corrupt or hostile."""

    status = "rejected"
    metric = "ImagesRejected"
    warns = True


def output_format(rule: ThumbnailBucket, key: str) -> OutputFormat:
    """`same` follows the upload's extension: JPEG, PNG, WebP and AVIF stay themselves, HEIC becomes JPEG,
    anything else is PNG."""
    if rule.format != "same":
        return rule.format
    stem, dot, extension = key.rpartition("/")[2].rpartition(".")
    return SAME_FORMATS.get(extension.lower(), "png") if dot and stem else "png"


def output_key(key: str, rule: ThumbnailBucket, size_name: str, image_format: OutputFormat) -> str:
    """`uploads/a b/été 01.JPG` under prefix `uploads/` -> `thumbnails/a b/été 01/small.webp`."""
    folder, slash, name = key.removeprefix(rule.prefix).rpartition("/")
    stem, dot, _ = name.rpartition(".")
    base = stem if dot and stem else name
    return f"{rule.output_prefix}{folder}{slash}{base}/{size_name}{EXTENSIONS[image_format]}"


def plan_thumbnails(upload: ObjectCreated, policy: ThumbnailsPolicy) -> Plan:
    """Which thumbnails an upload gets, or why it gets none (IgnoredEvent, RejectedUpload)."""
    subject = {"bucket": upload.bucket, "key": upload.key}
    if policy.is_output(upload.bucket, upload.key):
        raise IgnoredEvent(upload.event_id, "under an output prefix: a thumbnail, not an upload", **subject)
    rule = policy.rule_for(upload.bucket, upload.key)
    if rule is None:
        raise IgnoredEvent(upload.event_id, "no thumbnails.yml entry covers this bucket and key", **subject)
    if upload.key.endswith("/"):
        raise IgnoredEvent(upload.event_id, "a folder marker, not a picture", **subject)
    if upload.size is not None and upload.size > policy.limits.max_bytes:
        reason = f"{upload.size} bytes is over limits.max_bytes ({policy.limits.max_bytes})"
        raise RejectedUpload(upload.event_id, reason, **subject)
    image_format = output_format(rule, upload.key)
    outputs = tuple(Output(output_key(upload.key, rule, s.name, image_format), s) for s in rule.sizes)
    too_long = [output.key for output in outputs if len(output.key.encode()) > MAX_KEY_BYTES]
    if too_long:
        raise RejectedUpload(upload.event_id, f"thumbnail key over {MAX_KEY_BYTES} bytes: {too_long[0]}", **subject)
    return Plan(upload, rule.destination, image_format, rule.quality, outputs)


@dataclass(frozen=True)
class Existing:
    """What is already stored at a thumbnail key."""

    etag: str
    source_key: str | None  # None: not written by opsbots
    source_etag: str | None
    source_modified: datetime | None = None  # None: unknown (written before opsbots recorded it)


@dataclass(frozen=True)
class Write:
    output: Output
    replaces: str | None  # ETag of our older thumbnail to replace; None: the key must be free


@dataclass(frozen=True)
class Writes:
    writes: tuple[Write, ...]
    current: tuple[Output, ...]  # already made from this upload
    conflicts: tuple[Output, ...]  # held by an object opsbots did not write
    taken_over: tuple[Output, ...]  # ours, but made from another upload with the same name (a.jpg, a.png)


def to_write(plan: Plan, existing: Mapping[str, Existing | None]) -> Writes:
    writes, current, conflicts, taken_over = [], [], [], []
    for output in plan.outputs:
        found = existing.get(output.key)
        if found is None:
            writes.append(Write(output, None))
        elif found.source_etag is None:
            conflicts.append(output)
        elif found.source_etag == plan.upload.etag and found.source_key == plan.upload.key:
            current.append(output)
        else:
            writes.append(Write(output, found.etag))
            if found.source_key != plan.upload.key:
                taken_over.append(output)
    return Writes(tuple(writes), tuple(current), tuple(conflicts), tuple(taken_over))


def made_from_a_later_upload(
    writes: Iterable[Write], existing: Mapping[str, Existing | None], upload: ObjectCreated, modified: datetime
) -> tuple[Write, ...]:
    """The writes that would replace thumbnails made from a later upload of another key with the same name.

    Events for `a.jpg` and `a.png` can arrive in either order; the thumbnails follow the upload S3 stored
    last (S3 times uploads to the second: a tie goes to the greater key, so the order of events never
    decides). A thumbnail whose upload time is unknown is replaced, as before that time was recorded.
    """
    ours = (modified.astimezone(UTC), upload.key)
    later = []
    for write in writes:
        found = existing.get(write.output.key)
        if found is None or found.source_key in (None, upload.key) or found.source_modified is None:
            continue
        if (found.source_modified.astimezone(UTC), found.source_key) > ours:
            later.append(write)
    return tuple(later)


Refused = Literal["current", "conflict", "kept"]


def after_refused_write(
    output: Output, found: Existing | None, upload: ObjectCreated, modified: datetime
) -> Write | Refused:
    """What to do once a conditional write was refused: the key changed since it was looked at.

    Decided again from what is there now, as the first time: write over it (the caller first checks
    that this upload is still the object's current version), or leave it: already made from this
    upload by a racing delivery (`current`), taken by an object opsbots did not write (`conflict`), or
    made from a later upload of another key with the same name (`kept`).
    """
    if found is None:
        return Write(output, None)
    if found.source_etag is None:
        return "conflict"
    if found.source_etag == upload.etag and found.source_key == upload.key:
        return "current"
    replace = Write(output, found.etag)
    return "kept" if made_from_a_later_upload((replace,), {output.key: found}, upload, modified) else replace


def decode_budget(function_memory_mb: int, source_bytes: int) -> int:
    """The bytes a decode may take in a function of this memory, holding a download of this size."""
    return function_memory_mb * MIB - RUNTIME_RESERVE - source_bytes


def thumbnail_metadata(
    upload: ObjectCreated, size: ThumbnailSize, dimensions: Dimensions, modified: datetime | None = None
) -> dict[str, str]:
    metadata = {
        SOURCE_KEY: quote(upload.key, safe="/"),
        SOURCE_ETAG: upload.etag,
        SIZE: size.name,
        DIMENSIONS: str(dimensions),
    }
    if upload.version_id:
        metadata[SOURCE_VERSION] = upload.version_id
    if modified is not None:
        metadata[SOURCE_MODIFIED] = modified.astimezone(UTC).isoformat()
    return metadata


def _parse_time(value: str | None) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value) if value else None
    except ValueError:
        return None  # not ours to trust: treated as unknown
    return parsed if parsed is None or parsed.tzinfo else parsed.replace(tzinfo=UTC)


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
    from chalicelib import imaging  # Pillow: only this bot's cold path pays for it

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


def print_plan(plan: Plan, out: Any) -> None:
    """The dry run: what an upload would get, with no AWS call."""
    upload = plan.upload
    print(f"upload s3://{upload.bucket}/{upload.key} (ETag {upload.etag}, {upload.size} bytes)", file=out)
    for output in plan.outputs:
        size = output.size
        box = f"{size.width or '*'}x{size.height or '*'} {size.fit}"
        print(f"  would write s3://{plan.bucket}/{output.key} ({box}, {plan.output_format})", file=out)


# ---------------------------------------------------------------------------------------------
# Entry point for app.py.
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
