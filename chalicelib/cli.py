"""`opsbots`: check policies, dry-run an event, export the policy schema. Never calls AWS.

opsbots validate [DIR]          exit 1 with file:line errors when a policy is wrong
opsbots simulate EVENT.json     what each function the event wakes would decide, call and send
opsbots schema NAME | --write DIR   JSON Schema for editor autocompletion
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from chalicelib.aws import HOME, Target, units_of
from chalicelib.bots import BOT_OF, BOTS, FUNCTIONS
from chalicelib.events import IgnoredEvent, MalformedEventError, SkippedEvent, id_of
from chalicelib.fleet import in_words
from chalicelib.policy import POLICY_FILES, MemberBot, Policies, PolicyError, json_schema, load_policies
from chalicelib.settings import BotOffError, Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="opsbots", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="validate the policy files")
    validate.add_argument("directory", nargs="?", type=Path, help="default: $OPSBOTS_POLICIES or ./policies")
    simulate = commands.add_parser("simulate", help="dry-run one event: no AWS call is made")
    simulate.add_argument("event", type=Path)
    simulate.add_argument("--policies", type=Path, help="default: $OPSBOTS_POLICIES or ./policies")
    simulate.add_argument(
        "--describe", type=Path, metavar="JSON", help="AWS's answer to the bot's first look-up (aws ec2 describe-...)"
    )
    schema = commands.add_parser("schema", help="print or write the JSON Schema of the policy files")
    schema.add_argument("name", nargs="?", choices=sorted(POLICY_FILES))
    schema.add_argument("--write", type=Path, metavar="DIR", help="write <name>.json for every policy file")
    arguments = parser.parse_args(argv)

    if arguments.command == "schema":
        return _schema(arguments.name, arguments.write, sys.stdout)
    try:
        if arguments.command == "validate":
            print(validated(load_policies(_policies_dir(arguments.directory))))
            return 0
        policies = load_policies(_policies_dir(arguments.policies))
        return simulate_event(arguments.event, policies, sys.stdout, arguments.describe)
    except (PolicyError, BotOffError) as error:
        print(error, file=sys.stderr)
        return 1


def validated(policies: Policies) -> str:
    """What `opsbots validate` says of a valid directory: each bot on, with what it holds, or off."""
    on = [f"{bot.name} ({policies.load(bot.name).summary()})" for bot in BOTS if policies.is_on(bot.name)]
    off = [f"{bot.name} (no {bot.policy_file})" for bot in BOTS if not policies.is_on(bot.name)]
    accounts = policies.accounts
    lines = [
        f"ok: {len(accounts.accounts)} member account(s) in accounts.yml"
        + (f", and {in_words(accounts.organization)}" if accounts.organization else ""),
        f"on: {', '.join(on) or 'none'}",
    ]
    return "\n".join(lines + ([f"off: {', '.join(off)}"] if off else []))


def _policies_dir(given: Path | None) -> Path:
    settings = Settings.from_environ()
    return given or (settings.policies_dir if settings.policies_dir.is_dir() else Path("policies"))


def _schema(name: str | None, directory: Path | None, out: IO[str]) -> int:
    if directory:
        directory.mkdir(parents=True, exist_ok=True)
        for policy_name in sorted(POLICY_FILES):
            (directory / f"{policy_name}.json").write_text(json.dumps(json_schema(policy_name), indent=2) + "\n")
        return 0
    if not name:
        print("give a policy name or --write DIR", file=sys.stderr)
        return 2
    out.write(json.dumps(json_schema(name), indent=2) + "\n")
    return 0


@dataclass(frozen=True)
class DryRun:
    """What a bot's dry run (chalicelib/<bot>/dry_run.py, one function per Lambda function) is given."""

    policies: Policies
    out: IO[str]
    at: datetime  # the event's time (a schedule decides from it), else now
    described: Mapping[str, Any] | None = None  # --describe: AWS's answer to the bot's first look-up

    def units(self, bot: MemberBot) -> list[tuple[Target, str]]:
        """The account/region units a scheduled run of `bot` covers among the accounts accounts.yml lists; those
        of the organization it names are said, not listed (a dry run makes no AWS call)."""
        accounts = self.policies.accounts
        if accounts.organization:
            self.out.write(f"  accounts: those listed, and {in_words(accounts.organization)}\n")
        return units_of(accounts, HOME, bot)


def simulate_event(path: Path, policies: Policies, out: IO[str], described: Path | None = None) -> int:
    """Print what each function the event wakes would decide and do; no AWS call is made."""
    try:
        raw = _read_json(path, "a JSON event")
        answer = _read_json(described, "a JSON object") if described else None
        if described and not isinstance(answer, Mapping):
            raise UnreadableError(f"{described}: not a JSON object, as `aws ec2 describe-...` prints")
    except UnreadableError as error:
        print(error, file=sys.stderr)
        return 1
    woken = [function for function in FUNCTIONS.values() if function.wakes_on(raw)]
    try:
        run = DryRun(policies, out, _event_time(raw), answer)
        if not woken:
            raise IgnoredEvent(id_of(raw), f"no opsbots function is woken by {_kind(raw)}")
    except SkippedEvent as skipped:
        out.write(f"skipped: {skipped}\n")
        return 0
    for function in woken:
        out.write(f"{function.name}:\n" if len(woken) > 1 else "")
        bot = BOT_OF[function.name]
        if not policies.is_on(bot.name):
            out.write(f"  off: no {bot.policy_file}\n")
            continue
        try:
            getattr(importlib.import_module(f"{bot.module}.dry_run"), function.name)(raw, run)
        except SkippedEvent as skipped:
            out.write(f"skipped: {skipped}\n")
    return 0


class UnreadableError(Exception):
    """A file given to `opsbots simulate` that cannot be read as JSON: said in one line, exit 1."""


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UnreadableError(f"{path}: cannot read: {error.strerror}") from None
    except ValueError as error:  # not UTF-8, or not JSON
        raise UnreadableError(f"{path}: not {what}: {error}") from None


def _kind(raw: object) -> str:
    if isinstance(raw, Mapping):
        return f"{raw.get('source')!r} {raw.get('detail-type')!r} events"
    return f"a JSON {type(raw).__name__}"


def _event_time(raw: object) -> datetime:
    """The event's own time, which a scheduled run decides from; now for an event that gives none."""
    if not isinstance(raw, Mapping) or "time" not in raw:
        return datetime.now(UTC)
    try:
        time = datetime.fromisoformat(raw["time"]) if isinstance(raw["time"], str) else None
    except ValueError:
        time = None
    if time is None or time.tzinfo is None:
        raise MalformedEventError(id_of(raw), f"time {raw['time']!r} is not an ISO time with a zone")
    return time


if __name__ == "__main__":
    sys.exit(main())
