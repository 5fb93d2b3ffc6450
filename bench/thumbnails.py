"""`python -m bench.thumbnails`: the thumbnail bot's render path against the naive Pillow path, on a 24 MP JPEG.

One generated, deterministic 6000x4000 photo-like JPEG; for 256 px, 1024 px and three sizes together:

- ours: `chalicelib.thumbnails.imaging.render` (one decode, shrunk on load to twice the largest output, then
  Lanczos with reducing_gap, EXIF orientation, sRGB, WebP q82);
- ours writing AVIF (q82, libavif speed `imaging.AVIF_SPEED`): what AVIF output costs;
- naive: the AWS S3-to-Lambda thumbnail tutorial's shape, `Image.open(path)`, then per size
  `image.resize(size, LANCZOS).save(..., "WEBP", quality=82)`: no draft, the full 24 MP decode;
- libvips (`pyvips.Image.thumbnail_buffer`), the usual fast peer, when pyvips imports;
- and two floors: decoding the whole file, and the shrunk decode ours does for 256 px.

Then memory, three sizes each: a 50 MP photo (generated like the 24 MP one) beside the naive path
and libvips, and the two big pictures that once took more than half the function's memory: a
100 MP 32-bit grey TIFF stored on its side, and a 100 MP 16-bit grey PNG. Every peak must stay
under the thumbnail function's memory.

Every row runs in a fresh child process (`--worker`), so its peak RSS is its own: interpreter,
its imports and its work, read from /proc/self/status VmHWM. Times are the median of N repeats of
reading the file from disk plus the work, without interpreter start and imports.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import PIL.Image

TITLE = "Thumbnails"  # its heading in bench/results/latest.md

ROOT: Final = Path(__file__).resolve().parent.parent
RESULTS: Final = ROOT / "bench" / "results" / "thumbnails.md"
WIDTH, HEIGHT = 6000, 4000  # 24 MP, 3:2 like most camera sensors
SEED: Final = 2026
JPEG_QUALITY: Final = 88
WEBP_QUALITY: Final = 82
MAX_PIXELS: Final = 100_000_000
VIPS_UNBOUNDED: Final = 10_000_000  # libvips' "no limit" for a thumbnail's free edge
SMALL: Final = {"name": "small", "width": 256, "height": 256, "fit": "contain"}
MEDIUM: Final = {"name": "medium", "width": 1024}
LARGE: Final = {"name": "large", "width": 2048}
CASES: Final[Mapping[str, tuple[dict[str, Any], ...]]] = {
    "256 px": (SMALL,),
    "1024 px": (MEDIUM,),
    "three sizes": (SMALL, MEDIUM, LARGE),
}
BIG_PHOTO: Final = (8640, 5760)  # 50 MP, 3:2
BIG_TIFF: Final = (12000, 8333)  # 100 MP as stored; upright (EXIF Orientation 6) 8333x12000
BIG_PNG: Final = (10000, 10000)  # 100 MP
DECODE_TARGET: Final = 1.3  # the issue: ours at 256 px within 1.3x of decoding the file alone
NAIVE_TARGET: Final = 3.0  # the issue: ours at 256 px at least 3x faster than the naive path
APPROACHES: Final = {
    "decode": "decode only: `Image.open(BytesIO(data)).load()`, full size",
    "draft": "draft decode: the shrunk decode ours does for 256 px",
    "ours": "**ours**: `render`",
    "avif": "**ours**, writing AVIF",
    "naive": "naive: `open → resize(LANCZOS) → save` per size",
    "vips": "libvips: `thumbnail_buffer` per size",
}

Output = bytes | tuple[int, int]  # an encoded thumbnail, or the size of a decoded picture
Runner = Callable[[], list[Output]]


# ----- the test picture ------------------------------------------------------------------------


def _noise(rng: random.Random, width: int, height: int, amplitude: int) -> PIL.Image.Image:
    """Uniform RGB noise around 128, +-amplitude, deterministic (Pillow's effect_noise is not seeded)."""
    from PIL import Image

    lut = [round(128 - amplitude + value * 2 * amplitude / 255) for value in range(256)] * 3
    return Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3)).point(lut)


def _shapes(rng: random.Random, width: int, height: int) -> PIL.Image.Image:
    """A sky-like gradient under 2,500 muted ellipses and polygons, mostly small, a few large."""
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(picture)
    for y in range(height):
        draw.line([(0, y), (width, y)], fill=(90 + y // 12, 120 + y // 16, 170 - y // 10))
    for _ in range(2500):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(3, 120) if rng.random() < 0.2 else rng.randrange(3, 25)
        grey = rng.randrange(30, 220)
        colour = tuple(max(0, min(255, grey + rng.randrange(-45, 46))) for _ in range(3))
        if rng.random() < 0.5:
            draw.ellipse([x - r, y - r // 2, x + r, y + r // 2], fill=colour)
        else:
            draw.polygon([(x + rng.randrange(-r, r), y + rng.randrange(-r, r)) for _ in range(5)], fill=colour)
    return picture


def generate(path: Path, width: int = WIDTH, height: int = HEIGHT) -> bytes:
    """A photo-like JPEG (soft shapes, grain at two scales, an sRGB profile), same bytes every run."""
    from PIL import Image, ImageChops, ImageCms, ImageFilter

    rng = random.Random(SEED)
    picture = _shapes(rng, width // 4, height // 4).filter(ImageFilter.GaussianBlur(1))
    picture = picture.resize((width, height), Image.Resampling.BICUBIC)
    grain = _noise(rng, width // 2, height // 2, 12).filter(ImageFilter.GaussianBlur(1))
    picture = ImageChops.add(picture, grain.resize((width, height), Image.Resampling.BICUBIC), 1.0, -128)
    picture = ImageChops.add(picture, _noise(rng, width, height, 16), 1.0, -128)
    profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    profile[24:36] = struct.pack(">6H", SEED, 6, 15, 12, 0, 0)  # lcms stamps its creation time there
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=JPEG_QUALITY, icc_profile=bytes(profile))  # 4:2:0, as cameras write
    path.write_bytes(out.getvalue())
    return out.getvalue()


def grey_bands(mode: str, size: tuple[int, int], white: int) -> PIL.Image.Image:
    """A grey picture in `mode`: ten bands from black to `white` (past 255, so the 8-bit reading matters)."""
    from PIL import Image

    picture = Image.new(mode, size, 0)
    for band in range(10):
        picture.paste(white * band // 9, (0, size[1] * band // 10, size[0], size[1] * (band + 1) // 10))
    return picture


def big_tiff(path: Path) -> bytes:
    """100 MP of 32-bit grey, deflated, stored on its side (EXIF Orientation 6)."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    grey_bands("I", BIG_TIFF, 65_535).save(path, "TIFF", exif=exif, compression="tiff_adobe_deflate")
    return path.read_bytes()


def big_png(path: Path) -> bytes:
    """100 MP of 16-bit grey."""
    grey_bands("I;16", BIG_PNG, 65_535).save(path, "PNG")
    return path.read_bytes()


# ----- the worker: one approach in one fresh process ------------------------------------------


def _decode(spec: Mapping[str, Any]) -> Runner:
    from PIL import Image

    path, draft = Path(spec["image"]), spec.get("draft")

    def run() -> list[Output]:
        image = Image.open(io.BytesIO(path.read_bytes()))
        if draft:
            image.draft(None, tuple(draft))
        image.load()
        return [image.size]

    return run


def _ours(spec: Mapping[str, Any]) -> Runner:
    from chalicelib.thumbnails.decisions import FUNCTION_MEMORY_MB, OutputFormat, decode_budget
    from chalicelib.thumbnails.imaging import render
    from chalicelib.thumbnails.policy import ThumbnailSize

    path = Path(spec["image"])
    sizes = [ThumbnailSize(**size) for size in spec["sizes"]]
    output_format: OutputFormat = "avif" if spec["kind"] == "avif" else "webp"

    def run() -> list[Output]:
        data = path.read_bytes()
        rendered = render(
            data,
            sizes,
            output_format=output_format,
            quality=WEBP_QUALITY,
            max_pixels=MAX_PIXELS,
            memory_budget=decode_budget(FUNCTION_MEMORY_MB, len(data)),
        )
        return [picture.body for picture in rendered]

    return run


def _naive(spec: Mapping[str, Any]) -> Runner:
    from PIL import Image

    path, targets = Path(spec["image"]), [tuple(target) for target in spec["targets"]]

    def run() -> list[Output]:
        outputs: list[Output] = []
        with Image.open(path) as image:  # the tutorial opens the file it downloaded to /tmp
            for target in targets:
                out = io.BytesIO()
                image.resize(target, Image.Resampling.LANCZOS).save(out, "WEBP", quality=WEBP_QUALITY)
                outputs.append(out.getvalue())
        return outputs

    return run


def _vips(spec: Mapping[str, Any]) -> Runner:
    import pyvips  # type: ignore[import-untyped, unused-ignore]

    pyvips.cache_set_max(0)  # libvips caches operations: a repeat would time a cache hit
    path = Path(spec["image"])
    boxes = [(size.get("width") or VIPS_UNBOUNDED, size.get("height") or VIPS_UNBOUNDED) for size in spec["sizes"]]

    def run() -> list[Output]:
        data = path.read_bytes()
        return [
            pyvips.Image.thumbnail_buffer(data, width, height=height).write_to_buffer(
                ".webp", Q=WEBP_QUALITY, keep="none"
            )
            for width, height in boxes
        ]

    return run


RUNNERS: Final[Mapping[str, Callable[[Mapping[str, Any]], Runner]]] = {
    "decode": _decode,
    "draft": _decode,
    "ours": _ours,
    "avif": _ours,
    "naive": _naive,
    "vips": _vips,
}


def high_water_kib() -> int:
    """This process's peak RSS. Not ru_maxrss: after fork + exec it starts at the parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def _dimensions(output: Output, kind: str) -> tuple[int, int]:
    if isinstance(output, tuple):
        return output
    if kind == "vips":  # the peers' venv has libvips, not Pillow
        import pyvips

        image = pyvips.Image.new_from_buffer(output, "")
        return int(image.width), int(image.height)
    from PIL import Image

    with Image.open(io.BytesIO(output)) as image:
        return image.size


def work(spec: Mapping[str, Any]) -> dict[str, Any]:
    """One untimed warm-up, then `repeat` timed runs in this process; what the parent reads back as JSON."""
    run = RUNNERS[spec["kind"]](spec)  # every import the approach needs happens here
    imports_kib = high_water_kib()
    seconds: list[float] = []
    outputs = run()  # a warm container: Pillow's plugins registered, the sRGB transform built
    for _ in range(spec["repeat"]):
        outputs = []  # the previous repeat's outputs are not held while this one runs
        started = time.perf_counter()
        outputs = run()
        seconds.append(time.perf_counter() - started)
    peak_kib = high_water_kib()
    return {
        "seconds": seconds,
        "imports_kib": imports_kib,
        "peak_kib": peak_kib,
        "dimensions": [_dimensions(output, spec["kind"]) for output in outputs],
        "bytes": [len(output) for output in outputs if isinstance(output, bytes)],
    }


# ----- the parent: a child per row and round, then the table -----------------------------


@dataclass(frozen=True)
class Row:
    case: str
    approach: str
    spec: dict[str, Any]
    expected: tuple[tuple[int, int], ...] | None  # None: not checked (the draft decode's size is libjpeg's)
    memory: bool = False  # a row of the memory table (big pictures), not the speed table


@dataclass(frozen=True)
class Pictures:
    """The generated inputs, in a temporary directory."""

    photo: Path  # 24 MP JPEG
    big_photo: Path  # 50 MP JPEG
    big_tiff: Path  # 100 MP 32-bit grey TIFF, turned
    big_png: Path  # 100 MP 16-bit grey PNG

    @classmethod
    def make(cls, directory: Path) -> Pictures:
        pictures = cls(directory / "24mp.jpg", directory / "50mp.jpg", directory / "100mp.tif", directory / "100mp.png")
        generate(pictures.photo)
        generate(pictures.big_photo, *BIG_PHOTO)
        big_tiff(pictures.big_tiff)
        big_png(pictures.big_png)
        return pictures


@dataclass(frozen=True)
class Sample:
    """What one child process measured for one row."""

    seconds: tuple[float, ...]
    imports_kib: int
    peak_kib: int
    dimensions: tuple[tuple[int, int], ...]
    output_bytes: int


@dataclass(frozen=True)
class Result:
    """One row over every round: the median time of all repeats, the highest peak RSS."""

    row: Row
    seconds: float
    imports_mib: float
    peak_mib: float
    dimensions: tuple[tuple[int, int], ...]
    output_bytes: int

    @classmethod
    def of(cls, row: Row, samples: Sequence[Sample]) -> Result:
        return cls(
            row,
            statistics.median(second for sample in samples for second in sample.seconds),
            max(sample.imports_kib for sample in samples) / 1024,
            max(sample.peak_kib for sample in samples) / 1024,
            samples[-1].dimensions,
            samples[-1].output_bytes,
        )


VIPS_VERSION = (
    "import pyvips; print(f'pyvips {pyvips.__version__} (libvips {pyvips.version(0)}.{pyvips.version(1)}."
    "{pyvips.version(2)})')"
)


def vips_python() -> tuple[str, str] | None:
    """The interpreter that has pyvips and its library (the peers' venv, made by `make bench`, else this
    one), with the versions; None when neither can load it."""
    from bench.common import peer_python

    for python in (peer_python(), Path(sys.executable)):
        if python is None:
            continue
        done = subprocess.run([str(python), "-c", VIPS_VERSION], cwd=ROOT, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return str(python), done.stdout.strip()
    return None


def plan(pictures: Pictures, repeat: int, vips: str | None) -> list[Row]:
    from chalicelib.thumbnails.decisions import Dimensions, decode_request, fit
    from chalicelib.thumbnails.policy import ThumbnailSize

    def targets(source: Dimensions, sizes: Sequence[Mapping[str, Any]]) -> tuple[tuple[int, int], ...]:
        fits = [fit(source, ThumbnailSize(**size)) for size in sizes]
        return tuple((geometry.width, geometry.height) for geometry in fits)

    def spec(
        image: Path, source: Dimensions, sizes: Sequence[Mapping[str, Any]], kind: str, times: int
    ) -> dict[str, Any]:
        found = {"python": vips} if kind == "vips" and vips else {}
        made = [list(target) for target in targets(source, sizes)]
        return {"image": str(image), "repeat": times, "sizes": list(sizes), "targets": made, "kind": kind, **found}

    source = Dimensions(WIDTH, HEIGHT)
    base = {"image": str(pictures.photo), "repeat": repeat}
    request = decode_request(source, [ThumbnailSize(**SMALL)])
    rows = [
        Row("24 MP", "decode", {**base, "kind": "decode"}, ((WIDTH, HEIGHT),)),
        Row("256 px", "draft", {**base, "kind": "draft", "draft": [request.width, request.height]}, None),
    ]
    speed_kinds = ("ours", "avif", "naive", "vips") if vips else ("ours", "avif", "naive")
    for case, sizes in CASES.items():
        expected = targets(source, sizes)
        rows += [Row(case, kind, spec(pictures.photo, source, sizes, kind, repeat), expected) for kind in speed_kinds]
    three = CASES["three sizes"]
    big = [
        (
            "50 MP photo",
            pictures.big_photo,
            Dimensions(*BIG_PHOTO),
            ("ours", "naive", "vips") if vips else ("ours", "naive"),
        ),
        ("100 MP 32-bit grey TIFF, turned", pictures.big_tiff, Dimensions(*BIG_TIFF).transposed(), ("ours",)),
        ("100 MP 16-bit grey PNG", pictures.big_png, Dimensions(*BIG_PNG), ("ours",)),
    ]
    for case, image, upright, kinds in big:
        expected = targets(upright, three)
        rows += [Row(case, kind, spec(image, upright, three, kind, 1), expected, memory=True) for kind in kinds]
    return rows


def measure(row: Row) -> Sample:
    """The row's approach in a fresh `python -m bench.thumbnails --worker` process (libvips': the peers' venv)."""
    python = row.spec.get("python", sys.executable)
    command = [python, "-m", "bench.thumbnails", "--worker", json.dumps(row.spec)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{row.approach} {row.case} failed:\n{done.stderr}")
    answer = json.loads(done.stdout.splitlines()[-1])
    return Sample(
        tuple(answer["seconds"]),
        answer["imports_kib"],
        answer["peak_kib"],
        tuple((width, height) for width, height in answer["dimensions"]),
        sum(answer["bytes"]),
    )


def run_rows(rows: Sequence[Row], rounds: int) -> list[Result]:
    """Every row once per round, rows interleaved, so a busy spell of the machine hits them all alike."""
    samples: list[list[Sample]] = [[] for _ in rows]
    for round_ in range(1, rounds + 1):
        for row, row_samples in zip(rows, samples, strict=True):
            row_samples.append(measure(row))
            milliseconds = statistics.median(row_samples[-1].seconds) * 1000
            print(f"  round {round_}, {row.case}, {row.approach}: {milliseconds:.0f} ms", flush=True)
    return [Result.of(row, row_samples) for row, row_samples in zip(rows, samples, strict=True)]


def wrong_sizes(results: Sequence[Result]) -> list[str]:
    return [
        f"{r.row.approach} {r.row.case}: made {_sizes_text(r.dimensions)}, expected {_sizes_text(r.row.expected)}"
        for r in results
        if r.row.expected is not None and r.dimensions != r.row.expected
    ]


def _sizes_text(dimensions: Sequence[tuple[int, int]]) -> str:
    return " + ".join(f"{width}x{height}" for width, height in dimensions)


@dataclass(frozen=True)
class Verdict:
    decode_ratio: float  # ours at 256 px / decode only
    naive_ratio: float  # naive at 256 px / ours at 256 px
    peak_mib: float  # the highest peak RSS of ours on the big pictures
    memory_mib: int  # the thumbnail function's memory (Lambda's "MB" are MiB)

    @property
    def met(self) -> bool:
        return (
            self.decode_ratio <= DECODE_TARGET and self.naive_ratio >= NAIVE_TARGET and self.peak_mib < self.memory_mib
        )

    def text(self) -> str:
        decode = "met" if self.decode_ratio <= DECODE_TARGET else "**MISSED**"
        naive = "met" if self.naive_ratio >= NAIVE_TARGET else "**MISSED**"
        memory = "met" if self.peak_mib < self.memory_mib else "**MISSED**"
        return (
            f"Targets at 256 px: ours / decode only = {self.decode_ratio:.2f}x (target <= {DECODE_TARGET}x): "
            f"{decode}; naive / ours = {self.naive_ratio:.1f}x (target >= {NAIVE_TARGET:g}x): {naive}. "
            f"Memory: ours peaks at {self.peak_mib:,.0f} MiB on the big pictures (target < the function's "
            f"{self.memory_mib:,} MiB): {memory}."
        )


def verdict(results: Sequence[Result]) -> Verdict:
    from chalicelib.thumbnails.decisions import FUNCTION_MEMORY_MB

    seconds = {(r.row.case, r.row.approach): r.seconds for r in results}
    ours = seconds["256 px", "ours"]
    peak = max(r.peak_mib for r in results if r.row.memory and r.row.approach == "ours")
    return Verdict(ours / seconds["24 MP", "decode"], seconds["256 px", "naive"] / ours, peak, FUNCTION_MEMORY_MB)


def avif_costs(results: Sequence[Result]) -> str:
    """What writing AVIF instead of WebP costs, size by size."""
    from chalicelib.thumbnails.imaging import AVIF_SPEED

    seconds = {(r.row.case, r.row.approach): r for r in results}
    parts = [
        f"{case} {seconds[case, 'avif'].seconds / seconds[case, 'ours'].seconds:.2f}x the time, "
        f"{seconds[case, 'avif'].output_bytes / seconds[case, 'ours'].output_bytes:.2f}x the bytes"
        for case in CASES
    ]
    return (
        f"AVIF output (q{WEBP_QUALITY}, libavif speed {AVIF_SPEED}) against WebP q{WEBP_QUALITY}: "
        + "; ".join(parts)
        + ". The two quality scales are not the same scale: compare bytes at equal looks, not equal numbers."
    )


def _ratio(numerator: float | None, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if numerator is not None else ""


def memory_table(results: Sequence[Result], memory_mib: int) -> list[str]:
    lines = [
        f"| picture | approach | output | time | peak RSS | of the function's {memory_mib:,} MiB |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in results:
        if r.row.memory:
            lines.append(
                f"| {r.row.case} | {APPROACHES[r.row.approach]} | {_sizes_text(r.dimensions)} "
                f"| {r.seconds * 1000:,.0f} ms | {r.peak_mib:,.0f} MiB | {r.peak_mib / memory_mib:.0%} |"
            )
    return lines


def table(results: Sequence[Result]) -> list[str]:
    floor = next(r.seconds for r in results if r.row.approach == "decode")
    naive = {r.row.case: r.seconds for r in results if r.row.approach == "naive" and not r.row.memory}
    lines = [
        "| size | approach | output | median | vs decode only | naive / this | peak RSS | after imports |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in (r for r in results if not r.row.memory):
        speedup = naive.get(r.row.case) if r.row.approach in ("ours", "avif", "vips") else None
        output = _sizes_text(r.dimensions) + (f" ({r.output_bytes / 1000:,.0f} kB)" if r.output_bytes else "")
        lines.append(
            f"| {r.row.case} | {APPROACHES[r.row.approach]} | {output} | {r.seconds * 1000:,.0f} ms "
            f"| {_ratio(r.seconds, floor)} | {_ratio(speedup, r.seconds)} "
            f"| {r.peak_mib:,.0f} MiB | {r.imports_mib:,.0f} MiB |"
        )
    return lines


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def report(results: Sequence[Result], pictures: Pictures, arguments: argparse.Namespace, vips: str | None) -> str:
    from PIL import features

    from bench.machine import header

    data = pictures.photo.read_bytes()
    libraries = (
        f", libjpeg-turbo {features.version('libjpeg_turbo')}, libwebp {features.version('webp')}, "
        f"libavif {features.version('avif')}"
    )
    peer = vips or "pyvips not importable: no libvips rows (`make bench` installs it in bench/.venv-peers)"
    lines = [
        *header("Thumbnail render benchmark", "Pillow", note=f"{libraries}; {peer}"),
        "",
        "## Thumbnails: the render path against the naive Pillow path and libvips",
        "",
        f"- cpu: {_cpu()}",
        f"- image: generated {WIDTH}x{HEIGHT} JPEG, quality {JPEG_QUALITY}, 4:2:0, sRGB ICC profile, "
        f"{len(data) / 1e6:.1f} MB, sha256 {hashlib.sha256(data).hexdigest()[:12]} (seed {SEED})",
        f"- every approach writes WebP quality {WEBP_QUALITY}; three sizes = small 256x256 contain "
        "+ medium width 1024 + large width 2048",
        f"- each row: {arguments.rounds} rounds, rows interleaved, each a fresh process: imports, one untimed "
        f"warm-up, then {arguments.repeat} timed repeats of reading the file and the work; median of all "
        f"{arguments.rounds * arguments.repeat}. Peak RSS = the highest VmHWM of those processes (interpreter "
        "+ imports + work); after imports = VmHWM before the warm-up",
        "",
        *table(results),
        "",
        avif_costs(results),
        "",
        "## Memory: big pictures within the function's memory",
        "",
        f"- pictures: the 50 MP photo is generated like the 24 MP one ({BIG_PHOTO[0]}x{BIG_PHOTO[1]}, "
        f"{pictures.big_photo.stat().st_size / 1e6:.1f} MB); the TIFF is {BIG_TIFF[0]}x{BIG_TIFF[1]} 32-bit grey "
        f"bands, deflated, EXIF Orientation 6 ({pictures.big_tiff.stat().st_size / 1e3:,.0f} kB); the PNG "
        f"{BIG_PNG[0]}x{BIG_PNG[1]} 16-bit grey bands ({pictures.big_png.stat().st_size / 1e3:,.0f} kB)",
        "- three sizes each, one warm-up and one timed run in a fresh process; peak RSS as above",
        "",
        *memory_table(results, verdict(results).memory_mib),
        "",
        verdict(results).text(),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    if arguments.worker:
        print(json.dumps(work(json.loads(arguments.worker))))
        return 0
    found = vips_python()
    vips = found[1] if found else None
    with tempfile.TemporaryDirectory(prefix="opsbots-bench-") as directory:
        pictures = Pictures.make(Path(directory))
        print(f"{pictures}; {vips or 'no pyvips'}", flush=True)
        results = run_rows(plan(pictures, arguments.repeat, found[0] if found else None), arguments.rounds)
        text = report(results, pictures, arguments, vips)
    print("\n" + text)
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(text)
    print(f"written to {arguments.out}")
    wrong = wrong_sizes(results)
    for line in wrong:
        print(f"WRONG SIZE: {line}", file=sys.stderr)
    if wrong or not verdict(results).met:
        print("exit 1: a thumbnail has the wrong size or a target is missed", file=sys.stderr)
        return 1
    return 0


def _positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number} is not a positive number")
    return number


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.thumbnails", description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=_positive, default=5, metavar="N", help="timed runs per process (default 5)")
    parser.add_argument("--rounds", type=_positive, default=2, metavar="R", help="processes per row (default 2)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the markdown table goes")
    parser.add_argument("--worker", metavar="JSON", help=argparse.SUPPRESS)  # one row, in a child process
    return parser


if __name__ == "__main__":
    sys.exit(main())
