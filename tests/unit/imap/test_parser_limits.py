"""The parser's bounds (relate.imap.limits): at the limit a command parses, one past it is a ParseError naming it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from relate.imap import limits
from relate.imap.errors import ParseError
from relate.imap.parser import Fetch, Literal, Part, parse


def _keys(n: int) -> bytes:
    return b"a SEARCH " + b" ".join([b"SEEN"] * n)


def _patterns(n: int) -> bytes:
    return b'a LIST "" (' + b" ".join(b"p%d" % i for i in range(n)) + b")"


def _fetch_items(n: int) -> bytes:
    return b"a FETCH 1 (" + b" ".join([b"FLAGS"] * n) + b")"


def _fields(n: int) -> bytes:
    return b"a FETCH 1 BODY[HEADER.FIELDS (" + b" ".join(b"F%d" % i for i in range(n)) + b")]"


def _depth(n: int) -> bytes:
    return b"a FETCH 1 BODY[" + b".".join([b"1"] * n) + b"]"


def _flags(n: int) -> bytes:
    return b"a STORE 1 +FLAGS (" + b" ".join(b"k%d" % i for i in range(n)) + b")"


def _keyword(n: int) -> bytes:
    return b"a STORE 1 +FLAGS (" + b"k" * n + b")"


def _id_params(n: int) -> bytes:
    return b"a ID (" + b" ".join(b'"f%d" "v"' % i for i in range(n)) + b")"


def _id_value(n: int) -> bytes:
    return b'a ID ("name" "' + b"v" * n + b'")'


def _credential(n: int) -> bytes:
    return b"a LOGIN bob " + b"k" * n


def _nesting(n: int) -> bytes:
    return b"a SEARCH " + b"(" * (n - 1) + b"ALL" + b")" * (n - 1)


def _pattern_length(n: int) -> bytes:
    return b'a LIST "" "' + b"x" * n + b'"'


def _status_items(n: int) -> bytes:
    return b"a STATUS INBOX (" + b" ".join([b"MESSAGES"] * n) + b")"


def _enable(n: int) -> bytes:
    return b"a ENABLE " + b" ".join([b"X"] * n)


def _append_messages(n: int) -> bytes:
    return b"a APPEND INBOX " + b" ".join([b'CATENATE (URL "/INBOX/;UID=1")'] * n)


def _catenate_parts(n: int) -> bytes:
    return b"a APPEND INBOX CATENATE (" + b" ".join([b'URL "/INBOX/;UID=1"'] * n) + b")"


def _url_length(n: int) -> bytes:
    return b'a APPEND INBOX CATENATE (URL "/INBOX/;UID=1/;PARTIAL=' + b"0" * (n - 23) + b'")'


@pytest.mark.parametrize(
    ("build", "limit"),
    [
        (_keys, limits.MAX_SEARCH_KEYS),
        (_nesting, limits.MAX_NESTING),
        (_patterns, limits.MAX_LIST_PATTERNS),
        (_pattern_length, limits.MAX_PATTERN_LENGTH),
        (_fetch_items, limits.MAX_FETCH_ITEMS),
        (_fields, limits.MAX_HEADER_FIELDS),
        (_depth, limits.MAX_SECTION_DEPTH),
        (_flags, limits.MAX_FLAGS),
        (_keyword, limits.MAX_KEYWORD_LENGTH),
        (_id_params, limits.MAX_ID_PARAMS),
        (_id_value, limits.MAX_ID_VALUE),
        (_credential, limits.MAX_CREDENTIAL),
        (_status_items, limits.MAX_STATUS_ITEMS),
        (_enable, limits.MAX_ENABLE),
        (_append_messages, limits.MAX_APPEND_MESSAGES),
        (_catenate_parts, limits.MAX_CATENATE_PARTS),
        (_url_length, limits.MAX_URL_LENGTH),
    ],
)
def test_limit(build: Callable[[int], bytes], limit: int) -> None:
    """Exactly at the limit parses; one past it is BAD with the limit in the text."""
    parse([build(limit)])
    with pytest.raises(ParseError) as refused:
        parse([build(limit + 1)])
    assert str(limit) in refused.value.text


@pytest.mark.parametrize(
    "parts",
    [
        [b'a SELECT "a\x00b"'],
        [b"a SELECT ", Literal(b"a\x00b", size=3), b""],
        [b"a LOGIN ", Literal(b"bob", binary=True, size=3), b" key"],
        [b'a APPEND INBOX "07-Dec-2026 10:00:00 +9999" ', Literal(b"x", size=1), b""],
        [b'a APPEND INBOX "07-Dec-2026 10:00:00 -2400" ', Literal(b"x", size=1), b""],
    ],
)
def test_refused_strings_and_dates(parts: list[Part]) -> None:
    """NUL in a string, a literal8 as a string, and a zone a day or more from UTC are ParseErrors."""
    with pytest.raises(ParseError):
        parse(parts)


def test_sequence_set_spans_without_counting() -> None:
    """UID FETCH 1:4294967295 parses to one range, whatever it spans."""
    cmd = parse([b"a UID FETCH 1:4294967295,2,3:* FLAGS"])
    assert isinstance(cmd, Fetch)
    assert list(cmd.seqset.resolve(4294967295)) == [(1, 4294967295)]
