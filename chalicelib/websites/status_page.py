"""The status page's data and the page itself: plain data in, one self-contained HTML document out.

What a page needs of the past is kept compactly, bounded per check whatever its age: the last
`SAMPLES` response times (the sparkline), good and total runs per hour for a day and per day for
thirty (the uptimes), and the last `INCIDENTS` outages. A run in a maintenance window adds its
response time but counts toward no uptime. The page holds no script, font or style from anywhere
else: its style is inline, its sparkline an inline SVG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Final

from pydantic import TypeAdapter, ValidationError

from chalicelib import notify
from chalicelib.websites.decisions import spoken

if TYPE_CHECKING:
    from chalicelib.websites.decisions import Transition, Verdict

SAMPLES: Final = 60  # response times kept per check: the sparkline's points
INCIDENTS: Final = 10  # outages kept per check
HOURS: Final = 24
DAYS: Final = 30
SPARK_WIDTH: Final = 160
SPARK_HEIGHT: Final = 28
NONE: Final = "\N{EN DASH}"  # no value yet

Buckets = tuple[tuple[str, int, int], ...]  # (period, good runs, runs), oldest first


@dataclass(frozen=True)
class Incident:
    started: datetime
    reason: str
    ended: datetime | None = None  # None: still down


@dataclass(frozen=True)
class History:
    """One check's past, as far as the page looks: every part bounded."""

    state: str = "unknown"  # as of its last recorded run: the page shows checks not due in this run too
    since: datetime | None = None
    last_run: datetime | None = None  # the latest run recorded: a run at or before it is not recorded again
    samples: tuple[float, ...] = ()  # seconds, oldest first; a failed run's is its time to the failure
    hours: Buckets = ()  # per hour "YYYY-MM-DDTHH"
    days: Buckets = ()  # per day "YYYY-MM-DD"
    incidents: tuple[Incident, ...] = ()  # newest last


def _counted(buckets: Buckets, key: str, good: bool, keep: int) -> Buckets:
    if buckets and buckets[-1][0] == key:
        _, goods, runs = buckets[-1]
        return (*buckets[:-1], (key, goods + good, runs + 1))[-keep:]
    return (*buckets, (key, int(good), 1))[-keep:]


def recorded(
    history: History, verdict: Verdict, transition: Transition, at: datetime, *, counted: bool = True
) -> History:
    """`history` with one more run: its time, its hour's and day's counts (unless not `counted`: a run in a
    maintenance window), and the outage it opened or closed. A run already recorded, or older than one that
    was (a redelivery, a late overlapping run), changes nothing."""
    if history.last_run is not None and at <= history.last_run:
        return history
    incidents = history.incidents
    if transition.announce == "down":
        incidents = (*incidents, Incident(transition.state.since or at, transition.state.reason))[-INCIDENTS:]
    elif transition.announce == "up" and incidents and incidents[-1].ended is None:
        incidents = (*incidents[:-1], replace(incidents[-1], ended=at))
    hour, day = f"{at:%Y-%m-%dT%H}", f"{at:%Y-%m-%d}"
    return replace(
        history,
        state=transition.state.state,
        since=transition.state.since,
        last_run=at,
        samples=(*history.samples, round(verdict.seconds, 3))[-SAMPLES:],
        hours=_counted(history.hours, hour, verdict.good, HOURS) if counted else history.hours,
        days=_counted(history.days, day, verdict.good, DAYS) if counted else history.days,
        incidents=incidents,
    )


def uptime(buckets: Buckets, since: str) -> float | None:
    """The share of good runs in the buckets from `since` on; None without a run."""
    kept = [(good, runs) for key, good, runs in buckets if key >= since]
    runs = sum(runs for _, runs in kept)
    return sum(good for good, _ in kept) / runs if runs else None


def sparkline(samples: Sequence[float], width: int = SPARK_WIDTH, height: int = SPARK_HEIGHT) -> str:
    """The response times as SVG polyline points, the slowest at the top; empty without a sample."""
    if not samples:
        return ""
    top = max(samples) or 1.0
    step = width / max(1, len(samples) - 1)
    return " ".join(f"{i * step:.1f},{height - value / top * (height - 2) - 1:.1f}" for i, value in enumerate(samples))


# ----- the stored form: one JSON document next to the page ------------------------------------------


@cache
def _histories() -> TypeAdapter[dict[str, History]]:
    return TypeAdapter(dict[str, History])


def to_json(histories: Mapping[str, History]) -> bytes:
    return _histories().dump_json(dict(histories))


def from_json(document: bytes) -> dict[str, History]:
    """The histories a document holds, bounded again (the bucket is not only ours to write).

    Raises ValueError for anything that is not such a document.
    """
    try:
        histories = _histories().validate_json(document)
    except ValidationError as error:
        raise ValueError(f"not a status history: {error.error_count()} error(s)") from error
    return {
        name: replace(
            history,
            samples=history.samples[-SAMPLES:],
            hours=history.hours[-HOURS:],
            days=history.days[-DAYS:],
            incidents=history.incidents[-INCIDENTS:],
        )
        for name, history in histories.items()
    }


# ----- the page ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    name: str
    state: str  # up, down, unknown or maintenance
    since: str
    uptimes: tuple[str, str, str]  # 24 h, 7 d, 30 d
    sparkline: str  # SVG polyline points
    slowest: str  # the sparkline's top, spoken
    last: str  # the last response time, spoken


def _percent(share: float | None) -> str:
    return NONE if share is None else f"{share * 100:.2f}%"


def _minute(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else NONE


def render(checks: Sequence[tuple[str, History, bool]], at: datetime) -> str:
    """The whole page, for (name, history, in maintenance now) in the policy's order: every check's state,
    since when, uptime over 24 h / 7 d / 30 d, its response times, and the recent incidents, newest first."""
    # The 24 h uptime from the hours after this one a day ago; the 7 and 30 d from whole days, today's included.
    hour = f"{at - timedelta(hours=HOURS - 1):%Y-%m-%dT%H}"
    week, month = (f"{at - timedelta(days=days - 1):%Y-%m-%d}" for days in (7, DAYS))
    rows = [
        Row(
            name=name,
            state="maintenance" if maintenance else history.state,
            since=_minute(history.since),
            uptimes=(
                _percent(uptime(history.hours, hour)),
                _percent(uptime(history.days, week)),
                _percent(uptime(history.days, month)),
            ),
            sparkline=sparkline(history.samples),
            slowest=f"{max(history.samples, default=0) * 1000:.0f} ms",
            last=f"{history.samples[-1] * 1000:.0f} ms" if history.samples else NONE,
        )
        for name, history, maintenance in checks
    ]
    incidents = sorted(
        ((name, incident) for name, history, _ in checks for incident in history.incidents),
        key=lambda found: found[1].started,
        reverse=True,
    )
    down = [row.name for row in rows if row.state == "down"]
    return notify.page(
        "status_page",
        at=_minute(at),
        rows=rows,
        down=down,
        incidents=[
            {
                "check": name,
                "started": _minute(incident.started),
                "ended": _minute(incident.ended) if incident.ended else None,
                "lasted": spoken(incident.ended - incident.started) if incident.ended else None,
                "reason": incident.reason,
            }
            for name, incident in incidents[:INCIDENTS]
        ],
        width=SPARK_WIDTH,
        height=SPARK_HEIGHT,
    )
