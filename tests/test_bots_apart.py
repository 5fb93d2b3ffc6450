"""No bot reaches into another: each package imports the shared parts and itself, never another bot's code.

tests/test_cold_start.py pins what each function loads at import; this reads every import statement,
the ones inside functions too (a bot's lazy imports run only on some events), so a bot cannot come to
depend on another's code by a path no test happens to take.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from chalicelib.bots import BOTS, Bot
from tests.support.aws import ROOT


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return modules


@pytest.mark.parametrize("bot", BOTS, ids=lambda bot: bot.name)
def test_a_bot_imports_no_other_bot(bot: Bot) -> None:
    others = [other.module for other in BOTS if other is not bot]
    reached = sorted(
        f"{path.relative_to(ROOT)}: {module}"
        for path in (ROOT / "chalicelib" / bot.name).rglob("*.py")
        for module in imported_modules(path)
        if any(module == other or module.startswith(f"{other}.") for other in others)
    )
    assert not reached, "\n".join(reached)


def test_the_shared_parts_import_no_bot() -> None:
    shared = list((ROOT / "chalicelib").glob("*.py"))  # the CLI too: it finds each bot's dry run by the registry
    reached = sorted(
        f"{path.relative_to(ROOT)}: {module}"
        for path in shared
        for module in imported_modules(path)
        if any(module == bot.module or module.startswith(f"{bot.module}.") for bot in BOTS)
    )
    assert not reached, "\n".join(reached)
