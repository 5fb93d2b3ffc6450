"""How the demo talks: a timeline of steps, checks marked ✔/✘, and emails rendered as text."""

from __future__ import annotations

import re
import textwrap
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import unescape
from html.parser import HTMLParser

PASS = "✔"
FAIL = "✘"
MARGIN = " " * 4
STAMP_WIDTH = 14  # "HH:MM:SS.mmm  "
WIDTH = 110


def clock(moment: datetime | None = None) -> str:
    """A wall-clock stamp for the timeline, UTC, to the millisecond."""
    return (moment or datetime.now(UTC)).strftime("%H:%M:%S.%f")[:-3]


def chapter(number: int, title: str) -> None:
    print(f"\n{'═' * WIDTH}\nChapter {number}: {title}\n{'═' * WIDTH}")


def scene(number: int, title: str) -> None:
    print(f"\n  Scene {number}: {title}\n  {'─' * (len(title) + 10)}")


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


@dataclass
class Checks:
    """The checks of one scene; `ok` is the scene's verdict."""

    failures: list[str] = field(default_factory=list)
    count: int = 0

    def that(self, passed: bool, claim: str, otherwise: str = "") -> bool:
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


def play_scenes(scenes: Sequence[tuple[str, Callable[[], bool]]]) -> bool:
    """Play every scene in order; a scene that crashes fails, and the next ones still play."""
    results = []
    for number, (title, play) in enumerate(scenes, 1):
        scene(number, title)
        try:
            results.append(play())
        except Exception as error:
            traceback.print_exc()
            Checks().that(False, f"scene {number} ran to the end", f"{type(error).__name__}: {error}")
            results.append(False)
    return all(results)
