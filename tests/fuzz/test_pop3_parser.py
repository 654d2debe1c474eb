"""Property tests of the POP3 command-line parser and the SASL PLAIN decoder: only ParseError comes out."""

from __future__ import annotations

import base64

from hypothesis import example, given
from hypothesis import strategies as st

from relate.pop3.errors import ParseError
from relate.pop3.parser import GRAMMAR, MAX_NUMBER_DIGITS, Command, Listing, Numbered, Top, parse, parse_plain

LIMIT = 20_000  # past int()'s 4,300 digits: pop3.max_line_length may be set that high
VERBS = sorted(GRAMMAR)


def _outcome(line: bytes) -> Command | ParseError:
    try:
        return parse(line, max_length=LIMIT)
    except ParseError as exc:
        return exc


@given(st.binary(max_size=LIMIT + 10))
@example(b"TOP 1 0")  # a line count of zero once reached int("")
@example(b"RETR " + b"9" * 5000)  # int() refuses more than 4,300 digits
@example(b"TOP 1 " + b"9" * 5000)
@example(b"RETR " + b"0" * 5000 + b"1")
@example("ﬆat".encode())  # upper() of the ligature is "ST"
@example(b"USER\x00alice")
@example("RETR ²".encode())
@example(b"\xff\xfe\xfd")
def test_any_bytes(line: bytes) -> None:
    """Any bytes parse into a command of the grammar or raise ParseError, whose -ERR line is one line."""
    outcome = _outcome(line)
    if isinstance(outcome, ParseError):
        assert outcome.line.startswith("-ERR ")
        assert "\r" not in outcome.line
        assert "\n" not in outcome.line
        assert outcome.verb is None or outcome.verb in GRAMMAR
    else:
        assert outcome.verb in GRAMMAR
        assert line.split(b" ", 1)[0].upper() == outcome.verb.encode()


_ARGUMENT = st.one_of(
    st.text(max_size=40),
    st.integers(min_value=-5, max_value=10**12).map(str),
    st.text(alphabet="0123456789", min_size=1, max_size=6000),
    st.sampled_from(["", " ", "²", "١", "１", "*", "=", "PLAIN", "\x00"]),
)


@given(st.sampled_from(VERBS), st.lists(_ARGUMENT, max_size=4), st.booleans())
def test_verbs_with_any_arguments(verb: str, args: list[str], lower: bool) -> None:
    """Every verb with any arguments parses or raises ParseError naming that verb."""
    line = " ".join([verb.lower() if lower else verb, *args]).encode("utf-8", "surrogatepass")
    outcome = _outcome(line)
    if isinstance(outcome, ParseError):
        assert outcome.verb in (verb, None)  # None: the line was too long or not UTF-8
    else:
        assert outcome.verb == verb


@given(
    st.sampled_from(["RETR", "DELE", "LIST", "UIDL", "TOP"]),
    st.integers(min_value=0, max_value=10**MAX_NUMBER_DIGITS - 1),
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=50),
)
def test_numbers_round_trip(verb: str, number: int, lines: int, zeros: int) -> None:
    """A number as a client writes it (leading zeros allowed) comes back as that number."""
    text = "0" * zeros + str(number)
    if verb == "TOP":
        assert parse(f"TOP {text} {lines}".encode()) == Top("TOP", number, lines)
    elif verb in ("LIST", "UIDL"):
        assert parse(f"{verb} {text}".encode()) == Listing(verb, number)
    else:
        assert parse(f"{verb} {text}".encode()) == Numbered(verb, number)


@given(st.binary(max_size=4096))
@example(b"*")
@example(b"=")
@example(base64.b64encode(b"a\0b\0c\0d"))
def test_plain_any_bytes(response: bytes) -> None:
    """Any SASL PLAIN response decodes into three fields or raises ParseError."""
    try:
        plain = parse_plain(response)
    except ParseError as exc:
        refused = exc
    else:
        assert "\x00" not in plain.authzid + plain.login + plain.key
        return
    assert refused.verb == "AUTH"


_FIELD = st.text(alphabet=st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=100)


@given(_FIELD, _FIELD, _FIELD)
def test_plain_round_trip(authzid: str, login: str, key: str) -> None:
    """What a client encodes (authzid NUL login NUL key, base64) decodes to the same three fields."""
    response = base64.b64encode(f"{authzid}\0{login}\0{key}".encode())
    assert parse_plain(response) == (authzid, login, key)
