"""Pillow, and only here: decode an upload once and render every thumbnail size from it.

Only the thumbnail bot's render step imports this module, so no other function's cold start pays
for Pillow. Uploads are untrusted bytes:
- only the formats in `FORMATS` are opened (never EPS, which Pillow hands to Ghostscript);
- the pixel count the header declares is checked before a single pixel is decoded;
- any failure while Pillow reads the bytes is a verdict on the bytes (`UnusableImageError`), so a
  hostile file is rejected instead of crashing the handler and being retried.

Speed comes from decoding JPEGs already shrunk (libjpeg's DCT scaling, `Image.draft`) to twice
the largest output, the way Pillow's own `thumbnail()` does, and from resizing that one decoded
picture to every size.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Final

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from chalicelib.thumbnails import CONTENT_TYPES, Dimensions, Fit, OutputFormat, decode_request, fit

if TYPE_CHECKING:
    from chalicelib.policy import ThumbnailSize

FORMATS: Final = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP")
CASCADE_GAP: Final = 2.0  # the same margin Pillow's thumbnail() keeps between a draft and its target
RESIZE_GAP: Final = 3.0  # Pillow: from 3.0 up, reduce() + Lanczos is indistinguishable from Lanczos alone
_SWAPS_AXES: Final = frozenset({5, 6, 7, 8})  # EXIF orientations that rotate by 90 degrees
_ORIENTATION_TAG: Final = 0x0112
_SRGB: Final = ImageCms.createProfile("sRGB")


class UnusableImageError(Exception):
    """The bytes are not a picture opsbots will decode: not an image, corrupt, truncated or too big."""


@dataclass(frozen=True)
class Rendered:
    name: str
    body: bytes
    width: int
    height: int
    content_type: str


def render(
    data: bytes, sizes: Sequence[ThumbnailSize], *, output_format: OutputFormat, quality: int, max_pixels: int
) -> tuple[Rendered, ...]:
    """Every size of one picture, oriented upright, in sRGB, encoded as `output_format`."""
    picture = _decode(data, sizes, max_pixels)
    # Largest first, so a smaller size showing the same part of the picture can be resampled from a
    # larger thumbnail rather than from the whole decode (a 2048 px size forces a full decode).
    made: list[tuple[Fit, Image.Image]] = []
    rendered: dict[str, Rendered] = {}
    for size in sorted(sizes, key=lambda size: -_area(fit(picture.source, size))):
        geometry = fit(picture.source, size)
        thumbnail = _resampled(picture, geometry, made)
        made.append((geometry, thumbnail))
        body = _encode(_to_srgb(thumbnail, picture.icc_profile), output_format, quality)
        rendered[size.name] = Rendered(size.name, body, geometry.width, geometry.height, CONTENT_TYPES[output_format])
    return tuple(rendered[size.name] for size in sizes)


def _area(geometry: Fit) -> int:
    return geometry.width * geometry.height


def _resampled(picture: _Picture, geometry: Fit, made: Sequence[tuple[Fit, Image.Image]]) -> Image.Image:
    target = (geometry.width, geometry.height)
    # A thumbnail of the same crop with CASCADE_GAP times the pixels resamples as cleanly as the decode.
    larger = [
        image for done, image in made if done.crop == geometry.crop and done.width >= CASCADE_GAP * geometry.width
    ]
    if larger:
        return larger[-1].resize(target, Image.Resampling.LANCZOS, reducing_gap=RESIZE_GAP)
    left, top, right, bottom = (edge * picture.shrink for edge in geometry.crop)
    return picture.image.resize(
        target, Image.Resampling.LANCZOS, box=(left, top, right, bottom), reducing_gap=RESIZE_GAP
    )


@dataclass(frozen=True)
class _Picture:
    image: Image.Image  # upright, shrunk on decode, in a mode resize() handles
    source: Dimensions  # the upload's upright size before any shrinking
    shrink: float  # source pixels to `image` pixels: 1/8, 1/4, 1/2 or 1
    icc_profile: bytes | None


def _decode(data: bytes, sizes: Sequence[ThumbnailSize], max_pixels: int) -> _Picture:
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            # Pillow warns about metadata it skips (a corrupt EXIF tag...): the pixels decide, whatever
            # the process's warning filters, so a photo is not rejected under one and kept under another.
            warnings.simplefilter("ignore", UserWarning)
            # Pillow warns (then errors at twice the limit) about decompression bombs; ours is the limit.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = max_pixels
            return _load(Image.open(io.BytesIO(data), formats=FORMATS), sizes)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise UnusableImageError(f"too many pixels: {error}") from None
    except UnidentifiedImageError:
        raise UnusableImageError(f"not an image in a supported format ({', '.join(FORMATS)})") from None
    except Exception as error:
        raise UnusableImageError(f"cannot decode: {type(error).__name__}: {error}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit  # a process-wide setting: leave it as found


def _load(image: Image.Image, sizes: Sequence[ThumbnailSize]) -> _Picture:
    """Decode once: shrunk while decoding where the format can (JPEG), then upright, in a mode resize() takes."""
    orientation = _orientation(image)
    turned = orientation in _SWAPS_AXES
    stored = Dimensions(image.width, image.height)
    request = decode_request(stored.transposed() if turned else stored, sizes)
    wanted = request.transposed() if turned else request  # in stored pixels: the JPEG decoder's view
    drafted = image.draft(None, (wanted.width, wanted.height))
    image.load()
    icc_profile = image.info.get("icc_profile") or None
    upright = ImageOps.exif_transpose(image) if orientation != 1 else image
    if drafted is None:
        # Full size: the decoded picture is its own measure. (Pillow's TIFF reader, for one, already
        # reports and loads a TIFF upright, so its header size is not the stored one.)
        return _Picture(_resizable(upright), Dimensions(upright.width, upright.height), 1.0, icc_profile)
    # Only JPEGs draft, and they are stored as shot; the scale is exact, the shrunk size rounded up.
    shrink = drafted[1][2] / stored.width
    return _Picture(_resizable(upright), stored.transposed() if turned else stored, shrink, icc_profile)


def _orientation(image: Image.Image) -> int:
    value = image.getexif().get(_ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _resizable(image: Image.Image) -> Image.Image:
    """The picture in L, LA, RGB, RGBA or CMYK, the modes resize() and the encoders share."""
    mode = image.mode
    if mode in ("1", "L", "P", "RGB") and image.has_transparency_data:
        # A transparent colour or palette entry (PNG tRNS, GIF) is lost by resize(); an alpha channel is not.
        return image.convert("LA" if mode in ("1", "L") else "RGBA")
    if mode in ("L", "LA", "RGB", "RGBA", "CMYK"):
        return image
    if mode in ("1", "P", "PA", "La", "RGBa"):
        return image.convert({"1": "L", "P": "RGB", "PA": "RGBA"}.get(mode, mode.upper()))
    if mode.startswith("I") or mode == "F":
        return _grey(image)
    return image.convert("RGB")


def _grey(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float greys in 8 bits: convert("L") would clip everything above 255 to white."""
    if image.mode.startswith("I;16"):
        white = 65535.0  # a fixed range: a dark 16-bit picture is dark, not stretched
    else:
        # No fixed range: floats are taken as 0-1 (as editors write them), integers as 16-bit once
        # any pixel is past 8 bits.
        peak = image.getextrema()[1]
        peak = peak if isinstance(peak, int | float) else 0
        white = 1.0 if image.mode == "F" and peak <= 1 else 65535.0 if peak > 255 else 255.0
    return image.convert("F").point(lambda value: value * 255 / white + 0.5).convert("L")


def _to_srgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    if image.mode not in ("RGB", "RGBA", "CMYK"):
        return image
    if icc_profile and not (image.mode != "CMYK" and _is_srgb(icc_profile)):
        output_mode = "RGBA" if image.mode == "RGBA" else "RGB"
        try:
            converted = ImageCms.applyTransform(image, _transform(icc_profile, image.mode, output_mode))
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            converted = None  # a broken profile: the pixels are still a picture, read as sRGB
        if converted is not None:
            return converted
    return image.convert("RGB") if image.mode == "CMYK" else image


@lru_cache(maxsize=16)
def _is_srgb(icc_profile: bytes) -> bool:
    """Whether the profile maps colours as sRGB does (most cameras tag sRGB): then converting is a no-op.

    Judged by what it does to a grid of colours, not by its name: names are free text.
    """
    levels = range(0, 256, 51)
    colours = bytes(channel for red in levels for green in levels for blue in levels for channel in (red, green, blue))
    grid = Image.frombytes("RGB", (len(colours) // 3, 1), colours)
    try:
        converted = ImageCms.applyTransform(grid, _transform(icc_profile, "RGB", "RGB"))
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return False
    return converted is not None and all(
        abs(before - after) <= 1 for before, after in zip(colours, converted.tobytes(), strict=True)
    )


@lru_cache(maxsize=16)
def _transform(icc_profile: bytes, input_mode: str, output_mode: str) -> ImageCms.ImageCmsTransform:
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
    return ImageCms.buildTransform(source, _SRGB, input_mode, output_mode)


def _encode(image: Image.Image, output_format: OutputFormat, quality: int) -> bytes:
    out = io.BytesIO()
    image.info = {}  # no EXIF (it can hold GPS), no profile: thumbnails are plain sRGB
    if output_format == "jpeg":
        _flattened(image).save(out, "JPEG", quality=quality, optimize=True, progressive=True)
    elif output_format == "png":
        image.save(out, "PNG")
    else:
        mode = {"L": "RGB", "LA": "RGBA"}.get(image.mode, image.mode)
        image.convert(mode).save(out, "WEBP", quality=quality)
    return out.getvalue()


def _flattened(image: Image.Image) -> Image.Image:
    """JPEG has no transparency: put the picture on white, as a browser shows it on a white page."""
    if image.mode not in ("RGBA", "LA"):
        return image
    background = Image.new("L" if image.mode == "LA" else "RGB", image.size, "white")
    background.paste(image.convert(background.mode), mask=image.getchannel("A"))
    return background
