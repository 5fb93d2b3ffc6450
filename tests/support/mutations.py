"""Hypothesis strategies that break a valid document the ways real inputs break.

`mutated(document)` applies one to four mutations to a deep copy of a JSON-like document (an event,
an SQS message, a parsed policy file): delete a field at any depth, replace a value with one of
another type or an extreme one, truncate a string, duplicate or shuffle list items, wrap a value in
a list or unwrap a list to its first item. Paths are drawn from the document as it stands after the
previous mutation, so mutations compound (a wrapped value can then lose a field, and so on).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import strategies as st

Path = tuple[str | int, ...]

HUGE_INT = 2**70
LONG_TEXT = "x" * 10_000
# Astral (non-BMP) characters; Hypothesis never generates lone surrogates, which JSON cannot carry anyway.
ASTRAL = st.text(st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF), min_size=1, max_size=8)
ODD_TEXT = st.one_of(
    st.just(""),
    st.just(LONG_TEXT),
    st.just("\x00"),
    st.text(max_size=30),
    ASTRAL,
    st.text(max_size=10).map(lambda text: f"{text}\x00{text}"),
    st.sampled_from(["null", "-1", "0", "0.0.0.0/0", "::/0", "i-", "sg-", "2025-06-14T02:00:00", "../..", "%2B+%"]),
)
ODD_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([HUGE_INT, -HUGE_INT, 2**63, -1, 0, 65536]),
    st.floats(),  # nan and +-inf included
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, -0.0]),
    ODD_TEXT,
)
# Copied: sampled_from hands out the same object every time, and mutations (or a handler) may change it in place.
ODD_VALUES = st.one_of(
    ODD_SCALARS,
    st.sampled_from([[], {}, [None], {"": None}, {"items": []}, {"items": None}]),
    st.lists(ODD_SCALARS, max_size=4),
    st.dictionaries(st.text(max_size=10), ODD_SCALARS, max_size=4),
    st.integers(0, 1000).map(lambda n: ["x"] * n),  # a long list
).map(copy.deepcopy)


def paths(document: Any, depth: int = 1_000, prefix: Path = ()) -> list[Path]:
    """Every path in the document down to `depth` levels, the root `()` first, parents before children."""
    found = [prefix]
    if len(prefix) >= depth:
        return found
    if isinstance(document, dict):
        for key, value in document.items():
            found.extend(paths(value, depth, (*prefix, key)))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found.extend(paths(value, depth, (*prefix, index)))
    return found


def get(document: Any, path: Path) -> Any:
    for part in path:
        document = document[part]
    return document


def replace(document: Any, path: Path, value: Any) -> Any:
    """The document with the value at `path` replaced (in place below the root); returns the new root."""
    if not path:
        return value
    get(document, path[:-1])[path[-1]] = value
    return document


def delete(document: Any, path: Path) -> Any:
    if path:
        del get(document, path[:-1])[path[-1]]
    return document


@st.composite
def _mutation(draw: st.DrawFn, document: Any, depth: int) -> Any:
    candidates = paths(document, depth)
    # Never the root itself (unless it is all there is): a caller wanting a payload of another type adds ODD_VALUES.
    path = draw(st.sampled_from(candidates[1:] or candidates))
    value = get(document, path)
    kinds = ["replace", "wrap"]
    if path:
        kinds.append("delete")
    if isinstance(value, str) and value:
        kinds.append("truncate")
    if isinstance(value, list) and value:
        kinds += ["duplicate", "shuffle", "unwrap"]
    kind = draw(st.sampled_from(kinds))
    if kind == "delete":
        return delete(document, path)
    if kind == "truncate":
        return replace(document, path, value[: draw(st.integers(0, len(value) - 1))])
    if kind == "wrap":
        return replace(document, path, [value])
    if kind == "unwrap":
        return replace(document, path, value[0])
    if kind == "duplicate":
        copies = draw(st.lists(st.sampled_from(value), min_size=1, max_size=3))
        return replace(document, path, [*value, *copy.deepcopy(copies)])
    if kind == "shuffle":
        return replace(document, path, draw(st.permutations(value)))
    return replace(document, path, draw(ODD_VALUES))


@st.composite
def mutated(draw: st.DrawFn, document: Any, max_mutations: int = 4, depth: int = 1_000) -> Any:
    """A deep copy of `document` with one to `max_mutations` mutations, `depth` levels deep at most, in turn."""
    result = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, max_mutations))):
        result = draw(_mutation(result, depth))
    return result


def as_json(document: Any) -> str:
    """What a queue or a file would carry: JSON, with NaN and Infinity as Python writes them."""
    return json.dumps(document, allow_nan=True)


def mutated_json(document: Any) -> st.SearchStrategy[str]:
    """A JSON text built from a mutated document, or the document's JSON text itself cut or corrupted."""
    text = as_json(document)

    def insert(at: int, junk: str) -> str:
        return text[:at] + junk + text[at:]

    return st.one_of(
        mutated(document).map(as_json),
        st.integers(0, len(text) - 1).map(lambda cut: text[:cut]),
        st.builds(insert, st.integers(0, len(text)), st.text(max_size=5) | st.sampled_from(['"', "{", "]", "\\"])),
        st.just(""),
        ODD_TEXT,
    )
