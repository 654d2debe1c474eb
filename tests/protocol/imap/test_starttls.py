"""STARTTLS (RFC 9051 §6.2.1): upgrading the plain port, and what may not happen around it."""

from __future__ import annotations

import asyncio
import imaplib

from .conftest import Imap
from .helpers import ImapClient


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
