"""RENAME (RFC 9051 §6.3.6): renaming mailboxes with their children and messages, and INBOX's special case."""

from __future__ import annotations

import imaplib

from .conftest import Imap
from .helpers import list_lines


async def test_rename_keeps_messages_and_uids(imap: Imap) -> None:
    """A renamed mailbox keeps its messages, UIDs and UIDVALIDITY; the old name is gone."""
    client = await imap.connect()
    await client.ok("CREATE Old")
    stored = await imap.deliver(folder="Old")
    before = await imap.mailbox("Old")
    await client.ok("RENAME Old New")
    after = await imap.mailbox("New")
    assert after["uidvalidity"] == before["uidvalidity"]
    result = await client.ok("SELECT New")
    assert b"* 1 EXISTS" in result.untagged
    assert (await client.ok("FETCH 1 UID")).fetches()[1]["UID"] == str(stored.uid)
    assert (await client.command("STATUS Old (MESSAGES)")).code == "NONEXISTENT"


async def test_rename_moves_children(imap: Imap) -> None:
    """Renaming a parent renames every mailbox below it."""
    client = await imap.connect()
    await client.ok("CREATE Work/2024/Q1")
    await client.ok("RENAME Work Archive/Work")
    listed = list_lines(await client.ok('LIST "" "*"'))
    assert {"Archive/Work", "Archive/Work/2024", "Archive/Work/2024/Q1"} <= set(listed)
    assert not any(name.startswith("Work") for name in listed)


async def test_rename_makes_missing_parents(imap: Imap) -> None:
    """RENAME to a name below mailboxes that do not exist makes them, as CREATE does (RFC 9051 §6.3.6)."""
    client = await imap.connect()
    await client.ok("CREATE Work")
    await client.ok("RENAME Work Top/Deep/Work")
    listed = list_lines(await client.ok('LIST "" "Top*"'))
    assert set(listed) == {"Top", "Top/Deep", "Top/Deep/Work"}
    assert not any("\\Noselect" in attrs for attrs, _ in listed.values())
    result = await client.command("RENAME Top Top/Below")
    assert (result.status, result.code) == ("NO", "CANNOT")  # not below itself


async def test_rename_refusals(imap: Imap) -> None:
    """Missing source is NO [NONEXISTENT]; an existing target or INBOX as target is NO [ALREADYEXISTS]."""
    client = await imap.connect()
    await client.ok("CREATE A")
    await client.ok("CREATE B")
    missing = await client.command("RENAME Nope X")
    assert (missing.status, missing.code) == ("NO", "NONEXISTENT")
    exists = await client.command("RENAME A B")
    assert (exists.status, exists.code) == ("NO", "ALREADYEXISTS")
    inbox = await client.command("RENAME A INBOX")
    assert (inbox.status, inbox.code) == ("NO", "ALREADYEXISTS")


async def test_rename_child_collision(imap: Imap) -> None:
    """RENAME a b when a/x and b/x both exist is refused with NO [ALREADYEXISTS], and nothing changes."""
    client = await imap.connect()
    for name in ("a", "a/x", "b/x"):
        await client.ok(f"CREATE {name}")
    result = await client.command("RENAME a b")
    assert (result.status, result.code) == ("NO", "ALREADYEXISTS")
    assert imap.errors.records == []


async def test_rename_inbox_moves_messages(imap: Imap) -> None:
    """RENAME INBOX moves its messages to the new mailbox; INBOX stays, empty."""
    await imap.deliver()
    await imap.deliver()
    client = await imap.connect()
    await client.ok("RENAME INBOX Saved")
    assert b"* 2 EXISTS" in (await client.ok("SELECT Saved")).untagged
    assert b"* 0 EXISTS" in (await client.ok("SELECT INBOX")).untagged


async def test_rename_modified_utf7(imap: Imap) -> None:
    """Renaming to a modified UTF-7 name stores the UTF-8 name."""
    client = await imap.connect()
    await client.ok("CREATE Plain")
    await client.ok('RENAME Plain "&AMk-t&AOk-"')
    assert (await imap.mailbox("Été"))["name"] == "Été"


async def test_rename_seen_by_other_session(imap: Imap) -> None:
    """A second session lists the new name after the rename."""
    a = await imap.connect()
    b = await imap.connect()
    await a.ok("CREATE Before")
    await a.ok("RENAME Before After")
    listed = list_lines(await b.ok('LIST "" "*"'))
    assert "After" in listed
    assert "Before" not in listed


async def test_rename_with_imaplib(imap: Imap) -> None:
    """imaplib rename() works."""

    def script(conn: imaplib.IMAP4) -> str:
        conn.create("x1")
        return str(conn.rename("x1", "x2")[0])

    assert await imap.imaplib(script) == "OK"
