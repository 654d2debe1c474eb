"""SQL for working and administering the outbound queue.

A recipient is the unit of work. Its states: ``pending`` (never tried),
``sending`` (claimed under a lease), ``deferred`` (waiting for its next
attempt), ``sent`` and ``failed`` (final). A claim is
``SELECT … FOR UPDATE SKIP LOCKED`` in a short transaction that moves the
rows to ``sending`` with ``lease_until`` and the claim's ``lease_owner``
token; any number of delivery daemons can claim side by side without sharing
a row. The owner renews its lease while it works (:func:`renew`) and records
each outcome with its token (:func:`record`), so rows that another daemon
took over after the lease passed are neither renewed nor recorded by the old
owner. Rows left in ``sending`` by a daemon that died are claimable again
once their lease has passed; rows a daemon claimed but did not get to are
handed back at once (:func:`hand_back`).

A message's status follows its recipients: ``queued`` while any is pending,
deferred or sending; then ``sent`` (all sent), ``failed`` (all failed) or
``partial_failure``. ``held`` messages are never claimed until released.

A recipient recorded ``failed`` on a message with a sender gets
``dsn_due`` in the same transaction; the DSN is made by
:func:`take_bounce` / :func:`bounced` in one later transaction with the
INBOX delivery of the DSN itself, so each failure bounces exactly once,
crash or not. Delay warnings work the same way on ``delay_warned_at``.

Every change of a message's status, and every recorded recipient outcome,
sends ``NOTIFY relate_delivery`` with ``{"user", "id", "status"}`` from the
transaction that makes it (see :mod:`relate.store.outbound`); PostgreSQL
folds identical notifications of one transaction into one.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from relate.store.db import Queryable

# Appended to a data-modifying CTE named ``changed`` (RETURNING id, user_id, status): one NOTIFY per row.
_NOTIFY_CHANGED = """SELECT pg_notify('relate_delivery',
                                     json_build_object('user', user_id, 'id', id, 'status', status)::text)
                        FROM changed"""


@dataclass(frozen=True)
class Claimed:
    recipient_id: int
    email_id: int
    address: str
    domain: str
    attempts: int
    user_id: int
    mail_from: str
    blob_hash: bytes
    queued_at: datetime
    last_error: str | None = None
    size: int = 0  # of the stored message, for reading ahead within a byte budget


@dataclass(frozen=True)
class Outcome:
    """What one attempt made of one recipient."""

    recipient_id: int
    status: str  # sent | deferred | failed
    enhanced: str  # e.g. 2.0.0, 4.4.1, 5.1.1
    reply: str  # the remote reply or our own diagnostic, one line
    remote_mta: str | None = None
    next_attempt_at: datetime | None = None


@dataclass(frozen=True)
class Failed:
    """A recipient failed outside an SMTP attempt (expired, or failed by the administrator)."""

    recipient_id: int
    email_id: int
    address: str
    enhanced: str
    reply: str


@dataclass(frozen=True)
class BounceRecipient:
    address: str
    enhanced: str
    diagnostic: str
    remote_mta: str | None


@dataclass(frozen=True)
class Notice:
    """A DSN to make for one message: its sender, the stored message, and the recipients it reports."""

    email_id: int
    user_id: int
    mail_from: str
    blob_hash: bytes
    queued_at: datetime
    recipients: list[BounceRecipient]
    recipient_ids: list[int]


def _claimed(rows: Sequence[Any]) -> list[Claimed]:
    return [
        Claimed(
            recipient_id=r["id"],
            email_id=r["outbound_email_id"],
            address=r["address"],
            domain=r["domain"],
            attempts=r["attempts"],
            user_id=r["user_id"],
            mail_from=r["mail_from"],
            blob_hash=bytes(r["blob_hash"]),
            queued_at=r["queued_at"],
            last_error=r.get("last_error"),
            size=r.get("size") or 0,
        )
        for r in rows
    ]


async def claim(
    conn: Queryable, now: datetime, lease: timedelta, limit: int, owner: uuid.UUID | None = None
) -> list[Claimed]:
    """Claim up to ``limit`` due recipients for ``lease`` under the token ``owner`` (a new one when None)."""
    rows = await conn.fetch(
        """WITH due AS (
               SELECT r.id FROM outbound_recipients r
                 JOIN outbound_emails e ON e.id = r.outbound_email_id
                WHERE e.status IN ('queued', 'sending')
                  AND ((r.status IN ('pending', 'deferred') AND r.next_attempt_at <= $1::timestamptz)
                       OR (r.status = 'sending' AND r.lease_until < $1))
                ORDER BY r.next_attempt_at, r.id
                LIMIT $3
                FOR UPDATE OF r SKIP LOCKED)
           UPDATE outbound_recipients r
              SET status = 'sending', lease_until = $1::timestamptz + $2::interval, lease_owner = $4,
                  attempts = r.attempts + 1, updated_at = $1
             FROM due, outbound_emails e
            WHERE r.id = due.id AND e.id = r.outbound_email_id
        RETURNING r.id, r.outbound_email_id, r.address, r.domain, r.attempts,
                  e.user_id, e.mail_from, e.blob_hash, e.queued_at,
                  (SELECT b.size FROM blobs b WHERE b.hash = e.blob_hash) AS size""",
        now,
        lease,
        limit,
        owner or uuid.uuid4(),
    )
    claimed = _claimed(rows)
    if claimed:
        await conn.execute(
            f"""WITH changed AS (
                    UPDATE outbound_emails SET status = 'sending', updated_at = $2
                     WHERE id = ANY($1::bigint[]) AND status = 'queued' RETURNING id, user_id, status)
                {_NOTIFY_CHANGED}""",
            list({c.email_id for c in claimed}),
            now,
        )
    return claimed


async def renew(conn: Queryable, owner: uuid.UUID, until: datetime) -> set[int]:
    """Extend the lease of every row ``owner`` still holds to ``until``; returns their ids."""
    rows = await conn.fetch(
        """UPDATE outbound_recipients SET lease_until = $2
            WHERE lease_owner = $1 AND status = 'sending' RETURNING id""",
        owner,
        until,
    )
    return {r["id"] for r in rows}


async def hand_back(conn: Queryable, owner: uuid.UUID, now: datetime) -> int:
    """Hand back, due now, the rows ``owner`` claimed but never tried; returns how many."""
    rows = await conn.fetch(
        """UPDATE outbound_recipients
              SET status = CASE WHEN attempts <= 1 THEN 'pending' ELSE 'deferred' END,
                  attempts = greatest(attempts - 1, 0), next_attempt_at = least(next_attempt_at, $2),
                  lease_until = NULL, lease_owner = NULL, updated_at = $2
            WHERE lease_owner = $1 AND status = 'sending'
        RETURNING outbound_email_id""",
        owner,
        now,
    )
    await refresh(conn, list({r["outbound_email_id"] for r in rows}), now)
    return len(rows)


async def blobs(conn: Queryable, hashes: Sequence[bytes]) -> dict[bytes, bytes]:
    rows = await conn.fetch("SELECT hash, data FROM blobs WHERE hash = ANY($1::bytea[])", list(set(hashes)))
    return {bytes(r["hash"]): bytes(r["data"]) for r in rows}


async def blob_head(conn: Queryable, blob_hash: bytes, limit: int) -> bytes:
    """The first ``limit`` bytes of a stored message (enough for its header), or b"" when it is gone."""
    data = await conn.fetchval("SELECT substring(data FROM 1 FOR $2) FROM blobs WHERE hash = $1", blob_hash, limit)
    return bytes(data) if data is not None else b""


def _statuses(rcpts: str, now: str, announce: str) -> str:
    """CTEs that derive each touched message's status from ``rcpts`` and announce it (``notified``).

    ``rcpts`` names a CTE of every recipient of the touched messages, as they are once the statement
    is done: (outbound_email_id, status, next_attempt_at, last_error, attempts). Held messages stay
    held. A message is announced when its status changes, or always when ``announce`` is true.
    """
    return f"""prior AS (SELECT id, status FROM outbound_emails WHERE id IN (SELECT outbound_email_id FROM {rcpts})),
           counts AS (
               SELECT outbound_email_id AS id,
                      count(*) FILTER (WHERE status IN ('pending', 'deferred')) AS waiting,
                      count(*) FILTER (WHERE status = 'sending') AS busy,
                      count(*) FILTER (WHERE status = 'sent') AS sent,
                      count(*) FILTER (WHERE status = 'failed') AS failed,
                      min(next_attempt_at) FILTER (WHERE status IN ('pending', 'deferred')) AS next_at,
                      max(last_error) AS last_error,
                      max(attempts) AS attempts
                 FROM {rcpts} GROUP BY outbound_email_id),
           updated AS (
           UPDATE outbound_emails e
              SET status = CASE
                      WHEN e.status = 'held' THEN 'held'
                      WHEN c.busy > 0 THEN 'sending'
                      WHEN c.waiting > 0 THEN 'queued'
                      WHEN c.failed = 0 THEN 'sent'
                      WHEN c.sent = 0 THEN 'failed'
                      ELSE 'partial_failure' END,
                  next_retry_at = c.next_at,
                  retry_count = c.attempts,
                  last_error = c.last_error,
                  sent_at = CASE WHEN c.waiting = 0 AND c.busy = 0 THEN coalesce(e.sent_at, {now}) END,
                  updated_at = {now}
             FROM counts c WHERE e.id = c.id
           RETURNING e.id, e.user_id, e.status),
           changed AS (SELECT a.id, a.user_id, a.status FROM updated a JOIN prior b ON b.id = a.id
                        WHERE {announce} OR a.status IS DISTINCT FROM b.status),
           notified AS ({_NOTIFY_CHANGED})"""


async def record(
    conn: Queryable,
    outcomes: Sequence[Outcome],
    now: datetime,
    owner: uuid.UUID | None = None,
    *,
    flush: bool = True,
) -> list[int]:
    """Store each recipient's outcome and bring the messages' statuses up to date; returns the ids recorded.

    One statement (one round trip, atomic without a transaction of its own). With ``owner``, only
    rows still claimed under that token are recorded (a row another daemon took over after the
    lease passed is its business now); without, every row given is. Every message touched is
    announced, its status changed or not.

    ``flush=False`` commits without waiting for the WAL to reach disk (``synchronous_commit`` off
    for this statement's own transaction only, when it runs outside one): the outcome is committed
    and visible at once, and survives the caller dying; only a crash of PostgreSQL itself within
    about 3 x wal_writer_delay (0.6 s) can lose it, and a lost outcome means the message is sent
    again, never that it is lost.
    """
    if not outcomes:
        return []
    # The scan of outbound_recipients in ``rcpts`` sees the rows as they were before ``upd`` (one
    # statement, one snapshot), so the updated rows are taken from ``upd`` instead.
    # Planning this statement costs 3 times what running it does, so it must get a generic plan that
    # PostgreSQL reuses: two texts rather than "$8 IS NULL OR ..." (which kept it planning every
    # call), and an ownership test written with IS NOT DISTINCT FROM, which no index can serve, so
    # the plan goes by primary key from the few ids given rather than through the partial indexes
    # on 'sending' rows (the statistics often think there are none; a claim puts hundreds there).
    ours = (
        "$8::uuid IS NULL"  # always true here; it also gives $8 its type
        if owner is None
        else "r.status IS NOT DISTINCT FROM 'sending' AND r.lease_owner IS NOT DISTINCT FROM $8::uuid"
    )
    row = await conn.fetchrow(
        f"""WITH o AS (
               SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
                   AS o(id, status, code, reply, mta, next_at)),
           upd AS (
           UPDATE outbound_recipients r
              SET status = o.status, status_code = o.code, remote_reply = o.reply, remote_mta = o.mta,
                  last_error = CASE WHEN o.status = 'sent' THEN NULL ELSE o.reply END,
                  next_attempt_at = o.next_at, lease_until = NULL, lease_owner = NULL, updated_at = $7,
                  dsn_due = (o.status = 'failed' AND e.mail_from <> '')
             FROM o, outbound_emails e
            WHERE r.id = o.id AND e.id = r.outbound_email_id AND {ours}
           RETURNING r.id, r.outbound_email_id, r.status, r.next_attempt_at, r.last_error, r.attempts),
           rcpts AS (
               SELECT x.outbound_email_id, x.status, x.next_attempt_at, x.last_error, x.attempts
                 FROM outbound_recipients x
                WHERE x.outbound_email_id IN (SELECT outbound_email_id FROM upd)
                  AND x.id NOT IN (SELECT id FROM upd)
               UNION ALL
               SELECT outbound_email_id, status, next_attempt_at, last_error, attempts FROM upd),
           {_statuses("rcpts", "$7", "true")}
        SELECT array(SELECT id FROM upd) AS ids, (SELECT count(*) FROM notified) AS notified,
               CASE WHEN $9::boolean THEN NULL ELSE set_config('synchronous_commit', 'off', true) END AS mode""",
        [o.recipient_id for o in outcomes],
        [o.status for o in outcomes],
        [o.enhanced for o in outcomes],
        [o.reply for o in outcomes],
        [o.remote_mta for o in outcomes],
        [o.next_attempt_at for o in outcomes],
        now,
        owner,
        flush,
    )
    assert row is not None
    return list(row["ids"])


async def refresh(conn: Queryable, email_ids: Sequence[int], now: datetime, *, announce_all: bool = False) -> None:
    """Derive each message's status from its recipients (held messages stay held); announce the changes."""
    if not email_ids:
        return
    await conn.execute(
        f"""WITH rcpts AS (
               SELECT outbound_email_id, status, next_attempt_at, last_error, attempts
                 FROM outbound_recipients WHERE outbound_email_id = ANY($1::bigint[])),
           {_statuses("rcpts", "$2", "$3")}
        SELECT count(*) FROM notified""",
        list(email_ids),
        now,
        announce_all,
    )


async def expire(conn: Queryable, now: datetime, max_age: timedelta, limit: int) -> list[Failed]:
    """Fail (4.4.7, DSN due) recipients still waiting on messages older than ``max_age``."""
    rows = await conn.fetch(
        """WITH old AS (
               SELECT r.id FROM outbound_recipients r JOIN outbound_emails e ON e.id = r.outbound_email_id
                WHERE e.status IN ('queued', 'sending') AND e.queued_at < $1::timestamptz - $2::interval
                  AND r.status IN ('pending', 'deferred')
                LIMIT $3 FOR UPDATE OF r SKIP LOCKED)
           UPDATE outbound_recipients r
              SET status = 'failed', status_code = '4.4.7', remote_mta = NULL, next_attempt_at = NULL,
                  remote_reply = 'message expired after the maximum time in the queue'
                                 || coalesce('; last attempt: ' || r.last_error, ''),
                  last_error = 'message expired after the maximum time in the queue'
                                 || coalesce('; last attempt: ' || r.last_error, ''),
                  lease_until = NULL, lease_owner = NULL, updated_at = $1, dsn_due = e.mail_from <> ''
             FROM old, outbound_emails e
            WHERE r.id = old.id AND e.id = r.outbound_email_id
        RETURNING r.id, r.outbound_email_id, r.address, r.status_code, r.remote_reply""",
        now,
        max_age,
        limit,
    )
    await refresh(conn, list({r["outbound_email_id"] for r in rows}), now, announce_all=True)
    return _failed(rows)


async def fail_waiting(
    conn: Queryable, email_ids: Sequence[int], now: datetime, enhanced: str, reason: str
) -> list[Failed]:
    """Fail (DSN due) every waiting recipient of these messages, held or not; a held message is released."""
    rows = await conn.fetch(
        """UPDATE outbound_recipients r
              SET status = 'failed', status_code = $3, remote_reply = $4, last_error = $4, remote_mta = NULL,
                  next_attempt_at = NULL, lease_until = NULL, lease_owner = NULL, updated_at = $2,
                  dsn_due = e.mail_from <> ''
             FROM outbound_emails e
            WHERE e.id = r.outbound_email_id AND r.outbound_email_id = ANY($1::bigint[])
              AND r.status IN ('pending', 'deferred') AND e.status IN ('queued', 'sending', 'held')
        RETURNING r.id, r.outbound_email_id, r.address, r.status_code, r.remote_reply""",
        list(email_ids),
        now,
        enhanced,
        reason,
    )
    failed = _failed(rows)
    touched = list({f.email_id for f in failed})
    await conn.execute(
        """UPDATE outbound_emails SET status = 'queued', held_from = NULL
            WHERE id = ANY($1::bigint[]) AND status = 'held'""",
        touched,
    )
    await refresh(conn, touched, now, announce_all=True)
    return failed


def _failed(rows: Sequence[Any]) -> list[Failed]:
    return [Failed(r["id"], r["outbound_email_id"], r["address"], r["status_code"], r["remote_reply"]) for r in rows]


async def bounce_candidates(conn: Queryable, limit: int, email_ids: Sequence[int] | None = None) -> list[int]:
    """Messages with failures not yet reported whose other recipients are not in flight (one DSN covers all)."""
    rows = await conn.fetch(
        """SELECT DISTINCT r.outbound_email_id AS id FROM outbound_recipients r
            WHERE r.dsn_due AND ($2::bigint[] IS NULL OR r.outbound_email_id = ANY($2))
              AND NOT EXISTS (SELECT 1 FROM outbound_recipients s
                               WHERE s.outbound_email_id = r.outbound_email_id AND s.status = 'sending')
            LIMIT $1""",
        limit,
        list(email_ids) if email_ids is not None else None,
    )
    return [r["id"] for r in rows]


async def take_bounce(conn: Queryable, email_id: int) -> Notice | None:
    """Lock the message's unreported failures (in the caller's transaction), or None when another has them."""
    rows = await conn.fetch(
        """SELECT r.id, r.address, r.status_code, r.remote_reply, r.remote_mta,
                  e.user_id, e.mail_from, e.blob_hash, e.queued_at
             FROM outbound_recipients r JOIN outbound_emails e ON e.id = r.outbound_email_id
            WHERE r.outbound_email_id = $1 AND r.dsn_due
            ORDER BY r.id
              FOR UPDATE OF r SKIP LOCKED""",
        email_id,
    )
    if not rows:
        return None
    statuses = [
        BounceRecipient(r["address"], r["status_code"] or "5.0.0", r["remote_reply"] or "", r["remote_mta"])
        for r in rows
    ]
    return _notice(email_id, rows[0], statuses, [r["id"] for r in rows])


def _notice(email_id: int, row: Any, recipients: list[BounceRecipient], recipient_ids: list[int]) -> Notice:
    """A Notice from a row with the message's user_id, mail_from, blob_hash and queued_at."""
    return Notice(
        email_id, row["user_id"], row["mail_from"], bytes(row["blob_hash"]), row["queued_at"], recipients, recipient_ids
    )


async def bounced(conn: Queryable, recipient_ids: Sequence[int]) -> None:
    await conn.execute(
        "UPDATE outbound_recipients SET dsn_due = false WHERE id = ANY($1::bigint[])", list(recipient_ids)
    )


async def delay_warning_candidates(conn: Queryable, now: datetime, after: timedelta, limit: int) -> list[int]:
    """Messages waiting longer than ``after`` whose sender has not been warned."""
    rows = await conn.fetch(
        """SELECT id FROM outbound_emails
            WHERE status IN ('queued', 'sending') AND delay_warned_at IS NULL
              AND queued_at < $1::timestamptz - $2::interval AND mail_from <> ''
            LIMIT $3""",
        now,
        after,
        limit,
    )
    return [r["id"] for r in rows]


async def take_delay_warning(conn: Queryable, email_id: int, now: datetime, after: timedelta) -> Notice | None:
    """Lock one message due a delay warning (in the caller's transaction), with its waiting recipients."""
    row = await conn.fetchrow(
        """SELECT id, user_id, mail_from, blob_hash, queued_at FROM outbound_emails
            WHERE id = $1 AND status IN ('queued', 'sending') AND delay_warned_at IS NULL
              AND queued_at < $2::timestamptz - $3::interval AND mail_from <> ''
              FOR NO KEY UPDATE SKIP LOCKED""",
        email_id,
        now,
        after,
    )
    if row is None:
        return None
    statuses = [
        BounceRecipient(
            w["address"], w["status_code"] or "4.0.0", w["last_error"] or "not yet delivered", w["remote_mta"]
        )
        for w in await waiting_recipients(conn, email_id)
    ]
    return _notice(email_id, row, statuses, [])


async def warned(conn: Queryable, email_id: int, now: datetime) -> None:
    await conn.execute("UPDATE outbound_emails SET delay_warned_at = $2 WHERE id = $1", email_id, now)


async def waiting_recipients(conn: Queryable, email_id: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT address, status_code, last_error, remote_mta FROM outbound_recipients
            WHERE outbound_email_id = $1 AND status IN ('pending', 'deferred', 'sending') ORDER BY id""",
        email_id,
    )
    return [dict(r) for r in rows]


async def next_due(conn: Queryable) -> datetime | None:
    """The earliest moment a recipient becomes claimable: its next attempt, or the end of its lease."""
    due: datetime | None = await conn.fetchval(
        """SELECT least(
               (SELECT r.next_attempt_at FROM outbound_recipients r JOIN outbound_emails e ON e.id = r.outbound_email_id
                 WHERE r.status IN ('pending', 'deferred') AND e.status IN ('queued', 'sending')
                 ORDER BY r.next_attempt_at LIMIT 1),
               (SELECT r.lease_until FROM outbound_recipients r JOIN outbound_emails e ON e.id = r.outbound_email_id
                 WHERE r.status = 'sending' AND e.status IN ('queued', 'sending')
                 ORDER BY r.lease_until LIMIT 1))"""
    )
    return due


# -- administration (relatectl queue) ---------------------------------------

_LIST = """SELECT e.id, e.status, e.mail_from, e.from_address, e.subject, e.message_id, e.queued_at,
                  e.next_retry_at, e.retry_count, e.last_error, u.address AS "user",
                  (SELECT b.size FROM blobs b WHERE b.hash = e.blob_hash) AS size,
                  array_agg(r.address ORDER BY r.id) AS recipients,
                  array_agg(r.status ORDER BY r.id) AS recipient_statuses,
                  count(*) OVER () AS matched
             FROM outbound_emails e
             JOIN users u ON u.id = e.user_id
             JOIN outbound_recipients r ON r.outbound_email_id = e.id"""


async def list_messages(
    conn: Queryable,
    *,
    statuses: Sequence[str] | None = None,
    sender: str | None = None,
    recipient: str | None = None,
    domain: str | None = None,
    queued_before: datetime | None = None,
    ids: Sequence[int] | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Queue entries (not drafts) matching every given filter, oldest first, at most ``limit``; each row's
    ``matched`` is how many matched in all. The status ``deferred`` (Postfix's word) matches waiting mail
    with a recipient that has been tried and will be again."""
    rows = await conn.fetch(
        f"""{_LIST}
            WHERE e.status <> 'draft'
              AND ($1::text[] IS NULL OR e.status = ANY($1)
                   OR ('deferred' = ANY($1) AND e.status IN ('queued', 'sending')
                       AND EXISTS (SELECT 1 FROM outbound_recipients x
                                    WHERE x.outbound_email_id = e.id AND x.status = 'deferred')))
              AND ($2::text IS NULL OR e.mail_from = $2 OR e.from_address = $2)
              AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM outbound_recipients x
                                               WHERE x.outbound_email_id = e.id AND x.address = $3))
              AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM outbound_recipients x
                                               WHERE x.outbound_email_id = e.id AND x.domain = $4))
              AND ($5::timestamptz IS NULL OR e.queued_at < $5)
              AND ($6::bigint[] IS NULL OR e.id = ANY($6))
            GROUP BY e.id, u.address
            ORDER BY e.queued_at, e.id
            LIMIT $7""",
        list(statuses) if statuses else None,
        sender,
        recipient,
        domain,
        queued_before,
        list(ids) if ids is not None else None,
        limit,
    )
    return [dict(r) for r in rows]


async def show(conn: Queryable, email_id: int) -> dict[str, Any] | None:
    email = await conn.fetchrow(
        """SELECT e.*, u.address AS "user", b.size
             FROM outbound_emails e JOIN users u ON u.id = e.user_id
             LEFT JOIN blobs b ON b.hash = e.blob_hash
            WHERE e.id = $1 AND e.status <> 'draft'""",
        email_id,
    )
    if email is None:
        return None
    recipients = await conn.fetch(
        """SELECT id, kind, address, status, attempts, next_attempt_at, status_code, remote_mta,
                  remote_reply, last_error, updated_at
             FROM outbound_recipients WHERE outbound_email_id = $1 ORDER BY id""",
        email_id,
    )
    result = {k: v for k, v in dict(email).items() if k not in ("blob_hash", "text_body", "html_body")}
    result["recipients"] = [dict(r) for r in recipients]
    return result


async def retry(conn: Queryable, email_ids: Sequence[int], now: datetime) -> list[int]:
    """Make the waiting recipients of these messages due now (not of held ones); returns the messages moved."""
    rows = await conn.fetch(
        """UPDATE outbound_recipients r SET next_attempt_at = $2, updated_at = $2
             FROM outbound_emails e
            WHERE e.id = r.outbound_email_id AND e.status IN ('queued', 'sending')
              AND r.outbound_email_id = ANY($1::bigint[]) AND r.status IN ('pending', 'deferred')
        RETURNING r.outbound_email_id""",
        list(email_ids),
        now,
    )
    moved = sorted({r["outbound_email_id"] for r in rows})
    await refresh(conn, moved, now)
    if moved:
        await conn.execute("SELECT pg_notify('relate_queue', 'retry')")
    return moved


async def statuses(conn: Queryable, email_ids: Sequence[int]) -> dict[int, str]:
    """The status of each of these messages that is in the queue (drafts are not)."""
    rows = await conn.fetch(
        "SELECT id, status FROM outbound_emails WHERE id = ANY($1::bigint[]) AND status <> 'draft'", list(email_ids)
    )
    return {r["id"]: r["status"] for r in rows}


async def hold(conn: Queryable, email_ids: Sequence[int], now: datetime) -> list[int]:
    rows = await conn.fetch(
        """WITH changed AS (
               UPDATE outbound_emails SET held_from = status, status = 'held', updated_at = $2
                WHERE id = ANY($1::bigint[]) AND status IN ('queued', 'sending') RETURNING id, user_id, status)
           SELECT id, pg_notify('relate_delivery', json_build_object('user', user_id, 'id', id, 'status', status)::text)
             FROM changed""",
        list(email_ids),
        now,
    )
    return [r["id"] for r in rows]


async def release(conn: Queryable, email_ids: Sequence[int], now: datetime) -> list[int]:
    rows = await conn.fetch(
        """UPDATE outbound_emails SET status = 'queued', held_from = NULL, updated_at = $2
            WHERE id = ANY($1::bigint[]) AND status = 'held' RETURNING id""",
        list(email_ids),
        now,
    )
    released = [r["id"] for r in rows]
    await refresh(conn, released, now, announce_all=True)
    if released:
        await conn.execute("SELECT pg_notify('relate_queue', 'release')")
    return released


async def delete(conn: Queryable, email_ids: Sequence[int]) -> list[int]:
    rows = await conn.fetch(
        "DELETE FROM outbound_emails WHERE id = ANY($1::bigint[]) AND status <> 'draft' RETURNING id",
        list(email_ids),
    )
    return [r["id"] for r in rows]


@dataclass(frozen=True)
class Backlog:
    """The queue's work in one state (pending, sending, deferred, held), for metrics."""

    state: str
    messages: int
    recipients: int
    oldest_seconds: float  # since the oldest of them was queued


async def backlog(conn: Queryable) -> list[Backlog]:
    """Recipients still to deliver, by state (a held message's count as ``held``), with their messages and age."""
    rows = await conn.fetch(
        """SELECT CASE WHEN e.status = 'held' THEN 'held' ELSE r.status END AS state,
                  count(DISTINCT e.id)::int AS messages, count(*)::int AS recipients,
                  extract(epoch FROM now() - min(coalesce(e.queued_at, e.created_at)))::float8 AS oldest
             FROM outbound_recipients r JOIN outbound_emails e ON e.id = r.outbound_email_id
            WHERE r.status IN ('pending', 'sending', 'deferred') AND e.status IN ('queued', 'sending', 'held')
            GROUP BY 1"""
    )
    return [Backlog(r["state"], r["messages"], r["recipients"], max(r["oldest"], 0.0)) for r in rows]
