"""SQL for a user's labels (migration 0044): a name, a colour and the IMAP keyword that is the label on a message.

A message has a label when its flags hold the label's keyword; adding and
removing labels on messages is a flag change (store/imap_messages.py), so
this module holds only the labels themselves. Every change is announced on
the change feed (``label``, store/changes.py) from its transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from relate.errors import Conflict
from relate.store import mailboxes
from relate.store.db import Queryable

_COLUMNS = "id, name, color, keyword"


@dataclass(frozen=True)
class Label:
    id: int
    name: str
    color: str
    keyword: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "color": self.color, "keyword": self.keyword}


def _label(row: Any) -> Label:
    return Label(row["id"], row["name"], row["color"], row["keyword"])


async def list_all(conn: Queryable, user_id: int) -> list[Label]:
    """The user's labels, by name (case-insensitively), then id."""
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM labels WHERE user_id = $1 ORDER BY lower(name), id", user_id)
    return [_label(r) for r in rows]


async def get(conn: Queryable, user_id: int, label_id: int, *, lock: bool = False) -> Label | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM labels WHERE user_id = $1 AND id = $2" + (" FOR UPDATE" if lock else ""),
        user_id,
        label_id,
    )
    return None if row is None else _label(row)


async def notify(conn: Queryable, user_id: int, change: str, label: Label) -> None:
    await mailboxes.notify(conn, "label", 0, user_id, 0, change=change, label=label.as_dict())


async def create(conn: asyncpg.Connection, user_id: int, name: str, color: str, keyword: str) -> Label:
    """A new label; Conflict when the user has one of that name or keyword (in any case)."""
    try:
        async with conn.transaction():
            row = await conn.fetchrow(
                f"INSERT INTO labels (user_id, name, color, keyword) VALUES ($1, $2, $3, $4) RETURNING {_COLUMNS}",
                user_id,
                name,
                color,
                keyword,
            )
            assert row is not None
            made = _label(row)
            await notify(conn, user_id, "created", made)
    except asyncpg.UniqueViolationError as exc:
        what = "keyword" if "keyword" in (exc.constraint_name or "") else "name"
        raise Conflict(f"a label with this {what} exists") from None
    return made


async def update(conn: asyncpg.Connection, user_id: int, label_id: int, name: str, color: str) -> Label | None:
    """Rename or recolour a label (its keyword stays); None if it is not the user's; Conflict on a taken name."""
    try:
        async with conn.transaction():
            row = await conn.fetchrow(
                f"UPDATE labels SET name = $3, color = $4 WHERE user_id = $1 AND id = $2 RETURNING {_COLUMNS}",
                user_id,
                label_id,
                name,
                color,
            )
            if row is None:
                return None
            changed = _label(row)
            await notify(conn, user_id, "updated", changed)
    except asyncpg.UniqueViolationError:
        raise Conflict("a label with this name exists") from None
    return changed


async def delete(conn: Queryable, user_id: int, label_id: int) -> Label | None:
    row = await conn.fetchrow(
        f"DELETE FROM labels WHERE user_id = $1 AND id = $2 RETURNING {_COLUMNS}", user_id, label_id
    )
    if row is None:
        return None
    gone = _label(row)
    await notify(conn, user_id, "deleted", gone)
    return gone


async def count(conn: Queryable, user_id: int) -> int:
    n: int = await conn.fetchval("SELECT count(*) FROM labels WHERE user_id = $1", user_id)
    return n


async def labelled(conn: Queryable, user_id: int, keyword: str) -> list[tuple[int, list[int]]]:
    """(mailbox id, UIDs) of the user's messages whose flags hold ``keyword``, by mailbox id."""
    rows = await conn.fetch(
        """SELECT m.mailbox_id, array_agg(m.uid ORDER BY m.uid) AS uids
             FROM mailboxes b JOIN messages m ON m.mailbox_id = b.id
            WHERE b.user_id = $1 AND $2 = ANY (m.flags)
            GROUP BY m.mailbox_id ORDER BY m.mailbox_id""",
        user_id,
        keyword,
    )
    return [(r["mailbox_id"], list(r["uids"])) for r in rows]
