"""Comparators (RFC 4790 as RFC 5228 §2.7.3 uses them) and match types (RFC 5228 §2.7.1, RFC 5231).

Every comparison is linear in its inputs but ``:matches``, whose cost is at
most the value's length times the pattern's (and linear when the pattern's
pieces between ``*`` hold no ``?``): the pattern is cut at each ``*`` into
pieces; the first must start the value, the last must end it, and each one
between is found at the leftmost place after the one before (``str.find``
when it has no ``?``). That is the answer a backtracking matcher would give
with each ``*`` taking as little as it can, which is what RFC 5229 §3.2
asks of match variables (RFC 5229's example: "coyote@**.com" gives ${1}
empty), without backtracking. ``i;ascii-casemap`` folds ASCII letters only,
so folded strings keep their length and a capture is cut from the original
value at the folded match's offsets.
"""

from __future__ import annotations

_FOLD = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def fold(comparator: str, value: str) -> str:
    return value.translate(_FOLD) if comparator == "i;ascii-casemap" else value


def numeric(value: str) -> int | None:
    """RFC 4790 §9.1.1: the leading digits as a number; None (positive infinity) without any."""
    end = 0
    while end < len(value) and "0" <= value[end] <= "9":
        end += 1
    return int(value[:end]) if end else None


def order(comparator: str, a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` sorts before, with or after ``b`` under the comparator."""
    if comparator == "i;ascii-numeric":
        x, y = numeric(a), numeric(b)
        if x == y:
            return 0
        if x is None:
            return 1
        if y is None:
            return -1
        return -1 if x < y else 1
    x2, y2 = fold(comparator, a), fold(comparator, b)
    return 0 if x2 == y2 else (-1 if x2 < y2 else 1)


def relation(op: str, cmp: int) -> bool:
    """RFC 5231 §4: whether ``value OP key`` holds, given order(value, key)."""
    return {
        "gt": cmp > 0,
        "ge": cmp >= 0,
        "lt": cmp < 0,
        "le": cmp <= 0,
        "eq": cmp == 0,
        "ne": cmp != 0,
    }[op]


def contains(comparator: str, value: str, key: str) -> bool:
    return fold(comparator, key) in fold(comparator, value)


def _pattern(pattern: str) -> list[list[str | None]]:
    """The pieces of a :matches pattern between its ``*``: each a list of characters, None for ``?``;
    ``\\`` makes the next character literal (RFC 5228 §2.7.1)."""
    pieces: list[list[str | None]] = [[]]
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            pieces[-1].append(pattern[i + 1])
            i += 2
            continue
        if c == "*":
            pieces.append([])
        else:
            pieces[-1].append(None if c == "?" else c)
        i += 1
    return pieces


def _at(value: str, pos: int, piece: list[str | None]) -> bool:
    if pos + len(piece) > len(value):
        return False
    return all(c is None or value[pos + offset] == c for offset, c in enumerate(piece))


def _find(value: str, piece: list[str | None], start: int, end: int) -> int:
    """The leftmost place in value[start:end] where ``piece`` fits, or -1."""
    if None not in piece:
        return value.find("".join(c for c in piece if c is not None), start, end)
    # Anchor on the piece's first literal character, when it has one, to skip most places cheaply.
    literal = next(((i, c) for i, c in enumerate(piece) if c is not None), None)
    pos = start
    last = end - len(piece)
    while pos <= last:
        if literal is not None:
            found = value.find(literal[1], pos + literal[0], last + literal[0] + 1)
            if found < 0:
                return -1
            pos = found - literal[0]
        if _at(value, pos, piece):
            return pos
        pos += 1
    return -1


def matches(comparator: str, value: str, pattern: str) -> list[str] | None:
    """Whether ``value`` matches the wildcard ``pattern``; if so, the text of each wildcard in order
    (``*`` and ``?`` alike: RFC 5229 §3.2's ${1}..), else None."""
    folded = fold(comparator, value)
    pieces = [[fold(comparator, c) if c is not None else None for c in piece] for piece in _pattern(pattern)]
    n = len(value)
    if len(pieces) == 1:
        piece = pieces[0]
        if len(piece) != n or not _at(folded, 0, piece):
            return None
        return [value[i] for i, c in enumerate(piece) if c is None]
    first, last = pieces[0], pieces[-1]
    if len(first) + len(last) > n or not _at(folded, 0, first) or not _at(folded, n - len(last), last):
        return None
    captures = [value[i] for i, c in enumerate(first) if c is None]
    pos = len(first)
    limit = n - len(last)
    for piece in pieces[1:-1]:
        found = _find(folded, piece, pos, limit)
        if found < 0:
            return None
        captures.append(value[pos:found])
        captures.extend(value[found + i] for i, c in enumerate(piece) if c is None)
        pos = found + len(piece)
    captures.append(value[pos:limit])
    captures.extend(value[limit + i] for i, c in enumerate(last) if c is None)
    return captures


def quote_wildcards(value: str) -> str:
    """RFC 5229 §4.1.2 :quotewildcard."""
    return value.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")
