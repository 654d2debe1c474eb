"""SQL for the outbound queue (outbound_emails, outbound_recipients).

Every change of an outbound email's status, or of one of its recipients,
is announced with ``NOTIFY relate_delivery`` and the JSON payload
``{"user": user_id, "id": outbound_id, "status": status}`` (the email's
status after the change) from the transaction that makes it, so listeners
(the API's WebSocket hub: DeliveryStatusChanged) hear of it exactly when it
is committed.
"""

from __future__ import annotations

from collections.abc import Sequence

from relate.store import changes
from relate.store.db import Queryable

# The delivery daemon LISTENs here, so new work starts at once, not at the next poll.
CHANNEL = changes.QUEUE
# Status changes, for the API's DeliveryStatusChanged events.
DELIVERY_CHANNEL = changes.DELIVERY

# pg_notify for each listed outbound email with its current status; json_build_object keeps the key order.
ANNOUNCE = """SELECT pg_notify('relate_delivery',
                             json_build_object('user', user_id, 'id', id, 'status', status)::text)
                FROM outbound_emails WHERE id = ANY($1::bigint[])"""


async def announce(conn: Queryable, email_ids: Sequence[int]) -> None:
    """``NOTIFY relate_delivery`` for each of these outbound emails, with its status now."""
    if email_ids:
        await conn.execute(ANNOUNCE, list(email_ids))


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
    await conn.execute(
        "SELECT pg_notify($1, $2), pg_notify($3, json_build_object('user', $4::bigint, 'id', $5::bigint,"
        " 'status', 'queued')::text)",
        CHANNEL,
        str(email_id),
        DELIVERY_CHANNEL,
        user_id,
        email_id,
    )
    return email_id
