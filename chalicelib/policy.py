"""Loading and validation of the YAML policy files that drive the bots.

Ops teams change the bots' behaviour by editing YAML, not code, and a policy
mistake can revoke the wrong firewall rule in production.  So every mistake
must be reported the way a compiler reports one, ``file:line: where: what``,
all of them at once so one deploy round-trip fixes them all, and a directory
with any mistake yields no policy at all: the bots never act on half a policy.

This module is the only place that knows the file layout and the schema;
``json_schema`` exports that schema so editors can autocomplete the files.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar, cast, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from chalicelib.names import ACCOUNT_ID, REGION_NAME, anchored
from chalicelib.settings import BotOffError

_YamlPath = tuple[str | int, ...]
_Item = TypeVar("_Item")

_PORT_RANGE = re.compile(r"\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?")
_RULE_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_ROLE_NAME = re.compile(r"[A-Za-z0-9+=,.@_-]{1,64}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_ZONE_NAME = re.compile(
    r"(?=.{1,253}\.?$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.?"
)
_MAX_PORT = 65535
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_PLAIN_MESSAGES: Final = {
    "tuple_type": "Input should be a list",
    "model_type": "Input should be a mapping",
}


@dataclass(frozen=True)
class PortRange:
    """An inclusive range of TCP/UDP ports; a single port has first == last."""

    first: int
    last: int

    def __post_init__(self) -> None:
        for port in (self.first, self.last):
            if not 0 <= port <= _MAX_PORT:
                raise ValueError(f"port {port} is outside 0-{_MAX_PORT}")
        if self.first > self.last:
            raise ValueError(f"port range {self.first}-{self.last} ends before it starts")

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"

    @classmethod
    def parse(cls, value: object) -> PortRange:
        """Read ``22`` or ``"20-25"`` as written in a policy file."""
        if isinstance(value, PortRange):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value, value)
        match = _PORT_RANGE.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"{value!r} is not a port or range")
        first, last = match.group(1), match.group(2) or match.group(1)
        return cls(int(first), int(last))

    def contains(self, port: int) -> bool:
        return self.first <= port <= self.last

    def overlaps(self, other: PortRange) -> bool:
        return self.first <= other.last and other.first <= self.last


def _matching(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if pattern.fullmatch(value) is None:
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


def _parse_cidr(value: object) -> IPv4Network | IPv6Network:
    if isinstance(value, IPv4Network | IPv6Network):
        return value
    if isinstance(value, str):
        try:
            return ip_network(value, strict=False)
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not a CIDR")


def _parse_sources(value: object) -> object:
    if value in ("internet", "any"):
        return value
    if isinstance(value, list | tuple) and value:
        return tuple(_parse_cidr(item) for item in value)
    raise ValueError(f"{value!r} is not 'internet', 'any' or a list of CIDRs")


def _parse_account_id(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        if ACCOUNT_ID.fullmatch(str(value)) is None:
            raise ValueError(f"{value!r} is not an account id: account ids are 12 digits; quote them in YAML")
        return str(value)
    if isinstance(value, str) and ACCOUNT_ID.fullmatch(value) is None:
        raise ValueError(f"{value!r} is not an account id: account ids are 12 digits")
    return value


def _non_empty(items: tuple[_Item, ...]) -> tuple[_Item, ...]:
    if not items:
        raise ValueError("must list at least one item")
    return items


def _string_schema(pattern: re.Pattern[str]) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "pattern": anchored(pattern)})


Protocol = Literal["tcp", "udp", "icmp", "icmpv6"]
_Port = Annotated[
    PortRange,
    PlainValidator(PortRange.parse),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": _MAX_PORT},
                {"type": "string", "pattern": r"^\d{1,5}(-\d{1,5})?$"},
            ]
        }
    ),
]
_NonEmpty = Annotated[tuple[_Item, ...], AfterValidator(_non_empty), Field(json_schema_extra={"minItems": 1})]
_Cidr = Annotated[IPv4Network | IPv6Network, BeforeValidator(_parse_cidr)]
_Sources = Annotated[
    Literal["internet", "any"] | tuple[IPv4Network | IPv6Network, ...], BeforeValidator(_parse_sources)
]
_Email = Annotated[str, _matching(_EMAIL, "an email address"), _string_schema(_EMAIL)]
_RuleName = Annotated[str, _matching(_RULE_NAME, "a rule name (a-z, 0-9 and '-')"), _string_schema(_RULE_NAME)]
_Region = Annotated[str, _matching(REGION_NAME, "an AWS region name"), _string_schema(REGION_NAME)]
_Regions = _NonEmpty[_Region]
_RoleName = Annotated[str, _matching(_ROLE_NAME, "an IAM role name"), _string_schema(_ROLE_NAME)]
_AccountId = Annotated[str, BeforeValidator(_parse_account_id), _string_schema(ACCOUNT_ID)]


def _unique(collection: str, what: str, key: Callable[[Any], str]) -> AfterValidator:
    """A list whose items `key` tells apart: the first two alike are reported by their indexes."""

    def check(items: tuple[Any, ...]) -> tuple[Any, ...]:
        first_index: dict[str, int] = {}
        for index, value in enumerate(key(item) for item in items):
            if value in first_index:
                raise ValueError(
                    f"{collection}[{first_index[value]}] and {collection}[{index}] have the same {what} {value!r}"
                )
            first_index[value] = index
        return items

    return AfterValidator(check)


class StrictModel(BaseModel):
    """Base of every policy model: a typo is an error and a loaded policy cannot change."""

    # Built on first use, not at import: each Lambda function needs only some models (cold start).
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class EmailSettings(StrictModel):
    """Who sends the bots' email and who receives it."""

    sender: _Email
    recipients: _NonEmpty[_Email]


class NotifySettings(StrictModel):
    """Where findings are reported."""

    email: EmailSettings


class SecurityGroupRule(StrictModel):
    """Security group permissions that are not allowed (for egress, sources are destinations)."""

    name: _RuleName
    direction: Literal["ingress", "egress"] = "ingress"
    protocols: tuple[Protocol, ...] | None = None
    ports: tuple[_Port, ...] | None = None
    except_ports: tuple[_Port, ...] | None = None
    sources: _Sources
    allowed_sources: tuple[_Cidr, ...] = ()

    @field_validator("except_ports")
    @classmethod
    def check_not_both_port_lists(
        cls, except_ports: tuple[PortRange, ...] | None, info: ValidationInfo
    ) -> tuple[PortRange, ...] | None:
        if except_ports is not None and info.data.get("ports") is not None:
            raise ValueError("give either ports or except_ports, not both")
        return except_ports


class SecurityGroupsPolicy(StrictModel):
    """Contents of security_groups.yml."""

    mode: Literal["enforce", "report"] = "enforce"
    notify: NotifySettings
    exemption_tag: Annotated[str, Field(min_length=1)] = "opsbots:exempt-until"
    # The longest an exemption tag may keep a group's violations open, from the time it is read: a tag
    # anyone who can open a rule can often set must not be an endless bypass.
    max_exemption_days: Annotated[int, Field(ge=1, le=3650)] = 90
    rules: Annotated[tuple[SecurityGroupRule, ...], _unique("rules", "name", lambda rule: rule.name)]


# The bots that work in member accounts, each through its own role there (deploy/member-role.yml): the DNS
# bot, which reads tags anyone can set, holds no right to revoke a rule or delete a snapshot.
MemberBot = Literal["security_groups", "dns", "snapshots"]


def _no_role_name(data: object) -> object:
    if isinstance(data, Mapping) and "role_name" in data:
        raise ValueError(
            "role_name was replaced by roles, one member role per bot (deploy/member-role.yml): "
            "roles: {security_groups: ..., dns: ..., snapshots: ...}"
        )
    return data


class MemberRoles(StrictModel):
    """The role each bot assumes in a member account; deploy/member-role.yml creates them with these names."""

    security_groups: _RoleName = "opsbots-member-security-groups"
    dns: _RoleName = "opsbots-member-dns"
    snapshots: _RoleName = "opsbots-member-snapshots"


class MemberRoleOverrides(StrictModel):
    """One account's own role names, where they differ from the defaults."""

    security_groups: _RoleName | None = None
    dns: _RoleName | None = None
    snapshots: _RoleName | None = None


class AccountDefaults(StrictModel):
    """Settings for every account that does not override them."""

    roles: MemberRoles = MemberRoles()
    regions: _Regions

    _role_name_replaced = model_validator(mode="before")(_no_role_name)


class MemberAccount(StrictModel):
    """An account the bots assume a role in."""

    id: _AccountId
    name: Annotated[str, Field(min_length=1)]
    regions: _Regions | None = None
    roles: MemberRoleOverrides = MemberRoleOverrides()

    _role_name_replaced = model_validator(mode="before")(_no_role_name)


class AccountsPolicy(StrictModel):
    """Contents of accounts.yml."""

    defaults: AccountDefaults
    accounts: Annotated[tuple[MemberAccount, ...], _unique("accounts", "id", lambda account: account.id)] = ()

    def member(self, account_id: str) -> MemberAccount | None:
        return next((account for account in self.accounts if account.id == account_id), None)

    def regions_of(self, account: MemberAccount) -> tuple[str, ...]:
        return account.regions or self.defaults.regions

    def role_arn(self, account: MemberAccount, bot: MemberBot) -> str:
        """The role `bot` assumes in `account`."""
        name = getattr(account.roles, bot) or getattr(self.defaults.roles, bot)
        return f"arn:aws:iam::{account.id}:role/{name}"


_ZoneName = Annotated[
    str, _matching(_ZONE_NAME, "a DNS zone name like internal.example.com"), _string_schema(_ZONE_NAME)
]
_TagKey = Annotated[str, Field(min_length=1, max_length=128)]


def _check_accounts_known(accounts: object, info: ValidationInfo) -> object:
    """Account ids a policy names must be "home" or listed in accounts.yml (checked when it was loaded first)."""
    known = (info.context or {}).get("account_ids")
    if isinstance(accounts, tuple) and known is not None:
        for account in accounts:
            if account != "home" and account not in known:
                raise ValueError(f"{account!r} is not 'home' or an account id in accounts.yml")
    return accounts


class DnsZone(StrictModel):
    """A hosted zone the DNS bot writes instance records into."""

    zone: _ZoneName
    address: Literal["private", "public", "ipv6"]
    ttl: Annotated[int, Field(ge=0, le=2147483647)] = 60
    # Whose instances may have names here: "all", or ids from accounts.yml and "home". Default: every
    # account for a private zone, the home account only for a public one (a member account must not be
    # able to name itself login.example.com).
    accounts: Literal["all"] | tuple[str, ...] | None = None

    _known_accounts = field_validator("accounts")(_check_accounts_known)

    def admits(self, account: str, private_zone: bool) -> bool:
        """Whether an instance of `account` ("home" or an id) may have a name in this zone."""
        allowed = self.accounts or ("all" if private_zone else ("home",))
        return allowed == "all" or account in allowed


class DnsPolicy(StrictModel):
    """Contents of dns.yml."""

    zones: Annotated[
        _NonEmpty[DnsZone], _unique("zones", "zone and address", lambda zone: f"{zone.zone} ({zone.address})")
    ]
    name_tag: _TagKey = "Name"
    alias_tag: _TagKey | None = "opsbots:dns-aliases"
    reverse: bool = True
    select_tag: _TagKey | None = None


_DURATION = re.compile(r"\s*(\d+)\s*([mhdw])\s*")
_DURATION_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def _parse_duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{value!r} is not a duration like 90m, 24h, 30d or 2w")
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


_Duration = Annotated[
    timedelta,
    PlainValidator(_parse_duration),
    WithJsonSchema({"type": "string", "pattern": r"^\d+[mhdw]$"}),
]
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
    region: _Region
    retention: Retention | None = None  # default: the policy's own


class SnapshotPolicy(StrictModel):
    name: _RuleName
    every: _Duration
    select: SnapshotSelection
    accounts: Literal["all"] | tuple[str, ...] = "all"
    regions: _Regions | None = None
    retention: Retention
    consistency: Literal["volume", "instance"] = "volume"
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

    _known_accounts = field_validator("accounts")(_check_accounts_known)


class SnapshotsPolicy(StrictModel):
    """Contents of snapshots.yml."""

    notify: NotifySettings | None = None
    policies: Annotated[tuple[SnapshotPolicy, ...], _unique("policies", "name", lambda policy: policy.name)]


_BUCKET = re.compile(r"(?!xn--)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SIZE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_BYTES = re.compile(r"\s*(\d+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*")
_BYTE_UNITS = {None: 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
_MAX_EDGE = 8192  # the largest thumbnail side; WebP itself stops at 16383


def _parse_byte_size(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _BYTES.fullmatch(value) if isinstance(value, str) else None
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{value!r} is not a size like 50MB, 20MiB or 1000000")
    return int(match.group(1)) * _BYTE_UNITS[match.group(2)]


_BucketName = Annotated[str, _matching(_BUCKET, "an S3 bucket name"), _string_schema(_BUCKET)]
_ByteSize = Annotated[
    int,
    PlainValidator(_parse_byte_size),
    WithJsonSchema(
        {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": r"^\d+(B|KB|MB|GB|KiB|MiB|GiB)$"}]}
    ),
]
_Edge = Annotated[int, Field(ge=1, le=_MAX_EDGE)]


class ThumbnailSize(StrictModel):
    """One thumbnail: fit inside width x height (contain), or fill it and crop the overflow (cover)."""

    name: Annotated[
        str, _matching(_SIZE_NAME, "a size name (letters, digits, '-' and '_')"), _string_schema(_SIZE_NAME)
    ]
    width: _Edge | None = None
    height: _Edge | None = None
    fit: Literal["contain", "cover"] = "contain"

    @model_validator(mode="after")
    def check_box(self) -> ThumbnailSize:
        if self.width is None and self.height is None:
            raise ValueError("give width, height or both")
        if self.fit == "cover" and (self.width is None or self.height is None):
            raise ValueError("fit: cover crops to a box: give both width and height")
        return self


class ThumbnailBucket(StrictModel):
    """Uploads under `prefix` of `bucket` get thumbnails under `output_prefix` of `output_bucket`."""

    bucket: _BucketName
    prefix: str = ""
    output_bucket: _BucketName | None = None  # default: the same bucket
    output_prefix: str = "thumbnails/"
    sizes: Annotated[_NonEmpty[ThumbnailSize], _unique("sizes", "name", lambda size: size.name)]
    format: Literal["webp", "jpeg", "png", "avif", "same"] = "webp"
    quality: Annotated[int, Field(ge=1, le=100)] = 82

    @property
    def destination(self) -> str:
        return self.output_bucket or self.bucket


class ThumbnailLimits(StrictModel):
    """Uploads past these are rejected before download (bytes) or before decoding (pixels)."""

    max_bytes: _ByteSize = 50 * 10**6
    max_pixels: Annotated[int, Field(ge=1)] = 100 * 10**6


def _prefixes_overlap(first: str, second: str) -> bool:
    return first.startswith(second) or second.startswith(first)


class ThumbnailsPolicy(StrictModel):
    """Contents of thumbnails.yml."""

    buckets: tuple[ThumbnailBucket, ...] = ()
    limits: ThumbnailLimits = ThumbnailLimits()

    @field_validator("buckets")
    @classmethod
    def check_no_loops_or_overlaps(cls, buckets: tuple[ThumbnailBucket, ...]) -> tuple[ThumbnailBucket, ...]:
        for index, rule in enumerate(buckets):
            for other_index, other in enumerate(buckets):
                where = f"buckets[{index}]" + ("" if other_index == index else f" and buckets[{other_index}]")
                if rule.destination == other.bucket and _prefixes_overlap(rule.output_prefix, other.prefix):
                    raise ValueError(
                        f"{where}: output_prefix {rule.output_prefix!r} overlaps prefix {other.prefix!r} on bucket "
                        f"{other.bucket}: thumbnails would be made of thumbnails"
                    )
                if other_index > index and rule.bucket == other.bucket and _prefixes_overlap(rule.prefix, other.prefix):
                    raise ValueError(
                        f"{where}: prefixes {rule.prefix!r} and {other.prefix!r} overlap on bucket {rule.bucket}: "
                        "an upload may match one rule only"
                    )
        return buckets

    def rule_for(self, bucket: str, key: str) -> ThumbnailBucket | None:
        return next((rule for rule in self.buckets if rule.bucket == bucket and key.startswith(rule.prefix)), None)

    def is_output(self, bucket: str, key: str) -> bool:
        return any(rule.destination == bucket and key.startswith(rule.output_prefix) for rule in self.buckets)


POLICY_FILES: Final[Mapping[str, type[StrictModel]]] = {
    "accounts": AccountsPolicy,
    "dns": DnsPolicy,
    "security_groups": SecurityGroupsPolicy,
    "snapshots": SnapshotsPolicy,
    "thumbnails": ThumbnailsPolicy,
}


ACCOUNTS: Final = "accounts"  # the one file every bot reads; each other file is one bot's


class Policies:
    """The policy files of one directory, each read and validated when first used.

    A function reads accounts.yml and its own bot's file, nothing else: a bot whose file is absent is
    off (`BotOffError`), and a mistake in one bot's file stops that bot alone (`PolicyError`, raised
    each time the file is used until it is fixed). accounts.yml is every bot's: without it, or with a
    mistake in it, no bot acts. `load_policies` reads every file at once, for `opsbots validate`.
    """

    def __init__(self, directory: Path | str, on_problem: Callable[[PolicyError], None] | None = None) -> None:
        self.directory = Path(directory)
        self._on_problem = on_problem  # told of each problem before it is raised (the Lambda logs and counts it)

    def is_on(self, bot: str) -> bool:
        return (self.directory / f"{bot}.yml").is_file()

    def require(self, bot: str) -> None:
        """Before a bot acts: BotOffError without its file, PolicyError with a mistake in it or in accounts.yml.

        A bot never acts on half a policy: even a step that reads only accounts.yml waits for its own file.
        """
        self._require_file(bot)
        getattr(self, bot)

    def _require_file(self, bot: str) -> None:
        if not self.is_on(bot):
            raise BotOffError(bot, _shown(self.directory / f"{bot}.yml"))

    @cached_property
    def accounts(self) -> AccountsPolicy:
        return cast("AccountsPolicy", self._load(ACCOUNTS))

    @cached_property
    def dns(self) -> DnsPolicy:
        return cast("DnsPolicy", self._load("dns"))

    @cached_property
    def security_groups(self) -> SecurityGroupsPolicy:
        return cast("SecurityGroupsPolicy", self._load("security_groups"))

    @cached_property
    def snapshots(self) -> SnapshotsPolicy:
        return cast("SnapshotsPolicy", self._load("snapshots"))

    @cached_property
    def thumbnails(self) -> ThumbnailsPolicy:
        return cast("ThumbnailsPolicy", self._load("thumbnails"))

    def _load(self, stem: str) -> StrictModel:
        if stem != ACCOUNTS:
            self._require_file(stem)
        # A bot's file is checked against accounts.yml: the ids it names must be listed there. (A mistake in
        # accounts.yml is raised, and reported, by its own load.)
        context = None if stem == ACCOUNTS else {"account_ids": {account.id for account in self.accounts.accounts}}
        try:
            return _load_file(self.directory / f"{stem}.yml", POLICY_FILES[stem], context)
        except PolicyError as error:
            if self._on_problem is not None:
                self._on_problem(error)
            raise


@dataclass(frozen=True)
class PolicyProblem:
    file: str
    line: int
    location: str
    message: str

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        return f"{self.file}:{self.line}: {where}{self.message}"


class PolicyError(Exception):
    """Every problem found in a policy directory, one per line."""

    def __init__(self, problems: Iterable[PolicyProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


def json_schema(name: str) -> dict[str, Any]:
    """JSON Schema of ``<name>.yml``, for yaml-language-server autocompletion."""
    return POLICY_FILES[name].model_json_schema()


def load_policies(directory: Path | str) -> Policies:
    """Every policy file in ``directory`` read now, or one PolicyError listing every problem in all of them.

    accounts.yml must be there; a bot's file may be absent (that bot is off).
    """
    policies = Policies(directory)
    problems = _unknown_files(policies.directory)
    accounts_broken = False
    try:
        getattr(policies, ACCOUNTS)
    except PolicyError as error:
        problems.extend(error.problems)
        accounts_broken = True
    for stem in (stem for stem in POLICY_FILES if stem != ACCOUNTS and policies.is_on(stem)):
        try:
            if accounts_broken:
                # accounts.yml is broken: report the bot's own problems too, checked without its ids
                _load_file(policies.directory / f"{stem}.yml", POLICY_FILES[stem])
            else:
                getattr(policies, stem)
        except PolicyError as error:
            problems.extend(error.problems)
    if problems:
        raise PolicyError(problems)
    return policies


def _expected_files() -> list[str]:
    return [f"{stem}.yml" for stem in POLICY_FILES]


def _unknown_files(root: Path) -> list[PolicyProblem]:
    expected = _expected_files()
    return [
        PolicyProblem(_shown(path), 1, "", f"unknown policy file; expected only {', '.join(expected)}")
        for path in sorted(root.glob("*"))
        if path.suffix in (".yml", ".yaml") and path.name not in expected
    ]


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (OSError, ValueError):
        return str(path)


def _load_file(path: Path, model: type[StrictModel], context: dict[str, Any] | None = None) -> StrictModel:
    shown = _shown(path)
    loader = _parse(shown, _read(path, shown))
    problems = [PolicyProblem(shown, line, _location(where), message) for where, line, message in loader.duplicates]
    try:
        policy = model.model_validate(loader.data, context=context)
    except ValidationError as error:
        problems.extend(_validation_problem(shown, loader.lines, model, details) for details in error.errors())
    else:
        if not problems:
            return policy
    raise PolicyError(sorted(problems, key=lambda problem: problem.line))


def _read(path: Path, shown: str) -> str:
    if not path.is_file():
        message = f"policy file not found in {_shown(path.parent)}: every bot reads accounts.yml"
        raise PolicyError([PolicyProblem(shown, 1, "", message)])
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        line = error.object[: error.start].count(b"\n") + 1
        raise PolicyError([PolicyProblem(shown, line, "", f"not UTF-8 text: {error.reason}")]) from error
    except OSError as error:
        raise PolicyError([PolicyProblem(shown, 1, "", f"cannot read: {error.strerror}")]) from error


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that remembers the line of every node by its path, and duplicate keys."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.data: Any = None
        self.lines: dict[_YamlPath, int] = {}
        self.duplicates: list[tuple[_YamlPath, int, str]] = []

    @classmethod
    def load(cls, text: str) -> _LineLoader:
        loader = cls(text)
        try:
            loader.data = loader.get_single_data()
        finally:
            loader.dispose()
        return loader

    def construct_document(self, node: yaml.Node) -> Any:
        self._record_lines(node)
        return super().construct_document(node)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, AttributeError, LookupError) as error:
            problem = f"cannot read {node.value!r} as {node.tag.removeprefix('tag:yaml.org,2002:')}"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from error

    def _record_lines(self, root: yaml.Node) -> None:
        pending: list[tuple[_YamlPath, yaml.Node, int]] = [((), root, root.start_mark.line + 1)]
        visited: set[int] = set()
        while pending:
            path, node, line = pending.pop()
            self.lines.setdefault(path, line)
            if id(node) not in visited:
                visited.add(id(node))
                pending.extend(self._children(path, node))

    def _children(self, path: _YamlPath, node: yaml.Node) -> list[tuple[_YamlPath, yaml.Node, int]]:
        if isinstance(node, yaml.SequenceNode):
            return [((*path, index), item, item.start_mark.line + 1) for index, item in enumerate(node.value)]
        if not isinstance(node, yaml.MappingNode):
            return []
        entries: dict[str, tuple[yaml.Node, int]] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                line = key.start_mark.line + 1
                if key.value in entries:
                    message = f"duplicate key; line {entries[key.value][1]} already sets it"
                    self.duplicates.append(((*path, key.value), line, message))
                entries[key.value] = (value, line)
        return [((*path, key), value, line) for key, (value, line) in entries.items()]


def _parse(shown: str, text: str) -> _LineLoader:
    try:
        loader = _LineLoader.load(text)
    except yaml.YAMLError as error:
        raise PolicyError(
            [PolicyProblem(shown, _yaml_error_line(error, text), "", _yaml_error_message(error))]
        ) from error
    except RecursionError as error:
        raise PolicyError([PolicyProblem(shown, 1, "", "YAML is nested too deeply")]) from error
    if not isinstance(loader.data, dict):
        message = "file is empty" if loader.data is None else "expected a mapping of settings at the top level"
        raise PolicyError([PolicyProblem(shown, 1, "", message)])
    return loader


def _yaml_error_line(error: yaml.YAMLError, text: str) -> int:
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        return mark.line + 1 if mark else 1
    if isinstance(error, yaml.reader.ReaderError):
        return text.count("\n", 0, error.position) + 1
    return 1


def _yaml_error_message(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError):
        context = f"{error.context}, " if error.context else ""
        return f"invalid YAML: {context}{error.problem}"
    return f"invalid YAML: {str(error).splitlines()[0]}"


def _validation_problem(
    shown: str, lines: Mapping[_YamlPath, int], model: type[StrictModel], details: ErrorDetails
) -> PolicyProblem:
    where = tuple(details["loc"])
    line = next(lines[where[:end]] for end in range(len(where), -1, -1) if where[:end] in lines)
    return PolicyProblem(shown, line, _location(where), _message(model, details))


def _location(where: _YamlPath) -> str:
    """`rules[0].ports`; a key that is not a plain name is quoted (`tags['team name']`): one problem, one line."""
    text = ""
    for part in where:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text


def _message(model: type[StrictModel], details: ErrorDetails) -> str:
    if details["type"] == "value_error":
        return str(details.get("ctx", {}).get("error", details["msg"]))
    if details["type"] == "extra_forbidden":
        names = _field_names_at(model, details["loc"][:-1])
        return f"unknown field; expected one of: {', '.join(names)}" if names else "unknown field"
    return _PLAIN_MESSAGES.get(details["type"], details["msg"])


def _field_names_at(model: type[StrictModel], where: _YamlPath) -> list[str]:
    """The fields of the model at `where`, through optional fields and lists; [] if no model is there."""
    annotation: Any = model
    for part in where:
        if isinstance(part, int):
            annotation = _item_type(annotation)
        else:
            found = _model_in(annotation)
            annotation = found.model_fields[part].annotation if found and part in found.model_fields else None
    found = _model_in(annotation)
    return list(found.model_fields) if found else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds: itself, or the one in `X | None` (or any union)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, (_model_in(argument) for argument in get_args(annotation))), None)


def _item_type(annotation: Any) -> Any:
    """What a list field holds: `tuple[X, ...]`, in `tuple[X, ...] | None` or in any union."""
    if get_origin(annotation) in (tuple, list):
        return get_args(annotation)[0]
    return next(filter(None, (_item_type(argument) for argument in get_args(annotation))), None)
