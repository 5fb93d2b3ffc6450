"""chalicelib/bots.py against what it cannot generate: app.py's handlers, .chalice/config.json, the policy models.

The registry is the one list of bots and functions; every other list is derived from it or checked
here, so a fifth bot cannot be wired in one place and forgotten in another.
"""

from __future__ import annotations

import json
from typing import get_args

import pytest

from chalicelib import dns, sg_guard, snapshots, thumbnails
from chalicelib.bots import BOT_OF, BOTS, FUNCTIONS
from chalicelib.policy import ACCOUNTS, POLICY_FILES, MemberBot
from tests.conftest import ROOT

CONFIG = json.loads((ROOT / ".chalice" / "config.json").read_text())


def test_every_handler_in_app_py_is_a_declared_function_and_back() -> None:
    from app import app

    assert set(app.handler_map) == set(FUNCTIONS)


@pytest.mark.parametrize("stage", sorted(CONFIG["stages"]))
def test_every_stage_sizes_each_function_as_declared(stage: str) -> None:
    configured = CONFIG["stages"][stage]["lambda_functions"]

    assert set(configured) == set(FUNCTIONS)
    for name, function in FUNCTIONS.items():
        assert configured[name] == {
            "iam_policy_file": f"policy-{name}.json",
            "lambda_memory_size": function.memory_mb,
            "lambda_timeout": function.timeout_s,
        }
        assert (ROOT / ".chalice" / f"policy-{name}.json").is_file()


def test_every_bot_has_its_policy_model_and_nothing_else_does() -> None:
    assert {bot.policy_file for bot in BOTS} == {f"{stem}.yml" for stem in POLICY_FILES if stem != ACCOUNTS}


def test_the_bots_that_work_in_member_accounts_are_the_member_roles() -> None:
    assert {bot.name for bot in BOTS if bot.in_member_accounts} == set(get_args(MemberBot))


@pytest.mark.parametrize("module", [sg_guard, dns, snapshots, thumbnails])
def test_each_bots_module_names_itself_as_the_registry_does(module: object) -> None:
    declared = {BOT_OF[name].name for name in FUNCTIONS if BOT_OF[name].name == module.BOT}

    assert declared == {module.BOT}


def test_function_names_are_unique_across_bots() -> None:
    assert sum(len(bot.functions) for bot in BOTS) == len(FUNCTIONS)
