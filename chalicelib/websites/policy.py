"""The website-check bot's policy: the contents of websites.yml."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, Field, ValidationInfo, field_validator, model_validator

from chalicelib.policy import (
    DURATION_WRITTEN,
    BucketName,
    NotifySettings,
    RuleName,
    StrictModel,
    duration_parser,
    duration_schema,
    matching,
    string_schema,
    unique,
)

_STATUSES = re.compile(r"([1-5]\d\d)(?:-([1-5]\d\d))?")
_URL = re.compile(r"https?://[^\s/?#]+[^\s]*")
_HEADER = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token: no spaces, colons or line breaks
_BUNDLE = re.compile(r"(?!/)(?!.*(?:^|/)\.\.(?:/|$))[A-Za-z0-9._/-]+\.pem")  # under policies/: relative, no ..
MIN_EVERY = timedelta(minutes=1)  # the schedule's own period: a check cannot run more often
MAX_TIMEOUT = timedelta(seconds=50)  # every check of a run ends within the run's minute

Interval = Annotated[timedelta, duration_parser("smhd", "30s, 1m, 4h or 2d"), duration_schema("smhd"), DURATION_WRITTEN]
Reminder = Annotated[
    timedelta,
    duration_parser("smhd", "30m, 4h or 1d (0 for never)", zero=True),
    duration_schema("smhd", zero=True),
    DURATION_WRITTEN,
]
Url = Annotated[str, matching(_URL, "an http:// or https:// URL"), string_schema(_URL)]
Bundle = Annotated[
    str, matching(_BUNDLE, "a .pem file under policies/ (a relative path, no ..)"), string_schema(_BUNDLE)
]
StatusRange = Annotated[str, matching(_STATUSES, 'a status code or range like "200-299"'), string_schema(_STATUSES)]


def _statuses_in_order(ranges: tuple[str, ...]) -> tuple[str, ...]:
    for written in ranges:
        match = _STATUSES.fullmatch(written)
        if match and match.group(2) and int(match.group(2)) < int(match.group(1)):
            raise ValueError(f"{written!r} ends before it starts")
    return ranges


def _plain_headers(headers: Mapping[str, str]) -> Mapping[str, str]:
    for name, value in headers.items():
        if not _HEADER.fullmatch(name):
            raise ValueError(f"{name!r} is not a header name")
        if "\r" in value or "\n" in value:
            raise ValueError(f"the value of {name} holds a line break")
    return headers


class Expect(StrictModel):
    """What a good answer is; anything else is a failed run, with the reason."""

    status: Annotated[tuple[StatusRange, ...], AfterValidator(_statuses_in_order), Field(min_length=1)] = ("200-399",)
    body_contains: Annotated[str, Field(min_length=1)] | None = None
    max_response_time: Interval | None = None
    certificate_days: Annotated[int, Field(ge=1, le=825)] | None = None  # https only: the leaf's days left

    def accepts(self, status: int) -> bool:
        for written in self.status:
            first, _, last = written.partition("-")
            if int(first) <= status <= int(last or first):
                return True
        return False


def _whole_minutes(every: timedelta | None) -> timedelta | None:
    if every is not None and (every < MIN_EVERY or every.total_seconds() % 60):
        raise ValueError("checks run on a one-minute schedule: every must be whole minutes, at least 1m")
    return every


def _within_a_run(timeout: timedelta | None) -> timedelta | None:
    if timeout is not None and timeout > MAX_TIMEOUT:
        raise ValueError(f"a run must end within its minute: timeout must be at most {MAX_TIMEOUT.seconds}s")
    return timeout


class Defaults(StrictModel):
    """What every check has unless it says otherwise."""

    every: Interval = timedelta(minutes=1)
    timeout: Interval = timedelta(seconds=10)
    failure_threshold: Annotated[int, Field(ge=1, le=100)] = 2  # consecutive failed runs before DOWN
    success_threshold: Annotated[int, Field(ge=1, le=100)] = 1  # consecutive good runs before UP
    remind_every: Reminder = timedelta(hours=4)  # while down; 0: never

    _whole_minutes = field_validator("every")(_whole_minutes)
    _within_a_run = field_validator("timeout")(_within_a_run)


class Check(StrictModel):
    """One website check; any default may be given here instead."""

    name: RuleName
    url: Url
    method: Literal["GET", "HEAD", "POST"] = "GET"
    headers: Annotated[dict[str, str], AfterValidator(_plain_headers)] = {}
    body: str | None = None
    expect: Expect = Expect()
    ca_bundle: (  # a PEM file under policies/, for a private CA
        Annotated[
            str, matching(_BUNDLE, "a .pem file under policies/ (a relative path, no ..)"), string_schema(_BUNDLE)
        ]
        | None
    ) = None
    allow_private: bool = False  # private, loopback or link-local targets; never the instance-metadata address
    every: Interval | None = None
    timeout: Interval | None = None
    failure_threshold: Annotated[int, Field(ge=1, le=100)] | None = None
    success_threshold: Annotated[int, Field(ge=1, le=100)] | None = None
    remind_every: Reminder | None = None

    _whole_minutes = field_validator("every")(_whole_minutes)
    _within_a_run = field_validator("timeout")(_within_a_run)

    @model_validator(mode="after")
    def check_body_and_tls(self) -> Check:
        if self.body is not None and self.method != "POST":
            raise ValueError("only a POST sends a body")
        if self.url.startswith("http://") and (self.expect.certificate_days or self.ca_bundle):
            raise ValueError("certificate_days and ca_bundle need an https:// URL")
        return self

    @property
    def is_https(self) -> bool:
        return self.url.startswith("https://")


class Maintenance(StrictModel):
    """A window in which the named checks still run but announce nothing."""

    checks: Annotated[tuple[RuleName, ...], Field(min_length=1)]
    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def check_ends_after_it_starts(self) -> Maintenance:
        if self.end <= self.start:
            raise ValueError("end must come after start")
        return self

    def covers(self, check: str, at: datetime) -> bool:
        return check in self.checks and self.start <= at < self.end


class StatusPage(StrictModel):
    """Where the status page is written; its history is kept next to it."""

    bucket: BucketName
    key: Annotated[str, Field(min_length=1)] = "index.html"

    @property
    def history_key(self) -> str:
        return f"{self.key}.history.json"


def _known_checks(windows: tuple[Maintenance, ...], info: ValidationInfo) -> tuple[Maintenance, ...]:
    names = {check.name for check in info.data.get("checks", ())}
    for index, window in enumerate(windows):
        unknown = sorted(set(window.checks) - names)
        if unknown:
            raise ValueError(f"maintenance[{index}] names no check called {', '.join(unknown)}")
    return windows


class WebsitesPolicy(StrictModel):
    """Contents of websites.yml."""

    notify: NotifySettings
    defaults: Defaults = Defaults()
    checks: Annotated[tuple[Check, ...], unique("checks", "name", lambda check: check.name), Field(min_length=1)]
    maintenance: Annotated[tuple[Maintenance, ...], AfterValidator(_known_checks)] = ()
    status_page: StatusPage | None = None

    def summary(self) -> str:
        return f"{len(self.checks)} check(s)"

    def setting(self, check: Check, name: str) -> Any:
        """A check's own value of a default (`every`, `timeout`, the thresholds, `remind_every`), else the default."""
        own = getattr(check, name)
        return getattr(self.defaults, name) if own is None else own

    def in_maintenance(self, check: str, at: datetime) -> bool:
        return any(window.covers(check, at) for window in self.maintenance)
