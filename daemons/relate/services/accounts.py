"""Use cases for domains, users, aliases and keys, shared by relatectl and the API.

Inputs are validated and normalized here (addresses lower-cased, scopes
checked); the store only runs SQL.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from relate import auth
from relate.config import AuthConfig, QuotaConfig, SendingLimitsConfig
from relate.errors import Conflict, Invalid, NotFound
from relate.mail.address import normalize_address, normalize_domain, split_address
from relate.store import accounts, keys, quota, sending

# Far enough for "never" in practice; beyond it a date is more likely a typo.
MAX_KEY_LIFETIME = timedelta(days=3660)


async def add_domain(pool: asyncpg.Pool, name: str) -> dict[str, Any]:
    return await accounts.add_domain(pool, normalize_domain(name))


async def remove_domain(pool: asyncpg.Pool, name: str) -> None:
    async with pool.acquire() as conn:
        await accounts.remove_domain(conn, normalize_domain(name))


async def list_domains(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    return await accounts.list_domains(pool)


async def _hosted_domain(pool: asyncpg.Pool, address: str) -> tuple[str, dict[str, Any]]:
    normalized = normalize_address(address)
    _, domain_name = split_address(normalized)
    domain = await accounts.get_domain(pool, domain_name)
    if domain is None:
        raise NotFound(f"domain {domain_name} is not hosted here: add it with `relatectl domain add {domain_name}`")
    return normalized, domain


async def add_user(pool: asyncpg.Pool, address: str, display_name: str | None = None) -> dict[str, Any]:
    normalized, domain = await _hosted_domain(pool, address)
    async with pool.acquire() as conn:
        return await accounts.add_user(conn, domain["id"], normalized, display_name)


async def list_users(
    pool: asyncpg.Pool, domain: str | None = None, quota_cfg: QuotaConfig | None = None
) -> list[dict[str, Any]]:
    """Users with alias and key counts and their quota (``quota``: :func:`quota_view`)."""
    cfg = quota_cfg or QuotaConfig()
    rows = await accounts.list_users(pool, normalize_domain(domain) if domain else None)
    for row in rows:
        limits = quota.Limits.of(row.pop("quota_storage"), row.pop("quota_messages"), cfg)
        usage = quota.Usage(row["id"], row.pop("storage_used"), row.pop("messages_used"), limits, row.pop("full_since"))
        row["quota"] = quota_view(usage)
    return rows


async def get_user(pool: asyncpg.Pool, address: str) -> dict[str, Any]:
    user = await accounts.get_user(pool, normalize_address(address))
    if user is None:
        raise NotFound(f"no such user: {address}")
    return user


async def show_user(pool: asyncpg.Pool, address: str, quota_cfg: QuotaConfig | None = None) -> dict[str, Any]:
    user = await get_user(pool, address)
    user.update(await accounts.user_details(pool, user["id"]))
    user["keys"] = await keys.list_for(pool, user["id"], include_revoked=False)
    user["quota"] = await user_quota(pool, user["id"], quota_cfg or QuotaConfig())
    return user


def quota_view(usage: quota.Usage) -> dict[str, Any]:
    """A user's quota as relatectl and the API show it: usage and limits (None: no limit), bytes and messages."""
    return {
        "storage": {"used": usage.storage, "limit": usage.limits.storage},
        "messages": {"used": usage.messages, "limit": usage.limits.messages},
        "full": usage.full,
        "full_since": usage.full_since,
    }


async def user_quota(pool: asyncpg.Pool, user_id: int, cfg: QuotaConfig) -> dict[str, Any]:
    """:func:`quota_view` of one user."""
    found = await quota.usage(pool, [user_id], cfg)
    if user_id not in found:
        raise NotFound("no such user")
    return quota_view(found[user_id])


# What `relatectl user quota` may set for each resource: a limit, NO_LIMIT, or None (the configured default).
NO_LIMIT = 0


async def set_quota(pool: asyncpg.Pool, address: str, changes: dict[str, int | None]) -> dict[str, Any]:
    """Set a user's own limits (``changes``: ``storage`` in bytes and/or ``messages``, each a limit,
    NO_LIMIT, or None to follow the configured default); the full-since clock starts afresh."""
    unknown = set(changes) - {"storage", "messages"}
    if unknown:
        raise Invalid(f"unknown quota resource: {', '.join(sorted(unknown))}")
    for name, value in changes.items():
        if value is not None and value < 0:
            raise Invalid(f"a {name} limit cannot be negative")
    user = await get_user(pool, address)
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT quota_storage, quota_messages FROM users WHERE id = $1 FOR UPDATE", user["id"]
        )
        if row is None:
            raise NotFound(f"no such user: {address}")
        storage = changes["storage"] if "storage" in changes else row["quota_storage"]
        messages = changes["messages"] if "messages" in changes else row["quota_messages"]
        await quota.set_limits(conn, user["id"], storage, messages)
    return {"address": user["address"], "own_storage": storage, "own_messages": messages}


async def set_sending_limits(pool: asyncpg.Pool, address: str, changes: dict[str, int | None]) -> None:
    """Set a user's own sending limits (``changes``: ``messages`` and/or ``recipients`` per day, each a
    limit, NO_LIMIT, or None to follow the configured default; store/sending.py)."""
    unknown = set(changes) - {sending.MESSAGES, sending.RECIPIENTS}
    if unknown:
        raise Invalid(f"unknown sending limit: {', '.join(sorted(unknown))}")
    for name, value in changes.items():
        if value is not None and not 0 <= value < 2**31:
            raise Invalid(f"a {name} limit must be 0 (none) or a number up to {2**31 - 1}")
    user = await get_user(pool, address)
    async with pool.acquire() as conn, conn.transaction():
        own = await sending.own_limits(conn, user["id"], lock=True)
        if own is None:
            raise NotFound(f"no such user: {address}")
        messages = changes[sending.MESSAGES] if sending.MESSAGES in changes else own[0]
        recipients = changes[sending.RECIPIENTS] if sending.RECIPIENTS in changes else own[1]
        await sending.set_limits(conn, user["id"], messages, recipients)


async def sending_view(pool: asyncpg.Pool, address: str, cfg: SendingLimitsConfig) -> dict[str, Any]:
    """A user's sending in the last 24 hours against the limits in force (None: no limit), and whether
    each limit is the user's own or the configured default."""
    user = await get_user(pool, address)
    own = await sending.own_limits(pool, user["id"])
    if own is None:
        raise NotFound(f"no such user: {address}")
    used = await sending.usage(pool, user["id"])
    defaults = (cfg.messages_per_day, cfg.recipients_per_day)
    view: dict[str, Any] = {"address": user["address"]}
    for name, mine, default, count in zip((sending.MESSAGES, sending.RECIPIENTS), own, defaults, used, strict=True):
        limit = default if mine is None else mine
        view[name] = {"used": count, "limit": limit or None, "own": mine is not None}
    return view


async def remove_user(pool: asyncpg.Pool, address: str) -> None:
    """Remove a user by its primary address; an alias is refused, never followed."""
    normalized = normalize_address(address)
    user = await get_user(pool, normalized)
    if user["address"] != normalized:
        raise Conflict(f"{normalized} is an alias of {user['address']}: remove the alias with `relatectl alias remove`")
    await accounts.remove_user(pool, normalized)


async def add_alias(pool: asyncpg.Pool, alias: str, target: str) -> None:
    normalized, domain = await _hosted_domain(pool, alias)
    user = await get_user(pool, target)
    async with pool.acquire() as conn:
        await accounts.add_alias(conn, normalized, domain["id"], user["id"])


async def list_aliases(pool: asyncpg.Pool, domain: str | None = None) -> list[dict[str, Any]]:
    return await accounts.list_aliases(pool, normalize_domain(domain) if domain else None)


async def remove_alias(pool: asyncpg.Pool, alias: str) -> None:
    await accounts.remove_alias(pool, normalize_address(alias))


async def create_key(
    pool: asyncpg.Pool,
    address: str,
    name: str,
    scopes: str | list[str],
    *,
    expires_at: datetime | None = None,
    rounds: int = AuthConfig.bcrypt_rounds,
) -> tuple[str, dict[str, Any]]:
    """(the key, shown once; its stored record without secret). An expiry must lie ahead, within
    ``MAX_KEY_LIFETIME``."""
    user = await get_user(pool, address)
    scope_list = auth.parse_scopes(scopes)
    if not name.strip():
        raise Invalid("a key needs a name")
    if expires_at is not None:
        now = datetime.now(UTC)
        if expires_at <= now:
            raise Invalid(
                f"the expiry {expires_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC is in the past: a key must expire later"
            )
        if expires_at > now + MAX_KEY_LIFETIME:
            raise Invalid("the expiry is too far ahead (10 years at most; no expiry is allowed)")
    key, prefix, hashed = await asyncio.to_thread(auth.new_key, rounds)
    row = await keys.insert(pool, user["id"], name.strip(), prefix, hashed, scope_list, expires_at)
    row["user"] = user["address"]
    return key, row


async def list_keys(pool: asyncpg.Pool, address: str | None, *, include_revoked: bool = False) -> list[dict[str, Any]]:
    user_id = (await get_user(pool, address))["id"] if address else None
    return await keys.list_for(pool, user_id, include_revoked=include_revoked)


async def list_user_keys(pool: asyncpg.Pool, user_id: int) -> list[dict[str, Any]]:
    """The user's keys that are not revoked (expired ones included), oldest first."""
    return await keys.list_for(pool, user_id, include_revoked=False)


async def revoke_key(pool: asyncpg.Pool, key_id: int, *, user_id: int | None = None) -> bool:
    """Revoke a key; with ``user_id``, only that user's (another user's key is NotFound, like a missing one)."""
    if user_id is not None:
        await get_user_key(pool, user_id, key_id)
    return await keys.revoke(pool, key_id)


async def get_user_key(pool: asyncpg.Pool, user_id: int, key_id: int) -> dict[str, Any]:
    """One key of the user (revoked ones included); NotFound for another user's key."""
    row = await keys.get(pool, key_id)
    if row["user_id"] != user_id:
        raise NotFound(f"no such key: {key_id}")
    return row


async def rotate_key(
    pool: asyncpg.Pool, key_id: int, *, rounds: int = AuthConfig.bcrypt_rounds, user_id: int | None = None
) -> tuple[str, dict[str, Any]]:
    """A new key with the old one's user, name, scopes and expiry; the old one is revoked.

    With ``user_id``, only that user's key (another user's is NotFound).
    """
    old = await get_user_key(pool, user_id, key_id) if user_id is not None else await keys.get(pool, key_id)
    if old["revoked_at"] is not None:
        raise Conflict(f"key {key_id} is revoked; create a new one instead")
    if old["expires_at"] is not None and old["expires_at"] <= datetime.now(UTC):
        # The new key would take the old one's expiry, already past: refused, as create_key refuses one.
        raise Conflict(f"key {key_id} has expired; create a new one instead")
    key, prefix, hashed = await asyncio.to_thread(auth.new_key, rounds)
    async with pool.acquire() as conn, conn.transaction():
        if not await keys.revoke(conn, key_id):
            raise Conflict(f"key {key_id} was revoked meanwhile")
        row = await keys.insert(
            conn, old["user_id"], old["name"], prefix, hashed, list(old["scopes"]), old["expires_at"]
        )
    row["user"] = old["user"]
    return key, row
