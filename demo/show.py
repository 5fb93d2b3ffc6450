"""How the demo talks: a timeline of steps, checks marked ✔/✘, and emails rendered as text.

What it observed is also kept as data, in the current `Report`: every chapter and scene, each check
under a stable key with its verdict and the state facts it was decided on. `python -m demo --report
PATH` writes it as JSON; tests assert on it, not on the wording of the timeline.
"""

from __future__ import annotations

import json
import re
import textwrap
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

PASS = "✔"
FAIL = "✘"
MARGIN = " " * 4
STAMP_WIDTH = 14  # "HH:MM:SS.mmm  "
WIDTH = 110


def clock(moment: datetime | None = None) -> str:
    """A wall-clock stamp for the timeline, UTC, to the millisecond."""
    return (moment or datetime.now(UTC)).strftime("%H:%M:%S.%f")[:-3]


def chapter(number: int, title: str, *, name: str = "", bot: str = "") -> ChapterRecord:
    """Print the chapter's heading; its record, which the scenes played next go into, is returned."""
    print(f"\n{'═' * WIDTH}\nChapter {number}: {title}\n{'═' * WIDTH}")
    record = ChapterRecord(number, name, bot, title)
    _current.chapters.append(record)
    return record


def scene(number: int, title: str, *, key: str) -> SceneRecord:
    """Print the scene's heading; its record, which the checks made next go into, is returned."""
    print(f"\n  Scene {number}: {title}\n  {'─' * (len(title) + 10)}")
    if not _current.chapters:
        raise RuntimeError(f"scene {key!r} played outside any chapter: call show.chapter first")
    record = SceneRecord(number, key, title)
    _current.chapters[-1].scenes.append(record)
    return record


def step(text: str, moment: datetime | None = None) -> None:
    """One line of the timeline; continuation lines line up under the text."""
    first, *rest = text.splitlines() or [""]
    print(f"{MARGIN}{clock(moment)}  {first}")
    for line in rest:
        print(f"{MARGIN}{' ' * STAMP_WIDTH}{line}")


def note(text: str) -> None:
    for line in text.splitlines():
        print(f"{MARGIN}{' ' * STAMP_WIDTH}{line}")


def quoted(text: str, prefix: str = "│ ") -> str:
    """Text shown as a block quote, wrapped to the demo's width."""
    lines: list[str] = []
    for line in text.splitlines():
        wrapped = textwrap.wrap(line, WIDTH - STAMP_WIDTH - len(MARGIN) - len(prefix), subsequent_indent="    ")
        lines.extend([prefix + part for part in wrapped] or [prefix.rstrip()])
    return "\n".join(lines)


def columns(rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    """Rows of cells as left-aligned columns, one line per row."""
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(max(map(len, rows), default=0))]
    return "\n".join(
        (indent + "  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths, strict=False))).rstrip()
        for row in rows
    )


# ----- the report: what the demo observed, as data ---------------------------------------------------------

KEY = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+")  # dotted snake_case: "sg.ssh_to_the_world.revoked"


@dataclass
class CheckRecord:
    key: str  # stable: "<scene key>.<what>", unique in the report
    passed: bool
    claim: str  # the line printed after ✔/✘
    facts: dict[str, object]  # the state the verdict was decided on, as JSON values
    otherwise: str = ""  # what was found instead, for a failed check


@dataclass
class SceneRecord:
    number: int
    key: str  # "<chapter prefix>.<scene>", the prefix of every check key in the scene
    title: str
    checks: list[CheckRecord] = field(default_factory=list)
    passed: bool | None = None  # None: not played to its verdict


@dataclass
class ChapterRecord:
    number: int
    name: str  # what `python -m demo NAME` selects
    bot: str
    title: str
    scenes: list[SceneRecord] = field(default_factory=list)
    passed: bool | None = None


@dataclass
class Report:
    """Every chapter, scene and check of one run; a check key may appear once only."""

    chapters: list[ChapterRecord] = field(default_factory=list)
    endpoint: str = ""
    elapsed_seconds: float | None = None

    def keys(self) -> list[str]:
        return [check.key for chapter in self.chapters for scene in chapter.scenes for check in scene.checks]

    def add(self, check: CheckRecord) -> None:
        if not self.chapters or not self.chapters[-1].scenes:
            raise RuntimeError(f"check {check.key!r} made outside any scene")
        scene = self.chapters[-1].scenes[-1]
        if not KEY.fullmatch(check.key) or not check.key.startswith(f"{scene.key}."):
            raise ValueError(f"check key {check.key!r}: want dotted snake_case under the scene's {scene.key!r}")
        if check.key in self.keys():
            raise ValueError(f"duplicate check key {check.key!r}: every check needs a key of its own")
        scene.checks.append(check)

    @property
    def passed(self) -> bool:
        return bool(self.chapters) and all(chapter.passed for chapter in self.chapters)

    def as_json(self) -> dict[str, object]:
        checks = [check for chapter in self.chapters for scene in chapter.scenes for check in scene.checks]
        return {
            "passed": self.passed,
            "checks": len(checks),
            "failed": [check.key for check in checks if not check.passed],
            "elapsed_seconds": self.elapsed_seconds,
            "endpoint": self.endpoint,
            "chapters": [asdict(chapter) for chapter in self.chapters],
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.as_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


_current = Report()


def new_report() -> Report:
    """Start an empty report: the chapters, scenes and checks from here on go into it."""
    global _current
    _current = Report()
    return _current


def plain(value: object) -> object:
    """`value` as JSON values: mappings with string keys, lists (a set sorted), numbers, strings, None."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise TypeError(f"a fact's mapping needs string keys: {list(value)!r}")
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((plain(item) for item in value), key=lambda item: json.dumps(item, sort_keys=True))
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"not a JSON fact: {type(value).__name__} {value!r}")


@dataclass
class Checks:
    """The checks of one scene; `ok` is the scene's verdict. Each goes into the report under its `key`, with
    the `facts` it was decided on."""

    failures: list[str] = field(default_factory=list)
    count: int = 0

    def that(
        self,
        passed: bool,
        claim: str,
        otherwise: str = "",
        *,
        key: str,
        facts: Mapping[str, object] | None = None,
    ) -> bool:
        found = {name: plain(value) for name, value in (facts or {}).items()}
        _current.add(CheckRecord(key, bool(passed), claim, found, "" if passed else otherwise))
        self.count += 1
        print(f"{MARGIN}{PASS if passed else FAIL} {claim}" + ("" if passed or not otherwise else f" — {otherwise}"))
        if not passed:
            self.failures.append(claim)
        return passed

    @property
    def ok(self) -> bool:
        return not self.failures


class _TextRendering(HTMLParser):
    """Enough of HTML for the bots' emails: headings, paragraphs, lists and header-row tables."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self._text: list[str] = []
        self._row: list[str] | None = None
        self._header: list[str] = []
        self._in_table = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"h1", "h2", "h3", "p", "li", "table", "br"}:
            self._flush()
        if tag == "table":
            self._in_table, self._header = True, []
        elif tag == "tr":
            self._row = []
        elif tag in {"td", "th"}:
            self._text = []
        elif tag == "li":
            self._text = ["- "]

    def handle_endtag(self, tag: str) -> None:
        if tag in {"td", "th"} and self._row is not None:
            self._row.append(_squash("".join(self._text)))
            self._text = []
        elif tag == "tr" and self._row is not None:
            self._end_row(self._row)
            self._row = None
        elif tag == "table":
            self._in_table = False
        elif tag in {"h1", "h2", "h3", "p", "li", "ul"}:
            self._flush()

    def handle_data(self, data: str) -> None:
        self._text.append(data)

    def _end_row(self, cells: list[str]) -> None:
        if not self._header:
            self._header = cells
            return
        if len(cells) < len(self._header):  # a row that spans the table (the digest's failures)
            self.lines.append(" · ".join(cell for cell in cells if cell))
            return
        width = max(len(name) for name in self._header)
        self.lines.extend(f"  {name:<{width}}  {cell}" for name, cell in zip(self._header, cells, strict=False))
        self.lines.append("")

    def _flush(self) -> None:
        text = _squash("".join(self._text))
        if text and not self._in_table:
            self.lines.append(text)
        self._text = []

    def text(self) -> str:
        self._flush()
        return "\n".join(self.lines).strip()


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", unescape(text)).strip()


def html_as_text(html: str) -> str:
    parser = _TextRendering()
    parser.feed(html)
    parser.close()
    return parser.text()


def play_scenes(prefix: str, scenes: Sequence[tuple[str, Callable[[], bool]]]) -> bool:
    """Play every scene in order; a scene that crashes fails, and the next ones still play.

    A scene's key is `prefix` and the name of its method ("sg.ssh_to_the_world"): its checks' keys begin with it.
    """
    results = []
    for number, (title, play) in enumerate(scenes, 1):
        record = scene(number, title, key=f"{prefix}.{getattr(play, '__name__', f'scene_{number}')}")
        try:
            passed = play()
        except Exception as error:
            traceback.print_exc()
            Checks().that(
                False,
                f"scene {number} ran to the end",
                f"{type(error).__name__}: {error}",
                key=f"{record.key}.ran_to_the_end",
            )
            passed = False
        record.passed = passed
        results.append(passed)
    return all(results)
