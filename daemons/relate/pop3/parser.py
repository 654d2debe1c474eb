"""POP3 command lines parsed into immutable commands (RFC 1939 §3, RFC 2449 §4, RFC 5034 §4). Pure: no I/O.

A command line is a keyword, case-insensitive, then arguments separated by
single spaces. :func:`parse` checks the line against the grammar of its verb
(:data:`GRAMMAR`) and returns one of the command types below, or raises
:class:`~relate.pop3.errors.ParseError`, the only exception it raises. The
session checks the state first for a known verb with bad arguments (the error
carries the verb), so a client hears "not allowed now" before "takes a message
number", as it always did.

Every parse is linear in the line and bounded by the limits below: the line
(``pop3.max_line_length``, which the reader enforces too), the keyword (four
ASCII letters), the number of arguments, a login name, a SASL mechanism name,
and the digits of a number (Python refuses ``int()`` of more than 4,300 digits,
and no maildrop has ten thousand million messages).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import NamedTuple

from relate.pop3.errors import ParseError

MAX_LINE_LENGTH = 1024  # the default of pop3.max_line_length; RFC 2449 §4 asks for at least 255 octets
MAX_VERB_LENGTH = 4  # RFC 1939 §3: keywords are three or four characters
MAX_NAME_LENGTH = 255  # USER: an address is at most 254 octets (RFC 5321 §4.5.3.1.3)
MAX_MECHANISM_LENGTH = 20  # RFC 4422 §3.1: SASL mechanism names are 1 to 20 characters
MAX_NUMBER_DIGITS = 10  # message numbers and TOP's line count, leading zeros aside
_MANY_LINES = 10**MAX_NUMBER_DIGITS  # TOP's line count past MAX_NUMBER_DIGITS: the whole body


class Bare(NamedTuple):
    """A command whose arguments, if any, are ignored: CAPA, STLS, STAT, NOOP, RSET, QUIT."""

    verb: str


class User(NamedTuple):
    """USER name (RFC 1939 §7)."""

    verb: str
    name: str


class Pass(NamedTuple):
    """PASS secret: the rest of the line, spaces included (RFC 1939 §7)."""

    verb: str
    secret: str


class Auth(NamedTuple):
    """AUTH [mechanism [initial-response]] (RFC 5034 §4); no mechanism: list them."""

    verb: str
    mechanism: str | None
    initial: str | None


class Numbered(NamedTuple):
    """RETR n, DELE n (RFC 1939 §5)."""

    verb: str
    number: int


class Listing(NamedTuple):
    """LIST [n], UIDL [n] (RFC 1939 §5, §7): every message, or one."""

    verb: str
    number: int | None


class Top(NamedTuple):
    """TOP n lines (RFC 1939 §7)."""

    verb: str
    number: int
    lines: int


Command = Bare | User | Pass | Auth | Numbered | Listing | Top


class PlainResponse(NamedTuple):
    """A decoded SASL PLAIN response (RFC 4616 §2)."""

    authzid: str
    login: str
    key: str


def _number(verb: str, text: str) -> int:
    """A message number: ASCII digits only, at most MAX_NUMBER_DIGITS of them after leading zeros."""
    if len(text) <= MAX_NUMBER_DIGITS and text.isdigit() and text.isascii():
        return int(text)  # the common case, first: every command of a download goes through here
    digits = text.lstrip("0")
    if not (text.isascii() and text.isdigit()) or len(digits) > MAX_NUMBER_DIGITS:
        raise ParseError("No such message", verb)
    return int(digits or "0")


def _args(rest: str, most: int) -> list[str]:
    """The arguments, split at single spaces; at most ``most`` + 1 pieces (the last one unsplit)."""
    return rest.split(" ", most) if rest else []


def _bare(verb: str, rest: str) -> Command:
    return _BARE[verb]


def _user(verb: str, rest: str) -> Command:
    args = _args(rest, 1)
    if len(args) != 1 or not args[0]:
        raise ParseError("USER takes one argument", verb)
    if len(args[0]) > MAX_NAME_LENGTH:
        raise ParseError("USER name too long", verb)
    return User(verb, args[0])


def _pass(verb: str, rest: str) -> Command:
    return Pass(verb, rest)


def _auth(verb: str, rest: str) -> Command:
    args = _args(rest, 2)
    if not args:
        return Auth(verb, None, None)
    if len(args) > 2 or not args[0]:
        raise ParseError("AUTH takes a mechanism and an optional initial response", verb)
    if len(args[0]) > MAX_MECHANISM_LENGTH:
        raise ParseError("Unsupported mechanism", verb)
    return Auth(verb, args[0].upper(), args[1] if len(args) == 2 else None)


def _numbered(verb: str, rest: str) -> Command:
    if not rest or " " in rest:
        raise ParseError(f"{verb} takes a message number", verb)
    return Numbered(verb, _number(verb, rest))


def _listing(verb: str, rest: str) -> Command:
    # Arguments past the first are ignored, as they always were.
    return Listing(verb, _number(verb, _args(rest, 1)[0]) if rest else None)


def _top(verb: str, rest: str) -> Command:
    args = _args(rest, 2)
    if len(args) != 2 or not (args[1].isascii() and args[1].isdigit()):
        raise ParseError("TOP takes a message number and a line count", verb)
    number = _number(verb, args[0])
    lines = args[1].lstrip("0") or "0"
    return Top(verb, number, int(lines) if len(lines) <= MAX_NUMBER_DIGITS else _MANY_LINES)


#: Every verb of the grammar and how its arguments are read; commands.COMMANDS has each one's handler,
#: allowed states and RFC section.
GRAMMAR: dict[str, Callable[[str, str], Command]] = {
    "CAPA": _bare,
    "STLS": _bare,
    "USER": _user,
    "PASS": _pass,
    "AUTH": _auth,
    "STAT": _bare,
    "LIST": _listing,
    "UIDL": _listing,
    "RETR": _numbered,
    "TOP": _top,
    "DELE": _numbered,
    "NOOP": _bare,
    "RSET": _bare,
    "QUIT": _bare,
}
_BARE = {verb: Bare(verb) for verb, build in GRAMMAR.items() if build is _bare}


def parse(line: bytes, *, max_length: int = MAX_LINE_LENGTH) -> Command:
    """One command line, without its CRLF, as a command; ParseError if it is not one."""
    if len(line) > max_length:
        raise ParseError("Line too long")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("Commands are text") from None
    verb, _, rest = text.partition(" ")
    build = GRAMMAR.get(verb)  # most clients write verbs in upper case
    if build is None:
        # ASCII only before upper(): "ﬆat".upper() is "STAT".
        verb = verb.upper() if len(verb) <= MAX_VERB_LENGTH and verb.isascii() else ""
        build = GRAMMAR.get(verb)
        if build is None:
            raise ParseError("Unknown command")
    return build(verb, rest)


def parse_plain(response: bytes) -> PlainResponse:
    """A client's SASL PLAIN response, base64 (RFC 4616 §2, RFC 5034 §4); ``=`` is an empty one, ``*`` cancels.

    Raises ParseError: cancelled, not base64, or not ``authzid NUL login NUL key``.
    """
    if response == b"*":
        raise ParseError("Authentication cancelled", "AUTH")
    try:
        decoded = base64.b64decode(response if response != b"=" else b"", validate=True)
    except (binascii.Error, ValueError):
        raise ParseError("Invalid base64", "AUTH") from None
    pieces = decoded.split(b"\x00", 3)
    if len(pieces) != 3:
        raise ParseError("Malformed PLAIN response", "AUTH", code="AUTH")
    authzid, login, key = (p.decode("utf-8", "replace") for p in pieces)
    return PlainResponse(authzid, login, key)
