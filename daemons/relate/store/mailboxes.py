"""SQL for a user's folders: listing, creating, deleting, renaming, subscribing, status.

Names are UTF-8 with ``/`` as the hierarchy delimiter; ``INBOX`` is matched
without regard to case (RFC 9051 §5.1). Changes that IMAP sessions must
hear of are announced with ``NOTIFY relate_mail`` inside the transaction.

Subscriptions are names, kept apart from the mailboxes (table ``subscriptions``,
RFC 9051 §6.3.7): deleting a mailbox leaves its name subscribed, creating one
subscribes nothing, and a name without a mailbox may be subscribed. RENAME
takes the subscriptions of the renamed names along.

Raw messages (blobs) are shared by every copy of a message and outlive it:
removing messages (any path: expunge, move, POP3, the API, folder or user
removal) leaves their blobs, which triggers note in ``blob_orphans`` with the
time. :func:`sweep_blobs`, run by the delivery daemon, deletes those that have
been unreferenced for a grace period. It takes the blobs table in SHARE ROW
EXCLUSIVE mode first, so no transaction can be between storing a blob (which
finds the old one and leaves it) and inserting the row that refers to it: such
a delivery either commits before the sweep looks, and its reference is seen,
or waits and stores the bytes afresh. A copy made from a message removed
during the grace period holds the blob by its foreign-key check; should the
sweep reach such a blob anyway, its statement fails and it tries again later.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import asyncpg

from relate.errors import Conflict, NotFound, TooMany
from relate.store import changes
from relate.store.db import Queryable

CHANNEL = changes.MAIL
# A mailbox name: octets of UTF-8, and levels below the root (a/b/c has 3). Every way of making one (IMAP,
# REST) holds to these, so a folder made by one can be used by the other.
MAX_NAME = 1000
MAX_DEPTH = 64
_COLUMNS = "id, user_id, name, special_use, uidvalidity, uidnext, highestmodseq"
_SWEEP_LOCK = 0x424C4F42  # "BLOB": one blob sweep at a time, whatever the number of delivery daemons


def _announce_sql(event: str, mailbox: str, channel: int) -> str:
    """NOTIFY relate_mail from a statement's RETURNING, so it goes out only for a row the statement changed, in its
    transaction: a mailbox made ("created") or a subscription made or dropped ("subscriptions", mailbox 0). The user
    is parameter $1, the channel parameter ``channel``; no name is sent: a listener reads the user's list."""
    return (
        f"pg_notify(${channel}, json_build_object('event', '{event}', 'user', $1::bigint, 'mailbox', {mailbox},"
        " 'modseq', 0)::text)"
    )


def is_inbox(name: str) -> bool:
    return name.upper() == "INBOX"


# The payload, with the bulk action the transaction is part of, if any (store/changes.py).
_NOTIFY = f"""SELECT pg_notify($1, CASE WHEN {changes.BULK_MARK} IS NULL THEN $2::text
    ELSE ($2::text::jsonb || jsonb_build_object('bulk', {changes.BULK_MARK}))::text END)"""


async def notify(conn: Queryable, event: str, mailbox_id: int, user_id: int, modseq: int, **extra: Any) -> None:
    payload = {"event": event, "mailbox": mailbox_id, "user": user_id, "modseq": modseq, **extra}
    await conn.execute(_NOTIFY, CHANNEL, json.dumps(payload))


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


def ancestors(name: str) -> list[str]:
    """The names above ``name`` in the hierarchy (``a/b/c`` -> ``a``, ``a/b``), outermost first."""
    return [name[:i] for i, ch in enumerate(name) if ch == "/"]


async def create(
    conn: Queryable, user_id: int, name: str, special_use: str | None = None, *, limit: int = 0
) -> dict[str, Any]:
    """Create ``name``, and the mailboxes above it that do not exist yet (RFC 9051 §6.3.4); Conflict if it exists,
    TooMany if the user would have more than ``limit`` mailboxes (0: no limit).

    One statement: the parents are made only when ``name`` is new, so a refused CREATE changes nothing. The
    limit is read before it (two CREATEs at once may each pass it by one: a cap, not an exact count).
    """
    if limit:
        parents = ancestors(name)
        held, made = await conn.fetchrow(
            "SELECT count(*), count(*) FILTER (WHERE name = ANY($2::text[])) FROM mailboxes WHERE user_id = $1",
            user_id,
            parents,
        )
        if held + 1 + len(parents) - made > limit:
            raise TooMany(f"a user may have at most {limit} mailboxes")
    # One statement: the parents, the mailbox and their NOTIFYs ("created", parents first) commit together.
    row = await conn.fetchrow(
        f"""WITH parents AS (
                INSERT INTO mailboxes (user_id, name) SELECT $1, p FROM unnest($4::text[]) AS p
                 WHERE NOT EXISTS (SELECT 1 FROM mailboxes WHERE user_id = $1 AND name = $2)
                ON CONFLICT DO NOTHING RETURNING id, name)
            INSERT INTO mailboxes (user_id, name, special_use) VALUES ($1, $2, $3)
            ON CONFLICT DO NOTHING
            RETURNING (SELECT count({_announce_sql("created", "p.id", 5)})
                         FROM (SELECT id FROM parents ORDER BY name) p) AS parents_announced,
                      {_COLUMNS}, {_announce_sql("created", "id", 5)}""",
        user_id,
        name,
        special_use,
        ancestors(name),
        CHANNEL,
    )
    if row is None:
        raise Conflict(f"mailbox {name} already exists")
    return {k: v for k, v in row.items() if k not in ("pg_notify", "parents_announced")}


async def delete(conn: asyncpg.Connection, user_id: int, name: str) -> None:
    """Delete the folder and its messages (children keep existing)."""
    async with conn.transaction():
        box = await get(conn, user_id, name)
        if box is None:
            raise NotFound(f"no mailbox {name}")
        await conn.execute("DELETE FROM mailboxes WHERE id = $1", box["id"])  # blobs: see sweep_blobs
        # The user made room: a quota's full-since clock stops (store/quota.py).
        await conn.execute(
            "UPDATE users SET quota_full_since = NULL WHERE id = $1 AND quota_full_since IS NOT NULL", user_id
        )
        await notify(conn, "deleted", box["id"], user_id, box["highestmodseq"])


async def rename(conn: asyncpg.Connection, user_id: int, old: str, new: str) -> None:
    """Rename a folder and every folder below it (INBOX is the caller's special case, RFC 9051 §6.3.6).

    Mailboxes above the new name are made where missing, as CREATE makes them, and the
    subscriptions of the old names become subscriptions of the new ones.
    """
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
        await conn.execute(
            """INSERT INTO mailboxes (user_id, name) SELECT $1, p FROM unnest($2::text[]) AS p
               ON CONFLICT DO NOTHING""",
            user_id,
            ancestors(new),
        )
        await conn.execute(
            """WITH moved AS (
                   DELETE FROM subscriptions WHERE user_id = $1 AND (name = $2 OR name LIKE $4) RETURNING name)
               INSERT INTO subscriptions (user_id, name) SELECT $1, $3 || substr(name, length($2) + 1) FROM moved
               ON CONFLICT DO NOTHING""",
            user_id,
            old,
            new,
            _like_prefix(old + "/"),
        )
        await notify(conn, "renamed", box["id"], user_id, box["highestmodseq"])


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def subscriptions(conn: Queryable, user_id: int) -> frozenset[str]:
    """The names the user is subscribed to, mailbox or not."""
    rows = await conn.fetch("SELECT name FROM subscriptions WHERE user_id = $1", user_id)
    return frozenset(r["name"] for r in rows)


# The user's mailboxes, then the names subscribed to (the mailbox columns NULL), in one round trip.
_LISTING = f"""
SELECT {_COLUMNS}, NULL::text AS subscribed FROM mailboxes WHERE user_id = $1
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, name FROM subscriptions WHERE user_id = $1"""


async def listing(conn: Queryable, user_id: int) -> tuple[list[dict[str, Any]], frozenset[str]]:
    """:func:`list_all` (not sorted) and :func:`subscriptions` in one statement, as LIST needs both."""
    boxes: list[dict[str, Any]] = []
    subscribed: list[str] = []
    for row in await conn.fetch(_LISTING, user_id):
        if row["subscribed"] is None:
            boxes.append({k: v for k, v in row.items() if k != "subscribed"})
        else:
            subscribed.append(row["subscribed"])
    return boxes, frozenset(subscribed)


async def subscribe(conn: Queryable, user_id: int, names: Sequence[str], *, limit: int = 0) -> None:
    """Subscribe these names (as given: the caller spells INBOX "INBOX"); subscribed ones stay as they are.
    Each new subscription is announced ("subscriptions", for IMAP NOTIFY's SubscriptionChange). TooMany if
    the user would have more than ``limit`` subscriptions (0: no limit; read first, a cap as in create)."""
    if limit:
        others = await conn.fetchval(
            "SELECT count(*) FROM subscriptions WHERE user_id = $1 AND name <> ALL($2::text[])", user_id, list(names)
        )
        if others + len(set(names)) > limit:
            raise TooMany(f"a user may subscribe to at most {limit} names")
    await conn.execute(
        f"""INSERT INTO subscriptions (user_id, name) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING
            RETURNING {_announce_sql("subscriptions", "0", 3)}""",
        user_id,
        list(names),
        CHANNEL,
    )


async def unsubscribe(conn: Queryable, user_id: int, name: str) -> None:
    """Forget the subscription to ``name``, if there is one (announced as subscribe announces)."""
    await conn.execute(
        f"""DELETE FROM subscriptions WHERE user_id = $1 AND name = $2
            RETURNING {_announce_sql("subscriptions", "0", 3)}""",
        user_id,
        name,
        CHANNEL,
    )


# What each STATUS value costs: the row's own columns and counters (kept by every path that adds or
# removes messages, store/quota.py) cost nothing; the others count over the mailbox's messages, unseen
# and recent by index (messages_unseen_idx, the (mailbox_id, uid) key), only when asked for.
_STATUS_VALUES = {
    "messages": "b.message_count",
    "size": "b.message_bytes",
    "unseen": "(SELECT count(*) FROM messages m WHERE m.mailbox_id = b.id AND NOT ('\\Seen' = ANY (m.flags)))",
    "recent": "(SELECT count(*) FROM messages m WHERE m.mailbox_id = b.id AND m.uid > b.recent_uid)",
    "deleted": "(SELECT count(*) FROM messages m WHERE m.mailbox_id = b.id AND '\\Deleted' = ANY (m.flags))",
    "deleted_storage": """(SELECT coalesce(sum(m.size), 0)::bigint FROM messages m
                           WHERE m.mailbox_id = b.id AND '\\Deleted' = ANY (m.flags))""",
}
STATUS_VALUES = frozenset(_STATUS_VALUES)
# The counts over the messages that only a change raising the mailbox's HIGHESTMODSEQ can change (every
# message added, removed or re-flagged raises it; the \\Recent claim does not): a caller that counted
# them at some modseq may hand that in (``known``) and get NULL for them while it still holds.
COUNTED = frozenset({"unseen", "deleted", "deleted_storage"})


def _status_sql(values: frozenset[str], where: str, known: int = 0) -> str:
    """STATUS's statement; with ``known``, parameters $known and $known+1 are the mailbox id and modseq of
    earlier counts: the COUNTED values are NULL (not counted again) while the mailbox is at that modseq."""
    wanted = ""
    for v in sorted(values & STATUS_VALUES):
        value = _STATUS_VALUES[v]
        if known and v in COUNTED:
            value = f"CASE WHEN b.id = ${known} AND b.highestmodseq = ${known + 1} THEN NULL ELSE {value} END"
        wanted += f", {value} AS {v}"
    return f"SELECT {', '.join('b.' + c.strip() for c in _COLUMNS.split(','))}{wanted} FROM mailboxes b WHERE {where}"


async def status(conn: Queryable, mailbox_id: int, values: frozenset[str] = STATUS_VALUES) -> dict[str, Any]:
    """The mailbox's columns and the STATUS ``values`` asked for (RFC 9051 §6.3.11): messages, size (RFC 8438),
    unseen, deleted, recent (the messages no session has taken as recent yet, RFC 3501 §6.3.10,
    imap_messages.claim_recent) and deleted_storage (RFC 9208 §4.1.4: the octets an EXPUNGE would free,
    as quota counts them); uidnext, uidvalidity and highestmodseq always. One statement."""
    row = await conn.fetchrow(_status_sql(values, "b.id = $1"), mailbox_id)
    if row is None:
        raise NotFound("mailbox is gone")
    return dict(row)


async def status_named(
    conn: Queryable,
    user_id: int,
    name: str,
    values: frozenset[str] = STATUS_VALUES,
    known: tuple[int, int] | None = None,
) -> dict[str, Any] | None:
    """:func:`status` of the user's mailbox ``name`` (INBOX in any case), or None if there is none: the
    look-up and the counts in one statement. ``known``: (mailbox id, modseq) at which the caller counted
    the COUNTED values it asks for; they come back None when they still hold (see COUNTED)."""
    reuse = known if known is not None and values & COUNTED else ()
    if is_inbox(name):
        sql = _status_sql(values, "b.user_id = $1 AND upper(b.name) = 'INBOX'", 2 if reuse else 0)
        row = await conn.fetchrow(sql, user_id, *reuse)
    else:
        sql = _status_sql(values, "b.user_id = $1 AND b.name = $2", 3 if reuse else 0)
        row = await conn.fetchrow(sql, user_id, name, *reuse)
    return dict(row) if row else None


async def sweep_blobs(conn: asyncpg.Connection, grace: timedelta, limit: int = 1000) -> tuple[int, int]:
    """Delete blobs that lost their last reference more than ``grace`` ago and have found none since.

    Returns (candidates settled, blobs deleted); a full batch (``limit`` settled)
    means more may wait. See the module docstring for why this is safe against
    a delivery of the same bytes. Another sweep at work, or deliveries holding
    the blobs table for over a second, make this one return (0, 0) at once.
    """
    try:
        async with conn.transaction():
            return await _sweep_batch(conn, grace, limit)
    except asyncpg.LockNotAvailableError:
        return 0, 0


async def _sweep_batch(conn: asyncpg.Connection, grace: timedelta, limit: int) -> tuple[int, int]:
    if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _SWEEP_LOCK):
        return 0, 0
    await conn.execute("SET LOCAL lock_timeout = '1s'")
    # Waits for every transaction that has written a blob to end, and holds new ones until this one
    # commits: none of them can be between writing a blob and referencing it meanwhile.
    await conn.execute("LOCK TABLE blobs IN SHARE ROW EXCLUSIVE MODE")
    row = await conn.fetchrow(
        """WITH due AS (
                DELETE FROM blob_orphans WHERE ctid = ANY (ARRAY(
                    SELECT ctid FROM blob_orphans WHERE since < statement_timestamp() - $1::interval
                     ORDER BY since LIMIT $2))
                RETURNING hash),
            gone AS (
                DELETE FROM blobs b WHERE b.hash IN (SELECT hash FROM due)
                   AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob_hash = b.hash)
                   AND NOT EXISTS (SELECT 1 FROM outbound_emails e WHERE e.blob_hash = b.hash)
                RETURNING 1)
           SELECT (SELECT count(*) FROM due) AS settled, (SELECT count(*) FROM gone) AS deleted""",
        grace,
        limit,
    )
    assert row is not None
    return row["settled"], row["deleted"]
