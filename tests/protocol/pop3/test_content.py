"""Message bytes on the wire: dot-stuffing, CRLF line ends, and octet counts that match what RETR sends."""

from __future__ import annotations

import poplib
import re

import pytest

from .helpers import ALICE, Pop3, blocking, crlf, logged_in, make_message, unstuff

# name -> raw bytes as stored; each is what some real mail looks like on disk or on the wire.
CASES: dict[str, bytes] = {
    "dot-lines": make_message(body=".hidden\r\n.\r\n..double\r\n. space\r\nend\r\n"),
    "dot-last-line-no-newline": make_message(body="text\r\n."),
    "only-dots": make_message(body=".\r\n..\r\n...\r\n"),
    "8bit-latin1": make_message(body=b"Caf\xe9 cr\xe8me br\xfbl\xe9e \xff\xfe\x80\r\n"),
    "8bit-utf8-header-and-body": make_message(subject="Grüße aus Köln 日本語", body="Größe: 42 € — ✓\r\n"),
    "nul-and-control-bytes": make_message(body=b"a\x00b\x01c\x7f\r\n"),
    "bare-lf": b"From: carol@remote.example\nSubject: bare LF\n\nline one\nline two\n.dot\n",
    "bare-lf-no-final-newline": b"Subject: bare LF, no final newline\n\nlast line",
    "crlf-no-final-newline": make_message(body="no newline at the end"),
    "mixed-line-ends": b"Subject: mixed\r\n\nlf line\r\ncrlf line\nbare\rcr inside\r\n",
    "cr-before-crlf": b"Subject: cr\r\n\r\nline\r\r\nend\r",
    "long-line": make_message(body="y" * 20000 + "\r\nshort\r\n"),
    "empty-body-lines": make_message(body="\r\n\r\n\r\n"),
    # Prose full of dots (URLs, sentences), and one line deep inside that starts with a dot.
    "many-dots-one-dot-line": make_message(body="See https://www.example.org/a.b.c. Done.\r\n" * 40 + ".x\r\nend\r\n"),
    # Base64-like text without dots, then a dot line at the very end.
    "no-dots-then-dot-line": make_message(body="QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\r\n" * 200 + ".\r\n"),
}


def stuffed_lines(wire: bytes) -> int:
    return sum(1 for line in wire.split(b"\r\n") if line.startswith(b"."))


@pytest.mark.parametrize("name", list(CASES))
async def test_retr_bytes_and_octet_counts(pop3: Pop3, name: str) -> None:
    """RETR sends CRLF lines, dot-stuffed; LIST, STAT and '+OK n octets' count exactly those bytes before stuffing."""
    raw = CASES[name]
    await pop3.deliver(ALICE, make_message(subject="before"))  # not message 1, to catch numbering slips
    await pop3.deliver(ALICE, raw)
    client = await logged_in(pop3)
    list_reply = await client.cmd("LIST 2")
    size = int(list_reply.split()[2])
    status, wire = await client.multi("RETR 2")
    assert status == f"+OK {size} octets"
    # Every line ends in CRLF, no bare CR-less LF, and no line is a lone "." before the end.
    assert re.search(rb"(?<!\r)\n", wire) is None
    assert b"\r\n.\r\n" not in b"\r\n" + wire
    assert unstuff(wire) == crlf(raw)
    assert size == len(unstuff(wire)) == len(wire) - stuffed_lines(wire)
    first = len(crlf(make_message(subject="before")))
    assert await client.cmd("STAT") == f"+OK 2 {first + size}"
    assert (await client.multi("LIST"))[1] == f"1 {first}\r\n2 {size}\r\n".encode()


async def test_dot_stuffing_on_the_wire(pop3: Pop3) -> None:
    """Lines starting with '.' get one more '.', so a line that is just '.' does not end the message early."""
    await pop3.deliver(ALICE, CASES["dot-lines"])
    client = await logged_in(pop3)
    _, wire = await client.multi("RETR 1")
    assert wire.endswith(b"\r\n\r\n..hidden\r\n..\r\n...double\r\n.. space\r\nend\r\n")
    # The client read on past the stuffed lone dot: the last line is the message's own "end".
    assert unstuff(wire) == CASES["dot-lines"]


async def test_final_line_gets_crlf(pop3: Pop3) -> None:
    """A message without a final newline gets a CRLF before the terminating '.', counted in its size."""
    raw = CASES["crlf-no-final-newline"]
    await pop3.deliver(ALICE, raw)
    client = await logged_in(pop3)
    assert await client.cmd("LIST 1") == f"+OK 1 {len(raw) + 2}"
    status, wire = await client.multi("RETR 1")
    assert status == f"+OK {len(raw) + 2} octets"
    assert wire == raw + b"\r\n"
    assert client.transcript[-2:] == [b"no newline at the end\r\n", b".\r\n"]


async def test_bare_lf_counted_as_crlf(pop3: Pop3) -> None:
    """Each bare LF of a stored message is one more octet in LIST, because RETR sends it as CRLF."""
    raw = CASES["bare-lf"]
    await pop3.deliver(ALICE, raw)
    client = await logged_in(pop3)
    lines = raw.count(b"\n")
    assert await client.cmd("LIST 1") == f"+OK 1 {len(raw) + lines}"


async def test_8bit_octets_not_characters(pop3: Pop3) -> None:
    """Sizes of 8-bit messages are octets, and the bytes arrive unchanged (no charset conversion)."""
    raw = CASES["8bit-utf8-header-and-body"]
    await pop3.deliver(ALICE, raw)
    client = await logged_in(pop3)
    assert await client.cmd("LIST 1") == f"+OK 1 {len(raw)}"
    assert len(raw) > len(raw.decode("utf-8"))
    assert unstuff((await client.multi("RETR 1"))[1]) == raw


async def test_top_of_8bit_and_dot_message(pop3: Pop3) -> None:
    """TOP sends 8-bit headers unchanged and dot-stuffs the body lines it sends."""
    raw = make_message(subject="Grüße", body=".one\r\ntwo\r\n")
    await pop3.deliver(ALICE, raw)
    client = await logged_in(pop3)
    _, wire = await client.multi("TOP 1 1")
    head = raw[: raw.index(b"\r\n\r\n") + 4]
    assert wire == head + b"..one\r\n"


async def test_octets_via_poplib(pop3: Pop3) -> None:
    """poplib's octet count for RETR (stuffing removed) equals the size LIST announced, for every case."""
    names = [n for n in CASES if n != "long-line"]  # poplib refuses lines over 2048 octets
    for name in names:
        await pop3.deliver(ALICE, CASES[name])

    def talk() -> tuple[list[bytes], list[tuple[bytes, list[bytes], int]]]:
        client = poplib.POP3_SSL("127.0.0.1", pop3.pop3s, context=pop3.client_tls, timeout=10)
        try:
            client.user(ALICE)
            client.pass_(pop3.alice_key)
            listing = client.list()[1]
            return listing, [client.retr(n) for n in range(1, len(names) + 1)]
        finally:
            client.quit()

    listing, retrieved = await blocking(talk)
    for name, line, (resp, lines, octets) in zip(names, listing, retrieved, strict=True):
        size = int(line.split()[1])
        assert resp == f"+OK {size} octets".encode(), name
        assert octets == size, name
        assert b"".join(x + b"\r\n" for x in lines) == crlf(CASES[name]), name
