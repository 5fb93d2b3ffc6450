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

from chalicelib.thumbnails import CONTENT_TYPES, Dimensions, OutputFormat, decode_request, fit

if TYPE_CHECKING:
    from chalicelib.policy import ThumbnailSize

FORMATS: Final = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP")
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
    rendered = []
    for size in sizes:
        geometry = fit(picture.source, size)
        scale = picture.image.width / picture.source.width
        left, top, right, bottom = geometry.crop
        box = (left * scale, top * scale, right * scale, bottom * scale)
        thumbnail = picture.image.resize(
            (geometry.width, geometry.height), Image.Resampling.LANCZOS, box=box, reducing_gap=RESIZE_GAP
        )
        body = _encode(_to_srgb(thumbnail, picture.icc_profile), output_format, quality)
        rendered.append(Rendered(size.name, body, geometry.width, geometry.height, CONTENT_TYPES[output_format]))
    return tuple(rendered)


@dataclass(frozen=True)
class _Picture:
    image: Image.Image  # upright, shrunk on decode, in a mode resize() handles
    source: Dimensions  # the upload's upright size before any shrinking
    icc_profile: bytes | None


def _decode(data: bytes, sizes: Sequence[ThumbnailSize], max_pixels: int) -> _Picture:
    try:
        with warnings.catch_warnings():
            # Pillow warns (then errors at twice the limit) about decompression bombs; ours is the limit.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = max_pixels
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            stored = Dimensions(image.width, image.height)
            orientation = _orientation(image)
            upright = stored.transposed() if orientation in _SWAPS_AXES else stored
            request = decode_request(upright, sizes)
            request = request.transposed() if orientation in _SWAPS_AXES else request
            image.draft(None, (request.width, request.height))
            image.load()
            icc_profile = image.info.get("icc_profile") or None
            decoded = ImageOps.exif_transpose(image) if orientation != 1 else image
            return _Picture(_resizable(decoded), upright, icc_profile)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise UnusableImageError(f"too many pixels: {error}") from None
    except UnidentifiedImageError:
        raise UnusableImageError(f"not an image in a supported format ({', '.join(FORMATS)})") from None
    except Exception as error:
        raise UnusableImageError(f"cannot decode: {type(error).__name__}: {error}") from None


def _orientation(image: Image.Image) -> int:
    value = image.getexif().get(_ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _resizable(image: Image.Image) -> Image.Image:
    """The picture in L, LA, RGB, RGBA or CMYK, the modes resize() and the encoders share."""
    mode = image.mode
    if mode in ("L", "LA", "RGB", "RGBA", "CMYK"):
        return image
    if mode in ("P", "PA"):
        return image.convert("RGBA" if mode == "PA" or "transparency" in image.info else "RGB")
    if mode == "1":
        return image.convert("L")
    if mode.startswith("I") or mode == "F":
        # 16-bit (and float) greys: convert("L") would clip everything above 255 to white.
        peak = image.getextrema()[1]
        scale = 1 / 256 if isinstance(peak, int | float) and peak > 255 else 1
        return image.point(lambda value: value * scale).convert("L")
    if mode in ("La", "RGBa"):
        return image.convert(mode.upper())
    return image.convert("RGB")


def _to_srgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    if image.mode not in ("RGB", "RGBA", "CMYK"):
        return image
    if icc_profile:
        output_mode = "RGBA" if image.mode == "RGBA" else "RGB"
        try:
            converted = ImageCms.applyTransform(image, _transform(icc_profile, image.mode, output_mode))
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            converted = None  # a broken profile: the pixels are still a picture, read as sRGB
        if converted is not None:
            return converted
    return image.convert("RGB") if image.mode == "CMYK" else image


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
