"""SQL for DKIM keys: one active key per domain, pending keys waiting for DNS, previous keys until retired.

States: *active* (``active``: signs the domain's mail), *pending* (never
active yet: made while another key signed; it waits until its record is
seen in DNS, see relate.services.dns.promote_published), *previous* (signed
once, replaced; kept until ``relatectl dkim retire`` so that its record can
stay published while mail it signed is still verified).
"""

from __future__ import annotations

from typing import Any

from relate.store.db import Queryable

_STATE = "CASE WHEN k.active THEN 'active' WHEN k.activated_at IS NULL THEN 'pending' ELSE 'previous' END"


async def selector_list(conn: Queryable, domain: str | None, limit: int) -> list[dict[str, Any]]:
    """Selectors (selector, domain, state) of ``domain``'s keys, or of every domain's; for TAB completion."""
    rows = await conn.fetch(
        f"""SELECT k.selector, d.name AS domain, {_STATE} AS state FROM dkim_keys k
              JOIN domains d ON d.id = k.domain_id
             WHERE $1::text IS NULL OR d.name = $1 ORDER BY k.selector LIMIT $2""",
        domain,
        limit,
    )
    return [dict(r) for r in rows]


async def active(conn: Queryable, domain: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        """SELECT k.selector, k.algorithm, k.private_key, k.public_key, k.created_at FROM dkim_keys k
             JOIN domains d ON d.id = k.domain_id WHERE d.name = $1 AND k.active""",
        domain,
    )
    return dict(row) if row else None


async def add(conn: Any, domain_id: int, selector: str, algorithm: str, private_key: str, public_key: str) -> str:
    """Store a new key: active at once when the domain has none, else pending; returns that state. An existing
    selector is never replaced: the unique constraint raises."""
    async with conn.transaction():
        signing = await conn.fetchval("SELECT 1 FROM dkim_keys WHERE domain_id = $1 AND active FOR UPDATE", domain_id)
        await conn.execute(
            """INSERT INTO dkim_keys (domain_id, selector, algorithm, private_key, public_key, active, activated_at)
               VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $6 THEN now() END)""",
            domain_id,
            selector,
            algorithm,
            private_key,
            public_key,
            signing is None,
        )
    return "pending" if signing else "active"


async def selectors(conn: Queryable, domain_id: int) -> set[str]:
    return {r["selector"] for r in await conn.fetch("SELECT selector FROM dkim_keys WHERE domain_id = $1", domain_id)}


async def listing(conn: Queryable, domain: str | None = None) -> list[dict[str, Any]]:
    """Every key (no private part), by domain and age, with its state."""
    rows = await conn.fetch(
        f"""SELECT d.name AS domain, k.selector, k.algorithm, {_STATE} AS state, k.created_at, k.activated_at,
                   k.checked_at, k.public_key
              FROM dkim_keys k JOIN domains d ON d.id = k.domain_id
             WHERE $1::text IS NULL OR d.name = $1
             ORDER BY d.name, k.created_at, k.id""",
        domain,
    )
    return [dict(r) for r in rows]


async def due_checks(conn: Queryable, older_than_seconds: float) -> list[dict[str, Any]]:
    """Pending keys not looked up in DNS for ``older_than_seconds``."""
    rows = await conn.fetch(
        """SELECT k.id, d.name AS domain, k.selector, k.public_key FROM dkim_keys k JOIN domains d ON d.id = k.domain_id
            WHERE NOT k.active AND k.activated_at IS NULL
              AND (k.checked_at IS NULL OR k.checked_at < now() - make_interval(secs => $1))""",
        older_than_seconds,
    )
    return [dict(r) for r in rows]


async def checked(conn: Queryable, key_id: int) -> None:
    await conn.execute("UPDATE dkim_keys SET checked_at = now() WHERE id = $1", key_id)


async def activate(conn: Any, domain: str, selector: str) -> str | None:
    """Make this key the domain's signing key (the one signing before becomes previous); its former state, or
    None when there is no such key."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"""SELECT k.id, k.domain_id, {_STATE} AS state FROM dkim_keys k JOIN domains d ON d.id = k.domain_id
                 WHERE d.name = $1 AND k.selector = $2 FOR UPDATE OF k""",
            domain,
            selector,
        )
        if row is None:
            return None
        if row["state"] != "active":
            await conn.execute("UPDATE dkim_keys SET active = false WHERE domain_id = $1 AND active", row["domain_id"])
            await conn.execute(
                "UPDATE dkim_keys SET active = true, activated_at = now(), checked_at = now() WHERE id = $1", row["id"]
            )
    return str(row["state"])


async def retire(conn: Queryable, domain: str, selector: str) -> str | None:
    """Delete a key that is not signing; the state it had ("active" when refused), or None when unknown."""
    row = await conn.fetchrow(
        f"""WITH k AS (SELECT k.id, {_STATE} AS state FROM dkim_keys k JOIN domains d ON d.id = k.domain_id
                        WHERE d.name = $1 AND k.selector = $2),
                 gone AS (DELETE FROM dkim_keys WHERE id IN (SELECT id FROM k WHERE state <> 'active'))
            SELECT state FROM k""",
        domain,
        selector,
    )
    return None if row is None else str(row["state"])
