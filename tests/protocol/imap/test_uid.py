"""UID commands (RFC 9051 §6.4.9): FETCH, SEARCH, STORE, COPY, MOVE, EXPUNGE by UID; UID sets and "*"."""

from __future__ import annotations

import imaplib
from typing import Any

from .conftest import Imap


async def _gappy(imap: Imap) -> list[int]:
    """Five messages, the 2nd and 4th expunged: UIDs with gaps."""
    uids = [(await imap.deliver()).uid for _ in range(5)]
    client = await imap.connect(select="INBOX")
    await client.ok("STORE 2,4 +FLAGS.SILENT (\\Deleted)")
    await client.ok("EXPUNGE")
    await client.ok("LOGOUT")
    return [uids[0], uids[2], uids[4]]


async def test_uid_fetch_with_gaps(imap: Imap) -> None:
    """UID FETCH of a range answers only existing UIDs, always with the UID item, by message number."""
    uids = await _gappy(imap)
    client = await imap.connect(select="INBOX")
    fetched = (await client.ok(f"UID FETCH {uids[0]}:{uids[2]} FLAGS")).fetches()
    assert {n: item["UID"] for n, item in fetched.items()} == {1: str(uids[0]), 2: str(uids[1]), 3: str(uids[2])}


async def test_uid_star_is_largest_uid(imap: Imap) -> None:
    """In a UID set, * is the largest UID: N:* includes the last message even when N is above it."""
    uids = await _gappy(imap)
    client = await imap.connect(select="INBOX")
    assert set((await client.ok("UID FETCH * UID")).fetches()) == {3}
    assert set((await client.ok(f"UID FETCH {uids[2] + 100}:* UID")).fetches()) == {3}


async def test_uid_fetch_unknown_uids(imap: Imap) -> None:
    """UID FETCH of UIDs that do not exist answers nothing and OK (not an error)."""
    await _gappy(imap)
    client = await imap.connect(select="INBOX")
    result = await client.ok("UID FETCH 9999 FLAGS")
    assert result.fetches() == {}


async def test_uid_fetch_on_empty_mailbox(imap: Imap) -> None:
    """UID FETCH 1:* in an empty mailbox is OK with no data (message numbers would be BAD)."""
    client = await imap.connect(select="INBOX")
    assert (await client.ok("UID FETCH 1:* FLAGS")).fetches() == {}
    assert (await client.command("FETCH 1:* FLAGS")).status == "BAD"


async def test_uid_search(imap: Imap) -> None:
    """UID SEARCH answers UIDs, not message numbers; UID as a search key takes a UID set."""
    uids = await _gappy(imap)
    client = await imap.connect(select="INBOX")
    assert (await client.ok("UID SEARCH ALL")).search() == uids
    assert (await client.ok(f"SEARCH UID {uids[1]}:*")).search() == [2, 3]
    assert (await client.ok(f"UID SEARCH UID {uids[0]},{uids[2]}")).search() == [uids[0], uids[2]]


async def test_uid_store_copy_move_expunge(imap: Imap) -> None:
    """UID STORE, UID COPY, UID MOVE and UID EXPUNGE act on the named UIDs."""
    uids = await _gappy(imap)
    client = await imap.connect(select="INBOX")
    await client.ok(f"UID STORE {uids[2]} +FLAGS.SILENT (\\Flagged)")
    assert [m["flags"] for m in await imap.stored()] == [[], [], ["\\Flagged"]]
    copy = await client.ok(f"UID COPY {uids[1]}:{uids[2]} Archive")
    assert (copy.code or "").endswith(f"{uids[1]},{uids[2]} 1:2") or (copy.code or "").endswith(
        f"{uids[1]}:{uids[2]} 1:2"
    )
    move = await client.ok(f"UID MOVE {uids[0]} Trash")
    assert move.lines("EXPUNGE") == [b"* 1 EXPUNGE"]
    await client.ok("UID STORE 1:* +FLAGS.SILENT (\\Deleted)")
    expunge = await client.ok(f"UID EXPUNGE {uids[2]}")
    assert expunge.lines("EXPUNGE") == [b"* 2 EXPUNGE"]
    assert [m["uid"] for m in await imap.stored()] == [uids[1]]


async def test_uid_unknown_subcommand(imap: Imap) -> None:
    """UID with a command that has no UID form is BAD."""
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    assert (await client.command("UID NOOP")).status == "BAD"
    assert (await client.command("UID SELECT INBOX")).status == "BAD"


async def test_uid_with_imaplib(imap: Imap) -> None:
    """imaplib uid('SEARCH'/'FETCH') round trip."""
    first = await imap.deliver()

    def script(conn: imaplib.IMAP4) -> tuple[list[Any], list[Any]]:
        conn.select("INBOX")
        found = conn.uid("SEARCH", "ALL")[1]
        fetched = conn.uid("FETCH", found[0].decode(), "(FLAGS)")[1]
        return found, fetched

    found, fetched = await imap.imaplib(script)
    assert found == [str(first.uid).encode()]
    assert fetched == [f"1 (UID {first.uid} FLAGS (\\Recent))".encode()]
