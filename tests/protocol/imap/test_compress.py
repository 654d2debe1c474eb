"""COMPRESS=DEFLATE (RFC 4978): after COMPRESS DEFLATE both directions are raw DEFLATE streams, over TLS or not,
spoken here by a client made of Python's zlib on the test's socket."""

from __future__ import annotations

import asyncio
import contextlib
import zlib

from .conftest import Imap
from .helpers import ImapClient, make_message


class _DeflateWriter:
    """A StreamWriter stand-in that DEFLATEs what is written (one sync flush per write, as a client does)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.inner = writer
        self.deflate = zlib.compressobj(6, zlib.DEFLATED, -15)

    def write(self, data: bytes) -> None:
        self.inner.write(self.deflate.compress(data) + self.deflate.flush(zlib.Z_SYNC_FLUSH))

    def write_raw(self, data: bytes) -> None:
        self.inner.write(data)

    async def drain(self) -> None:
        await self.inner.drain()

    def close(self) -> None:
        self.inner.close()

    async def wait_closed(self) -> None:
        await self.inner.wait_closed()


async def _pump(raw: asyncio.StreamReader, plain: asyncio.StreamReader, wire: list[int]) -> None:
    inflate = zlib.decompressobj(-15)
    with contextlib.suppress(ConnectionError, OSError):
        while chunk := await raw.read(65536):
            wire[0] += len(chunk)
            plain.feed_data(inflate.decompress(chunk))
    plain.feed_eof()


async def compressed(client: ImapClient) -> ImapClient:
    """COMPRESS DEFLATE on ``client``; the same connection as a client that speaks DEFLATE from then on."""
    result = await client.ok("COMPRESS DEFLATE")
    assert result.untagged == []
    plain = asyncio.StreamReader(limit=64 * 1024 * 1024)
    wire = [0]
    pump = asyncio.get_running_loop().create_task(_pump(client.reader, plain, wire))
    other = ImapClient(plain, _DeflateWriter(client.writer))  # type: ignore[arg-type]
    other._n = 100
    other.pump, other.wire = pump, wire  # type: ignore[attr-defined]
    return other


async def test_capability_after_login_only(imap: Imap) -> None:
    """COMPRESS=DEFLATE is offered once logged in, not before (and COMPRESS before login is BAD)."""
    client = await imap.connect(user=None)
    assert b"COMPRESS=DEFLATE" not in client.greeting
    assert (await client.command("COMPRESS DEFLATE")).status == "BAD"
    client = await imap.connect()
    assert b"COMPRESS=DEFLATE" in (await client.ok("CAPABILITY")).lines("CAPABILITY")[0].split()


async def test_deflate_both_ways_over_tls_and_plain(imap: Imap) -> None:
    """After COMPRESS DEFLATE, commands and responses are DEFLATE streams, on the TLS port and the plain one."""
    raw = make_message(subject="squeezed", body=("line of text to compress\r\n" * 2000).encode())
    await imap.deliver(raw)
    imap.cfg.imap.allow_plaintext_auth = True  # the plain port logs in without STARTTLS
    try:
        for tls in (True, False):
            client = await compressed(await imap.connect(tls=tls))
            assert (client.writer.inner.get_extra_info("ssl_object") is not None) == tls  # type: ignore[attr-defined]
            await client.ok("SELECT INBOX")
            got = (await client.ok("FETCH 1 (BODY.PEEK[] ENVELOPE)")).fetches()[1]
            assert got["BODY[]"] == raw
            assert (await client.ok("NOOP")).ok
            await client.ok("LOGOUT")
    finally:
        imap.cfg.imap.allow_plaintext_auth = False


async def test_a_large_response_is_compressed_and_whole(imap: Imap) -> None:
    """A 20 MB body goes out compressed (far fewer octets on the wire) and arrives byte for byte, without
    holding the event loop (the watchdog fails the test otherwise)."""
    line = b"The quick brown fox jumps over the lazy dog 0123456789.\r\n"
    raw = make_message(subject="big") + line * (20 * 1024 * 1024 // len(line))
    await imap.deliver(raw)
    client = await compressed(await imap.connect(select="INBOX"))
    got = (await client.ok("FETCH 1 BODY.PEEK[]", wait=60)).fetches()[1]
    assert got["BODY[]"] == raw
    assert client.wire[0] < len(raw) // 20  # type: ignore[attr-defined]  # repetitive text: DEFLATE takes >95%


async def test_compress_twice_and_unknown_mechanism(imap: Imap) -> None:
    """A second COMPRESS is NO [COMPRESSIONACTIVE] and an unknown mechanism BAD; the session goes on."""
    client = await imap.connect()
    assert (await client.command("COMPRESS LZMA")).status == "BAD"
    client = await compressed(client)
    result = await client.command("COMPRESS DEFLATE")
    assert (result.status, result.code) == ("NO", "COMPRESSIONACTIVE")
    assert (await client.ok("NOOP")).ok


async def test_pipelined_commands_after_compress_are_refused(imap: Imap) -> None:
    """Commands sent after COMPRESS before its answer (in clear) get COMPRESS refused, and run uncompressed."""
    client = await imap.connect()
    await client.send(b"A1 COMPRESS DEFLATE\r\nA2 NOOP\r\n")
    first = await client.read_tagged("A1")
    assert first.status == "NO"
    assert (await client.read_tagged("A2")).ok


async def test_a_huge_line_inflated_is_refused_and_the_session_goes_on(imap: Imap) -> None:
    """A line that inflates to 64 MB (a few KB on the wire) is BAD as any overlong line; the next command works."""
    client = await compressed(await imap.connect())
    writer = client.writer
    assert isinstance(writer, _DeflateWriter)
    writer.write(b"A7 NOOP ")
    for _ in range(64):
        writer.write(b"x" * (1024 * 1024))
    writer.write(b"\r\nA8 NOOP\r\n")
    await writer.drain()
    assert (await client.read_tagged("A7", wait=60)).status == "BAD"
    assert (await client.read_tagged("A8", wait=30)).ok


async def test_broken_deflate_data_ends_only_that_session(imap: Imap) -> None:
    """Bytes that are not DEFLATE end the session with one log line; other sessions go on."""
    other = await imap.connect()
    client = await compressed(await imap.connect())
    writer = client.writer
    assert isinstance(writer, _DeflateWriter)
    writer.write_raw(b"\xff" * 64)
    await writer.drain()
    assert await client.closed(10)
    assert (await other.ok("NOOP")).ok
    assert imap.errors.records == []
