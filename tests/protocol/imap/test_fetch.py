"""FETCH (RFC 9051 §6.4.5, §7.5.2): every data item, byte-exact against the delivered message."""

from __future__ import annotations

import asyncio
import base64
import imaplib
import sys
import tracemalloc
from datetime import UTC, datetime
from typing import Any

from .conftest import Imap
from .helpers import ImapClient, make_message

MULTI = (
    b"From: Carol Sender <carol@remote.example>\r\n"
    b"To: Bob <bob@example.com>, team@lists.example\r\n"
    b"Cc: Dan <dan@cc.example>\r\n"
    b"Reply-To: replies@remote.example\r\n"
    b"Subject: Quarterly\r\n"
    b" figures\r\n"
    b"Date: Tue, 03 Nov 2026 09:15:00 +0100\r\n"
    b"Message-ID: <multi-1@remote.example>\r\n"
    b"In-Reply-To: <earlier@remote.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
    b"This is the preamble.\r\n"
    b"--outer\r\n"
    b'Content-Type: multipart/alternative; boundary="inner"\r\n'
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Caf=C3=A9 costs =E2=82=AC5.\r\n"
    b"Second line.\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>Caf&eacute;</p>\r\n"
    b"--inner--\r\n"
    b"--outer\r\n"
    b'Content-Type: application/octet-stream; name="data.bin"\r\n'
    b'Content-Disposition: attachment; filename="data.bin"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAECAwQFBgcICQ==\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: inner@example.org\r\n"
    b"To: bob@example.com\r\n"
    b"Subject: Inner message\r\n"
    b"Date: Mon, 02 Nov 2026 08:00:00 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="deep"\r\n'
    b"\r\n"
    b"--deep\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"Inner body text\r\n"
    b"--deep\r\n"
    b'Content-Type: text/plain; name="note.txt"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"SGVsbG8gZnJvbSBpbnNpZGU=\r\n"
    b"--deep--\r\n"
    b"--outer--\r\n"
    b"Epilogue.\r\n"
)
HEADER_END = MULTI.index(b"\r\n\r\n") + 4
SIMPLE = make_message(subject="Simple", body="Line one\r\nLine two\r\n")


def _between(raw: bytes, start: bytes, end: bytes) -> bytes:
    """raw from the first ``start`` (included) up to the following ``end`` (excluded)."""
    i = raw.index(start)
    return raw[i : raw.index(end, i)]


def _params(values: list[bytes]) -> dict[str, bytes]:
    """A body parameter list as {NAME: value} (names are case-insensitive)."""
    return {values[i].decode().upper(): values[i + 1] for i in range(0, len(values), 2)}


async def _selected(imap: Imap, *messages: bytes, enable: str | None = None) -> ImapClient:
    for raw in messages:
        await imap.deliver(raw, internal_date=datetime(2026, 11, 3, 8, 15, 0, tzinfo=UTC))
    return await imap.connect(select="INBOX", enable=enable)


async def _fetch(client: ImapClient, what: str, n: int = 1) -> dict[str, Any]:
    return (await client.ok(f"FETCH {n} {what}")).fetches()[n]


async def test_flags_internaldate_size_uid(imap: Imap) -> None:
    """FLAGS, INTERNALDATE, RFC822.SIZE and UID describe the stored message."""
    await imap.deliver(SIMPLE, flags=["\\Seen", "$Work"], internal_date=datetime(2026, 1, 9, 7, 5, 3, tzinfo=UTC))
    client = await imap.connect(select="INBOX")
    item = await _fetch(client, "(FLAGS INTERNALDATE RFC822.SIZE UID)")
    assert sorted(item["FLAGS"]) == ["$Work", "\\Recent", "\\Seen"]  # \\Recent: this SELECT took it
    assert item["INTERNALDATE"] == b" 9-Jan-2026 07:05:03 +0000"
    assert item["RFC822.SIZE"] == str(len(SIMPLE))
    assert item["UID"] == str((await imap.stored())[0]["uid"])


async def test_envelope(imap: Imap) -> None:
    """ENVELOPE gives date, subject (unfolded), the address lists (sender defaulting to From), and ids."""
    client = await _selected(imap, MULTI)
    envelope = (await _fetch(client, "ENVELOPE"))["ENVELOPE"]
    assert envelope == [
        b"Tue, 03 Nov 2026 09:15:00 +0100",
        b"Quarterly figures",
        [[b"Carol Sender", None, b"carol", b"remote.example"]],
        [[b"Carol Sender", None, b"carol", b"remote.example"]],
        [[None, None, b"replies", b"remote.example"]],
        [[b"Bob", None, b"bob", b"example.com"], [None, None, b"team", b"lists.example"]],
        [[b"Dan", None, b"dan", b"cc.example"]],
        None,
        b"<earlier@remote.example>",
        b"<multi-1@remote.example>",
    ]


async def test_envelope_keeps_source_routes(imap: Imap) -> None:
    """A source route (<@route:user@domain>, RFC 5322 §4.4) is the address's adl in ENVELOPE (imaptest)."""
    raw = b"From: <@route:user@domain>\r\nTo: T <@a.example,@b.example:t@x>\r\n\r\nbody\r\n"
    client = await _selected(imap, raw)
    envelope = (await _fetch(client, "ENVELOPE"))["ENVELOPE"]
    assert envelope[2] == envelope[3] == envelope[4] == [[None, b"@route", b"user", b"domain"]]
    assert envelope[5] == [[b"T", b"@a.example,@b.example", b"t", b"x"]]


async def test_envelope_non_ascii_header(imap: Imap) -> None:
    """An 8-bit UTF-8 subject is sent as a literal to a rev1 client and as a quoted string after UTF8=ACCEPT."""
    raw = make_message(subject="Gr\u00fc\u00dfe aus K\u00f6ln")
    client = await _selected(imap, raw)
    rev1 = await client.ok("FETCH 1 ENVELOPE")
    assert "{" in rev1.untagged[0].decode("utf-8", "replace").split("ENVELOPE", 1)[1][:50]
    utf8 = await imap.connect(select="INBOX", enable="UTF8=ACCEPT")
    line = (await utf8.ok("FETCH 1 ENVELOPE")).untagged[0]
    assert '"Gr\u00fc\u00dfe aus K\u00f6ln"'.encode() in line
    assert rev1.fetches()[1]["ENVELOPE"][1] == "Gr\u00fc\u00dfe aus K\u00f6ln".encode()


async def test_bodystructure_multipart(imap: Imap) -> None:
    """BODYSTRUCTURE describes nested multiparts, encodings, sizes, lines, dispositions and the rfc822 part."""
    client = await _selected(imap, MULTI)
    bs = (await _fetch(client, "BODYSTRUCTURE"))["BODYSTRUCTURE"]
    assert isinstance(bs, list)
    alternative, attachment, message = bs[0], bs[1], bs[2]
    assert bs[3] == b"MIXED" or bs[3] == "MIXED"
    assert _params(bs[4]) == {"BOUNDARY": b"outer"}
    plain, html = alternative[0], alternative[1]
    qp = b"Caf=C3=A9 costs =E2=82=AC5.\r\nSecond line."
    assert _params(plain[2]) == {"CHARSET": b"utf-8"}
    assert plain[:7] == [b"TEXT", b"PLAIN", plain[2], None, None, b"QUOTED-PRINTABLE", str(len(qp))]
    assert plain[7] == "2"  # lines
    assert html[:2] == [b"TEXT", b"HTML"]
    assert alternative[2] in (b"ALTERNATIVE", "ALTERNATIVE")
    assert attachment[:2] == [b"APPLICATION", b"OCTET-STREAM"]
    assert attachment[5] == b"BASE64"
    assert attachment[6] == str(len(b"AAECAwQFBgcICQ=="))
    assert attachment[8][0] == b"ATTACHMENT"
    assert _params(attachment[8][1]) == {"FILENAME": b"data.bin"}
    assert message[:2] == [b"MESSAGE", b"RFC822"]
    inner_envelope, inner_body, inner_lines = message[7], message[8], message[9]
    assert inner_envelope[1] == b"Inner message"
    assert inner_body[0][:2] == [b"TEXT", b"PLAIN"]
    assert inner_body[1][5] == b"BASE64"
    inner = _between(MULTI, b"From: inner@", b"\r\n--outer--")
    assert message[6] == str(len(inner))
    assert inner_lines == str(inner.count(b"\n") + 1)


async def test_body_is_non_extensible_bodystructure(imap: Imap) -> None:
    """BODY has the same shape as BODYSTRUCTURE without extension data."""
    client = await _selected(imap, SIMPLE)
    item = await _fetch(client, "(BODY BODYSTRUCTURE)")
    body_part = b"Line one\r\nLine two\r\n"
    body = item["BODY"]
    assert isinstance(body, list)
    assert _params(body[2]) == {"CHARSET": b"us-ascii"}
    assert body == [b"TEXT", b"PLAIN", body[2], None, None, b"7BIT", str(len(body_part)), "2"]
    assert item["BODYSTRUCTURE"][:8] == item["BODY"]
    assert len(item["BODYSTRUCTURE"]) > 8


async def test_body_sections_are_byte_exact(imap: Imap) -> None:
    """BODY[], HEADER, TEXT and numbered parts are exact slices of the delivered bytes."""
    client = await _selected(imap, MULTI)
    cases = {
        "BODY.PEEK[]": ("BODY[]", MULTI),
        "BODY.PEEK[HEADER]": ("BODY[HEADER]", MULTI[:HEADER_END]),
        "BODY.PEEK[TEXT]": ("BODY[TEXT]", MULTI[HEADER_END:]),
        "BODY.PEEK[1]": ("BODY[1]", _between(MULTI, b"--inner\r\nContent-Type: text/plain", b"\r\n--outer\r\n")[0:0]),
        "BODY.PEEK[1.1]": ("BODY[1.1]", b"Caf=C3=A9 costs =E2=82=AC5.\r\nSecond line."),
        "BODY.PEEK[1.2]": ("BODY[1.2]", b"<p>Caf&eacute;</p>"),
        "BODY.PEEK[1.1.MIME]": (
            "BODY[1.1.MIME]",
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
        ),
        "BODY.PEEK[2]": ("BODY[2]", b"AAECAwQFBgcICQ=="),
        "BODY.PEEK[2.MIME]": ("BODY[2.MIME]", _between(MULTI, b"Content-Type: application/octet", b"AAEC")),
        "BODY.PEEK[3]": ("BODY[3]", _between(MULTI, b"From: inner@", b"\r\n--outer--")),
        "BODY.PEEK[3.HEADER]": ("BODY[3.HEADER]", _between(MULTI, b"From: inner@", b"--deep\r\n")),
        "BODY.PEEK[3.TEXT]": (
            "BODY[3.TEXT]",
            _between(MULTI, b"--deep\r\nContent-Type: text/plain\r\n", b"\r\n--outer--"),
        ),
        "BODY.PEEK[3.1]": ("BODY[3.1]", b"Inner body text"),
        "BODY.PEEK[3.2]": ("BODY[3.2]", b"SGVsbG8gZnJvbSBpbnNpZGU="),
        "BODY.PEEK[3.2.MIME]": ("BODY[3.2.MIME]", _between(MULTI, b'Content-Type: text/plain; name="note', b"SGVs")),
    }
    # BODY[1] is the whole multipart/alternative body: from its first delimiter to before the outer one.
    alt = _between(MULTI, b"--inner\r\nContent-Type: text/plain", b"\r\n--outer\r\nContent-Type: application")
    cases["BODY.PEEK[1]"] = ("BODY[1]", alt)
    for request, (key, expected) in cases.items():
        item = await _fetch(client, f"({request})")
        assert item[key] == expected, request
    assert (await imap.stored())[0]["flags"] == []  # PEEK: \Seen untouched


async def test_header_fields(imap: Imap) -> None:
    """HEADER.FIELDS keeps the named fields (folding included) plus the blank line; .NOT keeps the others."""
    client = await _selected(imap, MULTI)
    item = await _fetch(client, "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])")
    assert item["BODY[HEADER.FIELDS (SUBJECT FROM)]"] == (
        b"From: Carol Sender <carol@remote.example>\r\nSubject: Quarterly\r\n figures\r\n\r\n"
    )
    item = await _fetch(client, "(BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT FROM TO CC REPLY-TO MESSAGE-ID)])")
    assert item["BODY[HEADER.FIELDS.NOT (SUBJECT FROM TO CC REPLY-TO MESSAGE-ID)]"] == (
        b"Date: Tue, 03 Nov 2026 09:15:00 +0100\r\n"
        b"In-Reply-To: <earlier@remote.example>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="outer"\r\n'
        b"\r\n"
    )
    item = await _fetch(client, "(BODY.PEEK[3.HEADER.FIELDS (SUBJECT)])")
    assert item["BODY[3.HEADER.FIELDS (SUBJECT)]"] == b"Subject: Inner message\r\n\r\n"
    item = await _fetch(client, "(BODY.PEEK[HEADER.FIELDS (X-NOT-THERE)])")
    assert item["BODY[HEADER.FIELDS (X-NOT-THERE)]"] == b"\r\n"


async def test_header_fields_lower_case_request(imap: Imap) -> None:
    """Field names are case-insensitive: (subject) returns the Subject field."""
    client = await _selected(imap, SIMPLE)
    item = await _fetch(client, "(BODY.PEEK[HEADER.FIELDS (subject)])")
    (value,) = [v for k, v in item.items() if k.startswith("BODY[HEADER.FIELDS")]
    assert value == b"Subject: Simple\r\n\r\n"


async def test_partial_fetch(imap: Imap) -> None:
    """<start.count> returns that slice, labelled with the origin; past the end gives an empty string."""
    client = await _selected(imap, MULTI)
    item = await _fetch(client, "(BODY.PEEK[]<0.20> BODY.PEEK[TEXT]<6.10>)")
    assert item["BODY[]<0>"] == MULTI[:20]
    assert item["BODY[TEXT]<6>"] == MULTI[HEADER_END + 6 : HEADER_END + 16]
    item = await _fetch(client, f"BODY.PEEK[]<{len(MULTI) - 5}.100>")
    assert item[f"BODY[]<{len(MULTI) - 5}>"] == MULTI[-5:]
    item = await _fetch(client, f"BODY.PEEK[1.1]<{len(MULTI)}.10>")
    assert item[f"BODY[1.1]<{len(MULTI)}>"] == b""


async def test_rfc822_items(imap: Imap) -> None:
    """RFC822, RFC822.HEADER and RFC822.TEXT are the whole message, its header and its body."""
    client = await _selected(imap, MULTI)
    item = await _fetch(client, "(RFC822.HEADER RFC822.SIZE)")
    assert item["RFC822.HEADER"] == MULTI[:HEADER_END]
    assert item["RFC822.SIZE"] == str(len(MULTI))
    assert (await imap.stored())[0]["flags"] == []  # RFC822.HEADER does not set \Seen
    item = await _fetch(client, "RFC822.TEXT")
    assert item["RFC822.TEXT"] == MULTI[HEADER_END:]
    assert item["FLAGS"] == ["\\Recent", "\\Seen"]
    assert (await _fetch(client, "RFC822"))["RFC822"] == MULTI


async def test_binary_decodes_base64_and_qp(imap: Imap) -> None:
    """BINARY[] decodes base64 and quoted-printable parts; BINARY.SIZE gives the decoded size."""
    client = await _selected(imap, MULTI)
    item = await _fetch(client, "(BINARY.PEEK[2] BINARY.SIZE[2] BINARY.PEEK[1.1] BINARY.SIZE[1.1] BINARY.PEEK[3.2])")
    assert item["BINARY[2]"] == bytes(range(10))
    assert item["BINARY.SIZE[2]"] == "10"
    text = "Caf\u00e9 costs \u20ac5.\r\nSecond line.".encode()
    assert item["BINARY[1.1]"] == text
    assert item["BINARY.SIZE[1.1]"] == str(len(text))
    assert item["BINARY[3.2]"] == base64.b64decode(b"SGVsbG8gZnJvbSBpbnNpZGU=")
    assert (await imap.stored())[0]["flags"] == []


async def test_binary_with_nul_uses_literal8(imap: Imap) -> None:
    """Decoded content with NUL octets is sent as a literal8 (~{n})."""
    client = await _selected(imap, MULTI)
    line = (await client.ok("FETCH 1 BINARY.PEEK[2]")).untagged[0]
    assert b"BINARY[2] ~{10}\r\n" in line


async def test_binary_partial_and_sets_seen(imap: Imap) -> None:
    """BINARY[part]<start.count> slices the decoded data; BINARY without PEEK sets \\Seen."""
    client = await _selected(imap, MULTI)
    item = await _fetch(client, "BINARY[2]<2.3>")
    assert item["BINARY[2]<2>"] == bytes([2, 3, 4])
    assert item["FLAGS"] == ["\\Recent", "\\Seen"]


async def test_binary_on_7bit_single_part(imap: Imap) -> None:
    """BINARY[1] of a single-part 7bit message is its body, and BODY[1] too."""
    client = await _selected(imap, SIMPLE)
    item = await _fetch(client, "(BINARY.PEEK[1] BODY.PEEK[1] BINARY.SIZE[1])")
    body = b"Line one\r\nLine two\r\n"
    assert item["BINARY[1]"] == body
    assert item["BODY[1]"] == body
    assert item["BINARY.SIZE[1]"] == str(len(body))


async def test_macros(imap: Imap) -> None:
    """ALL, FAST and FULL expand to their items."""
    client = await _selected(imap, SIMPLE)
    assert set(await _fetch(client, "ALL")) == {"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"}
    assert set(await _fetch(client, "FAST")) == {"FLAGS", "INTERNALDATE", "RFC822.SIZE"}
    assert set(await _fetch(client, "FULL")) == {"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"}


async def test_non_peek_sets_seen_seen_by_second_session(imap: Imap) -> None:
    """BODY[] without PEEK sets \\Seen, reports FLAGS, and a second session hears it on NOOP."""
    client = await _selected(imap, SIMPLE)
    other = await imap.connect(select="INBOX")
    item = await _fetch(client, "BODY[]")
    assert item["BODY[]"] == SIMPLE
    assert item["FLAGS"] == ["\\Recent", "\\Seen"]  # recent in the session that selected first
    assert (await imap.stored())[0]["flags"] == ["\\Seen"]
    fetched = (await other.ok("NOOP")).fetches()
    assert fetched[1]["FLAGS"] == ["\\Seen"]
    # The fetching session is not told twice.
    assert (await client.ok("NOOP")).untagged == []


async def test_non_peek_header_sets_seen(imap: Imap) -> None:
    """BODY[HEADER] without PEEK sets \\Seen too (any BODY[section])."""
    client = await _selected(imap, SIMPLE)
    await _fetch(client, "BODY[HEADER]")
    assert (await imap.stored())[0]["flags"] == ["\\Seen"]


async def test_fetch_ranges(imap: Imap) -> None:
    """1:*, * and lists fetch the right messages; a number beyond EXISTS is BAD."""
    client = await _selected(imap, SIMPLE, SIMPLE, SIMPLE)
    assert set((await client.ok("FETCH 1:* UID")).fetches()) == {1, 2, 3}
    assert set((await client.ok("FETCH * UID")).fetches()) == {3}
    assert set((await client.ok("FETCH 1,3 UID")).fetches()) == {1, 3}
    assert (await client.command("FETCH 4 UID")).status == "BAD"
    assert (await client.command("FETCH 2:5 UID")).status == "BAD"


# A message that is itself message/rfc822 (imaptest's fetch-body-message-rfc822), and one nested twice.
INNER = b"From: sub@domain.org\r\nDate: Sun, 12 Aug 2012 12:34:56 +0300\r\nSubject: submsg\r\n\r\nHello world\r\n"
INNER_HEADER = INNER[: INNER.index(b"\r\n\r\n") + 4]
WRAPPED = (
    b"From: user@domain.org\r\nDate: Sat, 24 Mar 2007 23:00:00 +0200\r\nMime-Version: 1.0\r\n"
    b"Content-Type: message/rfc822\r\n\r\n" + INNER
)
MIDDLE = (
    b"From: user2@domain.org\r\nDate: Fri, 23 Mar 2007 11:22:33 +0200\r\nMime-Version: 1.0\r\n"
    b"Content-Type: message/rfc822\r\n\r\n" + INNER
)
WRAPPED_TWICE = (
    b"From: user@domain.org\r\nDate: Sat, 24 Mar 2007 23:00:00 +0200\r\nMime-Version: 1.0\r\n"
    b"Content-Type: message/rfc822\r\n\r\n" + MIDDLE
)
DIGEST = (
    b'From: sub@domain.org\r\nSubject: submsg\r\nContent-Type: multipart/digest; boundary="foo"\r\n\r\n'
    b"prologue\r\n\r\n--foo \r\n\r\nFrom: m1@example.com\r\nSubject: m1\r\n\r\nm1 body\r\n\r\n"
    b"--foo \r\nX-Mime: m2 header\r\n\r\nFrom: m2@example.com\r\nSubject: m2\r\n\r\nm2 body\r\n\r\n--foo--\r\n"
)
WRAPPED_DIGEST = b"From: user@domain.org\r\nMime-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n" + DIGEST


async def _sections(client: ImapClient, expected: dict[str, bytes]) -> None:
    """FETCH 1 (BODY.PEEK[s] ...) for each section s: each comes back as ``expected[s]``."""
    item = await _fetch(client, "(" + " ".join(f"BODY.PEEK[{s}]" for s in expected) + ")")
    assert {s: item[f"BODY[{s}]"] for s in expected} == expected


async def test_message_rfc822_message_sections(imap: Imap) -> None:
    """A message/rfc822 message: BODY[1] is the encapsulated message; 1.HEADER, 1.TEXT and 1.1 address inside it."""
    client = await _selected(imap, WRAPPED)
    hello = b"Hello world\r\n"
    await _sections(client, {"TEXT": INNER, "1": INNER, "1.1": hello, "1.HEADER": INNER_HEADER, "1.TEXT": hello})
    fields = "1.HEADER.FIELDS (FROM SUBJECT X-FOO)"
    await _sections(client, {fields: b"From: sub@domain.org\r\nSubject: submsg\r\n\r\n"})
    assert (await _fetch(client, "BINARY.PEEK[1.1]"))["BINARY[1.1]"] == hello


async def test_nested_message_rfc822_sections(imap: Imap) -> None:
    """Two levels of message/rfc822: 1 is the middle message, 1.1 the inner one, 1.1.1 its body; HEADER/TEXT at each."""
    client = await _selected(imap, WRAPPED_TWICE)
    hello = b"Hello world\r\n"
    middle_header = MIDDLE[: MIDDLE.index(b"\r\n\r\n") + 4]
    await _sections(client, {"1": MIDDLE, "1.HEADER": middle_header, "1.TEXT": INNER, "1.1": INNER})
    await _sections(client, {"1.1.1": hello, "1.1.HEADER": INNER_HEADER, "1.1.TEXT": hello})


async def test_message_rfc822_holding_a_digest(imap: Imap) -> None:
    """A message/rfc822 message holding a digest: 1.n are the digest's messages, with MIME, HEADER and TEXT each."""
    client = await _selected(imap, WRAPPED_DIGEST)
    m1, m2 = b"From: m1@example.com\r\nSubject: m1\r\n\r\n", b"From: m2@example.com\r\nSubject: m2\r\n\r\n"
    await _sections(client, {"1": DIGEST, "1.1": m1 + b"m1 body\r\n", "1.1.MIME": b"\r\n", "1.1.HEADER": m1})
    await _sections(client, {"1.2.MIME": b"X-Mime: m2 header\r\n\r\n", "1.2.TEXT": b"m2 body\r\n"})
    await _sections(client, {"1.2": m2 + b"m2 body\r\n"})


async def test_missing_part_is_empty_and_the_range_goes_on(imap: Imap) -> None:
    """FETCH 1:3 (BODY.PEEK[2]) where message 1 has no part 2: an empty part for 1, the data for 2 and 3, OK."""
    client = await _selected(imap, SIMPLE, MULTI, MULTI)
    result = await client.command("FETCH 1:3 (BODY.PEEK[2] BINARY.PEEK[2] BINARY.SIZE[2])")
    assert result.ok, str(result)
    items = result.fetches()
    assert set(items) == {1, 2, 3}
    assert (items[1]["BODY[2]"], items[1]["BINARY[2]"], items[1]["BINARY.SIZE[2]"]) == (b"", b"", "0")
    for n in (2, 3):
        assert items[n]["BODY[2]"] == b"AAECAwQFBgcICQ=="
        assert items[n]["BINARY[2]"] == bytes(range(10))
    # HEADER of a part that holds no message is empty too, as is a part below a leaf's own part 1.
    item = await _fetch(client, "(BODY.PEEK[1.1.HEADER] BODY.PEEK[9] BODY.PEEK[2.3])", 2)
    assert (item["BODY[1.1.HEADER]"], item["BODY[9]"], item["BODY[2.3]"]) == (b"", b"", b"")


async def test_fetch_errors(imap: Imap) -> None:
    """Unknown items and malformed sections are BAD; the session goes on."""
    client = await _selected(imap, MULTI)
    for bad in ("FETCH 1 BOGUS", "FETCH 1 (FLAGS", "FETCH 1 BODY[HEADER.FIELDS]", "FETCH 1 BODY[0]", "FETCH 1 ()"):
        assert (await client.command(bad)).status == "BAD", bad
    assert (await client.command("FETCH 1 FLAGS")).ok


async def test_unknown_transfer_encoding(imap: Imap) -> None:
    """BINARY of a part with an unknown Content-Transfer-Encoding is NO [UNKNOWN-CTE]."""
    raw = make_message(headers=("MIME-Version: 1.0", "Content-Transfer-Encoding: x-uuencode"), body="begin 644 x\r\n")
    client = await _selected(imap, raw)
    result = await client.command("FETCH 1 BINARY.PEEK[1]")
    assert (result.status, result.code) == ("NO", "UNKNOWN-CTE")


async def test_odd_messages_byte_exact(imap: Imap) -> None:
    """Messages with bare LF, no body, no final newline or 8-bit text come back byte for byte."""
    odd = [
        b"Subject: bare LF\nFrom: a@b.example\n\nbody line\nsecond\n",
        b"Subject: no body\r\nFrom: a@b.example\r\n",
        b"Subject: trailing\r\n\r\nno final newline",
        "Subject: 8bit \u00e9\r\n\r\nH\u00e9llo w\u00f6rld\r\n".encode(),
    ]
    client = await _selected(imap, *odd)
    for n, raw in enumerate(odd, 1):
        item = await _fetch(client, "(BODY.PEEK[] RFC822.SIZE BODY.PEEK[HEADER] BODY.PEEK[TEXT])", n)
        assert item["BODY[]"] == raw
        assert item["RFC822.SIZE"] == str(len(raw))
        assert item["BODY[HEADER]"] + item["BODY[TEXT]"] == raw


async def test_large_message_byte_exact(imap: Imap) -> None:
    """A 2 MB message (parsed off the event loop) comes back byte for byte."""
    raw = make_message(body=("0123456789abcdef" * 64 + "\r\n") * 2000)
    client = await _selected(imap, raw)
    assert (await _fetch(client, "BODY.PEEK[]"))["BODY[]"] == raw


async def test_fetch_with_imaplib(imap: Imap) -> None:
    """imaplib fetch of (RFC822) returns the message bytes."""
    await imap.deliver(MULTI)

    def script(conn: imaplib.IMAP4) -> Any:
        conn.select("INBOX")
        _typ, data = conn.fetch("1", "(BODY.PEEK[])")
        item: Any = data[0]
        return item[1]

    assert await imap.imaplib(script) == MULTI


async def test_repeated_envelope_fetch_is_identical_and_flags_stay_current(imap: Imap) -> None:
    """A second FETCH (FLAGS ENVELOPE) sends the same envelopes byte for byte, with the flags as they are now."""
    client = await _selected(imap, MULTI)
    await imap.deliver(make_message(subject="second"))
    await client.ok("NOOP")
    first = (await client.ok("FETCH 1:* (FLAGS ENVELOPE)")).untagged
    await client.ok("STORE 2 +FLAGS (\\Flagged)")
    again = (await client.ok("FETCH 1:* (FLAGS ENVELOPE)")).untagged
    assert len(first) == len(again) == 2
    assert again[0] == first[0]
    assert again[1] == first[1].replace(b"FLAGS (\\Recent)", b"FLAGS (\\Recent \\Flagged)")
    assert b"ENVELOPE (" in again[1]
    assert b'"second"' in again[1]


async def test_envelope_same_for_stored_form_older_rows_and_copies(imap: Imap) -> None:
    """ENVELOPE is byte-identical whether sent from the form stored at ingest, rendered for an older row, or copied."""
    raw = make_message(subject='Gr\u00fc\u00dfe "aus" K\u00f6ln')
    await imap.deliver(raw)
    await imap.deliver(raw)
    box = await imap.mailbox()
    # Row 2 as stored before migration 0009: no wire form, so FETCH renders the jsonb envelope.
    await imap.pool.execute(
        "UPDATE messages SET envelope_wire = NULL, envelope_wire_utf8 = NULL WHERE mailbox_id = $1 AND uid = 2",
        box["id"],
    )
    for enable in (None, "UTF8=ACCEPT"):
        client = await imap.connect(select="INBOX", enable=enable)
        await client.ok("COPY 1 Archive")
        lines = (await client.ok("FETCH 1:2 ENVELOPE")).untagged
        assert lines[0].split(b"ENVELOPE", 1)[1] == lines[1].split(b"ENVELOPE", 1)[1]
        await client.ok("SELECT Archive")
        copied = (await client.ok("FETCH 1:* ENVELOPE")).untagged
        assert copied[-1].split(b"ENVELOPE", 1)[1] == lines[0].split(b"ENVELOPE", 1)[1]
        quoted = '"Gr\u00fc\u00dfe \\"aus\\" K\u00f6ln"'.encode()
        assert (quoted in lines[0]) == (enable is not None)


_CLIENT = """
import imaplib, ssl, sys
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
conn = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[1]), ssl_context=context, timeout=60)
conn.login(sys.argv[2], sys.argv[3])
conn.select("INBOX", readonly=True)
typ, data = conn.fetch("1:*", "(BODY.PEEK[])")
print(typ, sum(len(part[1]) for part in data if isinstance(part, tuple)))
conn.logout()
"""


async def test_fetch_of_big_messages_holds_a_bounded_part(imap: Imap) -> None:
    """FETCH 1:* BODY[] over 48 MB of messages, read by imaplib in another process: the daemon holds about one
    16 MB group of messages at a time, not the mailbox, and sends every octet."""
    raw = make_message(body=b"z" * (4 * 1024 * 1024))
    for _ in range(12):
        await imap.deliver(raw)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CLIENT, str(imap.tls_port), "bob@example.com", imap.bob_key,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert out.decode().split() == ["OK", str(12 * len(raw))], err.decode()
    assert peak < 32 * 1024 * 1024, f"{peak / 1e6:.0f} MB held while sending 48 MB"
