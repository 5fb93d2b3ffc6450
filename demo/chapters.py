"""The chapters of `make demo`, in order: one per bot. A chapter plays its scenes and returns pass/fail."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from demo import dns, security_groups, snapshots, thumbnails, websites
from demo.stage import Stage


@dataclass(frozen=True)
class Chapter:
    name: str  # what `python -m demo NAME` selects
    bot: str  # its bot's name in chalicelib/bots.py: every bot has a chapter (tests/test_registry.py)
    title: str
    play: Callable[[Stage], bool]


CHAPTERS: tuple[Chapter, ...] = (
    Chapter(
        "security-groups",
        "security_groups",
        "the security-group guard (chalicelib/security_groups/)",
        security_groups.run,
    ),
    Chapter("dns", "dns", "the DNS bot (chalicelib/dns/)", dns.run),
    Chapter("snapshots", "snapshots", "the snapshot bot (chalicelib/snapshots/)", snapshots.run),
    Chapter("thumbnails", "thumbnails", "the thumbnail bot (chalicelib/thumbnails/)", thumbnails.run),
    Chapter("websites", "websites", "the website checks (chalicelib/websites/)", websites.run),
)
