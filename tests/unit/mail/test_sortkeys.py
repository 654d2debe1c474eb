"""SORT keys from a message's subject and ENVELOPE (relate.mail.sortkeys), as parse_message gives them."""

from __future__ import annotations

import pytest

from relate.mail.mime import parse_message
from relate.mail.sortkeys import MAX_ADDRESS_KEY, MAX_SUBJECT_KEY, sort_keys


def keys_of(*header: str) -> tuple[str, ...]:
    parsed = parse_message(("\r\n".join(header) + "\r\n\r\nbody\r\n").encode())
    k = sort_keys(parsed.subject, parsed.envelope)
    return k.subject, k.from_, k.to, k.cc, k.display_from, k.display_to


@pytest.mark.parametrize(
    ("field", "mailbox", "display"),
    [
        ("foo bar <user2@domain2.org>", "USER2", "FOO BAR"),
        ("user2@domain1.org", "USER2", "USER2@DOMAIN1.ORG"),
        ("user2@domain2.org (foo bar)", "USER2", "FOO BAR"),  # a comment names the address, as in the ENVELOPE
        ("user2: blah@domain1.org;", "USER2", "USER2"),  # a group: its name, as the ENVELOPE's group start
        ("empty:;", "EMPTY", "EMPTY"),
        ("d", "D", "D"),  # no domain: the mailbox alone
        ("=?iso-8859-1?q?foo_aar?= <e@f.g>", "E", "FOO AAR"),  # RFC 2047 names are decoded (RFC 5957)
        ('"Zoë Q" <z@q.example>, a@b.example', "Z", "ZOë Q"),  # the first address only
    ],
)
def test_address_keys(field: str, mailbox: str, display: str) -> None:
    """FROM/TO/CC compare the first addr-mailbox; DISPLAYFROM/DISPLAYTO its decoded name, else its address."""
    _, from_, to, cc, display_from, display_to = keys_of(f"From: {field}", f"To: {field}", f"Cc: {field}")
    assert from_ == to == cc == mailbox
    assert display_from == display_to == display


def test_missing_fields_are_empty() -> None:
    """No Subject, From, To or Cc: every key is the empty string (they sort first)."""
    assert keys_of("X-Other: 1") == ("", "", "", "", "", "")


def test_keys_are_bounded() -> None:
    """A subject keeps at most MAX_SUBJECT_KEY characters, a name or mailbox MAX_ADDRESS_KEY."""
    subject, from_, _, _, display_from, _ = keys_of(
        "Subject: " + "s" * 5000, 'From: "' + "n" * 5000 + f'" <{"m" * 99}@b.c>'
    )
    assert subject == "S" * MAX_SUBJECT_KEY
    assert display_from == "N" * MAX_ADDRESS_KEY
    assert from_ == "M" * MAX_ADDRESS_KEY
