"""SQL for working and administering the outbound queue.

A recipient is the unit of work. Its states: ``pending`` (never tried),
``sending`` (claimed under a lease), ``deferred`` (waiting for its next
attempt), ``sent`` and ``failed`` (final). A claim is
``SELECT … FOR UPDATE SKIP LOCKED`` in a short transaction that moves the
rows to ``sending`` with ``lease_until``; any number of delivery daemons can
claim side by side without sharing a row, and rows left in ``sending`` by a
daemon that died are claimable again once their lease has passed.

A message's status follows its recipients: ``queued`` while any is pending,
deferred or sending; then ``sent`` (all sent), ``failed`` (all failed) or
``partial_failure``. ``held`` messages are never claimed until released.

Every change of a message's status, and every recorded recipient outcome,
sends ``NOTIFY relate_delivery`` with ``{"user", "id", "status"}`` from the
transaction that makes it (see :mod:`relate.store.outbound`); PostgreSQL
folds identical notifications of one transaction into one.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class Outcome:
    """What one attempt made of one recipient."""

    recipient_id: int
    status: str  # sent | deferred | failed
    enhanced: str  # e.g. 2.0.0, 4.4.1, 5.1.1
    reply: str  # the remote reply or our own diagnostic, one line
    remote_mta: str | None = None
    next_attempt_at: datetime | None = None


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
        )
        for r in rows
    ]


async def claim(conn: Queryable, now: datetime, lease: timedelta, limit: int) -> list[Claimed]:
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
              SET status = 'sending', lease_until = $1::timestamptz + $2::interval,
                  attempts = r.attempts + 1, updated_at = $1
             FROM due, outbound_emails e
            WHERE r.id = due.id AND e.id = r.outbound_email_id
        RETURNING r.id, r.outbound_email_id, r.address, r.domain, r.attempts,
                  e.user_id, e.mail_from, e.blob_hash, e.queued_at""",
        now,
        lease,
        limit,
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


async def blobs(conn: Queryable, hashes: Sequence[bytes]) -> dict[bytes, bytes]:
    rows = await conn.fetch("SELECT hash, data FROM blobs WHERE hash = ANY($1::bytea[])", list(set(hashes)))
    return {bytes(r["hash"]): bytes(r["data"]) for r in rows}


async def record(conn: Queryable, outcomes: Sequence[Outcome], now: datetime) -> None:
    """Store each recipient's outcome and bring the messages' statuses up to date."""
    if not outcomes:
        return
    await conn.executemany(
        """UPDATE outbound_recipients
              SET status = $2, status_code = $3, remote_reply = $4, remote_mta = $5,
                  last_error = CASE WHEN $2 = 'sent' THEN NULL ELSE $4 END,
                  next_attempt_at = $6, lease_until = NULL, updated_at = $7
            WHERE id = $1""",
        [(o.recipient_id, o.status, o.enhanced, o.reply, o.remote_mta, o.next_attempt_at, now) for o in outcomes],
    )
    email_ids = await conn.fetch(
        "SELECT DISTINCT outbound_email_id FROM outbound_recipients WHERE id = ANY($1::bigint[])",
        [o.recipient_id for o in outcomes],
    )
    # Recipients changed: every message touched is announced, its status changed or not.
    await refresh(conn, [r["outbound_email_id"] for r in email_ids], now, announce_all=True)


async def refresh(conn: Queryable, email_ids: Sequence[int], now: datetime, *, announce_all: bool = False) -> None:
    """Derive each message's status from its recipients (held messages stay held); announce the changes."""
    await conn.execute(
        f"""WITH prior AS (SELECT id, status FROM outbound_emails WHERE id = ANY($1::bigint[])),
           counts AS (
               SELECT outbound_email_id AS id,
                      count(*) FILTER (WHERE status IN ('pending', 'deferred')) AS waiting,
                      count(*) FILTER (WHERE status = 'sending') AS busy,
                      count(*) FILTER (WHERE status = 'sent') AS sent,
                      count(*) FILTER (WHERE status = 'failed') AS failed,
                      min(next_attempt_at) FILTER (WHERE status IN ('pending', 'deferred')) AS next_at,
                      max(last_error) AS last_error
                 FROM outbound_recipients WHERE outbound_email_id = ANY($1::bigint[])
                GROUP BY outbound_email_id),
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
                  retry_count = (SELECT max(attempts) FROM outbound_recipients r WHERE r.outbound_email_id = e.id),
                  last_error = c.last_error,
                  sent_at = CASE WHEN c.waiting = 0 AND c.busy = 0 THEN coalesce(e.sent_at, $2) END,
                  updated_at = $2
             FROM counts c WHERE e.id = c.id
           RETURNING e.id, e.user_id, e.status),
           changed AS (SELECT a.id, a.user_id, a.status FROM updated a JOIN prior b ON b.id = a.id
                        WHERE $3 OR a.status IS DISTINCT FROM b.status)
        {_NOTIFY_CHANGED}""",
        list(email_ids),
        now,
        announce_all,
    )


async def expired(conn: Queryable, now: datetime, max_age: timedelta, limit: int) -> list[Claimed]:
    """Claim recipients still waiting on messages older than ``max_age`` (they fail now)."""
    rows = await conn.fetch(
        """WITH old AS (
               SELECT r.id FROM outbound_recipients r JOIN outbound_emails e ON e.id = r.outbound_email_id
                WHERE e.status IN ('queued', 'sending') AND e.queued_at < $1::timestamptz - $2::interval
                  AND r.status IN ('pending', 'deferred')
                LIMIT $3 FOR UPDATE OF r SKIP LOCKED)
           UPDATE outbound_recipients r SET status = 'sending', lease_until = $1::timestamptz + interval '5 minutes'
             FROM old, outbound_emails e
            WHERE r.id = old.id AND e.id = r.outbound_email_id
        RETURNING r.id, r.outbound_email_id, r.address, r.domain, r.attempts, r.last_error,
                  e.user_id, e.mail_from, e.blob_hash, e.queued_at""",
        now,
        max_age,
        limit,
    )
    return _claimed(rows)


async def due_delay_warnings(conn: Queryable, now: datetime, after: timedelta) -> list[dict[str, Any]]:
    """Messages waiting longer than ``after`` whose sender has not been warned; marks them warned."""
    rows = await conn.fetch(
        """UPDATE outbound_emails e SET delay_warned_at = $1
            WHERE e.id IN (
                SELECT id FROM outbound_emails
                 WHERE status IN ('queued', 'sending') AND delay_warned_at IS NULL
                   AND queued_at < $1::timestamptz - $2::interval AND mail_from <> ''
                 LIMIT 100 FOR UPDATE SKIP LOCKED)
        RETURNING e.id, e.user_id, e.mail_from, e.blob_hash, e.queued_at""",
        now,
        after,
    )
    return [dict(r) for r in rows]


async def waiting_recipients(conn: Queryable, email_id: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT address, status_code, last_error, remote_mta FROM outbound_recipients
            WHERE outbound_email_id = $1 AND status IN ('pending', 'deferred', 'sending') ORDER BY id""",
        email_id,
    )
    return [dict(r) for r in rows]


# -- administration (relatectl queue) ---------------------------------------

_LIST = """SELECT e.id, e.status, e.mail_from, e.from_address, e.subject, e.message_id, e.queued_at,
                  e.next_retry_at, e.retry_count, e.last_error, u.address AS "user",
                  (SELECT b.size FROM blobs b WHERE b.hash = e.blob_hash) AS size,
                  array_agg(r.address ORDER BY r.id) AS recipients,
                  array_agg(r.status ORDER BY r.id) AS recipient_statuses
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
    """Queue entries (not drafts) matching every given filter, oldest first."""
    rows = await conn.fetch(
        f"""{_LIST}
            WHERE e.status <> 'draft'
              AND ($1::text[] IS NULL OR e.status = ANY($1))
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


async def retry(conn: Queryable, email_ids: Sequence[int], now: datetime) -> int:
    """Make the waiting recipients of these messages due now; returns how many messages moved."""
    rows = await conn.fetch(
        """UPDATE outbound_recipients SET next_attempt_at = $2, updated_at = $2
            WHERE outbound_email_id = ANY($1::bigint[]) AND status IN ('pending', 'deferred')
        RETURNING outbound_email_id""",
        list(email_ids),
        now,
    )
    moved = sorted({r["outbound_email_id"] for r in rows})
    await refresh(conn, moved, now)
    if moved:
        await conn.execute("SELECT pg_notify('relate_queue', 'retry')")
    return len(moved)


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


async def claim_for_failure(conn: Queryable, email_ids: Sequence[int], now: datetime) -> list[Claimed]:
    """Claim every waiting recipient of these messages so the caller can fail (and bounce) them."""
    rows = await conn.fetch(
        """UPDATE outbound_recipients r SET status = 'sending', lease_until = $2::timestamptz + interval '5 minutes'
             FROM outbound_emails e
            WHERE e.id = r.outbound_email_id AND r.outbound_email_id = ANY($1::bigint[])
              AND r.status IN ('pending', 'deferred') AND e.status IN ('queued', 'sending', 'held')
        RETURNING r.id, r.outbound_email_id, r.address, r.domain, r.attempts,
                  e.user_id, e.mail_from, e.blob_hash, e.queued_at""",
        list(email_ids),
        now,
    )
    await conn.execute(
        "UPDATE outbound_emails SET status = 'queued' WHERE id = ANY($1::bigint[]) AND status = 'held'",
        list(email_ids),
    )
    return _claimed(rows)


async def delete(conn: Queryable, email_ids: Sequence[int]) -> list[int]:
    rows = await conn.fetch(
        "DELETE FROM outbound_emails WHERE id = ANY($1::bigint[]) AND status <> 'draft' RETURNING id",
        list(email_ids),
    )
    return [r["id"] for r in rows]
