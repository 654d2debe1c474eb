"""SELECT and EXAMINE (RFC 9051 §6.3.2, §6.3.3): the mailbox's state, read-write and read-only."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from .conftest import Imap
from .helpers import Lit, make_message


async def test_select_reports_mailbox_state(imap: Imap) -> None:
    """SELECT answers FLAGS, EXISTS, RECENT, UNSEEN, PERMANENTFLAGS, UIDVALIDITY, UIDNEXT and [READ-WRITE]."""
    first = await imap.deliver(flags=["\\Seen"])
    await imap.deliver(flags=["$Label1"])
    box = await imap.mailbox()
    client = await imap.connect()
    result = await client.ok("SELECT INBOX")
    assert result.code == "READ-WRITE"
    flags = result.lines("FLAGS")[0]
    for flag in (b"\\Answered", b"\\Flagged", b"\\Deleted", b"\\Seen", b"\\Draft", b"$Label1"):
        assert flag in flags
    assert b"* 2 EXISTS" in result.untagged
    assert b"* 2 RECENT" in result.untagged
    assert result.code_value("UNSEEN") == "2"
    permanent = result.code_value("PERMANENTFLAGS")
    assert "\\*" in permanent
    assert "$Label1" in permanent
    assert int(result.code_value("UIDVALIDITY")) == box["uidvalidity"]
    assert int(result.code_value("UIDNEXT")) == first.uid + 2


async def test_select_empty_mailbox(imap: Imap) -> None:
    """An empty mailbox selects with 0 EXISTS, no UNSEEN, and UIDNEXT 1."""
    client = await imap.connect()
    result = await client.ok("SELECT Drafts")
    assert b"* 0 EXISTS" in result.untagged
    assert "UNSEEN" not in " ".join(result.codes())
    assert result.code_value("UIDNEXT") == "1"


async def test_select_inbox_any_case(imap: Imap) -> None:
    """INBOX is case-insensitive: SELECT inbox selects the INBOX."""
    await imap.deliver()
    client = await imap.connect()
    result = await client.ok("SELECT inbox")
    assert b"* 1 EXISTS" in result.untagged


async def test_select_nonexistent_leaves_no_mailbox_selected(imap: Imap) -> None:
    """SELECT of a missing mailbox is NO [NONEXISTENT], and the previously selected one is closed."""
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    result = await client.command("SELECT Nope")
    assert result.status == "NO"
    assert result.code == "NONEXISTENT"
    assert (await client.command("FETCH 1 FLAGS")).status == "BAD"


async def test_reselect_sends_closed(imap: Imap) -> None:
    """Selecting another mailbox while one is selected first reports OK [CLOSED]."""
    client = await imap.connect(select="INBOX")
    result = await client.ok("SELECT Sent")
    assert result.codes()[0] == "CLOSED"


async def test_examine_is_read_only(imap: Imap) -> None:
    """EXAMINE answers [READ-ONLY] with empty PERMANENTFLAGS; fetching a body there does not set \\Seen."""
    await imap.deliver()
    client = await imap.connect()
    result = await client.ok("EXAMINE INBOX")
    assert result.code == "READ-ONLY"
    assert result.code_value("PERMANENTFLAGS") == "()"
    fetched = (await client.ok("FETCH 1 (BODY[] FLAGS)")).fetches()
    assert fetched[1]["FLAGS"] == ["\\Recent"]
    store = await client.command("STORE 1 +FLAGS (\\Seen)")
    assert store.status == "NO"
    assert (await imap.stored())[0]["flags"] == []


async def test_select_rev2(imap: Imap) -> None:
    """An IMAP4rev2 session gets no RECENT and no UNSEEN code, but a LIST response for the mailbox."""
    await imap.deliver()
    client = await imap.connect(enable="IMAP4rev2")
    result = await client.ok("SELECT INBOX")
    assert result.lines("RECENT") == []
    assert "UNSEEN" not in " ".join(result.codes())
    assert result.lines("LIST") == [b'* LIST () "/" "INBOX"']


async def test_uidvalidity_stable_across_sessions(imap: Imap) -> None:
    """Two sessions, and a later one, see the same UIDVALIDITY for a mailbox."""
    values = set()
    for _ in range(3):
        client = await imap.connect()
        values.add((await client.ok("SELECT INBOX")).code_value("UIDVALIDITY"))
        await client.ok("LOGOUT")
    assert len(values) == 1


async def test_recreated_mailbox_has_new_uidvalidity(imap: Imap) -> None:
    """Deleting a mailbox and creating one of the same name gives a different UIDVALIDITY."""
    client = await imap.connect()
    await client.ok("CREATE Projects")
    before = (await client.ok("SELECT Projects")).code_value("UIDVALIDITY")
    await client.ok("UNSELECT")
    await client.ok("DELETE Projects")
    await client.ok("CREATE Projects")
    after = (await client.ok("SELECT Projects")).code_value("UIDVALIDITY")
    assert after != before


async def test_select_modified_utf7_name(imap: Imap) -> None:
    """A rev1 client selects a non-ASCII mailbox by its modified UTF-7 name."""
    client = await imap.connect()
    await client.ok('CREATE "R&AOk-sum&AOk-"')
    await imap.deliver(folder="Résumé")
    result = await client.ok('SELECT "R&AOk-sum&AOk-"')
    assert b"* 1 EXISTS" in result.untagged


async def test_select_internal_date_kept(imap: Imap) -> None:
    """A message delivered with an internal date shows it in FETCH INTERNALDATE after SELECT."""
    when = datetime(2026, 2, 1, 10, 0, 0, tzinfo=UTC)
    await imap.deliver(make_message(), internal_date=when)
    client = await imap.connect(select="INBOX")
    fetched = (await client.ok("FETCH 1 INTERNALDATE")).fetches()
    assert fetched[1]["INTERNALDATE"] == b" 1-Feb-2026 10:00:00 +0000"


async def test_session_end_releases_watchers(imap: Imap) -> None:
    """After a session selected several mailboxes and left, the server keeps no reference to it."""
    client = await imap.connect()
    for name in ("INBOX", "Sent", "Drafts", "Nope", "INBOX"):
        await client.command(f"SELECT {name}")
    await client.ok("LOGOUT")
    assert await client.closed()
    for _ in range(50):
        if not imap.server.sessions:
            break
        await asyncio.sleep(0.02)
    watchers = {mailbox: set(sessions) for mailbox, sessions in imap.server.hub._watchers.items() if sessions}
    assert watchers == {}


async def test_select_lists_each_keyword_once_in_order(imap: Imap) -> None:
    """FLAGS names every keyword in use once, sorted after the system flags, however the messages combine them."""
    for flags in (["$Zeta", "\\Seen"], ["$Alpha"], ["$Zeta", "$Alpha", "\\Flagged"], [], ["$Mid"], ["\\Seen"]):
        await imap.deliver(flags=flags)
    client = await imap.connect()
    result = await client.ok("SELECT INBOX")
    assert result.lines("FLAGS") == [b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Alpha $Mid $Zeta)"]
    assert result.code_value("UNSEEN") == "2"
    assert b"* 6 EXISTS" in result.untagged
    uids = [f["UID"] for f in (await client.ok("FETCH 1:* UID")).fetches().values()]
    assert uids == sorted(uids)


async def test_select_keeps_listing_a_keyword_once_used(imap: Imap) -> None:
    """A keyword set on a message stays in FLAGS and PERMANENTFLAGS after no message carries it (as Dovecot keeps
    it), and one copied in from another mailbox is listed there."""
    await imap.deliver(flags=["$Old"])
    client = await imap.connect(select="INBOX")
    await client.ok("STORE 1 -FLAGS ($Old)")
    await client.ok("STORE 1 +FLAGS ($Kept)")
    await client.ok("COPY 1 Archive")
    await client.ok("STORE 1 +FLAGS (\\Deleted)")
    await client.ok("EXPUNGE")
    result = await client.ok("SELECT INBOX")
    assert result.lines("FLAGS") == [b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Kept $Old)"]
    assert "$Old" in result.code_value("PERMANENTFLAGS")
    result = await client.ok("SELECT Archive")
    assert result.lines("FLAGS") == [b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Kept)"]


async def test_select_without_new_mail_does_not_wait_for_a_change_in_progress(imap: Imap) -> None:
    """While another transaction holds the mailbox (a delivery or STORE under way), SELECT of a mailbox whose
    messages were all taken as \\Recent answers at once instead of queueing behind it."""
    await imap.deliver()
    await (await imap.connect()).ok("SELECT INBOX")  # takes the message as recent
    box = await imap.mailbox()
    async with imap.pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM mailboxes WHERE id = $1 FOR UPDATE", box["id"])
        client = await imap.connect()
        result = await client.ok("SELECT INBOX", wait=3)
    assert b"* 1 EXISTS" in result.untagged
    assert b"* 0 RECENT" in result.untagged


async def test_reselect_shows_every_change_made_meanwhile(imap: Imap) -> None:
    """SELECT again after other sessions changed the mailbox (a delivery, \\Seen, an expunge, the mailbox
    deleted and made again under its name) shows it as it is now; with nothing changed, as before."""
    for _ in range(3):
        await imap.deliver()
    client = await imap.connect()
    first = await client.ok("SELECT INBOX")
    assert b"* 3 EXISTS" in first.untagged
    assert first.code_value("UNSEEN") == "1"
    again = await client.ok("SELECT INBOX")
    assert b"* 3 EXISTS" in again.untagged
    assert again.code_value("UNSEEN") == "1"
    other = await imap.connect(select="INBOX")
    await other.ok("STORE 1 +FLAGS.SILENT (\\Seen)")
    assert (await client.ok("SELECT INBOX")).code_value("UNSEEN") == "2"
    await other.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    await other.ok("EXPUNGE")
    await imap.deliver()
    result = await client.ok("SELECT INBOX")
    assert b"* 3 EXISTS" in result.untagged
    uids = [int(f["UID"]) for f in (await client.ok("FETCH 1:* UID")).fetches().values()]
    assert uids == [1, 3, 4]
    await other.ok("CREATE Work")
    await other.ok("APPEND Work ", Lit(make_message()))
    assert b"* 1 EXISTS" in (await client.ok("SELECT Work")).untagged
    await other.ok("DELETE Work")
    await other.ok("CREATE Work")
    result = await client.ok("SELECT Work")
    assert b"* 0 EXISTS" in result.untagged
