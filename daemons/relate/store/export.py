"""Reading a user's mail out in bulk, for the MBOX export (relate/services/export.py).

The rows come through a server-side cursor in one read-only transaction, a
few at a time (``prefetch``), so an export of any size holds only that many
messages in memory and sees one consistent snapshot of the account.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from relate.store.emails import _like

# Rows fetched per round trip: bounds memory at this many messages (each at most the largest accepted).
PREFETCH = 8


@dataclass(frozen=True)
class Selection:
    """Which of a user's messages: one folder, a search, or (all None) everything."""

    mailbox_id: int | None = None
    query: str | None = None  # PostgreSQL web-search syntax, as GET /api/emails/search takes
    sender: str | None = None
    after: datetime | None = None
    before: datetime | None = None


@dataclass(frozen=True)
class ExportRow:
    mailbox: str
    sender: str | None  # the first From address
    internal_date: datetime
    raw: bytes


def _where(sel: Selection, args: list[Any]) -> str:
    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    where = ["m.mailbox_id = $1"]
    if sel.query:
        query = f"websearch_to_tsquery('simple', {arg(sel.query)})"  # as store/emails.py's search finds it
        where.append(f"relate_has_words(m.id, m.text_indexed, m.subject, m.from_addr, m.to_addr, m.cc_addr, {query})")
    if sel.sender:
        where.append(f"m.from_addr::text ILIKE {arg('%' + _like(sel.sender) + '%')}")
    if sel.after is not None:
        where.append(f"m.internal_date >= {arg(sel.after)}")
    if sel.before is not None:
        where.append(f"m.internal_date < {arg(sel.before)}")
    return " AND ".join(where)


async def rows(pool: asyncpg.Pool, user_id: int, sel: Selection) -> AsyncIterator[ExportRow]:
    """The selected messages, folder by folder (by name) in UID order; holds one pooled connection meanwhile.

    One cursor per folder walks the (mailbox, uid) index: a single query ordered across folders could
    make PostgreSQL sort the whole export, message bodies included, in temporary files.
    """
    args: list[Any] = [0]
    where = _where(sel, args)
    async with pool.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
        boxes = await conn.fetch(
            "SELECT id, name FROM mailboxes WHERE user_id = $1 AND ($2::bigint IS NULL OR id = $2) ORDER BY name",
            user_id,
            sel.mailbox_id,
        )
        for box in boxes:
            args[0] = box["id"]
            cursor = conn.cursor(
                f"""SELECT m.from_addr -> 0 ->> 'email' AS sender, m.internal_date, bl.data
                      FROM messages m JOIN blobs bl ON bl.hash = m.blob_hash
                     WHERE {where}
                     ORDER BY m.uid""",
                *args,
                prefetch=PREFETCH,
            )
            async for row in cursor:
                yield ExportRow(box["name"], row["sender"], row["internal_date"], bytes(row["data"]))
