"""Use cases for users' Sieve scripts, shared by relatectl (and, later, ManageSieve and the REST API).

A script is compiled before it is stored, with the configured limits, so a
user learns of a fault (its line and column) when saving, not when mail
arrives.
"""

from __future__ import annotations

import asyncpg

from relate.config import SieveConfig
from relate.errors import Invalid
from relate.services import accounts
from relate.sieve import SieveError, compile_script
from relate.store import sieve as store
from relate.store.sieve import ScriptInfo

MAX_NAME = 255


def check(text: str | bytes, cfg: SieveConfig | None = None) -> None:
    """Invalid (naming the line and column) unless the script compiles."""
    try:
        compile_script(text, cfg)
    except SieveError as exc:
        raise Invalid(str(exc)) from None


def _name(name: str) -> str:
    if not name or len(name) > MAX_NAME or any(ord(c) < 0x20 or c == "\x7f" for c in name):
        raise Invalid("a script name is 1 to 255 characters, no control characters")
    return name


async def put(
    pool: asyncpg.Pool, address: str, name: str, text: str, cfg: SieveConfig | None = None, *, activate: bool = False
) -> None:
    """Store (or replace) the user's script ``name`` once it compiles; with ``activate``, make it the active one."""
    user = await accounts.get_user(pool, address)
    check(text, cfg)
    async with pool.acquire() as conn, conn.transaction():
        await store.put_script(conn, user["id"], _name(name), text)
        if activate:
            await store.activate(conn, user["id"], name)


async def activate(pool: asyncpg.Pool, address: str, name: str | None) -> None:
    """Make ``name`` the user's active script; None: none is (mail is filed into INBOX unfiltered)."""
    user = await accounts.get_user(pool, address)
    async with pool.acquire() as conn:
        await store.activate(conn, user["id"], name)


async def list_scripts(pool: asyncpg.Pool, address: str) -> list[ScriptInfo]:
    user = await accounts.get_user(pool, address)
    return await store.list_scripts(pool, user["id"])


async def get(pool: asyncpg.Pool, address: str, name: str) -> str:
    user = await accounts.get_user(pool, address)
    return await store.get_script(pool, user["id"], name)


async def delete(pool: asyncpg.Pool, address: str, name: str) -> None:
    user = await accounts.get_user(pool, address)
    await store.delete_script(pool, user["id"], name)
