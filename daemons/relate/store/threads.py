"""Threads (conversations): which thread of its account a message belongs to, decided once, as it is stored.

Policy (JWZ's threading, made incremental and per account):

- A message's keys are its own msg-id and the msg-ids it refers to
  (References, else In-Reply-To: ``relate.mail.threadids``), and its subject
  key (``relate.mail.threadsubject``: the base subject without ``Re:``,
  ``Fwd:``, ``AW:``... prefixes). ``thread_keys`` maps each key of an
  account to a thread.
- A message joins the oldest thread one of its msg-ids maps to. A reply
  stored before its parent registers the parent's msg-id, so the parent,
  when it arrives, finds the reply's thread.
- When none does, it joins the thread its subject key maps to if that
  thread's latest message with this subject is within ``SUBJECT_WINDOW`` of
  it (either way in time, for mail imported out of order); beyond that, or
  without a subject, it starts a thread. The subject key then points to
  the message's thread, so a subject belongs to its latest conversation.
- When a message's msg-ids map to two threads or more (a late parent
  joining two replies that named no common ancestor), they are merged into
  the oldest (lowest id): its messages and keys move there, the others are
  deleted, and the hub hears ``ThreadsMerged``. Subject matches never merge.
- A thread spans the account's folders; a move keeps a message's thread, a
  copy is in its original's thread. ``threads.last_at`` is the latest
  arrival (the thread list's order); a thread whose messages are all gone
  stays (its keys still find it) but lists nowhere.

Cost at ingest: the ingest statement (store/messages.py) does the work in
CTEs of its own round trip: one index scan of ``thread_keys`` for all the
message's keys (``= ANY``), then the new keys inserted and the thread's
``last_at`` raised. A merge is another statement, only when one is needed.

Locks: storing a message never waits for another transaction, so threads
add no wait to the mailbox row lock ingest holds (a delivery to a user's
INBOX goes through while another transaction stores into their Sent, in
the same thread or not). ``thread_keys`` has no unique index (an insert
would wait for another transaction inserting the same key), and the rows
ingest updates (``threads.last_at``, a subject key's thread and time) are
taken with SKIP LOCKED: one held by another transaction, which is storing
a message of that thread or subject at the same moment, is left to it.
So two transactions storing messages that name the same new msg-id may
both start threads and both insert the key; the next message naming it
finds both and merges them. Merges are rare and may wait.

Mail stored before migration 0042 has no thread: :func:`thread_pending`
assigns threads to it in short transactions (the delivery daemon runs it
when idle), with the same statement, oldest first.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from relate.mail.threadids import thread_ids
from relate.mail.threadsubject import subject_key
from relate.store import changes, emails
from relate.store.db import Queryable

SUBJECT_WINDOW = timedelta(days=7)
# Msg-ids longer than this are not keys (a btree entry must stay well under PostgreSQL's 2704 octets).
_MAX_KEY = 500
# Messages threaded per transaction by thread_pending.
PENDING_BATCH = 500


def keys(ids: Sequence[str], subject: str | None) -> tuple[list[str], str | None]:
    """(msg-id keys, subject key or None) of a message, as the threading statement takes them, from its
    ``relate.mail.threadids.thread_ids`` and its decoded subject."""
    subject_text = subject_key(subject)
    found = list(dict.fromkeys(k for k in ids if k and len(k) <= _MAX_KEY))
    return found, f"s:{subject_text}" if subject_text else None


def assign_sql(src: str, at: str, ids: str, subject: str) -> str:
    """CTEs that find (or start) the thread of one message: ``thr (id, linked)``, ``linked`` the threads its
    msg-ids map to (more than one: merge them). ``src`` is a CTE with the owner's ``user_id`` (no row: nothing
    is done); ``at``, ``ids`` (text[]) and ``subject`` (text, NULL for none) are SQL for the message's time and
    keys. Used by the ingest statement and :func:`thread_pending`.

    Nothing here waits for another transaction (see the module docstring): keys are only inserted (no unique
    index to wait on), and the rows it would update (the thread's ``last_at``, the subject key's thread and
    time) are skipped when another transaction holds them, which is then storing a message of the same
    thread or subject at about the same time."""
    window = f"interval '{SUBJECT_WINDOW.days} days'"
    return f"""
found AS (SELECT k.key, k.thread_id, k.at FROM thread_keys k, {src} s
           WHERE k.user_id = s.user_id AND k.key = ANY({ids} || {subject})),
matched AS (SELECT coalesce((SELECT min(f.thread_id) FROM found f WHERE f.key IS DISTINCT FROM {subject}),
                            (SELECT f.thread_id FROM found f WHERE f.key = {subject}
                                AND f.at > {at} - {window} AND f.at < {at} + {window}
                              ORDER BY f.at DESC LIMIT 1)) AS id,
                   (SELECT array_agg(DISTINCT f.thread_id) FROM found f
                     WHERE f.key IS DISTINCT FROM {subject}) AS linked
              FROM {src}),
thr AS (SELECT coalesce(m.id, nextval('threads_id_seq')) AS id, m.id IS NULL AS fresh, m.linked FROM matched m),
thread AS (INSERT INTO threads (id, user_id, last_at) SELECT thr.id, s.user_id, {at} FROM thr, {src} s
            WHERE thr.fresh),
thread_later AS (UPDATE threads t SET last_at = {at}
                  WHERE t.id = (SELECT x.id FROM threads x, thr WHERE x.id = thr.id AND NOT thr.fresh
                                   AND x.last_at < {at} FOR UPDATE SKIP LOCKED)),
thread_key AS (INSERT INTO thread_keys (user_id, key, thread_id, at)
               SELECT DISTINCT s.user_id, k.key, thr.id, {at} FROM thr, {src} s, unnest({ids} || {subject}) AS k (key)
                WHERE k.key IS NOT NULL AND k.key NOT IN (SELECT f.key FROM found f)),
subject_later AS (UPDATE thread_keys k SET thread_id = thr.id, at = {at} FROM thr
                   WHERE k.ctid = ANY (ARRAY(SELECT x.ctid FROM thread_keys x, {src} s
                                              WHERE EXISTS (SELECT 1 FROM found f WHERE f.key = {subject})
                                                AND x.user_id = s.user_id AND x.key = {subject} AND x.at <= {at}
                                                FOR UPDATE OF x SKIP LOCKED))),"""


_ASSIGN = (
    "WITH src AS (SELECT $1::bigint AS user_id),"
    + assign_sql("src", "$2::timestamptz", "$3::text[]", "$4::text")
    + """
done AS (UPDATE messages m SET thread_id = thr.id FROM thr WHERE m.id = $5)
SELECT thr.id, thr.linked FROM thr"""
)


async def merge_linked(conn: Queryable, user_id: int, linked: Sequence[int] | None) -> None:
    """Merge the threads one message's msg-ids mapped to, when there are two or more."""
    if linked is not None and len(set(linked)) > 1:
        await merge(conn, user_id, sorted(set(linked)))


async def merge(conn: Queryable, user_id: int, thread_list: Sequence[int]) -> int:
    """Merge the user's threads ``thread_list`` into the oldest of them; returns its id. Tells the hub."""
    keep, others = min(thread_list), sorted(set(thread_list) - {min(thread_list)})
    await conn.execute(
        """WITH msgs AS (UPDATE messages SET thread_id = $2 WHERE thread_id = ANY($3::bigint[])),
                ks AS (UPDATE thread_keys SET thread_id = $2 WHERE thread_id = ANY($3::bigint[])),
                gone AS (DELETE FROM threads WHERE id = ANY($3::bigint[]) AND user_id = $1 RETURNING last_at),
                kept AS (UPDATE threads SET last_at = greatest(last_at, (SELECT max(last_at) FROM gone))
                          WHERE id = $2 AND user_id = $1)
           SELECT pg_notify($4, json_build_object('event', 'threads', 'user', $1::bigint, 'mailbox', 0,
                                                  'id', $2::bigint, 'ids', $3::bigint[])::text)""",
        user_id,
        keep,
        others,
        changes.MAIL,
    )
    return keep


async def thread_pending(conn: asyncpg.Connection, limit: int = PENDING_BATCH) -> int:
    """Thread up to ``limit`` messages stored before threads existed (migration 0042), oldest first, in one
    transaction; returns how many (0: none is left)."""
    async with conn.transaction():
        rows = await conn.fetch(
            """SELECT m.id, b.user_id, m.internal_date, m.subject, m.message_id, m.in_reply_to, m."references"
                 FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
                WHERE m.thread_id IS NULL ORDER BY m.id LIMIT $1 FOR UPDATE OF m SKIP LOCKED""",
            limit,
        )
        for r in rows:
            linked = thread_ids(r["message_id"], r["in_reply_to"], r["references"] or ())
            ids, subject = keys([k.replace("\x00", "") for k in linked], r["subject"])
            found = await conn.fetchrow(_ASSIGN, r["user_id"], r["internal_date"], ids, subject, r["id"])
            await merge_linked(conn, r["user_id"], found["linked"])
    return len(rows)


# --- reading ----------------------------------------------------------------------------------------

# One thread's figures over the user's messages in it: counts, latest arrival, senders in order of first
# message, and the latest message (its subject, preview and place, for the snippet).
_FIGURES = """
SELECT m.thread_id,
       count(*) AS message_count,
       count(*) FILTER (WHERE NOT ('\\Seen' = ANY (m.flags))) AS unread_count,
       bool_or('\\Flagged' = ANY (m.flags)) AS flagged,
       sum(m.attachment_count) AS attachment_count,
       min(m.internal_date) AS first_at,
       max(m.internal_date) AS last_at,
       (array_agg(m.subject ORDER BY m.internal_date, m.id))[1] AS subject,
       (array_agg(m.id ORDER BY m.internal_date DESC, m.id DESC))[1] AS latest_id,
       array_agg(DISTINCT m.mailbox_id) AS mailbox_ids,
       (SELECT coalesce(jsonb_agg(p.person ORDER BY p.first), '[]')
          FROM (SELECT DISTINCT ON (lower(a ->> 'email')) a AS person, x.internal_date AS first
                  FROM messages x JOIN mailboxes xb ON xb.id = x.mailbox_id,
                       jsonb_array_elements(x.from_addr) a
                 WHERE x.thread_id = m.thread_id AND xb.user_id = $1
                 ORDER BY lower(a ->> 'email'), x.internal_date, x.id) p) AS participants
  FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
 WHERE m.thread_id = ANY($2::bigint[]) AND b.user_id = $1
 GROUP BY m.thread_id"""


@dataclass(frozen=True)
class ThreadFigures:
    id: int
    message_count: int
    unread_count: int
    flagged: bool
    attachment_count: int
    first_at: datetime
    last_at: datetime
    subject: str | None
    latest_id: int
    mailbox_ids: tuple[int, ...]
    participants: tuple[dict[str, Any], ...]


def _figures(row: Any) -> ThreadFigures:
    people = row["participants"]
    if isinstance(people, str):
        people = json.loads(people)
    return ThreadFigures(
        row["thread_id"],
        row["message_count"],
        row["unread_count"],
        bool(row["flagged"]),
        int(row["attachment_count"] or 0),
        row["first_at"],
        row["last_at"],
        row["subject"],
        row["latest_id"],
        tuple(sorted(row["mailbox_ids"])),
        tuple(people[:PARTICIPANTS]),
    )


# Participants listed per thread (the first senders).
PARTICIPANTS = 20


async def listing(conn: Queryable, user_id: int, offset: int, limit: int) -> tuple[list[ThreadFigures], int]:
    """One page of the user's threads, latest arrival first, and how many threads the user has."""
    page = await conn.fetch(
        """SELECT t.id FROM threads t
            WHERE t.user_id = $1
              AND EXISTS (SELECT 1 FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
                           WHERE m.thread_id = t.id AND b.user_id = $1)
            ORDER BY t.last_at DESC, t.id DESC OFFSET $2 LIMIT $3""",
        user_id,
        offset,
        limit,
    )
    total: int = await conn.fetchval(
        """SELECT count(*) FROM threads t
            WHERE t.user_id = $1
              AND EXISTS (SELECT 1 FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
                           WHERE m.thread_id = t.id AND b.user_id = $1)""",
        user_id,
    )
    ids = [r["id"] for r in page]
    if not ids:
        return [], total
    found = {r["thread_id"]: _figures(r) for r in await conn.fetch(_FIGURES, user_id, ids)}
    return [found[i] for i in ids if i in found], total


async def figures(conn: Queryable, user_id: int, thread_id: int) -> ThreadFigures | None:
    """One thread of the user (None: not the user's, or empty)."""
    row = await conn.fetchrow(_FIGURES, user_id, [thread_id])
    return None if row is None else _figures(row)


async def messages(conn: Queryable, user_id: int, thread_id: int, offset: int, limit: int) -> list[dict[str, Any]]:
    """One page of a thread's messages, oldest first."""
    rows = await conn.fetch(
        f"""SELECT {emails._SUMMARY} FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
             WHERE m.thread_id = $2 AND b.user_id = $1
             ORDER BY m.internal_date, m.id OFFSET $3 LIMIT $4""",
        user_id,
        thread_id,
        offset,
        limit,
    )
    return [dict(r) for r in rows]


async def message_ids(conn: Queryable, user_id: int, thread_id: int) -> list[int]:
    """The ids of the user's messages in the thread, oldest first (empty: no such thread of the user's)."""
    rows = await conn.fetch(
        """SELECT m.id FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
            WHERE m.thread_id = $2 AND b.user_id = $1 ORDER BY m.internal_date, m.id""",
        user_id,
        thread_id,
    )
    return [r["id"] for r in rows]


async def previews(conn: Queryable, message_ids: Sequence[int]) -> dict[int, tuple[int, int, str | None]]:
    """(mailbox, uid, preview or None when not made yet) of some messages, by id."""
    rows = await conn.fetch(
        "SELECT id, mailbox_id, uid, preview FROM messages WHERE id = ANY($1::bigint[])", list(message_ids)
    )
    return {r["id"]: (r["mailbox_id"], r["uid"], r["preview"]) for r in rows}
