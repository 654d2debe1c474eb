"""CLOSE and UNSELECT (RFC 9051 §6.4.1, §6.4.2): leaving the selected mailbox, with or without expunging."""

from __future__ import annotations

import imaplib

from .conftest import Imap


async def test_close_expunges_silently(imap: Imap) -> None:
    """CLOSE removes \\Deleted messages without EXPUNGE responses and returns to the authenticated state."""
    for _ in range(3):
        await imap.deliver()
    client = await imap.connect(select="INBOX")
    await client.ok("STORE 1,3 +FLAGS.SILENT (\\Deleted)")
    result = await client.ok("CLOSE")
    assert result.lines("EXPUNGE") == []
    assert [m["uid"] for m in await imap.stored()] == [2]
    assert (await client.command("FETCH 1 FLAGS")).status == "BAD"
    assert (await client.command("SELECT INBOX")).ok


async def test_close_in_examine_does_not_expunge(imap: Imap) -> None:
    """CLOSE after EXAMINE leaves \\Deleted messages in place."""
    await imap.deliver(flags=["\\Deleted"])
    client = await imap.connect()
    await client.ok("EXAMINE INBOX")
    await client.ok("CLOSE")
    assert len(await imap.stored()) == 1


async def test_unselect_does_not_expunge(imap: Imap) -> None:
    """UNSELECT leaves the mailbox without expunging \\Deleted messages."""
    await imap.deliver(flags=["\\Deleted"])
    client = await imap.connect(select="INBOX")
    result = await client.ok("UNSELECT")
    assert result.untagged == []
    assert len(await imap.stored()) == 1
    assert (await client.command("FETCH 1 FLAGS")).status == "BAD"


async def test_close_and_unselect_need_selected_mailbox(imap: Imap) -> None:
    """CLOSE and UNSELECT without a selected mailbox are BAD."""
    client = await imap.connect()
    assert (await client.command("CLOSE")).status == "BAD"
    assert (await client.command("UNSELECT")).status == "BAD"


async def test_close_seen_by_other_session(imap: Imap) -> None:
    """Another session with the mailbox selected hears EXPUNGE for what CLOSE removed."""
    await imap.deliver()
    await imap.deliver()
    a = await imap.connect(select="INBOX")
    b = await imap.connect(select="INBOX")
    await a.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    await a.ok("CLOSE")
    assert b"* 2 EXPUNGE" in (await b.ok("NOOP")).untagged


async def test_no_updates_after_close(imap: Imap) -> None:
    """After CLOSE, deliveries to the former mailbox produce no untagged responses."""
    client = await imap.connect(select="INBOX")
    await client.ok("CLOSE")
    await imap.deliver()
    assert (await client.ok("NOOP")).untagged == []


async def test_close_with_imaplib(imap: Imap) -> None:
    """imaplib close() expunges \\Deleted messages."""
    await imap.deliver(flags=["\\Deleted"])
    await imap.deliver()

    def script(conn: imaplib.IMAP4) -> str:
        conn.select("INBOX")
        return str(conn.close()[0])

    assert await imap.imaplib(script) == "OK"
    assert len(await imap.stored()) == 1
