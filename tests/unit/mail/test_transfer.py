"""Transfer decoding a chunk at a time gives what the email package gives decoding whole bodies."""

from __future__ import annotations

import base64
import binascii
import quopri
import random
from email.message import Message

import pytest

from relate.mail import transfer


def whole(body: bytes, encoding: str) -> bytes:
    """What the email package makes of a body with this Content-Transfer-Encoding."""
    message = Message()
    message["Content-Transfer-Encoding"] = encoding
    message.set_payload(body.decode("ascii", "surrogateescape"))
    data = message.get_payload(decode=True)
    assert isinstance(data, bytes)
    return data


def encode(data: bytes, encoding: str) -> bytes:
    if encoding == "base64":
        return base64.encodebytes(data).replace(b"\n", b"\r\n")
    # quoted-printable: CR and LF of the data encoded, soft line breaks as CRLF
    return binascii.b2a_qp(data, istext=False).replace(b"\n", b"\r\n")


def decoded(body: bytes, encoding: str) -> bytes:
    raw = b"head" + body + b"tail"  # the body is read in place, between other bytes
    data, cut = transfer.decode(raw, 4, 4 + len(body), encoding)
    assert not cut
    assert transfer.decoded_size(raw, 4, 4 + len(body), encoding) == len(data)
    return data


@pytest.mark.parametrize("encoding", ["base64", "quoted-printable"])
def test_generated_bodies_decode_as_the_email_package_decodes_them(encoding: str) -> None:
    """300 random bodies per encoding decode, and count, exactly as the email package decodes them."""
    rng = random.Random(20260612)
    for _ in range(300):
        data = (
            rng.randbytes(rng.randint(0, 4000))
            if rng.random() < 0.5
            else rng.choice([b"caf\xc3\xa9 ", b"=\r\n", b"\t x"]) * rng.randint(0, 900)
        )
        body = encode(data, encoding)
        assert decoded(body, encoding) == whole(body, encoding) == data


@pytest.mark.parametrize(
    "body",
    [
        b"YWJj\r\nZGVm\r\n",
        b"YWJjZA==\r\n\r\n-- \r\nA mailing list footer after the padding\r\n",
        b"YW Jj !ZG@Vm",  # characters outside the alphabet are ignored
        b"YWJjZA",  # padding missing
        b"",
    ],
)
def test_base64_leniency(body: bytes) -> None:
    """Lenient base64: junk ignored, missing padding tolerated, nothing after the padding, like the email package."""
    assert decoded(body, "base64") == whole(body, "base64")


def test_base64_lone_final_character_is_dropped() -> None:
    """A lone character in the last quantum is dropped (the email package gives up and returns the text)."""
    assert decoded(b"YWJjZ", "base64") == b"abc"


def test_chunk_boundaries_inside_long_lines() -> None:
    """Quoted-printable and base64 longer than a chunk, on one line, decode across chunk boundaries."""
    data = bytes(range(256)) * 20_000  # 5 MB
    qp = quopri.encodestring(data).replace(b"=\n", b"")  # one long line, "=XX" everywhere
    assert decoded(qp, "quoted-printable") == data
    b64 = base64.b64encode(data)  # one long line
    assert decoded(b64, "base64") == data


def test_identity_and_unknown_encodings_are_the_body() -> None:
    """7bit, 8bit, binary and unknown encodings are the body as it is; a limit cuts it."""
    raw = b"xx\xff\x00body\r\nyy"
    for encoding in ("7bit", "8bit", "binary", "x-gzip64", "x-uuencode"):
        assert transfer.decode(raw, 2, len(raw) - 2, encoding) == (b"\xff\x00body\r\n", False)
    assert transfer.decode(raw, 2, len(raw) - 2, "8bit", 3) == (b"\xff\x00b", True)


def test_limit_cuts_the_decoded_data() -> None:
    """decode() with a limit stops after that many decoded octets and says it cut."""
    data = bytes(range(256)) * 10_000
    body = base64.encodebytes(data)
    assert transfer.decode(body, 0, len(body), "base64", 100_000) == (data[:100_000], True)
    assert transfer.decode(body, 0, len(body), "base64", len(data)) == (data, False)


def test_uuencode_is_served_as_it_came() -> None:
    """x-uuencode (no standard; decodable only line by line) is served as it came, like any unknown encoding."""
    body = b"begin 644 file.bin\r\n" + binascii.b2a_uu(b"data").replace(b"\n", b"\r\n") + b"`\r\nend\r\n"
    assert decoded(body, "x-uuencode") == body


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"hello  \r\nbar\r\n", b"hello\r\nbar\r\n"),  # white space at a line's end is padding (RFC 2045 §6.7 (3))
        (b"foo\t \t= \r\n=62\r\n", b"foo\t \tb\r\n"),  # a soft line break followed by padding
        (b"foo = \t\r\nbar", b"foo bar"),
        (b"end of body \t", b"end of body"),  # padding at the body's end, without a line break
        (b"kept=20\r\n", b"kept \r\n"),  # encoded white space is data
    ],
)
def test_quoted_printable_line_end_padding_is_dropped(body: bytes, expected: bytes) -> None:
    """Quoted-printable white space before a line break (or the body's end) is not data; encoded spaces are."""
    assert decoded(body, "quoted-printable") == expected


def test_quoted_printable_padding_across_a_chunk_boundary() -> None:
    """A line longer than a decoding chunk keeps white space inside it and drops only what ends it."""
    body = b"a" * (transfer._CHUNK - 3) + b"      b   \r\nnext"
    assert decoded(body, "quoted-printable") == b"a" * (transfer._CHUNK - 3) + b"      b\r\nnext"
