"""The stored part of each user's preferences (migration 0039): the values the user changed, as JSON."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg

from relate.store.db import Queryable


async def load(conn: Queryable, user_id: int) -> dict[str, Any]:
    """The user's stored values ({} when none were ever set)."""
    raw = await conn.fetchval("SELECT prefs FROM user_preferences WHERE user_id = $1", user_id)
    return {} if raw is None else dict(raw)


async def update(
    pool: asyncpg.Pool, user_id: int, change: Callable[[dict[str, Any]], dict[str, Any]]
) -> dict[str, Any]:
    """Replace the stored values with ``change(stored)``, the row locked meanwhile; returns the new values."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("INSERT INTO user_preferences (user_id) VALUES ($1) ON CONFLICT DO NOTHING", user_id)
        raw = await conn.fetchval("SELECT prefs FROM user_preferences WHERE user_id = $1 FOR UPDATE", user_id)
        new = change(dict(raw))
        await conn.execute(
            "UPDATE user_preferences SET prefs = $2, updated_at = now() WHERE user_id = $1", user_id, new
        )
        return new
