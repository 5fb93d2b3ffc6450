"""The thumbnail bot end to end against moto's S3: what it writes, what it leaves, how many calls."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws
from PIL import Image

from chalicelib.policy import load_policies
from chalicelib.thumbnails.decisions import SOURCE_ETAG, SOURCE_KEY, SOURCE_VERSION, WRITE_ATTEMPTS
from chalicelib.thumbnails.executors import ThumbnailRaceError
from chalicelib.thumbnails.handlers import ThumbnailDeps, handle_upload
from chalicelib.thumbnails.policy import ThumbnailBucket, ThumbnailSize, ThumbnailsPolicy
from tests.support.aws import HOME, REGION, ROOT, load_event
from tests.support.faults import answer_with_error
from tests.support.pictures import jpeg

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BUCKET = "photos-upload"
SHIPPED = load_policies(ROOT / "policies").of(ThumbnailsPolicy)
SMALL, LARGE = "thumbnails/summer holiday/été 01/small.webp", "thumbnails/summer holiday/été 01/large.webp"
PHOTO_KEY = "uploads/summer holiday/été 01.JPG"


def created(key: str, body: bytes, version_id: str = "null") -> dict[str, Any]:
    """The EventBridge "Object Created" event S3 sends for an upload of `body` (its ETag is the MD5)."""
    event = load_event("s3-object-created")
    event["account"] = HOME
    event["detail"]["object"] = {
        "key": key,
        "size": len(body),
        "etag": hashlib.md5(body).hexdigest(),  # S3's ETag of a single-part upload
        "version-id": version_id,
        "sequencer": "00684D3A1F2B7C9E41",
    }
    return event


@dataclass
class Bucket:
    s3: S3Client
    log: list[str] = field(default_factory=list)  # every S3 call, the tests' own included
    calls: list[str] = field(default_factory=list)  # the calls of the last handle()

    def put(self, key: str, body: bytes, **extra: Any) -> dict[str, Any]:
        """Upload, and return the EventBridge "Object Created" event S3 would send for it."""
        response = self.s3.put_object(Bucket=BUCKET, Key=key, Body=body, **extra)
        return created(key, body, response.get("VersionId", "null"))

    def thumbnails(self, prefix: str = "thumbnails/") -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
        return sorted(item["Key"] for item in listed)

    def head(self, key: str) -> dict[str, Any]:
        return dict(self.s3.head_object(Bucket=BUCKET, Key=key))

    def picture(self, key: str) -> Image.Image:
        return Image.open(io.BytesIO(self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()))

    def handle(self, event: dict[str, Any], policy: ThumbnailsPolicy = SHIPPED) -> dict[str, Any]:
        start = len(self.log)
        summary = handle_upload(event, policy=policy, deps=ThumbnailDeps(lambda region: self.s3))
        self.calls = self.log[start:]
        return summary


@pytest.fixture
def bucket() -> Iterator[Bucket]:
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        found = Bucket(s3)
        s3.meta.events.register("before-call.s3", lambda model, **_: found.log.append(model.name))
        yield found


def test_an_upload_gets_every_size_with_metadata_naming_its_source(bucket: Bucket) -> None:
    event = bucket.put(PHOTO_KEY, jpeg())

    summary = bucket.handle(event)

    assert summary["status"] == "written"
    assert bucket.thumbnails() == sorted([SMALL, LARGE])
    assert [(made["key"], made["dimensions"]) for made in summary["written"]] == [
        (SMALL, "256x192"),
        (LARGE, "1024x768"),
    ]
    head = bucket.head(SMALL)
    assert head["ContentType"] == "image/webp"
    assert head["Metadata"][SOURCE_KEY] == "uploads/summer%20holiday/%C3%A9t%C3%A9%2001.JPG"
    assert head["Metadata"][SOURCE_ETAG] == event["detail"]["object"]["etag"]
    assert head["Metadata"][SOURCE_VERSION] == event["detail"]["object"]["version-id"]
    assert bucket.picture(SMALL).format == "WEBP"
    assert bucket.calls == ["HeadObject", "HeadObject", "GetObject", "PutObject", "PutObject"]


def test_a_duplicate_event_downloads_and_writes_nothing(bucket: Bucket) -> None:
    event = bucket.put(PHOTO_KEY, jpeg())
    bucket.handle(event)
    before = {key: bucket.head(key)["ETag"] for key in bucket.thumbnails()}

    summary = bucket.handle(event)

    assert summary["status"] == "up-to-date"
    assert bucket.calls == ["HeadObject", "HeadObject"]
    assert {key: bucket.head(key)["ETag"] for key in bucket.thumbnails()} == before


def test_a_reupload_of_the_same_bytes_writes_nothing_and_a_new_version_overwrites(bucket: Bucket) -> None:
    bucket.handle(bucket.put(PHOTO_KEY, jpeg()))

    same = bucket.handle(bucket.put(PHOTO_KEY, jpeg()))
    newer = bucket.put(PHOTO_KEY, jpeg(800, 1200, colour=(20, 20, 200)))
    changed = bucket.handle(newer)

    assert same["status"] == "up-to-date"
    assert changed["status"] == "written"
    assert bucket.head(LARGE)["Metadata"][SOURCE_ETAG] == newer["detail"]["object"]["etag"]
    assert bucket.picture(LARGE).size == (800, 1200)  # never enlarged
    assert bucket.picture(SMALL).convert("RGB").getpixel((10, 10))[2] > 150  # blue now


def test_an_event_that_arrives_after_a_newer_upload_changes_nothing(bucket: Bucket) -> None:
    older = bucket.put(PHOTO_KEY, jpeg(colour=(200, 0, 0)))
    newer = bucket.put(PHOTO_KEY, jpeg(colour=(0, 0, 200)))
    bucket.handle(newer)
    written = {key: bucket.head(key)["ETag"] for key in bucket.thumbnails()}

    summary = bucket.handle(older)

    assert (summary["status"], summary["reason"]) == ("ignored", "superseded: the object changed since this event")
    assert {key: bucket.head(key)["ETag"] for key in bucket.thumbnails()} == written


def test_an_object_opsbots_did_not_write_is_never_overwritten(bucket: Bucket) -> None:
    bucket.s3.put_object(Bucket=BUCKET, Key=SMALL, Body=b"hand-made", ContentType="image/webp")

    summary = bucket.handle(bucket.put(PHOTO_KEY, jpeg()))

    assert summary["conflicts"] == [SMALL]
    assert [made["key"] for made in summary["written"]] == [LARGE]
    assert bucket.s3.get_object(Bucket=BUCKET, Key=SMALL)["Body"].read() == b"hand-made"


@pytest.mark.parametrize(
    "key",
    ["uploads/c++ notes/a+b photo.png", "uploads/100%25 done.png", "uploads/日本/写真 1.png", "uploads/a:b?c#d.png"],
)
def test_keys_with_plus_percent_unicode_and_punctuation_are_used_as_stored(bucket: Bucket, key: str) -> None:
    out = io.BytesIO()
    Image.new("RGBA", (300, 300), (0, 0, 0, 0)).save(out, "PNG")

    summary = bucket.handle(bucket.put(key, out.getvalue()))

    stem = key.removeprefix("uploads/").rsplit(".", 1)[0]
    assert summary["status"] == "written"
    assert bucket.thumbnails() == sorted([f"thumbnails/{stem}/small.webp", f"thumbnails/{stem}/large.webp"])


def test_events_for_thumbnails_are_ignored_without_a_call(bucket: Bucket) -> None:
    bucket.handle(bucket.put(PHOTO_KEY, jpeg()))
    event = load_event("s3-object-created")
    event["detail"]["object"]["key"] = SMALL

    summary = bucket.handle(event)

    assert summary["status"] == "ignored"
    assert bucket.calls == []


def test_a_thumbnail_copied_back_into_uploads_is_ignored(bucket: Bucket) -> None:
    bucket.handle(bucket.put(PHOTO_KEY, jpeg()))
    thumbnail = bucket.s3.get_object(Bucket=BUCKET, Key=SMALL)
    event = bucket.put("uploads/copy.webp", thumbnail["Body"].read(), Metadata=thumbnail["Metadata"])

    summary = bucket.handle(event)

    assert (summary["status"], summary["reason"]) == ("ignored", "carries opsbots thumbnail metadata")
    assert "thumbnails/copy/small.webp" not in bucket.thumbnails()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"this is not a picture", "not an image"),
        (jpeg()[:2000], "cannot decode"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not an image"),
    ],
    ids=["text-named-jpg", "truncated-jpeg", "postscript"],
)
def test_a_file_that_is_not_a_usable_picture_is_rejected_and_nothing_written(
    bucket: Bucket, body: bytes, reason: str
) -> None:
    summary = bucket.handle(bucket.put("uploads/broken.jpg", body))

    assert summary["status"] == "rejected"
    assert reason in summary["reason"]
    assert summary["key"] == "uploads/broken.jpg"
    assert bucket.thumbnails() == []


def test_too_big_is_rejected_before_download_and_when_the_event_understates_it(bucket: Bucket) -> None:
    tight = SHIPPED.model_copy(update={"limits": SHIPPED.limits.model_copy(update={"max_bytes": 1000})})
    event = bucket.put(PHOTO_KEY, jpeg())

    by_event = bucket.handle(event, tight)
    by_event_calls = list(bucket.calls)
    event["detail"]["object"].pop("size")
    by_object = bucket.handle(event, tight)

    assert by_event["status"] == by_object["status"] == "rejected"
    assert by_event_calls == []
    assert bucket.calls == ["HeadObject", "HeadObject", "GetObject"]
    assert bucket.thumbnails() == []


def test_too_many_pixels_is_rejected(bucket: Bucket) -> None:
    tight = SHIPPED.model_copy(update={"limits": SHIPPED.limits.model_copy(update={"max_pixels": 1_000_000})})

    summary = bucket.handle(bucket.put(PHOTO_KEY, jpeg(1001, 1000)), tight)

    assert summary["status"] == "rejected"
    assert "too many pixels" in summary["reason"]
    assert bucket.thumbnails() == []


def test_a_deleted_upload_and_an_unconfigured_bucket_are_ignored(bucket: Bucket) -> None:
    event = bucket.put(PHOTO_KEY, jpeg())
    bucket.s3.delete_object(Bucket=BUCKET, Key=PHOTO_KEY)
    elsewhere = load_event("s3-object-created")
    elsewhere["detail"]["bucket"]["name"] = "someone-elses-bucket"

    gone = bucket.handle(event)
    unconfigured = bucket.handle(elsewhere)

    assert (gone["status"], gone["reason"]) == ("ignored", "the object is gone")
    assert unconfigured["status"] == "ignored"
    assert bucket.calls == []


def test_a_key_that_changes_under_every_write_raises_so_lambda_retries_and_overwrites_nothing(
    bucket: Bucket,
) -> None:
    event = bucket.put(PHOTO_KEY, jpeg())
    answer_with_error(bucket.s3, "PutObject", "PreconditionFailed", 412)

    with pytest.raises(ThumbnailRaceError, match=f"changed under each of {WRITE_ATTEMPTS} conditional writes"):
        bucket.handle(event)

    assert bucket.thumbnails() == []


def while_first_looks(bucket: Bucket, operation: str, meanwhile: Callable[[], None]) -> None:
    """Run `meanwhile` once, just before the bot's next `operation` call: a second delivery, interleaved."""
    pending = [meanwhile]

    def interleave(**_: Any) -> None:
        if pending:
            pending.pop()()

    bucket.s3.meta.events.register(f"before-call.s3.{operation}", interleave)


def test_when_two_uploads_of_one_key_race_the_later_uploads_thumbnails_win(bucket: Bucket) -> None:
    # Given an upload (red) whose delivery is slow, and a re-upload (blue) whose delivery has already
    # looked (no thumbnails yet) and is about to download: the red delivery writes first, then blue lands
    red = bucket.put(PHOTO_KEY, jpeg(colour=(200, 0, 0)))
    blue_body = jpeg(colour=(0, 0, 200))
    blue = created(PHOTO_KEY, blue_body)
    outcomes: dict[str, dict[str, Any]] = {}

    def red_delivery_then_blue_upload() -> None:
        outcomes["red"] = bucket.handle(red)
        bucket.s3.put_object(Bucket=BUCKET, Key=PHOTO_KEY, Body=blue_body)

    while_first_looks(bucket, "GetObject", red_delivery_then_blue_upload)

    # When the blue delivery writes, and S3 refuses (the keys were free when it looked)
    summary = bucket.handle(blue)

    # Then it looked again, saw the red upload's thumbnails, and replaced them: the object is blue, so are they
    assert outcomes["red"]["status"] == "written"
    assert summary["status"] == "written"
    assert [made["key"] for made in summary["written"]] == [SMALL, LARGE]
    blue_etag = blue["detail"]["object"]["etag"]
    assert {bucket.head(key)["Metadata"][SOURCE_ETAG] for key in (SMALL, LARGE)} == {blue_etag}
    assert bucket.picture(SMALL).convert("RGB").getpixel((10, 10))[2] > 150


def test_a_delivery_that_loses_the_race_to_a_later_upload_reports_superseded(bucket: Bucket) -> None:
    # Given an upload (red) whose delivery has downloaded and rendered it, and meanwhile a re-upload (blue)
    # whose delivery runs to the end first
    red = bucket.put(PHOTO_KEY, jpeg(colour=(200, 0, 0)))
    outcomes: dict[str, dict[str, Any]] = {}

    def blue_upload_and_delivery() -> None:
        outcomes["blue"] = bucket.handle(bucket.put(PHOTO_KEY, jpeg(colour=(0, 0, 200))))

    while_first_looks(bucket, "PutObject", blue_upload_and_delivery)

    # When the red delivery writes, and S3 refuses (the blue thumbnails are there now)
    summary = bucket.handle(red)

    # Then it reports the truth, superseded, wrote nothing, and the blue thumbnails stay
    assert outcomes["blue"]["status"] == "written"
    assert (summary["status"], summary["written"], summary["superseded"]) == ("superseded", [], [SMALL, LARGE])
    assert bucket.picture(SMALL).convert("RGB").getpixel((10, 10))[2] > 150


def test_an_object_someone_else_puts_at_a_thumbnail_key_meanwhile_is_left_alone(bucket: Bucket) -> None:
    # Given a delivery about to write, and someone else's object landing at the small thumbnail's key first
    event = bucket.put(PHOTO_KEY, jpeg())
    while_first_looks(bucket, "PutObject", lambda: bucket.s3.put_object(Bucket=BUCKET, Key=SMALL, Body=b"theirs"))

    # When the delivery writes, and S3 refuses
    summary = bucket.handle(event)

    # Then their object stays as it is, reported as a conflict, and the other size is written
    assert bucket.s3.get_object(Bucket=BUCKET, Key=SMALL)["Body"].read() == b"theirs"
    assert (summary["status"], summary["conflicts"]) == ("written", [SMALL])
    assert [made["key"] for made in summary["written"]] == [LARGE]


def test_a_racing_duplicate_delivery_finds_the_thumbnails_current(bucket: Bucket) -> None:
    # Given two deliveries of one event, the second running to the end while the first is about to write
    event = bucket.put(PHOTO_KEY, jpeg())
    outcomes: dict[str, dict[str, Any]] = {}
    while_first_looks(bucket, "PutObject", lambda: outcomes.update(duplicate=bucket.handle(event)))

    # When the first writes, and S3 refuses
    summary = bucket.handle(event)

    # Then it sees its own upload's thumbnails there, and says so
    assert outcomes["duplicate"]["status"] == "written"
    assert (summary["status"], summary["current"]) == ("up-to-date", [SMALL, LARGE])


def test_an_s3_failure_is_raised_so_lambda_retries_the_event(bucket: Bucket) -> None:
    event = bucket.put(PHOTO_KEY, jpeg())
    answer_with_error(bucket.s3, "GetObject", "SlowDown", 503)

    with pytest.raises(bucket.s3.exceptions.ClientError, match="SlowDown"):
        bucket.handle(event)


def test_output_format_jpeg_flattens_and_same_keeps_png(bucket: Bucket) -> None:
    sizes = (ThumbnailSize(name="small", width=64, height=64),)
    policy = ThumbnailsPolicy(
        buckets=(
            ThumbnailBucket(bucket=BUCKET, prefix="jpeg/", output_prefix="out-jpeg/", sizes=sizes, format="jpeg"),
            ThumbnailBucket(bucket=BUCKET, prefix="same/", output_prefix="out-same/", sizes=sizes, format="same"),
        )
    )
    out = io.BytesIO()
    Image.new("RGBA", (128, 128), (0, 0, 0, 0)).save(out, "PNG")

    bucket.handle(bucket.put("jpeg/logo.png", out.getvalue()), policy)
    bucket.handle(bucket.put("same/logo.png", out.getvalue()), policy)

    flattened = bucket.picture("out-jpeg/logo/small.jpg")
    assert (flattened.format, flattened.getpixel((0, 0))) == ("JPEG", (255, 255, 255))
    kept = bucket.picture("out-same/logo/small.png")
    assert (kept.format, kept.mode, kept.getpixel((0, 0))[3]) == ("PNG", "RGBA", 0)
    assert bucket.head("out-jpeg/logo/small.jpg")["ContentType"] == "image/jpeg"


def test_the_app_wires_eventbridge_uploads_to_the_bot(bucket: Bucket, fresh_runtime: None) -> None:
    from chalice.test import Client

    from app import app

    event = bucket.put(PHOTO_KEY, jpeg())
    with Client(app, stage_name="dev", project_dir=str(ROOT)) as client:
        summary = client.lambda_.invoke("on_image_uploaded", event).payload

    assert summary["status"] == "written"
    assert bucket.thumbnails() == sorted([SMALL, LARGE])
