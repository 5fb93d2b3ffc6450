"""The snapshot bot's policy: the contents of snapshots.yml."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import (
    Field,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from chalicelib.names import anchored
from chalicelib.policy import (
    NotifySettings,
    Region,
    Regions,
    RuleName,
    StrictModel,
    check_accounts_known,
    duration_parser,
    duration_schema,
    unique,
)

_Duration = Annotated[timedelta, duration_parser("mhdw", "90m, 24h, 30d or 2w"), duration_schema("mhdw")]
_TIME_OF_DAY = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


def _parse_time_of_day(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    match = _TIME_OF_DAY.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f'{value!r} is not a UTC time of day like "03:00" (quote it in YAML)')
    return timedelta(hours=int(match.group(1)), minutes=int(match.group(2)))


_TimeOfDay = Annotated[
    timedelta, PlainValidator(_parse_time_of_day), WithJsonSchema({"type": "string", "pattern": anchored(_TIME_OF_DAY)})
]


Consistency = Literal["volume", "instance"]  # a snapshot per volume, or an instance's volumes at one moment


class Retention(StrictModel):
    """Keep the newest `count`, and anything younger than `max_age`; prune only what both let go."""

    count: Annotated[int, Field(ge=1, le=1000)] | None = None
    max_age: _Duration | None = None

    @model_validator(mode="after")
    def check_something_is_kept(self) -> Retention:
        if self.count is None and self.max_age is None:
            raise ValueError("give count, max_age or both")
        return self


class SnapshotSelection(StrictModel):
    """Volumes whose tags (or whose instance's tags) carry every key and value listed."""

    tags: dict[str, str] = {}
    instance_tags: dict[str, str] = {}

    @model_validator(mode="after")
    def check_not_empty(self) -> SnapshotSelection:
        if not self.tags and not self.instance_tags:
            raise ValueError("an empty selection would take every volume; give tags or instance_tags")
        return self


class CopyTo(StrictModel):
    region: Region
    retention: Retention | None = None  # default: the policy's own


class SnapshotPolicy(StrictModel):
    name: RuleName
    every: _Duration
    select: SnapshotSelection
    accounts: Literal["all"] | tuple[str, ...] = "all"
    regions: Regions | None = None
    retention: Retention
    consistency: Consistency = "volume"
    copy_to: CopyTo | None = None
    copy_tags: bool = False
    at: _TimeOfDay | None = None  # windows start at this UTC time (an off-peak hour), not at midnight

    @field_validator("every")
    @classmethod
    def check_at_least_an_hour(cls, every: timedelta) -> timedelta:
        if every < timedelta(hours=1):
            raise ValueError("snapshots run hourly: every must be at least 1h")
        return every

    @field_validator("at")
    @classmethod
    def check_within_a_window(cls, at: timedelta | None, info: ValidationInfo) -> timedelta | None:
        every = info.data.get("every")
        if at is not None and isinstance(every, timedelta) and at >= every:
            raise ValueError(f"at must fall within one window of every ({every}); it shifts where windows start")
        return at

    _known_accounts = field_validator("accounts")(check_accounts_known)


class SnapshotsPolicy(StrictModel):
    """Contents of snapshots.yml."""

    notify: NotifySettings | None = None
    policies: Annotated[tuple[SnapshotPolicy, ...], unique("policies", "name", lambda policy: policy.name)]

    def summary(self) -> str:
        return f"{len(self.policies)} policy(ies)"
