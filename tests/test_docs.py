"""The docs against the repository: README.md and docs/*.md may not show what is not there.

A newcomer copies the policy examples, runs the tests the docs name and follows their links, so each
of those is checked here: every YAML block says which policy file it shows and validates against that
file's model (or is quoted from the repository's own file), every test named next to a promise
exists, and every repository path and relative link resolves. docs/development.md tells authors the
conventions these checks read.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from chalicelib.bots import BOTS
from chalicelib.policy import ACCOUNTS, POLICY_FILES, model_of

ROOT = Path(__file__).resolve().parent.parent
PAGES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))

# Directories whose paths the docs name in backticks, and that hold no generated file (build/ and
# bench/'s peers' venv are made by `make package` and `make bench`, so they are not checked).
REPOSITORY_DIRS = ("chalicelib", "tests", "deploy", "policies", "schema", "demo", ".chalice", "docs")

FENCE = re.compile(r"(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*).*")
# The line right before a yaml fence: which policy file the block shows, whole (example) or quoted (excerpt).
MARKER = re.compile(r"<!--\s*(?P<kind>example|excerpt):\s*policies/(?P<stem>[\w-]+)\.yml\s*-->")
# A CommonMark code span: a run of backticks, its content (which may wrap, but not past a blank line), the
# same run again.
CODE_SPAN = re.compile(r"(?<!`)(?P<ticks>`+)(?!`)(?P<code>(?:(?!\n\s*\n).)+?)(?<!`)(?P=ticks)(?!`)", re.DOTALL)
LINK = re.compile(r"\[[^\]\n]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"#{1,6}\s+(?P<title>.+?)\s*#*\s*")
TEST_FILE = re.compile(r"(?P<file>tests/[\w/]+\.py)(?:::(?P<name>\w+))?")
TEST_NAME = re.compile(r"test_\w+")
BARE_TEST_FILE = re.compile(r"[\w/]*test_\w+\.py(?:::\w+)?")
PATH = re.compile(rf"(?:{'|'.join(re.escape(d) for d in REPOSITORY_DIRS)})/\S*")
PLACEHOLDER = re.compile(r"<[^<>/]+>")
URL_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*:")


@dataclass(frozen=True)
class Block:
    """A fenced code block of a page."""

    page: Path
    line: int  # of its opening fence, from 1
    info: str  # what the fence says the block holds: yaml, bash, text...
    text: str  # its lines, the fence's indentation removed
    before: str  # the line right before the fence, stripped: where a yaml block's marker goes

    def __str__(self) -> str:
        return f"{shown(self.page)}:{self.line}"

    @property
    def marker(self) -> tuple[str, str] | None:
        """(example or excerpt, the policy file's stem), from the marker before the fence; None without one."""
        found = MARKER.fullmatch(self.before)
        return (found["kind"], found["stem"]) if found else None


@dataclass(frozen=True)
class Page:
    path: Path
    blocks: tuple[Block, ...]
    prose: str  # the page with every fenced block blanked out, line numbers kept


def shown(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def closes(line: str, fence: str) -> bool:
    """Whether `line` closes a block opened by `fence`: the same character, at least as many, nothing else."""
    stripped = line.strip()
    return len(stripped) >= len(fence) and stripped == fence[0] * len(stripped)


@cache
def read(path: Path) -> Page:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    prose = list(lines)
    index = 0
    while index < len(lines):
        opening = FENCE.fullmatch(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        end = next((i for i in range(index + 1, len(lines)) if closes(lines[i], fence)), len(lines))
        body = [line[indent:] if not line[:indent].strip() else line.lstrip() for line in lines[index + 1 : end]]
        before = lines[index - 1].strip() if index else ""
        blocks.append(Block(path, index + 1, opening["info"].lower(), "\n".join(body) + "\n", before))
        end = min(end, len(lines) - 1)  # an unclosed block runs to the end of the page
        prose[index : end + 1] = [""] * (end + 1 - index)
        index = end + 1
    return Page(path, tuple(blocks), "\n".join(prose))


def line_of(page: Page, offset: int) -> int:
    return page.prose.count("\n", 0, offset) + 1


def code_spans(page: Page) -> Iterator[tuple[int, str]]:
    """Each code span of the page's prose, with its line; a span wrapped over lines reads as one line."""
    for span in CODE_SPAN.finditer(page.prose):
        yield line_of(page, span.start()), " ".join(span["code"].split())


def yaml_blocks() -> list[Block]:
    return [block for path in PAGES for block in read(path).blocks if block.info in ("yaml", "yml")]


def marked(kind: str) -> list[Block]:
    return [block for block in yaml_blocks() if block.marker is not None and block.marker[0] == kind]


@cache
def defined_tests() -> dict[str, frozenset[str]]:
    """Every test function (module level or in a class) under tests/, by file."""
    found: dict[str, frozenset[str]] = {}
    for path in sorted((ROOT / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found[shown(path)] = frozenset(
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
        )
    return found


@cache
def account_ids() -> frozenset[str]:
    """The ids of the repository's accounts.yml: the context a bot's file is validated in (as the bots do)."""
    accounts = yaml.safe_load((ROOT / "policies" / f"{ACCOUNTS}.yml").read_text(encoding="utf-8"))
    return frozenset(str(account["id"]) for account in accounts.get("accounts") or ())


def slugs(path: Path) -> frozenset[str]:
    """The anchors GitHub gives the page's headings: lowercased, punctuation dropped, spaces to dashes."""
    seen: dict[str, int] = {}
    anchors: set[str] = set()
    for line in read(path).prose.splitlines():
        heading = HEADING.fullmatch(line)
        if heading is None:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading["title"].lower()).replace(" ", "-")
        anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return frozenset(anchors)


def page_id(path: Path) -> str:
    return shown(path)


# ----- YAML -----------------------------------------------------------------------------------------


def test_every_yaml_block_says_which_policy_file_it_shows() -> None:
    unmarked = [
        f"{block}: the line before its fence is {block.before!r}" for block in yaml_blocks() if not block.marker
    ]

    assert not unmarked, (
        "put <!-- example: policies/<stem>.yml --> (a whole file) or <!-- excerpt: policies/<stem>.yml --> "
        "(lines quoted from it) on the line right before each yaml fence:\n" + "\n".join(unmarked)
    )


def test_every_policy_file_has_a_whole_example_in_the_docs() -> None:
    whole = {block.marker[1] for block in marked("example") if block.marker}

    assert whole == set(POLICY_FILES), "every policy file is shown whole at least once, and checked"


@pytest.mark.parametrize("block", marked("example"), ids=str)
def test_a_policy_example_validates_against_its_files_model(block: Block) -> None:
    assert block.marker is not None
    stem = block.marker[1]
    assert stem in POLICY_FILES, f"{block}: policies/{stem}.yml is not a policy file; expected {POLICY_FILES}"
    # As the bots load them: a bot's file names only accounts listed in accounts.yml.
    context: dict[str, Any] | None = None if stem == ACCOUNTS else {"account_ids": set(account_ids())}

    model_of(stem).model_validate(yaml.safe_load(block.text), context=context)


@pytest.mark.parametrize("block", marked("excerpt"), ids=str)
def test_a_policy_excerpt_is_quoted_from_the_repositorys_file(block: Block) -> None:
    assert block.marker is not None
    stem = block.marker[1]
    quoted = [line.rstrip() for line in block.text.splitlines()]
    source = [line.rstrip() for line in (ROOT / "policies" / f"{stem}.yml").read_text(encoding="utf-8").splitlines()]

    yaml.safe_load(block.text)
    assert quoted, f"{block}: an empty excerpt"
    assert any(source[at : at + len(quoted)] == quoted for at in range(len(source))), (
        f"{block}: these lines are not in policies/{stem}.yml as they are quoted"
    )


# ----- the tests the docs name ----------------------------------------------------------------------


def unknown_tests(page: Page) -> Iterator[str]:
    tests = defined_tests()
    every_name = {name for names in tests.values() for name in names}
    for line, code in code_spans(page):
        where = f"{shown(page.path)}:{line}: `{code}`"
        if reference := TEST_FILE.fullmatch(code):
            if reference["file"] not in tests:
                yield f"{where}: no such test file"
            elif reference["name"] and reference["name"] not in tests[reference["file"]]:
                yield f"{where}: {reference['file']} defines no {reference['name']}"
        elif BARE_TEST_FILE.fullmatch(code):
            yield f"{where}: name the test file by its path from the repository root (tests/...)"
        elif TEST_NAME.fullmatch(code):
            if code not in every_name:
                yield f"{where}: no test of that name under tests/"
        elif code.startswith(("...", "…")) and "_" in code:
            yield f"{where}: spell the test's name out: an abbreviation cannot be checked"


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_every_test_a_page_names_exists(path: Path) -> None:
    problems = list(unknown_tests(read(path)))

    assert not problems, "\n".join(problems)


# ----- paths and links ------------------------------------------------------------------------------


def missing_paths(page: Page) -> Iterator[str]:
    for line, code in code_spans(page):
        if PATH.fullmatch(code) and not TEST_FILE.fullmatch(code):
            pattern = PLACEHOLDER.sub("*", code).rstrip("/")
            if not any(ROOT.glob(pattern)):
                yield f"{shown(page.path)}:{line}: `{code}` names nothing in the repository"


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_every_repository_path_a_page_names_exists(path: Path) -> None:
    problems = list(missing_paths(read(path)))

    assert not problems, "\n".join(problems)


def broken_links(page: Page) -> Iterator[str]:
    for link in LINK.finditer(page.prose):
        target = link["target"]
        if URL_SCHEME.match(target):
            continue  # a web address: not this repository's to check
        where = f"{shown(page.path)}:{line_of(page, link.start())}: ({target})"
        file, _, anchor = target.partition("#")
        resolved = (page.path.parent / file).resolve() if file else page.path
        if not resolved.is_relative_to(ROOT):
            yield f"{where}: points outside the repository"
        elif not resolved.exists():
            yield f"{where}: no such file"
        elif anchor and resolved.suffix == ".md" and anchor not in slugs(resolved):
            yield f"{where}: {shown(resolved)} has no heading #{anchor}"


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_every_relative_link_resolves(path: Path) -> None:
    problems = list(broken_links(read(path)))

    assert not problems, "\n".join(problems)


def test_the_readme_links_every_page_and_every_bot_has_one() -> None:
    readme = read(ROOT / "README.md")
    linked = {link["target"].partition("#")[0] for link in LINK.finditer(readme.prose)}
    pages = {shown(path) for path in PAGES[1:]}

    assert pages - linked == set(), "the README links every page under docs/"
    assert {f"docs/{bot.name}.md" for bot in BOTS} <= pages, "each bot in chalicelib/bots.py has docs/<bot>.md"
