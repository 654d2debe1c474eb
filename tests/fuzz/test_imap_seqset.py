"""Sequence sets (RFC 9051 §9 sequence-set): parsing, and resolving without one step per number."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from relate.imap.errors import ParseError
from relate.imap.parser import Cursor, SeqRange, SeqSet

_NUMBERS = st.one_of(st.none(), st.integers(1, 40))


@given(st.binary(max_size=200))
@example(b"1:4294967295")
@example(b"1:*," * 1000 + b"1")
@example(b"0:*")
@example(b"4294967296")
@example(b"$")
def test_parse_raises_only_parse_error(raw: bytes) -> None:
    """Any bytes parse as a sequence set or raise ParseError; what parses resolves against any mailbox size."""
    cursor = Cursor([raw])
    try:
        seqset = cursor.seqset()
    except ParseError:
        return
    spans = seqset.resolve(4294967295)
    assert list(spans.lows) == sorted(spans.lows)


@given(st.lists(st.tuples(_NUMBERS, _NUMBERS), min_size=1, max_size=30), st.integers(1, 40))
def test_resolve_agrees_with_counting(ranges: list[tuple[int | None, int | None]], largest: int) -> None:
    """Resolved ranges are sorted, disjoint and not adjacent, and hold exactly the numbers the set names."""
    seqset = SeqSet(tuple(SeqRange(a, b) for a, b in ranges))
    named = set()
    for a, b in ranges:
        lo, hi = sorted((largest if a is None else a, largest if b is None else b))
        named.update(range(lo, hi + 1))
    spans = seqset.resolve(largest)
    pairs = list(spans)
    assert all(lo <= hi for lo, hi in pairs)
    assert all(pairs[i][1] + 1 < pairs[i + 1][0] for i in range(len(pairs) - 1))
    assert {n for n in range(0, 50) if n in spans} == named
    uids = list(range(1, 50, 3))
    assert spans.pick(uids) == [u for u in uids if u in named]


def test_huge_ranges_cost_nothing() -> None:
    """1:4294967295 and * ranges resolve to one range each, and picking from them touches only what exists."""
    seqset = Cursor([b"1:4294967295,7,4294967295:1,*"]).seqset()
    spans = seqset.resolve(4294967295)
    assert list(spans) == [(1, 4294967295)]
    assert spans.pick([3, 9, 4294967295]) == [3, 9, 4294967295]
