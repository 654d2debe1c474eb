"""SORT and THREAD in the store (store.sorting, migration 0018): keys stored at ingest, older rows filled, SQL order."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import asyncpg
import pytest

from relate.mail.mime import parse_message
from relate.mail.sortkeys import MAX_ADDRESS_KEY, MAX_SUBJECT_KEY, sort_keys
from relate.mail.threadids import thread_ids
from relate.services import accounts
from relate.store import imap_messages, messages, sorting
from tests.store.test_envelope_wire import TRICKY, crlf

KEYS = "sort_subject, sort_from, sort_to, sort_cc, sort_display_from, sort_display_to, thread_ids"


@pytest.fixture
async def boxes(pool: asyncpg.Pool) -> tuple[int, int]:
    """bob@example.com's INBOX and Archive ids."""
    await accounts.add_domain(pool, "example.com")
    user = await accounts.add_user(pool, "bob@example.com")
    rows = await pool.fetch("SELECT name, id FROM mailboxes WHERE user_id = $1", user["id"])
    ids = {r["name"]: r["id"] for r in rows}
    return ids["INBOX"], ids["Archive"]


async def _keys(pool: asyncpg.Pool, box: int) -> list[tuple[object, ...]]:
    rows = await pool.fetch(f"SELECT {KEYS} FROM messages WHERE mailbox_id = $1 ORDER BY uid", box)
    return [tuple(r) for r in rows]


def _expected(raw: bytes) -> tuple[object, ...]:
    """The keys relate.mail derives from a message, NULs dropped as the store drops them."""
    parsed = parse_message(raw)
    k = sort_keys(parsed.subject, parsed.envelope)
    strings = [k.subject, k.from_, k.to, k.cc, k.display_from, k.display_to]
    return (
        *(v.replace("\x00", "") for v in strings),
        thread_ids(parsed.message_id, parsed.in_reply_to, parsed.references),
    )


async def test_ingest_and_copy_store_the_keys(pool: asyncpg.Pool, boxes: tuple[int, int]) -> None:
    """Ingest stores each message's sort keys and thread ids; COPY carries them over unchanged."""
    inbox, archive = boxes
    async with pool.acquire() as conn:
        for raw in TRICKY:
            await messages.ingest(conn, raw, [inbox])
        await imap_messages.copy(conn, inbox, list(range(1, len(TRICKY) + 1)), archive)
    stored = await _keys(pool, inbox)
    assert stored == [_expected(raw) for raw in TRICKY]
    assert await _keys(pool, archive) == stored
    assert stored[11][0] == "éTé ENCODED"  # the subject's encoded word decoded, then casemapped


async def test_fill_keys_gives_older_rows_what_ingest_gives(pool: asyncpg.Pool, boxes: tuple[int, int]) -> None:
    """Rows from before migration 0018 (NULL keys) get, from fill_keys, exactly the keys ingest stores."""
    inbox, _ = boxes
    raws = [*TRICKY, crlf("Message-ID: <c@x>", "References: <a@x> <b@x>", "", "b")]
    async with pool.acquire() as conn:
        for raw in raws:
            await messages.ingest(conn, raw, [inbox])
        expected = await _keys(pool, inbox)
        await conn.execute(
            "UPDATE messages SET sort_subject = NULL, sort_from = NULL, sort_to = NULL, sort_cc = NULL,"
            " sort_display_from = NULL, sort_display_to = NULL, thread_ids = NULL"
        )
        assert await sorting.fill_keys(conn, inbox) == len(raws)
        assert await sorting.fill_keys(conn, inbox) == 0
    assert await _keys(pool, inbox) == expected


def _message(subject: str, sender: str, date: str | None, body: str = "x") -> bytes:
    lines = [f"Subject: {subject}", f"From: {sender}", "To: bob@example.com"]
    if date:
        lines.append(f"Date: {date}")
    return crlf(*lines, "", body)


async def test_sorted_uids(pool: asyncpg.Pool, boxes: tuple[int, int]) -> None:
    """Each criterion orders in SQL, REVERSE flips only its own criterion, and ties fall to the UID."""
    inbox, _ = boxes
    arrivals = [datetime(2026, 1, d, tzinfo=UTC) for d in (3, 1, 2, 1)]
    rows = [
        _message("Re: beta", "Zed <z@x.example>", "Mon, 05 Jan 2026 10:00:00 +0000", "xxxx"),
        _message("alpha", "amy@x.example", None, "x"),  # no Date: its arrival is its sent date
        _message("[list] Beta", "bob@x.example", "Mon, 05 Jan 2026 09:00:00 -0200", "xx"),
        _message("Alpha", "Amy <amy@x.example>", "Sun, 04 Jan 2026 10:00:00 +0000", "xxx"),
    ]
    async with pool.acquire() as conn:
        for raw, when in zip(rows, arrivals, strict=True):
            await messages.ingest(conn, raw, [inbox], internal_date=when)

        async def order(*program: tuple[str, bool], only: list[int] | None = None) -> list[int]:
            return await sorting.sorted_uids(conn, inbox, list(program), only)

        assert await order(("ARRIVAL", False)) == [2, 4, 3, 1]
        assert await order(("ARRIVAL", True)) == [1, 3, 2, 4]  # ties keep UID order under REVERSE too
        assert await order(("SUBJECT", False)) == [2, 4, 1, 3]
        assert await order(("SUBJECT", False), ("SIZE", True)) == [4, 2, 1, 3]
        assert await order(("DATE", False)) == [2, 4, 1, 3]  # 11:00 UTC after 10:00 UTC
        assert await order(("FROM", False)) == [2, 4, 3, 1]
        assert await order(("DISPLAYFROM", False)) == [4, 2, 3, 1]  # "AMY" < "AMY@X.EXAMPLE" < "BOB@..."
        assert await order(("SIZE", False), only=[1, 3]) == [3, 1]


async def test_subject_order_groups(pool: asyncpg.Pool, boxes: tuple[int, int]) -> None:
    """ORDEREDSUBJECT's order: base subject, then sent date; messages with one base subject share a group."""
    inbox, _ = boxes
    async with pool.acquire() as conn:
        for subject, date in [("b", 2), ("Re: a", 1), ("a", 3), ("Fwd: b", 1)]:
            await messages.ingest(
                conn, _message(subject, "x@y.example", f"Thu, 0{date} Jan 2026 10:00:00 +0000"), [inbox]
            )
        uids, sent, groups = await sorting.subject_order(conn, inbox, None)
    assert uids == [2, 3, 4, 1]
    assert groups[0] == groups[1] != groups[2] == groups[3]
    assert sent == sorted(sent[:2]) + sorted(sent[2:])


async def test_thread_rows_in_batches(pool: asyncpg.Pool, boxes: tuple[int, int]) -> None:
    """Threading reads every message once, in UID order, with its ids, however many batches that takes."""
    inbox, _ = boxes
    count = 2 * sorting._THREAD_BATCH + 5
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO blobs (hash, size, data) VALUES ('\\x00', 1, 'x')")
        await conn.execute(
            """INSERT INTO messages (mailbox_id, uid, modseq, size, blob_hash, envelope, bodystructure, header_end,
                                     thread_ids)
               SELECT $1, n, 1, 1, '\\x00', '{}', '{}', 0, ARRAY['<' || n || '@x>']
                 FROM generate_series(1, $2) AS n""",
            inbox,
            count,
        )
        seen = [row async for batch in sorting.thread_rows(conn, inbox, None) for row in batch]
        only = [row async for batch in sorting.thread_rows(conn, inbox, [3, 2001]) for row in batch]
    assert [r[0] for r in seen] == list(range(1, count + 1))
    assert seen[41][2] == ["<42@x>"]
    assert [r[0] for r in only] == [3, 2001]


async def test_longest_keys_fit_the_sort_index(pool: asyncpg.Pool, boxes: tuple[int, int]) -> None:
    """Keys of the greatest length, in four-octet characters, still fit one entry of the covering index."""
    inbox, _ = boxes
    wide = "\U0001f600"  # four octets in UTF-8
    name = f"=?utf-8?b?{base64.b64encode((wide * 300).encode()).decode()}?="
    raw = crlf(
        f"Subject: {wide * 2000}",
        f"From: {name} <{wide * 100}@example.org>",
        f"To: {name} <{wide * 100}@example.org>",
        f"Cc: {wide * 100}@example.org",
        "",
        "b",
    )
    async with pool.acquire() as conn:
        await messages.ingest(conn, raw, [inbox])
    (stored,) = await _keys(pool, inbox)
    assert [len(k) for k in stored[:6]] == [MAX_SUBJECT_KEY] + [MAX_ADDRESS_KEY] * 5
    assert stored[4] == wide * MAX_ADDRESS_KEY  # the display name, decoded
