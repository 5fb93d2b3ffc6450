"""The status page as a reader sees it: what the demo shows of it and the browser test asserts on."""

from __future__ import annotations

from html.parser import HTMLParser


class Dom(HTMLParser):
    """The rows of the checks table (cells' text by check), the banner, the sparklines, the incidents, and every
    address the page would fetch something from (none: it is self-contained)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self.row: str | None = None
        self.at: str | None = None  # the element whose text is being read
        self.summary = ""
        self.polylines: list[str] = []
        self.incidents: list[str] = []
        self.fetches: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.fetches += [value or "" for name, value in attrs if name in ("src", "href", "srcset", "action")]
        self.fetches += [tag] if tag in ("script", "link", "iframe", "object", "embed", "img") else []
        if tag == "tr" and found.get("data-check"):
            self.row = found["data-check"]
            self.rows[self.row or ""] = []
        elif tag == "td" and self.row:
            self.rows[self.row].append("")
            self.at = "td"
        elif tag == "polyline":
            self.polylines.append(found.get("points") or "")
        elif tag == "p" and found.get("id") == "summary":
            self.at = "summary"
        elif tag == "li":
            self.incidents.append("")
            self.at = "li"

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self.row = None
        if tag in ("td", "p", "li"):
            self.at = None

    def handle_data(self, data: str) -> None:
        if self.at == "td" and self.row:
            self.rows[self.row][-1] += data.strip()
        elif self.at == "summary":
            self.summary += data.strip()
        elif self.at == "li":
            self.incidents[-1] += data
