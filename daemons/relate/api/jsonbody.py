"""JSON request bodies (RFC 8259), parsed within bounds a client cannot push.

Policy:

- A body is UTF-8 JSON whose top level is an object. Its size is bounded
  before anything here runs (``api.max_body_size``, aiohttp answers 413).
- Before parsing, one linear pass measures it: every string is skipped by
  one regular expression that cannot backtrack (an unterminated string runs
  to the end of the body), and what is left is counted at C speed. More
  than ``api.max_json_items`` values (arrays, objects and the commas between
  members, roughly one per value) is 413 ``too_large``: it bounds the
  memory json.loads would spend on a body of tiny values (40 MB of ``0,``
  is 20 million objects). Nesting deeper than ``api.max_json_depth`` is 400:
  json.loads recurses once per level, so depth is checked here, by a loop
  over the brackets, never by recursion.
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

# A JSON string, or an unterminated one running to the end of the input. The unrolled loop
# ("normal* (special normal*)*") matches each character one way only, and the final group always
# matches, so it never backtracks: one pass over the input whatever it holds.
_STRING = re.compile(rb'"[^"\\]*(?:\\[\s\S][^"\\]*)*(?:"|\\?\Z)')
_BRACKETS = re.compile(rb"[\[\]{}]")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class BodyError(ValueError):
    """A body refused: ``status`` and ``code`` for the error answer, the message for the client."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def unstorable(text: str) -> bool:
    """Whether ``text`` holds NUL or a lone surrogate (no PostgreSQL text or mail header can carry either)."""
    return _UNSTORABLE.search(text) is not None


def _bad(message: str) -> BodyError:
    return BodyError(400, "bad_request", message)


def measure(data: bytes, *, max_depth: int, max_items: int) -> None:
    """Raise BodyError if ``data`` holds more than ``max_items`` values or nests deeper than ``max_depth``.

    For valid JSON this is exact about depth and an upper bound on values;
    for invalid JSON it may refuse what json.loads would refuse anyway.
    """
    structure = _STRING.sub(b"", data)
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


def _check_text(value: Any) -> None:
    """Refuse NUL and lone surrogates in every string and key (an explicit stack: no recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if unstorable(item):
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
    _check_text(value)
    return value
