"""SQL for API keys (app passwords). Only prefixes and bcrypt hashes are stored."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from relate.errors import NotFound
from relate.store.db import Queryable

_PUBLIC = "k.id, k.name, k.prefix, k.scopes, k.created_at, k.last_used_at, k.expires_at, k.revoked_at"


async def insert(
    conn: Queryable,
    user_id: int,
    name: str,
    prefix: str,
    hash_: str,
    scopes: list[str],
    expires_at: datetime | None,
) -> dict[str, Any]:
    row = await conn.fetchrow(
        f"""INSERT INTO api_keys AS k (user_id, name, prefix, hash, scopes, expires_at)
            VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_PUBLIC}""",
        user_id,
        name,
        prefix,
        hash_,
        scopes,
        expires_at,
    )
    assert row is not None
    return dict(row)


async def for_verification(conn: Queryable, prefix: str, login: str) -> dict[str, Any] | None:
    """The key with ``prefix``, its owner, and whether ``login`` is one of the owner's addresses."""
    row = await conn.fetchrow(
        """SELECT k.id, k.hash, k.scopes, k.expires_at, k.revoked_at,
                  u.id AS user_id, u.address, u.disabled,
                  EXISTS (SELECT 1 FROM addresses a WHERE a.user_id = u.id AND a.address = $2) AS login_matches
             FROM api_keys k JOIN users u ON u.id = k.user_id
            WHERE k.prefix = $1""",
        prefix,
        login,
    )
    return dict(row) if row else None


async def touch(conn: Queryable, key_id: int, *, rehash: tuple[str, str] | None = None) -> None:
    """Record a use; ``rehash=(old, new)`` also swaps the hash, unless it changed meanwhile (a rotation)."""
    if rehash is None:
        await conn.execute("UPDATE api_keys SET last_used_at = now() WHERE id = $1", key_id)
        return
    await conn.execute(
        """UPDATE api_keys SET last_used_at = now(), hash = CASE WHEN hash = $2 THEN $3 ELSE hash END
            WHERE id = $1""",
        key_id,
        *rehash,
    )


async def list_for(conn: Queryable, user_id: int | None, *, include_revoked: bool) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"""SELECT {_PUBLIC}, u.address AS "user"
              FROM api_keys k JOIN users u ON u.id = k.user_id
             WHERE ($1::bigint IS NULL OR k.user_id = $1) AND ($2 OR k.revoked_at IS NULL)
             ORDER BY u.address, k.id""",
        user_id,
        include_revoked,
    )
    return [dict(r) for r in rows]


async def get(conn: Queryable, key_id: int) -> dict[str, Any]:
    row = await conn.fetchrow(
        f"""SELECT {_PUBLIC}, k.user_id, u.address AS "user"
              FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.id = $1""",
        key_id,
    )
    if row is None:
        raise NotFound(f"no such key: {key_id}")
    return dict(row)


async def revoke(conn: Queryable, key_id: int) -> bool:
    """Marks the key revoked; False if it already was."""
    row = await conn.fetchrow(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING id", key_id
    )
    if row is None:
        await get(conn, key_id)  # raises NotFound for an unknown id
        return False
    return True
