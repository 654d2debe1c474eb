"""Submission's From/Sender reader: whatever header a client sends, addresses or "unreadable" come out, quickly."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from relate.smtp import headers

NESTED_FROM = b"From: a <b" + b"(" * 500 + b"\r\n\r\n"
HOSTILE_SUBJECT = b"From: a@b.example\r\nSubject: " + b"\r\n ".join([b"=?utf-8?b?w6k=?="] * 13000) + b"\r\n\r\n"

_PIECES = st.sampled_from(
    [
        *(b"From:", b"Sender:", b"from: ", b"\r\n", b"\n", b"\r\n ", b"\t", b"(", b")", b"<", b">", b'"', b"\\"),
        *(b",", b";", b"@", b"a", b"alice@example.com", b"=?utf-8?q?x?=", b":", b"\x00", b"\xff", b"\xc3\xa9", b" "),
    ]
)


def _check(head: bytes) -> None:
    named = headers.named_addresses(head)
    if named is None:
        assert len(head) >= headers.MAX_HEADER_SECTION
        return
    assert set(named) == set(headers.FIELDS)
    for found in named.values():
        assert found is None or all(isinstance(a, str) and a for a in found)


@given(st.binary(max_size=3000))
@example(NESTED_FROM)
@example(HOSTILE_SUBJECT)
@example(b"From: alice@example.com)<bob@example.com>\r\n\r\n")
@example(b"Sender: " + b"alice@example.com,\r\n " * 2000 + b"\r\n\r\n")
@example(b"From: " + b"(" * 60 + b"x" + b")" * 60 + b" alice@example.com\r\n\r\n")
@example(b"From: <>\r\nSender: <>\r\n\r\n")
@example(b"From: \r\n\r\n")
@example(b"From:From:;From:\r\n\r\n")  # AttributeError inside the email package's header registry
def test_any_header_gives_addresses_or_unreadable(head: bytes) -> None:
    """Any bytes as a header give, for From and Sender, a set of addresses or None (unreadable); nothing raises."""
    _check(head)


@given(st.lists(_PIECES, max_size=300))
def test_header_shaped_input_gives_addresses_or_unreadable(pieces: list[bytes]) -> None:
    """Headers made of the address grammar's pieces give addresses or None, never an exception."""
    _check(b"".join(pieces) + b"\r\n\r\n")


def test_an_ordinary_from_and_sender_are_read() -> None:
    """'From: Alice <alice@example.com>' and 'Sender: al@example.com' name exactly those addresses."""
    named = headers.named_addresses(b"From: Alice <alice@example.com>\r\nSender: al@example.com\r\n\r\nbody")
    assert named == {"from": {"alice@example.com"}, "sender": {"al@example.com"}}
