"""MOVE and UID MOVE (RFC 9051 §6.4.8, RFC 6851): COPYUID first, then EXPUNGE for each moved message."""

from __future__ import annotations

import imaplib

from .conftest import Imap
from .helpers import make_message


async def test_move_reports_copyuid_then_expunges(imap: Imap) -> None:
    """MOVE sends OK [COPYUID ...] untagged, then EXPUNGE per message, and the messages change folder."""
    raws = [make_message(subject=f"m{i}") for i in range(3)]
    uids = [(await imap.deliver(raw)).uid for raw in raws]
    client = await imap.connect(select="INBOX")
    result = await client.ok("MOVE 1:2 Archive")
    assert result.untagged[0].startswith(b"* OK [COPYUID ")
    assert f" {uids[0]}:{uids[1]} 1:2]".encode() in result.untagged[0]
    assert result.lines("EXPUNGE") == [b"* 1 EXPUNGE", b"* 1 EXPUNGE"]
    assert [m["raw"] for m in await imap.stored("Archive")] == raws[:2]
    assert [m["raw"] for m in await imap.stored()] == raws[2:]
    assert list((await client.ok("FETCH 1:* UID")).fetches()) == [1]


async def test_uid_move(imap: Imap) -> None:
    """UID MOVE moves by UID and keeps flags."""
    await imap.deliver()
    second = await imap.deliver(flags=["\\Flagged"])
    client = await imap.connect(select="INBOX")
    result = await client.ok(f"UID MOVE {second.uid} Trash")
    assert result.lines("EXPUNGE") == [b"* 2 EXPUNGE"]
    assert (await imap.stored("Trash"))[0]["flags"] == ["\\Flagged"]


async def test_move_seen_by_both_mailboxes_watchers(imap: Imap) -> None:
    """A session on the source hears EXPUNGE, a session on the target hears EXISTS."""
    await imap.deliver()
    source = await imap.connect(select="INBOX")
    target = await imap.connect(select="Archive")
    mover = await imap.connect(select="INBOX")
    await mover.ok("MOVE 1 Archive")
    assert (await source.ok("NOOP")).lines("EXPUNGE") == [b"* 1 EXPUNGE"]
    assert b"* 1 EXISTS" in (await target.ok("NOOP")).untagged


async def test_move_refusals(imap: Imap) -> None:
    """MOVE to a missing mailbox is NO [TRYCREATE]; MOVE from an EXAMINEd mailbox is NO; nothing moves."""
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    result = await client.command("MOVE 1 Nope")
    assert (result.status, result.code) == ("NO", "TRYCREATE")
    await client.ok("EXAMINE INBOX")
    assert (await client.command("MOVE 1 Archive")).status == "NO"
    assert len(await imap.stored()) == 1
    assert await imap.stored("Archive") == []


async def test_move_with_imaplib(imap: Imap) -> None:
    """imaplib's raw MOVE command moves the message."""
    await imap.deliver()

    def script(conn: imaplib.IMAP4) -> str:
        conn.select("INBOX")
        return str(conn._simple_command("MOVE", "1", "Junk")[0])

    assert await imap.imaplib(script) == "OK"
    assert len(await imap.stored("Junk")) == 1
    assert await imap.stored() == []
