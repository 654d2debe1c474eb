"""EXPUNGE and UID EXPUNGE (RFC 9051 §6.4.3, UIDPLUS RFC 4315 §2.1), and when other sessions hear of it (§7.5.1)."""

from __future__ import annotations

import imaplib

from .conftest import Imap


async def _three(imap: Imap) -> list[int]:
    return [(await imap.deliver()).uid for _ in range(3)]


async def test_expunge_reports_each_message(imap: Imap) -> None:
    """EXPUNGE removes \\Deleted messages and reports each with its number at that moment."""
    for _ in range(4):
        await imap.deliver()
    client = await imap.connect(select="INBOX")
    await client.ok("STORE 2:3 +FLAGS.SILENT (\\Deleted)")
    result = await client.ok("EXPUNGE")
    assert result.lines("EXPUNGE") == [b"* 2 EXPUNGE", b"* 2 EXPUNGE"]
    assert len(await imap.stored()) == 2
    assert list((await client.ok("FETCH 1:* UID")).fetches()) == [1, 2]


async def test_expunge_nothing_deleted(imap: Imap) -> None:
    """EXPUNGE with no \\Deleted message succeeds with no responses."""
    await _three(imap)
    client = await imap.connect(select="INBOX")
    assert (await client.ok("EXPUNGE")).untagged == []


async def test_uid_expunge_only_given_uids(imap: Imap) -> None:
    """UID EXPUNGE removes only the \\Deleted messages among the given UIDs."""
    uids = await _three(imap)
    client = await imap.connect(select="INBOX")
    await client.ok("STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    result = await client.ok(f"UID EXPUNGE {uids[1]}")
    assert result.lines("EXPUNGE") == [b"* 2 EXPUNGE"]
    assert [m["uid"] for m in await imap.stored()] == [uids[0], uids[2]]


async def test_expunge_read_only(imap: Imap) -> None:
    """EXPUNGE in an EXAMINEd mailbox is NO; nothing is removed."""
    await imap.deliver(flags=["\\Deleted"])
    client = await imap.connect()
    await client.ok("EXAMINE INBOX")
    assert (await client.command("EXPUNGE")).status == "NO"
    assert len(await imap.stored()) == 1


async def test_other_session_hears_expunge_on_noop(imap: Imap) -> None:
    """A session with the mailbox selected gets * n EXPUNGE on NOOP after another session expunged."""
    await _three(imap)
    a = await imap.connect(select="INBOX")
    b = await imap.connect(select="INBOX")
    await a.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    await a.ok("EXPUNGE")
    result = await b.ok("NOOP")
    assert result.lines("EXPUNGE") == [b"* 2 EXPUNGE"]


async def test_no_expunge_during_fetch_store_search(imap: Imap) -> None:
    """EXPUNGE is not sent during FETCH, STORE or SEARCH (RFC 9051 §7.5.1); it comes on the next NOOP."""
    uids = await _three(imap)
    a = await imap.connect(select="INBOX")
    b = await imap.connect(select="INBOX")
    await a.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    await a.ok("EXPUNGE")
    fetch = await b.ok("FETCH 1:3 UID")
    assert fetch.lines("EXPUNGE") == []
    # Message numbers did not shift under the client: 2 and 3 are still the 2nd and 3rd UIDs.
    numbers = fetch.fetches()
    assert numbers[2]["UID"] == str(uids[1])
    assert numbers[3]["UID"] == str(uids[2])
    assert (await b.ok("STORE 2 +FLAGS (\\Seen)")).lines("EXPUNGE") == []
    search = await b.ok("SEARCH ALL")
    assert search.lines("EXPUNGE") == []
    assert search.search() == [2, 3]
    assert (await b.ok("NOOP")).lines("EXPUNGE") == [b"* 1 EXPUNGE"]
    assert (await b.ok("FETCH 1 UID")).fetches()[1]["UID"] == str(uids[1])


async def test_expunge_sent_during_uid_fetch(imap: Imap) -> None:
    """UID FETCH may report EXPUNGE (UIDs do not shift), and does."""
    await _three(imap)
    a = await imap.connect(select="INBOX")
    b = await imap.connect(select="INBOX")
    await a.ok("STORE 3 +FLAGS.SILENT (\\Deleted)")
    await a.ok("EXPUNGE")
    result = await b.ok("UID FETCH 1:* FLAGS")
    assert result.lines("EXPUNGE") == [b"* 3 EXPUNGE"]


async def test_expunged_message_fetch_by_old_number(imap: Imap) -> None:
    """Until told of the EXPUNGE, a client can still FETCH by the old number without an error."""
    await _three(imap)
    a = await imap.connect(select="INBOX")
    b = await imap.connect(select="INBOX")
    await a.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    await a.ok("EXPUNGE")
    result = await b.command("FETCH 2 FLAGS")
    assert result.status in ("OK", "NO")
    assert result.lines("EXPUNGE") == []


async def test_expunge_with_imaplib(imap: Imap) -> None:
    """imaplib store + expunge returns the expunged message numbers."""
    await _three(imap)

    def script(conn: imaplib.IMAP4) -> list[bytes]:
        conn.select("INBOX")
        conn.store("1,3", "+FLAGS", "(\\Deleted)")
        _typ, data = conn.expunge()
        return data

    assert await imap.imaplib(script) == [b"1", b"2"]
