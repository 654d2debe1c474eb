"""Quota in the store (store/quota.py): usage kept per mailbox on every path, exact checks, no hot per-user row."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from relate.config import DatabaseConfig, QuotaConfig
from relate.errors import OverQuota
from relate.services import accounts
from relate.store import db, drafts, imap_messages, mailboxes, messages, pop3, quota
from relate.store.quota import Verdict
from tests.store import premigration
from tests.support import make_message

BOB = "bob@example.com"
NO_DEFAULTS = QuotaConfig()


@pytest.fixture
async def bob(pool: asyncpg.Pool) -> dict[str, Any]:
    """bob@example.com with his folders by name (``boxes``)."""
    await accounts.add_domain(pool, "example.com")
    user = await accounts.add_user(pool, BOB)
    rows = await pool.fetch("SELECT id, name FROM mailboxes WHERE user_id = $1", user["id"])
    return {"id": user["id"], "boxes": {r["name"]: r["id"] for r in rows}}


def sized(size: int, subject: str = "m") -> bytes:
    """A message of exactly ``size`` bytes."""
    head = make_message(subject=subject, body="")
    assert len(head) <= size
    return head + b"x" * (size - len(head))


async def store(pool: asyncpg.Pool, raw: bytes, *boxes: int, enforce: messages.Enforce | None = None) -> list[Any]:
    async with pool.acquire() as conn:
        return await messages.ingest(conn, raw, boxes, enforce=enforce)


async def counters(pool: asyncpg.Pool, user_id: int) -> dict[str, tuple[int, int]]:
    """Per folder: (message_count, message_bytes) as kept, and the same counted from the messages."""
    rows = await pool.fetch(
        """SELECT b.name, b.message_count, b.message_bytes, count(m.id) AS n, coalesce(sum(m.size), 0)::bigint AS bytes
             FROM mailboxes b LEFT JOIN messages m ON m.mailbox_id = b.id
            WHERE b.user_id = $1 GROUP BY b.id ORDER BY b.name""",
        user_id,
    )
    for r in rows:
        assert (r["message_count"], r["message_bytes"]) == (r["n"], r["bytes"]), r["name"]
    return {r["name"]: (r["n"], r["bytes"]) for r in rows}


async def set_limits(pool: asyncpg.Pool, user_id: int, storage: int | None, messages_: int | None) -> None:
    async with pool.acquire() as conn:
        await quota.set_limits(conn, user_id, storage, messages_)


async def test_usage_is_kept_right_by_every_path(pool: asyncpg.Pool, bob: dict[str, Any]) -> None:
    """Delivery, COPY, MOVE, EXPUNGE, POP3, drafts, folder deletion: each keeps every folder's count and size."""
    boxes = bob["boxes"]
    inbox, sent, trash = boxes["INBOX"], boxes["Sent"], boxes["Trash"]
    for i in range(6):
        await store(pool, sized(1000 + i), inbox)
    await store(pool, sized(2000), inbox, sent)  # one message into two folders
    async with pool.acquire() as conn:
        await imap_messages.copy(conn, inbox, [1, 2, 3], trash)
        await imap_messages.copy(conn, inbox, [4], sent, move=True)
        await imap_messages.store_flags(conn, inbox, [5], "+", ["\\Deleted"])
        await imap_messages.expunge(conn, inbox, None)
        await pop3.remove(conn, inbox, [6])
        await mailboxes.create(conn, bob["id"], "Projects")
    projects = (await mailboxes.get(pool, bob["id"], "Projects") or {})["id"]
    await store(pool, sized(3000), projects)
    async with pool.acquire() as conn, conn.transaction():
        draft = await drafts.create(conn, bob["id"], drafts.Fields(from_address=BOB, subject="draft"))
        await drafts.replace_copy(conn, bob["id"], draft, sized(1500))
    async with pool.acquire() as conn, conn.transaction():
        await drafts.replace_copy(conn, bob["id"], draft, sized(1700))
    kept = await counters(pool, bob["id"])
    assert kept["INBOX"] == (4, 1000 + 1001 + 1002 + 2000)
    assert kept["Trash"] == (3, 1000 + 1001 + 1002)
    assert kept["Sent"] == (2, 2000 + 1003)
    assert kept["Drafts"] == (1, 1700)
    assert kept["Projects"] == (1, 3000)
    async with pool.acquire() as conn:
        await mailboxes.delete(conn, bob["id"], "Projects")
    usage = (await quota.usage(pool, [bob["id"]], NO_DEFAULTS))[bob["id"]]
    assert (usage.messages, usage.storage) == (10, sum(n for _, n in (await counters(pool, bob["id"])).values()))


async def test_migration_counts_messages_already_stored(empty_dsn: str) -> None:
    """Migration 0019 fills each mailbox's count and bytes from the messages it already holds."""
    conn = await db.connect(DatabaseConfig(dsn=empty_dsn))
    try:
        await premigration.before(conn, 19)
        await conn.execute(
            """INSERT INTO messages (mailbox_id, uid, modseq, size, blob_hash, envelope, bodystructure, header_end,
                                     search)
               SELECT b.id, g, 1, g * 100, '\\x01', '{}', '{}', 0, ''
                 FROM mailboxes b, generate_series(1, 4) g WHERE b.name <> 'Empty' AND (b.name = 'INBOX' OR g < 3)"""
        )
        await premigration.apply(conn, 19)
        rows = await conn.fetch("SELECT name, message_count, message_bytes FROM mailboxes ORDER BY name")
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [("Empty", 0, 0), ("INBOX", 4, 1000), ("Old", 2, 300)]


async def test_ingest_refuses_a_copy_past_the_limit_across_folders(pool: asyncpg.Pool, bob: dict[str, Any]) -> None:
    """With a limit, what is in Sent counts for INBOX: the copy that would pass it is not stored, the rest are."""
    boxes = bob["boxes"]
    await set_limits(pool, bob["id"], 10_000, None)
    await store(pool, sized(6000), boxes["Sent"])
    enforce = messages.Enforce(NO_DEFAULTS)
    assert len(await store(pool, sized(4000), boxes["INBOX"], enforce=enforce)) == 1  # exactly at the limit
    enforce = messages.Enforce(NO_DEFAULTS)
    assert await store(pool, sized(700), boxes["INBOX"], enforce=enforce) == []
    assert enforce.refused == [boxes["INBOX"]]
    assert (await counters(pool, bob["id"]))["INBOX"] == (1, 4000)
    # Unchecked (a DSN, say), it goes in whatever the quota.
    assert len(await store(pool, sized(700), boxes["INBOX"])) == 1


async def test_message_limit_and_default_limits(pool: asyncpg.Pool, bob: dict[str, Any]) -> None:
    """The MESSAGE limit counts messages; a user without limits of his own gets the configured ones, 0 is none."""
    inbox = bob["boxes"]["INBOX"]
    defaults = QuotaConfig(messages=2)
    for _ in range(2):
        assert await store(pool, sized(500), inbox, enforce=messages.Enforce(defaults))
    assert await store(pool, sized(500), inbox, enforce=messages.Enforce(defaults)) == []
    await set_limits(pool, bob["id"], None, 0)  # his own: no limit, whatever the default
    assert await store(pool, sized(500), inbox, enforce=messages.Enforce(defaults))
    usage = (await quota.usage(pool, [bob["id"]], defaults))[bob["id"]]
    assert (usage.messages, usage.limits) == (3, quota.Limits(None, None))


async def test_concurrent_deliveries_to_one_folder_never_pass_the_limit(
    dsn: str, pool: asyncpg.Pool, bob: dict[str, Any]
) -> None:
    """Twenty deliveries at once into an INBOX with room for five: exactly five are stored."""
    inbox = bob["boxes"]["INBOX"]
    await set_limits(pool, bob["id"], 5 * 2000, None)
    wide = await db.create_pool(DatabaseConfig(dsn=dsn, pool_min=20, pool_max=20))
    try:

        async def one(i: int) -> int:
            async with wide.acquire() as conn:
                stored = await messages.ingest(
                    conn, sized(2000, f"m{i}"), [inbox], enforce=messages.Enforce(NO_DEFAULTS)
                )
            return len(stored)

        results = await asyncio.gather(*(one(i) for i in range(20)))
    finally:
        await wide.close()
    assert sum(results) == 5
    assert (await counters(pool, bob["id"]))["INBOX"] == (5, 10_000)


async def test_a_user_has_no_hot_row_deliveries_to_two_folders_do_not_wait(
    pool: asyncpg.Pool, bob: dict[str, Any]
) -> None:
    """A delivery into INBOX goes through while a transaction storing into the same user's Sent is still open."""
    boxes = bob["boxes"]
    await set_limits(pool, bob["id"], 1_000_000, 1000)
    async with pool.acquire() as holder, holder.transaction():
        await messages.ingest(holder, sized(1000), [boxes["Sent"]], enforce=messages.Enforce(NO_DEFAULTS))
        # The Sent copy's transaction holds Sent's row (and nothing of the user's) until it ends.
        stored = await asyncio.wait_for(
            store(pool, sized(1000), boxes["INBOX"], enforce=messages.Enforce(NO_DEFAULTS)), 5
        )
        assert len(stored) == 1
    assert (await counters(pool, bob["id"]))["INBOX"] == (1, 1000)


async def test_copy_past_the_limit_is_refused_and_move_never_is(pool: asyncpg.Pool, bob: dict[str, Any]) -> None:
    """COPY that would pass a limit raises OverQuota and copies nothing; MOVE of the same messages goes through."""
    boxes = bob["boxes"]
    for _ in range(3):
        await store(pool, sized(1000), boxes["INBOX"])
    await set_limits(pool, bob["id"], 4000, None)
    async with pool.acquire() as conn:
        with pytest.raises(OverQuota):
            await imap_messages.copy(conn, boxes["INBOX"], [1, 2], boxes["Archive"], limits=NO_DEFAULTS)
        assert (await counters(pool, bob["id"]))["Archive"] == (0, 0)
        assert len(await imap_messages.copy(conn, boxes["INBOX"], [1], boxes["Archive"], limits=NO_DEFAULTS)) == 1
        await set_limits(pool, bob["id"], 1000, None)  # now far over: moving mail to Trash still works
        moved = await imap_messages.copy(conn, boxes["INBOX"], [2, 3], boxes["Trash"], move=True, limits=NO_DEFAULTS)
        assert len(moved) == 2
    kept = await counters(pool, bob["id"])
    assert (kept["INBOX"], kept["Trash"], kept["Archive"]) == ((1, 1000), (2, 2000), (1, 1000))


async def test_verdicts_follow_the_policy_and_the_full_since_clock(pool: asyncpg.Pool, bob: dict[str, Any]) -> None:
    """Room, a message that would cross (later), a full mailbox (later, then never after the days), one too big."""
    boxes = bob["boxes"]
    cfg = QuotaConfig(bounce_after_days=3)
    await set_limits(pool, bob["id"], 10_000, None)
    await store(pool, sized(8000), boxes["INBOX"])
    now = datetime.now(UTC)

    async def verdict(size: int, at: datetime = now) -> Verdict:
        async with pool.acquire() as conn:
            return (await quota.verdicts(conn, {bob["id"]: size}, cfg, at))[bob["id"]][0]

    async def since() -> datetime | None:
        found: datetime | None = await pool.fetchval("SELECT quota_full_since FROM users WHERE id = $1", bob["id"])
        return found

    assert await verdict(2000) is Verdict.FITS
    assert await verdict(2001) is Verdict.LATER  # would cross: not full, so no clock
    assert await verdict(10_001) is Verdict.NEVER  # larger than the limit itself
    assert await since() is None
    await store(pool, sized(2000), boxes["INBOX"])  # now exactly full
    assert await verdict(0) is Verdict.LATER
    assert await since() == now
    assert await verdict(0, now + timedelta(days=2, hours=23)) is Verdict.LATER
    assert await verdict(0, now + timedelta(days=3)) is Verdict.NEVER
    async with pool.acquire() as conn:  # the user expunges a message: the clock stops
        await imap_messages.remove(conn, boxes["INBOX"], [2])
    assert await since() is None
    assert await verdict(2000, now + timedelta(days=4)) is Verdict.FITS
    await store(pool, sized(2000), boxes["INBOX"])
    assert await verdict(0, now + timedelta(days=5)) is Verdict.LATER  # full again: the clock starts anew
    assert await since() == now + timedelta(days=5)
    assert await verdict(0, now + timedelta(days=5)) is Verdict.LATER
    await set_limits(pool, bob["id"], 20_000, None)  # an admin raises the limit: room, no clock
    assert await since() is None
    assert await verdict(0, now + timedelta(days=9)) is Verdict.FITS


async def test_bounce_at_once_when_configured_so(pool: asyncpg.Pool, bob: dict[str, Any]) -> None:
    """quota.bounce_after_days 0: a full mailbox refuses for good at the first try."""
    await set_limits(pool, bob["id"], None, 1)
    await store(pool, sized(500), bob["boxes"]["INBOX"])
    async with pool.acquire() as conn:
        found = await quota.verdicts(conn, {bob["id"]: 500}, QuotaConfig(bounce_after_days=0), datetime.now(UTC))
    assert found[bob["id"]][0] is Verdict.NEVER


async def test_refused_copy_leaves_no_blob_behind(pool: asyncpg.Pool, bob: dict[str, Any]) -> None:
    """A refused copy's blob (written with it) is noted for the sweep, which deletes it after the grace period."""
    await set_limits(pool, bob["id"], 100, None)
    raw = sized(2000, "refused")
    assert await store(pool, raw, bob["boxes"]["INBOX"], enforce=messages.Enforce(NO_DEFAULTS)) == []
    assert await pool.fetchval("SELECT count(*) FROM blob_orphans") == 1
    async with pool.acquire() as conn:
        await mailboxes.sweep_blobs(conn, timedelta(0))
    assert await pool.fetchval("SELECT count(*) FROM blobs") == 0
