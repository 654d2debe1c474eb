"""COPY and UID COPY (RFC 9051 §6.4.7, COPYUID RFC 4315): copies are independent messages."""

from __future__ import annotations

import imaplib

from .conftest import Imap
from .helpers import make_message


async def test_copy_returns_copyuid(imap: Imap) -> None:
    """COPY answers [COPYUID uidvalidity source-uids dest-uids]; copies keep flags, bytes and internal date."""
    raws = [make_message(subject=f"m{i}") for i in range(3)]
    uids = [(await imap.deliver(raw, flags=["\\Seen"] if i == 0 else [])).uid for i, raw in enumerate(raws)]
    archive = await imap.mailbox("Archive")
    client = await imap.connect(select="INBOX")
    result = await client.ok("COPY 1,3 Archive")
    name, validity, source, dest = (result.code or "").split()
    assert (name, int(validity)) == ("COPYUID", archive["uidvalidity"])
    assert source == f"{uids[0]},{uids[2]}"
    assert dest == "1:2"
    copies = await imap.stored("Archive")
    assert [m["raw"] for m in copies] == [raws[0], raws[2]]
    assert copies[0]["flags"] == ["\\Seen"]
    assert len(await imap.stored()) == 3


async def test_copies_independent_of_expunge(imap: Imap) -> None:
    """Expunging the originals leaves the copies untouched (and their bytes readable)."""
    raw = make_message(subject="keep me")
    await imap.deliver(raw)
    client = await imap.connect(select="INBOX")
    await client.ok("COPY 1 Archive")
    await client.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    await client.ok("EXPUNGE")
    assert await imap.stored() == []
    await client.ok("SELECT Archive")
    fetched = (await client.ok("FETCH 1 BODY.PEEK[]")).fetches()[1]
    assert fetched["BODY[]"] == raw
    # And the other way round: flags on the copy do not touch another copy.
    await client.ok("COPY 1 Trash")
    await client.ok("STORE 1 +FLAGS (\\Flagged)")
    assert (await imap.stored("Trash"))[0]["flags"] == []


async def test_copy_to_missing_mailbox_trycreate(imap: Imap) -> None:
    """COPY to a missing mailbox is NO [TRYCREATE]."""
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    result = await client.command("COPY 1 Nope")
    assert (result.status, result.code) == ("NO", "TRYCREATE")


async def test_copy_to_selected_mailbox_reports_exists(imap: Imap) -> None:
    """COPY into the selected mailbox itself reports the new EXISTS."""
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    result = await client.ok("COPY 1 INBOX")
    assert b"* 2 EXISTS" in result.untagged


async def test_copy_seen_by_other_session(imap: Imap) -> None:
    """A session with the target mailbox selected hears EXISTS for copies on NOOP."""
    await imap.deliver()
    watcher = await imap.connect(select="Archive")
    client = await imap.connect(select="INBOX")
    await client.ok("COPY 1 Archive")
    assert b"* 1 EXISTS" in (await watcher.ok("NOOP")).untagged


async def test_uid_copy(imap: Imap) -> None:
    """UID COPY copies by UID; unknown UIDs copy nothing and still succeed."""
    first = await imap.deliver()
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    result = await client.ok(f"UID COPY {first.uid} Archive")
    assert (result.code or "").startswith("COPYUID ")
    nothing = await client.ok("UID COPY 9999 Archive")
    assert nothing.code is None
    assert len(await imap.stored("Archive")) == 1


async def test_copy_bad_sequence(imap: Imap) -> None:
    """COPY of a message number beyond EXISTS is BAD."""
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    assert (await client.command("COPY 2 Archive")).status == "BAD"


async def test_copy_with_imaplib(imap: Imap) -> None:
    """imaplib copy() works."""
    await imap.deliver()

    def script(conn: imaplib.IMAP4) -> str:
        conn.select("INBOX")
        return str(conn.copy("1", "Trash")[0])

    assert await imap.imaplib(script) == "OK"
    assert len(await imap.stored("Trash")) == 1
