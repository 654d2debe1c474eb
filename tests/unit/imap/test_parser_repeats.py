"""Repeated commands (parse remembers what follows the tag): the answer of a first parse, never a wrong one."""

from __future__ import annotations

import pytest

from relate.imap import parser
from relate.imap.errors import ParseError
from relate.imap.parser import Fetch, Login, parse


def test_a_repeat_parses_to_the_same_command_with_its_own_tag() -> None:
    """The second FETCH with the same text equals a fresh parse, with the second tag; the first is untouched."""
    first = parse([b"a1 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From)])"])
    second = parse([b"b2 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From)])"])
    assert isinstance(second, Fetch)
    assert second.tag == "b2"
    assert first.tag == "a1"
    assert second == parser._parse([b"b2 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From)])"], utf8=False)


def test_a_bad_tag_before_remembered_text_is_still_refused() -> None:
    """A tag the grammar forbids ('+', '(' or non-ASCII without UTF-8) is a ParseError, remembered text or not."""
    parse([b"a NOOP"])
    for line in (b"+ NOOP", b"a(b NOOP", b"\xc3\xa9 NOOP", b" NOOP"):
        with pytest.raises(ParseError):
            parse([line])
    assert parse([b"\xc3\xa9 NOOP"], utf8=True).tag == "\ufffd\ufffd"  # UTF-8 allows it (shown as ASCII, replaced)


def test_the_session_flag_keeps_repeats_apart() -> None:
    """Text parsed without UTF-8 is not answered from what was parsed with it, and the other way round."""
    parse([b"a STATUS \xc3\xa9 (MESSAGES)"], utf8=True)
    with pytest.raises(ParseError):
        parse([b"b STATUS \xc3\xa9 (MESSAGES)"], utf8=False)


def test_credentials_are_never_remembered() -> None:
    """LOGIN is parsed afresh each time and its password never kept in the parser's memory."""
    cmd = parse([b"a LOGIN bob secret-password"])
    assert isinstance(cmd, Login)
    assert not any(b"secret-password" in text for text, _ in parser._remembered)


def test_memory_is_bounded() -> None:
    """However many different commands come, at most _REMEMBER are kept."""
    for n in range(parser._REMEMBER + 50):
        parse([b"a FETCH %d (FLAGS)" % (n + 1)])
    assert len(parser._remembered) <= parser._REMEMBER
    assert parse([b"z FETCH 7 (FLAGS)"]).tag == "z"
