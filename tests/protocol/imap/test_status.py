"""STATUS (RFC 9051 §6.3.11, STATUS=SIZE RFC 8438): counters of a mailbox without selecting it."""

from __future__ import annotations

import imaplib
from typing import Any

from .conftest import Imap
from .helpers import make_message, status_items


async def test_status_all_items(imap: Imap) -> None:
    """MESSAGES, UIDNEXT, UIDVALIDITY, UNSEEN, DELETED, SIZE and RECENT describe the mailbox."""
    small, large = make_message(body="x\r\n"), make_message(body="y" * 5000 + "\r\n")
    await imap.deliver(small, flags=["\\Seen"])
    last = await imap.deliver(large, flags=["\\Deleted"])
    box = await imap.mailbox()
    client = await imap.connect()
    result = await client.ok("STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE RECENT)")
    (line,) = result.lines("STATUS")
    assert line.startswith(b'* STATUS "INBOX" (')
    assert status_items(line) == {
        "MESSAGES": 2,
        "UIDNEXT": last.uid + 1,
        "UIDVALIDITY": box["uidvalidity"],
        "UNSEEN": 1,
        "DELETED": 1,
        "SIZE": len(small) + len(large),
        "RECENT": 2,  # no session has selected INBOX yet
    }


async def test_status_follows_changes(imap: Imap) -> None:
    """STATUS reflects messages added, flagged and expunged by another session."""
    client = await imap.connect()
    other = await imap.connect(select="INBOX")
    assert status_items((await client.ok("STATUS INBOX (MESSAGES UNSEEN)")).lines("STATUS")[0]) == {
        "MESSAGES": 0,
        "UNSEEN": 0,
    }
    await imap.deliver()
    await imap.deliver()
    await other.ok("NOOP")
    await other.ok("STORE 1 +FLAGS (\\Seen \\Deleted)")
    assert status_items((await client.ok("STATUS INBOX (MESSAGES UNSEEN)")).lines("STATUS")[0]) == {
        "MESSAGES": 2,
        "UNSEEN": 1,
    }
    await other.ok("EXPUNGE")
    assert status_items((await client.ok("STATUS INBOX (MESSAGES UNSEEN)")).lines("STATUS")[0]) == {
        "MESSAGES": 1,
        "UNSEEN": 1,
    }


async def test_status_of_selected_mailbox(imap: Imap) -> None:
    """STATUS of the selected mailbox is answered too."""
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    assert status_items((await client.ok("STATUS INBOX (MESSAGES)")).lines("STATUS")[0]) == {"MESSAGES": 1}


async def test_status_nonexistent(imap: Imap) -> None:
    """STATUS of a missing mailbox is NO [NONEXISTENT]."""
    client = await imap.connect()
    result = await client.command("STATUS Nope (MESSAGES)")
    assert (result.status, result.code) == ("NO", "NONEXISTENT")


async def test_status_bad_items(imap: Imap) -> None:
    """An unknown item or an empty item list is BAD."""
    client = await imap.connect()
    assert (await client.command("STATUS INBOX (MESSAGES BOGUS)")).status == "BAD"
    assert (await client.command("STATUS INBOX ()")).status == "BAD"
    assert (await client.command("STATUS INBOX")).status == "BAD"


async def test_status_utf7_name(imap: Imap) -> None:
    """STATUS of a non-ASCII mailbox is answered with the name as the client spelled it (modified UTF-7)."""
    client = await imap.connect()
    await client.ok('CREATE "&AMk-t&AOk-"')
    (line,) = (await client.ok('STATUS "&AMk-t&AOk-" (MESSAGES)')).lines("STATUS")
    assert line == b'* STATUS "&AMk-t&AOk-" (MESSAGES 0)'


async def test_status_with_imaplib(imap: Imap) -> None:
    """imaplib status() parses the answer."""
    await imap.deliver()

    def script(conn: imaplib.IMAP4) -> Any:
        _typ, data = conn.status("INBOX", "(MESSAGES UNSEEN)")
        return data[0]

    assert await imap.imaplib(script) == b'"INBOX" (MESSAGES 1 UNSEEN 1)'


async def test_status_again_counts_what_changed_meanwhile(imap: Imap) -> None:
    """A session asking STATUS of one mailbox again and again gets the counts as they are each time: after a
    flag change, an expunge or a delivery made elsewhere, and the same counts while nothing changed."""
    for _ in range(3):
        await imap.deliver()
    poller = await imap.connect()
    ask = "STATUS INBOX (MESSAGES UNSEEN DELETED DELETED-STORAGE)"

    async def counts() -> dict[str, int]:
        (line,) = (await poller.ok(ask)).lines("STATUS")
        return status_items(line)

    first = await counts()
    assert (first["MESSAGES"], first["UNSEEN"], first["DELETED"]) == (3, 3, 0)
    assert await counts() == first
    other = await imap.connect(select="INBOX")
    await other.ok("STORE 1 +FLAGS.SILENT (\\Seen)")
    assert (await counts())["UNSEEN"] == 2
    await other.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    flagged = await counts()
    assert (flagged["UNSEEN"], flagged["DELETED"]) == (2, 1)
    assert flagged["DELETED-STORAGE"] > 0
    await other.ok("EXPUNGE")
    assert await counts() == {"MESSAGES": 2, "UNSEEN": 1, "DELETED": 0, "DELETED-STORAGE": 0}
    await imap.deliver()
    assert (await counts())["UNSEEN"] == 2
    assert (await poller.ok("STATUS INBOX (UNSEEN)")).lines("STATUS") == [b'* STATUS "INBOX" (UNSEEN 2)']
    assert (await poller.ok("STATUS INBOX (MESSAGES RECENT)")).lines("STATUS") == [
        b'* STATUS "INBOX" (MESSAGES 3 RECENT 1)'
    ]
