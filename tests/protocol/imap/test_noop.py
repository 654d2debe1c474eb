"""NOOP and CHECK (RFC 9051 §6.1.2, §6.4.1 of IMAP4rev1): polling for mailbox changes."""

from __future__ import annotations

import asyncio

from .conftest import Imap


async def test_noop_in_every_state(imap: Imap) -> None:
    """NOOP succeeds before login, after login, and with a mailbox selected."""
    client = await imap.connect(None)
    assert (await client.command("NOOP")).ok
    await client.login("bob@example.com", imap.bob_key)
    assert (await client.command("NOOP")).ok
    await client.ok("SELECT INBOX")
    result = await client.ok("NOOP")
    assert result.untagged == []


async def test_noop_reports_new_message(imap: Imap) -> None:
    """A message delivered while a mailbox is selected is announced as EXISTS on the next NOOP."""
    client = await imap.connect(select="INBOX")
    await imap.deliver()
    result = await client.ok("NOOP")
    assert b"* 1 EXISTS" in result.untagged


async def test_noop_reports_flag_change_from_other_session(imap: Imap) -> None:
    """A flag set by another session shows up as an untagged FETCH with FLAGS (and UID) on NOOP."""
    stored = await imap.deliver()
    a = await imap.connect(select="INBOX")
    b = await imap.connect(select="INBOX")
    await a.ok("STORE 1 +FLAGS (\\Flagged)")
    result = await b.ok("NOOP")
    fetches = result.fetches()
    assert fetches[1]["FLAGS"] == ["\\Flagged"]
    assert fetches[1]["UID"] == str(stored.uid)
    # Nothing is reported twice, and the session that made the change does not hear it again.
    assert (await b.ok("NOOP")).untagged == []
    assert (await a.ok("NOOP")).untagged == []


async def test_noop_reports_expunge_from_other_session(imap: Imap) -> None:
    """A message expunged by another session is announced as EXPUNGE on NOOP."""
    await imap.deliver()
    await imap.deliver()
    a = await imap.connect(select="INBOX")
    b = await imap.connect(select="INBOX")
    await a.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    await a.ok("EXPUNGE")
    result = await b.ok("NOOP")
    assert b"* 1 EXPUNGE" in result.untagged
    fetched = (await b.ok("FETCH 1:* UID")).fetches()
    assert list(fetched) == [1]


async def test_check_is_noop_when_selected(imap: Imap) -> None:
    """CHECK is accepted with a mailbox selected (and reports changes like NOOP), refused otherwise."""
    client = await imap.connect()
    assert (await client.command("CHECK")).status == "BAD"
    await client.ok("SELECT INBOX")
    await imap.deliver()
    result = await client.ok("CHECK")
    assert b"* 1 EXISTS" in result.untagged


async def test_pipelined_commands_are_all_answered_in_order(imap: Imap) -> None:
    """A client that sends many commands at once (mbsync, imaptest) gets every answer, in order, each
    with its own untagged data, including a half-sent last command answered once it is complete."""
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    batch = b"".join(b"P%02d NOOP\r\nQ%02d FETCH 1 (FLAGS)\r\n" % (n, n) for n in range(40))
    await client.send(batch + b"R00 STATUS INB")
    for n in range(40):
        assert (await client.read_tagged(f"P{n:02d}")).ok
        fetched = await client.read_tagged(f"Q{n:02d}")
        assert fetched.ok
        assert list(fetched.fetches()) == [1]
    await asyncio.sleep(0.2)
    await client.send(b"OX (MESSAGES)\r\n")
    status = await client.read_tagged("R00")
    assert status.ok
    assert status.lines("STATUS") == [b'* STATUS "INBOX" (MESSAGES 1)']
