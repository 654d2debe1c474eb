"""Vacation replies (RFC 5230, RFC 6131, RFC 3834): the delivery daemon sends what delivery recorded.

Policy:

- Delivery (relate/sieve/filing.py) records a ``vacation`` action in
  ``sieve_actions`` with the script's arguments and the few facts of the
  original message the rules below need (:func:`facts`: its Subject,
  Message-ID, References, Auto-Submitted, list and Precedence fields, the
  addresses of To and Cc), in the delivery's transaction.
- The delivery daemon (relate.queue.worker) takes pending actions a batch
  at a time (``FOR UPDATE SKIP LOCKED``, so two daemons never take one),
  and either queues the reply as outbound mail of the user, or does not;
  the action is marked done either way, in the same transaction, with one
  log line ``sieve-vacation user=... to=... sent|skipped reason=...``.
- Never a reply (RFC 5230 §4.5-4.7, RFC 3834 §2): to an empty sender, to
  MAILER-DAEMON, ``owner-*`` or ``*-request`` senders; to mail with
  ``Auto-Submitted`` other than ``no``, with ``List-Id``/``List-Unsubscribe``
  or ``Precedence: bulk|list|junk``; to mail none of whose To/Cc addresses is
  the user's (the address it was delivered to, the user's own, or one of
  ``:addresses``); to the user's own addresses.
- At most one reply per (user, :handle, sender) within ``:days`` (or
  ``:seconds``), remembered in ``sieve_vacation_replies`` (migration 0049).
- The reply: From the address the mail came to (``:from`` only when it is one
  of the user's addresses), To the envelope sender, Subject ``:subject`` or
  ``Auto: <original subject>``, ``In-Reply-To``/``References`` from the
  original, ``Auto-Submitted: auto-replied``, and the empty envelope sender
  (RFC 3834 §3.2). It goes through the outbound queue, so it is DKIM-signed
  like other mail of the From domain; a bounce of it goes nowhere.
"""

from __future__ import annotations

import email.policy
import email.utils
import hashlib
import json
import logging
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import asyncpg

from relate.mail.compose import make_message_id
from relate.sieve.message import Message
from relate.store import messages, outbound

log = logging.getLogger("relate.sieve")

BATCH = 100  # actions taken per transaction
_FACT_CHARS = 998  # a fact kept from the original is cut to one line's length
_MAX_RECIPIENTS = 100  # To/Cc addresses kept
_BULK = {"bulk", "list", "junk"}


def facts(raw: bytes) -> dict[str, Any]:
    """What the sending side needs to know of the original message (header only, bounded)."""
    msg = Message.parse(raw)

    def first(name: str) -> str | None:
        found = msg.named(name)
        return found[0].value[:_FACT_CHARS] if found else None

    recipients: list[str] = []
    for name in ("to", "cc"):
        for f in msg.named(name):
            recipients += f.addresses
    return {
        "subject": first("subject"),
        "message_id": first("message-id"),
        "references": first("references"),
        "auto_submitted": first("auto-submitted"),
        "list": bool(msg.named("list-id") or msg.named("list-unsubscribe")),
        "precedence": first("precedence"),
        "recipients": [a.lower()[:_FACT_CHARS] for a in recipients[:_MAX_RECIPIENTS]],
    }


@dataclass(frozen=True)
class Pending:
    id: int
    user_id: int
    user_address: str
    mail_from: str
    rcpt_to: str
    detail: dict[str, Any]


def why_not(p: Pending) -> str | None:
    """The reason not to reply (RFC 5230 §4.5-4.7, RFC 3834 §2), or None."""
    sender = p.mail_from.lower()
    if not sender:
        return "empty sender"
    local = sender.rpartition("@")[0]
    if local == "mailer-daemon" or local.startswith("owner-") or local.endswith("-request"):
        return f"sender {local} is an automatic one"
    original = p.detail.get("original") or {}
    auto = (original.get("auto_submitted") or "").strip().lower()
    if auto and auto.split(";")[0].strip() != "no":
        return "the mail is Auto-Submitted"
    if original.get("list"):
        return "the mail is from a list (List-Id or List-Unsubscribe)"
    if (original.get("precedence") or "").strip().lower() in _BULK:
        return "Precedence: " + (original.get("precedence") or "").strip().lower()
    own = own_addresses(p)
    if sender in own:
        return "the sender is the user"
    if not own.intersection(original.get("recipients") or []):
        return "none of the user's addresses is in To or Cc"
    return None


def own_addresses(p: Pending) -> set[str]:
    extra = [str(a).lower() for a in p.detail.get("addresses") or []]
    return {p.rcpt_to.lower(), p.user_address.lower(), *extra}


def reply(p: Pending, hostname: str) -> tuple[bytes, str, str, str]:
    """The reply's bytes, its From address, its Message-ID and its Subject."""
    detail = p.detail
    original = detail.get("original") or {}
    chosen = detail.get("from")
    from_header = p.rcpt_to
    if chosen:
        parsed = email.utils.parseaddr(str(chosen))[1].lower()
        if parsed and parsed in {p.rcpt_to.lower(), p.user_address.lower()}:
            from_header = str(chosen)
    from_address = email.utils.parseaddr(from_header)[1] or p.rcpt_to
    subject = detail.get("subject") or "Auto: " + (original.get("subject") or "")
    subject = " ".join(subject.split())[:_FACT_CHARS]
    domain = from_address.rpartition("@")[2] or hostname
    message_id = make_message_id(domain)
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = from_header
    msg["To"] = p.mail_from
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg["Message-ID"] = message_id
    parent = original.get("message_id")
    if parent:
        msg["In-Reply-To"] = parent
        msg["References"] = " ".join(filter(None, [original.get("references"), parent]))[: 20 * _FACT_CHARS]
    msg["Auto-Submitted"] = "auto-replied"
    reason = str(detail.get("reason") or "")
    if detail.get("mime"):
        # RFC 5230 §5.8: the reason is a MIME part, its own header first.
        head = msg.as_bytes().rstrip(b"\r\n") + b"\r\nMIME-Version: 1.0\r\n"
        part = reason.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
        return head + part, from_address, message_id, subject
    msg.set_content(reason, charset="utf-8", cte="quoted-printable")
    return msg.as_bytes(), from_address, message_id, subject


def handle_key(detail: dict[str, Any]) -> bytes:
    return hashlib.sha256(str(detail.get("handle") or "").encode("utf-8", "surrogateescape")).digest()


async def send_pending(pool: asyncpg.Pool, hostname: str) -> int:
    """Act on a batch of pending vacation actions (module docstring); how many were taken."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            """SELECT a.id, a.user_id, u.address, a.mail_from, a.rcpt_to, a.detail
                 FROM sieve_actions a JOIN users u ON u.id = a.user_id
                WHERE a.done_at IS NULL AND a.kind = 'vacation'
                ORDER BY a.id LIMIT $1 FOR UPDATE OF a SKIP LOCKED""",
            BATCH,
        )
        for row in rows:
            detail = row["detail"]
            p = Pending(
                row["id"],
                row["user_id"],
                row["address"],
                row["mail_from"],
                row["rcpt_to"],
                json.loads(detail) if isinstance(detail, str) else detail,
            )
            reason = why_not(p)
            if reason is None:
                try:
                    async with conn.transaction():  # a savepoint: a reply that cannot be made is not retried forever
                        await _sent(conn, p, hostname)
                except (ValueError, TypeError, UnicodeError) as exc:
                    reason = f"the reply cannot be made: {type(exc).__name__}: {str(exc)[:200]}"
            if reason is not None:
                log.info("sieve-vacation user=%d to=%s skipped reason=%s", p.user_id, p.mail_from or "<>", reason)
            await conn.execute("UPDATE sieve_actions SET done_at = now() WHERE id = $1", p.id)
    return len(rows)


async def _sent(conn: asyncpg.Connection, p: Pending, hostname: str) -> None:
    seconds = max(int(p.detail.get("seconds", 86400)), 0)  # RFC 6131: :seconds 0 replies every time
    fresh = await conn.fetchval(
        """INSERT INTO sieve_vacation_replies (user_id, handle, sender, expires_at)
           VALUES ($1, $2, $3, now() + make_interval(secs => $4))
           ON CONFLICT (user_id, handle, sender) DO UPDATE SET expires_at = EXCLUDED.expires_at
            WHERE sieve_vacation_replies.expires_at <= now()
           RETURNING true""",
        p.user_id,
        handle_key(p.detail),
        p.mail_from.lower(),
        float(seconds),
    )
    if not fresh:
        log.info("sieve-vacation user=%d to=%s skipped reason=replied within %ds", p.user_id, p.mail_from, seconds)
        return
    raw, from_address, message_id, subject = reply(p, hostname)
    blob = await messages.put_blob(conn, raw)
    await outbound.queue_message(
        conn,
        user_id=p.user_id,
        from_address=from_address,
        mail_from="",
        subject=subject,
        message_id=message_id,
        blob_hash=blob,
        recipients=[p.mail_from],
    )
    log.info("sieve-vacation user=%d to=%s sent reason=once per %ds", p.user_id, p.mail_from, seconds)
