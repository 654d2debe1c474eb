"""A session's own changes (STORE, APPEND, EXPUNGE) taken into its view without asking the database again,
and never at the cost of another session's change (RFC 9051 §5.5, §7.5)."""

from __future__ import annotations

from .conftest import Imap
from .helpers import Lit, make_message


async def test_own_changes_then_another_sessions_change_is_reported(imap: Imap) -> None:
    """After a session's own APPEND, STORE and EXPUNGE, a change another session makes next is still reported
    to it after its next command, once, and its own changes are not reported back to it."""
    await imap.deliver()
    a = await imap.connect(select="INBOX")
    b = await imap.connect(select="INBOX")
    raw = make_message(subject="own")
    appended = await a.ok("APPEND INBOX ", Lit(raw, plus=True))
    assert b"* 2 EXISTS" in appended.untagged
    stored = await a.ok("STORE 2 +FLAGS ($Mine \\Deleted)")
    assert list(stored.fetches()) == [2]
    expunged = await a.ok("EXPUNGE")
    assert expunged.untagged == [b"* 2 EXPUNGE"]
    flagged = await b.ok("STORE 1 +FLAGS (\\Flagged)")
    await imap.heard((await imap.mailbox())["id"])
    result = await a.ok("FETCH 1 UID")
    assert "\\Flagged" in result.fetches()[1]["FLAGS"]
    assert (await a.ok("NOOP")).untagged == []
    # b never knew the message a added and removed: it hears of neither, and its view matches the mailbox.
    seen_by_b = flagged.untagged + (await b.ok("NOOP")).untagged
    assert not any(b"EXISTS" in line or b"EXPUNGE" in line for line in seen_by_b)
    assert list((await b.ok("FETCH 1:* UID")).fetches()) == [1]


async def test_own_change_after_an_unheard_change_reports_both(imap: Imap) -> None:
    """A session whose STORE follows another session's change it has not heard of yet reports that change too,
    at the latest after its next command."""
    await imap.deliver()
    await imap.deliver()
    a = await imap.connect(select="INBOX")
    b = await imap.connect(select="INBOX")
    await b.ok("STORE 1 +FLAGS (\\Answered)")
    stored = await a.ok("STORE 2 +FLAGS (\\Seen)")
    told = stored.fetches()
    if 1 not in told:  # not heard of by the time the STORE ended: the next command reports it
        told = (await a.ok("NOOP")).fetches()
    assert "\\Answered" in told[1]["FLAGS"]
    assert (await a.ok("NOOP")).untagged == []


async def test_own_append_takes_recent_once(imap: Imap) -> None:
    """An IMAP4rev1 session that APPENDs to its selected mailbox sees the message as \\Recent; a second session
    selecting afterwards does not."""
    a = await imap.connect(select="INBOX")
    raw = make_message(subject="recent")
    result = await a.ok("APPEND INBOX ", Lit(raw, plus=True))
    assert b"* 1 EXISTS" in result.untagged
    assert b"* 1 RECENT" in result.untagged
    assert "\\Recent" in (await a.ok("FETCH 1 FLAGS")).fetches()[1]["FLAGS"]
    b = await imap.connect()
    assert b"* 0 RECENT" in (await b.ok("SELECT INBOX")).untagged
