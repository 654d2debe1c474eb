"""SQL for DKIM keys (one active key per domain)."""

from __future__ import annotations

from typing import Any

from relate.store.db import Queryable


async def active(conn: Queryable, domain: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        """SELECT k.selector, k.algorithm, k.private_key, k.public_key, k.created_at FROM dkim_keys k
             JOIN domains d ON d.id = k.domain_id WHERE d.name = $1 AND k.active""",
        domain,
    )
    return dict(row) if row else None


async def replace(conn: Any, domain_id: int, selector: str, algorithm: str, private_key: str, public_key: str) -> None:
    """Make this the domain's active key; an older key is kept, inactive, until removed by hand."""
    async with conn.transaction():
        await conn.execute("UPDATE dkim_keys SET active = false WHERE domain_id = $1", domain_id)
        await conn.execute(
            """INSERT INTO dkim_keys (domain_id, selector, algorithm, private_key, public_key)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (domain_id, selector) DO UPDATE
                 SET algorithm = excluded.algorithm, private_key = excluded.private_key,
                     public_key = excluded.public_key, created_at = now(), active = true""",
            domain_id,
            selector,
            algorithm,
            private_key,
            public_key,
        )
