"""chalicelib/bots.py against what it cannot generate: app.py's wiring, .chalice/config.json, the bots' packages.

The registry is the one list of bots and functions; every other list is derived from it or checked
here, so a fifth bot cannot be wired in one place and forgotten in another.
"""

from __future__ import annotations

import importlib
import inspect
import json
from typing import get_args

import pytest
from chalice.config import Config

from chalicelib.bots import BOT_OF, BOTS, FUNCTIONS, Bot, Function
from chalicelib.policy import ACCOUNTS, POLICY_FILES, MemberBot
from tests.support.aws import ROOT

CONFIG = json.loads((ROOT / ".chalice" / "config.json").read_text())


def test_every_handler_in_app_py_is_a_declared_function_and_back() -> None:
    from app import app

    assert set(app.handler_map) == set(FUNCTIONS)


def test_functions_are_configured_once_for_every_stage() -> None:
    # Chalice reads a function's settings from the top-level lambda_functions when its stage has none
    assert set(CONFIG["lambda_functions"]) == set(FUNCTIONS)
    assert not [stage for stage, settings in CONFIG["stages"].items() if "lambda_functions" in settings]


@pytest.mark.parametrize("stage", sorted(CONFIG["stages"]))
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_stage_sizes_each_function_as_declared(stage: str, name: str) -> None:
    # As Chalice itself resolves the stage's configuration for the function
    resolved = Config(chalice_stage=stage, function_name=name, config_from_disk=CONFIG)

    assert (resolved.lambda_memory_size, resolved.lambda_timeout, resolved.reserved_concurrency) == (
        FUNCTIONS[name].memory_mb,
        FUNCTIONS[name].timeout_s,
        FUNCTIONS[name].reserved_concurrency,
    )
    assert resolved.iam_policy_file == f"policy-{name}.json"
    assert (ROOT / ".chalice" / resolved.iam_policy_file).is_file()


def test_every_bot_has_its_policy_model_and_nothing_else_does() -> None:
    assert {bot.policy_file for bot in BOTS} == {f"{stem}.yml" for stem in POLICY_FILES if stem != ACCOUNTS}


def test_the_bots_that_work_in_member_accounts_are_the_member_roles() -> None:
    assert {bot.name for bot in BOTS if bot.in_member_accounts} == set(get_args(MemberBot))


@pytest.mark.parametrize("bot", BOTS, ids=lambda bot: bot.name)
def test_each_bots_module_names_itself_as_the_registry_does(bot: Bot) -> None:
    assert bot.name == importlib.import_module(f"{bot.module}.decisions").BOT


def test_function_names_are_unique_across_bots() -> None:
    assert sum(len(bot.functions) for bot in BOTS) == len(FUNCTIONS)


def test_every_bot_has_a_demo_chapter() -> None:
    from demo.chapters import CHAPTERS

    assert sorted(chapter.bot for chapter in CHAPTERS) == sorted(bot.name for bot in BOTS)


def test_app_wires_each_function_to_its_declared_trigger() -> None:
    from chalice.app import CloudWatchEventConfig, ScheduledEventConfig, SQSEventConfig

    from app import app

    kinds = {CloudWatchEventConfig: "event", ScheduledEventConfig: "schedule", SQSEventConfig: "queue"}
    wired = {source.name: source for source in app.event_sources}
    for name, function in FUNCTIONS.items():
        assert kinds[type(wired[name])] == function.trigger, name
        if function.trigger == "event":
            assert wired[name].event_pattern == function.event_pattern, name


@pytest.mark.parametrize("bot", BOTS, ids=lambda bot: bot.name)
def test_each_bot_is_one_package_of_the_same_shape(bot: Bot) -> None:
    # docs/adding-a-bot.md: its policy, decisions, executors, handlers and dry run, each in its place
    for part in ("policy", "decisions", "executors", "handlers", "dry_run"):
        importlib.import_module(f"{bot.module}.{part}")
    handlers = importlib.import_module(f"{bot.module}.handlers")
    for function in bot.functions:  # what app.py hands each event to, with the runtime
        assert list(inspect.signature(getattr(handlers, function.name)).parameters) == ["event", "runtime"]


@pytest.mark.parametrize("function", [f for f in FUNCTIONS.values() if f.trigger != "queue"], ids=lambda f: f.name)
def test_every_function_an_event_or_schedule_wakes_has_a_dry_run(function: Function) -> None:
    # `opsbots simulate` hands an event to each function it wakes, as chalicelib/<bot>/dry_run.py shows it
    dry_run = importlib.import_module(f"{BOT_OF[function.name].module}.dry_run")
    assert list(inspect.signature(getattr(dry_run, function.name)).parameters) == ["raw", "run"]


def test_every_resource_a_function_names_is_declared_for_the_stack() -> None:
    # in deploy/resources.json, or one of the functions themselves (the DNS writer the reconcile hands runs to)
    declared = json.loads((ROOT / "deploy" / "resources.json").read_text())["Resources"]
    declared |= {function.logical_id: {} for function in FUNCTIONS.values()}
    for function in FUNCTIONS.values():
        assert set(function.resources.values()) <= set(declared), function.name
