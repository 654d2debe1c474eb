"""SQL for web push subscriptions (``push_subscriptions``).

Policy: a subscription is identified by its endpoint URL, which the user's
browser chose and which is unique across the system. Subscribing again with
the same endpoint updates the keys and, if another user held it, moves it
to the caller: the endpoint belongs to one browser profile, and whoever
signed in there last is who it should notify (knowing the endpoint URL,
an unguessable capability, is what proves that). A user has at most
``MAX_PER_USER`` subscriptions.
"""

from __future__ import annotations

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
