"""A user's sender lists (allow, block): what the REST API and ``relatectl user allow|block`` share.

An entry is an address (``alice@example.org``) or a domain (``example.org``,
which covers its subdomains too); relate.spam.filter applies them to the
envelope sender and the From addresses of mail arriving for the user.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from relate.errors import Invalid, NotFound
from relate.mail.address import normalize_address, normalize_domain
from relate.services.accounts import get_user
from relate.store import spam


def normalize_pattern(text: str) -> str:
    """An entry as stored: an address or a domain, lower case; raises Invalid."""
    text = text.strip()
    if "@" in text:
        return normalize_address(text)
    try:
        return normalize_domain(text)
    except Invalid:
        raise Invalid(f"not an address or a domain name: {text[:100]!r}") from None


def view(rule: spam.SenderRule) -> dict[str, Any]:
    return {"id": rule.id, "pattern": rule.pattern, "kind": rule.kind, "createdAt": rule.created_at}


async def list_for(pool: asyncpg.Pool, user_id: int) -> list[dict[str, Any]]:
    return [view(r) for r in await spam.rules(pool, user_id)]


async def put(pool: asyncpg.Pool, user_id: int, pattern: str, kind: str) -> dict[str, Any]:
    """Put an entry on the user's allow or block list (moving it off the other); the entry."""
    if kind not in spam.KINDS:
        raise Invalid("kind must be allow or block")
    return view(await spam.set_rule(pool, user_id, normalize_pattern(pattern), kind))


async def remove(pool: asyncpg.Pool, user_id: int, pattern: str) -> None:
    """Take an entry off the user's lists; NotFound when it is on neither."""
    if not await spam.delete_rule(pool, user_id, pattern=normalize_pattern(pattern)):
        raise NotFound(f"{pattern} is on neither list")


async def user_id_of(pool: asyncpg.Pool, address: str) -> int:
    user = await get_user(pool, address)
    found: int = user["id"]
    return found
