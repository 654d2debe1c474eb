"""Fuzzing relate.mail.preview: any message gives a preview of at most 256 characters, without control characters,
read from within the message, and never an exception."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from relate.mail import preview
from relate.mail.mime import parse_message

_PARTS = st.sampled_from(
    [
        b"Content-Type: text/plain\r\n",
        b"Content-Type: text/html; charset=utf-8\r\n",
        b"Content-Type: text/plain; charset=x-unknown\r\nContent-Transfer-Encoding: base64\r\n",
        b"Content-Type: text/plain; charset=utf-16\r\nContent-Transfer-Encoding: quoted-printable\r\n",
        b"Content-Disposition: attachment; filename=a.txt\r\n",
        b"Content-Type: image/png\r\n",
    ]
)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    parts = draw(st.lists(st.tuples(_PARTS, st.binary(max_size=300)), min_size=1, max_size=4))
    body = b"".join(b"--b\r\n" + head + b"\r\n" + data + b"\r\n" for head, data in parts)
    return b"Content-Type: multipart/alternative; boundary=b\r\n\r\n" + body + b"--b--\r\n"


@given(st.one_of(messages(), st.binary(max_size=800)))
@example(b"Content-Type: text/html\r\n\r\n" + b"<" * 70_000)
@example(b"\r\n" + b"> quoted\r\n" * 5000 + b"x")
@example(b"\r\n" + b" \t" * 40_000)
@example(b"Content-Type: text/plain; charset=utf-16\r\n\r\n\x00\x00")  # raised UnicodeError: no BOM
def test_preview_is_bounded(raw: bytes) -> None:
    """The preview is at most 256 characters of text with no control character, from octets inside the message."""
    src = preview.source(parse_message(raw).bodystructure)
    if src is None:
        return
    assert 0 <= src.start <= src.end <= len(raw)
    assert src.end - src.start <= max(preview.PLAIN_OCTETS, preview.HTML_OCTETS)
    text = preview.make(raw[src.start : src.end], src)
    assert len(text) <= preview.PREVIEW_CHARS
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)
    assert text == text.strip()
