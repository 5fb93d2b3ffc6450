"""chalicelib.thumbnails.imaging: upright, sRGB, never enlarged thumbnails; anything else is UnusableImageError.

Every input is made here, with Pillow or, for what Pillow will not write (16-bit RGB, bomb headers,
ICC profiles), with struct and zlib: no binary fixtures.
"""

from __future__ import annotations

import faulthandler
import io
import os
import random
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image, ImageCms, JpegImagePlugin

from chalicelib.thumbnails.decisions import FUNCTION_MEMORY_MB, OutputFormat, decode_budget
from chalicelib.thumbnails.imaging import Rendered, UnusableImageError, in_child, render
from chalicelib.thumbnails.policy import ThumbnailSize
from demo.icc import D50, SRGB_BLUE, SRGB_GREEN, SRGB_RED, description, icc_profile, rgb_profile, s15fixed16, xyz
from tests.support.aws import ROOT

Colour = tuple[int, int, int]
RED: Colour = (255, 0, 0)
GREEN: Colour = (0, 255, 0)
BLUE: Colour = (0, 0, 255)
YELLOW: Colour = (255, 255, 0)
CYAN: Colour = (0, 255, 255)
MAGENTA: Colour = (255, 0, 255)
WHITE: Colour = (255, 255, 255)
BLACK: Colour = (0, 0, 0)
GREY: Colour = (128, 128, 128)
MAX_PIXELS = 100 * 10**6  # the policy default
BUDGET = decode_budget(FUNCTION_MEMORY_MB, 0)  # the deployed function's
OUTPUTS: tuple[OutputFormat, ...] = ("png", "webp", "jpeg", "avif")
MAGIC = {"png": (0, b"\x89PNG\r\n\x1a\n"), "jpeg": (0, b"\xff\xd8\xff"), "webp": (0, b"RIFF"), "avif": (4, b"ftypavif")}


# ---------------------------------------------------------------------------------------------
# Helpers: sizes, encoding, rendering, colour comparison
# ---------------------------------------------------------------------------------------------


def box(width: int | None = 64, height: int | None = 64, fit: str = "contain", name: str = "box") -> ThumbnailSize:
    return ThumbnailSize(name=name, width=width, height=height, fit=fit)


def encode(image: Image.Image, image_format: str, **params: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, image_format, **params)
    return out.getvalue()


def has_magic(body: bytes, output_format: OutputFormat) -> bool:
    at, magic = MAGIC[output_format]
    return body[at : at + len(magic)] == magic


def opened(body: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    image.load()
    return image


def render_one(
    data: bytes,
    size: ThumbnailSize | None = None,
    *,
    output_format: OutputFormat = "png",
    quality: int = 90,
    max_pixels: int = MAX_PIXELS,
    memory_budget: int = BUDGET,
) -> tuple[Rendered, Image.Image]:
    (rendered,) = render(
        data,
        [size or box()],
        output_format=output_format,
        quality=quality,
        max_pixels=max_pixels,
        memory_budget=memory_budget,
    )
    return rendered, opened(rendered.body)


def rgb_at(image: Image.Image, x: int, y: int) -> Colour:
    pixel = image.convert("RGB").getpixel((x, y))
    assert isinstance(pixel, tuple)
    red, green, blue = pixel
    return red, green, blue


def alpha_at(image: Image.Image, x: int, y: int) -> int:
    if "A" not in image.getbands():
        return 255
    alpha = image.getchannel("A").getpixel((x, y))
    assert isinstance(alpha, int)
    return alpha


def near(actual: Colour, expected: Colour, tolerance: int = 24) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def nearest(actual: Colour, palette: tuple[Colour, ...]) -> Colour:
    return min(palette, key=lambda colour: sum((a - c) ** 2 for a, c in zip(actual, colour, strict=True)))


def noise(width: int, height: int) -> Image.Image:
    """A picture that compresses badly, so truncating or re-encoding it changes something."""
    return Image.merge("RGB", [Image.effect_noise((width, height), 80) for _ in range(3)])


# ---------------------------------------------------------------------------------------------
# Orientation: four coloured quadrants, stored as the EXIF specification describes each tag
# ---------------------------------------------------------------------------------------------

QUADRANTS = (RED, GREEN, BLUE, YELLOW)  # upright: top-left, top-right, bottom-left, bottom-right


def upright_picture(width: int, height: int) -> Image.Image:
    image = Image.new("RGB", (width, height))
    half_w, half_h = width // 2, height // 2
    for colour, (left, top) in zip(QUADRANTS, ((0, 0), (half_w, 0), (0, half_h), (half_w, half_h)), strict=True):
        image.paste(colour, (left, top, left + half_w, top + half_h))
    return image


def shown_at(orientation: int, x: float, y: float, width: int, height: int) -> tuple[float, float]:
    """Where stored point (x, y) is seen upright, from the EXIF 2.3 text for tag 0x0112.

    1-4: row 0 is the visual top (1, 2) or bottom (3, 4); column 0 the left (1, 4) or right (2, 3).
    5-8: row 0 is the visual left (5, 8) or right (6, 7); column 0 the top (5, 6) or bottom (7, 8).
    `width` and `height` are the upright picture's.
    """
    return {
        1: (x, y),
        2: (width - x, y),
        3: (width - x, height - y),
        4: (x, height - y),
        5: (y, x),
        6: (width - y, x),
        7: (width - y, height - x),
        8: (y, height - x),
    }[orientation]


def stored_picture(orientation: int, width: int, height: int) -> Image.Image:
    """The upright quadrants picture as a camera stores it before tagging it with `orientation`."""
    stored_w, stored_h = (height, width) if orientation >= 5 else (width, height)
    image = Image.new("RGB", (stored_w, stored_h))
    half_w, half_h = stored_w // 2, stored_h // 2
    for left, top in ((0, 0), (half_w, 0), (0, half_h), (half_w, half_h)):
        x, y = shown_at(orientation, left + half_w / 2, top + half_h / 2, width, height)
        colour = QUADRANTS[(y >= height / 2) * 2 + (x >= width / 2)]
        image.paste(colour, (left, top, left + half_w, top + half_h))
    return image


def exif_with(**tags: Any) -> Image.Exif:
    exif = Image.Exif()
    for name, value in tags.items():
        exif[ExifTags.Base[name]] = value
    return exif


def assert_upright(image: Image.Image) -> None:
    width, height = image.size
    centres = [(x, y) for y in (height // 4, 3 * height // 4) for x in (width // 4, 3 * width // 4)]
    seen = tuple(nearest(rgb_at(image, x, y), QUADRANTS) for x, y in centres)
    assert seen == QUADRANTS


def test_the_orientation_helper_matches_the_specifications_description() -> None:
    # Given the spec's own example: tag 6 is a landscape sensor held upright, shown after rotating 90 degrees clockwise
    stored = stored_picture(6, 40, 80)
    # When the stored picture is rotated clockwise by hand
    # Then it is the upright picture (this checks the helper, independently of Pillow's exif_transpose)
    assert stored.size == (80, 40)
    assert_upright(stored.transpose(Image.Transpose.ROTATE_270))


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_comes_out_upright(orientation: int, image_format: str) -> None:
    # Given a landscape picture stored rotated or mirrored, tagged with the EXIF orientation that undoes it
    # (320x160 into a 64 box: a JPEG decodes at half size, so draft and orientation meet)
    data = encode(stored_picture(orientation, 320, 160), image_format, exif=exif_with(Orientation=orientation))
    # When it is rendered
    rendered, image = render_one(data, box(64, 64))
    # Then the thumbnail is landscape and each colour is in its upright corner
    assert (rendered.width, rendered.height) == image.size == (64, 32)
    assert_upright(image)
    assert not image.getexif()


def test_an_orientation_in_xmp_only_is_applied_too() -> None:
    # Given a picture whose only orientation is in its XMP (as some editors write it)
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description tiff:Orientation="8"/></x:xmpmeta>'
    data = encode(stored_picture(8, 320, 160), "JPEG", xmp=xmp)
    # When it is rendered
    _, image = render_one(data)
    # Then it comes out upright
    assert image.size == (64, 32)
    assert_upright(image)


@pytest.mark.parametrize("value", [0, 9, 255, 65535])
def test_an_invalid_orientation_is_ignored(value: object) -> None:
    # Given an upright picture whose orientation tag holds nonsense
    data = encode(upright_picture(320, 160), "JPEG", exif=exif_with(Orientation=value))
    # When it is rendered
    _, image = render_one(data)
    # Then it is left as stored
    assert image.size == (64, 32)
    assert_upright(image)


# ---------------------------------------------------------------------------------------------
# Phones' formats: HEIC and AVIF, turned by their container, with their colour profile
# ---------------------------------------------------------------------------------------------


def phone_picture(image: Image.Image, image_format: str, orientation: int = 1, **params: Any) -> bytes:
    """A HEIC or AVIF as a phone writes one: the turn in the container (irot/imir) and in EXIF too.

    Both encoders (libheif through pillow-heif, libavif through Pillow) turn the EXIF orientation
    they are given into the container's own transformation boxes, as an iPhone stores a portrait.
    """
    if image_format == "HEIF":
        import pillow_heif  # type: ignore[import-untyped]

        pillow_heif.register_heif_opener()
    image.info["exif"] = exif_with(Orientation=orientation).tobytes()  # pillow-heif reads it from info
    return encode(image, image_format, exif=image.info["exif"], quality=90, **params)


@pytest.mark.parametrize("image_format", ["HEIF", "AVIF"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_heic_and_avif_come_out_upright(orientation: int, image_format: str) -> None:
    # Given a landscape picture stored turned, in HEIC or AVIF, with the turn recorded as a phone does
    data = phone_picture(stored_picture(orientation, 320, 160), image_format, orientation)
    # When it is rendered
    rendered, image = render_one(data, box(64, 64))
    # Then the thumbnail is landscape and each colour is in its upright corner
    assert (rendered.width, rendered.height) == image.size == (64, 32)
    assert_upright(image)


@pytest.mark.parametrize("image_format", ["HEIF", "AVIF"])
def test_heic_and_avif_colour_profiles_are_converted_to_srgb(image_format: str) -> None:
    # Given red pixel values in a profile whose red primary is sRGB's blue (phones tag Display P3)
    data = phone_picture(Image.new("RGB", (32, 32), RED), image_format, icc_profile=SWAPPED_RED_BLUE)
    # When it is rendered
    _, image = render_one(data, box(16, 16))
    # Then the colour the profile means is what comes out
    assert near(rgb_at(image, 8, 8), BLUE, tolerance=40), rgb_at(image, 8, 8)


def test_an_iphone_style_portrait_heic_comes_out_upright_and_in_srgb() -> None:
    # Given a 4:3 sensor picture stored landscape, turned a quarter by its container (a portrait
    # photo), with a non-sRGB profile, encoded by libheif as an iPhone does
    data = phone_picture(stored_picture(6, 300, 400), "HEIF", 6, icc_profile=LINEAR_SRGB)
    assert data[4:12] == b"ftypheic"
    # When it is rendered into a 1024 box and a 128 px square
    sizes = [box(1024, 1024, name="large"), box(128, 128, "cover", name="square")]
    large, square = render(data, sizes, output_format="jpeg", quality=90, max_pixels=MAX_PIXELS, memory_budget=BUDGET)
    # Then both are portrait-upright, never enlarged
    assert (large.width, large.height) == (300, 400)
    assert (square.width, square.height) == (128, 128)
    assert_upright(opened(large.body))


def test_avif_output_is_avif_and_keeps_transparency() -> None:
    # Given a half-transparent picture
    data = encode(half_transparent("RGBA"), "PNG")
    # When it is rendered as AVIF
    rendered, image = render_one(data, box(40, 40), output_format="avif")
    # Then it is an AVIF, named so, and its transparent half is still transparent
    assert (image.format, rendered.content_type) == ("AVIF", "image/avif")
    assert alpha_at(image, 5, 10) == 0
    assert alpha_at(image, 35, 10) == 255


# ---------------------------------------------------------------------------------------------
# Modes: every pixel layout an upload can decode to comes out in the colour it shows
# ---------------------------------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, row: bytes, transparent: bytes = b"") -> bytes:
    """A PNG built by hand, every row the same: for layouts Pillow cannot write (16-bit RGB, 16-bit keys)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    key = png_chunk(b"tRNS", transparent) if transparent else b""
    pixels = zlib.compress((b"\0" + row) * height)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + key + png_chunk(b"IDAT", pixels) + png_chunk(b"IEND", b"")
    )


def palette_of(image: Image.Image) -> Image.Image:
    return image.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)


def ycbcr_tiff() -> bytes:
    # JPEG-compressed TIFF is stored as YCbCr; libtiff hands Pillow RGB
    return encode(Image.new("RGB", (32, 32), (200, 100, 50)).convert("YCbCr"), "TIFF", compression="jpeg")


def lab_tiff() -> bytes:
    # CIELab TIFF (photometric 8); sRGB red is L*a*b* (54.3, 80.8, 69.9) under D50: L scaled to 0-255, a and b
    # at 128 + value
    return encode(Image.new("LAB", (32, 32), (138, 209, 198)), "TIFF")


MODES: dict[str, tuple[Callable[[], bytes], Colour]] = {
    "1 png": (lambda: encode(Image.new("1", (32, 32), 1), "PNG"), WHITE),
    "1 bmp": (lambda: encode(Image.new("1", (32, 32), 0), "BMP"), BLACK),
    "L png": (lambda: encode(Image.new("L", (32, 32), 128), "PNG"), GREY),
    "L jpeg": (lambda: encode(Image.new("L", (32, 32), 128), "JPEG"), GREY),
    "LA png": (lambda: encode(Image.new("LA", (32, 32), (128, 255)), "PNG"), GREY),
    "P png": (lambda: encode(palette_of(Image.new("RGB", (32, 32), (200, 100, 50))), "PNG"), (200, 100, 50)),
    "P gif": (lambda: encode(palette_of(Image.new("RGB", (32, 32), (200, 100, 50))), "GIF"), (200, 100, 50)),
    "P bmp": (lambda: encode(palette_of(Image.new("RGB", (32, 32), (200, 100, 50))), "BMP"), (200, 100, 50)),
    "PA tiff": (lambda: encode(Image.new("RGBA", (32, 32), (200, 100, 50, 255)).convert("PA"), "TIFF"), (200, 100, 50)),
    "RGB png": (lambda: encode(Image.new("RGB", (32, 32), (200, 100, 50)), "PNG"), (200, 100, 50)),
    "RGB jpeg": (lambda: encode(Image.new("RGB", (32, 32), (200, 100, 50)), "JPEG"), (200, 100, 50)),
    "RGB webp": (lambda: encode(Image.new("RGB", (32, 32), (200, 100, 50)), "WEBP"), (200, 100, 50)),
    "RGB bmp": (lambda: encode(Image.new("RGB", (32, 32), (200, 100, 50)), "BMP"), (200, 100, 50)),
    "RGB tiff": (lambda: encode(Image.new("RGB", (32, 32), (200, 100, 50)), "TIFF"), (200, 100, 50)),
    "RGBA png": (lambda: encode(Image.new("RGBA", (32, 32), (200, 100, 50, 255)), "PNG"), (200, 100, 50)),
    "CMYK jpeg": (lambda: encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG"), RED),
    "CMYK tiff": (lambda: encode(Image.new("CMYK", (32, 32), (0, 0, 0, 128)), "TIFF"), (127, 127, 127)),
    "YCbCr tiff": (ycbcr_tiff, (200, 100, 50)),
    "LAB tiff": (lab_tiff, RED),
    # 16 bits a channel: 0x8080 is mid-grey (not clipped to white), 0x00C8 black (not 200/255 grey)
    "I;16 png": (lambda: encode(Image.new("I;16", (32, 32), 0x8080), "PNG"), GREY),
    "I;16 png dark": (lambda: encode(Image.new("I;16", (32, 32), 0x00C8), "PNG"), BLACK),
    "I;16 tiff": (lambda: encode(Image.new("I;16", (32, 32), 0x8080), "TIFF"), GREY),
    "I;16B tiff": (lambda: encode(Image.new("I;16B", (32, 32), 0x8080), "TIFF"), GREY),
    "RGB 16-bit png": (lambda: png_bytes(32, 32, 16, 2, b"\xc8\x00\x64\x00\x32\x00" * 32), (200, 100, 50)),
    "RGBA 16-bit png": (lambda: png_bytes(32, 32, 16, 6, b"\xc8\x00\x64\x00\x32\x00\xff\xff" * 32), (200, 100, 50)),
    "LA 16-bit png": (lambda: png_bytes(32, 32, 16, 4, b"\x80\x80\xff\xff" * 32), GREY),
    "I tiff": (lambda: encode(Image.new("I", (32, 32), 0x8080), "TIFF"), GREY),
    "F tiff 0-1": (lambda: encode(Image.new("F", (32, 32), 0.5), "TIFF"), GREY),
    "F tiff 0-255": (lambda: encode(Image.new("F", (32, 32), 128.0), "TIFF"), GREY),
}


@pytest.mark.parametrize("output_format", OUTPUTS)
@pytest.mark.parametrize("mode", MODES)
def test_every_mode_comes_out_in_the_colour_it_shows(mode: str, output_format: OutputFormat) -> None:
    # Given a plain picture of one colour, in one pixel layout
    make, expected = MODES[mode]
    data = make()
    # When it is rendered
    _, image = render_one(data, box(16, 16), output_format=output_format)
    # Then it is an 8-bit picture of that colour
    assert image.size == (16, 16)
    assert image.mode in ("L", "LA", "RGB", "RGBA")
    assert near(rgb_at(image, 8, 8), expected, tolerance=8), rgb_at(image, 8, 8)


# ---------------------------------------------------------------------------------------------
# Transparency: kept by WebP and PNG, flattened on white by JPEG
# ---------------------------------------------------------------------------------------------


def half_transparent(mode: str) -> Image.Image:
    """80x40: the left half fully transparent (its colour black), the right half opaque red."""
    image = Image.new("RGBA", (80, 40), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (40, 0, 80, 40))
    if mode == "RGBA":
        return image
    if mode == "LA":
        return image.convert("LA")
    palette = image.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    palette.info["transparency"] = palette.getpixel((0, 0))
    return palette if mode == "P" else palette.convert("PA")


def coloured_key(mode: str) -> bytes:
    """PNG's other transparency: one colour (tRNS) marks the transparent pixels, no alpha channel."""
    image = Image.new(mode, (80, 40), 7 if mode == "L" else (1, 2, 3))
    image.paste(200 if mode == "L" else RED, (40, 0, 80, 40))
    return encode(image, "PNG", transparency=7 if mode == "L" else (1, 2, 3))


def sixteen_bit_key(colour_type: int) -> bytes:
    """80x40 16-bit grey (colour type 0) or RGB (2): the left half the tRNS key, the right half light grey."""
    channels = 1 if colour_type == 0 else 3
    row = b"\x01\x02" * channels * 40 + b"\xc8\xc8" * channels * 40
    return png_bytes(80, 40, 16, colour_type, row, transparent=b"\x01\x02" * channels)


TRANSPARENT: dict[str, tuple[Callable[[], bytes], Colour]] = {
    "RGBA png": (lambda: encode(half_transparent("RGBA"), "PNG"), RED),
    "RGBA webp": (lambda: encode(half_transparent("RGBA"), "WEBP", lossless=True), RED),
    "RGBA tiff": (lambda: encode(half_transparent("RGBA"), "TIFF"), RED),
    "LA png": (lambda: encode(half_transparent("LA"), "PNG"), (76, 76, 76)),
    "P png": (lambda: encode(half_transparent("P"), "PNG"), RED),
    "P gif": (lambda: encode(half_transparent("P"), "GIF"), RED),
    "PA tiff": (lambda: encode(half_transparent("PA"), "TIFF"), RED),
    "L png with tRNS": (lambda: coloured_key("L"), (200, 200, 200)),
    "RGB png with tRNS": (lambda: coloured_key("RGB"), RED),
    # 16 bits a channel, made by hand: the key is 16-bit too (0x0102 transparent, 0xC8C8 opaque)
    "I;16 png with tRNS": (lambda: sixteen_bit_key(0), (200, 200, 200)),
    "RGB 16-bit png with tRNS": (lambda: sixteen_bit_key(2), (200, 200, 200)),
    "LA 16-bit png": (
        lambda: png_bytes(80, 40, 16, 4, (b"\x01\x02\x00\x00" * 40 + b"\xc8\xc8\xff\xff" * 40)),
        (200,) * 3,
    ),
    "RGBA 16-bit png": (
        lambda: png_bytes(
            80, 40, 16, 6, (b"\x01\x02" * 3 + b"\x00\x00") * 40 + b"\xff\xff\x00\x00\x00\x00\xff\xff" * 40
        ),
        RED,
    ),
    "RGBA avif": (lambda: encode(half_transparent("RGBA"), "AVIF", quality=100), RED),
    "RGBA heif": (lambda: phone_picture(half_transparent("RGBA"), "HEIF"), RED),
}


@pytest.mark.parametrize("source", TRANSPARENT)
@pytest.mark.parametrize("output_format", ["png", "webp", "avif"])
def test_transparency_is_kept_by_webp_png_and_avif(source: str, output_format: OutputFormat) -> None:
    # Given a picture, half transparent and half opaque, shrunk to half its size, in any layout that carries
    # transparency: an alpha channel, a transparent palette entry, or a transparent colour (8 or 16 bits)
    make, opaque = TRANSPARENT[source]
    # When it is rendered as WebP, PNG or AVIF
    _, image = render_one(make(), box(40, 40), output_format=output_format)
    # Then the transparent half is still transparent and the opaque half keeps its colour
    assert image.size == (40, 20)
    assert alpha_at(image, 5, 10) == 0
    assert alpha_at(image, 35, 10) == 255
    assert near(rgb_at(image, 35, 10), opaque, tolerance=8)


@pytest.mark.parametrize("source", TRANSPARENT)
def test_transparency_is_flattened_on_white_for_jpeg(source: str) -> None:
    # Given a picture, half transparent (black underneath) and half opaque
    make, opaque = TRANSPARENT[source]
    # When it is rendered as JPEG, which has no transparency
    _, image = render_one(make(), box(40, 40), output_format="jpeg")
    # Then the transparent half is white, as on a white page, not the black stored beneath it
    assert image.mode in ("L", "RGB")
    assert near(rgb_at(image, 5, 10), WHITE, tolerance=8)
    assert near(rgb_at(image, 35, 10), opaque, tolerance=16)


def test_half_transparent_pixels_blend_with_white_for_jpeg() -> None:
    # Given a black picture at half opacity
    data = encode(Image.new("RGBA", (32, 32), (0, 0, 0, 128)), "PNG")
    # When it is rendered as JPEG
    _, image = render_one(data, box(16, 16), output_format="jpeg")
    # Then it is the grey half-black-on-white makes
    assert near(rgb_at(image, 8, 8), (127, 127, 127), tolerance=4)


# ---------------------------------------------------------------------------------------------
# Colour profiles and metadata
# ---------------------------------------------------------------------------------------------

# CIE L*a*b* (D50) of sRGB's black, blue, green, cyan, red, magenta, yellow and white: (R, G, B) as bits 4, 2, 1
LAB_OF_SRGB_CORNERS = (
    (0, 0, 0),
    (29, 68, -112),
    (88, -79, 81),
    (91, -51, -15),
    (54, 81, 70),
    (60, 94, -61),
    (98, -16, 93),
    (100, 0, 0),
)


def swapped_inks_cmyk_profile() -> bytes:
    """A CMYK printer profile (lut8, 2-point grid) in which the cyan ink prints magenta and the magenta ink cyan.

    Anything that ignores the profile shows CMYK 100% cyan as cyan; anything that uses it shows magenta.
    """
    grid = b""
    for c, m, y, k in ((c, m, y, k) for c in (0, 1) for m in (0, 1) for y in (0, 1) for k in (0, 1)):
        red, green, blue = (0, 0, 0) if k else (1 - m, 1 - c, 1 - y)
        lightness, a, b = LAB_OF_SRGB_CORNERS[red * 4 + green * 2 + blue]
        grid += bytes((round(lightness * 255 / 100), a + 128, b + 128))
    ramp = bytes(range(256))
    identity = b"".join(s15fixed16(value) for value in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    lut = b"mft1\0\0\0\0" + bytes((4, 3, 2, 0)) + identity + ramp * 4 + grid + ramp * 3
    return icc_profile(
        b"prtr", b"CMYK", b"Lab ", {b"desc": description("opsbots test CMYK"), b"wtpt": xyz(D50), b"A2B0": lut}
    )


SWAPPED_RED_BLUE = rgb_profile(SRGB_BLUE, SRGB_GREEN, SRGB_RED, 2.2)
LINEAR_SRGB = rgb_profile(SRGB_RED, SRGB_GREEN, SRGB_BLUE, 1.0)
REAL_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("output_format", OUTPUTS)
def test_an_rgb_profile_is_converted_to_srgb(image_format: str, output_format: OutputFormat) -> None:
    # Given red pixel values in a profile whose red primary is sRGB's blue
    data = encode(Image.new("RGB", (32, 32), RED), image_format, icc_profile=SWAPPED_RED_BLUE)
    # When it is rendered
    _, image = render_one(data, box(16, 16), output_format=output_format)
    # Then the colour the profile means is what comes out, and the thumbnail carries no profile (sRGB implied)
    assert near(rgb_at(image, 8, 8), BLUE, tolerance=16), rgb_at(image, 8, 8)
    assert "icc_profile" not in image.info


def test_a_linear_light_profile_comes_out_brighter() -> None:
    # Given mid-grey pixel values in linear light (gamma 1.0), as some cameras and renderers write them
    data = encode(Image.new("RGB", (32, 32), GREY), "PNG", icc_profile=LINEAR_SRGB)
    # When it is rendered
    _, image = render_one(data, box(16, 16))
    # Then it is the brighter sRGB grey that 50% light is (about 188), not 128
    assert near(rgb_at(image, 8, 8), (188, 188, 188), tolerance=3)


def test_an_rgba_picture_with_a_profile_keeps_its_transparency() -> None:
    # Given a half-transparent picture tagged with a non-sRGB profile
    image = half_transparent("RGBA")
    data = encode(image, "PNG", icc_profile=SWAPPED_RED_BLUE)
    # When it is rendered
    _, out = render_one(data, box(40, 40), output_format="webp")
    # Then it is converted and still transparent where it was
    assert alpha_at(out, 5, 10) == 0
    assert near(rgb_at(out, 35, 10), BLUE, tolerance=16)


def test_an_srgb_profile_changes_nothing() -> None:
    # Given a picture tagged with the real sRGB profile
    data = encode(Image.new("RGB", (32, 32), (200, 100, 50)), "PNG", icc_profile=REAL_SRGB)
    # When it is rendered
    _, image = render_one(data, box(16, 16))
    # Then its colour is unchanged
    assert near(rgb_at(image, 8, 8), (200, 100, 50), tolerance=2)


@pytest.mark.parametrize(
    "profile",
    [b"garbage" * 20, b"", REAL_SRGB[:200], LINEAR_SRGB[:-40], swapped_inks_cmyk_profile()],
    ids=["garbage", "empty", "cut-header", "cut-tags", "cmyk-profile-on-rgb"],
)
@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_a_broken_or_mismatched_profile_is_ignored(profile: bytes, image_format: str) -> None:
    # Given a picture whose profile is unusable for it
    data = encode(Image.new("RGB", (32, 32), (200, 100, 50)), image_format, icc_profile=profile)
    # When it is rendered
    _, image = render_one(data, box(16, 16))
    # Then the pixels are taken as sRGB
    assert near(rgb_at(image, 8, 8), (200, 100, 50), tolerance=8)
    assert "icc_profile" not in image.info


@pytest.mark.parametrize(
    ("profile", "expected"),
    [(None, CYAN), (swapped_inks_cmyk_profile(), MAGENTA)],
    ids=["no-profile", "profile"],
)
@pytest.mark.parametrize("output_format", OUTPUTS)
def test_a_cmyk_jpeg_is_converted_with_its_profile(
    profile: bytes | None, expected: Colour, output_format: OutputFormat
) -> None:
    # Given a CMYK JPEG of 100% cyan ink, with or without a profile in which that ink prints magenta
    params = {"icc_profile": profile} if profile else {}
    data = encode(Image.new("CMYK", (32, 32), (255, 0, 0, 0)), "JPEG", **params)
    # When it is rendered
    _, image = render_one(data, box(16, 16), output_format=output_format)
    # Then without a profile it is plain cyan, and with one it is what the profile says
    assert image.mode == "RGB"
    assert near(rgb_at(image, 8, 8), expected, tolerance=24), rgb_at(image, 8, 8)


GPS: dict[int, Any] = {ExifTags.GPS.GPSLatitudeRef: "N", ExifTags.GPS.GPSLatitude: (48.0, 51.0, 24.0)}
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description exif:GPSLatitude="48,51.4N"/></x:xmpmeta>'


def with_metadata(image_format: str) -> bytes:
    exif = exif_with(Make="Phone", Model="X")
    exif.get_ifd(ExifTags.IFD.GPSInfo).update(GPS)
    params: dict[str, Any] = {"exif": exif, "icc_profile": REAL_SRGB}
    if image_format in ("JPEG", "WEBP"):
        params["xmp"] = XMP
    if image_format == "JPEG":
        params["comment"] = b"taken at home"
    return encode(noise(64, 48), image_format, **params)


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("output_format", OUTPUTS)
def test_no_metadata_leaks_into_a_thumbnail(image_format: str, output_format: OutputFormat) -> None:
    # Given a photo with GPS in its EXIF, an XMP packet, a profile and a comment
    data = with_metadata(image_format)
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(ExifTags.IFD.GPSInfo)
    # When it is rendered
    rendered, image = render_one(data, box(32, 32), output_format=output_format)
    # Then the thumbnail carries none of it
    assert not image.getexif()
    leaked = {"exif", "xmp", "XML:com.adobe.xmp", "icc_profile", "comment"} & set(image.info)
    assert not leaked
    assert b"Phone" not in rendered.body
    assert b"adobe:ns:meta" not in rendered.body


def test_corrupt_exif_does_not_stop_a_thumbnail() -> None:
    # Given a JPEG whose EXIF says a tag's value lies past the end of the EXIF block (Pillow warns, and keeps
    # the tags it read before that one: Orientation, 0x0112, comes before Software, 0x0131)
    exif = exif_with(Software="x" * 200, Orientation=6).tobytes()
    data = encode(stored_picture(6, 320, 160), "JPEG", exif=exif[:-150])
    # When it is rendered
    _, image = render_one(data)
    # Then the picture is still made, upright from what EXIF could be read
    assert image.size == (64, 32)
    assert_upright(image)


# ---------------------------------------------------------------------------------------------
# Animation: the first frame, as a still picture
# ---------------------------------------------------------------------------------------------


def animated(image_format: str) -> bytes:
    red, blue = Image.new("RGB", (32, 32), RED), Image.new("RGB", (32, 32), BLUE)
    frames = [red.convert("P"), blue.convert("P")] if image_format == "GIF" else [red, blue]
    return encode(frames[0], image_format, save_all=True, append_images=frames[1:], duration=100, loop=0)


@pytest.mark.parametrize("image_format", ["GIF", "WEBP", "PNG", "MPO"])
@pytest.mark.parametrize("output_format", OUTPUTS)
def test_an_animation_gives_its_first_frame(image_format: str, output_format: OutputFormat) -> None:
    # Given a two-frame animation (APNG for PNG, a multi-picture JPEG for MPO): red, then blue
    data = animated(image_format)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    # When it is rendered
    _, image = render_one(data, box(16, 16), output_format=output_format)
    # Then the thumbnail is the red first frame, and a still picture
    assert near(rgb_at(image, 8, 8), RED, tolerance=16)
    assert getattr(image, "n_frames", 1) == 1


# ---------------------------------------------------------------------------------------------
# Geometry as rendered: never enlarged, contain fits, cover crops centred
# ---------------------------------------------------------------------------------------------


def test_a_small_picture_is_never_enlarged() -> None:
    # Given a 100x80 picture and sizes far larger than it
    data = encode(noise(100, 80), "PNG")
    sizes = [box(256, 256, name="box"), box(1024, None, name="wide"), box(None, 2048, name="tall")]
    # When it is rendered
    rendered = render(data, sizes, output_format="webp", quality=80, max_pixels=MAX_PIXELS, memory_budget=BUDGET)
    # Then every thumbnail is the picture's own size
    assert [(r.name, r.width, r.height) for r in rendered] == [(s.name, 100, 80) for s in sizes]
    assert all(opened(r.body).size == (100, 80) for r in rendered)


@pytest.mark.parametrize(
    ("width", "height", "expected"), [(100, 80, (80, 80)), (300, 80, (80, 80)), (80, 300, (80, 80))]
)
def test_cover_keeps_the_box_shape_without_enlarging_a_small_picture(
    width: int, height: int, expected: tuple[int, int]
) -> None:
    # Given a picture smaller than a 256x256 cover box on at least one side
    data = encode(noise(width, height), "PNG")
    # When it is rendered
    rendered, image = render_one(data, box(256, 256, "cover"))
    # Then it is the largest square the picture holds, not enlarged and not a strip
    assert (rendered.width, rendered.height) == image.size == expected


def thirds(width: int, height: int) -> Image.Image:
    """Red, green, blue thirds across the longer side."""
    image = Image.new("RGB", (width, height))
    long_side = max(width, height)
    for index, colour in enumerate((RED, GREEN, BLUE)):
        start, end = index * long_side // 3, (index + 1) * long_side // 3
        image.paste(colour, (start, 0, end, height) if width >= height else (0, start, width, end))
    return image


@pytest.mark.parametrize(("width", "height"), [(300, 100), (100, 300), (3000, 1000)])
@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_cover_fills_the_box_exactly_with_the_centre(width: int, height: int, image_format: str) -> None:
    # Given a picture three times as long as it is wide, in red, green and blue thirds
    data = encode(thirds(width, height), image_format)
    # When it is rendered to a square cover box
    rendered, image = render_one(data, box(60, 60, "cover"))
    # Then it is exactly the box, showing only the green middle third, edge to edge
    assert (rendered.width, rendered.height) == image.size == (60, 60)
    for x, y in ((1, 30), (58, 30), (30, 1), (30, 58), (30, 30)):
        assert near(rgb_at(image, x, y), GREEN, tolerance=40), (x, y, rgb_at(image, x, y))


def test_contain_fits_the_box_keeping_the_aspect_ratio() -> None:
    # Given a 4:3 landscape and a portrait picture
    landscape, portrait = encode(noise(400, 300), "PNG"), encode(noise(300, 400), "PNG")
    # When each is rendered into a 200x200 box and to a width of 100
    sizes = [box(200, 200, name="box"), box(100, None, name="wide")]
    wide = render(landscape, sizes, output_format="png", quality=80, max_pixels=MAX_PIXELS, memory_budget=BUDGET)
    tall = render(portrait, sizes, output_format="png", quality=80, max_pixels=MAX_PIXELS, memory_budget=BUDGET)
    # Then each fits inside and keeps its shape
    assert [(r.width, r.height) for r in wide] == [(200, 150), (100, 75)]
    assert [(r.width, r.height) for r in tall] == [(150, 200), (100, 133)]


# ---------------------------------------------------------------------------------------------
# JPEG draft: decode already shrunk, once, for every size
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def jpeg_decodes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The size of every JPEG decode, as it happens.

    The decoded picture never leaves render(), and time or memory would be flaky evidence, so this
    wraps Pillow's JpegImageFile.load to note the size it is about to decode at (draft has already
    shrunk it by then) and then decodes as usual. A load with no tiles left is a no-op, not a decode.
    """
    decodes: list[tuple[int, int]] = []
    load = JpegImagePlugin.JpegImageFile.load

    def noting_load(image: JpegImagePlugin.JpegImageFile) -> Any:
        if image.tile:
            decodes.append(image.size)
        return load(image)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", noting_load)
    return decodes


@cache
def big_jpeg(orientation: int) -> bytes:
    """A 24 MP-class photo: 4000x3000 as stored."""
    image = Image.new("RGB", (4000, 3000), (200, 100, 50))
    image.paste(RED, (0, 0, 2000, 1500))
    return encode(image, "JPEG", quality=70, exif=exif_with(Orientation=orientation))


@pytest.mark.parametrize(
    ("orientation", "small", "expected"),
    [
        (1, box(64, None, name="small"), [(256, 192), (128, 128), (64, 48)]),
        (6, box(None, 64, name="small"), [(192, 256), (128, 128), (48, 64)]),
    ],
)
def test_a_big_jpeg_is_decoded_once_and_already_shrunk(
    jpeg_decodes: list[tuple[int, int]], orientation: int, small: ThumbnailSize, expected: list[tuple[int, int]]
) -> None:
    # Given a 4000x3000 JPEG (a portrait photo when tagged 6) and three small sizes
    sizes = [box(256, 256, name="large"), box(128, 128, "cover", name="square"), small]
    # When it is rendered
    rendered = render(
        big_jpeg(orientation), sizes, output_format="jpeg", quality=80, max_pixels=MAX_PIXELS, memory_budget=BUDGET
    )
    # Then it was decoded once, at an eighth of its size (at least the largest thumbnail), for every size
    assert jpeg_decodes == [(500, 375)]
    assert [(r.width, r.height) for r in rendered] == expected
    assert [opened(r.body).size for r in rendered] == expected


def test_a_large_size_still_decodes_the_jpeg_in_full(jpeg_decodes: list[tuple[int, int]]) -> None:
    # Given a 4000x3000 JPEG and a size more than half as wide
    sizes = [box(2500, None)]
    # When it is rendered
    (rendered,) = render(
        big_jpeg(1), sizes, output_format="jpeg", quality=80, max_pixels=MAX_PIXELS, memory_budget=BUDGET
    )
    # Then it was decoded at full size, as shrinking on decode would cost detail
    assert jpeg_decodes == [(4000, 3000)]
    assert (rendered.width, rendered.height) == (2500, 1875)


@pytest.mark.parametrize(("width", "height"), [(4001, 3000), (3000, 4001), (4003, 3001), (1001, 999)])
def test_draft_rounding_never_breaks_a_resize(width: int, height: int) -> None:
    # Given a JPEG whose sides do not divide by the draft scale (each side is rounded up on its own)
    data = encode(Image.new("RGB", (width, height), (200, 100, 50)), "JPEG")
    sizes = [box(100, 100, name="contain"), box(100, 100, "cover", name="cover"), box(333, None, name="wide")]
    # When it is rendered
    rendered = render(data, sizes, output_format="png", quality=80, max_pixels=MAX_PIXELS, memory_budget=BUDGET)
    # Then every size is made
    assert len(rendered) == 3
    assert all(near(rgb_at(opened(r.body), 10, 10), (200, 100, 50), tolerance=8) for r in rendered)


# ---------------------------------------------------------------------------------------------
# Output formats
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("output_format", OUTPUTS)
def test_each_output_format_is_what_it_says(output_format: OutputFormat) -> None:
    # Given any picture
    data = encode(noise(64, 48), "PNG")
    # When it is rendered in a format
    rendered, image = render_one(data, box(32, 32), output_format=output_format)
    # Then the bytes, the content type and the name agree
    assert has_magic(rendered.body, output_format)
    assert rendered.content_type == f"image/{output_format}"
    assert image.format == output_format.upper()
    assert rendered.name == "box"


@pytest.mark.parametrize("output_format", ["jpeg", "webp"])
def test_quality_changes_the_size_of_lossy_output(output_format: OutputFormat) -> None:
    # Given a noisy picture
    data = encode(noise(128, 128), "PNG")
    # When it is rendered at low and at high quality
    low, _ = render_one(data, box(128, 128), output_format=output_format, quality=20)
    high, _ = render_one(data, box(128, 128), output_format=output_format, quality=95)
    # Then the high-quality thumbnail is larger
    assert len(low.body) < len(high.body)


def test_sizes_come_back_in_order_with_their_names() -> None:
    # Given three sizes
    sizes = [box(32, 32, name="small"), box(64, 64, "cover", name="square"), box(48, None, name="narrow")]
    # When one picture is rendered
    rendered = render(
        encode(noise(128, 96), "JPEG"),
        sizes,
        output_format="webp",
        quality=80,
        max_pixels=MAX_PIXELS,
        memory_budget=BUDGET,
    )
    # Then each comes back in the order asked, under its name
    assert [(r.name, r.width, r.height) for r in rendered] == [
        ("small", 32, 24),
        ("square", 64, 64),
        ("narrow", 48, 36),
    ]


# ---------------------------------------------------------------------------------------------
# Safety: decompression bombs, truncation, things that are not pictures
# ---------------------------------------------------------------------------------------------


def png_header_bomb(width: int, height: int) -> bytes:
    return png_bytes(width, height, 8, 2, b"")[:33] + png_bytes(1, 1, 8, 2, b"\0\0\0")[33:]


def gif_header_bomb(width: int, height: int) -> bytes:
    screen = struct.pack("<HHBBB", width, height, 0, 0, 0)
    frame = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return b"GIF89a" + screen + frame + b"\x02\x02\x44\x01\x00;"


def bmp_header_bomb(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + 16, 0, 0, 14 + len(info)) + info + bytes(16)


def jpeg_header_bomb(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("RGB", (8, 8)), "JPEG"))
    frame = data.index(b"\xff\xc0")  # SOF0: length (2), precision (1), then height and width
    data[frame + 5 : frame + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def webp_header_bomb(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("RGB", (8, 8)), "WEBP", lossless=True))
    bits = data.index(b"VP8L") + 9  # chunk header (8), signature byte, then 14-bit width-1 and height-1
    packed = struct.unpack("<I", data[bits : bits + 4])[0] & ~((1 << 28) - 1)
    data[bits : bits + 4] = struct.pack("<I", packed | (width - 1) | (height - 1) << 14)
    return bytes(data)


def tiff_header_bomb(width: int, height: int, mode: str = "L", orientation: int = 1) -> bytes:
    data = bytearray(encode(Image.new(mode, (8, 8)), "TIFF", exif=exif_with(Orientation=orientation)))
    directory = struct.unpack("<I", data[4:8])[0]
    for entry in range(struct.unpack("<H", data[directory : directory + 2])[0]):
        at = directory + 2 + 12 * entry
        tag = struct.unpack("<H", data[at : at + 2])[0]
        if tag in (256, 257):  # ImageWidth, ImageLength
            data[at + 2 : at + 12] = struct.pack("<HII", 4, 1, width if tag == 256 else height)
    return bytes(data)


BOMBS: dict[str, Callable[[], bytes]] = {
    "png 100000x100000": lambda: png_header_bomb(100_000, 100_000),
    "png 10001x10000": lambda: png_header_bomb(10_001, 10_000),
    "gif 65535x65535": lambda: gif_header_bomb(65_535, 65_535),
    "bmp 20000x20000": lambda: bmp_header_bomb(20_000, 20_000),
    "jpeg 65000x65000": lambda: jpeg_header_bomb(65_000, 65_000),
    "webp 16384x16384": lambda: webp_header_bomb(16_384, 16_384),
    "tiff 100000x100000": lambda: tiff_header_bomb(100_000, 100_000),
}


# 4000x4000 pictures, declared by their headers: what decoding each would take, in MiB, from the
# bytes per pixel Pillow keeps for its mode, the decoder's own buffers and every full-size copy
FOOTPRINTS: dict[str, tuple[Callable[[], bytes], int]] = {
    "RGB png": (lambda: png_bytes(4000, 4000, 8, 2, b""), 61),  # 4 bytes a pixel (Pillow pads RGB)
    "RGBA png": (lambda: png_bytes(4000, 4000, 8, 6, b""), 122),  # + resize()'s premultiplied copy
    "palette png": (lambda: png_bytes(4000, 4000, 8, 3, b""), 76),  # 1 + its RGB conversion
    "16-bit grey png": (lambda: png_bytes(4000, 4000, 16, 0, b""), 107),  # 2 + raw bytes (4, joined) + 8-bit
    "16-bit grey png with tRNS": (lambda: png_bytes(4000, 4000, 16, 0, b"", transparent=b"\x01\x02"), 259),
    "webp": (lambda: webp_header_bomb(4000, 4000), 244),  # libwebp holds 12 more a pixel
    "rotated 32-bit tiff": (lambda: tiff_header_bomb(4000, 4000, "I", orientation=6), 122),  # + Pillow's turn
    "jpeg, shrunk on decode": (lambda: jpeg_header_bomb(4000, 4000), 1),  # 500x500 for a 64 px box
}


def needed_mib(data: bytes) -> int:
    """What the memory check says decoding `data` takes (with no budget at all, it always refuses)."""
    with pytest.raises(UnusableImageError, match="too big to decode in memory") as refused:
        render(data, [box()], output_format="png", quality=80, max_pixels=MAX_PIXELS, memory_budget=0)
    found = re.search(r"needs about ([\d,]+) MiB", str(refused.value))
    assert found, refused.value
    return int(found.group(1).replace(",", ""))


@pytest.mark.parametrize("picture", FOOTPRINTS)
def test_what_a_decode_takes_is_known_before_decoding(picture: str) -> None:
    # Given a picture's header alone (no pixel data follows it)
    make, expected = FOOTPRINTS[picture]
    # When it is rendered with no memory to spare
    # Then it is refused before decoding, saying what it would need
    assert needed_mib(make()) == expected


def test_a_picture_that_cannot_fit_the_function_is_rejected_with_the_reason() -> None:
    # Given a 10000x10000 WebP (the decoder alone would take 1.5 GiB) and the deployed function's budget
    data = webp_header_bomb(10_000, 10_000)
    # When it is rendered
    # Then it is rejected, saying why, not decoded until Lambda kills the function
    with pytest.raises(UnusableImageError, match=r"10000x10000 RGB needs about 1,526 MiB, the budget is 1,513 MiB"):
        render(data, [box()], output_format="webp", quality=80, max_pixels=MAX_PIXELS, memory_budget=BUDGET)


def peak_growth_mib(path: Path) -> float:
    """How far rendering the file at `path` raises a fresh process's peak RSS (VmHWM), in MiB."""
    script = (
        "import sys\n"
        "from chalicelib.thumbnails.imaging import render\n"
        "from chalicelib.thumbnails.policy import ThumbnailSize\n"
        "def peak():\n"
        "    return next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM'))\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "before = peak()\n"
        "render(data, [ThumbnailSize(name='large', width=1024)], output_format='webp', quality=80,\n"
        "       max_pixels=10**8, memory_budget=10**12)\n"
        "print((peak() - before) / 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return float(done.stdout)


BIG: dict[str, Callable[[], bytes]] = {
    # the cases, at 12 MP: a 32-bit grey TIFF stored on its side, and a 16-bit grey PNG
    "rotated 32-bit tiff": lambda: encode(
        Image.new("I", (4000, 3000), 70_000), "TIFF", exif=exif_with(Orientation=6), compression="tiff_adobe_deflate"
    ),
    "16-bit grey png": lambda: encode(Image.new("I;16", (4000, 3000), 0x8080), "PNG"),
}


@pytest.mark.parametrize("picture", BIG)
def test_a_big_picture_is_resized_before_it_is_turned_or_converted(picture: str, tmp_path: Path) -> None:
    # Given a big picture that needs turning upright or converting to 8 bits
    path = tmp_path / "big"
    path.write_bytes(BIG[picture]())
    # When it is rendered in a fresh process
    growth = peak_growth_mib(path)
    # Then its memory peaked within what the check said it needs: no full-size copy made twice
    assert growth <= needed_mib(path.read_bytes()) + 8, growth


# ---------------------------------------------------------------------------------------------
# Decoder crashes: HEIC and AVIF are decoded in a child process
# ---------------------------------------------------------------------------------------------


def crash() -> None:
    faulthandler.disable()  # pytest's would print the child's stack: the crash is the point here
    os.kill(os.getpid(), signal.SIGSEGV)


def overrun() -> None:
    time.sleep(60)


def unusable() -> None:
    raise UnusableImageError("not a picture")


def broken() -> None:
    raise KeyError("a bug")


@pytest.mark.parametrize(
    ("work", "error", "message"),
    [
        (crash, UnusableImageError, r"the decoder crashed on it \(SIGSEGV\)"),
        (overrun, UnusableImageError, "decoding took longer than 0.5 s"),
        (unusable, UnusableImageError, "not a picture"),
        (broken, RuntimeError, "rendering in a child process failed: KeyError: 'a bug'"),
    ],
)
def test_what_goes_wrong_in_the_child_process_is_a_verdict_or_an_error_here(
    work: Callable[[], None], error: type[Exception], message: str
) -> None:
    # Given work that crashes the process, runs on, finds the bytes unusable, or has a bug
    # When it runs in a child process
    # Then this process lives on, with a rejection for the bytes or an error for the bug
    with pytest.raises(error, match=message):
        in_child(work, 0.5)


def test_a_result_comes_back_from_the_child_process() -> None:
    assert in_child(lambda: (os.getpid(), b"x" * 300_000), 10)[1] == b"x" * 300_000  # past a pipe's buffer
    assert in_child(os.getpid, 10) != os.getpid()


def test_damaged_heic_files_that_crash_libheif_are_rejected_and_the_process_lives(tmp_path: Path) -> None:
    # Given 230 damaged copies of a small seeded HEIC (1 to 8 bytes changed each): rendered one after
    # another in one process, the 222nd crashed pillow-heif 1.0.0's libheif (a segmentation fault)
    rng = random.Random(7)
    heic = tmp_path / "seeded.heic"
    heic.write_bytes(phone_picture(Image.frombytes("RGB", (24, 16), rng.randbytes(24 * 16 * 3)), "HEIF", 6))
    script = (
        "import random, sys\n"
        "from chalicelib.thumbnails.imaging import UnusableImageError, render\n"
        "from chalicelib.thumbnails.policy import ThumbnailSize\n"
        "base, outcomes = open(sys.argv[1], 'rb').read(), []\n"
        "for seed in range(230):\n"
        "    rng, data = random.Random(seed), bytearray(base)\n"
        "    for _ in range(rng.randint(1, 8)):\n"
        "        data[rng.randrange(len(data))] = rng.randrange(256)\n"
        "    try:\n"
        "        render(bytes(data), [ThumbnailSize(name='small', width=16, height=16)], output_format='png',\n"
        "               quality=80, max_pixels=16384, memory_budget=10**9)\n"
        "        outcomes.append('rendered')\n"
        "    except UnusableImageError:\n"
        "        outcomes.append('rejected')\n"
        "print(len(outcomes))\n"
    )
    # When they are rendered one after another in a fresh process
    done = subprocess.run([sys.executable, "-c", script, str(heic)], cwd=ROOT, capture_output=True, text=True)
    # Then the process lives to the end, each file rendered or rejected: every decode ran in a child of its own
    assert (done.returncode, done.stdout.strip()) == (0, "230"), done.stderr[-2000:]


@pytest.mark.parametrize("bomb", BOMBS)
def test_a_header_declaring_too_many_pixels_is_rejected_before_decoding(bomb: str) -> None:
    # Given a few hundred bytes whose header declares more than 100 million pixels
    data = BOMBS[bomb]()
    # When it is rendered with the default limit
    # Then it is refused on the header alone (Pillow's bomb check runs in open(), before any decode)
    with pytest.raises(UnusableImageError, match="too many pixels"):
        render(data, [box()], output_format="webp", quality=80, max_pixels=MAX_PIXELS, memory_budget=BUDGET)


def test_max_pixels_is_respected_to_the_pixel() -> None:
    # Given a 10x10 picture (100 pixels)
    data = encode(noise(10, 10), "PNG")
    # When the limit is exactly its size, then one pixel fewer, then under half (Pillow's other threshold)
    (rendered,) = render(data, [box()], output_format="png", quality=80, max_pixels=100, memory_budget=BUDGET)
    # Then exactly the limit passes, and anything over is rejected
    assert (rendered.width, rendered.height) == (10, 10)
    for limit in (99, 49):
        with pytest.raises(UnusableImageError, match="too many pixels"):
            render(data, [box()], output_format="png", quality=80, max_pixels=limit, memory_budget=BUDGET)


def test_the_pixel_limit_does_not_leak_into_the_rest_of_the_process() -> None:
    # Given Pillow's own limit before a render
    before = Image.MAX_IMAGE_PIXELS
    # When a render runs with a tiny limit, and fails on it
    with pytest.raises(UnusableImageError):
        render(
            encode(noise(10, 10), "PNG"), [box()], output_format="png", quality=80, max_pixels=10, memory_budget=BUDGET
        )
    # Then Pillow's global limit is what it was
    assert before == Image.MAX_IMAGE_PIXELS


def test_an_oriented_picture_is_limited_by_its_pixels_not_its_shape() -> None:
    # Given a 20x5 picture stored on its side (orientation 6)
    data = encode(noise(5, 20), "JPEG", exif=exif_with(Orientation=6))
    # When its limit is exactly its 100 pixels
    (rendered,) = render(data, [box()], output_format="png", quality=80, max_pixels=100, memory_budget=BUDGET)
    # Then it renders, upright
    assert (rendered.width, rendered.height) == (20, 5)


TRUNCATABLE: dict[str, Callable[[], bytes]] = {
    "jpeg": lambda: encode(noise(128, 96), "JPEG"),
    "progressive jpeg": lambda: encode(noise(128, 96), "JPEG", progressive=True),
    "png": lambda: encode(noise(128, 96), "PNG"),
    "gif": lambda: encode(noise(128, 96).convert("P"), "GIF"),
    "webp": lambda: encode(noise(128, 96), "WEBP"),
    "bmp": lambda: encode(noise(128, 96), "BMP"),
    "tiff": lambda: encode(noise(128, 96), "TIFF"),
}


@pytest.mark.parametrize("image_format", TRUNCATABLE)
@pytest.mark.parametrize("kept", [0.5, 0.9])
def test_a_truncated_picture_is_rejected(image_format: str, kept: float) -> None:
    # Given a picture cut short, as an interrupted upload leaves it
    data = TRUNCATABLE[image_format]()
    cut = data[: int(len(data) * kept)]
    # When it is rendered
    # Then it is rejected, not rendered with a grey or black lower part
    with pytest.raises(UnusableImageError):
        render(cut, [box()], output_format="png", quality=80, max_pixels=MAX_PIXELS, memory_budget=BUDGET)


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\nnewpath 0 0 moveto 10 10 lineto stroke\n"
NOT_PICTURES: dict[str, bytes] = {
    "text named .jpg": b"This is holiday.jpg, honestly.\n" * 20,
    "empty": b"",
    "eps": EPS,
    "dos eps binary header": b"\xc5\xd0\xd3\xc6" + struct.pack("<6I", 30, len(EPS), 0, 0, 0, 0) + b"\xff\xff" + EPS,
    "svg": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>',
    "html": b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>",
    "pdf": b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n",
    "zip": b"PK\x03\x04" + bytes(26),
    "png signature only": b"\x89PNG\r\n\x1a\n",
}


@pytest.mark.parametrize("name", NOT_PICTURES)
def test_something_that_is_not_a_picture_is_rejected(name: str) -> None:
    # Given bytes that are not a picture in an accepted format, whatever the key's extension says
    # When they are rendered
    # Then they are rejected
    with pytest.raises(UnusableImageError):
        render(
            NOT_PICTURES[name], [box()], output_format="jpeg", quality=80, max_pixels=MAX_PIXELS, memory_budget=BUDGET
        )


def test_eps_is_refused_before_any_plugin_reads_it() -> None:
    # Given EPS, which Pillow alone would open (and rasterise by running Ghostscript)
    assert Image.open(io.BytesIO(EPS)).format == "EPS"
    # When it is rendered
    # Then it is refused as not an accepted format: no plugin outside the allow-list is even tried
    with pytest.raises(UnusableImageError, match="not an image in a supported format"):
        render(EPS, [box()], output_format="png", quality=80, max_pixels=MAX_PIXELS, memory_budget=BUDGET)


@pytest.mark.parametrize("image_format", ["ICO", "PCX", "PPM", "SGI", "TGA", "JPEG2000", "DDS", "IM"])
def test_formats_outside_the_allow_list_are_refused(image_format: str) -> None:
    # Given a picture Pillow could read, in a format not on the allow-list (more parsers, more attack surface)
    data = encode(noise(16, 16), image_format)
    assert Image.open(io.BytesIO(data)).format is not None
    # When it is rendered
    # Then it is refused
    with pytest.raises(UnusableImageError, match="not an image in a supported format"):
        render(data, [box()], output_format="png", quality=80, max_pixels=MAX_PIXELS, memory_budget=BUDGET)


# ---------------------------------------------------------------------------------------------
# Property: whatever the bytes, a picture or UnusableImageError, never anything else
# ---------------------------------------------------------------------------------------------


@cache
def samples() -> tuple[bytes, ...]:
    small = noise(24, 16)
    exif = exif_with(Orientation=6, ImageDescription="a description long enough to sit outside the entry")
    return (
        encode(small, "JPEG", exif=exif, icc_profile=SWAPPED_RED_BLUE),
        encode(small.convert("CMYK"), "JPEG", icc_profile=swapped_inks_cmyk_profile()),
        encode(small.convert("RGBA"), "PNG", exif=exif),
        encode(Image.new("I;16", (16, 8), 0x8080), "PNG"),
        encode(small.convert("P"), "GIF", transparency=0),
        animated("GIF"),
        encode(small, "WEBP", exif=exif),
        animated("WEBP"),
        encode(small, "BMP"),
        encode(small, "TIFF", exif=exif),
        phone_picture(small.copy(), "HEIF", 6, icc_profile=SWAPPED_RED_BLUE),
        phone_picture(small.convert("RGBA"), "AVIF", 6, icc_profile=SWAPPED_RED_BLUE),
    )


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A small valid picture with some bytes changed and maybe the end cut off."""
    data = bytearray(draw(st.sampled_from(samples())))
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(1, len(data)))])


@settings(max_examples=250, deadline=None)
@given(data=st.binary(max_size=256) | damaged(), output_format=st.sampled_from(OUTPUTS))
def test_any_bytes_give_pictures_or_unusable_image_error(data: bytes, output_format: OutputFormat) -> None:
    # Given any bytes at all: random, or a picture damaged in transit
    sizes = [box(16, 16, name="small"), box(8, 8, "cover", name="square")]
    # When they are rendered (with a small limit, so a damaged header cannot make a slow decode)
    try:
        rendered = render(
            data, sizes, output_format=output_format, quality=80, max_pixels=128 * 128, memory_budget=BUDGET
        )
    except UnusableImageError:
        return
    # Then whatever is made is a real picture of the size it claims
    for picture in rendered:
        assert has_magic(picture.body, output_format)
        assert opened(picture.body).size == (picture.width, picture.height)
