"""Chapter: the thumbnail bot (`on_image_uploaded`).

The bucket photos-upload is made in moto the way policies/thumbnails.yml asks: EventBridge
notifications on (and versioning on, so that any rewrite would show as a new object version). A rule
on the default bus with on_image_uploaded's own pattern (read from app.py) forwards S3's "Object
Created" events to an SQS queue the demo reads, so every scene delivers the event moto's S3 itself
built for the upload, not one the demo made up. moto (5.2.5) builds it with two differences from
AWS's documented shape, which the demo repairs and shows on the timeline: the ETag is under `eTag`
where AWS writes `etag`, and every event carries the same fixed `id`. Scene 1 also delivers moto's
event verbatim once: the bot refuses it as malformed. Everything else is delivered as moto sent it.

The pictures are made here with Pillow: a 12-megapixel photo stored sideways with EXIF Orientation 6,
an iPhone-style portrait HEIC (pillow-heif: turned by its container, colours in Display P3, the
profile built by demo/icc.py), a logo on a transparent background, a text file named .jpg and a
truncated JPEG. Every outcome is
checked against what moto holds (the thumbnails opened with Pillow, their metadata, every object
version under thumbnails/) and the S3 calls the bot's own client made, not the handler's word.
"""

from __future__ import annotations

import copy
import io
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote, unquote_plus

from PIL import ExifTags, Image, ImageCms, ImageDraw, ImageStat

from chalicelib.thumbnails.handlers import thumbnail_deps
from chalicelib.thumbnails.policy import ThumbnailsPolicy
from demo import show
from demo.dns import bot_logs, wrapped
from demo.environment import REGION
from demo.icc import DISPLAY_P3
from demo.stage import Stage

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.literals import BucketLocationConstraintType
    from mypy_boto3_sqs import SQSClient

FUNCTION = "on_image_uploaded"
BUCKET = "photos-upload"  # policies/thumbnails.yml: bucket and output_bucket
INPUT_PREFIX = "uploads/"  # its prefix
OUTPUT_PREFIX = "thumbnails/"  # its output_prefix
Box = tuple[int | None, int | None]
BOXES: Mapping[str, Box] = {"small": (256, 256), "large": (1024, None)}  # its sizes, all fit: contain
CONTENT_TYPE = "image/webp"  # its format: webp
PHOTO = "uploads/summer holiday/été 01.JPG"
LOGO = "uploads/logo.png"
BROKEN = "uploads/broken.jpg"
TRUNCATED = "uploads/truncated.jpg"
COPIED = "uploads/copy of small.webp"
PLUS = "uploads/c++ notes/a+b photo.png"
PHOTO_STORED = (4000, 3000)  # the camera's sensor is landscape; upright, the photo is 3000x4000
HEIC = "uploads/IMG_0042.HEIC"
HEIC_STORED = (1344, 1008)  # an iPhone's 4:3 (12 MP is 4032x3024), a third of each side: x265 encodes it quickly
SUN = (255, 220, 90)
LOGO_SIZE = (1200, 600)
NOTES_SIZE = (800, 600)  # narrower than the large box: never enlarged
QUEUE = "opsbots-demo-s3-events"
CLASSIC_QUEUE = "opsbots-demo-s3-notifications"
RULE = "opsbots-demo-s3-object-created"
SOURCE_KEY, SOURCE_ETAG, SOURCE_VERSION = "opsbots-source-key", "opsbots-source-etag", "opsbots-source-version"
WRITES = ("PutObject", "CopyObject", "DeleteObject")

# ----- the pictures ---------------------------------------------------------------------------------------

Colour = tuple[int, int, int]


def _blend(top: Colour, bottom: Colour, fraction: float) -> Colour:
    red, green, blue = (round(a + (b - a) * fraction) for a, b in zip(top, bottom, strict=True))
    return red, green, blue


def landscape(upright: tuple[int, int]) -> Image.Image:
    """A portrait view, upright: sky on top, a meadow below, a sun (SUN) and a mountain, a little grain."""
    sketch = Image.new("RGB", (300, 400))
    draw = ImageDraw.Draw(sketch)
    horizon = 260
    for y in range(sketch.height):
        if y < horizon:
            colour = _blend((70, 130, 230), (180, 210, 245), y / horizon)
        else:
            colour = _blend((70, 160, 60), (30, 90, 30), (y - horizon) / (sketch.height - horizon))
        draw.line([(0, y), (sketch.width - 1, y)], fill=colour)
    draw.ellipse((200, 40, 260, 100), fill=SUN)
    draw.polygon([(20, horizon + 2), (110, 150), (200, horizon + 2)], fill=(105, 110, 135))
    view = sketch.resize(upright, Image.Resampling.BICUBIC)
    grain = Image.effect_noise((view.width // 4, view.height // 4), 24).resize(view.size)
    return Image.blend(view, grain.convert("RGB"), 0.08)


def sun_centre(picture: Image.Image) -> Colour:
    """The sun's colour, averaged over its centre, in a picture of the upright view at any size."""
    x, y = picture.width * 230 / 300, picture.height * 70 / 400
    radius = max(1, picture.width * 12 / 300)
    patch = picture.convert("RGB").crop((round(x - radius), round(y - radius), round(x + radius), round(y + radius)))
    red, green, blue = (round(channel) for channel in ImageStat.Stat(patch).mean)
    return red, green, blue


def photo_jpeg() -> bytes:
    """A 4000x3000 JPEG as a camera held upright stores it: sideways, with EXIF Orientation 6.

    Upright it is 3000x4000: sky on top, a meadow below, a sun and a mountain. The EXIF also holds a
    GPS position, which no thumbnail may carry.
    """
    upright = landscape((PHOTO_STORED[1], PHOTO_STORED[0]))
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "opsbots"
    exif[ExifTags.Base.Model] = "demo camera"
    exif[ExifTags.Base.Orientation] = 6  # "rotate 90° clockwise to show": the sensor's left edge is the top
    exif[ExifTags.Base.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (43.0, 42.0, 5.0),
        ExifTags.GPS.GPSLongitudeRef: "E",
        ExifTags.GPS.GPSLongitude: (7.0, 15.0, 58.0),
    }
    out = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


def phone_heic() -> tuple[bytes, Colour]:
    """The same view as an iPhone stores a portrait HEIC: the sensor's landscape picture, HEVC-coded,
    turned by the container's rotation (irot, which libheif writes from EXIF Orientation 6, kept in
    the EXIF too) and tagged with a Display P3 profile, its colour values P3's; and the sun's values."""
    import pillow_heif  # type: ignore[import-untyped]

    pillow_heif.register_heif_opener()
    upright = landscape((HEIC_STORED[1], HEIC_STORED[0]))
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Apple"
    exif[ExifTags.Base.Model] = "iPhone (demo)"
    exif[ExifTags.Base.Orientation] = 6
    stored.info["exif"] = exif.tobytes()  # pillow-heif writes the container's rotation from the picture's own EXIF
    out = io.BytesIO()
    stored.save(out, "HEIF", quality=80, exif=stored.info["exif"], icc_profile=DISPLAY_P3)
    return out.getvalue(), sun_centre(upright)


def in_srgb(colour: Colour, profile: bytes) -> Colour:
    """What `colour`, in `profile`, is in sRGB, by LittleCMS (the demo's expectation, not the bot's code)."""
    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    pixel = Image.new("RGB", (1, 1), colour)
    converted = ImageCms.applyTransform(
        pixel, ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), "RGB", "RGB")
    )
    assert converted is not None
    red, green, blue = converted.getpixel((0, 0))  # type: ignore[misc]
    return red, green, blue


def distance(one: Colour, other: Colour) -> int:
    return max(abs(a - b) for a, b in zip(one, other, strict=True))


def logo_png() -> bytes:
    """An opaque badge on a fully transparent background (RGBA)."""
    logo = Image.new("RGBA", LOGO_SIZE, (0, 0, 0, 0))
    draw = ImageDraw.Draw(logo)
    draw.rounded_rectangle((150, 100, 1050, 500), radius=120, fill=(232, 93, 4, 255))
    draw.ellipse((240, 190, 460, 410), fill=(255, 255, 255, 255))
    draw.rectangle((560, 260, 960, 340), fill=(255, 255, 255, 255))
    return _png(logo)


def notes_png() -> bytes:
    """A page of ruled notes (RGB)."""
    page = Image.new("RGB", NOTES_SIZE, (250, 248, 235))
    draw = ImageDraw.Draw(page)
    for y in range(60, page.height, 40):
        draw.line([(40, y), (page.width - 40, y)], fill=(150, 180, 220), width=2)
    draw.text((60, 70), "c++ notes: a + b", fill=(20, 20, 20))
    return _png(page)


def _png(picture: Image.Image) -> bytes:
    out = io.BytesIO()
    picture.save(out, "PNG")
    return out.getvalue()


def contained(source: tuple[int, int], box: Box) -> tuple[int, int]:
    """The size policies/thumbnails.yml promises: inside the box, aspect kept, never enlarged."""
    scale = min([1.0] + [edge / have for edge, have in zip(box, source, strict=True) if edge])
    return max(1, round(source[0] * scale)), max(1, round(source[1] * scale))


def box_text(box: Box) -> str:
    width, height = box
    if width and height:
        return f"inside {width}x{height}"
    return f"at most {width} wide" if width else f"at most {height} high"


def sky_on_top(picture: Image.Image) -> bool:
    """The upright photo: bluish along the top, greenish along the bottom."""
    rgb = picture.convert("RGB")
    band = max(1, rgb.height // 10)
    top = ImageStat.Stat(rgb.crop((0, 0, rgb.width, band))).mean
    bottom = ImageStat.Stat(rgb.crop((0, rgb.height - band, rgb.width, rgb.height))).mean
    return top[2] > max(top[:2]) and bottom[1] > max(bottom[0], bottom[2])


def alpha_kept(picture: Image.Image) -> bool:
    """RGBA, the corner fully transparent and the centre (the badge) fully opaque."""
    if picture.mode != "RGBA":
        return False
    corner = picture.getchannel("A").getpixel((0, 0))
    centre = picture.getchannel("A").getpixel((picture.width // 2, picture.height // 2))
    return corner == 0 and centre == 255


def thumbnail_keys(key: str) -> dict[str, str]:
    """Where policies/thumbnails.yml says an upload's thumbnails go, by size name (its own example:
    `uploads/summer holiday/été 01.JPG` gives `thumbnails/summer holiday/été 01/small.webp`)."""
    folder, slash, name = key.removeprefix(INPUT_PREFIX).rpartition("/")
    stem = name.rpartition(".")[0] or name
    return {size: f"{OUTPUT_PREFIX}{folder}{slash}{stem}/{size}.webp" for size in BOXES}


# ----- S3 as moto holds it, and the bot's calls -------------------------------------------------------------


@dataclass(frozen=True)
class Uploaded:
    key: str
    etag: str  # without quotes, as events carry it
    version: str
    size: int


@dataclass(frozen=True)
class Stored:
    """One object as moto holds it (its current version), opened with Pillow if it is a picture."""

    key: str
    etag: str
    version: str
    last_modified: datetime
    content_type: str
    metadata: Mapping[str, str]
    body: bytes

    @cached_property
    def picture(self) -> Image.Image:
        return Image.open(io.BytesIO(self.body))

    @property
    def dimensions(self) -> str:
        return f"{self.picture.width}x{self.picture.height}"

    @property
    def state(self) -> tuple[str, str, datetime]:
        return self.etag, self.version, self.last_modified

    @property
    def facts(self) -> dict[str, object]:
        """The thumbnail as the report states it: what Pillow reads in it, and what S3 holds about it."""
        return {
            "key": self.key,
            "format": self.picture.format,
            "width": self.picture.width,
            "height": self.picture.height,
            "mode": self.picture.mode,
            "content_type": self.content_type,
            "bytes": len(self.body),
            "metadata": self.metadata,
        }

    def names_source(self, uploaded: Uploaded) -> bool:
        return (
            unquote(self.metadata.get(SOURCE_KEY, "")) == uploaded.key
            and self.metadata.get(SOURCE_ETAG) == uploaded.etag
            and self.metadata.get(SOURCE_VERSION) == uploaded.version
        )


@dataclass(frozen=True)
class Delivery:
    """One invocation: the answer, the bot's S3 calls (operation, key), the events S3 sent meanwhile."""

    answer: Mapping[str, Any]
    calls: list[tuple[str, str]]
    emitted: list[dict[str, Any]]
    logs: list[dict[str, Any]]

    @property
    def status(self) -> str:
        return str(self.answer.get("status"))

    @property
    def reason(self) -> str:
        return str(self.answer.get("reason", ""))

    def made(self, *operations: str) -> list[str]:
        """The keys of the calls of these operations, in order."""
        return [key for operation, key in self.calls if operation in operations]

    @property
    def facts(self) -> dict[str, object]:
        """The answer's status and reason, and the bot's S3 calls as (operation, key)."""
        return {"status": self.status, "reason": self.reason, "s3_calls": self.calls}

    @property
    def operations(self) -> str:
        counted = Counter(operation for operation, _ in self.calls)
        return ", ".join(f"{op} ({n})" if n > 1 else op for op, n in sorted(counted.items())) or "none"


@contextmanager
def bot_s3_calls() -> Iterator[list[tuple[str, str]]]:
    """Every call the bot's own S3 client makes meanwhile, with the key it names; observe only."""
    from chalicelib.aws import HOME as LAMBDA_ACCOUNT
    from chalicelib.aws import Target
    from chalicelib.runtime import current

    client = current().clients.client("s3", Target(LAMBDA_ACCOUNT, REGION))
    seen: list[tuple[str, str]] = []

    def record(params: Mapping[str, Any], model: Any, **_: Any) -> None:
        seen.append((model.name, str(params.get("Key", ""))))

    client.meta.events.register("before-parameter-build.s3", record)
    try:
        yield seen
    finally:
        client.meta.events.unregister("before-parameter-build.s3", record)


def size_text(size: int) -> str:
    return f"{size:,} bytes"


def lines(*parts: str) -> str:
    """Each part folded to the timeline's width on its own line."""
    return "\n".join(wrapped(part) for part in parts)


def event_text(event: Mapping[str, Any]) -> str:
    """The fields of an S3 event a reader cares about, as compact JSON."""
    detail = event.get("detail", {})
    shown = {key: event.get(key) for key in ("id", "source", "detail-type", "time")}
    shown["detail"] = {key: detail[key] for key in ("bucket", "object", "reason") if key in detail}
    return json.dumps(shown, ensure_ascii=False)


def as_aws_sends(event: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """moto's event in AWS's documented shape, and what had to change for that."""
    repaired: dict[str, Any] = copy.deepcopy(dict(event))
    changes = []
    obj = repaired["detail"]["object"]
    if "eTag" in obj and "etag" not in obj:
        obj["etag"] = obj.pop("eTag")
        changes.append("object.eTag renamed etag, AWS's field name")
    repaired["id"] = str(uuid.uuid4())
    changes.append(f"moto's id {event['id']}, the same on every event, replaced by a fresh one")
    return repaired, changes


def answer_text(answer: Mapping[str, Any]) -> str:
    status = answer.get("status")
    if status == "written":
        written = len(answer.get("written", []))
        source = size_text(answer.get("source_bytes", 0))
        return f"written {written} thumbnail(s) from {source}, render {answer.get('render_ms')} ms"
    if status == "up-to-date":
        return f"up-to-date, {len(answer.get('current', []))} thumbnail(s) already made from this ETag"
    return f"{status}: {answer.get('reason')}"


@dataclass
class ThumbnailsChapter:
    stage: Stage
    queue: str = ""
    inbox: list[dict[str, Any]] = field(default_factory=list)  # every Object Created event S3 sent
    first_event: dict[str, Any] | None = None  # scene 1's event, delivered again in scene 3

    def play(self) -> bool:
        scenes: Sequence[tuple[str, Callable[[], bool]]] = (
            ("a 12-megapixel photo, stored sideways with EXIF Orientation 6, lands in uploads/", self.photo),
            ("an iPhone portrait in HEIC: turned by its container, its colours in Display P3", self.iphone),
            ("a logo on a transparent background", self.transparent),
            ("EventBridge delivers the photo's event a second time", self.duplicate),
            ("a text file named .jpg, and a JPEG cut off after its first third", self.corrupt),
            ("the bot's own writes come back as events", self.recursion),
            ("a key with '+' and spaces, used exactly as stored", self.plus_key),
        )
        return show.play_scenes("thumb", scenes)

    # ----- moto's state -----------------------------------------------------------------------------------

    @cached_property
    def s3(self) -> S3Client:
        return self.stage.s3

    @cached_property
    def sqs(self) -> SQSClient:
        return self.stage.sqs

    def stored(self, key: str) -> Stored:
        got = self.s3.get_object(Bucket=BUCKET, Key=key)
        with got["Body"] as body:
            data = body.read()
        return Stored(
            key,
            got["ETag"].strip('"'),
            got.get("VersionId", ""),
            got["LastModified"],
            got.get("ContentType", ""),
            got.get("Metadata", {}),
            data,
        )

    def keys(self, prefix: str = OUTPUT_PREFIX) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def versions(self) -> set[tuple[str, str]]:
        """Every version of every object under thumbnails/: a write of any kind adds one."""
        pages = self.s3.get_paginator("list_object_versions").paginate(Bucket=BUCKET, Prefix=OUTPUT_PREFIX)
        return {(v["Key"], v.get("VersionId", "")) for page in pages for v in page.get("Versions", [])}

    def drain(self, queue: str | None = None) -> list[dict[str, Any]]:
        """Every message waiting in the queue, parsed, then deleted; EventBridge's go to the inbox too."""
        url = queue or self.queue
        bodies: list[dict[str, Any]] = []
        while messages := self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            for message in messages:
                bodies.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        if queue is None:
            self.inbox.extend(bodies)
        return bodies

    def make_queue(self, name: str) -> tuple[str, str]:
        url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return url, arn

    # ----- acting -----------------------------------------------------------------------------------------

    def setup(self) -> None:
        from chalice.app import CloudWatchEventConfig

        from app import app

        self.s3.create_bucket(
            Bucket=BUCKET,
            CreateBucketConfiguration={"LocationConstraint": cast("BucketLocationConstraintType", REGION)},
        )
        self.s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        self.s3.put_bucket_notification_configuration(
            Bucket=BUCKET, NotificationConfiguration={"EventBridgeConfiguration": {}}
        )
        show.step(
            wrapped(
                f"home account {self.stage.home}: bucket {BUCKET} in {REGION}, versioning on, "
                "notifications to Amazon EventBridge on"
            )
        )
        pattern = next(
            source.event_pattern
            for source in app.event_sources
            if isinstance(source, CloudWatchEventConfig) and source.name == FUNCTION
        )
        self.queue, arn = self.make_queue(QUEUE)
        events: Any = self.stage.home.session.client("events")  # no type stubs installed for EventBridge
        events.put_rule(Name=RULE, EventPattern=json.dumps(pattern))
        events.put_targets(Rule=RULE, Targets=[{"Id": "demo-inbox", "Arn": arn}])
        show.step(
            lines(
                f"EventBridge rule {RULE} on the default bus → SQS {QUEUE}, where the demo reads what S3 sent;",
                f"its pattern is {FUNCTION}'s, from app.py: {json.dumps(pattern)}",
            )
        )
        self.show_policy()

    @staticmethod
    def show_policy() -> None:
        from chalicelib.runtime import current

        policy = current().policies.of(ThumbnailsPolicy)
        for rule in policy.buckets:
            sizes = ", ".join(f"{s.name} {s.width or '*'}x{s.height or '*'} {s.fit}" for s in rule.sizes)
            show.note(
                lines(
                    f"policies/thumbnails.yml: {rule.bucket} {rule.prefix} → {rule.destination} "
                    f"{rule.output_prefix}: {sizes}; {rule.format} quality {rule.quality}",
                    f"  limits: {size_text(policy.limits.max_bytes)}, {policy.limits.max_pixels:,} pixels",
                )
            )

    def upload(self, key: str, body: bytes, content_type: str, what: str) -> Uploaded:
        put = self.s3.put_object(Bucket=BUCKET, Key=key, Body=body, ContentType=content_type)
        uploaded = Uploaded(key, put["ETag"].strip('"'), put.get("VersionId", ""), len(body))
        show.step(
            lines(
                f"someone uploads s3://{BUCKET}/{key}: {what}, {size_text(len(body))}",
                f"ETag {uploaded.etag}, version {uploaded.version}",
            )
        )
        self.drain()
        return uploaded

    def sent_for(self, key: str) -> dict[str, Any]:
        """The newest event S3 sent about `key`, as moto built it."""
        found = [event for event in self.inbox if event["detail"]["object"]["key"] == key]
        if not found:
            raise LookupError(f"S3 sent no Object Created event for {key!r}")
        return found[-1]

    def event_for(self, key: str, *, explain: bool = False) -> dict[str, Any]:
        """The event S3 sent for `key`, in AWS's shape; `explain` shows moto's original and the repair."""
        sent = self.sent_for(key)
        event, changes = as_aws_sends(sent)
        if explain:
            show.step(f"the event moto's S3 sent through EventBridge to {QUEUE}:\n" + show.quoted(event_text(sent)))
            show.note(wrapped("in AWS's documented shape: " + "; ".join(changes), "    "))
        return event

    def deliver(self, event: Mapping[str, Any], what: str) -> Delivery:
        """`event` to the handler as Lambda would; a classic notification (`Records`), which no EventBridge
        rule delivers and Chalice's CloudWatchEvent cannot hold, straight to the handler's body."""
        from chalicelib.runtime import current
        from chalicelib.thumbnails.handlers import handle_upload

        classic = "Records" in event
        reader = "handle_upload" if classic else FUNCTION
        if classic:
            key = event["Records"][0]["s3"]["object"]["key"]
            show.step(wrapped(f"handle_upload, the body of {FUNCTION}, reads {what} (key {key!r})"))
        else:
            key = event["detail"]["object"]["key"]
            show.step(wrapped(f"EventBridge invokes {FUNCTION}: {what} (event {event['id'][:8]}…, key {key!r})"))
        started = time.perf_counter()
        with bot_s3_calls() as calls, bot_logs() as logs:
            if classic:
                runtime = current()
                answer = handle_upload(
                    event, policy=runtime.policies.of(ThumbnailsPolicy), deps=runtime.built(thumbnail_deps)
                )
            else:
                answer = self.stage.invoke(FUNCTION, event)
        elapsed = (time.perf_counter() - started) * 1000
        delivery = Delivery(answer, calls, self.drain(), logs)
        show.step(wrapped(f"{reader} answered in {elapsed:.0f} ms: {answer_text(answer)}"))
        for entry in logs:
            show.note(wrapped(f'the bot logged {entry.get("level")} "{entry.get("message")}"'))
        show.note(wrapped(f"S3 calls by the bot: {delivery.operations}"))
        if delivery.emitted:
            keys = ", ".join(event["detail"]["object"]["key"] for event in delivery.emitted)
            show.note(wrapped(f"S3 sent {len(delivery.emitted)} Object Created event(s) for its writes: {keys}"))
        return delivery

    def show_thumbnails(self, uploaded: Uploaded) -> dict[str, Stored]:
        """The thumbnails moto holds for an upload, by size name; shown with their dimensions and bytes."""
        folder = thumbnail_keys(uploaded.key)["small"].rpartition("/")[0] + "/"
        order = {key: index for index, key in enumerate(thumbnail_keys(uploaded.key).values())}
        held = sorted((self.stored(key) for key in self.keys(folder)), key=lambda t: order.get(t.key, len(order)))
        rows = [[t.key, t.dimensions, size_text(len(t.body)), t.content_type, t.picture.mode] for t in held]
        show.step(f"moto holds under {folder}\n" + (show.columns(rows) if rows else "  (nothing)"))
        if held:
            source = {name: held[0].metadata.get(name, "(none)") for name in (SOURCE_KEY, SOURCE_ETAG, SOURCE_VERSION)}
            show.note(lines(*(f"  {name}: {value}" for name, value in source.items())))
        return {t.key.rpartition("/")[2].removesuffix(".webp"): t for t in held}

    # ----- checks -----------------------------------------------------------------------------------------

    def check_written(
        self, checks: show.Checks, uploaded: Uploaded, upright: tuple[int, int], delivery: Delivery, *, key: str
    ) -> dict[str, Stored]:
        """What every upload that gets thumbnails must show in moto; returns the thumbnails by size name.
        Its checks' keys are `key` + ".written", ".exactly_these", ".size_<name>", ...."""
        wanted = thumbnail_keys(uploaded.key)
        checks.that(
            delivery.status == "written",
            "the handler wrote thumbnails",
            f"{delivery.answer}",
            key=f"{key}.written",
            facts={"upload": {"key": uploaded.key, "bytes": uploaded.size}, **delivery.facts},
        )
        thumbs = self.show_thumbnails(uploaded)
        checks.that(
            {size: thumb.key for size, thumb in thumbs.items()} == wanted,
            f"exactly {len(wanted)}: {', '.join(key.rpartition('/')[2] for key in wanted.values())}",
            f"{[thumb.key for thumb in thumbs.values()]}",
            key=f"{key}.exactly_these",
            facts={"wanted": wanted, "held": {size: thumb.key for size, thumb in thumbs.items()}},
        )
        for size, thumb in thumbs.items():
            expected = contained(upright, BOXES.get(size, (None, None)))
            checks.that(
                thumb.picture.format == "WEBP"
                and thumb.picture.size == expected
                and thumb.content_type == CONTENT_TYPE,
                f"{size}: a WebP {expected[0]}x{expected[1]}, {box_text(BOXES.get(size, (None, None)))}, "
                f"ContentType {CONTENT_TYPE}",
                f"{thumb.picture.format} {thumb.dimensions}, {thumb.content_type}",
                key=f"{key}.size_{size}",
                facts={"expected": {"width": expected[0], "height": expected[1]}, "thumbnail": thumb.facts},
            )
        checks.that(
            bool(thumbs) and all(thumb.names_source(uploaded) for thumb in thumbs.values()),
            "their metadata names the upload: its key (percent-encoded), ETag and version",
            f"{[dict(thumb.metadata) for thumb in thumbs.values()]}",
            key=f"{key}.metadata_names_upload",
            facts={
                "upload": {"key": uploaded.key, "etag": uploaded.etag, "version": uploaded.version},
                "metadata": {size: thumb.metadata for size, thumb in thumbs.items()},
            },
        )
        held = sorted((thumb.key, thumb.dimensions, len(thumb.body)) for thumb in thumbs.values())
        answered = sorted((w["key"], w["dimensions"], w["bytes"]) for w in delivery.answer.get("written", []))
        checks.that(
            held == answered,
            "the handler's answer (keys, dimensions, bytes) is what moto holds",
            f"{answered}",
            key=f"{key}.answer_is_moto_state",
            facts={"held": held, "answered": answered},
        )
        checks.that(
            delivery.made("GetObject") == [uploaded.key] and sorted(delivery.made(*WRITES)) == sorted(wanted.values()),
            f"the bot downloaded {uploaded.key.rpartition('/')[2]} once and wrote those {len(wanted)} only",
            f"{delivery.calls}",
            key=f"{key}.one_download_two_writes",
            facts={"downloads": delivery.made("GetObject"), "writes": delivery.made(*WRITES)},
        )
        return thumbs

    def nothing_written(
        self, checks: show.Checks, delivery: Delivery, before: set[tuple[str, str]], *, key: str
    ) -> None:
        new_versions = self.versions() - before
        checks.that(
            not delivery.made(*WRITES) and not new_versions and not delivery.emitted,
            f"nothing written: no write call, no new object version under {OUTPUT_PREFIX}, no event from S3",
            f"writes {delivery.made(*WRITES)}, {len(delivery.emitted)} event(s) from S3",
            key=key,
            facts={
                "writes": delivery.made(*WRITES),
                "new_versions": [version_key for version_key, _ in sorted(new_versions)],
                "events_from_s3": len(delivery.emitted),
            },
        )

    # ----- scenes -----------------------------------------------------------------------------------------

    def photo(self) -> bool:
        self.setup()
        uploaded = self.upload(
            PHOTO,
            photo_jpeg(),
            "image/jpeg",
            f"a {PHOTO_STORED[0]}x{PHOTO_STORED[1]} JPEG made with Pillow, the sky along its left edge, "
            "EXIF Orientation 6 (shown turned 90° clockwise: 3000x4000, sky on top) and a GPS position",
        )
        key = "thumb.photo"
        checks = show.Checks()
        sent = self.sent_for(PHOTO)
        event = self.event_for(PHOTO, explain=True)
        if "etag" not in sent["detail"]["object"]:
            before = self.versions()
            verbatim = self.deliver(sent, "moto's event verbatim")
            new_versions = self.versions() - before
            checks.that(
                verbatim.status == "malformed" and not verbatim.calls and not new_versions,
                "moto's event as sent is refused as malformed (no object.etag): no S3 call, nothing written",
                f"{verbatim.answer}",
                key=f"{key}.moto_event_refused",
                facts={
                    "event_object_fields": sorted(sent["detail"]["object"]),
                    **verbatim.facts,
                    "new_versions": len(new_versions),
                },
            )
        delivery = self.deliver(event, "the photo's event, in AWS's shape")
        self.first_event = event
        thumbs = self.check_written(checks, uploaded, (PHOTO_STORED[1], PHOTO_STORED[0]), delivery, key=key)
        checks.that(
            len(thumbs) == len(BOXES) and all(sky_on_top(thumb.picture) for thumb in thumbs.values()),
            "both are portrait with the sky on top: the EXIF rotation was applied, clockwise",
            key=f"{key}.upright",
            facts={"sky_on_top": {size: sky_on_top(thumb.picture) for size, thumb in thumbs.items()}},
        )
        checks.that(
            all(not thumb.picture.getexif() for thumb in thumbs.values()),
            "no EXIF in either: no Orientation to turn them a second time, no GPS position",
            f"{[dict(thumb.picture.getexif()) for thumb in thumbs.values()]}",
            key=f"{key}.no_exif",
            facts={"exif_tags": {size: len(thumb.picture.getexif()) for size, thumb in thumbs.items()}},
        )
        show.note(
            f"render (decode once, resize to {len(BOXES)} sizes, encode WebP): {delivery.answer.get('render_ms')} ms "
            f"for {uploaded.size / 1e6:.1f} MB of JPEG"
        )
        return checks.ok

    def iphone(self) -> bool:
        heic, sun = phone_heic()
        uploaded = self.upload(
            HEIC,
            heic,
            "image/heic",
            f"a {HEIC_STORED[0]}x{HEIC_STORED[1]} HEIC made with pillow-heif (libheif, x265) as an iPhone stores a "
            "portrait: sideways, turned by the container's rotation and EXIF Orientation 6, with a Display P3 "
            "ICC profile",
        )
        delivery = self.deliver(self.event_for(HEIC), "the HEIC")
        key = "thumb.iphone"
        checks = show.Checks()
        thumbs = self.check_written(checks, uploaded, (HEIC_STORED[1], HEIC_STORED[0]), delivery, key=key)
        checks.that(
            len(thumbs) == len(BOXES) and all(sky_on_top(thumb.picture) for thumb in thumbs.values()),
            "both are portrait with the sky on top: the container's rotation was applied, once",
            key=f"{key}.upright",
            facts={"sky_on_top": {size: sky_on_top(thumb.picture) for size, thumb in thumbs.items()}},
        )
        expected = in_srgb(sun, DISPLAY_P3)
        seen = {size: sun_centre(thumb.picture) for size, thumb in thumbs.items()}
        show.note(
            lines(
                f"the sun's centre: {sun} in Display P3 is {expected} in sRGB (LittleCMS's reading of the profile);",
                f"the thumbnails show {seen}",
            )
        )
        checks.that(
            bool(seen) and all(distance(colour, expected) <= 10 < distance(colour, sun) for colour in seen.values()),
            f"the sun is sRGB {expected} in both (within 10), not the P3 values {sun}: the profile was applied",
            f"{seen}",
            key=f"{key}.colours_in_srgb",
            facts={
                "sun_in_p3": sun,
                "sun_in_srgb": expected,
                "seen": seen,
                "distance_to_srgb": {size: distance(colour, expected) for size, colour in seen.items()},
                "distance_to_p3": {size: distance(colour, sun) for size, colour in seen.items()},
            },
        )
        checks.that(
            all("icc_profile" not in thumb.picture.info and not thumb.picture.getexif() for thumb in thumbs.values()),
            "neither carries a profile or EXIF: plain sRGB, nothing to turn them twice",
            key=f"{key}.no_profile_no_exif",
            facts={
                "icc_profile": {size: "icc_profile" in thumb.picture.info for size, thumb in thumbs.items()},
                "exif_tags": {size: len(thumb.picture.getexif()) for size, thumb in thumbs.items()},
            },
        )
        return checks.ok

    def transparent(self) -> bool:
        uploaded = self.upload(
            LOGO, logo_png(), "image/png", f"a {LOGO_SIZE[0]}x{LOGO_SIZE[1]} RGBA PNG, a badge on a transparent ground"
        )
        delivery = self.deliver(self.event_for(LOGO), "the logo")
        key = "thumb.transparent"
        checks = show.Checks()
        thumbs = self.check_written(checks, uploaded, LOGO_SIZE, delivery, key=key)
        checks.that(
            len(thumbs) == len(BOXES) and all(alpha_kept(thumb.picture) for thumb in thumbs.values()),
            "both keep the alpha channel (RGBA): the corner pixel is transparent, the badge's centre opaque",
            f"{[(thumb.picture.mode, thumb.picture.getpixel((0, 0))) for thumb in thumbs.values()]}",
            key=f"{key}.alpha_kept",
            facts={
                size: {"mode": thumb.picture.mode, "alpha_kept": alpha_kept(thumb.picture)}
                for size, thumb in thumbs.items()
            },
        )
        return checks.ok

    def duplicate(self) -> bool:
        key = "thumb.duplicate"
        checks = show.Checks()
        if self.first_event is None:
            return checks.that(False, "scene 1 left an event to deliver again", key=f"{key}.first_event")
        wanted = list(thumbnail_keys(PHOTO).values())
        before = {key: self.stored(key).state for key in wanted}
        versions = self.versions()
        delivery = self.deliver(self.first_event, "the photo's event again, the same id")
        after = {key: self.stored(key).state for key in wanted}
        show.step(wrapped(f"the photo's thumbnails in moto: {'unchanged' if after == before else 'CHANGED'}"))
        checks.that(
            delivery.status == "up-to-date" and sorted(delivery.answer.get("current", [])) == sorted(wanted),
            "the handler found both thumbnails up to date",
            f"{delivery.answer}",
            key=f"{key}.up_to_date",
            facts={"status": delivery.status, "current": delivery.answer.get("current", []), "wanted": wanted},
        )
        checks.that(
            not delivery.made("GetObject") and sorted(delivery.made("HeadObject")) == sorted(wanted),
            "no download: one HeadObject per thumbnail, whose metadata names this ETag",
            f"{delivery.operations}",
            key=f"{key}.no_download",
            facts={"s3_calls": delivery.calls},
        )
        checks.that(
            after == before,
            "both keep their ETag, version and LastModified",
            f"{before} → {after}",
            key=f"{key}.thumbnails_unchanged",
            facts={"before": before, "after": after},
        )
        self.nothing_written(checks, delivery, versions, key=f"{key}.nothing_written")
        return checks.ok

    def corrupt(self) -> bool:
        photo = self.stored(PHOTO).body
        cases = (
            (BROKEN, b"this is not a picture\n", "a text file named .jpg", "not an image"),
            (TRUNCATED, photo[: len(photo) // 3], "the photo's first third", "truncated"),
        )
        checks = show.Checks()
        for upload, body, what, reason in cases:
            key = f"thumb.corrupt.{upload.rpartition('/')[2].removesuffix('.jpg')}"
            versions = self.versions()
            self.upload(upload, body, "image/jpeg", what)
            delivery = self.deliver(self.event_for(upload), what)
            checks.that(
                delivery.status == "rejected" and reason in delivery.reason,
                f"{upload.rpartition('/')[2]}: rejected, the reason says {reason!r}",
                f"{delivery.answer}",
                key=f"{key}.rejected",
                facts={"upload": upload, "status": delivery.status, "reason": delivery.reason},
            )
            checks.that(
                delivery.made("GetObject") == [upload] and [e.get("level") for e in delivery.logs] == ["WARNING"],
                "downloaded once, then refused with a WARNING in the bot's log, no retry",
                f"{delivery.operations}; logs {delivery.logs}",
                key=f"{key}.one_download_one_warning",
                facts={
                    "downloads": delivery.made("GetObject"),
                    "bot_logs": [{"level": e.get("level"), "message": e.get("message")} for e in delivery.logs],
                },
            )
            self.nothing_written(checks, delivery, versions, key=f"{key}.nothing_written")
        outputs = [name for name in self.keys() if "/broken/" in name or "/truncated/" in name]
        checks.that(
            not outputs,
            f"nothing under {OUTPUT_PREFIX}broken/ or {OUTPUT_PREFIX}truncated/",
            key="thumb.corrupt.no_output",
            facts={"thumbnails": self.keys()},
        )
        return checks.ok

    def recursion(self) -> bool:
        key = "thumb.recursion"
        checks = show.Checks()
        small = thumbnail_keys(PHOTO)["small"]
        versions = self.versions()
        delivery = self.deliver(self.event_for(small), "S3's event for the small thumbnail written in scene 1")
        checks.that(
            delivery.status == "ignored" and "output prefix" in delivery.reason,
            f"ignored: the key is under the output prefix {OUTPUT_PREFIX}",
            f"{delivery.answer}",
            key=f"{key}.output_ignored",
            facts={"key": small, **delivery.facts},
        )
        checks.that(
            not delivery.calls,
            "the bot made no S3 call at all",
            f"{delivery.operations}",
            key=f"{key}.output_no_s3_call",
            facts={"s3_calls": delivery.calls},
        )
        self.nothing_written(checks, delivery, versions, key=f"{key}.output_nothing_written")

        self.s3.copy_object(Bucket=BUCKET, Key=COPIED, CopySource={"Bucket": BUCKET, "Key": small})
        self.drain()
        copied = self.stored(COPIED)
        show.step(
            lines(
                f"someone copies {small} to {COPIED}",
                f"copy_object keeps the metadata: {SOURCE_ETAG} {copied.metadata.get(SOURCE_ETAG)}",
            )
        )
        versions = self.versions()
        delivery = self.deliver(self.event_for(COPIED), "the copy, under uploads/")
        checks.that(
            delivery.status == "ignored" and "metadata" in delivery.reason,
            "ignored: it carries opsbots' thumbnail metadata, so it is a thumbnail wherever it lies",
            f"{delivery.answer}",
            key=f"{key}.copy_ignored",
            facts={"key": COPIED, "metadata": copied.metadata, **delivery.facts},
        )
        self.nothing_written(checks, delivery, versions, key=f"{key}.copy_nothing_written")
        return checks.ok

    def classic_notifications(self, prefix: str) -> str:
        """Classic notifications to a queue of their own, for keys under `prefix`, besides EventBridge."""
        url, arn = self.make_queue(CLASSIC_QUEUE)
        self.s3.put_bucket_notification_configuration(
            Bucket=BUCKET,
            NotificationConfiguration={
                "EventBridgeConfiguration": {},
                "QueueConfigurations": [
                    {
                        "Id": "for-comparison",
                        "QueueArn": arn,
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
                    }
                ],
            },
        )
        self.drain(url)  # S3's s3:TestEvent for the new configuration
        show.step(
            wrapped(f"for comparison, {BUCKET} also sends classic notifications for {prefix} to SQS {CLASSIC_QUEUE}")
        )
        return url

    def plus_key(self) -> bool:
        classic_queue = self.classic_notifications(PLUS.rpartition("/")[0] + "/")
        uploaded = self.upload(PLUS, notes_png(), "image/png", f"an {NOTES_SIZE[0]}x{NOTES_SIZE[1]} PNG of ruled notes")
        event = self.event_for(PLUS)
        records = [body for body in self.drain(classic_queue) if "Records" in body]
        eventbridge_key = event["detail"]["object"]["key"]
        classic_key = records[0]["Records"][0]["s3"]["object"]["key"] if records else "(none)"
        rows = [
            ["EventBridge's key", repr(eventbridge_key), "as stored"],
            ["the classic notification's key", repr(classic_key), "form-encoded"],
            ["unquote_plus of EventBridge's", repr(unquote_plus(eventbridge_key)), "no such object"],
        ]
        show.note(show.columns(rows, indent=""))
        if "%2F" in classic_key:
            show.note("(moto encodes '/' in classic keys too, as %2F; AWS leaves '/' as it is)")
        delivery = self.deliver(event, "the notes")

        key = "thumb.plus_key"
        checks = show.Checks()
        checks.that(
            eventbridge_key == PLUS and classic_key != PLUS and unquote_plus(classic_key) == PLUS,
            "S3 sent the key raw to EventBridge, form-encoded in the classic notification",
            f"{eventbridge_key!r}, {classic_key!r}",
            key=f"{key}.keys_as_sent",
            facts={"eventbridge_key": eventbridge_key, "classic_key": classic_key},
        )
        checks.that(
            delivery.made("GetObject") == [PLUS],
            f"the bot read {PLUS!r} exactly as stored, undecoded",
            f"{delivery.calls}",
            key=f"{key}.read_as_stored",
            facts={"downloads": delivery.made("GetObject")},
        )
        self.check_written(checks, uploaded, NOTES_SIZE, delivery, key=key)
        mangled = [name for name in self.keys() if "c   notes" in name or "a b photo" in name]
        checks.that(
            not mangled,
            "nothing under a decoded name ('c   notes', 'a b photo')",
            f"{mangled}",
            key=f"{key}.no_decoded_name",
            facts={"thumbnails": self.keys()},
        )
        if records:
            versions = self.versions()
            again = self.deliver(records[0], "the classic notification of the same upload")
            checks.that(
                again.status == "up-to-date" and not again.made("GetObject"),
                "the classic key, decoded once by the bot, is the same object: up-to-date, no download",
                f"{again.answer}",
                key=f"{key}.classic_up_to_date",
                facts=again.facts,
            )
            self.nothing_written(checks, again, versions, key=f"{key}.classic_nothing_written")
        return checks.ok


def run(stage: Stage) -> bool:
    return ThumbnailsChapter(stage).play()
