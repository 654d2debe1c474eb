"""parse_message: structure offsets, ENVELOPE/BODYSTRUCTURE, decoding, and robustness."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from relate.mail.mime import Address, AttachmentInfo, ParsedMessage, parse_message


def crlf(*lines: str | bytes) -> bytes:
    """Join lines with CRLF; str lines are UTF-8 encoded."""
    return b"\r\n".join(line.encode() if isinstance(line, str) else line for line in lines)


def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every BODYSTRUCTURE node, including those of encapsulated messages."""
    yield node
    for child in node.get("parts", []):
        yield from nodes(child)
    if "message" in node:
        yield from nodes(node["message"]["body"])


def part(structure: dict[str, Any], number: str) -> dict[str, Any]:
    """The node for an IMAP part number such as "1.2" (multipart children only)."""
    node = structure
    for index in number.split("."):
        node = node["parts"][int(index) - 1]
    return node


def body(raw: bytes, node: dict[str, Any]) -> bytes:
    return raw[node["body_start"] : node["end"]]


def mime_header(raw: bytes, node: dict[str, Any]) -> bytes:
    return raw[node["header_start"] : node["body_start"]]


def assert_sane(raw: bytes, parsed: ParsedMessage) -> None:
    """Offsets are ordered and in range, and the JSON views serialise."""
    for node in nodes(parsed.bodystructure):
        assert 0 <= node["header_start"] <= node["body_start"] <= node["end"] <= len(raw)
    assert parsed.bodystructure["header_start"] == 0
    assert parsed.bodystructure["end"] == len(raw)
    assert 0 <= parsed.header_end <= len(raw)
    json.dumps(parsed.envelope)
    json.dumps(parsed.bodystructure)
    json.dumps(parsed.to_json())


PLAIN_BODY = b"Hi Bob,\r\nare you free for lunch tomorrow?\r\n"
PLAIN = (
    crlf(
        "From: Alice Example <alice@example.org>",
        "To: bob@example.net",
        "Subject: Lunch tomorrow?",
        "Date: Mon, 7 Jul 2025 09:15:00 +0200",
        "Message-ID: <lunch-1@example.org>",
        "Content-Type: text/plain; charset=utf-8",
        "",
        "",
    )
    + PLAIN_BODY
)

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n" * 3
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
PDF_B64 = base64.encodebytes(PDF).replace(b"\n", b"\r\n").rstrip(b"\r\n")
PNG_B64 = base64.encodebytes(PNG).replace(b"\n", b"\r\n").rstrip(b"\r\n")
QP_BODY = b"Dear Dave, the new rates are attached.\r\nGr=FC=DFe, Carol"
HTML_BODY = b'<p>Dear Dave, the new rates are attached.</p><img src="cid:logo@example.com">'
PDF_HEADER = crlf(
    'Content-Type: application/pdf; name="rates.pdf"',
    "Content-Disposition: attachment; filename*=UTF-8''%E2%82%AC%20rates.pdf",
    "Content-Transfer-Encoding: base64",
    "",
    "",
)
NESTED = crlf(
    "From: Carol <carol@example.com>",
    "To: dave@example.net",
    "Subject: Q3 rates",
    "Date: Tue, 8 Jul 2025 14:00:00 +0000",
    "MIME-Version: 1.0",
    'Content-Type: multipart/mixed; boundary="outer-b"',
    "",
    "This is a multi-part message in MIME format.",
    "A line merely ending in the boundary is no delimiter --outer-b",
    "--outer-bX this line merely starts like a delimiter",
    "--outer-b",
    'Content-Type: multipart/alternative; boundary="inner-b"',
    "",
    "--inner-b",
    "Content-Type: text/plain; charset=iso-8859-1",
    "Content-Transfer-Encoding: quoted-printable",
    "",
    QP_BODY,
    "--inner-b",
    "Content-Type: text/html; charset=utf-8",
    "",
    HTML_BODY,
    "--inner-b--",
    "",
    "--outer-b",
    PDF_HEADER + PDF_B64,
    "--outer-b \t",  # transport padding (RFC 2046 §5.1.1)
    'Content-Type: image/png; name="logo.png"',
    "Content-Disposition: inline",
    "Content-ID: <logo@example.com>",
    "Content-Transfer-Encoding: base64",
    "",
    PNG_B64,
    "--outer-b--",
    "epilogue, ignored",
    "",
)


def test_plain_text_message() -> None:
    """A single-part message: header/body split, leaf offsets, decoded columns and ENVELOPE."""
    parsed = parse_message(PLAIN)
    assert PLAIN[: parsed.header_end].endswith(
        b"<lunch-1@example.org>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    assert PLAIN[parsed.header_end :] == PLAIN_BODY
    assert parsed.bodystructure == {
        "type": "text",
        "subtype": "plain",
        "params": [["charset", "utf-8"]],
        "id": None,
        "description": None,
        "encoding": "7bit",
        "size": len(PLAIN_BODY),
        "lines": 2,
        "md5": None,
        "disposition": None,
        "language": None,
        "location": None,
        "header_start": 0,
        "body_start": parsed.header_end,
        "end": len(PLAIN),
    }
    assert parsed.subject == "Lunch tomorrow?"
    assert parsed.from_ == [Address("Alice Example", "alice@example.org")]
    assert parsed.to == [Address(None, "bob@example.net")]
    assert parsed.sender == parsed.reply_to == parsed.cc == parsed.bcc == []
    assert parsed.date == datetime(2025, 7, 7, 9, 15, tzinfo=timezone(timedelta(hours=2)))
    assert parsed.message_id == "<lunch-1@example.org>"
    assert parsed.in_reply_to is None
    assert parsed.references == []
    assert parsed.text_body == "Hi Bob,\r\nare you free for lunch tomorrow?\r\n"
    assert parsed.html_body is None
    assert "lunch tomorrow" in parsed.text
    assert parsed.attachments == []
    assert parsed.has_8bit_headers is False
    alice = [["Alice Example", None, "alice", "example.org"]]
    assert parsed.envelope == {
        "date": "Mon, 7 Jul 2025 09:15:00 +0200",
        "subject": "Lunch tomorrow?",
        "from": alice,
        "sender": alice,
        "reply_to": alice,
        "to": [[None, None, "bob", "example.net"]],
        "cc": None,
        "bcc": None,
        "in_reply_to": None,
        "message_id": "<lunch-1@example.org>",
    }
    assert list(parsed.envelope) == [
        "date", "subject", "from", "sender", "reply_to", "to", "cc", "bcc", "in_reply_to", "message_id",
    ]  # fmt: skip


def test_multipart_alternative() -> None:
    """multipart/alternative: exact part offsets and MIME headers; only the plain part is indexed."""
    plain = b"Plain version of the newsletter."
    html = (
        b"<html><head><style>p {color: red}</style></head>"
        b"<body><p>HTML version with <b>onlyinhtml</b></p></body></html>"
    )
    raw = crlf(
        "From: news@example.org",
        "Subject: Newsletter",
        'Content-Type: multipart/alternative; boundary="alt"',
        "",
        "--alt",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        plain,
        "--alt",
        "Content-Type: text/html; charset=utf-8",
        "",
        html,
        "--alt--",
        "",
    )
    parsed = parse_message(raw)
    structure = parsed.bodystructure
    assert (structure["type"], structure["subtype"]) == ("multipart", "alternative")
    assert structure["params"] == [["boundary", "alt"]]
    assert [(p["type"], p["subtype"]) for p in structure["parts"]] == [("text", "plain"), ("text", "html")]
    assert body(raw, part(structure, "1")) == plain
    assert body(raw, part(structure, "2")) == html
    assert mime_header(raw, part(structure, "1")) == b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    assert mime_header(raw, part(structure, "2")) == b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    assert part(structure, "1")["lines"] == 1
    assert part(structure, "1")["size"] == len(plain)
    assert parsed.text_body == plain.decode()
    assert parsed.html_body == html.decode()
    assert "Plain version" in parsed.text
    assert "onlyinhtml" not in parsed.text
    assert_sane(raw, parsed)


def test_html_only_message_is_stripped_for_search() -> None:
    """Without a text/plain alternative the HTML is indexed as text: tags, style and script removed."""
    raw = crlf(
        "From: shop@example.org",
        "Content-Type: text/html; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable",
        "",
        "<html><head><style>.x {color: red}</style><script>var secret =3D 1;</script></head>",
        "<body><h1>Caf=C3=A9 menu</h1><p>Fish &amp; chips<br>Soup</p></body></html>",
    )
    parsed = parse_message(raw)
    assert parsed.text_body is None
    assert parsed.html_body is not None
    assert "<h1>Café menu</h1>" in parsed.html_body
    assert "Café menu" in parsed.text
    assert "Fish & chips" in parsed.text
    assert "Soup" in parsed.text
    assert "<" not in parsed.text
    assert "color" not in parsed.text
    assert "secret" not in parsed.text


def test_nested_mixed_offsets_and_part_numbers() -> None:
    """Nested multipart/mixed > alternative: every leaf's body and MIME header slice exactly."""
    parsed = parse_message(NESTED)
    structure = parsed.bodystructure
    assert (structure["type"], structure["subtype"]) == ("multipart", "mixed")
    assert [p["subtype"] for p in structure["parts"]] == ["alternative", "pdf", "png"]
    assert body(NESTED, part(structure, "1.1")) == QP_BODY
    assert body(NESTED, part(structure, "1.2")) == HTML_BODY
    assert body(NESTED, part(structure, "2")) == PDF_B64
    assert body(NESTED, part(structure, "3")) == PNG_B64
    assert mime_header(NESTED, part(structure, "1.1")) == crlf(
        "Content-Type: text/plain; charset=iso-8859-1", "Content-Transfer-Encoding: quoted-printable", "", ""
    )
    assert mime_header(NESTED, part(structure, "2")) == PDF_HEADER
    alternative = part(structure, "1")
    assert mime_header(NESTED, alternative) == b'Content-Type: multipart/alternative; boundary="inner-b"\r\n\r\n'
    assert body(NESTED, alternative).startswith(b"--inner-b\r\n")
    assert body(NESTED, alternative).endswith(b"--inner-b--\r\n")  # the next CRLF belongs to "--outer-b"
    assert NESTED[structure["body_start"] :].startswith(b"This is a multi-part message")
    assert part(structure, "1.1")["lines"] == 2
    assert part(structure, "2")["lines"] is None


def test_nested_mixed_bodystructure_fields() -> None:
    """Leaf fields: lower-cased types, RFC 2231-decoded parameters, encoding, id, disposition, size."""
    structure = parse_message(NESTED).bodystructure
    pdf = part(structure, "2")
    assert pdf["params"] == [["name", "rates.pdf"]]
    assert pdf["encoding"] == "base64"
    assert pdf["disposition"] == ["attachment", [["filename", "€ rates.pdf"]]]
    assert pdf["size"] == len(PDF_B64)
    png = part(structure, "3")
    assert png["id"] == "<logo@example.com>"
    assert png["disposition"] == ["inline", []]
    plain = part(structure, "1.1")
    assert plain["params"] == [["charset", "iso-8859-1"]]
    assert plain["encoding"] == "quoted-printable"
    alternative = part(structure, "1")
    assert set(alternative) == {
        "type", "subtype", "params", "parts", "disposition", "language", "location",
        "header_start", "body_start", "end",
    }  # fmt: skip


def test_nested_mixed_attachments_and_text() -> None:
    """Attachments carry part numbers, decoded names and decoded sizes; QP text is decoded."""
    parsed = parse_message(NESTED)
    assert parsed.attachments == [
        AttachmentInfo("2", "€ rates.pdf", "application/pdf", len(PDF), None, False),
        AttachmentInfo("3", "logo.png", "image/png", len(PNG), "<logo@example.com>", True),
    ]
    assert parsed.text_body == "Dear Dave, the new rates are attached.\r\nGrüße, Carol"
    assert parsed.html_body == HTML_BODY.decode()
    assert "Grüße" in parsed.text
    assert "<p>" not in parsed.text
    assert "epilogue" not in parsed.text
    assert "multi-part message" not in parsed.text


def test_forwarded_message_rfc822() -> None:
    """message/rfc822: nested ENVELOPE and BODYSTRUCTURE with absolute offsets; its text is searchable."""
    inner_text = base64.b64encode(b"Forwarded body with the word zebra.\r\n")
    inner = crlf(
        "From: Erin <erin@example.org>",
        "To: frank@example.net",
        "Subject: =?UTF-8?Q?Original_m=C3=BCsing?=",
        "Date: Wed, 2 Jul 2025 08:00:00 -0400",
        "Message-ID: <orig@example.org>",
        'Content-Type: multipart/alternative; boundary="in"',
        "",
        "--in",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: base64",
        "",
        inner_text,
        "--in",
        "Content-Type: text/html",
        "",
        "<p>Forwarded body with the word zebra.</p>",
        "--in--",
    )
    raw = crlf(
        "From: Frank <frank@example.net>",
        "To: grace@example.com",
        "Subject: Fwd: Original",
        'Content-Type: multipart/mixed; boundary="fwd"',
        "",
        "--fwd",
        "Content-Type: text/plain",
        "",
        "See the message below.",
        "--fwd",
        "Content-Type: message/rfc822",
        "Content-Disposition: attachment",
        "",
        inner,
        "--fwd--",
        "",
    )
    parsed = parse_message(raw)
    attached = part(parsed.bodystructure, "2")
    assert (attached["type"], attached["subtype"]) == ("message", "rfc822")
    assert body(raw, attached) == inner
    assert attached["lines"] == inner.count(b"\n") + 1
    envelope = attached["message"]["envelope"]
    assert envelope["subject"] == "=?UTF-8?Q?Original_m=C3=BCsing?="
    assert envelope["from"] == [["Erin", None, "erin", "example.org"]]
    assert envelope["sender"] == envelope["from"]
    assert envelope["message_id"] == "<orig@example.org>"
    nested = attached["message"]["body"]
    assert nested["header_start"] == attached["body_start"]
    assert nested["end"] == attached["end"]
    assert raw[nested["header_start"] : nested["body_start"]].startswith(b"From: Erin")
    assert body(raw, nested["parts"][0]) == inner_text
    assert body(raw, nested["parts"][1]) == b"<p>Forwarded body with the word zebra.</p>"
    assert parsed.attachments == [AttachmentInfo("2", None, "message/rfc822", len(inner), None, False)]
    assert parsed.text_body == "See the message below."
    assert parsed.html_body is None
    assert "See the message below." in parsed.text
    assert "zebra" in parsed.text
    assert parsed.envelope["subject"] == "Fwd: Original"


def test_rfc2047_subject_and_display_name() -> None:
    """Encoded words are decoded in columns but kept verbatim in the ENVELOPE."""
    subject = "=?UTF-8?B?" + base64.b64encode("Prüfbericht für".encode()).decode() + "?= =?UTF-8?Q?_M=C3=A4rz?="
    raw = crlf(
        f"Subject: {subject}",
        "From: =?ISO-8859-1?Q?Andr=E9?= Pirard <andre@example.be>",
        "To: =?UTF-8?B?5bGx55Sw?= <yamada@example.jp>, plain@example.jp",
        "",
        "Body",
    )
    parsed = parse_message(raw)
    assert parsed.subject == "Prüfbericht für März"
    assert parsed.from_ == [Address("André Pirard", "andre@example.be")]
    assert parsed.to == [Address("山田", "yamada@example.jp"), Address(None, "plain@example.jp")]
    assert parsed.envelope["subject"] == subject
    assert parsed.envelope["from"] == [["=?ISO-8859-1?Q?Andr=E9?= Pirard", None, "andre", "example.be"]]


def test_8bit_utf8_headers_and_body() -> None:
    """SMTPUTF8: raw UTF-8 headers decode in columns and ENVELOPE; 8-bit bodies without charset decode."""
    raw = "\r\n".join(
        [
            "From: Jörg Müller <jörg@bücher.example>",
            "To: Zoë <zoë@example.org>",
            "Subject: Grüße aus Köln",
            "Content-Transfer-Encoding: 8bit",
            "",
            "Straße und Brücke",
        ]
    ).encode()
    parsed = parse_message(raw)
    assert parsed.has_8bit_headers is True
    assert parsed.subject == "Grüße aus Köln"
    assert parsed.envelope["subject"] == "Grüße aus Köln"
    assert parsed.from_ == [Address("Jörg Müller", "jörg@bücher.example")]
    assert parsed.envelope["from"] == [["Jörg Müller", None, "jörg", "bücher.example"]]
    assert parsed.bodystructure["params"] == [["charset", "us-ascii"]]  # RFC 2045 default, as declared
    assert parsed.text_body == "Straße und Brücke"
    assert "Straße" in parsed.text


def test_latin1_header_fallback() -> None:
    """A header that is not valid UTF-8 is read as latin-1, per header."""
    raw = b"Subject: Caf\xe9 cr\xe8me\r\nFrom: J\xc3\xb6rg <j@example.org>\r\n\r\nx"
    parsed = parse_message(raw)
    assert parsed.subject == "Café crème"
    assert parsed.envelope["subject"] == "Café crème"
    assert parsed.from_ == [Address("Jörg", "j@example.org")]
    assert parsed.has_8bit_headers is True


def test_envelope_groups_defaults_and_threading() -> None:
    """ENVELOPE per RFC 9051: group markers, Sender defaulting to From, unfolded raw strings."""
    raw = crlf(
        'From: "Doe, Jane" <jane@example.com>',
        "Reply-To: list@example.com",
        'To: Team: ann@example.com, "Ben B." <ben@example.com>;, carl@example.com',
        "Cc: undisclosed-recipients:;",
        "Subject: a long",
        " subject =?UTF-8?Q?caf=C3=A9?=",
        "Date: Thu, 10 Jul 2025 12:00:00 +0100",
        "In-Reply-To: <parent@example.com>",
        "References: <root@example.com>",
        "\t<parent@example.com>",
        "Message-ID:  <child@example.com>  ",
        "",
        "Body",
    )
    parsed = parse_message(raw)
    jane = [["Doe, Jane", None, "jane", "example.com"]]
    assert parsed.envelope == {
        "date": "Thu, 10 Jul 2025 12:00:00 +0100",
        "subject": "a long subject =?UTF-8?Q?caf=C3=A9?=",
        "from": jane,
        "sender": jane,
        "reply_to": [[None, None, "list", "example.com"]],
        "to": [
            [None, None, "Team", None],
            [None, None, "ann", "example.com"],
            ["Ben B.", None, "ben", "example.com"],
            [None, None, None, None],
            [None, None, "carl", "example.com"],
        ],
        "cc": [[None, None, "undisclosed-recipients", None], [None, None, None, None]],
        "bcc": None,
        "in_reply_to": "<parent@example.com>",
        "message_id": "<child@example.com>",
    }
    assert parsed.subject == "a long subject café"
    assert parsed.to == [
        Address(None, "ann@example.com"),
        Address("Ben B.", "ben@example.com"),
        Address(None, "carl@example.com"),
    ]
    assert parsed.cc == [Address("undisclosed-recipients", "")]
    assert parsed.reply_to == [Address(None, "list@example.com")]
    assert parsed.message_id == "<child@example.com>"
    assert parsed.in_reply_to == "<parent@example.com>"
    assert parsed.references == ["<root@example.com>", "<parent@example.com>"]


def test_boundary_never_used() -> None:
    """A multipart whose boundary never occurs becomes one text/plain leaf over the whole body."""
    text = b"Just some text\r\nwithout any parts\r\n"
    raw = crlf('Content-Type: multipart/mixed; boundary="nope"', "", "") + text
    parsed = parse_message(raw)
    structure = parsed.bodystructure
    assert (structure["type"], structure["subtype"]) == ("text", "plain")
    assert "parts" not in structure
    assert body(raw, structure) == text
    assert parsed.text_body == text.decode()
    assert "without any parts" in parsed.text


def test_missing_close_delimiter() -> None:
    """Without "--boundary--" the last part runs to the end of the enclosing body."""
    raw = crlf(
        'Content-Type: multipart/mixed; boundary="b"',
        "",
        "--b",
        "",
        "first part",
        "--b",
        "Content-Type: text/plain",
        "",
        "second part, truncated",
        "",
    )
    parsed = parse_message(raw)
    first, second = parsed.bodystructure["parts"]
    assert body(raw, first) == b"first part"
    assert body(raw, second) == b"second part, truncated\r\n"
    assert second["end"] == len(raw)
    assert "second part" in parsed.text


def test_multipart_without_boundary_parameter() -> None:
    """multipart/mixed with no boundary parameter does not raise and keeps its body as text."""
    raw = crlf("Content-Type: multipart/mixed", "", "--x", "Content-Type: text/plain", "", "hidden", "--x--")
    parsed = parse_message(raw)
    assert (parsed.bodystructure["type"], parsed.bodystructure["subtype"]) == ("text", "plain")
    assert body(raw, parsed.bodystructure) == raw[parsed.header_end :]
    assert_sane(raw, parsed)


def test_headerless_parts() -> None:
    """A part starting with a blank line, or directly with text, is text/plain; charset=us-ascii."""
    raw = crlf(
        'Content-Type: multipart/mixed; boundary="b"', "", "--b", "", "blank line first", "--b", "no blank", "--b--"
    )
    first, second = parse_message(raw).bodystructure["parts"]
    assert first["body_start"] == first["header_start"] + 2
    assert second["body_start"] == second["header_start"]
    assert body(raw, first) == b"blank line first"
    assert body(raw, second) == b"no blank"
    for node in (first, second):
        assert (node["type"], node["subtype"], node["params"]) == ("text", "plain", [["charset", "us-ascii"]])


def test_bare_lf_line_endings() -> None:
    """Bare LF messages split and slice as exactly as CRLF ones."""
    raw = (
        b"From: unix@example.org\nSubject: lf\nContent-Type: multipart/alternative; boundary=zz\n\n"
        b"--zz\nContent-Type: text/plain\n\nline one\nline two\n--zz\nContent-Type: text/html\n\n<i>two</i>\n--zz--\n"
    )
    parsed = parse_message(raw)
    assert raw[: parsed.header_end].endswith(b"boundary=zz\n\n")
    plain, html = parsed.bodystructure["parts"]
    assert body(raw, plain) == b"line one\nline two"
    assert mime_header(raw, plain) == b"Content-Type: text/plain\n\n"
    assert plain["lines"] == 2
    assert body(raw, html) == b"<i>two</i>"
    assert parsed.subject == "lf"


def test_digest_default_is_message_rfc822() -> None:
    """Inside multipart/digest a part without Content-Type is message/rfc822 with an ENVELOPE."""
    raw = crlf(
        'Content-Type: multipart/digest; boundary="d"',
        "",
        "--d",
        "",
        "From: one@example.org",
        "Subject: first",
        "",
        "first body",
        "--d--",
    )
    digest_part = parse_message(raw).bodystructure["parts"][0]
    assert (digest_part["type"], digest_part["subtype"], digest_part["params"]) == ("message", "rfc822", [])
    assert digest_part["message"]["envelope"]["subject"] == "first"
    assert body(raw, digest_part["message"]["body"]) == b"first body"


def test_no_blank_line_between_header_and_body() -> None:
    """A line that is not a header field starts the body even without the empty separator line."""
    raw = crlf("From: a@example.org", "Subject: no separator", "This line starts the body", "second line", "")
    parsed = parse_message(raw)
    assert parsed.header_end == raw.index(b"This line")
    assert parsed.subject == "no separator"
    assert parsed.text_body == "This line starts the body\r\nsecond line\r\n"


def test_empty_input() -> None:
    """Empty bytes parse to an empty text/plain message."""
    parsed = parse_message(b"")
    assert parsed.header_end == 0
    assert parsed.subject is None
    assert parsed.date is None
    assert all(value is None for value in parsed.envelope.values())
    assert parsed.bodystructure["size"] == 0
    assert parsed.bodystructure["lines"] == 0
    assert parsed.text == ""
    assert_sane(b"", parsed)


def test_only_headers() -> None:
    """A message that is all header has header_end == len(raw) and an empty body."""
    for raw in (b"From: a@example.org\r\nSubject: hi\r\n", b"From: a@example.org\r\nSubject: hi"):
        parsed = parse_message(raw)
        assert parsed.header_end == len(raw)
        assert parsed.subject == "hi"
        assert parsed.bodystructure["size"] == 0
        assert_sane(raw, parsed)


def test_body_text_and_lines() -> None:
    """BODY[TEXT] is raw[header_end:]; a final unterminated line counts as a line."""
    for text, lines in ((b"a\r\nb", 2), (b"a\r\nb\r\n", 2), (b"\r\n", 1), (b"x", 1)):
        raw = b"Subject: t\r\n\r\n" + text
        parsed = parse_message(raw)
        assert raw[parsed.header_end :] == text
        assert parsed.bodystructure["lines"] == lines
        assert parsed.bodystructure["size"] == len(text)


def test_dates() -> None:
    """Date becomes an aware datetime; "-0000" is UTC; garbage and impossible dates are None."""
    parsed = parse_message(b"Date: Fri, 11 Jul 2025 06:30:00 -0000\r\n\r\n")
    assert parsed.date == datetime(2025, 7, 11, 6, 30, tzinfo=UTC)
    for value in (b"yesterday", b"Fri, 32 Jul 2025 06:30:00 +0000", b"Fri, 1 Jul 99999999999 00:00:00 +0000"):
        assert parse_message(b"Date: " + value + b"\r\n\r\n").date is None


def test_unknown_charset_falls_back() -> None:
    """An unknown or wrong charset still yields text (UTF-8, then latin-1)."""
    raw = "Content-Type: text/plain; charset=x-no-such-charset\r\n\r\nnaïve".encode()
    assert parse_message(raw).text_body == "naïve"
    raw = b"Content-Type: text/plain; charset=utf-8\r\n\r\nna\xefve"
    assert parse_message(raw).text_body == "naïve"


def test_text_attachment_is_not_body_text() -> None:
    """A text/plain part with Content-Disposition: attachment is listed, not indexed or displayed."""
    raw = crlf(
        'Content-Type: multipart/mixed; boundary="b"',
        "",
        "--b",
        "",
        "the real body",
        "--b",
        "Content-Type: text/plain; charset=utf-8",
        'Content-Disposition: attachment; filename="=?UTF-8?Q?notiz_=C3=BC.txt?="',
        "",
        "attached words",
        "--b--",
    )
    parsed = parse_message(raw)
    assert parsed.attachments == [AttachmentInfo("2", "notiz ü.txt", "text/plain", 14, None, False)]
    assert parsed.text_body == "the real body"
    assert "attached words" not in parsed.text


def test_search_text_is_capped() -> None:
    """The search text holds at most 1 MiB characters."""
    raw = b"Subject: big\r\n\r\n" + b"word " * 500_000
    parsed = parse_message(raw)
    assert len(parsed.text) == 1 << 20
    assert parsed.text_body is not None
    assert len(parsed.text_body) == 2_500_000


def test_deep_nesting_does_not_recurse_forever() -> None:
    """Pathologically deep multipart nesting stops at a depth limit instead of raising."""
    depth = 500
    raw = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(depth))
    raw += b"\r\ninnermost"
    parsed = parse_message(raw)
    assert_sane(raw, parsed)
    assert sum(1 for _ in nodes(parsed.bodystructure)) < depth


def test_json_views() -> None:
    """envelope and bodystructure are plain JSON; to_json() covers every field."""
    parsed = parse_message(NESTED)
    assert json.loads(json.dumps(parsed.bodystructure)) == parsed.bodystructure
    assert json.loads(json.dumps(parsed.envelope)) == parsed.envelope
    data = json.loads(json.dumps(parsed.to_json()))
    assert data["date"] == "2025-07-08T14:00:00+00:00"
    assert data["attachments"][0]["filename"] == "€ rates.pdf"
    assert data["from_"] == [{"name": "Carol", "email": "carol@example.com"}]


def test_random_garbage_never_raises() -> None:
    """10 KB of random bytes parse without raising and with sane offsets."""
    raw = random.Random(0).randbytes(10 * 1024)
    assert_sane(raw, parse_message(raw))
    text_like = bytes(b % 96 + 10 for b in raw)  # printable-ish garbage with many colons and newlines
    assert_sane(text_like, parse_message(text_like))


def test_mutated_messages_never_raise() -> None:
    """200 randomly mutated multipart messages parse without raising, with sane offsets."""
    rng = random.Random(1)
    for _ in range(200):
        raw = bytearray(NESTED)
        for _ in range(rng.randint(1, 20)):
            pos = rng.randrange(len(raw))
            operation = rng.choice(("delete", "insert", "flip"))
            if operation == "delete":
                del raw[pos : pos + rng.randint(1, 40)]
            elif operation == "insert":
                raw[pos:pos] = rng.choice((b"\r\n", b"\n", b"--outer-b", b"--inner-b--", b":", b"\xff", b"=?"))
            else:
                raw[pos] ^= 1 << rng.randrange(8)
        data = bytes(raw)
        assert_sane(data, parse_message(data))


def test_related_inline_image_without_disposition() -> None:
    """An undisposed image with a Content-ID in multipart/related is an inline attachment named by "name"."""
    raw = crlf(
        'Content-Type: multipart/related; boundary="rel"',
        "",
        "--rel",
        "Content-Type: text/html; charset=utf-8",
        "",
        '<p>Logo: <img src="cid:img1@example.org"></p>',
        "--rel",
        "Content-Type: image/gif; name=dot.gif",
        "Content-ID: <img1@example.org>",
        "Content-Transfer-Encoding: base64",
        "",
        "R0lGODlhAQABAAAAACw=",
        "--rel--",
    )
    parsed = parse_message(raw)
    assert parsed.attachments == [AttachmentInfo("2", "dot.gif", "image/gif", 14, "<img1@example.org>", True)]
    assert parsed.html_body == '<p>Logo: <img src="cid:img1@example.org"></p>'
    assert parsed.text == "Logo:"


def test_lines_only_for_text_and_encapsulated_messages() -> None:
    """lines is set for text/* and message/rfc822 (body-type-text/-msg), None for other types."""
    raw = crlf(
        'Content-Type: multipart/report; report-type=delivery-status; boundary="r"',
        "",
        "--r",
        "",
        "Delivery failed.",
        "--r",
        "Content-Type: message/delivery-status",
        "",
        "Reporting-MTA: dns; mx.example.org",
        "--r",
        "Content-Type: message/rfc822",
        "",
        "Subject: original",
        "",
        "hello",
        "--r--",
    )
    text, status, original = parse_message(raw).bodystructure["parts"]
    assert text["lines"] == 1
    assert status["lines"] is None
    assert "message" not in status
    assert original["lines"] == 3
    assert original["message"]["envelope"]["subject"] == "original"


def test_mbox_from_line_is_skipped() -> None:
    """A leading mbox "From " line (RFC 4155) is not a header field and does not end the header."""
    raw = crlf("From alice@example.org Mon Jul  7 09:15:00 2025", "Subject: from mbox", "", "body")
    parsed = parse_message(raw)
    assert parsed.subject == "from mbox"
    assert raw[parsed.header_end :] == b"body"


def test_malformed_html_keeps_text_collected_so_far() -> None:
    """HTML that makes html.parser give up still yields the text before the error."""
    raw = b"Content-Type: text/html\r\n\r\n<p>before</p><![foo[ x ]]><p>after</p>"
    parsed = parse_message(raw)
    assert "before" in parsed.text
    assert parsed.html_body == "<p>before</p><![foo[ x ]]><p>after</p>"


def test_base64_encoded_message_rfc822_is_opaque() -> None:
    """A transfer-encoded message/rfc822 cannot be sliced, so it stays a leaf without "message"."""
    inner = b"Subject: hidden\r\n\r\nsecret body\r\n"
    raw = crlf(
        'Content-Type: multipart/mixed; boundary="b"',
        "",
        "--b",
        "Content-Type: message/rfc822",
        "Content-Transfer-Encoding: base64",
        "",
        base64.b64encode(inner),
        "--b--",
    )
    parsed = parse_message(raw)
    node = part(parsed.bodystructure, "1")
    assert (node["type"], node["subtype"], node["encoding"]) == ("message", "rfc822", "base64")
    assert "message" not in node
    assert node["lines"] is None
    assert parsed.attachments == [AttachmentInfo("1", None, "message/rfc822", len(inner), None, False)]


# --- issue 12, finding 2: hostile headers ------------------------------------------------------------

HOSTILE_SUBJECT = b"Subject: " + b"\r\n ".join(b"=?utf-8?q?caf=C3=A9?=" for _ in range(16_000)) + b"\r\n"


def test_subject_of_16000_encoded_words_decodes_its_first_words() -> None:
    """A folded 370 KiB Subject of 16,000 encoded words parses; the first 1,000 words are decoded, the rest kept."""
    raw = b"From: a@example.org\r\n" + HOSTILE_SUBJECT + b"\r\nbody\r\n"
    parsed = parse_message(raw)
    assert parsed.subject is not None
    assert parsed.subject.startswith("café" * 1000 + " =?utf-8?q?caf=C3=A9?=")
    assert {"field-bytes", "encoded-words"} <= set(parsed.limits)
    assert parsed.from_ == [Address(None, "a@example.org")]
    assert raw[parsed.header_end :] == b"body\r\n"


def test_from_with_500_open_parentheses_parses() -> None:
    """`From: a <b` and 500 "(" (a RecursionError in the email package) gives the address and notes the nesting."""
    raw = b"From: a <b" + b"(" * 500 + b"\r\nSubject: still read\r\n\r\nbody"
    parsed = parse_message(raw)
    assert parsed.from_ == [Address("a", "b")]
    assert parsed.subject == "still read"
    assert "nesting" in parsed.limits
    assert_sane(raw, parsed)


def test_deep_comments_in_every_structured_field_parse() -> None:
    """Deeply nested comments in address, Content-Type and Content-Disposition fields never raise."""
    deep = "(" * 5000 + "x" + ")" * 5000
    raw = crlf(
        f"From: {deep} alice@example.org",
        f"To: Bob {deep} <bob@example.org>",
        f"Content-Type: text/plain; {deep} charset=utf-8",
        f"Content-Disposition: inline; {deep} filename=a.txt",
        "",
        "body",
    )
    parsed = parse_message(raw)
    assert parsed.from_ == [Address("(" * 4999 + "x" + ")" * 4999, "alice@example.org")]
    assert parsed.to == [Address("Bob " + deep, "bob@example.org")]
    assert parsed.bodystructure["params"] == [["charset", "utf-8"]]
    assert parsed.attachments == [AttachmentInfo("1", "a.txt", "text/plain", 4, None, True)]


def test_limits_are_empty_for_ordinary_mail() -> None:
    """An ordinary message reaches no limit."""
    assert parse_message(NESTED).limits == ()
    assert parse_message(PLAIN).limits == ()
