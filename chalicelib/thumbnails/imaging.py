"""Pillow, and only here: decode an upload once and render every thumbnail size from it.

Only the thumbnail bot's render step imports this module, so no other function's cold start pays
for Pillow. Uploads are untrusted bytes:
- only the formats in `FORMATS` are opened (never EPS, which Pillow hands to Ghostscript);
- the pixel count the header declares is checked before a single pixel is decoded, and so is the
  memory the decode will take (bytes per pixel of the decoded mode, plus what the decoder and any
  full-size conversion add): what cannot fit in the function's memory is rejected, not crashed on;
- any failure while Pillow reads the bytes is a verdict on the bytes (`UnusableImageError`), so a
  hostile file is rejected instead of crashing the handler and being retried;
- HEIC and AVIF are decoded in a forked child (`in_child`): libheif can crash on damaged files, and
  a crash there is a rejection too.

Speed and memory come from decoding JPEGs already shrunk (libjpeg's DCT scaling, `Image.draft`) to
at least the largest output (Pillow's own `thumbnail()` keeps twice that: decisions.DRAFT_GAP says why
not), and from resizing that one
decoded picture to every size *before* turning it upright or converting its mode: the only
full-size pictures are the decode and what resize() cannot take as it is (palettes, colour keys,
16-bit greys).
"""

from __future__ import annotations

import io
import os
import pickle
import select
import signal
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache, partial
from typing import TYPE_CHECKING, Final, TypeVar, cast

from PIL import Image, ImageChops, ImageCms, UnidentifiedImageError

from chalicelib.thumbnails.decisions import CONTENT_TYPES, MIB, Dimensions, Fit, OutputFormat, decode_request, fit

if TYPE_CHECKING:
    from chalicelib.thumbnails.policy import ThumbnailSize

FORMATS: Final = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "AVIF", "HEIF")
CASCADE_GAP: Final = 2.0  # the same margin Pillow's thumbnail() keeps between a draft and its target
RESIZE_GAP: Final = 3.0  # Pillow: from 3.0 up, reduce() + Lanczos is indistinguishable from Lanczos alone
AVIF_SPEED: Final = 8  # libavif's 0 (smallest) to 10 (fastest); see bench/results/thumbnails.md
_ORIENTATION_TAG: Final = 0x0112
# EXIF orientation -> the transpose that shows the stored picture upright (as ImageOps.exif_transpose).
_UPRIGHT: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES: Final = frozenset({5, 6, 7, 8})
_ORIENTED_IN_HEADER: Final = frozenset({"JPEG", "MPO", "TIFF"})
_SRGB: Final = ImageCms.createProfile("sRGB")
# Memory. Pillow keeps 1 byte a pixel for 1, L and P, 2 for the 16-bit greys, 4 for every other
# mode (RGB is padded to 4). Some decoders hold full-size buffers of their own while they hand the
# picture over (measured on 24 MP, in bytes per pixel beyond Pillow's own picture): libwebp's
# animation decoder about 12, libavif about 6, libheif about 4; libjpeg, zlib and libtiff decode
# into Pillow's buffer.
_DECODER_BYTES: Final = {"WEBP": 12, "AVIF": 6, "HEIF": 4}
DECODE_SECONDS: Final = 40.0  # a HEIC or AVIF decode past this is rejected (the function has 60 s)
_Result = TypeVar("_Result")


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
    data: bytes,
    sizes: Sequence[ThumbnailSize],
    *,
    output_format: OutputFormat,
    quality: int,
    max_pixels: int,
    memory_budget: int,
    isolated: bool = True,
) -> tuple[Rendered, ...]:
    """Every size of one picture, oriented upright, in sRGB, encoded as `output_format`.

    `memory_budget` is the bytes the decode may take; a picture that needs more is UnusableImageError.
    With `isolated`, HEIC and AVIF are rendered in a child process: libheif (through pillow-heif
    1.0.0) crashes the process on some damaged HEIC files (fuzzing found 4 in 1,500), and in a
    child a crash is a rejection.
    """
    if isolated and _is_iso_media(data):
        _register_heif()  # once per container, inherited by every child
        Image.init()  # Pillow's plugins too: imported here once, not in every child
        here = partial(
            render,
            data,
            sizes,
            output_format=output_format,
            quality=quality,
            max_pixels=max_pixels,
            memory_budget=memory_budget,
            isolated=False,
        )
        return in_child(here, DECODE_SECONDS)
    picture = _decode(data, sizes, max_pixels, memory_budget)
    # Largest first, so a smaller size showing the same part of the picture can be resampled from a
    # larger thumbnail rather than from the whole decode (a 2048 px size forces a full decode).
    made: list[tuple[Fit, Image.Image]] = []
    rendered: dict[str, Rendered] = {}
    for size in sorted(sizes, key=lambda size: -_area(fit(picture.source, size))):
        geometry = fit(picture.source, size)
        thumbnail = _resampled(picture, geometry, made)
        made.append((geometry, thumbnail))
        shown = _to_srgb(_displayable(thumbnail, picture.white), picture.icc_profile)
        body = _encode(shown, output_format, quality)
        rendered[size.name] = Rendered(size.name, body, geometry.width, geometry.height, CONTENT_TYPES[output_format])
    return tuple(rendered[size.name] for size in sizes)


def _area(geometry: Fit) -> int:
    return geometry.width * geometry.height


def in_child(work: Callable[[], _Result], seconds: float) -> _Result:
    """`work()` in a forked child process: its result, or UnusableImageError if it crashes or overruns.

    The child shares the parent's memory copy-on-write (the upload's bytes are not copied) and sends
    its result back pickled through a pipe; it exits with os._exit, so nothing of the parent's
    (buffers, atexit handlers, open clients) runs twice. An UnusableImageError in the child is raised
    here as it was; any other exception too, as a RuntimeError naming it, so Lambda retries.
    """
    readable, writable = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(readable)
        try:
            outcome: tuple[str, object] = ("done", work())
        except UnusableImageError as error:
            outcome = ("unusable", str(error))
        except BaseException as error:  # carried to the parent, which raises it
            outcome = ("failed", f"{type(error).__name__}: {error}")
        with os.fdopen(writable, "wb") as pipe:
            pickle.dump(outcome, pipe)
        os._exit(0)
    os.close(writable)
    payload = _read_until(readable, time.monotonic() + seconds)
    if payload is None:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if payload is None:
        raise UnusableImageError(f"decoding took longer than {seconds:g} s")
    if os.WIFSIGNALED(status):
        raise UnusableImageError(f"the decoder crashed on it ({signal.Signals(os.WTERMSIG(status)).name})")
    kind, value = pickle.loads(payload)  # written by our own child, above: not untrusted bytes
    if kind == "unusable":
        raise UnusableImageError(value)
    if kind == "failed":
        raise RuntimeError(f"rendering in a child process failed: {value}")
    return cast("_Result", value)


def _read_until(descriptor: int, deadline: float) -> bytes | None:
    """Everything written to the pipe until its writer closes it; None if that is not before `deadline`."""
    chunks: list[bytes] = []
    with os.fdopen(descriptor, "rb", buffering=0) as pipe:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([pipe], [], [], remaining)[0]:
                return None
            chunk = pipe.read(1 << 16)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


@dataclass(frozen=True)
class _Picture:
    image: Image.Image  # as stored (not yet upright), shrunk on decode, in a mode resize() takes
    orientation: int  # the EXIF orientation still to apply: 1 when the decoder already did
    source: Dimensions  # the upload's upright size before any shrinking
    shrink: float  # source pixels to `image` pixels: 1/8, 1/4, 1/2 or 1
    icc_profile: bytes | None
    white: float  # for 32-bit integer and float greys: the value shown as white


def _resampled(picture: _Picture, geometry: Fit, made: Sequence[tuple[Fit, Image.Image]]) -> Image.Image:
    """The thumbnail, upright, still in the decoded picture's mode."""
    target = (geometry.width, geometry.height)
    # A thumbnail of the same crop with CASCADE_GAP times the pixels resamples as cleanly as the decode.
    larger = [
        image for done, image in made if done.crop == geometry.crop and done.width >= CASCADE_GAP * geometry.width
    ]
    if larger:
        return larger[-1].resize(target, Image.Resampling.LANCZOS, reducing_gap=RESIZE_GAP)
    # Resize as stored, then turn the small result: turning the full-size picture would copy it.
    turned = picture.orientation in _SWAPS_AXES
    left, top, right, bottom = _stored_box(picture.orientation, geometry.crop, picture.source)
    box = (left * picture.shrink, top * picture.shrink, right * picture.shrink, bottom * picture.shrink)
    resized = picture.image.resize(
        (target[1], target[0]) if turned else target, Image.Resampling.LANCZOS, box=box, reducing_gap=RESIZE_GAP
    )
    upright = _UPRIGHT.get(picture.orientation)
    return resized.transpose(upright) if upright is not None else resized


def _stored_box(
    orientation: int, box: tuple[float, float, float, float], upright: Dimensions
) -> tuple[float, float, float, float]:
    """An upright box (left, top, right, bottom) in the coordinates of the picture as stored."""
    left, top, right, bottom = box
    width, height = upright.width, upright.height
    # Each orientation's stored point for upright point (x, y), from the EXIF 2.3 text for tag 0x0112.
    corners = [
        {
            1: (x, y),
            2: (width - x, y),
            3: (width - x, height - y),
            4: (x, height - y),
            5: (y, x),
            6: (y, width - x),
            7: (height - y, width - x),
            8: (height - y, x),
        }.get(orientation, (x, y))
        for x, y in ((left, top), (right, bottom))
    ]
    (x0, y0), (x1, y1) = corners
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def _decode(data: bytes, sizes: Sequence[ThumbnailSize], max_pixels: int, memory_budget: int) -> _Picture:
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            # Pillow warns about metadata it skips (a corrupt EXIF tag...): the pixels decide, whatever
            # the process's warning filters, so a photo is not rejected under one and kept under another.
            warnings.simplefilter("ignore", UserWarning)
            # Pillow warns (then errors at twice the limit) about decompression bombs; ours is the limit.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = max_pixels
            return _load(Image.open(io.BytesIO(data), formats=_formats(data)), sizes, memory_budget)
    except UnusableImageError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise UnusableImageError(f"too many pixels: {error}") from None
    except UnidentifiedImageError:
        raise UnusableImageError(f"not an image in a supported format ({', '.join(FORMATS)})") from None
    except Exception as error:
        raise UnusableImageError(f"cannot decode: {type(error).__name__}: {error}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit  # a process-wide setting: leave it as found


def _is_iso_media(data: bytes) -> bool:
    """HEIC, HEIF and AVIF are ISO base media files: a box named `ftyp` comes first."""
    return data[4:8] == b"ftyp"


def _formats(data: bytes) -> tuple[str, ...]:
    """The formats to try; HEIF's reader (libheif, about 15 ms to load) only for ISO media files."""
    if _is_iso_media(data):
        _register_heif()
        return FORMATS
    return tuple(name for name in FORMATS if name != "HEIF")


@cache
def _register_heif() -> None:
    import pillow_heif  # type: ignore[import-untyped, unused-ignore]

    # Only the primary picture: no embedded thumbnails, depth maps or auxiliary images to decode.
    pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)


def _load(image: Image.Image, sizes: Sequence[ThumbnailSize], memory_budget: int) -> _Picture:
    """Decode once, shrunk while decoding where the format can (JPEG), within the memory budget."""
    # Read before decoding only where the header holds it: Pillow looks for a PNG's EXIF by decoding.
    orientation = _orientation(image) if image.format in _ORIENTED_IN_HEADER else 1
    turned = orientation in _SWAPS_AXES
    # Pillow's TIFF reader reports (and decodes) a TIFF upright already: its size is not as stored.
    stored = Dimensions(image.width, image.height)
    request = decode_request(stored.transposed() if turned else stored, sizes)
    wanted = request.transposed() if turned else request  # in stored pixels: the JPEG decoder's view
    drafted = image.draft(None, (wanted.width, wanted.height))
    needed = _decode_bytes(image, orientation)
    if needed > memory_budget:
        raise UnusableImageError(
            f"too big to decode in memory: {image.width}x{image.height} {image.mode} "
            f"needs about {round(needed / MIB):,} MiB, the budget is {round(memory_budget / MIB):,} MiB"
        )
    image.load()
    icc_profile = image.info.get("icc_profile") or None
    orientation = _orientation(image)  # 1 now if the decoder turned the picture itself (TIFF)
    decoded = Dimensions(image.width, image.height)
    white = _white(image)
    resizable = _resizable(image)
    if drafted is None:
        source = decoded.transposed() if orientation in _SWAPS_AXES else decoded
        return _Picture(resizable, orientation, source, 1.0, icc_profile, white)
    # Only JPEGs draft, and they are stored as shot; the scale is exact, the shrunk size rounded up.
    shrink = drafted[1][2] / stored.width
    return _Picture(resizable, orientation, stored.transposed() if turned else stored, shrink, icc_profile, white)


def _orientation(image: Image.Image) -> int:
    value = image.getexif().get(_ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _bytes_per_pixel(mode: str) -> int:
    return 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4


def _decode_bytes(image: Image.Image, orientation: int) -> int:
    """What decoding `image` takes at its peak, before anything is decoded: its picture, the decoder's
    own buffers, and every full-size copy before the resize."""
    mode, pixels = image.mode, image.width * image.height
    per_pixel = _bytes_per_pixel(mode) + _DECODER_BYTES.get(image.format or "", 0) + _conversion_bytes(image)
    if image.format == "TIFF" and orientation != 1:
        per_pixel += _bytes_per_pixel(mode)  # Pillow's TIFF reader turns the decoded picture upright: a copy
    return pixels * per_pixel


def _conversion_bytes(image: Image.Image) -> int:
    """Bytes per pixel of the full-size pictures `_resizable` makes, and of resize()'s own premultiplied copy."""
    mode, keyed = image.mode, _keyed(image)
    premultiplied = 4  # resize() turns LA and RGBA into La and RGBa, full size, before resampling
    if mode.startswith("I;16"):
        # the raw bytes (2, twice while Pillow joins them) and the high byte (1); with a colour key the
        # low byte, the mask and LA too
        return 5 + (1 + 1 + 4 + premultiplied if keyed else 0)
    if keyed or mode == "PA":
        return (1 if mode == "1" else 0) + 4 + premultiplied
    if mode in ("LA", "RGBA"):
        return premultiplied
    return {"1": 1, "P": 4}.get(mode, 0)


_GREY16: Final = ("I;16", "I;16L", "I;16B", "I;16N")


def _keyed(image: Image.Image) -> bool:
    """Whether one colour (PNG tRNS, a GIF's transparent index) marks the transparent pixels."""
    return image.mode in ("1", "L", "P", "RGB", *_GREY16) and "transparency" in image.info


def _resizable(image: Image.Image) -> Image.Image:
    """The decoded picture, full size, converted only where resize() cannot take it as it is."""
    mode = image.mode
    if mode in _GREY16:
        return _grey16(image)
    if _keyed(image):
        key = image.info["transparency"]
        if mode == "RGB" and isinstance(key, tuple) and max(key) > 255:
            # A 16-bit RGB PNG decodes to its high bytes, but its key stays 16-bit: match the same bytes
            image.info["transparency"] = tuple(channel >> 8 for channel in key)
        # resize() would blend the key colour into its neighbours: an alpha channel first
        return image.convert("LA" if mode in ("1", "L") else "RGBA")
    if mode in ("1", "P", "PA"):
        return image.convert({"1": "L", "P": "RGB", "PA": "RGBA"}[mode])  # resize() takes them as NEAREST
    return image


def _grey16(image: Image.Image) -> Image.Image:
    """A 16-bit grey as 8-bit L (LA with its colour key), made from its bytes without a 32-bit copy.

    Its high byte is the 8-bit grey (a fixed range: a dark 16-bit picture is dark, not stretched), and
    the key matches where both bytes match it. convert("L") would clip everything above 255 to white.
    """
    raw = image.tobytes()
    big_endian = image.mode == "I;16B"
    high = Image.frombytes("L", image.size, raw, "raw", "L;16B" if big_endian else "L;16")
    key = image.info.get("transparency")
    if not isinstance(key, int):
        return high
    low = Image.frombytes("L", image.size, raw, "raw", "L;16" if big_endian else "L;16B")
    del raw
    matches = ImageChops.multiply(
        high.point(lambda value: 255 if value == key >> 8 else 0),
        low.point(lambda value: 255 if value == key & 0xFF else 0),
    )
    return Image.merge("LA", (high, ImageChops.invert(matches)))


def _white(image: Image.Image) -> float:
    """The value a 32-bit integer or float grey shows as white, from the whole decoded picture.

    No fixed range for these: floats are taken as 0-1 (as editors write them), integers as 16-bit
    once any pixel is past 8 bits. Read before resizing, as Lanczos can overshoot an 8-bit edge.
    """
    if image.mode not in ("I", "F"):
        return 255.0
    peak = image.getextrema()[1]
    peak = peak if isinstance(peak, int | float) else 0
    return 1.0 if image.mode == "F" and peak <= 1 else 65535.0 if peak > 255 else 255.0


def _displayable(image: Image.Image, white: float) -> Image.Image:
    """A thumbnail in L, LA, RGB, RGBA or CMYK, the modes the colour transform and the encoders share."""
    mode = image.mode
    if mode in ("L", "LA", "RGB", "RGBA", "CMYK"):
        return image
    if mode in ("La", "RGBa"):
        return image.convert(mode.upper())
    if mode in ("I", "F"):
        return image.convert("F").point(lambda value: value * 255 / white + 0.5).convert("L")
    return image.convert("RGB")  # YCbCr, LAB, HSV


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
        # WebP and AVIF carry colour, with or without alpha; libavif's speed: see AVIF_SPEED
        mode = {"L": "RGB", "LA": "RGBA"}.get(image.mode, image.mode)
        options = {"speed": AVIF_SPEED} if output_format == "avif" else {}
        image.convert(mode).save(out, output_format.upper(), quality=quality, **options)
    return out.getvalue()


def _flattened(image: Image.Image) -> Image.Image:
    """JPEG has no transparency: put the picture on white, as a browser shows it on a white page."""
    if image.mode not in ("RGBA", "LA"):
        return image
    background = Image.new("L" if image.mode == "LA" else "RGB", image.size, "white")
    background.paste(image.convert(background.mode), mask=image.getchannel("A"))
    return background
