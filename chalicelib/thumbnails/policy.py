"""The thumbnail bot's policy: the contents of thumbnails.yml."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    Field,
    PlainValidator,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from chalicelib.policy import BucketName, NonEmpty, StrictModel, matching, string_schema, unique

_SIZE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_BYTES = re.compile(r"\s*(\d+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*")
_BYTE_UNITS = {None: 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
_MAX_EDGE = 8192  # the largest thumbnail side; WebP itself stops at 16383


def _parse_byte_size(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _BYTES.fullmatch(value) if isinstance(value, str) else None
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{value!r} is not a size like 50MB, 20MiB or 1000000")
    return int(match.group(1)) * _BYTE_UNITS[match.group(2)]


_ByteSize = Annotated[
    int,
    PlainValidator(_parse_byte_size),
    WithJsonSchema(
        {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": r"^\d+(B|KB|MB|GB|KiB|MiB|GiB)$"}]}
    ),
]
_Edge = Annotated[int, Field(ge=1, le=_MAX_EDGE)]


class ThumbnailSize(StrictModel):
    """One thumbnail: fit inside width x height (contain), or fill it and crop the overflow (cover)."""

    name: Annotated[str, matching(_SIZE_NAME, "a size name (letters, digits, '-' and '_')"), string_schema(_SIZE_NAME)]
    width: _Edge | None = None
    height: _Edge | None = None
    fit: Literal["contain", "cover"] = "contain"

    @model_validator(mode="after")
    def check_box(self) -> ThumbnailSize:
        if self.width is None and self.height is None:
            raise ValueError("give width, height or both")
        if self.fit == "cover" and (self.width is None or self.height is None):
            raise ValueError("fit: cover crops to a box: give both width and height")
        return self


class ThumbnailBucket(StrictModel):
    """Uploads under `prefix` of `bucket` get thumbnails under `output_prefix` of `output_bucket`."""

    bucket: BucketName
    prefix: str = ""
    output_bucket: BucketName | None = None  # default: the same bucket
    output_prefix: str = "thumbnails/"
    sizes: Annotated[NonEmpty[ThumbnailSize], unique("sizes", "name", lambda size: size.name)]
    format: Literal["webp", "jpeg", "png", "avif", "same"] = "webp"
    quality: Annotated[int, Field(ge=1, le=100)] = 82

    @property
    def destination(self) -> str:
        return self.output_bucket or self.bucket


class ThumbnailLimits(StrictModel):
    """Uploads past these are rejected before download (bytes) or before decoding (pixels)."""

    max_bytes: _ByteSize = 50 * 10**6
    max_pixels: Annotated[int, Field(ge=1)] = 100 * 10**6


def _prefixes_overlap(first: str, second: str) -> bool:
    return first.startswith(second) or second.startswith(first)


class ThumbnailsPolicy(StrictModel):
    """Contents of thumbnails.yml."""

    buckets: tuple[ThumbnailBucket, ...] = ()
    limits: ThumbnailLimits = ThumbnailLimits()

    @field_validator("buckets")
    @classmethod
    def check_no_loops_or_overlaps(cls, buckets: tuple[ThumbnailBucket, ...]) -> tuple[ThumbnailBucket, ...]:
        for index, rule in enumerate(buckets):
            for other_index, other in enumerate(buckets):
                where = f"buckets[{index}]" + ("" if other_index == index else f" and buckets[{other_index}]")
                if rule.destination == other.bucket and _prefixes_overlap(rule.output_prefix, other.prefix):
                    raise ValueError(
                        f"{where}: output_prefix {rule.output_prefix!r} overlaps prefix {other.prefix!r} on bucket "
                        f"{other.bucket}: thumbnails would be made of thumbnails"
                    )
                if other_index > index and rule.bucket == other.bucket and _prefixes_overlap(rule.prefix, other.prefix):
                    raise ValueError(
                        f"{where}: prefixes {rule.prefix!r} and {other.prefix!r} overlap on bucket {rule.bucket}: "
                        "an upload may match one rule only"
                    )
        return buckets

    def rule_for(self, bucket: str, key: str) -> ThumbnailBucket | None:
        return next((rule for rule in self.buckets if rule.bucket == bucket and key.startswith(rule.prefix)), None)

    def is_output(self, bucket: str, key: str) -> bool:
        return any(rule.destination == bucket and key.startswith(rule.output_prefix) for rule in self.buckets)

    def summary(self) -> str:
        return f"{len(self.buckets)} upload location(s)"
