"""A mailbox's keywords (migration 0023): kept on the mailbox row by every path that brings a keyword in."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from relate.config import DatabaseConfig
from relate.services import accounts
from relate.store import db, imap_messages, messages
from tests.store import premigration
from tests.support import make_message

BOB = "bob@example.com"


@pytest.fixture
async def boxes(pool: asyncpg.Pool) -> dict[str, Any]:
    """bob@example.com's folders by name."""
    await accounts.add_domain(pool, "example.com")
    user = await accounts.add_user(pool, BOB)
    rows = await pool.fetch("SELECT id, name FROM mailboxes WHERE user_id = $1", user["id"])
    return {r["name"]: r["id"] for r in rows}


async def keywords(pool: asyncpg.Pool, mailbox_id: int) -> list[str]:
    return list(await pool.fetchval("SELECT keywords FROM mailboxes WHERE id = $1", mailbox_id))


async def test_every_path_adds_keywords_sorted_without_system_flags(pool: asyncpg.Pool, boxes: dict[str, Any]) -> None:
    """Delivery with flags, STORE (add, replace, with UNCHANGEDSINCE) and COPY each add their keywords; removing
    one or storing system flags only changes nothing; the list is sorted and names each keyword once."""
    inbox, archive = boxes["INBOX"], boxes["Archive"]
    async with pool.acquire() as conn:
        (first,) = await messages.ingest(conn, make_message(subject="a"), [inbox], flags=["$Zeta", "\\Seen"])
        (second,) = await messages.ingest(conn, make_message(subject="b"), [inbox])
        assert await keywords(pool, inbox) == ["$Zeta"]
        await imap_messages.store_flags(conn, inbox, [second.uid], "+", ["$Alpha", "\\Flagged"])
        await imap_messages.store_flags(conn, inbox, [first.uid], "", ["$Mid", "$Zeta"])
        assert await keywords(pool, inbox) == ["$Alpha", "$Mid", "$Zeta"]
        await imap_messages.store_flags(conn, inbox, [first.uid, second.uid], "-", ["$Alpha", "$Mid", "$Zeta"])
        await imap_messages.store_flags(conn, inbox, [first.uid], "+", ["\\Deleted"])
        assert await keywords(pool, inbox) == ["$Alpha", "$Mid", "$Zeta"]  # once set, listed for good
        await imap_messages.store_flags_unchanged_since(conn, inbox, [second.uid], "+", ["$Beta"], 10**9)
        assert await keywords(pool, inbox) == ["$Alpha", "$Beta", "$Mid", "$Zeta"]
        assert await keywords(pool, archive) == []
        await imap_messages.copy(conn, inbox, [first.uid, second.uid], archive)
        assert await keywords(pool, archive) == ["$Beta"]  # what the copied messages carry now


async def test_migration_lists_keywords_already_in_use(empty_dsn: str) -> None:
    """Migration 0023 fills each mailbox's keywords from the flags its messages already carry."""
    conn = await db.connect(DatabaseConfig(dsn=empty_dsn))
    try:
        await premigration.before(conn, 23)
        await conn.execute(
            """INSERT INTO messages (mailbox_id, uid, modseq, size, blob_hash, envelope, bodystructure, header_end,
                                     search, flags)
               SELECT b.id, g, 1, 3, '\\x01', '{}', '{}', 0, '',
                      CASE g WHEN 1 THEN ARRAY['\\Seen', '$b'] WHEN 2 THEN ARRAY['$a', '$b'] ELSE ARRAY['\\Seen'] END
                 FROM mailboxes b, generate_series(1, 3) g
                WHERE b.name = 'INBOX' OR (b.name = 'Old' AND g = 3)"""
        )
        await premigration.apply(conn, 23)
        rows = await conn.fetch("SELECT name, keywords FROM mailboxes ORDER BY name")
    finally:
        await conn.close()
    assert [(r["name"], list(r["keywords"])) for r in rows] == [("Empty", []), ("INBOX", ["$a", "$b"]), ("Old", [])]
