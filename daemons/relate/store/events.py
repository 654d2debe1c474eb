"""SQL the API's real-time events read: what a ``NOTIFY relate_mail`` is about, in REST shapes.

A notification names a mailbox and the modseq its change took (store/
imap_messages.py: every change stamps the rows it touches with one new
modseq). So the rows of a change are the mailbox's rows at exactly that
modseq; a row changed again since carries a later modseq and is reported
with that later change instead. Row counts are capped by the caller
(``limit``): a bulk change is announced as a whole, not row by row.
"""

from __future__ import annotations

from typing import Any

from relate.store.db import Queryable

_SUMMARY = """m.id, m.mailbox_id, m.uid, m.subject, m.from_addr, m.to_addr, m.internal_date, m.date_header,
              m.size, m.flags, m.attachment_count, m.thread_id"""


async def new_email(conn: Queryable, email_id: int, mailbox_id: int | None = None) -> dict[str, Any] | None:
    """The listing row of one message with its owner (``user_id``); None if it is gone (or not in that mailbox)."""
    row = await conn.fetchrow(
        f"""SELECT {_SUMMARY}, b.user_id FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
             WHERE m.id = $1 AND ($2::bigint IS NULL OR m.mailbox_id = $2)""",
        email_id,
        mailbox_id,
    )
    return dict(row) if row else None


async def new_emails(conn: Queryable, email_ids: list[int]) -> dict[int, dict[str, Any]]:
    """:func:`new_email` for many messages in one query: id -> row, for those that still exist."""
    rows = await conn.fetch(
        f"""SELECT {_SUMMARY}, b.user_id FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
             WHERE m.id = ANY($1::bigint[])""",
        email_ids,
    )
    return {r["id"]: dict(r) for r in rows}


async def at_modseq(conn: Queryable, mailbox_id: int, modseq: int, limit: int) -> list[dict[str, Any]]:
    """Listing rows of the mailbox's messages last changed (or added) at ``modseq``, at most ``limit``."""
    rows = await conn.fetch(
        f"SELECT {_SUMMARY} FROM messages m WHERE m.mailbox_id = $1 AND m.modseq = $2 ORDER BY m.uid LIMIT $3",
        mailbox_id,
        modseq,
        limit,
    )
    return [dict(r) for r in rows]


async def unread(conn: Queryable, mailbox_ids: list[int]) -> dict[int, int]:
    """Unread (no \\Seen) message counts of these mailboxes (those that still exist)."""
    rows = await conn.fetch(
        """SELECT b.id, (SELECT count(*) FROM messages m WHERE m.mailbox_id = b.id
                            AND NOT ('\\Seen' = ANY (m.flags))) AS unread
             FROM mailboxes b WHERE b.id = ANY($1::bigint[])""",
        mailbox_ids,
    )
    return {r["id"]: r["unread"] for r in rows}


async def mailbox(conn: Queryable, mailbox_id: int) -> dict[str, Any] | None:
    """A folder's ``name`` and ``special_use``; None if it is gone."""
    row = await conn.fetchrow("SELECT name, special_use FROM mailboxes WHERE id = $1", mailbox_id)
    return dict(row) if row else None
