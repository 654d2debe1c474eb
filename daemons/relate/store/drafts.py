"""SQL for mail written through the API: drafts, and the outbound rows they become when sent.

A draft is an ``outbound_emails`` row in status ``draft`` with its
recipients (``outbound_recipients``, never claimed while a draft) and its
attachments (``outbound_attachments``). So every client sees it, a composed
copy flagged ``\\Draft`` sits in the user's Drafts folder
(``draft_message_id``); each save puts a new copy there and expunges the old
one in the same transaction, so IMAP sessions see the replacement as one
change. Sending turns the same row into the queued (or, when every
recipient is local, sent) message: its recipients are replaced by the
checked ones, local ones recorded as delivered, the Drafts copy is removed
and the attachment rows dropped (the composed message holds them; the Sent
copy lists them). A copy the user deletes over IMAP just unlinks itself
(``ON DELETE SET NULL``); the next save writes a new one.

Every status change is announced on ``relate_delivery``
(:func:`relate.store.outbound.announce`) in the transaction that makes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from relate.errors import Conflict, NotFound
from relate.store import accounts, imap_messages, messages, outbound
from relate.store.db import Queryable

DRAFT_FLAGS = ("\\Draft", "\\Seen")


@dataclass(frozen=True)
class Recipient:
    kind: str  # to | cc | bcc
    address: str
    name: str | None = None
    local: bool = False  # delivered at once (only meaningful when sending)


@dataclass(frozen=True)
class NewAttachment:
    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None
    inline: bool = False


@dataclass
class Fields:
    """Everything a draft says; a save replaces all of it."""

    from_address: str
    from_name: str | None = None
    subject: str | None = None
    text_body: str | None = None
    html_body: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    recipients: list[Recipient] = field(default_factory=list)
    keep_attachments: list[int] | None = None  # ids of existing attachments to keep; None keeps all
    new_attachments: list[NewAttachment] = field(default_factory=list)


_ROW = """e.id, e.user_id, e.status, e.from_address, e.from_name, e.subject, e.text_body, e.html_body,
          e.message_id, e.in_reply_to, e."references", e.retry_count, e.next_retry_at, e.last_error,
          e.created_at, e.updated_at, e.queued_at, e.sent_at, e.draft_message_id, e.sent_message_id"""


async def _insert_recipients(conn: Queryable, email_id: int, recipients: Sequence[Recipient], *, sending: bool) -> None:
    if not recipients:
        return
    await conn.execute(
        """INSERT INTO outbound_recipients (outbound_email_id, kind, address, name, domain, status, attempts,
                                            next_attempt_at, status_code, remote_reply)
           SELECT $1, r.kind, r.address, r.name, lower(split_part(r.address, '@', 2)),
                  CASE WHEN NOT $6 THEN 'pending' WHEN r.local THEN 'sent' ELSE 'pending' END,
                  CASE WHEN $6 AND r.local THEN 1 ELSE 0 END,
                  CASE WHEN $6 AND NOT r.local THEN now() END,
                  CASE WHEN $6 AND r.local THEN '2.0.0' END,
                  CASE WHEN $6 AND r.local THEN 'delivered locally' END
             FROM unnest($2::text[], $3::text[], $4::text[], $5::bool[]) WITH ORDINALITY
                  AS r(kind, address, name, local, n)
            ORDER BY r.n""",
        email_id,
        [r.kind for r in recipients],
        [r.address for r in recipients],
        [r.name for r in recipients],
        [r.local for r in recipients],
        sending,
    )


async def _insert_attachments(conn: Queryable, email_id: int, items: Sequence[NewAttachment]) -> None:
    if not items:
        return
    await conn.executemany(
        """INSERT INTO outbound_attachments (outbound_email_id, filename, content_type, content_id, inline, size, data)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        [(email_id, a.filename, a.content_type, a.content_id, a.inline, len(a.data), a.data) for a in items],
    )


async def create(conn: asyncpg.Connection, user_id: int, fields: Fields) -> int:
    """A new draft; returns its id. Call inside a transaction (with :func:`replace_copy`)."""
    email_id: int = await conn.fetchval(
        """INSERT INTO outbound_emails (user_id, status, from_address, from_name, subject, text_body, html_body,
                                        in_reply_to, "references")
           VALUES ($1, 'draft', $2, $3, $4, $5, $6, $7, $8) RETURNING id""",
        user_id,
        fields.from_address,
        fields.from_name,
        fields.subject,
        fields.text_body,
        fields.html_body,
        fields.in_reply_to,
        fields.references,
    )
    await _insert_recipients(conn, email_id, fields.recipients, sending=False)
    await _insert_attachments(conn, email_id, fields.new_attachments)
    return email_id


async def lock_draft(conn: Queryable, user_id: int, email_id: int) -> dict[str, Any]:
    """Lock the user's draft row for a change; NotFound for no such row, Conflict when it is no longer a draft."""
    row = await conn.fetchrow(
        """SELECT id, status, updated_at, draft_message_id FROM outbound_emails
            WHERE id = $1 AND user_id = $2 FOR UPDATE""",
        email_id,
        user_id,
    )
    if row is None:
        raise NotFound("no such outbound email")
    if row["status"] != "draft":
        raise Conflict(f"outbound email {email_id} is not a draft any more (it is {row['status']})")
    return dict(row)


async def save(conn: asyncpg.Connection, user_id: int, email_id: int, fields: Fields) -> None:
    """Replace a draft's fields, recipients and attachments (keeping the ``keep_attachments`` ones)."""
    await lock_draft(conn, user_id, email_id)
    await conn.execute(
        """UPDATE outbound_emails SET from_address = $2, from_name = $3, subject = $4, text_body = $5,
                  html_body = $6, in_reply_to = $7, "references" = $8, updated_at = clock_timestamp()
            WHERE id = $1""",
        email_id,
        fields.from_address,
        fields.from_name,
        fields.subject,
        fields.text_body,
        fields.html_body,
        fields.in_reply_to,
        fields.references,
    )
    await conn.execute("DELETE FROM outbound_recipients WHERE outbound_email_id = $1", email_id)
    await _insert_recipients(conn, email_id, fields.recipients, sending=False)
    if fields.keep_attachments is not None:
        await conn.execute(
            "DELETE FROM outbound_attachments WHERE outbound_email_id = $1 AND NOT id = ANY($2::bigint[])",
            email_id,
            fields.keep_attachments,
        )
    await _insert_attachments(conn, email_id, fields.new_attachments)


async def drafts_box(conn: asyncpg.Connection, user_id: int) -> int:
    """The user's \\Drafts folder, made (as ``Drafts``) if they have none."""
    found = await accounts.special_mailbox(conn, user_id, "\\Drafts")
    if found is not None:
        return found
    row = await conn.fetchrow(
        """INSERT INTO mailboxes (user_id, name, special_use) VALUES ($1, 'Drafts', '\\Drafts')
           ON CONFLICT (user_id, name) DO UPDATE SET special_use = coalesce(mailboxes.special_use, '\\Drafts')
           RETURNING id""",
        user_id,
    )
    # Subscribed, as the default folders are, so clients that show subscribed folders only show it.
    await conn.execute(
        "INSERT INTO subscriptions (user_id, name) VALUES ($1, 'Drafts') ON CONFLICT DO NOTHING", user_id
    )
    box_id: int = row["id"]
    return box_id


async def _remove_message(conn: asyncpg.Connection, message_id: int | None) -> None:
    """Expunge one stored message (a Drafts copy), telling IMAP sessions; nothing if it is gone."""
    if message_id is None:
        return
    row = await conn.fetchrow("SELECT mailbox_id, uid FROM messages WHERE id = $1", message_id)
    if row is not None:
        await imap_messages.remove(conn, row["mailbox_id"], [row["uid"]])


async def replace_copy(conn: asyncpg.Connection, user_id: int, email_id: int, raw: bytes) -> int:
    """Put ``raw`` in the Drafts folder as this draft's copy, expunging the previous one; returns its message id."""
    box = await drafts_box(conn, user_id)
    old = await conn.fetchval("SELECT draft_message_id FROM outbound_emails WHERE id = $1", email_id)
    (stored,) = await messages.ingest(conn, raw, [box], flags=DRAFT_FLAGS)
    await conn.execute("UPDATE outbound_emails SET draft_message_id = $2 WHERE id = $1", email_id, stored.id)
    await _remove_message(conn, old)
    return stored.id


async def discard(conn: asyncpg.Connection, user_id: int, email_id: int) -> None:
    """Delete a draft and its Drafts copy."""
    async with conn.transaction():
        row = await lock_draft(conn, user_id, email_id)
        await conn.execute("DELETE FROM outbound_emails WHERE id = $1", email_id)
        await _remove_message(conn, row["draft_message_id"])


async def take_for_sending(
    conn: asyncpg.Connection, user_id: int, email_id: int, version: datetime | None
) -> dict[str, Any]:
    """Lock a draft that is about to be sent; Conflict if it was sent, or saved since ``version`` was read."""
    row = await lock_draft(conn, user_id, email_id)
    if version is not None and row["updated_at"] != version:
        raise Conflict("the draft was changed while it was being sent; send it again")
    return row


@dataclass
class Sent:
    """The record of a message sent through the API."""

    user_id: int
    from_address: str
    from_name: str | None
    mail_from: str
    subject: str | None
    text_body: str | None
    html_body: str | None
    message_id: str
    in_reply_to: str | None
    references: list[str]
    recipients: list[Recipient]
    email_id: int | None = None  # the draft this was, if any
    version: datetime | None = None  # the draft's updated_at when it was read for sending


async def record_sent(
    conn: asyncpg.Connection,
    sent: Sent,
    *,
    blob_hash: bytes | None,
    sent_message_id: int | None,
    draft_message_id: int | None,
) -> int:
    """Turn the draft (or a new row) into the sent message; returns its id. Inside the delivery transaction.

    Remote recipients are queued (``pending``, due now); local ones are
    recorded as delivered. The status is ``queued`` while any remote
    recipient waits, else ``sent``.
    """
    remote = any(not r.local for r in sent.recipients)
    status = "queued" if remote else "sent"
    values = (
        sent.user_id,
        status,
        sent.from_address,
        sent.from_name,
        sent.mail_from,
        sent.subject,
        sent.text_body,
        sent.html_body,
        blob_hash if remote else None,
        sent.message_id,
        sent.in_reply_to,
        sent.references,
        sent_message_id,
    )
    if sent.email_id is None:
        email_id: int = await conn.fetchval(
            """INSERT INTO outbound_emails (user_id, status, from_address, from_name, mail_from, subject, text_body,
                       html_body, blob_hash, message_id, in_reply_to, "references", sent_message_id,
                       queued_at, next_retry_at, sent_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, now(),
                       CASE WHEN $2 = 'queued' THEN now() END, CASE WHEN $2 = 'sent' THEN now() END)
               RETURNING id""",
            *values,
        )
    else:
        email_id = sent.email_id
        await conn.execute(
            """UPDATE outbound_emails SET user_id = $1, status = $2, from_address = $3, from_name = $4, mail_from = $5,
                      subject = $6, text_body = $7, html_body = $8, blob_hash = $9, message_id = $10,
                      in_reply_to = $11, "references" = $12, sent_message_id = $13, draft_message_id = NULL,
                      queued_at = now(), next_retry_at = CASE WHEN $2 = 'queued' THEN now() END,
                      sent_at = CASE WHEN $2 = 'sent' THEN now() END, updated_at = now()
                WHERE id = $14""",
            *values,
            email_id,
        )
        await conn.execute("DELETE FROM outbound_recipients WHERE outbound_email_id = $1", email_id)
        await conn.execute("DELETE FROM outbound_attachments WHERE outbound_email_id = $1", email_id)
        await _remove_message(conn, draft_message_id)
    await _insert_recipients(conn, email_id, sent.recipients, sending=True)
    if remote:
        await conn.execute("SELECT pg_notify($1, $2)", outbound.CHANNEL, str(email_id))
    await outbound.announce(conn, [email_id])
    return email_id


# --- reads -----------------------------------------------------------------------


async def get(conn: Queryable, user_id: int, email_id: int) -> dict[str, Any] | None:
    """One outbound email of the user (any status) with its recipients and attachments."""
    row = await conn.fetchrow(
        f"SELECT {_ROW} FROM outbound_emails e WHERE e.id = $1 AND e.user_id = $2", email_id, user_id
    )
    if row is None:
        return None
    found = dict(row)
    recipients = await conn.fetch(
        """SELECT id, kind, address, name, status, attempts, next_attempt_at, status_code, remote_mta,
                  remote_reply, last_error, updated_at
             FROM outbound_recipients WHERE outbound_email_id = $1 ORDER BY id""",
        email_id,
    )
    found["recipients"] = [dict(r) for r in recipients]
    if found["status"] == "draft":
        rows = await conn.fetch(
            """SELECT id, filename, content_type, content_id, inline, size FROM outbound_attachments
                WHERE outbound_email_id = $1 ORDER BY id""",
            email_id,
        )
        found["attachments"] = [dict(r) for r in rows]
    else:
        listed = None
        if found["sent_message_id"] is not None:
            listed = await conn.fetchval("SELECT attachments FROM messages WHERE id = $1", found["sent_message_id"])
        found["attachments"] = [
            {
                "id": None,
                "filename": a.get("filename"),
                "content_type": a.get("contentType"),
                "content_id": a.get("contentId"),
                "inline": bool(a.get("inline")),
                "size": a.get("size"),
            }
            for a in listed or []
        ]
    return found


async def attachment_data(conn: Queryable, email_id: int) -> list[dict[str, Any]]:
    """Every attachment of a draft with its bytes, in the order they were added."""
    rows = await conn.fetch(
        """SELECT id, filename, content_type, content_id, inline, size, data FROM outbound_attachments
            WHERE outbound_email_id = $1 ORDER BY id""",
        email_id,
    )
    return [dict(r) | {"data": bytes(r["data"])} for r in rows]


async def listing(
    conn: Queryable, user_id: int, statuses: Sequence[str], offset: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """One page of the user's outbound emails in these statuses, most recently changed first, and the total."""
    rows = await conn.fetch(
        f"""SELECT {_ROW},
                   (SELECT coalesce(jsonb_agg(jsonb_build_object('address', r.address, 'kind', r.kind,
                                                'name', r.name, 'status', r.status) ORDER BY r.id), '[]')
                      FROM outbound_recipients r WHERE r.outbound_email_id = e.id) AS recipients,
                   CASE WHEN e.status = 'draft'
                        THEN (SELECT count(*) FROM outbound_attachments a WHERE a.outbound_email_id = e.id)
                        ELSE coalesce((SELECT m.attachment_count FROM messages m WHERE m.id = e.sent_message_id), 0)
                   END AS attachment_count
              FROM outbound_emails e
             WHERE e.user_id = $1 AND e.status = ANY($2::text[])
             ORDER BY e.updated_at DESC, e.id DESC OFFSET $3 LIMIT $4""",
        user_id,
        list(statuses),
        offset,
        limit,
    )
    total: int = await conn.fetchval(
        "SELECT count(*) FROM outbound_emails WHERE user_id = $1 AND status = ANY($2::text[])", user_id, list(statuses)
    )
    return [dict(r) for r in rows], total
