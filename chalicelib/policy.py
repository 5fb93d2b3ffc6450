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

import importlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar, cast, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import ErrorDetails

from chalicelib.bots import BOT_NAMED, BOTS
from chalicelib.names import ACCOUNT_ID, REGION_NAME, anchored
from chalicelib.settings import BotOffError

_YamlPath = tuple[str | int, ...]
Item = TypeVar("Item")

RULE_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_ROLE_NAME = re.compile(r"[A-Za-z0-9+=,.@_-]{1,64}")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_PLAIN_MESSAGES: Final = {
    "tuple_type": "Input should be a list",
    "model_type": "Input should be a mapping",
}


def matching(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if pattern.fullmatch(value) is None:
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


def _parse_account_id(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        if ACCOUNT_ID.fullmatch(str(value)) is None:
            raise ValueError(f"{value!r} is not an account id: account ids are 12 digits; quote them in YAML")
        return str(value)
    if isinstance(value, str) and ACCOUNT_ID.fullmatch(value) is None:
        raise ValueError(f"{value!r} is not an account id: account ids are 12 digits")
    return value


def non_empty(items: tuple[Item, ...]) -> tuple[Item, ...]:
    if not items:
        raise ValueError("must list at least one item")
    return items


def string_schema(pattern: re.Pattern[str]) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "pattern": anchored(pattern)})


NonEmpty = Annotated[tuple[Item, ...], AfterValidator(non_empty), Field(json_schema_extra={"minItems": 1})]
Email = Annotated[str, matching(EMAIL, "an email address"), string_schema(EMAIL)]
RuleName = Annotated[str, matching(RULE_NAME, "a rule name (a-z, 0-9 and '-')"), string_schema(RULE_NAME)]
BUCKET_NAME = re.compile(r"(?!xn--)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
BucketName = Annotated[str, matching(BUCKET_NAME, "an S3 bucket name"), string_schema(BUCKET_NAME)]
Region = Annotated[str, matching(REGION_NAME, "an AWS region name"), string_schema(REGION_NAME)]
Regions = NonEmpty[Region]
_RoleName = Annotated[str, matching(_ROLE_NAME, "an IAM role name"), string_schema(_ROLE_NAME)]
AccountId = Annotated[str, BeforeValidator(_parse_account_id), string_schema(ACCOUNT_ID)]


_SPANS: Final = {
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}


def duration_parser(units: str, examples: str, *, zero: bool = False) -> PlainValidator:
    """A duration written as a number and one of `units` ("90m"); `zero`: "0" (or 0) is allowed, meaning none."""
    pattern = re.compile(rf"\s*(\d+)\s*([{units}])\s*")

    def parse(value: object) -> timedelta:
        if isinstance(value, timedelta):
            return value
        if zero and value in (0, "0"):
            return timedelta(0)
        match = pattern.fullmatch(value) if isinstance(value, str) else None
        if match is None or int(match.group(1)) == 0:
            raise ValueError(f"{value!r} is not a duration like {examples}")
        return int(match.group(1)) * _SPANS[match.group(2)]

    return PlainValidator(parse)


def written_duration(span: timedelta) -> str | int:
    """A duration as a policy file writes it, in its largest whole unit: 90m, 4h, 10s; 0 for none."""
    seconds = int(span.total_seconds())
    if not seconds:
        return 0
    unit = next(unit for unit in "whdms" if seconds % int(_SPANS[unit].total_seconds()) == 0)
    return f"{seconds // int(_SPANS[unit].total_seconds())}{unit}"


DURATION_WRITTEN: Final = PlainSerializer(written_duration)  # defaults and dumps read as the files write them


def duration_schema(units: str, *, zero: bool = False) -> WithJsonSchema:
    written = {"type": "string", "pattern": rf"^\d+[{units}]$"}
    return WithJsonSchema({"anyOf": [written, {"const": 0}]} if zero else written)


def unique(collection: str, what: str, key: Callable[[Any], str]) -> AfterValidator:
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

    def summary(self) -> str:
        """What a policy file holds, in a few words, for `opsbots validate`."""
        return "valid"


class EmailSettings(StrictModel):
    """Who sends the bots' email and who receives it."""

    sender: Email
    recipients: NonEmpty[Email]


class NotifySettings(StrictModel):
    """Where findings are reported."""

    email: EmailSettings


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
    regions: Regions

    _role_name_replaced = model_validator(mode="before")(_no_role_name)


class MemberAccount(StrictModel):
    """An account the bots assume a role in."""

    id: AccountId
    name: Annotated[str, Field(min_length=1)]
    regions: Regions | None = None
    roles: MemberRoleOverrides = MemberRoleOverrides()

    _role_name_replaced = model_validator(mode="before")(_no_role_name)


_PARENT_ID = re.compile(r"r-[0-9a-z]{4,32}|ou-[0-9a-z]{4,32}-[a-z0-9]{8,32}")
ParentId = Annotated[str, matching(_PARENT_ID, "an OU id (ou-...) or a root id (r-...)"), string_schema(_PARENT_ID)]


class Organization(StrictModel):
    """Member accounts listed from an AWS Organization at run time (chalicelib/fleet.py), as well as those listed."""

    account: AccountId  # the management account, or a delegated administrator for AWS Organizations
    role: _RoleName = "opsbots-organization-reader"  # deploy/organization-role.yml creates it there
    ous: tuple[ParentId, ...] = ()  # the OUs (and the OUs under them) whose accounts are members; none: all
    exclude: tuple[AccountId, ...] = ()
    regions: Regions | None = None  # the regions of the accounts found; default: defaults.regions

    @property
    def role_arn(self) -> str:
        return f"arn:aws:iam::{self.account}:role/{self.role}"


def _excludes_none_listed(organization: Organization | None, info: ValidationInfo) -> Organization | None:
    listed = {account.id for account in info.data.get("accounts", ())}
    both = sorted(listed & set(organization.exclude if organization else ()))
    if both:
        raise ValueError(f"exclude names {', '.join(both)}, which accounts lists: keep one")
    return organization


class AccountsPolicy(StrictModel):
    """Contents of accounts.yml."""

    defaults: AccountDefaults
    accounts: Annotated[tuple[MemberAccount, ...], unique("accounts", "id", lambda account: account.id)] = ()
    organization: Annotated[Organization | None, AfterValidator(_excludes_none_listed)] = None

    def member(self, account_id: str) -> MemberAccount | None:
        return next((account for account in self.accounts if account.id == account_id), None)

    def regions_of(self, account: MemberAccount) -> tuple[str, ...]:
        return account.regions or self.defaults.regions

    def role_arn(self, account: MemberAccount, bot: MemberBot) -> str:
        """The role `bot` assumes in `account`."""
        name = getattr(account.roles, bot) or getattr(self.defaults.roles, bot)
        return f"arn:aws:iam::{account.id}:role/{name}"


def check_accounts_known(accounts: object, info: ValidationInfo) -> object:
    """Account ids a policy names must be "home" or listed in accounts.yml (checked when it was loaded first;
    not with an organization, whose accounts are known only at run time)."""
    known = (info.context or {}).get("account_ids")
    if isinstance(accounts, tuple) and known is not None:
        for account in accounts:
            if account != "home" and account not in known:
                raise ValueError(f"{account!r} is not 'home' or an account id in accounts.yml")
    return accounts


ACCOUNTS: Final = "accounts"  # the one file every bot reads; each other file is one bot's
POLICY_FILES: Final = (ACCOUNTS, *(bot.name for bot in BOTS))  # stems: <stem>.yml
Model = TypeVar("Model", bound="StrictModel")


def model_of(stem: str) -> type[StrictModel]:
    """The model of `<stem>.yml`: accounts.yml's, or the one its bot's registry entry names (imported now)."""
    if stem == ACCOUNTS:
        return AccountsPolicy
    bot = BOT_NAMED[stem]
    return cast("type[StrictModel]", getattr(importlib.import_module(bot.policy_module), bot.policy_model))


def _stem_of(model: type[StrictModel]) -> str:
    if model is AccountsPolicy:
        return ACCOUNTS
    return next(
        bot.name for bot in BOTS if (bot.policy_module, bot.policy_model) == (model.__module__, model.__qualname__)
    )


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
        self._loaded: dict[str, StrictModel] = {}

    def is_on(self, bot: str) -> bool:
        return (self.directory / f"{bot}.yml").is_file()

    def require(self, bot: str) -> None:
        """Before a bot acts: BotOffError without its file, PolicyError with a mistake in it or in accounts.yml.

        A bot never acts on half a policy: even a step that reads only accounts.yml waits for its own file.
        """
        self.load(bot)

    @property
    def accounts(self) -> AccountsPolicy:
        return self.of(AccountsPolicy)

    def of(self, model: type[Model]) -> Model:
        """The policy of the file whose model is `model`: `policies.of(DnsPolicy)` reads dns.yml."""
        return cast("Model", self.load(_stem_of(model)))

    def load(self, stem: str) -> StrictModel:
        """`<stem>.yml`, read and validated on first use; a mistake is raised (and reported) on every use."""
        if stem not in self._loaded:
            self._loaded[stem] = self._load(stem)
        return self._loaded[stem]

    def _load(self, stem: str) -> StrictModel:
        if stem != ACCOUNTS and not self.is_on(stem):
            raise BotOffError(stem, _shown(self.directory / f"{stem}.yml"))
        # A bot's file is checked against accounts.yml: the ids it names must be listed there. (A mistake in
        # accounts.yml is raised, and reported, by its own load.)
        accounts = None if stem == ACCOUNTS else self.accounts
        known = None if accounts is None or accounts.organization else {account.id for account in accounts.accounts}
        context = None if known is None else {"account_ids": known}
        try:
            return _load_file(self.directory / f"{stem}.yml", model_of(stem), context)
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
    return model_of(name).model_json_schema()


def load_policies(directory: Path | str) -> Policies:
    """Every policy file in ``directory`` read now, or one PolicyError listing every problem in all of them.

    accounts.yml must be there; a bot's file may be absent (that bot is off).
    """
    policies = Policies(directory)
    problems = _unknown_files(policies.directory)
    accounts_broken = False
    try:
        policies.load(ACCOUNTS)
    except PolicyError as error:
        problems.extend(error.problems)
        accounts_broken = True
    for stem in (stem for stem in POLICY_FILES if stem != ACCOUNTS and policies.is_on(stem)):
        try:
            if accounts_broken:
                # accounts.yml is broken: report the bot's own problems too, checked without its ids
                _load_file(policies.directory / f"{stem}.yml", model_of(stem))
            else:
                policies.load(stem)
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
