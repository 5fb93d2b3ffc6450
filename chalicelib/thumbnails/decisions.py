"""Plain data and pure decisions; no AWS."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Literal
from urllib.parse import quote

from chalicelib.bots import FUNCTIONS
from chalicelib.events import IgnoredEvent, SkippedEvent
from chalicelib.thumbnails.events import ObjectCreated

if TYPE_CHECKING:
    from chalicelib.thumbnails.policy import ThumbnailBucket, ThumbnailSize, ThumbnailsPolicy


BOT: Final = "thumbnails"  # its name in chalicelib/bots.py: its policy file's
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
# Decode at least the largest output's size (Pillow's thumbnail() keeps twice that): libjpeg's DCT scaling keeps
# what a Lanczos resize from the full decode keeps (measured on the bench's 24 MP photo: within 0.1 dB PSNR at
# 1024 px and at 2048 px), and a 1024 px thumbnail then decodes a quarter of the pixels (1500x1000, not 3000x2000).
DRAFT_GAP: Final = 1.0
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
