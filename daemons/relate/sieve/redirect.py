"""Sieve ``redirect`` (RFC 5228 §4.2) sent: the filtered message on to the address, with SRS.

Policy:

- Delivery (relate/sieve/filing.py) records a ``redirect`` action in
  ``sieve_actions`` with the message as filtered (its blob), in the
  delivery's transaction, unless :func:`held` says no: then the redirect is
  dropped, the message is kept in INBOX as the implicit keep would (when
  nothing else files it) and one log line ``sieve-redirect user=... to=...
  kept reason=...`` says why. Held are a loop (the message already carries a
  ``Delivered-To:`` field naming the recipient or the user, which every
  redirect we send adds, or more than ``MAX_RECEIVED`` ``Received:`` fields)
  and a user past ``sieve.max_redirects_per_day`` redirects in the last 24
  hours.
- The delivery daemon (relate.queue.worker) takes pending actions a batch at
  a time (``FOR UPDATE SKIP LOCKED``) and queues, for each, the blob's bytes
  unchanged behind one ``Delivered-To: <recipient>`` field, to the address,
  through the outbound queue (DKIM-signed as any mail of its From domain
  is), with the envelope sender rewritten by SRS (relate/sieve/srs.py) at
  the recipient's domain; a null sender stays null. The action is marked
  done either way with one log line ``sieve-redirect user=... to=...
  sent|skipped ...``.
- A bounce to the SRS address comes back to the MX, which accepts the SRS
  recipient only when its hash and age check out and sends it on to the
  original sender (relate.smtp, relate/sieve/srs.py).
"""

from __future__ import annotations

import asyncio
import json
import logging

import asyncpg

from relate.sieve import srs
from relate.sieve.interpreter import Action, Keep, Redirect, Result
from relate.sieve.message import Message
from relate.store import messages, outbound
from relate.store import queue as queue_store

log = logging.getLogger("relate.sieve")

BATCH = 100
MAX_RECEIVED = 50  # Received fields past which a message is taken for a loop (RFC 5321 §6.3 suggests 100)
_HEAD = 64 * 1024  # bytes of the message read for the loop check


def looping(raw: bytes, own: set[str]) -> str | None:
    """Why the message is a loop for a user whose addresses are ``own`` (lower-case), or None."""
    head = raw[:_HEAD]
    cut = head.find(b"\r\n\r\n")
    msg = Message.parse(head[: cut + 4] if cut >= 0 else head)
    for f in msg.named("delivered-to"):
        if f.value.strip().strip("<>").lower() in own:
            return f"the message was delivered to {f.value.strip()[:200]} before (Delivered-To)"
    received = len(msg.named("received"))
    if received > MAX_RECEIVED:
        return f"{received} Received fields (more than {MAX_RECEIVED})"
    return None


async def held(
    conn: asyncpg.Connection, result: Result, user_id: int, own: set[str], raw: bytes, per_day: int
) -> Result:
    """``result`` without the redirects that must not go (module docstring), with the implicit keep when
    nothing files the message then."""
    redirects = [a for a in result.actions if isinstance(a, Redirect)]
    if not redirects:
        return result
    reason = looping(raw, own)
    if reason is None:
        sent = await conn.fetchval(
            """SELECT count(*) FROM sieve_actions
                WHERE user_id = $1 AND kind = 'redirect' AND created_at > now() - interval '1 day'""",
            user_id,
        )
        if sent + len(redirects) > per_day:
            reason = f"{sent} redirects in the last day (sieve.max_redirects_per_day {per_day})"
    if reason is None:
        return result
    log.warning("sieve-redirect user=%d to=%s kept reason=%s", user_id, ",".join(a.address for a in redirects), reason)
    actions: list[Action] = [a for a in result.actions if not isinstance(a, Redirect)]
    if not result.mailboxes:  # nothing else files it: the implicit keep
        actions.append(Keep(implicit=True))
    return Result(actions, result.message, result.error, result.track, result.steps)


async def send_pending(pool: asyncpg.Pool, hostname: str) -> int:
    """Act on a batch of pending redirect actions (module docstring); how many were taken."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            """SELECT id, user_id, detail, mail_from, rcpt_to, blob_hash FROM sieve_actions
                WHERE done_at IS NULL AND kind = 'redirect'
                ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED""",
            BATCH,
        )
        secret = await srs.secret(conn) if rows else b""
        for row in rows:
            detail = row["detail"]
            detail = json.loads(detail) if isinstance(detail, str) else detail
            to = str(detail.get("address") or "")
            found = await queue_store.blobs(conn, [bytes(row["blob_hash"])]) if row["blob_hash"] else {}
            if not to or not found:
                log.info("sieve-redirect user=%d to=%s skipped reason=the message is gone", row["user_id"], to)
            else:
                raw = next(iter(found.values()))
                rcpt = row["rcpt_to"]
                trace = b"Delivered-To: " + rcpt.encode("utf-8", "surrogateescape") + b"\r\n"
                if len(raw) > messages.BLOB_INLINE:  # a large copy is joined off the event loop
                    whole = await asyncio.to_thread(b"".join, (trace, raw))
                else:
                    whole = trace + raw
                blob = await messages.put_blob(conn, whole)
                mail_from = srs.forward(row["mail_from"], rcpt.rpartition("@")[2] or hostname, secret)
                await outbound.queue_message(
                    conn,
                    user_id=row["user_id"],
                    from_address=rcpt,
                    mail_from=mail_from,
                    subject=None,
                    message_id=None,
                    blob_hash=blob,
                    recipients=[to],
                )
                log.info("sieve-redirect user=%d to=%s sent from=%s", row["user_id"], to, mail_from or "<>")
            await conn.execute("UPDATE sieve_actions SET done_at = now() WHERE id = $1", row["id"])
    return len(rows)
