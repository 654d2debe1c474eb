"""JSON request bodies (RFC 8259), parsed within bounds a client cannot push.

Policy:

- A body is UTF-8 JSON whose top level is an object. Its size is bounded
  before anything here runs (``api.max_body_size``, aiohttp answers 413).
- Before parsing, the body is measured in one linear pass: counted as it
  is when that already proves it small (a base64 attachment has no bracket
  or comma), else with its strings skipped by bounded regular-expression
  steps that cannot backtrack. More than ``api.max_json_items`` values
  (arrays, objects and the commas between members, roughly one per value)
  is 413 ``too_large``: it bounds the memory json.loads would spend on a
  body of tiny values (40 MB of ``0,`` is 20 million objects). Nesting
  deeper than ``api.max_json_depth`` is 400: json.loads recurses once per
  level, so depth is checked here, by a loop over the brackets, never by
  recursion.
- Text a database or a mail header cannot carry is refused anywhere in the
  body, keys included: NUL, and lone surrogates (``"\\ud800"``, which is
  valid JSON but not text). ``NaN`` and ``Infinity`` are not JSON: refused.
- Every refusal is :class:`BodyError`, with the HTTP status, the error code
  and a message for the client; nothing else escapes :func:`parse`.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Skipping strings: outside one, up to the next quote; inside, runs of plain characters or single
# escapes. Each match is bounded (at most 64 KiB, or 512 steps of at most 16 KiB), so no single call
# holds the interpreter for long: the scan of a large body runs in a worker thread and the event loop
# gets its turns. The alternatives start with different characters and nothing follows the repeat,
# so the first, greedy attempt always stands: no backtracking.
_OUTSIDE = re.compile(rb'[^"]{0,65536}')
_IN_STRING = re.compile(rb'(?:[^"\\]{1,16384}|\\[\s\S]){0,512}')
_BRACKETS = re.compile(rb"[\[\]{}]")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Strings are searched for NUL and surrogates this many characters at a time (bounded calls again).
_TEXT_STEP = 1 << 20
_QUOTE = 0x22


class BodyError(ValueError):
    """A body refused: ``status`` and ``code`` for the error answer, the message for the client."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def unstorable(text: str) -> bool:
    """Whether ``text`` holds NUL or a lone surrogate (no PostgreSQL text or mail header can carry either)."""
    return _unstorable_in(text)


def _bad(message: str) -> BodyError:
    return BodyError(400, "bad_request", message)


def _match_end(pattern: re.Pattern[bytes], data: bytes, pos: int) -> int:
    """Where ``pattern`` (which matches the empty string at worst) stops, matched at ``pos``."""
    m = pattern.match(data, pos)
    assert m is not None
    return m.end()


def _structure(data: bytes) -> bytes:
    """``data`` without its JSON strings (an unterminated string runs to the end)."""
    parts = []
    pos, end = 0, len(data)
    while pos < end:
        stop = _match_end(_OUTSIDE, data, pos)
        parts.append(data[pos:stop])
        pos = stop
        if pos < end and data[pos] == _QUOTE:
            pos += 1
            while pos < end:
                pos = _match_end(_IN_STRING, data, pos)
                if pos < end and (data[pos] == _QUOTE or pos == end - 1):
                    pos += 1  # the closing quote, or a lone backslash ending the body
                    break
    return b"".join(parts)


def measure(data: bytes, *, max_depth: int, max_items: int) -> None:
    """Raise BodyError if ``data`` holds more than ``max_items`` values or nests deeper than ``max_depth``.

    For valid JSON this is exact about depth and an upper bound on values;
    for invalid JSON it may refuse what json.loads would refuse anyway.
    """
    # Counted over the whole body, strings included, these are upper bounds: most bodies (a base64
    # attachment holds no bracket or comma) pass here without the string-skipping scan.
    opening, closing = data.count(b"[") + data.count(b"{"), data.count(b"]") + data.count(b"}")
    if opening <= max_depth and data.count(b",") <= max_items - max_depth and closing <= max_items:
        return
    structure = _structure(data)
    opening = structure.count(b"[") + structure.count(b"{")
    closing = structure.count(b"]") + structure.count(b"}")
    too_many = opening + structure.count(b",") > max_items or closing > max_items
    if opening > max_depth:
        # Every bracket when there are few enough (at most 2 * max_items); else the first max_items,
        # only to say "too deep" rather than "too many" for a deep body. Bounded either way.
        limit = max_items if too_many else opening + closing
        depth = 0
        for seen, m in enumerate(_BRACKETS.finditer(structure)):
            if seen >= limit:
                break
            if m.group() in (b"[", b"{"):
                depth += 1
                if depth > max_depth:
                    raise _bad(f"the JSON body nests too deeply ({max_depth} levels at most)")
            else:
                depth -= 1
    if too_many:
        raise BodyError(413, "too_large", f"the JSON body holds too many values ({max_items} at most)")


def _no_constants(name: str) -> Any:
    raise _bad(f"the body is not valid JSON ({name} is not a JSON number)")


def _unstorable_in(text: str) -> bool:
    return any(_UNSTORABLE.search(text, i, i + _TEXT_STEP) for i in range(0, len(text), _TEXT_STEP))


def _check_text(value: Any) -> None:
    """Refuse NUL and lone surrogates in every string and key (an explicit stack: no recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _unstorable_in(item):
                raise _bad("strings in the body must not contain NUL characters or lone surrogates")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def parse(data: bytes, *, max_depth: int, max_items: int) -> dict[str, Any]:
    """The JSON object in ``data``, or BodyError."""
    measure(data, max_depth=max_depth, max_items=max_items)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("the body is not UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except ValueError as exc:  # JSONDecodeError, and int() past sys.get_int_max_str_digits()
        if isinstance(exc, BodyError):
            raise
        raise _bad("the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise _bad("the body must be a JSON object")
    # Raw NUL and surrogates are not valid in JSON text or UTF-8: only a \\u escape can make one.
    if b"\\u" in data:
        _check_text(value)
    return value
