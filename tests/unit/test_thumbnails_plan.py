"""The thumbnail bot's decisions on plain data: which keys, which sizes, what to write. No AWS, no Pillow."""

from __future__ import annotations

import copy
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.events import IgnoredEvent, MalformedEventError
from chalicelib.thumbnails.decisions import (
    DRAFT_GAP,
    SOURCE_ETAG,
    SOURCE_KEY,
    SOURCE_MODIFIED,
    SOURCE_VERSION,
    Dimensions,
    Existing,
    Output,
    Plan,
    RejectedUpload,
    Write,
    decode_request,
    fit,
    made_from_a_later_upload,
    output_format,
    output_key,
    plan_thumbnails,
    thumbnail_metadata,
    to_write,
)
from chalicelib.thumbnails.events import ObjectCreated, parse_object_created
from chalicelib.thumbnails.policy import ThumbnailBucket, ThumbnailLimits, ThumbnailSize, ThumbnailsPolicy
from tests.support.aws import load_event

SMALL = ThumbnailSize(name="small", width=256, height=256)
LARGE = ThumbnailSize(name="large", width=1024)
SQUARE = ThumbnailSize(name="square", width=200, height=200, fit="cover")
RULE = ThumbnailBucket(bucket="photos-upload", prefix="uploads/", output_prefix="thumbnails/", sizes=(SMALL, LARGE))
POLICY = ThumbnailsPolicy(buckets=(RULE,), limits=ThumbnailLimits(max_bytes=1000))
ETAG = "7f3e9a1c5b2d8e4f6a0c9b3d1e7f5a28"


def upload(key: str = "uploads/a.jpg", size: int | None = 10, bucket: str = "photos-upload") -> ObjectCreated:
    return ObjectCreated("event-1", "eu-west-1", bucket, key, size, ETAG, None)


# ----- events: keys decoded exactly once ------------------------------------------------------------


def test_both_sample_events_name_the_same_upload() -> None:
    (bridge,) = parse_object_created(load_event("s3-object-created"))
    (classic,) = parse_object_created(load_event("s3-notification-put"))

    assert bridge.key == classic.key == "uploads/summer holiday/été 01.JPG"
    assert (bridge.bucket, bridge.etag, bridge.size, bridge.version_id) == (
        classic.bucket,
        classic.etag,
        classic.size,
        classic.version_id,
    )


@pytest.mark.parametrize(
    ("stored", "classic"),
    [
        ("c++ notes/a+b photo.png", "c%2B%2B+notes/a%2Bb+photo.png"),
        ("100%25.png", "100%2525.png"),
        ("été 01.JPG", "%C3%A9t%C3%A9+01.JPG"),
        ("time:12:00.jpg", "time%3A12%3A00.jpg"),
    ],
)
def test_eventbridge_keys_are_used_as_stored_and_classic_keys_decoded_once(stored: str, classic: str) -> None:
    bridge_event = load_event("s3-object-created")
    bridge_event["detail"]["object"]["key"] = stored
    classic_event = load_event("s3-notification-put")
    classic_event["Records"][0]["s3"]["object"]["key"] = classic

    assert parse_object_created(bridge_event)[0].key == stored
    assert parse_object_created(classic_event)[0].key == stored


def _without(path: tuple[str, ...]) -> dict[str, Any]:
    event = load_event("s3-object-created")
    node = event
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    return event


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(_without(("detail", "object", "key")), id="no-key"),
        pytest.param(_without(("detail", "object", "etag")), id="no-etag"),
        pytest.param(_without(("detail", "bucket")), id="no-bucket"),
        pytest.param(_without(("detail",)), id="no-detail"),
        pytest.param({**load_event("s3-object-created"), "detail": "uploads/a.jpg"}, id="detail-not-an-object"),
        pytest.param({"Records": [{"eventName": "ObjectCreated:Put"}]}, id="classic-without-s3"),
        pytest.param({"Records": "nope"}, id="classic-records-not-a-list"),
    ],
)
def test_a_malformed_s3_event_is_skipped_with_a_reason(event: dict[str, Any]) -> None:
    with pytest.raises(MalformedEventError):
        parse_object_created(event)


def test_other_s3_notifications_are_ignored() -> None:
    deleted = {**load_event("s3-object-created"), "detail-type": "Object Deleted"}
    classic = copy.deepcopy(load_event("s3-notification-put"))
    classic["Records"][0]["eventName"] = "ObjectRemoved:Delete"

    for event in (deleted, classic):
        with pytest.raises(IgnoredEvent):
            parse_object_created(event)


# ----- keys and formats -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("uploads/summer holiday/été 01.JPG", "thumbnails/summer holiday/été 01/small.webp"),
        ("uploads/a.jpg", "thumbnails/a/small.webp"),
        ("uploads/c++ notes/a+b photo.png", "thumbnails/c++ notes/a+b photo/small.webp"),
        ("uploads/archive.tar.gz", "thumbnails/archive.tar/small.webp"),
        ("uploads/v1.2/photo", "thumbnails/v1.2/photo/small.webp"),  # only the file name loses its extension
        ("uploads/.hidden", "thumbnails/.hidden/small.webp"),
        ("uploads/photo.", "thumbnails/photo/small.webp"),
    ],
)
def test_output_keys_replace_prefix_and_extension(key: str, expected: str) -> None:
    assert output_key(key, RULE, "small", "webp") == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("uploads/a.JPG", "jpeg"),
        ("uploads/a.jpeg", "jpeg"),
        ("uploads/a.png", "png"),
        ("uploads/a.WebP", "webp"),
        ("uploads/a.gif", "png"),
        ("uploads/a.tiff", "png"),
        ("uploads/jpg", "png"),
    ],
)
def test_same_format_follows_the_extension_and_falls_back_to_png(key: str, expected: str) -> None:
    same = RULE.model_copy(update={"format": "same"})

    assert output_format(same, key) == expected
    assert output_format(RULE, key) == "webp"


def test_a_plan_lists_every_size_in_the_destination_bucket() -> None:
    plan = plan_thumbnails(upload("uploads/trip/a.jpg"), POLICY)

    assert plan.bucket == "photos-upload"
    assert [output.key for output in plan.outputs] == ["thumbnails/trip/a/small.webp", "thumbnails/trip/a/large.webp"]
    assert (plan.output_format, plan.quality) == ("webp", 82)


@pytest.mark.parametrize(
    ("event", "verdict", "reason"),
    [
        (upload("thumbnails/a/small.webp"), IgnoredEvent, "under an output prefix"),
        (upload("elsewhere/a.jpg"), IgnoredEvent, "no thumbnails.yml entry"),
        (upload("uploads/a.jpg", bucket="other-bucket"), IgnoredEvent, "no thumbnails.yml entry"),
        (upload("uploads/folder/", size=0), IgnoredEvent, "folder marker"),
        (upload("uploads/huge.jpg", size=1001), RejectedUpload, "1001 bytes is over limits.max_bytes (1000)"),
        (upload("uploads/" + "x" * 1010 + ".jpg"), RejectedUpload, "thumbnail key over 1024 bytes"),
    ],
)
def test_what_gets_no_thumbnails_and_why(event: ObjectCreated, verdict: type[Exception], reason: str) -> None:
    with pytest.raises(verdict, match=reason.replace("(", r"\(").replace(")", r"\)")) as raised:
        plan_thumbnails(event, POLICY)

    assert raised.value.subject == {"bucket": event.bucket, "key": event.key}  # type: ignore[attr-defined]


def test_an_upload_of_exactly_max_bytes_is_planned() -> None:
    assert plan_thumbnails(upload(size=1000), POLICY).outputs


# ----- what to write --------------------------------------------------------------------------------

PLAN = Plan(upload(), "photos-upload", "webp", 82, (Output("t/small.webp", SMALL), Output("t/large.webp", LARGE)))
OURS_NOW = Existing("e1", "uploads/a.jpg", ETAG)
OURS_BEFORE = Existing("e2", "uploads/a.jpg", "an-older-etag")
OTHER_SOURCE = Existing("e3", "uploads/a.png", ETAG)
FOREIGN = Existing("e4", None, None)


@pytest.mark.parametrize(
    ("existing", "writes", "current", "conflicts"),
    [
        ({}, [("t/small.webp", None), ("t/large.webp", None)], [], []),
        ({"t/small.webp": OURS_NOW, "t/large.webp": OURS_NOW}, [], ["t/small.webp", "t/large.webp"], []),
        ({"t/small.webp": OURS_NOW}, [("t/large.webp", None)], ["t/small.webp"], []),
        (
            {"t/small.webp": OURS_BEFORE, "t/large.webp": OURS_BEFORE},
            [("t/small.webp", "e2"), ("t/large.webp", "e2")],
            [],
            [],
        ),
        ({"t/small.webp": OTHER_SOURCE}, [("t/small.webp", "e3"), ("t/large.webp", None)], [], []),
        ({"t/small.webp": FOREIGN}, [("t/large.webp", None)], [], ["t/small.webp"]),
    ],
    ids=["new", "duplicate", "half-done", "new-version", "same-name-other-upload", "foreign-object"],
)
def test_what_to_write(
    existing: dict[str, Existing | None],
    writes: list[tuple[str, str | None]],
    current: list[str],
    conflicts: list[str],
) -> None:
    decision = to_write(PLAN, existing)

    assert [(write.output.key, write.replaces) for write in decision.writes] == writes
    assert [output.key for output in decision.current] == current
    assert [output.key for output in decision.conflicts] == conflicts
    assert [output.key for output in decision.taken_over] == (
        ["t/small.webp"] if existing == {"t/small.webp": OTHER_SOURCE} else []
    )


def test_thumbnail_metadata_is_ascii_and_names_its_source() -> None:
    source = ObjectCreated("e", "eu-west-1", "b", "uploads/été 01+x.JPG", 1, ETAG, "v1")

    metadata = thumbnail_metadata(source, SMALL, Dimensions(256, 171))

    assert all(value.isascii() for value in metadata.values())
    assert metadata[SOURCE_KEY] == "uploads/%C3%A9t%C3%A9%2001%2Bx.JPG"
    assert (metadata[SOURCE_ETAG], metadata[SOURCE_VERSION]) == (ETAG, "v1")
    assert SOURCE_VERSION not in thumbnail_metadata(upload(), SMALL, Dimensions(1, 1))


def test_writes_of_a_new_key_require_it_to_be_free() -> None:
    assert to_write(PLAN, {}).writes[0] == Write(PLAN.outputs[0], None)


# ----- two uploads sharing thumbnail names: the later one wins, whatever the order of the events ---------

STORED = datetime(2025, 6, 14, 9, 12, 3, tzinfo=UTC)


@pytest.mark.parametrize(
    ("other_key", "other_stored", "kept"),
    [
        pytest.param("uploads/a.png", STORED + timedelta(seconds=1), True, id="other-upload-later"),
        pytest.param("uploads/a.png", STORED - timedelta(seconds=1), False, id="other-upload-earlier"),
        pytest.param("uploads/a.png", STORED, True, id="same-second-greater-key-wins"),
        pytest.param("uploads/a.gif", STORED, False, id="same-second-smaller-key-loses"),
        pytest.param("uploads/a.png", None, False, id="other-upload-time-unknown"),
        pytest.param("uploads/a.jpg", STORED + timedelta(days=1), False, id="same-key-older-version-of-ours"),
    ],
)
def test_a_thumbnail_made_from_a_later_upload_of_the_same_name_is_kept(
    other_key: str, other_stored: datetime | None, kept: bool
) -> None:
    existing: dict[str, Existing | None] = {"t/small.webp": Existing("e3", other_key, "other-etag", other_stored)}
    decision = to_write(PLAN, existing)

    later = made_from_a_later_upload(decision.writes, existing, PLAN.upload, STORED)

    assert [write.output.key for write in later] == (["t/small.webp"] if kept else [])


def test_the_later_of_two_uploads_wins_in_either_order() -> None:
    jpg, png = upload("uploads/a.jpg"), upload("uploads/a.png")
    times = {jpg.key: STORED, png.key: STORED + timedelta(seconds=1)}

    def winner(first: ObjectCreated, second: ObjectCreated) -> str:
        held = Existing("e", first.key, first.etag, times[first.key])
        plan = plan_thumbnails(second, POLICY)
        existing: dict[str, Existing | None] = {output.key: held for output in plan.outputs}
        later = made_from_a_later_upload(to_write(plan, existing).writes, existing, second, times[second.key])
        return first.key if later else second.key

    assert winner(jpg, png) == winner(png, jpg) == "uploads/a.png"


def test_thumbnail_metadata_records_when_the_upload_was_stored_in_utc() -> None:
    metadata = thumbnail_metadata(upload(), SMALL, Dimensions(1, 1), STORED.astimezone(UTC))

    assert metadata[SOURCE_MODIFIED] == "2025-06-14T09:12:03+00:00"
    assert SOURCE_MODIFIED not in thumbnail_metadata(upload(), SMALL, Dimensions(1, 1))


# ----- hostile keys: every thumbnail key starts with the output prefix ------------------------------------


@pytest.mark.parametrize(
    ("key", "small"),
    [
        ("uploads/../escape.jpg", "thumbnails/../escape/small.webp"),
        ("uploads/../../escape.jpg", "thumbnails/../../escape/small.webp"),
        ("uploads/a/../../../escape.jpg", "thumbnails/a/../../../escape/small.webp"),
        ("uploads/./dot.jpg", "thumbnails/./dot/small.webp"),
        ("uploads//lead.jpg", "thumbnails//lead/small.webp"),
        ("uploads/%2e%2e/encoded.jpg", "thumbnails/%2e%2e/encoded/small.webp"),
        ("uploads/..%2f..%2fencoded.jpg", "thumbnails/..%2f..%2fencoded/small.webp"),
        ("uploads/..\\..\\windows.jpg", "thumbnails/..\\..\\windows/small.webp"),
        ("uploads/..", "thumbnails/./small.webp"),
    ],
)
def test_dot_segments_in_an_upload_key_stay_under_the_output_prefix(key: str, small: str) -> None:
    # S3 keys are literal: "thumbnails/../x" is a key under "thumbnails/", and only ever that.
    outputs = plan_thumbnails(upload(key), POLICY).outputs

    assert outputs[0].key == small
    assert all(output.key.startswith(RULE.output_prefix) for output in outputs)


@given(st.text(min_size=1, max_size=200).filter(lambda rest: not rest.endswith("/")))
def test_every_thumbnail_key_starts_with_the_output_prefix(rest: str) -> None:
    for size in (SMALL, LARGE):
        assert output_key(f"uploads/{rest}", RULE, size.name, "webp").startswith("thumbnails/")


# ----- geometry -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "size", "expected", "crop"),
    [
        ((6000, 4000), SMALL, (256, 171), (0, 0, 6000, 4000)),
        ((4000, 6000), SMALL, (171, 256), (0, 0, 4000, 6000)),
        ((6000, 4000), LARGE, (1024, 683), (0, 0, 6000, 4000)),
        ((6000, 4000), SQUARE, (200, 200), (1000, 0, 5000, 4000)),
        ((4000, 6000), SQUARE, (200, 200), (0, 1000, 4000, 5000)),
        ((100, 80), SMALL, (100, 80), (0, 0, 100, 80)),
        ((100, 80), SQUARE, (80, 80), (10, 0, 90, 80)),
        ((300, 100), SQUARE, (100, 100), (100, 0, 200, 100)),
        (
            (80, 300),
            ThumbnailSize(name="wide", width=300, height=100, fit="cover"),
            (80, 27),
            (0, 410 / 3, 80, 490 / 3),
        ),
        ((10000, 1), SMALL, (256, 1), (0, 0, 10000, 1)),
    ],
)
def test_fit(
    source: tuple[int, int], size: ThumbnailSize, expected: tuple[int, int], crop: tuple[int, int, int, int]
) -> None:
    geometry = fit(Dimensions(*source), size)

    assert (geometry.width, geometry.height) == expected
    assert geometry.crop == pytest.approx(crop)


edges = st.integers(min_value=1, max_value=20_000)
boxes = st.integers(min_value=1, max_value=8192)
sizes = st.one_of(
    st.builds(lambda w, h: ThumbnailSize(name="s", width=w, height=h), boxes, boxes),
    st.builds(lambda w: ThumbnailSize(name="s", width=w), boxes),
    st.builds(lambda h: ThumbnailSize(name="s", height=h), boxes),
    st.builds(lambda w, h: ThumbnailSize(name="s", width=w, height=h, fit="cover"), boxes, boxes),
)


@given(edges, edges, sizes)
def test_a_thumbnail_never_enlarges_and_stays_in_its_box(width: int, height: int, size: ThumbnailSize) -> None:
    geometry = fit(Dimensions(width, height), size)
    left, top, right, bottom = geometry.crop

    assert 1 <= geometry.width <= min(width, size.width or width)
    assert 1 <= geometry.height <= min(height, size.height or height)
    assert 0 <= left < right <= width
    assert 0 <= top < bottom <= height


@given(edges, edges, sizes)
def test_contain_keeps_the_aspect_ratio_and_cover_fills_the_box(width: int, height: int, size: ThumbnailSize) -> None:
    geometry = fit(Dimensions(width, height), size)

    if size.fit == "contain":
        # Each edge is rounded to whole pixels (at least 1): off by under one pixel times the other edge.
        assert abs(geometry.width * height - geometry.height * width) <= width + height
    else:
        # The box's shape (to the pixel), and the box itself whenever the picture is big enough.
        assert size.width is not None
        assert size.height is not None
        assert abs(geometry.width * size.height - geometry.height * size.width) <= size.width + size.height
        if width >= size.width and height >= size.height:
            assert (geometry.width, geometry.height) == (size.width, size.height)


@given(edges, edges, st.lists(sizes, min_size=1, max_size=4))
def test_the_decode_is_big_enough_for_every_size(width: int, height: int, wanted: list[ThumbnailSize]) -> None:
    source = Dimensions(width, height)
    request = decode_request(source, wanted)

    assert request.width <= width
    assert request.height <= height
    for size in wanted:
        geometry = fit(source, size)
        shown = geometry.crop[2] - geometry.crop[0]
        decoded = shown * request.width / width
        # Each thumbnail is resampled from at least DRAFT_GAP times its pixels, unless that is the whole source.
        assert decoded >= min(shown, geometry.width * DRAFT_GAP) - 1


def test_a_24_megapixel_photo_is_decoded_at_an_eighth_for_256_pixels() -> None:
    request = decode_request(Dimensions(6000, 4000), [SMALL])

    assert request == Dimensions(256, 171)  # libjpeg then picks 1/8: 750x500
    assert math.ceil(6000 / 8) >= request.width
