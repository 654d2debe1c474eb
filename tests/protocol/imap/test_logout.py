"""LOGOUT (RFC 9051 §6.1.3): BYE, tagged OK, then the server closes the connection."""

from __future__ import annotations

import asyncio
import imaplib

from .conftest import Imap
from .helpers import make_message


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


async def test_shutdown_lets_the_command_in_progress_answer_before_bye(imap: Imap) -> None:
    """A shutdown while a STORE runs lets the STORE answer first, then says BYE; an idle session hears BYE at once."""
    await imap.deliver(make_message(subject="flag me"))
    busy = await imap.connect(select="INBOX")
    idle = await imap.connect()
    box = await imap.mailbox()
    async with imap.pool.acquire() as conn, conn.transaction():
        # Hold the mailbox row, so the STORE below is still running when the shutdown starts.
        await conn.execute("SELECT 1 FROM mailboxes WHERE id = $1 FOR UPDATE", box["id"])
        await busy.send(b"A1 STORE 1 +FLAGS (\\Flagged)\r\n")
        await asyncio.sleep(0.2)
        stopping = asyncio.ensure_future(imap.server.stop(grace=5))
        assert (await idle.read_line()).startswith(b"* BYE")  # waiting for its next command: at once
    lines = await busy.read_until(lambda line: line.startswith(b"* BYE"))
    assert [line.split(b" ")[0] for line in lines[-2:]] == [b"A1", b"*"], lines
    assert lines[-2].startswith(b"A1 OK")
    await stopping
    assert "\\Flagged" in (await imap.stored())[0]["flags"]
