"""STARTTLS (RFC 9051 §6.2.1): upgrading the plain port, and what may not happen around it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import imaplib
import logging
import ssl

from .conftest import Imap
from .helpers import ImapClient, captured_logs


async def _upgrade(imap: Imap, client: ImapClient) -> None:
    result = await client.ok("STARTTLS")
    assert result.untagged == []
    await client.writer.start_tls(imap.client_tls, server_hostname="mail.example.com")


async def test_starttls_then_login(imap: Imap) -> None:
    """After STARTTLS the capabilities drop STARTTLS and LOGINDISABLED, and LOGIN works."""
    client = await imap.connect(None, tls=False)
    await _upgrade(imap, client)
    caps = (await client.ok("CAPABILITY")).lines("CAPABILITY")[0].split()
    assert b"STARTTLS" not in caps
    assert b"LOGINDISABLED" not in caps
    assert b"AUTH=PLAIN" in caps
    await client.login("bob@example.com", imap.bob_key)
    assert (await client.command("SELECT INBOX")).ok


async def test_starttls_on_tls_port_refused(imap: Imap) -> None:
    """STARTTLS on the implicit-TLS port is refused (BAD) and the session continues."""
    client = await imap.connect(None)
    assert (await client.command("STARTTLS")).status == "BAD"
    assert (await client.command("NOOP")).ok


async def test_starttls_twice_refused(imap: Imap) -> None:
    """A second STARTTLS inside TLS is refused (BAD)."""
    client = await imap.connect(None, tls=False)
    await _upgrade(imap, client)
    assert (await client.command("STARTTLS")).status == "BAD"


async def test_starttls_after_login_refused(imap: Imap) -> None:
    """STARTTLS is only valid before authentication (BAD once logged in)."""
    imap.cfg.imap.allow_plaintext_auth = True
    client = await imap.connect(tls=False)
    assert (await client.command("STARTTLS")).status == "BAD"


async def test_starttls_discards_pipelined_plaintext(imap: Imap) -> None:
    """A command pipelined in plaintext after STARTTLS is never run as if it came over TLS (BYE and close)."""
    client = await imap.connect(None, tls=False)
    await client.send(b"A1 STARTTLS\r\nA2 CAPABILITY\r\n")
    line = await client.read_line()
    if line.startswith(b"* BYE"):
        assert await client.closed()
        await imap.assert_serves()
        return
    assert line.startswith(b"A1 OK"), line
    await client.writer.start_tls(imap.client_tls, server_hostname="mail.example.com")
    result = await client.command("NOOP", tag="A3")
    assert not any(x.startswith(b"A2 ") for x in result.untagged), result.untagged


async def test_starttls_with_imaplib(imap: Imap) -> None:
    """A stock client (imaplib) upgrades with starttls() and logs in."""

    def script() -> str:
        conn = imaplib.IMAP4("127.0.0.1", imap.port, timeout=10)
        try:
            assert "LOGINDISABLED" in conn.capabilities
            conn.starttls(ssl_context=imap.client_tls)
            typ, _ = conn.login("bob@example.com", imap.bob_key)
            return str(typ)
        finally:
            conn.logout()

    assert await asyncio.to_thread(script) == "OK"


def _events(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    """What the daemon logged about the connections; the loop watchdog's lines (the test machine being
    slow, which the watchdog fixture judges on its own) are not about them."""
    return [r for r in records if not r.getMessage().startswith(("loop-blocked", "loop-starved"))]


def _client_hello() -> bytes:
    """The first flight of a real TLS client."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="mail.example.com")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


async def test_aborted_tls_handshakes_log_at_most_one_line_each(imap: Imap) -> None:
    """Garbage, half a ClientHello or a hang-up instead of a TLS handshake (after STARTTLS, or on the TLS
    port) costs one log line at most and never a traceback, from the daemon or from asyncio."""
    hello = _client_hello()
    aborts: list[tuple[bool, bytes | None]] = [
        (starttls, data) for starttls in (True, False) for data in (b"GET / HTTP/1.0\r\n\r\n", hello[:40], None)
    ]
    with captured_logs() as handler:
        for starttls, data in aborts:
            client = await ImapClient.connect(imap.port if starttls else imap.tls_port, greet=starttls)
            if starttls:
                assert (await client.command("STARTTLS")).ok
            if data is not None:
                await client.send(data)
                if data.startswith(b"GET"):
                    assert await client.closed()
            await client.close()
        await asyncio.sleep(0.5)  # let the daemon notice every hang-up
    records = _events(handler.records)
    ours = [r for r in records if not r.name.startswith(("asyncio", "hypothesis"))]
    assert len(records) <= len(aborts), [r.getMessage() for r in records]
    assert not [r for r in records if r.exc_info or r.levelno >= logging.ERROR], [
        (r.name, r.getMessage()) for r in records
    ]
    assert all("\n" not in r.getMessage() for r in ours)
    ended = [r.getMessage().rsplit("end=", 1)[-1] for r in ours if r.getMessage().startswith("imap-session")]
    assert len(ended) == 3
    assert all(e.startswith("tls-failed:") for e in ended), ended
    await imap.assert_serves()


async def _handshake(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, ssl.SSLObject]:
    """A TLS session run by hand over a plain socket, so the test can then send bytes that are not TLS."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="mail.example.com")
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            writer.write(outgoing.read())
            incoming.write(await asyncio.wait_for(reader.read(65536), 5))
    writer.write(outgoing.read())
    return reader, writer, tls


async def test_garbage_inside_tls_ends_the_session_quietly(imap: Imap) -> None:
    """Bytes that are not TLS records after a good handshake end the session with no traceback logged."""
    with captured_logs() as handler:
        for _ in range(3):
            reader, writer, _tls = await _handshake(imap.tls_port)
            writer.write(b"\x17\x03\x03\x00\x10" + b"not a TLS record" + b"\x00" * 64)
            await writer.drain()
            with contextlib.suppress(ConnectionError):
                while await asyncio.wait_for(reader.read(65536), 5):
                    pass
            writer.close()
        await asyncio.sleep(0.3)
        gc.collect()  # a task that died with an exception is reported when it is collected
        await asyncio.sleep(0.1)
    records = _events(handler.records)
    assert not [r for r in records if r.exc_info or r.levelno >= logging.ERROR], [
        (r.name, r.getMessage()) for r in records
    ]
    assert len(records) <= 3, [r.getMessage() for r in records]
    await imap.assert_serves()
