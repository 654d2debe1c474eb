"""field_addresses: every address a reader could be shown as From or Sender, or None when the header is ambiguous."""

from __future__ import annotations

import time

import pytest

from relate.mail import limits
from relate.mail.mime import field_addresses


def head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\nbody\r\n").encode()


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["From: alice@example.org"], ["alice@example.org"]),
        (["From: Alice Example <alice@example.org>", "Subject: x"], ["alice@example.org"]),
        (["from : =?utf-8?q?Al=C3=AFce?= <alice@example.org>"], ["alice@example.org"]),
        (["From: alice@example.org, Bob <bob@example.org>"], ["alice@example.org", "bob@example.org"]),
        (["From: Team: alice@example.org, bob@example.org;"], ["alice@example.org", "bob@example.org"]),
        (["From: alice@example.org (Alice)", "Sender: other@example.org"], ["alice@example.org"]),
        (["From: Alice <alice@example.org>", " (folded comment)"], ["alice@example.org"]),
        (['From: "alice@example.org" <alice@example.org>'], ["alice@example.org"]),
        (["Subject: no from"], []),
        (["From: undisclosed:;"], []),
        (["From: Jörg <jörg@bücher.example>"], ["jörg@bücher.example"]),
    ],
)
def test_addresses_of_clean_fields(lines: list[str], expected: list[str]) -> None:
    """A clean field gives its addresses in order, once each; an absent field gives []."""
    assert field_addresses(head(*lines), "From") == expected


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (['From: "bob@example.org" <mallory@example.net>'], ["mallory@example.net", "bob@example.org"]),
        (["From: bob@example.org <mallory@example.net>"], ["mallory@example.net", "bob@example.org"]),
        (["From: mallory@example.net (bob@example.org)"], ["mallory@example.net", "bob@example.org"]),
        (["From: =?utf-8?q?bob=40example.org?= <mallory@example.net>"], ["mallory@example.net", "bob@example.org"]),
        (["From: Bob \uff20 <mallory@example.net>"], ["mallory@example.net"]),
        (["From: bob\uff20example.org <mallory@example.net>"], ["mallory@example.net", "bob\uff20example.org"]),
        (["From: mallory@example.net", "From: bob@example.org"], ["mallory@example.net", "bob@example.org"]),
        (["From: Bob:;", "From: x@example.org"], ["x@example.org"]),
        (["From: =?utf-8?q?bob=40example.org?=:;"], ["bob@example.org"]),
    ],
)
def test_what_a_reader_could_take_for_the_sender_is_listed(lines: list[str], expected: list[str]) -> None:
    """Addresses shown as display names, comments or in a second From field are listed too."""
    assert field_addresses(head(*lines), "From") == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"From: a <b" + b"(" * 500 + b"\r\n\r\n",  # issue 12: RecursionError in the email package
        b"From: (" * 20 + b"a@b.example" + b")" * 20 + b"\r\n\r\n",
        b"From: " + b"(" * (limits.MAX_NESTING + 1) + b")" * (limits.MAX_NESTING + 1) + b" a@b.example\r\n\r\n",
        b'From: "alice <alice@example.org>\r\n\r\n',
        b"From: Alice <alice@example.org\r\n\r\n",
        b"From: Alice alice@example.org>\r\n\r\n",
        b"From: Alice <<alice@example.org>>\r\n\r\n",
        b"From: <@relay.example:alice@example.org>\r\n\r\n",
        b"From: Alice <alice@example.org> mallory@example.net\r\n\r\n",
        b"From: alice@example.org@example.net\r\n\r\n",
        b"From: <=?utf-8?q?alice?=@example.org>\r\n\r\n",
        b"From: alice@example.org\r\nnot a header line\r\nFrom: mallory@example.net\r\n\r\n",
        b" continued first\r\nFrom: alice@example.org\r\n\r\n",
        b"From alice@example.org Mon Jul  7 09:15:00 2025\r\nFrom: alice@example.org\r\n\r\n",
        b"From: alice@example.org\rFrom: mallory@example.net\r\n\r\n",
        b"From: alice@example.org\x00mallory@example.net\r\n\r\n",
        b"From: alice@example.org\x1b\r\n\r\n",
        b"From: J\xf6rg <alice@example.org>\r\n\r\n",  # not UTF-8
        b"From: " + b"a@b.example, " * (limits.MAX_ADDRESSES + 1) + b"\r\n\r\n",
        b"From: (" + b"x" * limits.MAX_SENDER_FIELD_BYTES + b") a@b.example\r\n\r\n",
        b"From: (" + b"x" * (limits.MAX_SENDER_FIELD_BYTES // 2) + b") a@b.example\r\n" * 2 + b"\r\n",
        b"From: a@b.example\r\n" * (limits.MAX_FIELDS + 1) + b"\r\n",
        b"From: " + b" ".join([b"=?utf-8?q?x?="] * (limits.MAX_ENCODED_WORDS + 1)) + b" <a@b.example>\r\n\r\n",
    ],
)
def test_ambiguous_or_malformed_headers_give_none(raw: bytes) -> None:
    """Unbalanced, too deep, routed, trailing, hidden, unreadable or over-limit From fields give None."""
    assert field_addresses(raw, "From") is None


def test_long_but_reasonable_field_is_read() -> None:
    """A From field just under MAX_SENDER_FIELD_BYTES is still read."""
    padding = b"x" * (limits.MAX_SENDER_FIELD_BYTES - 30)
    assert field_addresses(b"From: (" + padding + b") a@b.example\r\n\r\n", "From") == ["a@b.example"]


def test_sender_is_read_like_from() -> None:
    """Sender is read with the same rules; absent, it gives []."""
    raw = head("From: alice@example.org", "Sender: Bob (bob@example.org) <mallory@example.net>")
    assert field_addresses(raw, "Sender") == ["mallory@example.net", "bob@example.org"]
    assert field_addresses(head("From: alice@example.org"), "Sender") == []


def test_only_the_header_section_is_read() -> None:
    """A From line in the body (after the empty line) is not the header's; bare LF messages work too."""
    assert field_addresses(b"From: a@b.example\r\n\r\nFrom: mallory@example.net\r\n", "From") == ["a@b.example"]
    assert field_addresses(b"From: a@b.example\n\nFrom: mallory@example.net\n", "From") == ["a@b.example"]


def test_a_field_name_is_required() -> None:
    """Asking for something that is not a field name is a programming error."""
    with pytest.raises(ValueError, match="field name"):
        field_addresses(b"From: a@b.example\r\n\r\n", "From:")


@pytest.mark.parametrize(
    "raw",
    [
        b"From: a <b" + b"(" * (256 * 1024) + b"\r\n\r\n",
        b"From: " + b"\r\n ".join(b"=?utf-8?q?caf=C3=A9?=" for _ in range(12_000)) + b" <a@b.example>\r\n\r\n",
        b"X-Filler: x\r\n" * 20_000 + b"From: a@b.example\r\n\r\n",
    ],
    ids=["nested-comments", "encoded-words", "many-fields"],
)
def test_256_kib_hostile_header_is_judged_in_well_under_a_second(raw: bytes) -> None:
    """A 256 KiB hostile header is judged in well under a CPU second (the SMTP daemon calls this on its event loop)."""
    start = time.thread_time()
    field_addresses(raw, "From")
    assert time.thread_time() - start < 1.0
