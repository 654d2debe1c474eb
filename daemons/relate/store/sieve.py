"""Sieve scripts (one active per user), the duplicate test's memory, and the recorded sending actions.

The SQL of relate/sieve/ (migration 0048). Script text is stored as the user
wrote it; it is compiled when stored (the caller's check) and again, cached,
when a delivery runs it (relate/sieve/filing.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from relate.errors import NotFound
from relate.store.db import Queryable


@dataclass(frozen=True)
class ActiveScript:
    user_id: int
    script_id: int
    name: str
    text: str
    updated_at: datetime


@dataclass(frozen=True)
class ScriptInfo:
    name: str
    active: bool
    size: int
    updated_at: datetime


async def active_scripts(conn: Queryable, user_ids: Sequence[int]) -> dict[int, ActiveScript]:
    """The active script of each of the users that has one (one query, through the partial index)."""
    if not user_ids:
        return {}
    rows = await conn.fetch(
        "SELECT user_id, id, name, script, updated_at FROM sieve_scripts WHERE user_id = ANY($1::bigint[]) AND active",
        list(user_ids),
    )
    return {r["user_id"]: ActiveScript(r["user_id"], r["id"], r["name"], r["script"], r["updated_at"]) for r in rows}


async def put_script(conn: Queryable, user_id: int, name: str, text: str) -> None:
    """Store (or replace) the script ``name``; whether it is active does not change."""
    await conn.execute(
        """INSERT INTO sieve_scripts (user_id, name, script) VALUES ($1, $2, $3)
           ON CONFLICT (user_id, name) DO UPDATE SET script = EXCLUDED.script, updated_at = now()""",
        user_id,
        name,
        text,
    )


async def activate(conn: asyncpg.Connection, user_id: int, name: str | None) -> None:
    """Make ``name`` the active script (None: none is); NotFound if the user has no such script."""
    async with conn.transaction():
        await conn.execute("UPDATE sieve_scripts SET active = false WHERE user_id = $1 AND active", user_id)
        if name is None:
            return
        found = await conn.fetchval(
            "UPDATE sieve_scripts SET active = true WHERE user_id = $1 AND name = $2 RETURNING id", user_id, name
        )
        if found is None:
            raise NotFound(f"no script {name!r}")


async def list_scripts(conn: Queryable, user_id: int) -> list[ScriptInfo]:
    rows = await conn.fetch(
        """SELECT name, active, octet_length(script) AS size, updated_at FROM sieve_scripts
            WHERE user_id = $1 ORDER BY name""",
        user_id,
    )
    return [ScriptInfo(r["name"], r["active"], r["size"], r["updated_at"]) for r in rows]


async def get_script(conn: Queryable, user_id: int, name: str) -> str:
    text: str | None = await conn.fetchval(
        "SELECT script FROM sieve_scripts WHERE user_id = $1 AND name = $2", user_id, name
    )
    if text is None:
        raise NotFound(f"no script {name!r}")
    return text


async def delete_script(conn: Queryable, user_id: int, name: str) -> None:
    done = await conn.fetchval("DELETE FROM sieve_scripts WHERE user_id = $1 AND name = $2 RETURNING id", user_id, name)
    if done is None:
        raise NotFound(f"no script {name!r}")


def _id_hash(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


async def duplicate_seen(conn: Queryable, user_id: int, handle: str, value: str) -> bool:
    """RFC 7352: whether ``value`` was tracked under ``handle`` for the user and has not expired."""
    found: bool = await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM sieve_duplicates
                           WHERE user_id = $1 AND handle = $2 AND id_hash = $3 AND expires_at > now())""",
        user_id,
        handle,
        _id_hash(value),
    )
    return found


async def remember_duplicates(conn: Queryable, user_id: int, tracked: Sequence[tuple[str, str, int]]) -> None:
    """Track (handle, value, seconds) ids; a value tracked again gets the new expiry (RFC 7352 §3.3 :last)."""
    if not tracked:
        return
    await conn.execute(
        """INSERT INTO sieve_duplicates (user_id, handle, id_hash, expires_at)
           SELECT $1, h, i, now() + make_interval(secs => s)
             FROM unnest($2::text[], $3::bytea[], $4::int[]) AS t (h, i, s)
           ON CONFLICT (user_id, handle, id_hash) DO UPDATE SET expires_at = EXCLUDED.expires_at""",
        user_id,
        [h for h, _, _ in tracked],
        [_id_hash(v) for _, v, _ in tracked],
        [s for _, _, s in tracked],
    )


async def record_action(
    conn: Queryable,
    user_id: int,
    kind: str,
    detail: dict[str, Any],
    *,
    mail_from: str,
    rcpt_to: str,
    blob_hash: bytes | None,
    message_id: str | None,
) -> None:
    """A redirect, reject, ereject or vacation a run took, for the sending side to carry out."""
    await conn.execute(
        """INSERT INTO sieve_actions (user_id, kind, detail, mail_from, rcpt_to, blob_hash, message_id)
           VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7)""",
        user_id,
        kind,
        json.dumps(detail),
        mail_from,
        rcpt_to,
        blob_hash,
        message_id,
    )
