"""LOGOUT (RFC 9051 §6.1.3): BYE, tagged OK, then the server closes the connection."""

from __future__ import annotations

import imaplib

from .conftest import Imap


async def test_logout_says_bye_then_ok_then_closes(imap: Imap) -> None:
    """LOGOUT answers an untagged BYE before the tagged OK, and the server closes the connection."""
    client = await imap.connect(select="INBOX")
    result = await client.command("LOGOUT")
    assert result.ok
    assert result.untagged[-1].startswith(b"* BYE")
    assert await client.closed()


async def test_logout_before_login(imap: Imap) -> None:
    """LOGOUT works in the not-authenticated state too, on either port."""
    for tls in (True, False):
        client = await imap.connect(None, tls=tls)
        result = await client.command("LOGOUT")
        assert result.ok
        assert result.untagged[0].startswith(b"* BYE")
        assert await client.closed()


async def test_logout_frees_the_per_user_slot(imap: Imap) -> None:
    """After LOGOUT the user's connection slot is free again (max_connections_per_user is honoured)."""
    imap.cfg.imap.max_connections_per_user = 1
    first = await imap.connect()
    second = await imap.connect(None)
    refused = await second.command(f"LOGIN bob@example.com {imap.bob_key}")
    assert refused.status == "NO"
    assert refused.code == "LIMIT"
    await first.ok("LOGOUT")
    assert await first.closed()
    assert (await second.command(f"LOGIN bob@example.com {imap.bob_key}")).ok


async def test_logout_with_imaplib(imap: Imap) -> None:
    """A stock client's logout gets BYE (imaplib reports it as the logout result)."""

    def script(conn: imaplib.IMAP4) -> str:
        typ, _ = conn.logout()
        return str(typ)

    assert await imap.imaplib(script) == "BYE"
