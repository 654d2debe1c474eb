"""STORE (RFC 9051 §6.4.6): flags and keywords, replace/add/remove, .SILENT, and who hears of it."""

from __future__ import annotations

import imaplib

from .conftest import Imap
from .helpers import Lit, Result, make_message


async def test_store_add_remove_replace(imap: Imap) -> None:
    """+FLAGS adds, -FLAGS removes, FLAGS replaces; each answers the new flags in FETCH (and the session's \\Recent)."""
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    added = (await client.ok("STORE 1 +FLAGS (\\Seen \\Flagged)")).fetches()[1]
    assert sorted(added["FLAGS"]) == ["\\Flagged", "\\Recent", "\\Seen"]
    removed = (await client.ok("STORE 1 -FLAGS (\\Seen)")).fetches()[1]
    assert removed["FLAGS"] == ["\\Recent", "\\Flagged"]
    replaced = (await client.ok("STORE 1 FLAGS (\\Answered $Work)")).fetches()[1]
    assert sorted(replaced["FLAGS"]) == ["$Work", "\\Answered", "\\Recent"]
    assert sorted((await imap.stored())[0]["flags"]) == ["$Work", "\\Answered"]
    cleared = (await client.ok("STORE 1 FLAGS ()")).fetches()[1]
    assert cleared["FLAGS"] == ["\\Recent"]


async def test_store_silent(imap: Imap) -> None:
    """.SILENT changes flags without answering FETCH."""
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    result = await client.ok("STORE 1 +FLAGS.SILENT (\\Seen)")
    assert result.untagged == []
    assert (await imap.stored())[0]["flags"] == ["\\Seen"]
    assert (await client.ok("STORE 1 -FLAGS.SILENT (\\Seen)")).untagged == []
    assert (await client.ok("STORE 1 FLAGS.SILENT (\\Draft)")).untagged == []
    assert (await imap.stored())[0]["flags"] == ["\\Draft"]


async def test_store_flags_without_parentheses(imap: Imap) -> None:
    """A flag list may be given without parentheses."""
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    await client.ok("STORE 1 +FLAGS \\Seen $Later")
    assert sorted((await imap.stored())[0]["flags"]) == ["$Later", "\\Seen"]


async def test_store_system_flags_case_insensitive(imap: Imap) -> None:
    """System flags are case-insensitive: \\SEEN is stored as \\Seen."""
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    await client.ok("STORE 1 +FLAGS (\\SEEN \\flagged)")
    assert sorted((await imap.stored())[0]["flags"]) == ["\\Flagged", "\\Seen"]


async def test_store_unknown_system_flag_and_recent(imap: Imap) -> None:
    """An unknown system flag is BAD; \\Recent cannot be stored and is ignored."""
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    assert (await client.command("STORE 1 +FLAGS (\\Bogus)")).status == "BAD"
    await client.ok("STORE 1 +FLAGS (\\Recent)")
    assert (await imap.stored())[0]["flags"] == []


async def test_keywords_persist_and_are_announced(imap: Imap) -> None:
    """A new keyword persists, appears in FLAGS of the next SELECT, and PERMANENTFLAGS allows new ones (\\*)."""
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    await client.ok("STORE 1 +FLAGS ($Project-X)")
    await client.ok("LOGOUT")
    other = await imap.connect()
    result = await other.ok("SELECT INBOX")
    assert b"$Project-X" in result.lines("FLAGS")[0]
    permanent = result.code_value("PERMANENTFLAGS")
    assert "$Project-X" in permanent
    assert "\\*" in permanent
    assert (await other.ok("FETCH 1 FLAGS")).fetches()[1]["FLAGS"] == ["$Project-X"]


def _announced_before_fetch(result: Result, keyword: str, *, readonly: bool = False) -> None:
    """``result`` has * FLAGS and * OK [PERMANENTFLAGS] naming ``keyword`` (not if read-only) before a FETCH with it."""
    lines = result.untagged
    flags = next(i for i, line in enumerate(lines) if line.startswith(b"* FLAGS "))
    permanent = next(i for i, line in enumerate(lines) if b"[PERMANENTFLAGS " in line)
    fetch = next(i for i, line in enumerate(lines) if b" FETCH " in line and keyword.encode() in line)
    assert keyword.encode() in lines[flags]
    assert (keyword.encode() in lines[permanent]) != readonly
    assert flags < permanent < fetch, lines


async def test_new_keyword_announced_before_fetch_to_every_session(imap: Imap) -> None:
    """A STORE that brings a new keyword sends FLAGS and PERMANENTFLAGS first, there and in other sessions."""
    await imap.deliver()
    a = await imap.connect(select="INBOX")
    b = await imap.connect(select="INBOX")
    examiner = await imap.connect()
    await examiner.ok("EXAMINE INBOX")
    result = await a.ok("STORE 1 +FLAGS ($Fresh \\Seen)")
    _announced_before_fetch(result, "$Fresh")
    assert b"\\*" in next(line for line in result.untagged if b"PERMANENTFLAGS" in line)
    _announced_before_fetch(await b.ok("NOOP"), "$Fresh")
    seen = await examiner.ok("NOOP")
    _announced_before_fetch(seen, "$Fresh", readonly=True)
    assert b"[PERMANENTFLAGS ()]" in next(line for line in seen.untagged if b"PERMANENTFLAGS" in line)
    # Once told, not again; a keyword the mailbox already had when selected is no news either.
    await a.ok("STORE 1 -FLAGS ($Fresh)")
    assert (await a.ok("STORE 1 +FLAGS ($Fresh)")).lines("FLAGS") == []
    assert (await (await imap.connect(select="INBOX")).ok("STORE 1 +FLAGS ($Fresh)")).lines("FLAGS") == []


async def test_new_keyword_of_an_appended_message_announced_before_its_fetch(imap: Imap) -> None:
    """APPEND with a new keyword: a session with the mailbox selected hears FLAGS before a FETCH that shows it."""
    await imap.deliver()
    a = await imap.connect(select="INBOX")
    b = await imap.connect()
    await b.ok("APPEND INBOX ($FromAppend) ", Lit(make_message()))
    await a.ok("NOOP")
    _announced_before_fetch(await a.ok("FETCH 1:* (FLAGS)"), "$FromAppend")
    assert (await a.ok("FETCH 1:* (FLAGS)")).lines("FLAGS") == []


async def test_store_seen_by_other_session(imap: Imap) -> None:
    """STORE in session A reaches session B as * n FETCH (UID .. FLAGS ..) on NOOP and in IDLE."""
    stored = await imap.deliver()
    await imap.deliver()
    a = await imap.connect(select="INBOX")
    b = await imap.connect(select="INBOX")
    await a.ok("STORE 1 +FLAGS.SILENT (\\Answered)")
    fetched = (await b.ok("NOOP")).fetches()
    assert fetched == {1: {"UID": str(stored.uid), "FLAGS": ["\\Answered"]}}
    tag = await b.idle()
    await a.ok("STORE 2 FLAGS (\\Flagged)")
    lines = await b.read_until(lambda line: b"FETCH" in line)
    assert lines[-1].startswith(b"* 2 FETCH (")
    assert b"\\Flagged" in lines[-1]
    assert (await b.done(tag)).ok


async def test_uid_store_includes_uid(imap: Imap) -> None:
    """UID STORE answers FETCH with the UID; the message number is right."""
    await imap.deliver()
    second = await imap.deliver()
    client = await imap.connect(select="INBOX")
    result = await client.ok(f"UID STORE {second.uid} +FLAGS (\\Seen)")
    assert result.fetches() == {2: {"UID": str(second.uid), "FLAGS": ["\\Recent", "\\Seen"]}}


async def test_store_sequence_ranges(imap: Imap) -> None:
    """STORE over 1:* and 2,4 touches exactly those messages."""
    for _ in range(4):
        await imap.deliver()
    client = await imap.connect(select="INBOX")
    await client.ok("STORE 2,4 +FLAGS.SILENT (\\Flagged)")
    assert [m["flags"] for m in await imap.stored()] == [[], ["\\Flagged"], [], ["\\Flagged"]]
    await client.ok("STORE 1:* +FLAGS.SILENT (\\Seen)")
    assert all("\\Seen" in m["flags"] for m in await imap.stored())
    assert (await client.command("STORE 5 +FLAGS (\\Seen)")).status == "BAD"


async def test_store_read_only(imap: Imap) -> None:
    """STORE in an EXAMINEd mailbox is NO and changes nothing."""
    await imap.deliver()
    client = await imap.connect()
    await client.ok("EXAMINE INBOX")
    assert (await client.command("STORE 1 +FLAGS (\\Seen)")).status == "NO"
    assert (await imap.stored())[0]["flags"] == []


async def test_store_after_mailbox_deleted_elsewhere(imap: Imap) -> None:
    """STORE in a mailbox another session just deleted is refused cleanly (BYE or NO), not a server failure."""
    admin = await imap.connect()
    await admin.ok("CREATE Doomed")
    await imap.deliver(folder="Doomed")
    client = await imap.connect(select="Doomed")
    await admin.ok("DELETE Doomed")
    await client.send(b"X1 STORE 1 +FLAGS (\\Seen)\r\n")
    lines = await client.read_until(lambda line: line.startswith((b"X1 ", b"* BYE")))
    assert b"SERVERBUG" not in lines[-1]
    assert imap.errors.records == []


async def test_store_with_imaplib(imap: Imap) -> None:
    """imaplib store() returns the new flags."""
    await imap.deliver()

    def script(conn: imaplib.IMAP4) -> list[bytes]:
        conn.select("INBOX")
        return conn.store("1", "+FLAGS", "(\\Flagged)")[1]

    assert await imap.imaplib(script) == [b"1 (FLAGS (\\Recent \\Flagged))"]


async def test_changes_wait_for_the_disk_when_configured(imap: Imap) -> None:
    """With imap.durable_changes, STORE (each mode), the \\Seen of a FETCH and EXPUNGE take the statements that
    wait for the disk flush, and answer and store exactly what they do without it."""
    imap.cfg.imap.durable_changes = True
    await imap.deliver()
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    await client.ok("STORE 1 +FLAGS (\\Flagged $Work)")
    await client.ok("STORE 1 -FLAGS ($Work)")
    await client.ok("STORE 2 FLAGS (\\Deleted)")
    assert "\\Seen" in (await client.ok("FETCH 1 BODY[]")).fetches()[1]["FLAGS"]
    assert sorted((await imap.stored())[0]["flags"]) == ["\\Flagged", "\\Seen"]
    assert (await client.ok("EXPUNGE")).untagged == [b"* 2 EXPUNGE"]
    assert len(await imap.stored()) == 1
