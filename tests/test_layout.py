"""How the tests are laid out: shared helpers live in tests/support/, and no test module imports another.

A test module (tests/**/test_*.py), a conftest.py, or any other Python file under tests/ outside tests/support/
may import from the `tests` package only `tests.support` modules; those import each other as they like. Every
import statement counts, at the top or inside a function: `import tests.x`, `from tests.x import y`,
`from tests import x`, and relative ones (`from . import x`).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.aws import ROOT

TESTS = ROOT / "tests"
SUPPORT = "tests.support"


@dataclass(frozen=True)
class Import:
    line: int
    module: str  # the module of the `tests` package imported (for `from m import name`: m, unless name is a module)
    statement: str  # as written

    def allowed(self) -> bool:
        return self.module == SUPPORT or self.module.startswith(f"{SUPPORT}.")


def checked() -> list[Path]:
    """Every Python file under tests/ but the helpers' own tests/support/: test modules, conftest.py files, and
    anything else there (a helper module outside tests/support/ is held to the same rule)."""
    return sorted(path for path in TESTS.rglob("*.py") if path.relative_to(TESTS).parts[0] != "support")


def is_module(name: str) -> bool:
    """`name` is a module or package in this repository."""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported(node: ast.Import | ast.ImportFrom, path: Path) -> list[str]:
    """The modules one import statement in `path` imports."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from the file's package, up `level - 1` packages
        package = path.relative_to(ROOT).parent.parts
        base = ".".join([*package[: len(package) - (node.level - 1)], *([base] if base else [])])
    # `from tests import conftest` and `from . import test_dns` import modules by name; `from m import f`, module m.
    return list(
        dict.fromkeys(f"{base}.{alias.name}" if is_module(f"{base}.{alias.name}") else base for alias in node.names)
    )


def imports_from_tests(path: Path, source: str | None = None) -> list[Import]:
    """Every import of a module of the `tests` package in `path` (or in `source`, read as if at `path`), in order."""
    source = path.read_text(encoding="utf-8") if source is None else source
    found = [
        Import(node.lineno, module, " ".join((ast.get_source_segment(source, node) or "").split()))
        for node in ast.walk(ast.parse(source, filename=str(path)))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for module in imported(node, path)
        if module == "tests" or module.startswith("tests.")
    ]
    return sorted(found, key=lambda found: found.line)


def violations(path: Path) -> list[str]:
    relative = path.relative_to(ROOT).as_posix()
    return [
        f"{relative}:{imported.line}: `{imported.statement}` imports {imported.module}, but a test module or "
        f"conftest.py may import from the tests package only tests.support modules: move what it needs there"
        for imported in imports_from_tests(path)
        if not imported.allowed()
    ]


@pytest.mark.parametrize("path", checked(), ids=lambda path: path.relative_to(TESTS).as_posix())
def test_a_test_module_or_conftest_imports_only_tests_support_from_tests(path: Path) -> None:
    problems = violations(path)
    assert not problems, "\n".join(problems)


def test_every_kind_of_import_is_found_and_only_tests_support_allowed() -> None:
    # Given a test module in tests/functional/ importing every way Python allows, once inside a function
    source = "\n".join(
        [
            "import os, tests.functional.test_dns",
            "import tests.support.aws",
            "from tests.functional.conftest import Estate",
            "from tests.support.dns import Network",
            "from tests import conftest, support",
            "from tests.support import fuzz",
            "from . import test_snapshots",
            "from ..support import estate",
            "from .conftest import (",
            "    emitted,",
            ")",
            "def helper():",
            "    from tests.fuzz.test_policies import SHIPPED",
        ]
    )
    # When its imports are read
    found = imports_from_tests(TESTS / "functional" / "test_example.py", source)
    # Then each import of the tests package is found, and exactly those outside tests.support are refused
    assert [(imported.module, imported.allowed()) for imported in found] == [
        ("tests.functional.test_dns", False),
        ("tests.support.aws", True),
        ("tests.functional.conftest", False),
        ("tests.support.dns", True),
        ("tests.conftest", False),
        ("tests.support", True),
        ("tests.support.fuzz", True),
        ("tests.functional.test_snapshots", False),
        ("tests.support.estate", True),
        ("tests.functional.conftest", False),
        ("tests.fuzz.test_policies", False),
    ]
    assert found[-1].statement == "from tests.fuzz.test_policies import SHIPPED"
    assert found[-2].statement == "from .conftest import ( emitted, )"
