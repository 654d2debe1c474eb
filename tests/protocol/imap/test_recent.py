"""\\Recent for IMAP4rev1 sessions (RFC 3501 §2.3.2): each message is recent in one session, the first to be told of it.

SELECT and EXAMINE say ``* n RECENT``; SELECT takes the messages that arrived since any session last
did, EXAMINE only looks. A session that has a mailbox selected takes what arrives meanwhile when it
hears of it (EXISTS, then RECENT). FETCH FLAGS shows \\Recent, SEARCH NEW/OLD/RECENT and STATUS
(RECENT) count it. IMAP4rev2 has no \\Recent: rev2 sessions neither show nor take it.
"""

from __future__ import annotations

import asyncio

from .conftest import Imap
from .helpers import ImapClient, Lit, Result, make_message, status_items


def _recent(result: Result) -> int:
    (line,) = result.lines("RECENT")
    return int(line.split()[1])


async def _status_recent(client: ImapClient) -> int:
    (line,) = (await client.ok("STATUS INBOX (RECENT MESSAGES)")).lines("STATUS")
    return status_items(line)["RECENT"]


async def _recent_flags(client: ImapClient) -> dict[int, bool]:
    return {n: "\\Recent" in item["FLAGS"] for n, item in (await client.ok("FETCH 1:* FLAGS")).fetches().items()}


async def test_examine_looks_select_takes(imap: Imap) -> None:
    """EXAMINE shows the recent messages and leaves them so; SELECT shows and takes them; a later SELECT has none."""
    await imap.deliver()
    await imap.deliver()
    looker = await imap.connect()
    assert _recent(await looker.ok("EXAMINE INBOX")) == 2
    assert await _recent_flags(looker) == {1: True, 2: True}
    other = await imap.connect()
    assert await _status_recent(other) == 2
    taker = await imap.connect()
    assert _recent(await taker.ok("SELECT INBOX")) == 2
    assert await _recent_flags(taker) == {1: True, 2: True}
    assert await _status_recent(other) == 0
    late = await imap.connect()
    assert _recent(await late.ok("SELECT INBOX")) == 0
    assert await _recent_flags(late) == {1: False, 2: False}
    assert _recent(await late.ok("EXAMINE INBOX")) == 0


async def test_new_mail_is_recent_in_the_first_session_told(imap: Imap) -> None:
    """Mail arriving while two sessions have INBOX selected is recent in the one that hears of it first only."""
    first = await imap.connect(select="INBOX")
    second = await imap.connect(select="INBOX")
    await imap.deliver()
    told = await first.ok("NOOP")
    assert told.lines("EXISTS") == [b"* 1 EXISTS"]
    assert _recent(told) == 1
    told = await second.ok("NOOP")
    assert told.lines("EXISTS") == [b"* 1 EXISTS"]
    assert _recent(told) == 0
    assert await _recent_flags(first) == {1: True}
    assert await _recent_flags(second) == {1: False}
    # Its own APPEND is news to a session like any other (EXISTS, then RECENT).
    appended = await second.ok("APPEND INBOX ", Lit(make_message()))
    assert (appended.lines("EXISTS"), _recent(appended)) == ([b"* 2 EXISTS"], 1)
    assert await _recent_flags(second) == {1: False, 2: True}


async def test_search_new_old_recent(imap: Imap) -> None:
    """SEARCH RECENT, NEW (recent and unseen) and OLD (not recent) follow the session's own \\Recent."""
    await imap.deliver(flags=["\\Seen"])
    await imap.deliver()
    await imap.deliver()
    taker = await imap.connect(select="INBOX")
    assert (await taker.ok("SEARCH RECENT")).search() == [1, 2, 3]
    assert (await taker.ok("SEARCH NEW")).search() == [2, 3]
    assert (await taker.ok("SEARCH OLD")).search() == []
    assert (await taker.ok("SEARCH NOT RECENT SEEN")).search() == []
    later = await imap.connect(select="INBOX")
    assert (await later.ok("SEARCH OLD")).search() == [1, 2, 3]
    assert (await later.ok("SEARCH NEW")).search() == []


async def test_store_keeps_recent(imap: Imap) -> None:
    """\\Recent belongs to the session, not the stored flags: STORE FLAGS keeps it and cannot set or clear it."""
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    replaced = (await client.ok("STORE 1 FLAGS (\\Seen \\Recent)")).fetches()[1]
    assert sorted(replaced["FLAGS"]) == ["\\Recent", "\\Seen"]
    assert (await imap.stored())[0]["flags"] == ["\\Seen"]


async def test_rev2_sessions_neither_show_nor_take_recent(imap: Imap) -> None:
    """An IMAP4rev2 session has no RECENT response, no \\Recent flag, and leaves the messages recent for rev1."""
    await imap.deliver()
    rev2 = await imap.connect(enable="IMAP4rev2")
    selected = await rev2.ok("SELECT INBOX")
    assert selected.lines("RECENT") == []
    assert (await rev2.ok("FETCH 1 FLAGS")).fetches()[1]["FLAGS"] == []
    await imap.deliver()
    assert (await rev2.ok("NOOP")).lines("RECENT") == []
    rev1 = await imap.connect()
    assert _recent(await rev1.ok("SELECT INBOX")) == 2


async def test_each_message_recent_in_exactly_one_session_across_servers(imap: Imap) -> None:
    """Sessions on two daemons selecting at once: every message is recent in exactly one of them."""
    for _ in range(5):
        await imap.deliver()
    async with imap.other_server() as port:
        clients = [await imap.connect(port=port if i % 2 else None) for i in range(8)]
        results = await asyncio.gather(*(c.ok("SELECT INBOX") for c in clients))
        assert sum(_recent(r) for r in results) == 5
        await imap.deliver()
        await imap.deliver()
        await asyncio.gather(*(c.ok("NOOP") for c in clients))
        flags = await asyncio.gather(*(_recent_flags(c) for c in clients))
        per_message = [sum(f.get(n, False) for f in flags) for n in range(1, 8)]
        assert per_message == [1] * 7


async def test_append_after_unheard_mail_takes_both_as_recent(imap: Imap) -> None:
    """A session appends while a delivery it has not heard of waits: both messages are recent in it, none later."""
    appender = await imap.connect(select="INBOX")
    await imap.deliver()
    appended = await appender.ok("APPEND INBOX ", Lit(make_message()))
    assert (appended.lines("EXISTS"), _recent(appended)) == ([b"* 2 EXISTS"], 2)
    assert await _recent_flags(appender) == {1: True, 2: True}
    late = await imap.connect()
    assert _recent(await late.ok("SELECT INBOX")) == 0


async def test_concurrent_appends_and_deliveries_each_recent_in_exactly_one_session(imap: Imap) -> None:
    """Sessions on two daemons append to the INBOX they have selected while mail is delivered: every message is
    recent in exactly one of them."""
    async with imap.other_server() as port:
        clients = [await imap.connect(port=port if i % 2 else None, select="INBOX") for i in range(6)]

        async def appends(client: ImapClient, i: int) -> None:
            for n in range(5):
                await client.ok("APPEND INBOX ", Lit(make_message(subject=f"{i}-{n}")))

        await asyncio.gather(*(appends(c, i) for i, c in enumerate(clients)), *(imap.deliver() for _ in range(6)))
        await asyncio.gather(*(c.ok("NOOP") for c in clients))
        flags = await asyncio.gather(*(_recent_flags(c) for c in clients))
        assert [sum(f.get(n, False) for f in flags) for n in range(1, 37)] == [1] * 36
