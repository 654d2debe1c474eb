"""BINARY (RFC 3516): FETCH BINARY[], BINARY.PEEK[], BINARY.SIZE[] with the transfer encoding undone, and APPEND
of binary data (literal8)."""

from __future__ import annotations

import base64

from .conftest import Imap
from .helpers import Lit, make_message

_BASE64_BODY = base64.encodebytes(b"abcdefg\rhijkl\r\nmno\npqrstuvqxyz\x00end").replace(b"\n", b"\r\n")
_MIXED = (
    b"From: a@example.org\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"hello  \r\nbar=\r\n\r\nfoo\t=\r\nbar\r\nfoo\t \t= \r\n=62\r\nfoo = \t\r\nbar\r\n"
    b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + _BASE64_BODY
    + b"\r\n--b\r\nContent-Type: application/x-thing\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
    b"begin 644 x\r\nend\r\n"
    b"--b--\r\n"
)
_QP_DECODED = b"hello\r\nbar\r\nfoo\tbar\r\nfoo\t \tb\r\nfoo bar"  # the CRLF before --b is the delimiter's
_BIN_DECODED = b"abcdefg\rhijkl\r\nmno\npqrstuvqxyz\x00end"


async def test_capability_lists_binary(imap: Imap) -> None:
    """CAPABILITY advertises BINARY once logged in."""
    client = await imap.connect()
    assert b" BINARY" in (await client.ok("CAPABILITY")).untagged[0]


async def test_binary_undoes_base64_and_quoted_printable(imap: Imap) -> None:
    """BINARY.PEEK[n] gives each part's octets without their transfer encoding; BINARY.SIZE[n] counts them."""
    await imap.deliver(_MIXED)
    client = await imap.connect(select="INBOX")
    got = (await client.ok("FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1] BINARY.SIZE[2] BINARY.PEEK[2])")).fetches()[1]
    assert got["BINARY[1]"] == _QP_DECODED  # trailing white space and soft-break padding are not data
    assert int(got["BINARY.SIZE[1]"]) == len(_QP_DECODED)
    assert got["BINARY[2]"] == _BIN_DECODED
    assert int(got["BINARY.SIZE[2]"]) == len(_BIN_DECODED)


async def test_binary_with_nul_is_a_literal8(imap: Imap) -> None:
    """Decoded data holding NUL comes as a literal8 (~{n}); text without NUL as an ordinary literal."""
    await imap.deliver(_MIXED)
    client = await imap.connect(select="INBOX")
    result = await client.ok("FETCH 1 (BINARY.PEEK[2] BINARY.PEEK[1])")
    (line,) = result.lines("FETCH")
    assert b"BINARY[2] ~{%d}" % len(_BIN_DECODED) in line
    assert b"BINARY[1] {%d}" % len(_QP_DECODED) in line


async def test_binary_partial(imap: Imap) -> None:
    """BINARY.PEEK[n]<start.count> cuts the decoded octets, not the encoded ones."""
    await imap.deliver(_MIXED)
    client = await imap.connect(select="INBOX")
    got = (await client.ok("FETCH 1 (BINARY.PEEK[2]<5.10>)")).fetches()[1]
    assert got["BINARY[2]<5>"] == _BIN_DECODED[5:15]


async def test_binary_of_unknown_encoding_is_unknown_cte(imap: Imap) -> None:
    """BINARY of a part in a transfer encoding the server cannot undo is NO [UNKNOWN-CTE]; the session goes on."""
    await imap.deliver(_MIXED)
    client = await imap.connect(select="INBOX")
    result = await client.command("FETCH 1 (BINARY.PEEK[3])")
    assert (result.status, result.code) == ("NO", "UNKNOWN-CTE")
    assert (await client.ok("FETCH 1 (BODY.PEEK[3])")).fetches()[1]["BODY[3]"] == b"begin 644 x\r\nend"


async def test_binary_sets_seen_unless_peek(imap: Imap) -> None:
    """FETCH BINARY[n] sets \\Seen as BODY[n] does; BINARY.PEEK and BINARY.SIZE do not."""
    await imap.deliver(_MIXED)
    client = await imap.connect(select="INBOX")
    await client.ok("FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1])")
    assert (await client.ok("FETCH 1 FLAGS")).fetches()[1]["FLAGS"] == ["\\Recent"]  # this SELECT took it
    await client.ok("FETCH 1 (BINARY[1])")
    assert (await client.ok("FETCH 1 FLAGS")).fetches()[1]["FLAGS"] == ["\\Recent", "\\Seen"]


async def test_binary_of_a_large_part(imap: Imap) -> None:
    """A base64 part of several MiB is decoded exactly (in a worker thread), and its size counted alike."""
    payload = bytes(range(256)) * (3 * 4096 + 7)
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    raw = make_message(
        body=encoded,
        headers=("MIME-Version: 1.0", "Content-Type: application/octet-stream", "Content-Transfer-Encoding: base64"),
    )
    await imap.deliver(raw)
    client = await imap.connect(select="INBOX")
    got = (await client.ok("FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])", wait=30)).fetches()[1]
    assert int(got["BINARY.SIZE[1]"]) == len(payload)
    assert got["BINARY[1]"] == payload


_BINARY_APPEND = (
    b"From: user@domain.org\r\nDate: Sat, 24 Mar 2007 23:00:00 +0200\r\nMime-Version: 1.0\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    b"\x00-\xe4\n\r\n\n"
)


async def test_append_binary_is_stored_as_base64(imap: Imap) -> None:
    """APPEND of binary data (literal8) with NUL: BODY[1] is base64 text without NUL, BINARY[1] the octets sent."""
    client = await imap.connect()
    await client.ok("APPEND INBOX ", Lit(_BINARY_APPEND, binary=True))
    await client.ok("SELECT INBOX")
    got = (await client.ok("FETCH 1 (BODY.PEEK[1] BINARY.SIZE[1] BINARY.PEEK[1] BODYSTRUCTURE)")).fetches()[1]
    assert got["BODY[1]"] == base64.b64encode(b"\x00-\xe4\n\r\n\n")
    assert int(got["BINARY.SIZE[1]"]) == 7
    assert got["BINARY[1]"] == b"\x00-\xe4\n\r\n\n"
    assert got["BODYSTRUCTURE"][5] == b"BASE64"
    stored = (await imap.stored())[0]["raw"]
    assert b"\x00" not in stored
    assert b"Content-Transfer-Encoding: base64\r\n" in stored


async def test_append_binary_part_of_a_multipart(imap: Imap) -> None:
    """In a multipart literal8, only the binary part becomes base64; the text part is stored as sent."""
    text = b"--x\r\nContent-Type: text/plain\r\n\r\nplain words\r\n"
    binary = b"--x\r\nContent-Type: image/x-raw\r\nContent-Transfer-Encoding: BINARY\r\n\r\n\x00\x01\x02\xff\r\n"
    head = b'From: a@b.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="x"\r\n\r\n'
    raw = head + text + binary + b"--x--\r\n"
    client = await imap.connect()
    await client.ok("APPEND INBOX ", Lit(raw, binary=True))
    await client.ok("SELECT INBOX")
    got = (await client.ok("FETCH 1 (BODY.PEEK[1] BODY.PEEK[2] BINARY.PEEK[2])")).fetches()[1]
    assert got["BODY[1]"] == b"plain words"
    assert got["BODY[2]"] == base64.b64encode(b"\x00\x01\x02\xff")
    assert got["BINARY[2]"] == b"\x00\x01\x02\xff"
