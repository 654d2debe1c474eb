"""Sieve ``reject``/``ereject`` (RFC 5429) for mail accepted already: a DSN to the envelope sender.

Policy: delivery (relate/sieve/filing.py) records the action with the
reason and the original's header (at most ``HEADER_CHARS``), files nothing,
and wakes the delivery daemon. The daemon (relate.queue.worker) takes
pending actions a batch at a time (``FOR UPDATE SKIP LOCKED``) and queues,
for each, a delivery status notification (RFC 3464, built by the queue's own
bounce code, relate.queue.bounce: ``Action: failed``, ``Status: 5.7.1``, the
script's reason as the diagnostic, the original header) from
``MAILER-DAEMON@`` the host name to the envelope sender, with the null
envelope sender, through the outbound queue (RFC 5429 §2.1 allows a DSN or an
MDN). Never to an empty sender (a bounce of a bounce). The action is marked
done either way, with one log line ``sieve-reject user=... to=... sent|skipped
reason=...``. Refusing at SMTP time (RFC 5429 §2.1.1, a 550 reply before the
message is accepted) is not done: filing runs once the message is accepted.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import asyncpg

from relate.mail.compose import make_message_id
from relate.queue import bounce
from relate.store import messages, outbound

log = logging.getLogger("relate.sieve")

BATCH = 100
HEADER_CHARS = 16384  # of the original's header kept for the DSN (text/rfc822-headers)


def header_of(raw: bytes) -> str:
    """The original's header as kept in the action (bounded; whole lines)."""
    cut = raw.find(b"\r\n\r\n")
    head = raw[: cut + 2] if cut >= 0 else raw
    if len(head) > HEADER_CHARS:
        head = head[: head.rfind(b"\r\n", 0, HEADER_CHARS) + 2]
    return head.decode("utf-8", "replace")


async def send_pending(pool: asyncpg.Pool, hostname: str) -> int:
    """Act on a batch of pending reject/ereject actions (module docstring); how many were taken."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            """SELECT id, user_id, kind, detail, mail_from, rcpt_to, created_at FROM sieve_actions
                WHERE done_at IS NULL AND kind IN ('reject', 'ereject')
                ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED""",
            BATCH,
        )
        for row in rows:
            detail = row["detail"]
            detail = json.loads(detail) if isinstance(detail, str) else detail
            sender = row["mail_from"]
            if not sender:
                log.info("sieve-reject user=%d to=<> skipped reason=empty sender", row["user_id"])
            else:
                try:
                    async with conn.transaction():  # a savepoint: a DSN that cannot be made is not retried forever
                        await _queue(conn, row["user_id"], sender, row["rcpt_to"], detail, row["created_at"], hostname)
                except (ValueError, TypeError, UnicodeError) as exc:
                    log.info(
                        "sieve-reject user=%d to=%s skipped reason=the DSN cannot be made: %s",
                        row["user_id"],
                        sender,
                        type(exc).__name__,
                    )
            await conn.execute("UPDATE sieve_actions SET done_at = now() WHERE id = $1", row["id"])
    return len(rows)


async def _queue(
    conn: asyncpg.Connection,
    user_id: int,
    sender: str,
    rcpt: str,
    detail: dict[str, object],
    arrival: datetime,
    hostname: str,
) -> None:
    reason = " ".join(str(detail.get("reason") or "").split())[:900] or "rejected by the recipient's filter"
    dsn = bounce.build(
        reporting_mta=hostname,
        sender=sender,
        original=str(detail.get("header") or "").encode("utf-8"),
        arrival=arrival,
        recipients=[bounce.RecipientStatus(rcpt, "5.7.1", "rejected by the recipient's Sieve filter: " + reason)],
        action="failed",
        now=datetime.now(UTC),
    )
    blob = await messages.put_blob(conn, dsn)
    await outbound.queue_message(
        conn,
        user_id=user_id,
        from_address=f"MAILER-DAEMON@{hostname}",
        mail_from="",
        subject="Undelivered mail returned to sender",
        message_id=make_message_id(hostname),
        blob_hash=blob,
        recipients=[sender],
    )
    log.info("sieve-reject user=%d to=%s sent reason=%s", user_id, sender, reason[:200])
