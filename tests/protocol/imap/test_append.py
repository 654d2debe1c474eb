"""APPEND (RFC 9051 §6.3.12, UIDPLUS RFC 4315, LITERAL+ RFC 7888, APPENDLIMIT RFC 7889)."""

from __future__ import annotations

import asyncio
import imaplib
import time
import tracemalloc

from .conftest import Imap
from .helpers import Lit, make_message


async def test_append_returns_appenduid_and_stores_bytes(imap: Imap) -> None:
    """APPEND answers [APPENDUID uidvalidity uid] and the message is stored byte for byte."""
    raw = make_message(subject="appended")
    client = await imap.connect()
    result = await client.command("APPEND INBOX ", Lit(raw))
    assert result.ok, str(result)
    assert result.continuations  # a synchronizing literal waits for "+"
    name, validity, uid = (result.code or "").split()
    box = await imap.mailbox()
    assert (name, int(validity)) == ("APPENDUID", box["uidvalidity"])
    stored = await imap.stored()
    assert [(m["uid"], m["raw"]) for m in stored] == [(int(uid), raw)]


async def test_append_flags_and_date(imap: Imap) -> None:
    """Flags and the internal date given to APPEND are kept; \\Recent is ignored."""
    client = await imap.connect()
    await client.ok(
        'APPEND INBOX (\\Seen $Important \\Recent) " 5-Jan-2026 08:30:00 +0200" ',
        Lit(make_message()),
    )
    await client.ok("SELECT INBOX")
    fetched = (await client.ok("FETCH 1 (FLAGS INTERNALDATE)")).fetches()[1]
    assert sorted(fetched["FLAGS"]) == ["$Important", "\\Recent", "\\Seen"]  # recent: new to this session
    assert fetched["INTERNALDATE"] == b" 5-Jan-2026 06:30:00 +0000"  # the same instant, in UTC


async def test_append_system_flags_any_case(imap: Imap) -> None:
    """System flags in APPEND are case-insensitive: (\\seen \\FLAGGED) is stored as \\Seen \\Flagged."""
    client = await imap.connect()
    await client.ok("APPEND INBOX (\\seen \\FLAGGED) ", Lit(make_message()))
    await client.ok("SELECT INBOX")
    assert sorted((await client.ok("FETCH 1 FLAGS")).fetches()[1]["FLAGS"]) == ["\\Flagged", "\\Recent", "\\Seen"]
    assert (await client.ok("SEARCH SEEN")).search() == [1]


async def test_append_literal_plus(imap: Imap) -> None:
    """A LITERAL+ message is read without a continuation request."""
    raw = make_message(subject="non-synchronizing")
    client = await imap.connect()
    result = await client.ok("APPEND INBOX ", Lit(raw, plus=True))
    assert result.continuations == []
    assert (await imap.stored())[0]["raw"] == raw


async def test_append_binary_literal(imap: Imap) -> None:
    """A literal8 (~{n}) message with 8-bit content is stored byte for byte."""
    raw = make_message(body="Gr\u00fc\u00dfe aus K\u00f6ln\r\n", headers=("Content-Type: text/plain; charset=utf-8",))
    client = await imap.connect()
    await client.ok("APPEND INBOX ", Lit(raw, binary=True))
    assert (await imap.stored())[0]["raw"] == raw


async def test_append_utf8_data_extension(imap: Imap) -> None:
    """After ENABLE UTF8=ACCEPT, APPEND ... UTF8 (~{n}) stores a message with UTF-8 headers."""
    raw = make_message(subject="Gr\u00fc\u00dfe", sender="J\u00fcrgen <j\u00fcrgen@example.org>")
    client = await imap.connect(enable="UTF8=ACCEPT")
    await client.ok("APPEND INBOX UTF8 (", Lit(raw, binary=True), ")")
    assert (await imap.stored())[0]["raw"] == raw


async def test_append_to_missing_mailbox_says_trycreate(imap: Imap) -> None:
    """APPEND to a mailbox that does not exist is NO [TRYCREATE]; nothing is stored."""
    client = await imap.connect()
    result = await client.command("APPEND Nope ", Lit(make_message()))
    assert (result.status, result.code) == ("NO", "TRYCREATE")
    assert await imap.pool.fetchval("SELECT count(*) FROM messages") == 0


async def test_append_over_appendlimit(imap: Imap) -> None:
    """A synchronizing literal over APPENDLIMIT is refused with NO [TOOBIG] before any data; the session goes on."""
    async with imap.other_server(max_literal_size=4096) as port:
        client = await imap.connect(port=port)
        caps = (await client.ok("CAPABILITY")).lines("CAPABILITY")[0].split()
        assert b"APPENDLIMIT=4096" in caps
        result = await client.command("APPEND INBOX ", Lit(b"x" * 5000))
        assert (result.status, result.code) == ("NO", "TOOBIG")
        assert result.continuations == []
        assert (await client.command("APPEND INBOX ", Lit(make_message()))).ok
        assert len(await imap.stored()) == 1
        await client.close()


async def test_append_literal_plus_over_appendlimit_hangs_up(imap: Imap) -> None:
    """A LITERAL+ announcement over APPENDLIMIT gets BYE and the connection is closed (the data cannot be stopped)."""
    async with imap.other_server(max_literal_size=4096) as port:
        client = await imap.connect(port=port)
        await client.send(b"A1 APPEND INBOX {5000+}\r\n")
        line = await client.read_line()
        assert line.startswith(b"* BYE"), line
        assert await client.closed()
    assert await imap.stored() == []
    await imap.assert_serves()


async def test_append_to_selected_mailbox_reports_exists(imap: Imap) -> None:
    """APPEND to the selected mailbox reports the new EXISTS before the tagged OK."""
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    result = await client.ok("APPEND INBOX ", Lit(make_message()))
    assert b"* 2 EXISTS" in result.untagged


async def test_append_seen_by_idle_session(imap: Imap) -> None:
    """A message appended in one session is announced (EXISTS) to another session IDLEing on the mailbox."""
    watcher = await imap.connect(select="INBOX")
    tag = await watcher.idle()
    writer = await imap.connect()
    await writer.ok("APPEND INBOX ", Lit(make_message()))
    started = time.monotonic()
    lines = await watcher.read_until(lambda line: line.endswith(b" EXISTS"), wait=5)
    assert time.monotonic() - started < 0.5
    assert lines[-1] == b"* 1 EXISTS"
    assert (await watcher.done(tag)).ok


async def test_uids_ascend_and_are_never_reused(imap: Imap) -> None:
    """UIDs from APPEND ascend strictly; after expunging the last message the next UID is still larger."""
    client = await imap.connect(select="INBOX")
    uids = []
    for _ in range(3):
        result = await client.ok("APPEND INBOX ", Lit(make_message()))
        uids.append(int((result.code or "").split()[2]))
    assert uids == sorted(set(uids))
    await client.ok("STORE 3 +FLAGS.SILENT (\\Deleted)")
    await client.ok("EXPUNGE")
    again = await client.ok("APPEND INBOX ", Lit(make_message()))
    new_uid = int((again.code or "").split()[2])
    assert new_uid > max(uids)
    validity = (await client.ok("SELECT INBOX")).code_value("UIDVALIDITY")
    assert int(validity) == int((again.code or "").split()[1])


async def test_append_bad_syntax(imap: Imap) -> None:
    """A malformed date or a missing literal is BAD, and nothing is stored."""
    client = await imap.connect()
    bad_date = await client.command('APPEND INBOX "31-Foo-2026 10:00:00 +0000" ', Lit(make_message()))
    assert bad_date.status == "BAD"
    assert (await client.command('APPEND INBOX "just a string"')).status == "BAD"
    assert await imap.stored() == []


async def test_concurrent_appends_get_distinct_uids(imap: Imap) -> None:
    """Appends from several sessions at once all succeed with distinct UIDs."""
    clients = [await imap.connect() for _ in range(4)]
    results = await asyncio.gather(*(c.ok("APPEND INBOX ", Lit(make_message())) for c in clients))
    uids = [int((r.code or "").split()[2]) for r in results]
    assert len(set(uids)) == 4
    assert sorted(m["uid"] for m in await imap.stored()) == sorted(uids)


async def test_append_with_imaplib(imap: Imap) -> None:
    """imaplib append() with flags and a date stores the message."""
    raw = make_message(subject="from imaplib")

    def script(conn: imaplib.IMAP4) -> str:
        typ, data = conn.append("Drafts", "(\\Draft)", '"01-Mar-2026 12:00:00 +0000"', raw)
        return f"{typ} {data[0]!r}"

    answer = await imap.imaplib(script)
    assert answer.startswith("OK b'[APPENDUID ")
    stored = await imap.stored("Drafts")
    assert stored[0]["raw"] == raw
    assert stored[0]["flags"] == ["\\Draft"]


async def test_big_literal_is_streamed_not_held_in_memory(imap: Imap) -> None:
    """While a 16 MB APPEND arrives the daemon buffers a few chunks, not the message; then it is stored byte-exact."""
    imap.cfg.imap.allow_plaintext_auth = True  # plain TCP: only the daemon's own buffers are measured
    raw = make_message(subject="big")
    raw += b"x" * (16 * 1024 * 1024 - len(raw) - 2) + b"\r\n"  # one long body line makes up the 16 MB
    client = await imap.connect(tls=False)
    await client.send(f"A1 APPEND INBOX {{{len(raw)}}}\r\n".encode())
    assert (await client.read_line()).startswith(b"+")
    tracemalloc.start()
    try:
        view = memoryview(raw)
        await client.send(view[:-100])  # all but the last octets: the upload is still in progress
        await asyncio.sleep(0.5)
        held = sum(
            stat.size
            for stat in tracemalloc.take_snapshot()
            .filter_traces([tracemalloc.Filter(True, "*asyncio/streams.py"), tracemalloc.Filter(True, "*relate*")])
            .statistics("filename")
        )
    finally:
        tracemalloc.stop()
    assert held < 2 * 1024 * 1024, f"{held} bytes held while the literal arrives"
    await client.send(bytes(view[-100:]) + b"\r\n")
    result = await client.read_tagged("A1", wait=30)
    assert result.ok, str(result)
    assert [m["raw"] for m in await imap.stored()] == [raw]


async def test_client_vanishing_mid_big_literal_stores_nothing(imap: Imap) -> None:
    """A client that hangs up halfway through a streamed literal leaves nothing stored; the daemon serves on."""
    client = await imap.connect()
    await client.send(b"A1 APPEND INBOX {4000000}\r\n")
    assert (await client.read_line()).startswith(b"+")
    await client.send(b"y" * 1_000_000)
    await client.close()
    await asyncio.sleep(0.3)
    assert await imap.stored() == []
    await imap.assert_serves()


async def test_append_impossible_date_time_is_bad(imap: Imap) -> None:
    """A date-time no clock can show (zone +9999, 31-Feb, hour 25) is a tagged BAD; the session goes on."""
    client = await imap.connect()
    for date in ("07-Dec-2026 10:00:00 +9999", "07-Dec-2026 10:00:00 -2400", "31-Feb-2026 10:00:00 +0000",
                 "07-Dec-2026 25:00:00 +0000", "07-Dec-0000 10:00:00 +0000"):  # fmt: skip
        result = await client.command(f'APPEND INBOX "{date}" ', Lit(b"x"))
        assert result.status == "BAD", (date, str(result))
    assert (await client.command("NOOP")).ok
    assert await imap.stored() == []
    await imap.assert_serves()


async def test_append_waits_for_memory_then_answers_no_limit(imap: Imap) -> None:
    """With the memory budget held by messages being stored, APPEND waits imap.memory_wait, then NO [LIMIT]."""
    imap.cfg.imap.memory_wait = 0.3
    client = await imap.connect()
    budget = imap.server.memory
    async with budget.reserve(budget.limit, wait=0):  # what other APPENDs in progress would hold
        started = time.monotonic()
        result = await client.command("APPEND INBOX ", Lit(make_message()))
        assert (result.status, result.code) == ("NO", "LIMIT"), str(result)
        assert time.monotonic() - started >= 0.3
        assert (await client.command("NOOP")).ok
    assert budget.in_use == 0
    result = await client.command("APPEND INBOX ", Lit(make_message()))
    assert result.ok, str(result)
    assert len(await imap.stored()) == 1
    await imap.assert_serves()


async def test_append_waits_its_turn_for_memory(imap: Imap) -> None:
    """An APPEND that finds the budget full is stored as soon as room is given back within imap.memory_wait."""
    imap.cfg.imap.memory_wait = 10
    client = await imap.connect()
    budget = imap.server.memory
    held = await budget.acquire(budget.limit, wait=0)
    pending = asyncio.ensure_future(client.command("APPEND INBOX ", Lit(make_message(subject="waited"))))
    await asyncio.sleep(0.3)
    assert not pending.done()
    budget.release(held)
    result = await asyncio.wait_for(pending, 10)
    assert result.ok, str(result)
    assert len(await imap.stored()) == 1


async def test_append_of_hostile_headers_is_stored_and_fetched(imap: Imap) -> None:
    """The issue's hostile messages (a From of 500 nested comments, a Subject of 16,000 encoded words) APPEND
    with OK, are stored byte for byte, and FETCH ENVELOPE answers, where they once got NO [SERVERBUG]."""
    nested = b"From: a <b" + b"(" * 500 + b"\r\nTo: bob@example.com\r\nSubject: nested\r\n\r\nbody\r\n"
    words = b"\r\n ".join([b"=?utf-8?q?caf=C3=A9?="] * 16_000)
    subject = b"From: alice@example.com\r\nSubject: " + words + b"\r\n\r\nbody\r\n"
    client = await imap.connect()
    for raw in (nested, subject):
        started = time.monotonic()
        result = await client.command("APPEND INBOX ", Lit(raw))
        assert result.ok, str(result)
        assert time.monotonic() - started < 5
    assert [m["raw"] for m in await imap.stored()] == [nested, subject]
    await client.ok("SELECT INBOX")
    fetched = (await client.ok("FETCH 1:2 (ENVELOPE BODYSTRUCTURE)")).fetches()
    assert set(fetched) == {1, 2}
