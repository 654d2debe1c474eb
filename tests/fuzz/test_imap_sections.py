"""FETCH section addressing (relate.imap.fetch): any section of any message is a slice of it, or empty; never an error.

The client controls both the message (APPEND) and the section it asks for. Messages are
assembled from MIME building blocks (multipart, message/rfc822, digests, broken boundaries)
and parsed as ingest does; sections are part paths with an optional text specifier.
"""

from __future__ import annotations

from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from relate.imap.errors import No
from relate.imap.fetch import decoded_part, section_bytes
from relate.imap.parser import Section
from relate.mail.mime import parse_message

_BLOCKS = [
    b"From: a@b.example\r\n", b"Subject: s\r\n", b"Content-Type: message/rfc822\r\n",
    b'Content-Type: multipart/mixed; boundary="b"\r\n', b'Content-Type: multipart/digest; boundary="d"\r\n',
    b"Content-Transfer-Encoding: base64\r\n", b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"\r\n", b"--b\r\n", b"--b--\r\n", b"--d \r\n", b"--d--\r\n", b"aGVsbG8=\r\n", b"caf=C3=A9\r\n", b"body\r\n",
    b"\n", b"X-Mime: h\r\n",
]  # fmt: skip
_MESSAGES = st.one_of(st.binary(max_size=300), st.lists(st.sampled_from(_BLOCKS), max_size=40).map(b"".join))
_TEXTS = st.sampled_from([None, "HEADER", "TEXT", "MIME", "HEADER.FIELDS", "HEADER.FIELDS.NOT"])
_SECTIONS = st.builds(
    lambda part, text: Section(tuple(part), text if part or text != "MIME" else None, ("SUBJECT",) if text else ()),
    st.lists(st.integers(1, 4), max_size=6),
    _TEXTS,
)
WRAPPED = (
    b"From: user@domain.org\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: sub@domain.org\r\nSubject: submsg\r\n\r\nHello world\r\n"
)
TWICE = b"Content-Type: message/rfc822\r\n\r\n" + WRAPPED


def _row(raw: bytes) -> dict[str, Any]:
    parsed = parse_message(raw)
    return {"bodystructure": parsed.bodystructure, "header_end": parsed.header_end}


@given(_MESSAGES, _SECTIONS)
@example(WRAPPED, Section((1,), "HEADER"))
@example(TWICE, Section((1, 1, 1)))
@example(b"Subject: no parts\r\n\r\nx", Section((2,)))
@example(b"Subject: no parts\r\n\r\nx", Section((1, 1, 1, 1), "TEXT"))
def test_any_section_is_a_slice_or_empty(raw: bytes, section: Section) -> None:
    """BODY[section] is a slice of the message (or fields picked from one) or empty; BINARY fails only UNKNOWN-CTE."""
    row = _row(raw)
    data = bytes(section_bytes(raw, row, section))
    if section.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        assert data == b"" or data.endswith(b"\r\n")  # empty: no such section
    else:
        assert data in raw
    if section.text is None:
        code = None
        try:
            decoded_part(raw, row, section.part)
        except No as exc:
            code = exc.code
        assert code in (None, "UNKNOWN-CTE")


@given(_MESSAGES)
@example(WRAPPED)
@example(TWICE)
def test_part_one_of_a_single_part_message_is_its_text(raw: bytes) -> None:
    """A message that is not multipart: BODY[1] is BODY[TEXT]; a message/rfc822 one: BODY[1] is 1.HEADER + 1.TEXT."""
    row = _row(raw)
    structure = row["bodystructure"]
    if structure.get("parts"):
        return
    whole = bytes(section_bytes(raw, row, Section((1,))))
    assert whole == bytes(section_bytes(raw, row, Section((), "TEXT")))
    if structure.get("message") is not None:
        header = bytes(section_bytes(raw, row, Section((1,), "HEADER")))
        text = bytes(section_bytes(raw, row, Section((1,), "TEXT")))
        assert header + text == whole
