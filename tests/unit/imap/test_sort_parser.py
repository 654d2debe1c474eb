"""SORT, THREAD, CANCELUPDATE and the RETURN options of SEARCH and SORT in the parser (RFC 5256, 5267, 9394)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from relate.imap import limits
from relate.imap.errors import ParseError
from relate.imap.parser import CancelUpdate, Partial, Search, SearchKey, Sort, Thread, parse


def test_sort() -> None:
    """SORT takes RETURN options, a list of criteria with REVERSE, a charset and search keys."""
    cmd = parse([b"a UID SORT RETURN (MIN COUNT) (reverse DATE SUBJECT displayfrom) utf-8 UNSEEN FROM x"])
    assert isinstance(cmd, Sort)
    assert cmd.uid
    assert cmd.returns == ("MIN", "COUNT")
    assert cmd.program == (("DATE", True), ("SUBJECT", False), ("DISPLAYFROM", False))
    assert cmd.charset == "UTF-8"
    assert cmd.key == SearchKey("AND", (SearchKey("UNSEEN"), SearchKey("FROM", ("x",))))
    plain = parse([b'a SORT (ARRIVAL) "US-ASCII" ALL'])
    assert isinstance(plain, Sort)
    assert plain.returns is None


def test_thread() -> None:
    """THREAD takes an algorithm, a charset and search keys; UID THREAD too."""
    cmd = parse([b"a UID THREAD refs US-ASCII 1:*"])
    assert isinstance(cmd, Thread)
    assert (cmd.uid, cmd.algorithm, cmd.charset, cmd.key.name) == (True, "REFS", "US-ASCII", "SEQ")


@pytest.mark.parametrize(
    ("text", "partial"),
    [
        (b"PARTIAL 1:5", Partial(1, 5)),
        (b"PARTIAL 5:1", Partial(1, 5)),  # either end first (RFC 5267 §4.4: 500:400 is 400:500)
        (b"PARTIAL -1:-100", Partial(1, 100, from_end=True)),  # RFC 9394 §3.1: counted from the end
        (b"PARTIAL -100:-1 COUNT", Partial(1, 100, from_end=True)),
    ],
)
def test_partial(text: bytes, partial: Partial) -> None:
    """PARTIAL's range is read from either end, in either order."""
    cmd = parse([b"a SEARCH RETURN (" + text + b") ALL"])
    assert isinstance(cmd, Search)
    assert cmd.partial == partial


@pytest.mark.parametrize(
    "line",
    [
        b"a SEARCH RETURN (PARTIAL 1) ALL",
        b"a SEARCH RETURN (PARTIAL 1:*) ALL",
        b"a SEARCH RETURN (PARTIAL *:1) ALL",
        b"a SEARCH RETURN (PARTIAL 0:5) ALL",
        b"a SEARCH RETURN (PARTIAL -1:5) ALL",
        b"a SEARCH RETURN (PARTIAL 1:2 ALL) ALL",  # RFC 5267 §4.4: PARTIAL or ALL, not both
        b"a SEARCH RETURN (PARTIAL 1:2 PARTIAL 3:4) ALL",
        b"a SEARCH RETURN (UPDATE UPDATE) ALL",
        b"a SEARCH RETURN (FOO) ALL",
        b"a SORT (ARRIVAL) ALL",  # no charset
        b"a SORT () UTF-8 ALL",
        b"a SORT (REVERSE) UTF-8 ALL",
        b"a SORT (ARRIVAL UTF-8 ALL",
        b"a SORT (MODSEQ) UTF-8 ALL",
        b"a THREAD JWZ UTF-8 ALL",
        b"a THREAD REFERENCES UTF-8",
        b"a CANCELUPDATE",
        b"a CANCELUPDATE A001",  # tags are quoted strings (RFC 5267 §5)
        b'a UID CANCELUPDATE "A001"',
    ],
)
def test_refused(line: bytes) -> None:
    """Malformed SORT, THREAD, CANCELUPDATE and RETURN lists are BAD."""
    with pytest.raises(ParseError):
        parse([line])


def test_cancelupdate() -> None:
    """CANCELUPDATE names one or more tags as quoted strings."""
    cmd = parse([b'a CANCELUPDATE "A001" "B 2"'])
    assert isinstance(cmd, CancelUpdate)
    assert cmd.tags == ("A001", "B 2")


@pytest.mark.parametrize(
    ("build", "limit"),
    [
        (lambda n: b"a SORT (" + b" ".join([b"DATE"] * n) + b") UTF-8 ALL", limits.MAX_SORT_CRITERIA),
        (lambda n: b"a SEARCH RETURN (" + b" ".join([b"MIN"] * n) + b") ALL", limits.MAX_RETURN_OPTIONS),
        (lambda n: b"a CANCELUPDATE " + b" ".join([b'"t"'] * n), limits.MAX_RETURN_OPTIONS),
    ],
)
def test_limits(build: Callable[[int], bytes], limit: int) -> None:
    """At the limit a command parses; one past it is BAD naming the limit."""
    parse([build(limit)])
    with pytest.raises(ParseError) as refused:
        parse([build(limit + 1)])
    assert str(limit) in refused.value.text


def test_partial_picks() -> None:
    """A range picks positions from the start, or from the end, and nothing past the result."""
    assert list(Partial(2, 4).pick(5)) == [1, 2, 3]
    assert list(Partial(4, 10).pick(5)) == [3, 4]
    assert list(Partial(6, 6).pick(5)) == []
    assert list(Partial(1, 2, from_end=True).pick(5)) == [3, 4]
    assert list(Partial(4, 10, from_end=True).pick(5)) == [0, 1]
    assert list(Partial(6, 7, from_end=True).pick(5)) == []
    assert Partial(1, 100, from_end=True).spec() == "-1:-100"
