"""PREVIEW text (RFC 8970) from a message's first body text part (relate.mail.preview)."""

from __future__ import annotations

import base64

from relate.mail import preview
from relate.mail.mime import parse_message


def _preview(raw: bytes) -> str:
    src = preview.source(parse_message(raw).bodystructure)
    return "" if src is None else preview.make(raw[src.start : src.end], src)


def test_plain_text_is_flattened_without_quotes_and_signature() -> None:
    """Runs of white space become one space; quoted lines and the signature are left out."""
    raw = (
        b"Subject: x\r\n\r\nHi Bob,\r\n\r\n  the   meeting\tmoves to 3pm.\r\n"
        b"> what time was it?\r\n>> earlier\r\nSee you.\r\n-- \r\nAlice, who signs everything\r\n"
    )
    assert _preview(raw) == "Hi Bob, the meeting moves to 3pm. See you."


def test_at_most_256_characters() -> None:
    """A long body gives exactly 256 characters (never more, RFC 8970 §3.1)."""
    assert len(_preview(b"\r\n" + b"word " * 2000)) == preview.PREVIEW_CHARS == 256


def test_charset_and_transfer_encoding_are_undone() -> None:
    """A base64 ISO-8859-1 body is previewed as the text it encodes."""
    body = base64.encodebytes("Grüße aus Köln".encode("latin-1"))
    raw = b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: base64\r\n\r\n" + body
    assert _preview(raw) == "Grüße aus Köln"


def test_html_only_gives_its_visible_text() -> None:
    """Without a text/plain part, the HTML part's visible text: no tags, no style, entities decoded."""
    raw = (
        b"Content-Type: text/html\r\n\r\n<html><head><style>p {color: red}</style></head>"
        b"<body><p>Caf&eacute; <b>opens</b></p><p>at nine</p></body></html>"
    )
    assert _preview(raw) == "Café opens at nine"


def test_first_body_text_not_an_attachment() -> None:
    """Attachments (even text ones) and images are passed over; text/plain wins over an earlier text/html."""
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=notes.txt\r\n\r\nattached\r\n"
        b"--b\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n"
        b"--c\r\nContent-Type: text/html\r\n\r\n<p>html version</p>\r\n"
        b"--c\r\nContent-Type: text/plain\r\n\r\nplain version\r\n--c--\r\n"
        b"--b--\r\n"
    )
    assert _preview(raw) == "plain version"


def test_no_body_text_is_empty() -> None:
    """A message with only an image has the empty preview."""
    raw = b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n"
    assert preview.source(parse_message(raw).bodystructure) is None
    assert _preview(raw) == ""


def test_only_the_start_of_a_part_is_read() -> None:
    """The source is at most PLAIN_OCTETS of a large part, and a character cut there does not show."""
    raw = b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + "é".encode() * 100_000
    src = preview.source(parse_message(raw).bodystructure)
    assert src is not None
    assert src.end - src.start == preview.PLAIN_OCTETS
    assert _preview(raw) == "é" * 256


def test_control_characters_never_reach_the_preview() -> None:
    """NUL and other control characters become spaces (PostgreSQL text holds no NUL)."""
    assert _preview(b"\r\n\x00a\x01b\x1bc\x7fd") == "a b c d"
