"""DELETE (RFC 9051 §6.3.5): removing a mailbox and its messages."""

from __future__ import annotations

import imaplib

from .conftest import Imap
from .helpers import list_lines


async def test_delete_mailbox_and_messages(imap: Imap) -> None:
    """DELETE removes the mailbox and its messages; it is no longer listed or selectable."""
    client = await imap.connect()
    await client.ok("CREATE Old")
    await imap.deliver(folder="Old")
    await client.ok("DELETE Old")
    assert "Old" not in list_lines(await client.ok('LIST "" *'))
    result = await client.command("SELECT Old")
    assert result.code == "NONEXISTENT"
    count = await imap.pool.fetchval("SELECT count(*) FROM messages")
    assert count == 0


async def test_delete_nonexistent(imap: Imap) -> None:
    """DELETE of a missing mailbox is NO [NONEXISTENT]."""
    client = await imap.connect()
    result = await client.command("DELETE Nope")
    assert result.status == "NO"
    assert result.code == "NONEXISTENT"


async def test_delete_inbox_refused(imap: Imap) -> None:
    """INBOX cannot be deleted, in any case."""
    client = await imap.connect()
    for name in ("INBOX", "inbox"):
        result = await client.command(f"DELETE {name}")
        assert result.status == "NO"
    assert "INBOX" in list_lines(await client.ok('LIST "" INBOX'))


async def test_delete_parent_keeps_children(imap: Imap) -> None:
    """Deleting a mailbox with children keeps the children; the parent lists as \\Noselect (rev1)."""
    client = await imap.connect()
    await client.ok("CREATE Work/2025")
    await client.ok("DELETE Work")
    listed = list_lines(await client.ok('LIST "" "Work*"'))
    assert "Work/2025" in listed
    assert "\\Noselect" in listed["Work"][0]
    rev2 = await imap.connect(enable="IMAP4rev2")
    assert "\\NonExistent" in list_lines(await rev2.ok('LIST "" "Work"'))["Work"][0]


async def test_delete_selected_mailbox_in_other_session(imap: Imap) -> None:
    """When another session deletes the mailbox this one has selected, this one is told on NOOP (BYE, or NO)."""
    a = await imap.connect()
    await a.ok("CREATE Doomed")
    b = await imap.connect(select="Doomed")
    await a.ok("DELETE Doomed")
    await b.send(b"X1 NOOP\r\n")
    lines = await b.read_until(lambda line: line.startswith((b"* BYE", b"X1 ")))
    assert lines[-1].startswith((b"* BYE", b"X1 NO")), lines
    await imap.assert_serves()


async def test_delete_then_create_is_empty(imap: Imap) -> None:
    """A mailbox created again after DELETE starts empty, UIDs from 1."""
    client = await imap.connect()
    await client.ok("CREATE Temp")
    await imap.deliver(folder="Temp")
    await imap.deliver(folder="Temp")
    await client.ok("DELETE Temp")
    await client.ok("CREATE Temp")
    result = await client.ok("SELECT Temp")
    assert b"* 0 EXISTS" in result.untagged
    assert result.code_value("UIDNEXT") == "1"


async def test_delete_with_imaplib(imap: Imap) -> None:
    """imaplib delete() of a created mailbox succeeds, a second time fails."""

    def script(conn: imaplib.IMAP4) -> tuple[str, str]:
        conn.create("Gone")
        first = conn.delete("Gone")[0]
        second = conn.delete("Gone")[0]
        return first, second

    assert await imap.imaplib(script) == ("OK", "NO")
