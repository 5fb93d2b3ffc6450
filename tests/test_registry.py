"""chalicelib/bots.py against what it cannot generate: app.py's handlers, .chalice/config.json, the policy models.

The registry is the one list of bots and functions; every other list is derived from it or checked
here, so a fifth bot cannot be wired in one place and forgotten in another.
"""

from __future__ import annotations

import importlib
import json
from typing import get_args

import pytest
from chalice.config import Config

from chalicelib.bots import BOTS, FUNCTIONS, Bot
from chalicelib.policy import ACCOUNTS, POLICY_FILES, MemberBot
from tests.conftest import ROOT

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

    assert (resolved.lambda_memory_size, resolved.lambda_timeout) == (
        FUNCTIONS[name].memory_mb,
        FUNCTIONS[name].timeout_s,
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
