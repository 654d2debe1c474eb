"""SQL for web push subscriptions (``push_subscriptions``).

Policy: a subscription is identified by its endpoint URL, which the user's
browser chose and which is unique across the system. Subscribing again with
the same endpoint updates the keys and, if another user held it, moves it
to the caller: the endpoint belongs to one browser profile, and whoever
signed in there last is who it should notify (knowing the endpoint URL,
an unguessable capability, is what proves that). A user has at most
``MAX_PER_USER`` subscriptions.

A delivered message is pushed once, by one relate-api process, whatever number
of them hear the change feed: :func:`claim_new` takes it in ``push_claims``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relate.errors import Invalid
from relate.store.db import Queryable

MAX_PER_USER = 50
_COLUMNS = "id, user_id, endpoint, p256dh, auth, created_at, last_used_at"


async def subscribe(
    conn: Queryable, user_id: int, endpoint: str, p256dh: str, auth: str
) -> tuple[dict[str, Any], bool]:
    """Store (or refresh) the subscription; returns it and whether it is new to this user."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM push_subscriptions WHERE user_id = $1 AND endpoint <> $2", user_id, endpoint
    )
    if count >= MAX_PER_USER:
        raise Invalid(f"too many push subscriptions (at most {MAX_PER_USER}); delete some first")
    previous = await conn.fetchval("SELECT user_id FROM push_subscriptions WHERE endpoint = $1", endpoint)
    row = await conn.fetchrow(
        f"""INSERT INTO push_subscriptions AS s (user_id, endpoint, p256dh, auth) VALUES ($1, $2, $3, $4)
            ON CONFLICT (endpoint) DO UPDATE SET user_id = EXCLUDED.user_id, p256dh = EXCLUDED.p256dh,
                   auth = EXCLUDED.auth
            RETURNING {_COLUMNS}""",
        user_id,
        endpoint,
        p256dh,
        auth,
    )
    return dict(row), previous != user_id


async def for_user(conn: Queryable, user_id: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM push_subscriptions WHERE user_id = $1 ORDER BY id", user_id)
    return [dict(r) for r in rows]


async def delete(conn: Queryable, user_id: int, subscription_id: int) -> bool:
    """Delete the user's subscription; False when it is not theirs or does not exist."""
    status = await conn.execute(
        "DELETE FROM push_subscriptions WHERE id = $1 AND user_id = $2", subscription_id, user_id
    )
    return status.endswith(" 1")


async def forget(conn: Queryable, subscription_id: int, endpoint: str) -> None:
    """Drop a subscription the push service says is gone (404/410), unless it was re-made meanwhile."""
    await conn.execute("DELETE FROM push_subscriptions WHERE id = $1 AND endpoint = $2", subscription_id, endpoint)


async def touch(conn: Queryable, subscription_ids: list[int]) -> None:
    """Record that these subscriptions were just used successfully."""
    if subscription_ids:
        await conn.execute(
            "UPDATE push_subscriptions SET last_used_at = now() WHERE id = ANY($1::bigint[])", subscription_ids
        )


# Of these delivered messages, those whose owner has a subscription, each claimed for this process in
# push_claims (migration 0045), with the owner's subscriptions: one statement, so a message two processes
# claim at once is inserted by one, and the other's ON CONFLICT waits for it to commit and then skips the
# row; and a claim is never left without the subscriptions to push it to. A message gone already is left.
_CLAIM = f"""
WITH wanted AS (
    SELECT m.id, b.user_id, m.mailbox_id, m.subject, m.from_addr
      FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
     WHERE m.id = ANY($1::bigint[])
       AND EXISTS (SELECT 1 FROM push_subscriptions s WHERE s.user_id = b.user_id)),
claimed AS (
    INSERT INTO push_claims (message_id) SELECT id FROM wanted ON CONFLICT (message_id) DO NOTHING
    RETURNING message_id)
SELECT w.id AS message_id, w.mailbox_id, w.subject, w.from_addr, {", ".join("s." + c for c in _COLUMNS.split(", "))}
  FROM wanted w JOIN claimed c ON c.message_id = w.id JOIN push_subscriptions s ON s.user_id = w.user_id
 ORDER BY w.id, s.id"""


@dataclass(frozen=True)
class Claimed:
    """A delivered message this process is to push: what the push says of it, and where it goes."""

    id: int
    user_id: int
    mailbox_id: int
    subject: str | None
    sender: str | None  # the first From address
    subscriptions: tuple[dict[str, Any], ...]  # the owner's, as :func:`for_user` lists them


async def claim_new(conn: Queryable, message_ids: list[int]) -> list[Claimed]:
    """Claim the web push of these delivered messages: those this call claimed whose owner has subscriptions.

    A message is claimed once, by whichever API process asks first; every later call skips it.
    """
    found: dict[int, Claimed] = {}
    subscriptions: dict[int, list[dict[str, Any]]] = {}
    for r in await conn.fetch(_CLAIM, message_ids):
        mid = r["message_id"]
        if mid not in found:
            sender = ((r["from_addr"] or [{}])[0]).get("email")
            found[mid] = Claimed(mid, r["user_id"], r["mailbox_id"], r["subject"], sender, ())
        subscriptions.setdefault(mid, []).append({c: r[c] for c in _COLUMNS.split(", ")})
    return [
        Claimed(c.id, c.user_id, c.mailbox_id, c.subject, c.sender, tuple(subscriptions[c.id])) for c in found.values()
    ]


async def prune_claims(conn: Queryable, older_than_seconds: float) -> int:
    """Delete push claims older than this (their notifications are long heard); how many were deleted."""
    status: str = await conn.execute(
        "DELETE FROM push_claims WHERE claimed_at < now() - make_interval(secs => $1)", older_than_seconds
    )
    return int(status.split()[-1])
