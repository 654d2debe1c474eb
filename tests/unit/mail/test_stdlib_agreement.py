"""Relate Mail's own header parsers read ordinary mail exactly as the email package does.

parse_message no longer calls the email package's header parsers (recursive,
quadratic on hostile input); on ordinary headers, where the email package is
fast and right, both must agree. Messages are written by the email package
itself (encoded words, folding, RFC 2231 file names), so the corpus is what
real mailers produce.
"""

from __future__ import annotations

import email
import email.utils
import random
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.headerregistry import Address as StdAddress
from email.message import EmailMessage
from typing import Any

import pytest

from relate.mail.encoded_words import decode
from relate.mail.mime import parse_message
from relate.mail.structured import parse_address_list, parse_parameters

NAMES = ["Alice", "Bob Smith", "Smith, John", "Jörg Müller", "山田 太郎", "O'Brien", 'The "Boss"', "Zoë (work)", "a.b"]
LOCALS = ["alice", "bob.smith", "j+tag", "o'brien", "x_y-z"]
DOMAINS = ["example.org", "mail.example.net", "xn--bcher-kva.example"]
WORDS = [
    "Grüße",
    "aus",
    "Köln",
    "price:",
    "€100",
    "日本語",
    "re:",
    "(draft)",
    "a,b",
    "=?not?encoded?=",
    "naïve",
    "tab\tsep",
]


def _address(rng: random.Random) -> StdAddress:
    return StdAddress(display_name=rng.choice([*NAMES, ""]), username=rng.choice(LOCALS), domain=rng.choice(DOMAINS))


def _message(rng: random.Random) -> bytes:
    msg = EmailMessage()
    msg["From"] = _address(rng)
    msg["To"] = [_address(rng) for _ in range(rng.randint(1, 4))]
    if rng.random() < 0.5:
        msg["Cc"] = [_address(rng) for _ in range(rng.randint(1, 3))]
    msg["Subject"] = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40)))
    when = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 10**8))
    zone = rng.choice([UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=30))])
    msg["Date"] = email.utils.format_datetime(when.astimezone(zone))
    msg["Message-ID"] = email.utils.make_msgid(domain="example.org")
    msg.set_content(" ".join(rng.choice(WORDS) for _ in range(50)))
    for _ in range(rng.randint(0, 2)):
        name = rng.choice(["report.pdf", "résumé 2025.pdf", "日本語のファイル.txt", "a;b=c.bin", "x" * 90 + ".dat"])
        msg.add_attachment(rng.randbytes(100), "application", "octet-stream", filename=name)
    return msg.as_bytes(policy=policy.SMTP)


def _std(raw: bytes) -> dict[str, Any]:
    msg = email.message_from_bytes(raw, policy=policy.default)

    def people(name: str) -> list[tuple[str | None, str]]:
        header = msg[name]
        return [] if header is None else [(a.display_name or None, a.addr_spec) for a in header.addresses]

    return {
        "subject": str(msg["Subject"]),
        "from": people("From"),
        "to": people("To"),
        "cc": people("Cc"),
        "date": msg["Date"].datetime,
        "message_id": str(msg["Message-ID"]),
        "filenames": [part.get_filename() for part in msg.iter_attachments()],
        "types": [(part.get_content_type(), dict(part["Content-Type"].params)) for part in msg.walk()],
    }


def _ours(raw: bytes) -> dict[str, Any]:
    parsed = parse_message(raw)

    def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
        return [node] + [n for child in node.get("parts", []) for n in nodes(child)]

    return {
        "subject": parsed.subject,
        "from": [(a.name, a.email) for a in parsed.from_],
        "to": [(a.name, a.email) for a in parsed.to],
        "cc": [(a.name, a.email) for a in parsed.cc],
        "date": parsed.date,
        "message_id": parsed.message_id,
        "filenames": [a.filename for a in parsed.attachments],
        "types": [(f"{n['type']}/{n['subtype']}", dict(n["params"])) for n in nodes(parsed.bodystructure)],
    }


def test_messages_written_by_the_email_package_read_the_same() -> None:
    """On 150 generated messages, subject, addresses, date, ids, file names and content types agree."""
    rng = random.Random(20261207)
    for _ in range(150):
        raw = _message(rng)
        assert _ours(raw) == _std(raw), raw.decode("ascii", "replace")


SUBJECTS = [
    "=?utf-8?q?caf=C3=A9?=",
    "a =?utf-8?q?caf=C3=A9?= b",
    "=?utf-8?q?a?= =?utf-8?q?b?=",
    "=?utf-8?q?a?=\t=?iso-8859-1?q?=E9?=",
    "=?UTF-8?B?UHLDvGZiZXJpY2h0IGbDvHI=?= =?UTF-8?Q?_M=C3=A4rz?=",
    "=?iso-2022-jp?b?GyRCRnxLXDhsGyhC?=",
    "=?koi8-r?b?8NLJ18XU?=",
    "=?windows-1252?q?=93quoted=94?=",
    "Re: [list] =?utf-8?q?Gr=C3=BC=C3=9Fe?= aus =?utf-8?b?S8O2bG4=?=",
    "x=?utf-8?q?a?=y",
    "=?utf-8?b?Y2Fmw6k?=",
    "=?utf-8*en?q?a?=",
    "=?bogus?q?caf=C3=A9?=",
    "=?us-ascii?q?caf=E9?=",
    "no encoded words at all",
    "  leading and  double  spaces",
]


def test_long_folded_display_name_reads_back_as_written() -> None:
    """A display name the email package folds into several encoded words reads back as written.

    (The email package's own reading inserts stray spaces between those words.)
    """
    name = " ".join(["Ünïcödé"] * 8)
    msg = EmailMessage()
    msg["From"] = StdAddress(display_name=name, username="u", domain="example.org")
    raw = msg.as_bytes(policy=policy.SMTP)
    assert raw.count(b"=?utf-8?") > 1
    assert [(a.name, a.email) for a in parse_message(raw).from_] == [(name, "u@example.org")]


@pytest.mark.parametrize("value", SUBJECTS)
def test_encoded_words_decode_as_the_email_package_decodes_them(value: str) -> None:
    """Ordinary and slightly irregular encoded-word subjects decode exactly as the email package decodes them."""
    assert decode(value) == str(policy.default.header_factory("subject", value))


ADDRESS_LISTS = [
    "alice@example.org",
    "Alice <alice@example.org>",
    '"Smith, John" <john@example.org>, jane@example.org',
    "J.  Smith\t<j.smith@example.org>",
    '"A \\"quoted\\" name" <q@example.org>',
    "=?UTF-8?Q?Al=C3=AFce?= <alice@example.org>",
    "Alice <alice@example.org> (work)",
    "alice@example.org (Alice)",
    "a @ example.org",
    "Team: a@example.org, b@example.org;",
    "a@[127.0.0.1]",
    '"bob smith"@example.com',
    "<@relay.example:bob@example.com>",
    "Jörg <jörg@bücher.example>",
    "Mary Smith <mary@x.test>, jdoe@example.org, Who? <one@y.test>",
]


@pytest.mark.parametrize("value", ADDRESS_LISTS)
def test_address_lists_read_as_the_email_package_reads_them(value: str) -> None:
    """Ordinary address lists give the names and addresses email.utils.getaddresses gives."""
    ours = [(decode(name), addr) for _, members in parse_address_list(value).groups for name, addr in members]
    theirs = [(decode(name), addr) for name, addr in email.utils.getaddresses([value]) if name or addr]
    assert ours == theirs


CONTENT_TYPES = [
    "text/plain",
    'Text/HTML; Charset="UTF-8"',
    'multipart/mixed; boundary="----=_Part_1234_5678.1700000000000"',
    "text/plain ; format=flowed; delsp=yes",
    'application/pdf; name="Q3 report (final).pdf"',
    "text/plain; (comment) charset=us-ascii",
    "text/plain; charset=us-ascii (comment)",
    'text/plain; name="a\\"b"',
    'text/plain; name="=?utf-8?q?caf=C3=A9?="',
    "text/plain; name*=utf-8''caf%C3%A9",
    "text/plain; name*0=a; name*1=b",
    "text/plain; name*1=b; name*0=a",
    "text/plain; name*=iso-8859-1'en'caf%E9",
    "application/x-stuff; title*0*=us-ascii'en'This%20is%20even%20more%20; title*1*=%2A%2A%2Afun%2A%2A%2A%20",
    'multipart/mixed; boundary="x"; boundary="y"',
    "text / plain",
]


@pytest.mark.parametrize("value", CONTENT_TYPES)
def test_content_types_read_as_the_email_package_reads_them(value: str) -> None:
    """Ordinary Content-Type values give the type and parameters of the email package's header registry."""
    header = policy.default.header_factory("content-type", value)
    parsed = parse_parameters(value, content_type=True)
    assert (parsed.value, parsed.params) == (f"{header.maintype}/{header.subtype}", dict(header.params))
