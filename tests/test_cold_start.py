"""What a cold start loads: the app alone loads no bot; each bot loads only what it needs.

Each check runs in a fresh interpreter (this one has loaded everything for the other tests). Timings
are `make bench`'s business; these tests pin what is imported, which is what the timings follow.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from chalicelib.bots import BOTS as REGISTERED
from chalicelib.bots import Bot
from tests.support.aws import ROOT

BOTS = tuple(bot.module for bot in REGISTERED)
# The heavy imports: pydantic's event and policy models, YAML, Jinja2, Pillow.
HEAVY = ("chalicelib.events", "chalicelib.policy", "pydantic", "yaml", "jinja2", "PIL")


def loaded_by(statement: str) -> set[str]:
    code = f"import sys; {statement}; import json; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return {name.split(".")[0] if not name.startswith("chalicelib.") else name for name in json.loads(done.stdout)}


def bots_in(loaded: set[str]) -> set[str]:
    """The bots whose package has a module loaded."""
    return {bot for bot in BOTS if any(name == bot or name.startswith(f"{bot}.") for name in loaded)}


def test_importing_the_app_loads_no_bot_and_nothing_heavy() -> None:
    loaded = loaded_by("import app")

    assert bots_in(loaded) == set()
    assert loaded & set(HEAVY) == set()
    assert "boto3" in loaded  # the floor every function pays


@pytest.mark.parametrize("bot", BOTS)
def test_a_bot_loads_no_other_bot_and_never_pillow(bot: str) -> None:
    loaded = loaded_by(f"import app, {bot}.handlers")

    assert bots_in(loaded) == {bot}
    assert "PIL" not in loaded  # only the thumbnail bot's render step imports Pillow


# What `import app` loads of ours: the wiring, the runtime and what every function shares. Nothing else.
APP_LOADS = {
    f"chalicelib.{name}"
    for name in (
        "aws",
        "bots",
        "dedupe",
        "fleet",
        "names",  # what a function ARN looks like: the container's account, from the ARN it is invoked by
        "notify",
        "observability",
        "outbox",
        "runtime",
        "settings",
        "triggers",
    )
} | {"chalicelib"}


# A bot's parts beyond the five every bot has, that its functions load at their first event, and why.
OWN_EXTRAS = {"websites": {".status_page"}}  # its history is read and written by every run that has a page


@pytest.mark.parametrize("bot", REGISTERED, ids=lambda bot: bot.name)
def test_each_function_loads_its_own_bot_and_the_shared_parts_only(bot: Bot) -> None:
    # What a function's first event adds: its bot's policy, events, decisions, executors and handlers, and the
    # shared policy loading, event envelope and (a bot with a queue worker) fan-out; never its dry run (the
    # CLI's) nor another bot's anything.
    own = {"", ".policy", ".decisions", ".executors", ".handlers"} | OWN_EXTRAS.get(bot.name, set())
    has_events = (ROOT / "chalicelib" / bot.name / "events.py").is_file()
    fans_out = any(function.trigger == "queue" for function in bot.functions)
    shared = {"chalicelib.policy"} | ({"chalicelib.events"} if has_events else set())
    shared |= {"chalicelib.fanout"} if fans_out else set()
    expected = APP_LOADS | shared | {bot.module + part for part in own | ({".events"} if has_events else set())}

    loaded = {name for name in loaded_by(f"import app, {bot.module}.handlers") if name.startswith("chalicelib")}

    assert loaded == expected


def test_the_app_loads_exactly_the_wiring_and_the_shared_parts() -> None:
    assert {name for name in loaded_by("import app") if name.startswith("chalicelib")} == APP_LOADS
