"""Random and mutated policy files through `opsbots validate`: ok and exit 0, or exit 1 and every problem on
one line as `file:line: where: what`; never a traceback, never an exception but PolicyError from load_policies.

Random documents are nested mappings, lists and scalars whose keys are mostly the schema's own field
names (so validation goes deep, not just "unknown field"). Mutated documents start from the shipped
policies: a key deleted, a value of another type, a line repeated (a duplicate key), a line dropped,
YAML punctuation dropped in anywhere, the file cut short.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from chalicelib.cli import main
from chalicelib.policy import POLICY_FILES, model_of
from tests.support.mutations import ODD_SCALARS, mutated
from tests.support.policies import SHIPPED, write_policies

pytestmark = pytest.mark.fuzz

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

FILES = sorted(SHIPPED)
PROBLEM_LINE = re.compile(r"^(?P<file>[^\n:]+\.ya?ml):(?P<line>[1-9][0-9]*): (?P<rest>.+)$")


def _field_names(model: Any, seen: set[Any] | None = None) -> set[str]:
    """Every field name of a policy model and of the models nested in it, at any depth."""
    seen = set() if seen is None else seen
    if model in seen:
        return set()
    seen.add(model)
    if isinstance(model, type) and issubclass(model, BaseModel):
        names = set(model.model_fields)
        for field in model.model_fields.values():
            names |= _field_names(field.annotation, seen)
        return names
    return set().union(*(_field_names(argument, seen) for argument in get_args(model)))


KEYS = sorted(set().union(*(_field_names(model_of(stem)) for stem in POLICY_FILES)))
SCALARS = ODD_SCALARS.filter(lambda value: not (isinstance(value, str) and len(value) > 200)) | st.sampled_from(
    ["internet", "any", "enforce", "report", "tcp", "22", "20-25", "24h", "0m", "50MB", "eu-west-1", "222222222222"]
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)
YAML_PUNCTUATION = st.text(alphabet=" \n\t-:[]{},#&*!|>'\"?%@`", min_size=1, max_size=6)


def _dump(document: Any, flow: bool) -> str:
    return yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True, sort_keys=False)


@st.composite
def random_file(draw: st.DrawFn) -> tuple[str, str]:
    """Any policy file name, holding a random YAML document (a mapping at the top, mostly)."""
    top = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), DOCUMENTS, max_size=6)
    return draw(st.sampled_from(FILES)), _dump(draw(top | DOCUMENTS), draw(st.booleans()))


@st.composite
def _text_mutation(draw: st.DrawFn, text: str) -> str:
    lines = text.splitlines(keepends=True) or [""]
    index = draw(st.integers(0, len(lines) - 1))
    kind = draw(st.sampled_from(["repeat-line", "drop-line", "insert", "cut"]))
    if kind == "repeat-line":  # a duplicate key, or a duplicate list item
        return "".join([*lines[: index + 1], lines[index], *lines[index + 1 :]])
    if kind == "drop-line":
        return "".join(lines[:index] + lines[index + 1 :])
    at = draw(st.integers(0, len(text)))
    if kind == "insert":
        return text[:at] + draw(YAML_PUNCTUATION | st.text(max_size=4)) + text[at:]
    return text[:at]


@st.composite
def mutated_file(draw: st.DrawFn) -> tuple[str, str]:
    """A shipped policy file, mutated as a document (then dumped) or as text, or both."""
    name = draw(st.sampled_from(FILES))
    text = SHIPPED[name]
    if draw(st.booleans()):
        text = _dump(draw(mutated(yaml.safe_load(text))), draw(st.booleans()))
    for _ in range(draw(st.integers(0 if text != SHIPPED[name] else 1, 3))):
        text = draw(_text_mutation(text))
    return name, text


@FUZZ
@given(file=random_file() | mutated_file())
def test_a_random_or_mutated_policy_is_valid_or_each_problem_is_one_line_with_file_and_line(
    tmp_path: Path, file: tuple[str, str]
) -> None:
    # Given a policy directory where one file holds a random or a mutated document
    write_policies(tmp_path, *file)
    out, err = io.StringIO(), io.StringIO()
    # When `opsbots validate` loads it (load_policies: any exception but PolicyError would end the test here)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["validate", str(tmp_path)])
    # Then it says ok and exits 0, or exits 1 listing problems, one a line: a file here, a line in it, a message
    assert "Traceback" not in out.getvalue() + err.getvalue()
    if code == 0:
        assert out.getvalue().startswith("ok: "), out.getvalue()
        assert not err.getvalue(), err.getvalue()
        return
    assert code == 1
    problems = err.getvalue().splitlines()
    assert problems, "exit 1 without a reason"
    for problem in problems:
        parsed = PROBLEM_LINE.fullmatch(problem)
        assert parsed, problem
        path = Path(parsed["file"])
        assert path.parent.resolve() == tmp_path.resolve(), problem
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        assert int(parsed["line"]) <= text.count("\n") + 1, problem
        assert parsed["rest"].strip(), problem
