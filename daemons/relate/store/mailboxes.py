"""SQL for a user's folders: listing, creating, deleting, renaming, subscribing, status.

Names are UTF-8 with ``/`` as the hierarchy delimiter; ``INBOX`` is matched
without regard to case (RFC 9051 §5.1). Changes that IMAP sessions must
hear of are announced with ``NOTIFY relate_mail`` inside the transaction.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from relate.errors import Conflict, NotFound
from relate.store.db import Queryable

CHANNEL = "relate_mail"
_COLUMNS = "id, user_id, name, special_use, uidvalidity, uidnext, highestmodseq, subscribed"


def is_inbox(name: str) -> bool:
    return name.upper() == "INBOX"


async def notify(conn: Queryable, event: str, mailbox_id: int, user_id: int, modseq: int, **extra: Any) -> None:
    payload = {"event": event, "mailbox": mailbox_id, "user": user_id, "modseq": modseq, **extra}
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, json.dumps(payload))


async def list_all(conn: Queryable, user_id: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM mailboxes WHERE user_id = $1 ORDER BY name", user_id)
    return [dict(r) for r in rows]


async def get(conn: Queryable, user_id: int, name: str) -> dict[str, Any] | None:
    if is_inbox(name):
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM mailboxes WHERE user_id = $1 AND upper(name) = 'INBOX'", user_id
        )
    else:
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM mailboxes WHERE user_id = $1 AND name = $2", user_id, name)
    return dict(row) if row else None


async def by_id(conn: Queryable, mailbox_id: int) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM mailboxes WHERE id = $1", mailbox_id)
    return dict(row) if row else None


async def create(conn: Queryable, user_id: int, name: str, special_use: str | None = None) -> dict[str, Any]:
    row = await conn.fetchrow(
        f"""INSERT INTO mailboxes (user_id, name, special_use) VALUES ($1, $2, $3)
            ON CONFLICT DO NOTHING RETURNING {_COLUMNS}""",
        user_id,
        name,
        special_use,
    )
    if row is None:
        raise Conflict(f"mailbox {name} already exists")
    return dict(row)


async def delete(conn: asyncpg.Connection, user_id: int, name: str) -> None:
    """Delete the folder and its messages (children keep existing)."""
    async with conn.transaction():
        box = await get(conn, user_id, name)
        if box is None:
            raise NotFound(f"no mailbox {name}")
        hashes = await conn.fetch("SELECT DISTINCT blob_hash FROM messages WHERE mailbox_id = $1", box["id"])
        await conn.execute("DELETE FROM mailboxes WHERE id = $1", box["id"])
        await drop_orphan_blobs(conn, [r["blob_hash"] for r in hashes])
        await notify(conn, "deleted", box["id"], user_id, box["highestmodseq"])


async def rename(conn: asyncpg.Connection, user_id: int, old: str, new: str) -> None:
    """Rename a folder and every folder below it (INBOX is the caller's special case, RFC 9051 §6.3.6)."""
    async with conn.transaction():
        box = await get(conn, user_id, old)
        if box is None:
            raise NotFound(f"no mailbox {old}")
        if await get(conn, user_id, new) is not None:
            raise Conflict(f"mailbox {new} already exists")
        # A folder below the old name must not land on one that exists below the new name.
        clash = await conn.fetchval(
            """SELECT n.name FROM mailboxes o
                 JOIN mailboxes n ON n.user_id = o.user_id AND n.name = $3 || substr(o.name, length($2) + 1)
                WHERE o.user_id = $1 AND o.name LIKE $4 LIMIT 1""",
            user_id,
            old,
            new,
            _like_prefix(old + "/"),
        )
        if clash is not None:
            raise Conflict(f"mailbox {clash} already exists")
        await conn.execute(
            """UPDATE mailboxes SET name = $3 || substr(name, length($2) + 1)
                WHERE user_id = $1 AND (name = $2 OR name LIKE $4)""",
            user_id,
            old,
            new,
            _like_prefix(old + "/"),
        )
        await notify(conn, "renamed", box["id"], user_id, box["highestmodseq"])


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def set_subscribed(conn: Queryable, user_id: int, name: str, subscribed: bool) -> None:
    box = await get(conn, user_id, name)
    if box is None:
        raise NotFound(f"no mailbox {name}")
    await conn.execute("UPDATE mailboxes SET subscribed = $2 WHERE id = $1", box["id"], subscribed)


async def status(conn: Queryable, mailbox_id: int) -> dict[str, int]:
    """MESSAGES, UNSEEN, DELETED, SIZE, UIDNEXT, UIDVALIDITY, HIGHESTMODSEQ (RFC 9051 §6.3.11)."""
    row = await conn.fetchrow(
        """SELECT b.uidnext, b.uidvalidity, b.highestmodseq,
                  count(m.id) AS messages,
                  count(m.id) FILTER (WHERE NOT ('\\Seen' = ANY (m.flags))) AS unseen,
                  count(m.id) FILTER (WHERE '\\Deleted' = ANY (m.flags)) AS deleted,
                  coalesce(sum(m.size), 0)::bigint AS size
             FROM mailboxes b LEFT JOIN messages m ON m.mailbox_id = b.id
            WHERE b.id = $1 GROUP BY b.id""",
        mailbox_id,
    )
    if row is None:
        raise NotFound("mailbox is gone")
    return dict(row)


async def drop_orphan_blobs(conn: Queryable, hashes: list[bytes]) -> None:
    """Remove raw messages no mailbox and no queued mail refers to any more."""
    if not hashes:
        return
    await conn.execute(
        """DELETE FROM blobs b WHERE b.hash = ANY($1::bytea[])
              AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob_hash = b.hash)
              AND NOT EXISTS (SELECT 1 FROM outbound_emails e WHERE e.blob_hash = b.hash)""",
        hashes,
    )
