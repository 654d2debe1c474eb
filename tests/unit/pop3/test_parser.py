"""The POP3 command-line parser: each verb's arguments, the errors, and the limits."""

from __future__ import annotations

import base64

import pytest

from relate.pop3.errors import ParseError
from relate.pop3.parser import (
    MAX_MECHANISM_LENGTH,
    MAX_NAME_LENGTH,
    Auth,
    Bare,
    Listing,
    Numbered,
    Pass,
    PlainResponse,
    Top,
    User,
    parse,
    parse_plain,
)


@pytest.mark.parametrize(
    ("line", "command"),
    [
        (b"stat", Bare("STAT")),
        (b"NOOP anything at all", Bare("NOOP")),
        (b"user alice@example.com", User("USER", "alice@example.com")),
        (b"PASS with spaces  inside ", Pass("PASS", "with spaces  inside ")),
        (b"PASS", Pass("PASS", "")),
        (b"AUTH", Auth("AUTH", None, None)),
        (b"auth plain", Auth("AUTH", "PLAIN", None)),
        (b"AUTH PLAIN AGFAYg==", Auth("AUTH", "PLAIN", "AGFAYg==")),
        (b"RETR 7", Numbered("RETR", 7)),
        (b"DELE 0007", Numbered("DELE", 7)),
        (b"LIST", Listing("LIST", None)),
        (b"UIDL 3", Listing("UIDL", 3)),
        (b"TOP 1 0", Top("TOP", 1, 0)),
        (b"TOP 2 " + b"9" * 30, Top("TOP", 2, 10**10)),
    ],
)
def test_commands(line: bytes, command: object) -> None:
    """Well-formed lines become their command, verbs case-insensitive, numbers as ints."""
    assert parse(line) == command


@pytest.mark.parametrize(
    ("line", "text", "verb"),
    [
        (b"\xff\xfe", "Commands are text", None),
        (b"FOO", "Unknown command", None),
        (b"", "Unknown command", None),
        (b"\xef\xac\x86AT", "Unknown command", None),  # the ligature "st" upper-cases to "ST"
        (b"STATS", "Unknown command", None),
        (b"x" * 2000, "Line too long", None),
        (b"USER", "USER takes one argument", "USER"),
        (b"USER a b", "USER takes one argument", "USER"),
        (b"USER " + b"a" * (MAX_NAME_LENGTH + 1), "USER name too long", "USER"),
        (b"AUTH PLAIN x y", "AUTH takes a mechanism and an optional initial response", "AUTH"),
        (b"AUTH " + b"M" * (MAX_MECHANISM_LENGTH + 1), "Unsupported mechanism", "AUTH"),
        (b"RETR", "RETR takes a message number", "RETR"),
        (b"RETR 1 2", "RETR takes a message number", "RETR"),
        (b"RETR x", "No such message", "RETR"),
        ("RETR ²".encode(), "No such message", "RETR"),
        (b"RETR " + b"9" * 900, "No such message", "RETR"),
        (b"LIST -1", "No such message", "LIST"),
        (b"TOP 1", "TOP takes a message number and a line count", "TOP"),
        (b"TOP 1 x", "TOP takes a message number and a line count", "TOP"),
    ],
)
def test_errors(line: bytes, text: str, verb: str | None) -> None:
    """Each refusal says what is wrong and, for a known verb, names it (the session checks the state first)."""
    with pytest.raises(ParseError) as caught:
        parse(line)
    assert caught.value.text == text
    assert caught.value.verb == verb


def test_line_limit_is_the_callers() -> None:
    """The line limit is pop3.max_line_length, passed in."""
    assert parse(b"NOOP " + b"x" * 3000, max_length=4000) == Bare("NOOP")
    with pytest.raises(ParseError, match="Line too long"):
        parse(b"NOOP " + b"x" * 3000, max_length=1000)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (base64.b64encode(b"\0alice@example.com\0key"), PlainResponse("", "alice@example.com", "key")),
        (base64.b64encode(b"a\0b\0c"), PlainResponse("a", "b", "c")),
    ],
)
def test_plain(response: bytes, expected: PlainResponse) -> None:
    """A SASL PLAIN response decodes into authzid, login and key."""
    assert parse_plain(response) == expected


@pytest.mark.parametrize(
    ("response", "line"),
    [
        (b"*", "-ERR Authentication cancelled"),
        (b"not*base64", "-ERR Invalid base64"),
        (b"=", "-ERR [AUTH] Malformed PLAIN response"),
        (base64.b64encode(b"only\0two"), "-ERR [AUTH] Malformed PLAIN response"),
        (base64.b64encode(b"a\0b\0c\0d"), "-ERR [AUTH] Malformed PLAIN response"),
    ],
)
def test_plain_errors(response: bytes, line: str) -> None:
    """Cancelled, undecodable and malformed PLAIN responses are refused with their -ERR line."""
    with pytest.raises(ParseError) as caught:
        parse_plain(response)
    assert caught.value.line == line


def test_numbers_past_pythons_int_limit() -> None:
    """Numbers of 5,000 digits (int() refuses more than 4,300) are no message, or all of TOP's lines."""
    long = b"9" * 5000
    with pytest.raises(ParseError, match="No such message"):
        parse(b"RETR " + long, max_length=10_000)
    assert parse(b"TOP 1 " + long, max_length=10_000) == Top("TOP", 1, 10**10)
    assert parse(b"RETR " + b"0" * 5000 + b"1", max_length=10_000) == Numbered("RETR", 1)
