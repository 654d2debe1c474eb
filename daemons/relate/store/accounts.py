"""SQL for domains, users and their addresses (aliases included)."""

from __future__ import annotations

from typing import Any

import asyncpg

from relate.errors import Conflict, NotFound
from relate.store.db import Queryable

# The folders every user starts with: (name, special-use attribute, RFC 6154).
DEFAULT_MAILBOXES: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)


async def add_domain(conn: Queryable, name: str) -> dict[str, Any]:
    row = await conn.fetchrow(
        "INSERT INTO domains (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id, name, created_at",
        name,
    )
    if row is None:
        raise Conflict(f"domain {name} already exists")
    return dict(row)


async def get_domain(conn: Queryable, name: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT id, name, created_at FROM domains WHERE name = $1", name)
    return dict(row) if row else None


async def list_domains(conn: Queryable) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT d.id, d.name, d.created_at,
                  (SELECT count(*) FROM users u WHERE u.domain_id = d.id) AS users,
                  (SELECT count(*) FROM addresses a WHERE a.domain_id = d.id AND NOT a.is_primary) AS aliases
             FROM domains d ORDER BY d.name"""
    )
    return [dict(r) for r in rows]


async def remove_domain(conn: asyncpg.Connection, name: str) -> None:
    async with conn.transaction():
        domain = await conn.fetchrow("SELECT id FROM domains WHERE name = $1 FOR UPDATE", name)
        if domain is None:
            raise NotFound(f"no such domain: {name}")
        users = await conn.fetch(
            "SELECT address FROM users WHERE domain_id = $1 ORDER BY address LIMIT 6", domain["id"]
        )
        if users:
            shown = ", ".join(r["address"] for r in users[:5]) + (", ..." if len(users) > 5 else "")
            raise Conflict(f"domain {name} still has users: {shown}; remove them first")
        aliases = await conn.fetch(
            "SELECT address FROM addresses WHERE domain_id = $1 ORDER BY address LIMIT 6", domain["id"]
        )
        if aliases:
            shown = ", ".join(r["address"] for r in aliases[:5]) + (", ..." if len(aliases) > 5 else "")
            raise Conflict(f"domain {name} still has aliases: {shown}; remove them first")
        await conn.execute("DELETE FROM domains WHERE id = $1", domain["id"])


async def add_user(conn: asyncpg.Connection, domain_id: int, address: str, display_name: str | None) -> dict[str, Any]:
    """The user, its primary address and its default folders, in one transaction."""
    async with conn.transaction():
        taken = await conn.fetchval("SELECT 1 FROM addresses WHERE address = $1", address)
        if taken:
            raise Conflict(f"address {address} is already in use")
        user = await conn.fetchrow(
            """INSERT INTO users (domain_id, address, display_name) VALUES ($1, $2, $3)
               RETURNING id, address, display_name, created_at""",
            domain_id,
            address,
            display_name,
        )
        assert user is not None
        await conn.execute(
            "INSERT INTO addresses (address, domain_id, user_id, is_primary) VALUES ($1, $2, $3, true)",
            address,
            domain_id,
            user["id"],
        )
        await conn.executemany(
            "INSERT INTO mailboxes (user_id, name, special_use) VALUES ($1, $2, $3)",
            [(user["id"], name, special) for name, special in DEFAULT_MAILBOXES],
        )
        await conn.execute(  # the default folders start subscribed (IMAP subscriptions are names)
            "INSERT INTO subscriptions (user_id, name) SELECT $1, unnest($2::text[])",
            user["id"],
            [name for name, _ in DEFAULT_MAILBOXES],
        )
    return dict(user)


async def get_user(conn: Queryable, address: str) -> dict[str, Any] | None:
    """The user owning ``address`` (primary or alias)."""
    row = await conn.fetchrow(
        """SELECT u.id, u.address, u.display_name, u.disabled, u.created_at, d.name AS domain
             FROM addresses a JOIN users u ON u.id = a.user_id JOIN domains d ON d.id = u.domain_id
            WHERE a.address = $1""",
        address,
    )
    return dict(row) if row else None


async def list_users(conn: Queryable, domain: str | None = None) -> list[dict[str, Any]]:
    """Users with alias and key counts, their own quota limits and usage (store/quota.py)."""
    rows = await conn.fetch(
        """SELECT u.id, u.address, u.display_name, u.disabled, u.created_at, d.name AS domain,
                  (SELECT count(*) FROM addresses a WHERE a.user_id = u.id AND NOT a.is_primary) AS aliases,
                  (SELECT count(*) FROM api_keys k WHERE k.user_id = u.id AND k.revoked_at IS NULL) AS keys,
                  u.quota_storage, u.quota_messages, u.quota_full_since AS full_since, q.storage_used, q.messages_used
             FROM users u JOIN domains d ON d.id = u.domain_id
             CROSS JOIN LATERAL (
                  SELECT coalesce(sum(b.message_bytes), 0)::bigint AS storage_used,
                         coalesce(sum(b.message_count), 0)::bigint AS messages_used
                    FROM mailboxes b WHERE b.user_id = u.id) AS q
            WHERE $1::text IS NULL OR d.name = $1
            ORDER BY u.address""",
        domain,
    )
    return [dict(r) for r in rows]


async def user_details(conn: Queryable, user_id: int) -> dict[str, Any]:
    """Addresses and folders (with message counts and sizes) of one user."""
    aliases = await conn.fetch(
        "SELECT address FROM addresses WHERE user_id = $1 AND NOT is_primary ORDER BY address", user_id
    )
    boxes = await conn.fetch(
        """SELECT b.name, b.special_use, count(m.id) AS messages, coalesce(sum(m.size), 0)::bigint AS bytes,
                  count(m.id) FILTER (WHERE NOT ('\\Seen' = ANY (m.flags))) AS unread
             FROM mailboxes b LEFT JOIN messages m ON m.mailbox_id = b.id
            WHERE b.user_id = $1 GROUP BY b.id ORDER BY b.id""",
        user_id,
    )
    return {"aliases": [r["address"] for r in aliases], "mailboxes": [dict(r) for r in boxes]}


async def remove_user(conn: Queryable, address: str) -> None:
    """Deletes the user with every folder, message, key and alias it owns."""
    deleted = await conn.fetchval("DELETE FROM users WHERE address = $1 RETURNING id", address)
    if deleted is None:
        raise NotFound(f"no such user: {address}")


async def add_alias(conn: asyncpg.Connection, alias: str, domain_id: int, user_id: int) -> None:
    row = await conn.fetchrow(
        """INSERT INTO addresses (address, domain_id, user_id) VALUES ($1, $2, $3)
           ON CONFLICT (address) DO NOTHING RETURNING id""",
        alias,
        domain_id,
        user_id,
    )
    if row is None:
        raise Conflict(f"address {alias} is already in use")


async def list_aliases(conn: Queryable, domain: str | None = None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT a.address AS alias, u.address AS target, a.created_at
             FROM addresses a JOIN users u ON u.id = a.user_id JOIN domains d ON d.id = a.domain_id
            WHERE NOT a.is_primary AND ($1::text IS NULL OR d.name = $1)
            ORDER BY a.address""",
        domain,
    )
    return [dict(r) for r in rows]


async def remove_alias(conn: Queryable, alias: str) -> None:
    row = await conn.fetchrow("SELECT is_primary FROM addresses WHERE address = $1", alias)
    if row is None:
        raise NotFound(f"no such alias: {alias}")
    if row["is_primary"]:
        raise Conflict(f"{alias} is a user's primary address, not an alias; use `relatectl user remove`")
    await conn.execute("DELETE FROM addresses WHERE address = $1 AND NOT is_primary", alias)


# Whether the user ``u`` has an active Sieve script, read with the recipient (a probe of a partial index), so
# that delivery asks for scripts only when one runs (relate/delivery.py).
_FILTERED = "EXISTS (SELECT 1 FROM sieve_scripts s WHERE s.user_id = u.id AND s.active) AS filtered"


async def resolve_recipient(conn: Queryable, address: str) -> dict[str, Any] | None:
    """The local user and INBOX an address delivers to, or None.

    Keys: user_id, address, inbox_id, the user's own quota limits (quota_storage, quota_messages:
    NULL follows the configured default, store/quota.py), and filtered: whether a Sieve script is active.
    """
    row = await conn.fetchrow(
        f"""SELECT u.id AS user_id, u.address, b.id AS inbox_id, u.quota_storage, u.quota_messages, {_FILTERED}
             FROM addresses a JOIN users u ON u.id = a.user_id
             JOIN mailboxes b ON b.user_id = u.id AND upper(b.name) = 'INBOX'
            WHERE a.address = $1 AND NOT u.disabled""",
        address,
    )
    return dict(row) if row else None


async def recipient_target(
    conn: Queryable, address: str, domain: str, quota_defaults: tuple[int, int] = (0, 0)
) -> dict[str, Any]:
    """:func:`resolve_recipient` and whether ``domain`` is hosted, in one query.

    Keys: user_id, inbox_id, the user's quota columns (quota_storage, quota_messages,
    quota_full_since) and, when a limit applies (the user's own, else ``quota_defaults``: storage,
    messages), ``used``: [bytes, messages] in all their mailboxes (store/quota.py), else None;
    filtered (a Sieve script is active); all None unless the address delivers to a local user; hosted.
    """
    row = await conn.fetchrow(
        f"""SELECT r.user_id, r.inbox_id, r.quota_storage, r.quota_messages, r.quota_full_since, r.used,
                  r.filtered, EXISTS (SELECT 1 FROM domains WHERE name = $2) AS hosted
             FROM (SELECT 1) AS one LEFT JOIN LATERAL (
                  SELECT u.id AS user_id, b.id AS inbox_id, u.quota_storage, u.quota_messages, u.quota_full_since,
                         {_FILTERED},
                         CASE WHEN coalesce(u.quota_storage, $3) > 0 OR coalesce(u.quota_messages, $4) > 0
                              THEN (SELECT ARRAY[coalesce(sum(o.message_bytes), 0), coalesce(sum(o.message_count), 0)]
                                      FROM mailboxes o WHERE o.user_id = u.id)::bigint[] END AS used
                    FROM addresses a JOIN users u ON u.id = a.user_id
                    JOIN mailboxes b ON b.user_id = u.id AND upper(b.name) = 'INBOX'
                   WHERE a.address = $1 AND NOT u.disabled LIMIT 1) AS r ON true""",
        address,
        domain,
        *quota_defaults,
    )
    return dict(row)


async def postmaster_target(conn: Queryable, domain: str | None) -> dict[str, Any] | None:
    """Who reads postmaster@``domain`` when no address claims it: the domain's first (enabled) user.

    ``domain`` None: the first hosted domain that has a user. Keys: user_id, inbox_id, domain,
    quota_storage, quota_messages, filtered; None when there is no such user.
    """
    row = await conn.fetchrow(
        f"""SELECT u.id AS user_id, b.id AS inbox_id, d.name AS domain, u.quota_storage, u.quota_messages,
                  {_FILTERED}
             FROM users u JOIN domains d ON d.id = u.domain_id
             JOIN mailboxes b ON b.user_id = u.id AND upper(b.name) = 'INBOX'
            WHERE NOT u.disabled AND ($1::text IS NULL OR d.name = $1)
            ORDER BY d.id, u.id LIMIT 1""",
        domain,
    )
    return None if row is None else dict(row)


async def special_mailbox(conn: Queryable, user_id: int, special_use: str) -> int | None:
    """The id of the user's folder with this special-use attribute (e.g. ``\\Sent``)."""
    found: int | None = await conn.fetchval(
        "SELECT id FROM mailboxes WHERE user_id = $1 AND special_use = $2 ORDER BY id LIMIT 1", user_id, special_use
    )
    return found


async def user_addresses(conn: Queryable, user_id: int) -> set[str]:
    """Every address (primary and aliases) the user may send as."""
    rows = await conn.fetch("SELECT address FROM addresses WHERE user_id = $1", user_id)
    return {r["address"] for r in rows}


async def inbox_id(conn: Queryable, user_id: int) -> int | None:
    found: int | None = await conn.fetchval(
        "SELECT id FROM mailboxes WHERE user_id = $1 AND upper(name) = 'INBOX'", user_id
    )
    return found


async def hosted_domains(conn: Queryable, names: list[str]) -> set[str]:
    """Which of ``names`` (lower case) are hosted here."""
    rows = await conn.fetch("SELECT name FROM domains WHERE name = ANY($1::text[])", names)
    return {r["name"] for r in rows}


async def junk_folders(conn: Queryable, user_ids: list[int]) -> dict[int, int]:
    """Each user's Junk folder (special-use \\Junk), by user id; users without one are left out."""
    rows = await conn.fetch(
        """SELECT DISTINCT ON (user_id) user_id, id FROM mailboxes
            WHERE user_id = ANY($1::bigint[]) AND special_use = '\\Junk' ORDER BY user_id, id""",
        user_ids,
    )
    return {r["user_id"]: r["id"] for r in rows}
