"""S3 uploads (EventBridge "Object Created" or a classic notification), read into frozen dataclasses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import unquote_plus

from pydantic import Field, ValidationError

from chalicelib.events import Envelope, IgnoredEvent, Lenient, MalformedEventError, RegionName, id_of, summary


@dataclass(frozen=True)
class ObjectCreated:
    """An S3 object was written. `key` is the key as stored: never URL-encoded."""

    event_id: str
    region: str
    bucket: str
    key: str
    size: int | None
    etag: str
    version_id: str | None


class _S3Object(Lenient):
    key: str
    size: Annotated[int, Field(ge=0)] | None = None
    etag: str = Field(min_length=1)
    version_id: str | None = Field(None, alias="version-id")


class _S3Bucket(Lenient):
    name: str


class _S3Detail(Lenient):
    bucket: _S3Bucket
    object: _S3Object


class _ClassicObject(Lenient):
    key: str
    size: Annotated[int, Field(ge=0)] | None = None
    eTag: str = Field(min_length=1)  # noqa: N815 - S3's field names
    versionId: str | None = None  # noqa: N815


class _ClassicS3(Lenient):
    bucket: _S3Bucket
    object: _ClassicObject


class _ClassicRecord(Lenient):
    eventName: str  # noqa: N815
    awsRegion: RegionName  # noqa: N815
    responseElements: dict[str, Any] = {}  # noqa: N815
    s3: _ClassicS3


class _ClassicNotification(Lenient):
    Records: Annotated[list[_ClassicRecord], Field(min_length=1)]  # S3 never sends an empty one


def parse_object_created(raw: Mapping[str, Any]) -> tuple[ObjectCreated, ...]:
    """Read an EventBridge "Object Created" event, or a classic S3 notification (`Records`).

    EventBridge delivers the key as stored; classic notifications form-encode it ("red flower.jpg"
    arrives as "red+flower.jpg", a literal "+" as "%2B"), so only those are decoded, exactly once.
    """
    event_id = id_of(raw)
    try:
        if isinstance(raw, Mapping) and "Records" in raw:
            return tuple(_classic(record) for record in _ClassicNotification.model_validate(raw).Records)
        envelope = Envelope.model_validate(raw)
        if raw.get("source") != "aws.s3" or raw.get("detail-type") != "Object Created":
            raise IgnoredEvent(event_id, f"{raw.get('source')} {raw.get('detail-type')!r} is not an S3 upload")
        detail = _S3Detail.model_validate(envelope.detail)
    except ValidationError as error:
        raise MalformedEventError(event_id, summary(error)) from None
    except TypeError as error:
        raise MalformedEventError(event_id, f"not an S3 upload event: {error}") from None
    bucket, obj = detail.bucket.name, detail.object
    return (ObjectCreated(envelope.id, envelope.region, bucket, obj.key, obj.size, obj.etag, obj.version_id),)


def _classic(record: _ClassicRecord) -> ObjectCreated:
    request_id = str(record.responseElements.get("x-amz-request-id", ""))
    if not record.eventName.startswith("ObjectCreated:"):
        raise IgnoredEvent(request_id, f"{record.eventName} is not an upload")
    obj = record.s3.object
    key = unquote_plus(obj.key)
    return ObjectCreated(request_id, record.awsRegion, record.s3.bucket.name, key, obj.size, obj.eTag, obj.versionId)
