"""SQL for the REST API's view of mail: folders, listings, search, one message, moves and deletes.

Every query takes the caller's user id and joins through ``mailboxes``, so
a message id of another user is indistinguishable from a missing one.
Changes go through the IMAP store functions (flags, copy, remove), so IMAP
sessions and the WebSocket hub hear of them the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from relate.store.db import Queryable

_SUMMARY = """m.id, m.mailbox_id, m.uid, m.subject, m.from_addr, m.to_addr, m.internal_date, m.date_header,
              m.size, m.flags, m.attachment_count, m.thread_id"""


async def mailboxes(conn: Queryable, user_id: int, only: int | None = None) -> list[dict[str, Any]]:
    """The user's folders with their counts (INBOX first); ``only``: just that one."""
    rows = await conn.fetch(
        """SELECT b.id, b.name, b.special_use,
                  EXISTS (SELECT 1 FROM subscriptions s WHERE s.user_id = b.user_id AND s.name = b.name) AS subscribed,
                  (SELECT count(*) FROM messages m WHERE m.mailbox_id = b.id) AS total,
                  (SELECT count(*) FROM messages m WHERE m.mailbox_id = b.id
                      AND NOT ('\\Seen' = ANY (m.flags))) AS unread
             FROM mailboxes b WHERE b.user_id = $1 AND ($2::bigint IS NULL OR b.id = $2)
            ORDER BY upper(b.name) <> 'INBOX', b.name""",
        user_id,
        only,
    )
    return [dict(r) for r in rows]


async def find_mailbox(conn: Queryable, user_id: int, ref: str) -> dict[str, Any] | None:
    """A mailbox of the user by id (digits) or name (INBOX in any case)."""
    if ref.isdigit():
        row = await conn.fetchrow(
            "SELECT id, name, special_use FROM mailboxes WHERE user_id = $1 AND id = $2", user_id, int(ref)
        )
    else:
        row = await conn.fetchrow(
            """SELECT id, name, special_use FROM mailboxes
                WHERE user_id = $1 AND (name = $2 OR (upper($2) = 'INBOX' AND upper(name) = 'INBOX'))""",
            user_id,
            ref,
        )
    return dict(row) if row else None


async def special(conn: Queryable, user_id: int, special_use: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT id, name, special_use FROM mailboxes WHERE user_id = $1 AND special_use = $2 ORDER BY id LIMIT 1",
        user_id,
        special_use,
    )
    return dict(row) if row else None


async def unread(conn: Queryable, mailbox_id: int) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM messages WHERE mailbox_id = $1 AND NOT ('\\Seen' = ANY (flags))", mailbox_id
    )
    return count


# Message counts per mailbox (this process), kept with the mailbox's UIDNEXT and HIGHESTMODSEQ as read in
# the same statement: every message added moves UIDNEXT, every message removed (expunge, move, POP3 DELE,
# API delete) moves HIGHESTMODSEQ, so while both are unchanged the count is too. A listing then costs one
# index range instead of counting the whole mailbox (tens of milliseconds at 100,000 messages). The
# mailbox's creation time is in the key too, so a process that talks to several databases (the tests)
# never takes one mailbox for another with the same id.
_COUNTS: dict[tuple[int, str | None], tuple[Any, ...]] = {}  # (mailbox id, keyword) -> (created_at, uidnext, modseq, n)
_MAX_COUNTS = 100_000

# A page of a mailbox, newest first, of every message or (``label``) those whose flags hold keyword $4. The page's
# ids come from an index-only scan of messages_mailbox_date_idx (with a label, the rows the date index points to
# are checked in order); only those rows are read from the table (an OFFSET over full rows would read every
# skipped row: 0.2 s at offset 100,000). Two statements, so that each keeps its own plan.
_PAGE = """SELECT b.created_at AS box_created, b.uidnext AS box_uidnext, b.highestmodseq AS box_modseq, {summary}
             FROM mailboxes b
             LEFT JOIN LATERAL (SELECT p.id FROM messages p WHERE p.mailbox_id = b.id{label}
                                 ORDER BY p.internal_date DESC, p.id DESC OFFSET $2 LIMIT $3) page ON true
             LEFT JOIN messages m ON m.id = page.id
            WHERE b.id = $1
            ORDER BY m.internal_date DESC, m.id DESC"""
_COUNT = """SELECT b.created_at, b.uidnext, b.highestmodseq,
                   (SELECT count(*) FROM messages m WHERE m.mailbox_id = b.id{label}) AS n
              FROM mailboxes b WHERE b.id = $1"""
_LISTING = {
    labelled: (
        _PAGE.format(summary=_SUMMARY, label=" AND $4 = ANY (p.flags)" if labelled else ""),
        _COUNT.format(label=" AND $2 = ANY (m.flags)" if labelled else ""),
    )
    for labelled in (False, True)
}


async def listing(
    conn: Queryable, mailbox_id: int, offset: int, limit: int, label: str | None = None
) -> tuple[list[dict[str, Any]], int]:
    """One page of a mailbox, newest first, and the mailbox's message count; with ``label`` (a keyword), of
    its messages whose flags hold it. The count is kept until the mailbox's UIDNEXT or HIGHESTMODSEQ moves
    (every flag change moves HIGHESTMODSEQ): with a label no index has it, and counting reads the mailbox's
    rows (100 ms and more at 100,000 messages)."""
    page_sql, count_sql = _LISTING[label is not None]
    rows = await conn.fetch(page_sql, mailbox_id, offset, limit, *((label,) if label is not None else ()))
    if not rows:
        return [], 0  # the mailbox is gone
    key = (rows[0]["box_created"], rows[0]["box_uidnext"], rows[0]["box_modseq"])
    items = [{k: v for k, v in r.items() if not k.startswith("box_")} for r in rows if r["id"] is not None]
    cached = _COUNTS.get((mailbox_id, label))
    if cached is not None and cached[:3] == key:
        return items, int(cached[3])
    row = await conn.fetchrow(count_sql, mailbox_id, *((label,) if label is not None else ()))
    if row is None:
        return items, 0
    if len(_COUNTS) >= _MAX_COUNTS:
        _COUNTS.clear()
    _COUNTS[mailbox_id, label] = (row["created_at"], row["uidnext"], row["highestmodseq"], row["n"])
    total: int = row["n"]
    return items, total


async def listing_by_thread(
    conn: Queryable, mailbox_id: int, offset: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """One page of a mailbox one thread at a time: each thread's newest message in the mailbox (with
    ``thread_count``, the thread's messages in the mailbox), newest first; and how many threads it holds.
    A message not threaded yet (stored before migration 0042) stands alone. Reads the whole mailbox."""
    rows = await conn.fetch(
        f"""WITH latest AS (
                SELECT DISTINCT ON (coalesce(p.thread_id, -p.id)) p.id,
                       count(*) OVER (PARTITION BY coalesce(p.thread_id, -p.id)) AS thread_count
                  FROM messages p WHERE p.mailbox_id = $1
                 ORDER BY coalesce(p.thread_id, -p.id), p.internal_date DESC, p.id DESC)
            SELECT {_SUMMARY}, latest.thread_count FROM latest JOIN messages m ON m.id = latest.id
             ORDER BY m.internal_date DESC, m.id DESC OFFSET $2 LIMIT $3""",
        mailbox_id,
        offset,
        limit,
    )
    total: int = await conn.fetchval(
        "SELECT count(DISTINCT coalesce(thread_id, -id)) FROM messages WHERE mailbox_id = $1", mailbox_id
    )
    return [dict(r) for r in rows], total


# Search answers at most this many matches (pages beyond are refused) and
# counts matches up to it: mail clients show "1000+"; an exact count of a
# word found in every message would read every one of them.
SEARCH_CAP = 1000


async def search(
    conn: Queryable,
    user_id: int,
    *,
    query: str | None,
    mailbox_id: int | None,
    sender: str | None,
    recipient: str | None,
    after: datetime | None,
    before: datetime | None,
    has_attachments: bool | None,
    is_read: bool | None,
    offset: int,
    limit: int,
    keyword: str | None = None,
) -> tuple[list[dict[str, Any]], int, bool]:
    """Full-text search with filters, newest first; (page, total, whether the total is exact).

    ``query`` is PostgreSQL web-search syntax over the words of subjects,
    addresses and bodies (words, "phrases", -exclusions, OR). ``sender`` /
    ``recipient`` match a substring of an address or display name; ``keyword``
    keeps the messages whose flags hold it (a label).
    ``offset + limit`` must not pass :data:`SEARCH_CAP`.

    Without words, each of the user's mailboxes is read newest first through
    its date index and the results merged, so the cost follows this user's
    mail, never the whole server's. With words, the matches are counted first
    (from the word index, at most ``SEARCH_CAP + 1`` of them), and that count
    chooses the page's plan: a word in fewer messages than the cap gives its
    page from the word index's matches (a few index probes each); a word found
    in more (for this user) is checked on each message the date index gives,
    newest first, which finds a page after reading a few times its length.
    Either way the answer is the same; only the work differs.
    """
    where: list[str] = []
    args: list[Any] = [user_id]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    tsquery = f"websearch_to_tsquery('simple', {arg(query)})" if query else None
    if sender:
        where.append(f"m.from_addr::text ILIKE {arg('%' + _like(sender) + '%')}")
    if recipient:
        p = arg("%" + _like(recipient) + "%")
        where.append(f"(m.to_addr::text ILIKE {p} OR m.cc_addr::text ILIKE {p})")
    if after is not None:
        where.append(f"m.internal_date >= {arg(after)}")
    if before is not None:
        where.append(f"m.internal_date < {arg(before)}")
    if has_attachments is not None:
        where.append("m.attachment_count > 0" if has_attachments else "m.attachment_count = 0")
    if is_read is not None:
        where.append(("" if is_read else "NOT ") + "('\\Seen' = ANY (m.flags))")
    if keyword is not None:
        where.append(f"{arg(keyword)} = ANY (m.flags)")
    boxes = "b.user_id = $1" + (f" AND b.id = {arg(mailbox_id)}" if mailbox_id is not None else "")
    filters = " AND ".join(["m.mailbox_id = b.id", boxes, *where])
    count_args = list(args)
    if tsquery is None:
        total: int = await conn.fetchval(
            f"""SELECT count(*) FROM (SELECT 1 FROM mailboxes b JOIN messages m ON {filters}
                                      LIMIT {SEARCH_CAP + 1}) hits""",
            *count_args,
        )
        rows = await _newest_first(conn, " AND ".join(["m.mailbox_id = b.id", *where]), boxes, args, offset, limit)
        return [dict(r) for r in rows], min(total, SEARCH_CAP), total <= SEARCH_CAP
    # Indexed messages through message_words (one row each: a join, so the count stops at the cap), and those
    # the indexer has not reached through their own subject and addresses; the two sets are disjoint.
    total = await conn.fetchval(
        f"""SELECT count(*) FROM (
                (SELECT 1 FROM message_words w JOIN messages m ON m.id = w.message_id JOIN mailboxes b ON {filters}
                  WHERE w.words @@ {tsquery} LIMIT {SEARCH_CAP + 1})
                UNION ALL
                (SELECT 1 FROM messages m JOIN mailboxes b ON {filters}
                  WHERE NOT m.text_indexed AND {_HEAD_WORDS} @@ {tsquery} LIMIT {SEARCH_CAP + 1})) hits""",
        *count_args,
    )
    if total <= SEARCH_CAP:
        rows = await conn.fetch(
            f"""SELECT {_SUMMARY} FROM messages m JOIN mailboxes b ON {filters}
                 WHERE m.id IN (SELECT w.message_id FROM message_words w WHERE w.words @@ {tsquery}
                                UNION ALL SELECT m.id FROM messages m WHERE NOT m.text_indexed
                                   AND {_HEAD_WORDS} @@ {tsquery})
                 ORDER BY m.internal_date DESC, m.id DESC OFFSET {arg(offset)} LIMIT {arg(limit)}""",
            *args,
        )
    else:
        # Asked of each message the date index gives (a function the planner takes to hold for a third of
        # the messages, so it walks the index: migration 0033).
        found = f"""relate_has_words(m.id, m.text_indexed, m.subject, m.from_addr, m.to_addr, m.cc_addr,
                                      {tsquery})"""
        rows = await _newest_first(
            conn, " AND ".join(["m.mailbox_id = b.id", found, *where]), boxes, args, offset, limit
        )
    return [dict(r) for r in rows], min(total, SEARCH_CAP), total <= SEARCH_CAP


# The words of a message's subject and addresses, as the indexer puts them first in message_words (0033).
_HEAD_WORDS = "relate_head_words(m.subject, m.from_addr, m.to_addr, m.cc_addr)"


async def _newest_first(
    conn: Queryable, condition: str, boxes: str, args: list[Any], offset: int, limit: int
) -> list[Any]:
    """The page of messages matching ``condition`` in the mailboxes ``boxes`` selects, each mailbox read newest
    first through its date index and the results merged."""
    args = list(args)
    window = f"${len(args) + 1}"
    args += [offset + limit, offset, limit]
    return await conn.fetch(
        f"""SELECT x.* FROM mailboxes b CROSS JOIN LATERAL (
                SELECT {_SUMMARY} FROM messages m WHERE {condition}
                 ORDER BY m.internal_date DESC, m.id DESC LIMIT {window}) x
             WHERE {boxes}
             ORDER BY x.internal_date DESC, x.id DESC OFFSET ${len(args) - 1} LIMIT ${len(args)}""",
        *args,
    )


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def get(conn: Queryable, user_id: int, email_id: int) -> dict[str, Any] | None:
    """One message of the user with everything the detail view needs (raw bytes included)."""
    row = await conn.fetchrow(
        f"""SELECT {_SUMMARY}, m.cc_addr, m.bcc_addr, m.message_id, m.in_reply_to, m."references",
                   m.attachments, m.header_end, b.special_use, b.name AS mailbox_name, bl.data AS raw
              FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id JOIN blobs bl ON bl.hash = m.blob_hash
             WHERE m.id = $1 AND b.user_id = $2""",
        email_id,
        user_id,
    )
    return dict(row) if row else None


async def locate(conn: Queryable, user_id: int, email_id: int) -> dict[str, Any] | None:
    """(mailbox, uid, flags, special use) of the user's message, for changes."""
    row = await conn.fetchrow(
        """SELECT m.id, m.mailbox_id, m.uid, m.flags, b.special_use
             FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
            WHERE m.id = $1 AND b.user_id = $2""",
        email_id,
        user_id,
    )
    return dict(row) if row else None


@dataclass(frozen=True)
class Located:
    """Where one of a user's messages is, for a change to it."""

    id: int
    mailbox_id: int
    uid: int
    flags: tuple[str, ...]
    special_use: str | None


async def locate_many(conn: Queryable, user_id: int, ids: Sequence[int]) -> list[Located]:
    """:func:`locate` for many messages in one query: those of ``ids`` that are the user's, by mailbox and UID."""
    rows = await conn.fetch(
        """SELECT m.id, m.mailbox_id, m.uid, m.flags, b.special_use
             FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
            WHERE m.id = ANY($1::bigint[]) AND b.user_id = $2
            ORDER BY m.mailbox_id, m.uid""",
        list(ids),
        user_id,
    )
    return [Located(r["id"], r["mailbox_id"], r["uid"], tuple(r["flags"]), r["special_use"]) for r in rows]


async def raw(conn: Queryable, user_id: int, email_id: int) -> bytes | None:
    data = await conn.fetchval(
        """SELECT bl.data FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id JOIN blobs bl ON bl.hash = m.blob_hash
            WHERE m.id = $1 AND b.user_id = $2""",
        email_id,
        user_id,
    )
    return None if data is None else bytes(data)


async def summaries(conn: Queryable, ids: Sequence[int]) -> list[dict[str, Any]]:
    rows = await conn.fetch(f"SELECT {_SUMMARY} FROM messages m WHERE m.id = ANY($1::bigint[])", list(ids))
    return [dict(r) for r in rows]
