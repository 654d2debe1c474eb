"""SQL for what IMAP does to messages in a mailbox: list, fetch, flag, copy, move, expunge, search.

Every change takes a new modseq from the mailbox row (``UPDATE … RETURNING``,
which also serialises changes to one mailbox), stamps the changed messages
with it, records expunged UIDs in ``mailbox_expunges``, and NOTIFYs in the
same transaction. The same UPDATE keeps the mailbox's message count and
bytes, which quota adds up (store/quota.py). A session on any host that hears the notification asks
for everything above the modseq it knew: new UIDs, changed flags, expunges.
The expunge log is kept for the mailbox's life (a trigger empties it when the
mailbox goes), so a QRESYNC client (imap/condstore.py) away for any length of
time hears exactly which UIDs went since its modseq.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from relate.config import QuotaConfig
from relate.errors import MailboxGone, OverQuota
from relate.store import mailboxes, quota, spam
from relate.store.changes import BULK_MARK
from relate.store.db import Queryable
from relate.store.spam import JUNK

# At most this many expunged message ids travel in one NOTIFY (ids of up to 19 digits fit in 8000 bytes).
EXPUNGE_IDS_MAX = 300


async def uids(conn: Queryable, mailbox_id: int) -> list[int]:
    rows = await conn.fetch("SELECT uid FROM messages WHERE mailbox_id = $1 ORDER BY uid", mailbox_id)
    return [r["uid"] for r in rows]


# What IMAP sessions change in messages they already hold (STORE, FETCH's implied \\Seen, EXPUNGE, the
# \\Recent claim) may commit without waiting for the disk: a crash may forget the last fraction of a
# second of such changes (PostgreSQL's asynchronous commit: never corruption, never half a change), as
# Dovecot's mail_fsync=optimized forgets index changes. Whatever stores mail (delivery, APPEND, COPY)
# always waits. In a statement, this makes the transaction it runs in commit so; in an implicit one,
# only that statement's. Waiting costs a WAL flush per change (several ms on a busy disk, and the
# mailbox row stays locked meanwhile, holding up every other change to that mailbox).
NOT_DURABLE = "set_config('synchronous_commit', 'off', true)"

# SELECT's view of a mailbox in one statement (one snapshot, one round trip): the mailbox row with
# its keywords (kept there, migration 0023), its UIDs in order and the first unseen UID; with {claim},
# the \\Recent claim too (claim_recent), which locks the mailbox row only when the snapshot shows
# messages no session has taken yet: SELECTs of a mailbox without new mail do not queue for its lock.
# With {reuse}, $R and $R+1 are the mailbox id and modseq of UIDs the caller read before (imap/views.py):
# while the mailbox is at that modseq they hold, and neither they nor the first unseen UID are read again.
_SELECT_STATE = """
SELECT box.id, box.name, box.uidvalidity, box.uidnext, box.highestmodseq, box.recent_uid, box.keywords AS flags,
       {reuse} AS reused,
       CASE WHEN {reuse} THEN NULL ELSE
           (SELECT coalesce(string_agg(int8send(uid), '' ORDER BY uid), '') FROM messages WHERE mailbox_id = box.id)
       END AS uids,
       CASE WHEN {reuse} THEN NULL ELSE
           (SELECT min(uid) FROM messages WHERE mailbox_id = box.id AND NOT ('\\Seen' = ANY (flags)))
       END AS unseen{claim}
  FROM mailboxes box WHERE box.user_id = $1 AND {match}"""
_CLAIM = f""",
       CASE WHEN box.recent_uid < box.uidnext - 1
            THEN (SELECT ARRAY[c.lo, c.hi] FROM relate_claim_recent(box.id, NULL) AS c)
            ELSE ARRAY[box.recent_uid, box.recent_uid] END AS claimed, {NOT_DURABLE}"""


def _select_sql(inbox: bool, claim: bool, reuse: bool) -> str:
    first = 2 if inbox else 3  # the parameter after the user (and the name)
    return _SELECT_STATE.format(
        match="upper(box.name) = 'INBOX'" if inbox else "box.name = $2",
        claim=_CLAIM if claim else "",
        reuse=f"(box.id = ${first} AND box.highestmodseq = ${first + 1})" if reuse else "false",
    )


_SELECT = {
    (inbox, claim, reuse): _select_sql(inbox, claim, reuse)
    for inbox in (False, True)
    for claim in (False, True)
    for reuse in (False, True)
}


async def select_state(
    conn: Queryable, user_id: int, name: str, *, claim: bool = False, known: tuple[int, int] | None = None
) -> dict[str, Any] | None:
    """The mailbox ``name`` (INBOX in any case) as SELECT reports it, or None if there is none.

    Keys: id, name, uidvalidity, uidnext, highestmodseq, recent_uid (see :func:`claim_recent`),
    flags (every keyword set on a message of the mailbox, sorted; the system flags are the
    caller's), uids (ascending, as :func:`uid_array` reads them) and unseen (the lowest UID without
    \\Seen, or None), unless ``known`` (mailbox id, modseq) still holds: then reused is true and
    uids and unseen are None, the caller's are right. With ``claim``, claimed: the (lo, hi)
    :func:`claim_recent` would return for ``upto`` None, in the same statement.
    """
    inbox = mailboxes.is_inbox(name)
    sql = _SELECT[inbox, claim, known is not None]
    args = ((user_id,) if inbox else (user_id, name)) + (known or ())
    row = await conn.fetchrow(sql, *args)
    if row is None:
        return None
    state = dict(row)
    if claim:
        state["claimed"] = (int(row["claimed"][0]), int(row["claimed"][1]))
    return state


def uid_array(data: bytes) -> array.array[int]:
    """UIDs as :func:`select_state` sends them (8-octet big-endian integers, one after the other: no
    Python int per message) as an array of its own."""
    uids = array.array("Q")
    uids.frombytes(data)
    if sys.byteorder == "little":
        uids.byteswap()
    return uids


async def claim_recent(conn: Queryable, mailbox_id: int, upto: int | None) -> tuple[int, int] | None:
    """Take the messages that arrived since a session last did as recent for the caller (RFC 3501 §2.3.2).

    Returns (lo, hi): the caller's recent messages are those with lo < UID <= hi (none if lo == hi);
    None if the mailbox is gone. ``upto`` is the newest UID the caller knows of (None: all stored).

    How it stays right across processes and hosts: each mailbox row holds ``recent_uid``, the
    highest UID already given out as recent (migration 0016). The function ``relate_claim_recent``
    locks the row (FOR UPDATE), reads it and moves it up to ``upto`` in one call, so however many
    sessions on however many hosts claim at once, the ranges they get are disjoint: each message
    is recent in exactly one session. It costs one round trip and one row update per claim (when
    a read-write IMAP4rev1 session hears of new mail; SELECT's is part of :func:`select_state`,
    and only when there is something to take), not a row per message, and
    commits without waiting for the disk (:data:`NOT_DURABLE`: a crash may give a message as
    recent once more).
    """
    row = await conn.fetchrow(f"SELECT lo, hi, {NOT_DURABLE} FROM relate_claim_recent($1, $2)", mailbox_id, upto)
    if row is None or row["lo"] is None:
        return None
    return int(row["lo"]), int(row["hi"])


_CHANGES = """
SELECT b.highestmodseq,
       ARRAY(SELECT m.uid FROM messages m WHERE m.mailbox_id = b.id AND m.uid > $3 ORDER BY m.uid) AS new,
       ARRAY(SELECT ROW(m.uid, m.flags, m.modseq) FROM messages m
              WHERE m.mailbox_id = b.id AND m.modseq > $2 AND m.uid <= $3 ORDER BY m.uid) AS flags,
       ARRAY(SELECT e.uid FROM mailbox_expunges e WHERE e.mailbox_id = b.id AND e.modseq > $2 ORDER BY e.uid)
           AS expunged
  FROM mailboxes b
 WHERE b.id = $1"""


async def changes(conn: Queryable, mailbox_id: int, since_modseq: int, max_uid: int) -> dict[str, Any]:
    """What happened above ``since_modseq``: new messages, flag changes, expunged UIDs, and the new modseq.

    One statement, so one round trip and one snapshot: the modseq returned covers exactly the
    changes listed. The lists are the caller's to read, never to change (IMAP sessions on one
    mailbox share one answer, ChangeHub in imap/server.py).
    """
    row = await conn.fetchrow(_CHANGES, mailbox_id, since_modseq, max_uid)
    if row is None:
        return {"gone": True}
    return {
        "gone": False,
        "modseq": row["highestmodseq"],
        "new": list(row["new"]),
        "flags": [(uid, list(flags), modseq) for uid, flags, modseq in row["flags"]],
        "expunged": list(row["expunged"]),
    }


FETCH_COLUMNS = frozenset(
    {"envelope", "bodystructure", "header_end", "internal_date", "size", "modseq", "created_at", "preview"}
)


async def fetch(
    conn: Queryable,
    mailbox_id: int,
    uid_list: Sequence[int],
    *,
    with_raw: bool,
    columns: frozenset[str] = FETCH_COLUMNS,
    utf8: bool = False,
    max_bytes: int | None = None,
    header_only: bool = False,
) -> list[Any]:
    """UID, flags and ``columns`` (and, if asked, the raw bytes) of these messages, in UID order.

    Rows are asyncpg records (read like dicts); decoding only the columns a
    FETCH needs keeps large listings cheap. For ``envelope`` the row carries
    ``envelope_wire``, the ENVELOPE as sent (to a UTF-8 session if ``utf8``),
    and ``envelope`` (the jsonb) only where that is missing. With ``max_bytes``,
    only the first messages whose sizes add up to at most that many octets (the
    first one whatever its size): the caller asks again for those after them.
    With ``header_only``, ``raw`` is the header section only (up to ``header_end``), and
    ``max_bytes`` counts header octets.
    """
    wanted = "".join(f", m.{c}" for c in sorted((columns & FETCH_COLUMNS) - {"envelope"}))
    if "bodystructure_text" in columns:  # the JSON as text: imap/fetch.py renders it once per structure
        wanted += ", m.bodystructure::text AS bodystructure_text"
    if "envelope" in columns:
        wire = "coalesce(m.envelope_wire_utf8, m.envelope_wire)" if utf8 else "m.envelope_wire"
        wanted += f", {wire} AS envelope_wire, CASE WHEN m.envelope_wire IS NULL THEN m.envelope END AS envelope"
    # Only the header: PostgreSQL decompresses a stored blob only as far as the slice asked for.
    raw = ""
    if with_raw:
        raw = ", substring(b.data FROM 1 FOR m.header_end::int) AS raw" if header_only else ", b.data AS raw"
    blobs = "JOIN blobs b ON b.hash = m.blob_hash" if with_raw else ""
    weight = "header_end" if header_only else "size"
    if max_bytes is None or len(uid_list) <= 1:
        return await conn.fetch(
            f"""SELECT m.id, m.uid, m.flags{wanted}{raw} FROM messages m {blobs}
                 WHERE m.mailbox_id = $1 AND m.uid = ANY($2::bigint[]) ORDER BY m.uid""",
            mailbox_id,
            list(uid_list),
        )
    # The sizes add up in UID order over the index; only the rows kept are read whole.
    return await conn.fetch(
        f"""SELECT m.id, m.uid, m.flags{wanted}{raw}
              FROM (SELECT id, {weight} AS size, sum({weight}) OVER (ORDER BY uid) AS upto FROM messages
                     WHERE mailbox_id = $1 AND uid = ANY($2::bigint[])) AS w
              JOIN messages m ON m.id = w.id {blobs}
             WHERE w.upto <= $3 OR w.upto = w.size ORDER BY m.uid""",
        mailbox_id,
        list(uid_list),
        max_bytes,
    )


async def _lock_mailbox(conn: Queryable, mailbox_id: int) -> tuple[int, int]:
    """Lock the mailbox row for a change; returns (the modseq a change would get, user id)."""
    row = await conn.fetchrow(
        "SELECT highestmodseq + 1 AS next, user_id FROM mailboxes WHERE id = $1 FOR UPDATE", mailbox_id
    )
    if row is None:
        raise MailboxGone("mailbox is gone")
    return row["next"], row["user_id"]


async def _commit_modseq(conn: Queryable, mailbox_id: int, modseq: int, flags: Sequence[str]) -> None:
    """The mailbox's new HIGHESTMODSEQ, and the keywords among ``flags`` (now on some message) in its list."""
    await conn.execute(
        "UPDATE mailboxes SET highestmodseq = $2, keywords = relate_add_keywords(keywords, $3) WHERE id = $1",
        mailbox_id,
        modseq,
        list(flags),
    )


# A removal's modseq and counts on the mailbox row; the owner has made room, so a quota's full-since
# clock (store/quota.py) stops, which writes the user's row only when it was running.
async def store_flags(
    conn: asyncpg.Connection,
    mailbox_id: int,
    uid_list: Sequence[int],
    mode: str,
    flags: Sequence[str],
    *,
    durable: bool = True,
) -> tuple[int, list[tuple[int, list[str]]]]:
    """Add (``+``), remove (``-``) or set (``""``) flags; returns the modseq and (uid, flags) of changed messages.

    A STORE that changes nothing leaves HIGHESTMODSEQ alone. One statement, so one round trip: it
    locks the mailbox row, updates the messages under that modseq, raises HIGHESTMODSEQ and
    announces the change (all or nothing, as the statement is its own transaction unless the caller
    holds one). ``durable=False`` commits without waiting for the disk (see :data:`NOT_DURABLE`).
    """
    sql = _STORE_SQL[mode, durable]
    row = await conn.fetchrow(sql, mailbox_id, list(uid_list), list(flags), mailboxes.CHANNEL)
    if row is None:
        raise MailboxGone("mailbox is gone")
    return row["modseq"], sorted((uid, list(new)) for uid, new in row["changed"])


async def store_flags_unchanged_since(
    conn: asyncpg.Connection,
    mailbox_id: int,
    uid_list: Sequence[int],
    mode: str,
    flags: Sequence[str],
    unchanged_since: int,
) -> tuple[int, list[tuple[int, list[str]]], list[int]]:
    """STORE (UNCHANGEDSINCE n) (RFC 7162 §3.1.3): :func:`store_flags` for the messages whose modseq is at
    most ``unchanged_since``; also returns, ascending, the UIDs that failed the test or no longer exist."""
    async with conn.transaction():
        modseq, user_id = await _lock_mailbox(conn, mailbox_id)
        # Under the mailbox lock nothing changes between this test and the update.
        row = await conn.fetchrow(
            """SELECT coalesce(array_agg(r.uid ORDER BY r.uid)
                               FILTER (WHERE m.uid IS NULL OR m.modseq > $3), '{}') AS failed
                 FROM unnest($2::bigint[]) AS r(uid)
                 LEFT JOIN messages m ON m.mailbox_id = $1 AND m.uid = r.uid""",
            mailbox_id,
            list(uid_list),
            unchanged_since,
        )
        assert row is not None
        changed = await _set_flags(conn, mailbox_id, user_id, uid_list, mode, flags, modseq, unchanged_since)
    return modseq, changed, list(row["failed"])


def _new_flags(mode: str) -> str:
    """The SQL of a message's flags after STORE ``mode`` with flags ``$3``."""
    if mode == "+":
        return "ARRAY(SELECT DISTINCT unnest(m.flags || $3::text[]))"
    if mode == "-":
        return "ARRAY(SELECT f FROM unnest(m.flags) AS f WHERE NOT f = ANY($3::text[]))"
    return "ARRAY(SELECT DISTINCT unnest($3::text[]))"


# store_flags: $1 mailbox, $2 UIDs, $3 flags, $4 the NOTIFY channel. The mailbox row is locked first (box),
# the messages take its next modseq, and only if one changed is that made the mailbox's (with the keywords
# added or set, migration 0023) and announced.
_ADD_KEYWORDS = {"+": ", keywords = relate_add_keywords(b.keywords, $3)", "-": ""}
_ADD_KEYWORDS[""] = _ADD_KEYWORDS["+"]
_STORE_SQL = {
    (mode, durable): f"""
WITH box AS (SELECT id, user_id, highestmodseq + 1 AS next{"" if durable else ", " + NOT_DURABLE}
               FROM mailboxes WHERE id = $1 FOR UPDATE),
     upd AS (UPDATE messages m SET flags = {_new_flags(mode)}, modseq = box.next
               FROM box
              WHERE m.mailbox_id = box.id AND m.uid = ANY($2::bigint[])
                AND NOT ({_new_flags(mode)} @> m.flags AND m.flags @> {_new_flags(mode)})
          RETURNING m.uid, m.flags),
     bump AS (UPDATE mailboxes b SET highestmodseq = box.next{_ADD_KEYWORDS[mode]}
                FROM box
               WHERE b.id = box.id AND EXISTS (SELECT 1 FROM upd)
           RETURNING b.id)
SELECT box.next AS modseq,
       ARRAY(SELECT ROW(upd.uid, upd.flags) FROM upd) AS changed,
       (SELECT pg_notify($4, json_build_object('event', 'flags', 'mailbox', box.id, 'user', box.user_id,
                                               'modseq', box.next, 'bulk', {BULK_MARK})::text) FROM bump) AS announced
  FROM box"""
    for mode in ("+", "-", "")
    for durable in (True, False)
}


async def _set_flags(
    conn: Queryable,
    mailbox_id: int,
    user_id: int,
    uid_list: Sequence[int],
    mode: str,
    flags: Sequence[str],
    modseq: int,
    unchanged_since: int | None,
) -> list[tuple[int, list[str]]]:
    """The flag update itself, under the mailbox lock; stamps ``modseq`` on the messages it changes."""
    new_flags = _new_flags(mode)
    rows = await conn.fetch(
        f"""UPDATE messages m SET flags = {new_flags}, modseq = $4
             WHERE m.mailbox_id = $1 AND m.uid = ANY($2::bigint[]) AND ($5::bigint IS NULL OR m.modseq <= $5)
               AND NOT ({new_flags} @> m.flags AND m.flags @> {new_flags})
         RETURNING m.uid, m.flags""",
        mailbox_id,
        list(uid_list),
        list(flags),
        modseq,
        unchanged_since,
    )
    if rows:
        await _commit_modseq(conn, mailbox_id, modseq, () if mode == "-" else flags)
        await mailboxes.notify(conn, "flags", mailbox_id, user_id, modseq)
    return sorted((r["uid"], list(r["flags"])) for r in rows)


async def modified_uids(conn: Queryable, mailbox_id: int, since: int) -> list[int]:
    """UIDs of the messages changed (or added) above modseq ``since``, ascending (FETCH CHANGEDSINCE)."""
    rows = await conn.fetch(
        "SELECT uid FROM messages WHERE mailbox_id = $1 AND modseq > $2 ORDER BY uid", mailbox_id, since
    )
    return [r["uid"] for r in rows]


async def modified(
    conn: Queryable, mailbox_id: int, since: int, upto: int, after: int, limit: int
) -> list[tuple[int, list[str], int]]:
    """(uid, flags, modseq) of up to ``limit`` messages above ``after`` whose modseq is in (since, upto], by UID."""
    rows = await conn.fetch(
        """SELECT uid, flags, modseq FROM messages
            WHERE mailbox_id = $1 AND modseq > $2 AND modseq <= $3 AND uid > $4 ORDER BY uid LIMIT $5""",
        mailbox_id,
        since,
        upto,
        after,
        limit,
    )
    return [(r["uid"], list(r["flags"]), r["modseq"]) for r in rows]


async def vanished(conn: Queryable, mailbox_id: int, since: int, upto: int | None = None) -> list[tuple[int, int]]:
    """UIDs expunged with a modseq in (since, upto], as ascending runs of consecutive UIDs (lo, hi).

    The runs are made in SQL, so years of expunges cost a row per run, not one per UID.
    """
    rows = await conn.fetch(
        """SELECT min(uid) AS lo, max(uid) AS hi
             FROM (SELECT uid, uid - row_number() OVER (ORDER BY uid) AS run FROM mailbox_expunges
                    WHERE mailbox_id = $1 AND modseq > $2 AND ($3::bigint IS NULL OR modseq <= $3)) AS e
            GROUP BY run ORDER BY lo""",
        mailbox_id,
        since,
        upto,
    )
    return [(r["lo"], r["hi"]) for r in rows]


# expunge and remove: $1 mailbox, $2 UIDs (NULL: every one), $3 the NOTIFY channel, $4 how many ids a
# notification may list, $5 whether only messages flagged \\Deleted go (EXPUNGE) or any (remove). Under the
# mailbox row lock: delete, log the UIDs under the next modseq (a UID is deleted once and never reused, so
# the log takes them without a conflict check), make it the mailbox's with the counts (and stop a quota's
# full-since clock), announce (the API's hub tells apps which messages went by id; NOTIFY payloads are
# capped at 8000 bytes, so a bulk removal leaves the ids out and listeners refetch the mailbox); nothing
# when nothing went. The blobs stay: a trigger notes them and the delivery daemon's sweep deletes those
# left unreferenced (mailboxes.sweep_blobs).
_EXPUNGE_SQL = {
    durable: f"""
WITH box AS (SELECT id, user_id, highestmodseq + 1 AS next{"" if durable else ", " + NOT_DURABLE}
               FROM mailboxes WHERE id = $1 FOR UPDATE),
     gone AS (DELETE FROM messages m USING box
               WHERE m.mailbox_id = box.id AND (NOT $5::boolean OR '\\Deleted' = ANY (m.flags))
                 AND ($2::bigint[] IS NULL OR m.uid = ANY($2::bigint[]))
           RETURNING m.id, m.uid, m.size),
     counted AS (SELECT count(*) AS n, coalesce(sum(size), 0) AS bytes FROM gone),
     bump AS (UPDATE mailboxes b SET highestmodseq = box.next, message_count = b.message_count - counted.n,
                                     message_bytes = b.message_bytes - counted.bytes
                FROM box, counted
               WHERE b.id = box.id AND counted.n > 0
           RETURNING b.id),
     room AS (UPDATE users u SET quota_full_since = NULL
                FROM box, bump
               WHERE u.id = box.user_id AND u.quota_full_since IS NOT NULL),
     logged AS (INSERT INTO mailbox_expunges (mailbox_id, uid, modseq) SELECT box.id, gone.uid, box.next FROM box, gone)
SELECT ARRAY(SELECT gone.uid FROM gone ORDER BY gone.uid) AS uids, (SELECT box.next FROM bump) AS modseq,
       (SELECT pg_notify($3, json_build_object(
                   'event', 'expunge', 'mailbox', box.id, 'user', box.user_id, 'modseq', box.next,
                   'ids', CASE WHEN counted.n <= $4 THEN (SELECT json_agg(gone.id) FROM gone) END,
                   'bulk', {BULK_MARK})::text)
          FROM bump, counted) AS announced
  FROM box"""
    for durable in (True, False)
}


@dataclass(frozen=True)
class Removed:
    """What an expunge removed: the UIDs, ascending, and the modseq it took (None when nothing went)."""

    uids: list[int]
    modseq: int | None


async def expunge(conn: Queryable, mailbox_id: int, uid_list: Sequence[int] | None, *, durable: bool = True) -> Removed:
    """Remove messages flagged \\Deleted (of ``uid_list``, if given).

    One statement (one round trip, its own transaction unless the caller holds one), as the comment of
    ``_EXPUNGE_SQL`` describes. ``durable=False`` commits without waiting for the disk (:data:`NOT_DURABLE`).
    """
    return await _remove(conn, mailbox_id, uid_list, only_deleted=True, durable=durable)


async def _remove(
    conn: Queryable, mailbox_id: int, uid_list: Sequence[int] | None, *, only_deleted: bool, durable: bool
) -> Removed:
    uids = list(uid_list) if uid_list is not None else None
    row = await conn.fetchrow(_EXPUNGE_SQL[durable], mailbox_id, uids, mailboxes.CHANNEL, EXPUNGE_IDS_MAX, only_deleted)
    if row is None:
        raise MailboxGone("mailbox is gone")
    return Removed(list(row["uids"]), row["modseq"])


async def remove(conn: asyncpg.Connection, mailbox_id: int, uid_list: Sequence[int]) -> list[int]:
    """Remove these messages whatever their flags (POP3 DELE, deleting from Trash); returns their
    UIDs, ascending. One statement, waiting for the disk, as :func:`expunge` does it."""
    return (await _remove(conn, mailbox_id, uid_list, only_deleted=False, durable=True)).uids


# COPY's and MOVE's side of the target: UIDs, a modseq, the counts and the keywords of the messages ($4);
# with the quota variant, only if the owner's limits allow (store/quota.py).
_COPY_TARGET = """
UPDATE mailboxes SET uidnext = uidnext + $2, highestmodseq = highestmodseq + 1,
                     message_count = message_count + $2, message_bytes = message_bytes + $3,
                     keywords = relate_add_keywords(keywords, $4)
 WHERE id = $1{check} RETURNING uidnext - $2 AS first_uid, highestmodseq AS modseq, user_id, special_use"""
_COPY = {
    False: _COPY_TARGET.format(check=""),
    True: _COPY_TARGET.format(check=" AND " + quota.fits_sql("mailboxes", "$3", "$2", "$5", "$6")),
}


# A move's side of the source: the messages have left (their rows now belong to the target), so the source
# logs their UIDs as expunged under its next modseq, drops them from its counts, and announces the expunge
# naming the target (``to``), so the hub can tell apps of a move rather than a deletion. $1 source, $2 UIDs,
# $3 their number, $4 their bytes, $5 the moved ids (or NULL past EXPUNGE_IDS_MAX), $6 the target, $7 channel.
_MOVED_OUT_SQL = f"""
WITH box AS (UPDATE mailboxes SET highestmodseq = highestmodseq + 1, message_count = message_count - $3,
                                  message_bytes = message_bytes - $4
              WHERE id = $1 RETURNING id, user_id, highestmodseq AS modseq),
     logged AS (INSERT INTO mailbox_expunges (mailbox_id, uid, modseq)
                SELECT box.id, u, box.modseq FROM box, unnest($2::bigint[]) AS u)
SELECT box.modseq, pg_notify($7, json_build_object('event', 'expunge', 'mailbox', box.id, 'user', box.user_id,
                                                   'modseq', box.modseq, 'ids', $5::bigint[], 'to', $6::bigint,
                                                   'bulk', {BULK_MARK})::text)
  FROM box"""


async def copy(
    conn: asyncpg.Connection,
    source_id: int,
    uid_list: Sequence[int],
    target_id: int,
    *,
    move: bool = False,
    limits: QuotaConfig | None = None,
) -> list[tuple[int, int]]:
    """Copy (or move) messages to another mailbox, sharing their blobs; returns (source uid, new uid) pairs.

    A copy is a new message (a new id). A move keeps the message's id (JMAP's model: an email has one id
    for its life in the account) and gives it a new UID in the target, as IMAP MOVE must (RFC 6851): the
    row itself changes mailbox, and the source logs the old UID as expunged. Both mailbox rows are locked
    first, in id order, so two moves in opposite directions cannot deadlock.

    With ``limits`` (the configured quota defaults), a copy that would take the target's owner past a
    quota limit stores nothing and raises OverQuota. A move is never checked: it stays within one user
    and changes no usage.
    """
    async with conn.transaction():
        if move:
            await conn.execute(
                "SELECT id FROM mailboxes WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE", [source_id, target_id]
            )
        rows = await conn.fetch(
            """SELECT id, uid, size, flags, (SELECT special_use FROM mailboxes WHERE id = $1) AS source_use
                 FROM messages WHERE mailbox_id = $1 AND uid = ANY($2::bigint[]) ORDER BY uid""",
            source_id,
            list(uid_list),
        )
        if not rows:
            return []
        checked = limits is not None and not move
        box = await conn.fetchrow(
            _COPY[checked],
            target_id,
            len(rows),
            sum(r["size"] for r in rows),
            list({f: None for r in rows for f in r["flags"]}),
            *((limits.storage, limits.messages) if limits is not None and checked else ()),
        )
        if box is None:
            if checked and await conn.fetchval("SELECT EXISTS (SELECT 1 FROM mailboxes WHERE id = $1)", target_id):
                raise OverQuota("the copy would exceed the quota")
            raise MailboxGone("target mailbox is gone")
        pairs = [(r["uid"], box["first_uid"] + i) for i, r in enumerate(rows)]
        if JUNK in (rows[0]["source_use"], box["special_use"]):  # into or out of Junk: a lesson for rspamd
            await spam.note_moves(conn, source_id, target_id, [p[0] for p in pairs])
        if move:
            await _move_rows(conn, source_id, target_id, rows, pairs, box["modseq"])
            await mailboxes.notify(conn, "new", target_id, box["user_id"], box["modseq"], **{"from": source_id})
            return pairs
        await conn.execute(
            """WITH copied AS (
                INSERT INTO messages (mailbox_id, uid, modseq, flags, internal_date, size, blob_hash, subject,
                    from_addr, to_addr, cc_addr, bcc_addr, date_header, message_id, in_reply_to, "references",
                    envelope, bodystructure, header_end, attachments, attachment_count, text_indexed,
                    wire_size, envelope_wire, envelope_wire_utf8,
                    sort_subject, sort_from, sort_to, sort_cc, sort_display_from, sort_display_to, thread_ids, preview,
                    thread_id)
               SELECT $1, n.new_uid, $2, m.flags, m.internal_date, m.size, m.blob_hash, m.subject,
                    m.from_addr, m.to_addr, m.cc_addr, m.bcc_addr, m.date_header, m.message_id, m.in_reply_to,
                    m."references", m.envelope, m.bodystructure, m.header_end, m.attachments,
                    m.attachment_count, m.text_indexed, m.wire_size,
                    m.envelope_wire, m.envelope_wire_utf8,
                    m.sort_subject, m.sort_from, m.sort_to, m.sort_cc, m.sort_display_from, m.sort_display_to,
                    m.thread_ids, m.preview, m.thread_id
                 FROM messages m JOIN unnest($4::bigint[], $5::bigint[]) AS n(old_uid, new_uid) ON n.old_uid = m.uid
                WHERE m.mailbox_id = $3
            RETURNING id, uid),
            pairs AS (
               SELECT copied.id AS new_id, m.id AS old_id
                 FROM copied JOIN unnest($4::bigint[], $5::bigint[]) AS n(old_uid, new_uid) ON n.new_uid = copied.uid
                 JOIN messages m ON m.mailbox_id = $3 AND m.uid = n.old_uid),
            words AS (
               INSERT INTO message_words (message_id, words)
               SELECT pairs.new_id, w.words FROM pairs JOIN message_words w ON w.message_id = pairs.old_id)
            INSERT INTO message_texts (message_id, head, body)
            SELECT pairs.new_id, t.head, t.body FROM pairs JOIN message_texts t ON t.message_id = pairs.old_id""",
            target_id,
            box["modseq"],
            source_id,
            [p[0] for p in pairs],
            [p[1] for p in pairs],
        )
        await mailboxes.notify(conn, "new", target_id, box["user_id"], box["modseq"])
    return pairs


async def _move_rows(
    conn: asyncpg.Connection,
    source_id: int,
    target_id: int,
    rows: Sequence[asyncpg.Record],
    pairs: Sequence[tuple[int, int]],
    modseq: int,
) -> None:
    """The move itself, in the caller's transaction with both mailboxes locked: each row takes the target,
    its new UID and the target's modseq, and its save date (RFC 8514 SAVEDATE) becomes now; the source
    logs the expunges (``_MOVED_OUT_SQL``). A draft's Drafts copy moved away (a mail client deleting it
    to Trash) stops being the draft's copy, as when a copy is expunged (store/drafts.py): the next save
    writes a new one, and sending leaves the moved one where the user put it."""
    await conn.execute(
        """UPDATE messages m SET mailbox_id = $1, uid = n.new_uid, modseq = $2, created_at = now()
             FROM unnest($4::bigint[], $5::bigint[]) AS n(old_uid, new_uid)
            WHERE m.mailbox_id = $3 AND m.uid = n.old_uid""",
        target_id,
        modseq,
        source_id,
        [p[0] for p in pairs],
        [p[1] for p in pairs],
    )
    ids = [r["id"] for r in rows]
    await conn.execute(
        "UPDATE outbound_emails SET draft_message_id = NULL WHERE draft_message_id = ANY($1::bigint[])", ids
    )
    await conn.execute(
        _MOVED_OUT_SQL,
        source_id,
        [p[0] for p in pairs],
        len(rows),
        sum(r["size"] for r in rows),
        ids if len(ids) <= EXPUNGE_IDS_MAX else None,
        target_id,
        mailboxes.CHANNEL,
    )


async def structures(conn: Queryable, mailbox_id: int, uid_list: Sequence[int]) -> list[tuple[int, int, Any]]:
    """(message id, uid, body structure) of these messages, by UID (what a preview or a URL part is cut by)."""
    rows = await conn.fetch(
        """SELECT id, uid, bodystructure FROM messages
            WHERE mailbox_id = $1 AND uid = ANY($2::bigint[]) ORDER BY uid""",
        mailbox_id,
        list(uid_list),
    )
    return [(r["id"], r["uid"], r["bodystructure"]) for r in rows]


async def message_part_source(conn: Queryable, mailbox_id: int, uid: int) -> dict[str, Any] | None:
    """What a section of message ``uid`` is cut by (its body structure, header end and size), or None."""
    row = await conn.fetchrow(
        "SELECT uid, bodystructure, header_end, size FROM messages WHERE mailbox_id = $1 AND uid = $2",
        mailbox_id,
        uid,
    )
    return None if row is None else dict(row)


async def slices(conn: Queryable, mailbox_id: int, wanted: Sequence[tuple[int, int, int]]) -> dict[int, bytes]:
    """``raw[start:start + length]`` of each message given as (uid, start, length), by UID; only those
    octets leave the database (a preview's text part, a CATENATE URL's section)."""
    rows = await conn.fetch(
        """SELECT w.uid, substring(b.data FROM w.start::int + 1 FOR w.length::int) AS data
             FROM unnest($2::bigint[], $3::bigint[], $4::bigint[]) AS w(uid, start, length)
             JOIN messages m ON m.mailbox_id = $1 AND m.uid = w.uid
             JOIN blobs b ON b.hash = m.blob_hash""",
        mailbox_id,
        [w[0] for w in wanted],
        [w[1] for w in wanted],
        [w[2] for w in wanted],
    )
    return {r["uid"]: bytes(r["data"]) for r in rows}


async def save_previews(conn: Queryable, previews: Sequence[tuple[int, str]]) -> None:
    """Keep each message's preview, given as (message id, text). It changes no flag, so no modseq:
    a preview is derived from the message, and the same for every copy of it (RFC 8970 §3.2)."""
    await conn.execute(
        """UPDATE messages m SET preview = p.text
             FROM unnest($1::bigint[], $2::text[]) AS p(id, text)
            WHERE m.id = p.id AND m.preview IS NULL""",
        [p[0] for p in previews],
        [p[1] for p in previews],
    )
