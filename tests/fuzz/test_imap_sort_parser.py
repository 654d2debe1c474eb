"""SORT, THREAD, CANCELUPDATE and RETURN options in the IMAP parser: only ParseError, and sound commands."""

from __future__ import annotations

import contextlib

from hypothesis import example, given
from hypothesis import strategies as st

from relate.imap.errors import ParseError
from relate.imap.parser import SORT_CRITERIA, THREAD_ALGORITHMS, CancelUpdate, Search, Sort, Thread, parse

_TOKENS = st.sampled_from(
    [
        b" ", b"(", b")", b"RETURN", b"RETURN (", b"MIN", b"MAX", b"ALL", b"COUNT", b"SAVE", b"CONTEXT", b"UPDATE",
        b"PARTIAL", b"1:5", b"-1:-5", b"5:1", b"-3:2", b"0:1", b"1:*", b"4294967295:4294967296", b"REVERSE",
        *(c.encode() for c in sorted(SORT_CRITERIA | THREAD_ALGORITHMS)),
        b"UTF-8", b"US-ASCII", b'"UTF-8"', b"KOI8-R", b"SEEN", b"1:*", b"$",
        b'"A001"', b'"a\\"b"', b"\x00", b"\xff",
    ]
)  # fmt: skip
_VERBS = st.sampled_from([b"SORT ", b"UID SORT ", b"THREAD ", b"UID THREAD ", b"CANCELUPDATE ", b"SEARCH "])


@given(_VERBS, st.lists(_TOKENS, max_size=25).map(b"".join), st.booleans())
@example(b"SORT ", b"RETURN (PARTIAL -1:-5) (REVERSE ARRIVAL) UTF-8 ALL", False)
@example(b"SORT ", b"(" + b"DATE " * 20 + b") UTF-8 ALL", False)
@example(b"CANCELUPDATE ", b'"x" ' * 20, False)
@example(b"THREAD ", b"REFERENCES UTF-8 " + b"(" * 100 + b"ALL" + b")" * 100, False)
def test_parse(verb: bytes, rest: bytes, utf8: bool) -> None:
    """Any such command parses or raises ParseError; what parses is sound."""
    with contextlib.suppress(ParseError):
        cmd = parse([b"a " + verb + rest], utf8=utf8)
        if isinstance(cmd, Sort):
            assert cmd.program
            assert all(criterion in SORT_CRITERIA for criterion, _ in cmd.program)
        if isinstance(cmd, Thread):
            assert cmd.algorithm in THREAD_ALGORITHMS
        if isinstance(cmd, (Sort, Search)) and cmd.partial is not None:
            assert 1 <= cmd.partial.low <= cmd.partial.high
            assert "ALL" not in (cmd.returns or ())
            assert len(cmd.partial.pick(10)) <= 10
        if isinstance(cmd, CancelUpdate):
            assert cmd.tags
