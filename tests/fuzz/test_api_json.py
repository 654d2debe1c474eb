"""The API's JSON body parser (api/jsonbody.py): only BodyError comes out, the bounds hold, JSON round-trips."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from relate.api.jsonbody import BodyError, parse

DEPTH, ITEMS = 32, 10_000
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=40)


def outcome(data: bytes) -> dict[str, Any] | BodyError:
    """What parse gives: the object, or the BodyError it raised (anything else propagates and fails the test)."""
    try:
        return parse(data, max_depth=DEPTH, max_items=ITEMS)
    except BodyError as exc:
        return exc


def depth(value: Any) -> int:
    """Nesting depth of a JSON value (an explicit stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def storable(value: Any) -> bool:
    """No NUL and no lone surrogate anywhere (json.dumps writes both as \\u escapes)."""
    text = json.dumps(value)
    return "\\u0000" not in text and not any(f"\\ud{c}" in text for c in "89abcdef")


@given(st.binary(max_size=4096))
@example(b"[" * 100_000)
@example(b'{"a":' + b"[" * 33 + b"]" * 33 + b"}")
@example(b'"\\"' * 20_000)
@example(b"[" + b"0," * 20_000 + b"0]")
@example(b'{"subject": "\\ud800"}')
@example(b'{"a": NaN}')
@example(b'{"a": ' + b"1" * 5000 + b"}")
def test_any_bytes_give_an_object_or_a_body_error(data: bytes) -> None:
    """Arbitrary bytes: a dict within the depth bound, or BodyError 400/413 (no RecursionError, no ValueError)."""
    result = outcome(data)
    if isinstance(result, BodyError):
        assert (result.status, result.code) in {(400, "bad_request"), (413, "too_large")}
        assert result.message
    else:
        assert isinstance(result, dict)
        assert depth(result) <= DEPTH


@given(st.dictionaries(st.text(), VALUES))
def test_valid_objects_round_trip_or_are_refused_for_a_reason(value: dict[str, Any]) -> None:
    """json.dumps of an object parses back to itself, unless it nests too deep or holds NUL or a lone surrogate."""
    result = outcome(json.dumps(value).encode())
    if isinstance(result, BodyError):
        assert depth(value) > DEPTH or not storable(value), result.message
    else:
        assert result == value


@given(st.integers(min_value=1, max_value=200))
def test_the_depth_bound_is_exact(levels: int) -> None:
    """An object nesting ``levels`` deep is accepted up to the bound and refused with 400 past it."""
    inner = levels - 1
    result = outcome(b'{"a":' + b"[" * inner + b"0" + b"]" * inner + b"}")
    if levels <= DEPTH:
        assert isinstance(result, dict)
    else:
        assert isinstance(result, BodyError)
        assert result.status == 400
