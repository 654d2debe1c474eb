"""SQL for relatectl's TAB completion: small, prefix-bounded lists of what an admin types.

Each query returns at most ``limit`` rows, in order, matching a LIKE prefix
of the stored form (A-label domains, lower-case addresses); the caller
escapes the prefix (``like_prefix``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from relate.store.db import Queryable


def like_prefix(text: str) -> str:
    """A LIKE pattern matching what starts with ``text`` (its own % and _ taken literally)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def domains(conn: Queryable, prefix: str, limit: int) -> list[str]:
    rows = await conn.fetch("SELECT name FROM domains WHERE name LIKE $1 ORDER BY name LIMIT $2", prefix, limit)
    return [r["name"] for r in rows]


async def users(conn: Queryable, prefix: str, limit: int) -> list[dict[str, Any]]:
    """Users by primary address: address, display_name."""
    rows = await conn.fetch(
        "SELECT address, display_name FROM users WHERE address LIKE $1 ORDER BY address LIMIT $2", prefix, limit
    )
    return [dict(r) for r in rows]


async def addresses(conn: Queryable, prefix: str, limit: int, *, aliases_only: bool = False) -> list[dict[str, Any]]:
    """Addresses that deliver to a user (address, owner: the user's primary address), or only the aliases."""
    rows = await conn.fetch(
        """SELECT a.address, u.address AS owner FROM addresses a JOIN users u ON u.id = a.user_id
            WHERE a.address LIKE $1 AND NOT ($3 AND a.address = u.address) ORDER BY a.address LIMIT $2""",
        prefix,
        limit,
        aliases_only,
    )
    return [dict(r) for r in rows]


async def queue_ids(conn: Queryable, prefix: str, statuses: Sequence[str], limit: int) -> list[dict[str, Any]]:
    """Outbound messages in ``statuses`` whose id starts with ``prefix``: id, status, from_address."""
    rows = await conn.fetch(
        """SELECT id, status, from_address FROM outbound_emails
            WHERE status = ANY($1::text[]) AND id::text LIKE $2 ORDER BY id LIMIT $3""",
        list(statuses),
        prefix,
        limit,
    )
    return [dict(r) for r in rows]


async def key_ids(conn: Queryable, prefix: str, limit: int) -> list[dict[str, Any]]:
    """Keys not revoked whose id starts with ``prefix``: id, name, address (the user's)."""
    rows = await conn.fetch(
        """SELECT k.id, k.name, u.address FROM api_keys k JOIN users u ON u.id = k.user_id
            WHERE k.revoked_at IS NULL AND k.id::text LIKE $1 ORDER BY k.id LIMIT $2""",
        prefix,
        limit,
    )
    return [dict(r) for r in rows]
