"""Plain data and pure decisions; no network, no AWS.

A run judges each due check's probe (`judge`), then moves the check's state along (`advance`): DOWN is
announced after `failure_threshold` failed runs in a row, UP after `success_threshold` good ones, a
reminder at most every `remind_every` while down; nothing while the state holds. Inside a maintenance
window a check still runs but its state stands still: what happens there announces nothing, and a
site still broken when the window ends is announced DOWN by the runs after it, as any other.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, Literal

from chalicelib import notify

if TYPE_CHECKING:
    from chalicelib.websites.policy import Check, WebsitesPolicy

BOT: Final = "websites"
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# Never probed, whatever a check allows: the instance-metadata service hands out the function's credentials.
METADATA_ADDRESSES: Final = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})

State = Literal["unknown", "up", "down"]
Announcement = Literal["down", "up", "reminder"]


def is_due(every: timedelta, at: datetime) -> bool:
    """Whether a check that runs `every` runs in the scheduled run at `at` (whole minutes from the epoch, so a
    retried delivery of the same run decides alike)."""
    minutes = int((at - EPOCH).total_seconds() // 60)
    return minutes % int(every.total_seconds() // 60) == 0


def address_refused(address: str, allow_private: bool) -> str | None:
    """Why a check may not send a packet to `address`, or None. No server-side request forgery: a target in
    loopback, private, link-local, unique-local or unspecified space is refused unless the check allows
    private targets; the instance-metadata addresses are refused always."""
    ip = ipaddress.ip_address(address)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    ip = mapped or ip
    if ip in METADATA_ADDRESSES:
        return f"{address} is the instance-metadata address: never checked"
    private = ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_reserved
    if private and not allow_private:
        return f"{address} is a private address: refused unless the check says allow_private: true"
    return None


@dataclass(frozen=True)
class Certificate:
    subject: str
    expires: datetime


@dataclass(frozen=True)
class Probe:
    """What one request found: an answer, or why there was none."""

    status: int | None = None
    seconds: float = 0.0  # to the whole answer, redirects included
    body: bytes = b""  # as much of the body as a check may look at
    certificate: Certificate | None = None  # the leaf certificate of the last hop, from its handshake
    error: str | None = None  # refused, timed out, no such name, a target the rules refuse ...


@dataclass(frozen=True)
class Verdict:
    good: bool
    reason: str  # why a run failed; for a good run, what it saw
    seconds: float


def judge(check: Check, probe: Probe, now: datetime) -> Verdict:
    """Whether one run of `check` was good, and why not."""
    expect = check.expect
    if probe.error is not None or probe.status is None:
        return Verdict(False, probe.error or "no answer", probe.seconds)
    if not expect.accepts(probe.status):
        return Verdict(False, f"status {probe.status}, expected {', '.join(expect.status)}", probe.seconds)
    if expect.body_contains is not None and expect.body_contains.encode() not in probe.body:
        return Verdict(False, f"the answer does not contain {expect.body_contains!r}", probe.seconds)
    if expect.max_response_time is not None and probe.seconds > expect.max_response_time.total_seconds():
        limit = expect.max_response_time.total_seconds()
        return Verdict(False, f"too slow: answered in {probe.seconds:.2f} s, more than {limit:g} s", probe.seconds)
    if expect.certificate_days is not None and probe.certificate is not None:
        left = probe.certificate.expires - now
        if left < timedelta(days=expect.certificate_days):
            days = max(0, left.days)
            return Verdict(
                False,
                f"certificate {probe.certificate.subject} expires in {days} day(s), on "
                f"{probe.certificate.expires:%Y-%m-%d %H:%M} UTC (wanted {expect.certificate_days} or more)",
                probe.seconds,
            )
    return Verdict(True, f"status {probe.status} in {probe.seconds:.2f} s", probe.seconds)


@dataclass(frozen=True)
class CheckState:
    """What the bot remembers of a check between runs (its DynamoDB item)."""

    state: State = "unknown"
    failures: int = 0  # consecutive failed runs
    successes: int = 0  # consecutive good runs
    since: datetime | None = None  # when the state began (DOWN: at the streak's first failed run)
    failing_since: datetime | None = None  # the first failed run of the current streak
    reason: str = ""  # the last failed run's reason
    reminded: datetime | None = None  # the last DOWN email or reminder
    version: int = 0  # bumped by every write: a write is conditional on the version read


@dataclass(frozen=True)
class Transition:
    state: CheckState
    announce: Announcement | None = None
    outage: timedelta | None = None  # for UP: how long it was down


def advance(policy: WebsitesPolicy, check: Check, before: CheckState, verdict: Verdict, at: datetime) -> Transition:
    """The check's state after one run judged `verdict` at `at`, and what to announce.

    The counts stop at their threshold and the reason is kept from the transition (or the last
    reminder), so a state that holds changes nothing: no write, run after run.
    """
    if policy.in_maintenance(check.name, at):
        return Transition(before)  # the state stands still: nothing in the window counts, nothing is announced
    transition = _next(policy, check, before, verdict, at)
    if transition.state == before:
        return Transition(before)
    return replace(transition, state=replace(transition.state, version=before.version + 1))


def _next(policy: WebsitesPolicy, check: Check, before: CheckState, verdict: Verdict, at: datetime) -> Transition:
    if verdict.good:
        successes = min(before.successes + 1, policy.setting(check, "success_threshold"))
        after = replace(before, failures=0, successes=successes, failing_since=None)
        if before.state == "unknown":
            return Transition(replace(after, state="up", since=at, reason=""))
        if before.state == "down" and successes >= policy.setting(check, "success_threshold"):
            outage = at - before.since if before.since else None
            return Transition(replace(after, state="up", since=at, reminded=None), "up", outage)
        return Transition(after)
    threshold = policy.setting(check, "failure_threshold")
    after = replace(
        before, failures=min(before.failures + 1, threshold), successes=0, failing_since=before.failing_since or at
    )
    if before.state != "down" and after.failures >= threshold:
        down = replace(after, state="down", since=after.failing_since, reminded=at, reason=verdict.reason)
        return Transition(down, "down")
    remind_every: timedelta = policy.setting(check, "remind_every")
    last = before.reminded or before.since
    if before.state == "down" and remind_every and last is not None and at - last >= remind_every:
        return Transition(replace(after, reminded=at, reason=verdict.reason), "reminder")
    return Transition(after)


def state_notice(
    policy: WebsitesPolicy, check: Check, transition: Transition, verdict: Verdict, at: datetime
) -> notify.Notice:
    """The email a transition announces: what happened, why (for DOWN), and for UP how long it was down."""
    state, announce = transition.state, transition.announce
    words = {"down": "DOWN", "up": "UP", "reminder": "still DOWN"}[announce or "down"]
    subject = f"[opsbots] {check.name} is {words}" + (f": {state.reason}" if announce != "up" else "")
    remind: timedelta = policy.setting(check, "remind_every")
    facts = {
        "check": check.name,
        "url": check.url,
        "announce": announce,
        "at": at.isoformat(),
        "since": state.since.isoformat() if state.since else "",
        "reason": state.reason,
        "failures": state.failures,
        "outage": spoken(transition.outage) if transition.outage else "",
        "last": verdict.reason,
        "remind": spoken(remind) if remind else "",
    }
    return notify.notice("website_state", to=policy.notify.email, subject=subject, facts=facts)


def spoken(span: timedelta) -> str:
    """A span as people say it: 3 h 12 min, 4 min, 45 s."""
    seconds = int(span.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{hours} h" if hours else "", f"{minutes} min" if minutes else "", f"{seconds} s" if seconds else ""]
    return " ".join(part for part in parts if part) or "0 s"
