"""SQL for the outbound queue (outbound_emails, outbound_recipients)."""

from __future__ import annotations

from collections.abc import Sequence

from relate.store.db import Queryable

# The delivery daemon LISTENs here, so new work starts at once, not at the next poll.
CHANNEL = "relate_queue"


async def queue_message(
    conn: Queryable,
    *,
    user_id: int,
    from_address: str,
    mail_from: str,
    subject: str | None,
    message_id: str | None,
    blob_hash: bytes,
    recipients: Sequence[str],
) -> int:
    """Queue an already composed message for remote recipients; returns its id.

    Call inside the transaction that accepts the message: NOTIFY then fires
    on commit, and nothing is queued if the transaction rolls back.
    """
    email_id: int = await conn.fetchval(
        """INSERT INTO outbound_emails (user_id, status, from_address, mail_from, subject, blob_hash,
                                        message_id, queued_at, next_retry_at)
           VALUES ($1, 'queued', $2, $3, $4, $5, $6, now(), now()) RETURNING id""",
        user_id,
        from_address,
        mail_from,
        subject,
        blob_hash,
        message_id,
    )
    await conn.execute(
        """INSERT INTO outbound_recipients (outbound_email_id, kind, address, domain, next_attempt_at)
           SELECT $1, 'to', r, lower(split_part(r, '@', 2)), now() FROM unnest($2::text[]) AS r""",
        email_id,
        list(recipients),
    )
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, str(email_id))
    return email_id
