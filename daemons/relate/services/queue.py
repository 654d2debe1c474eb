"""Queue administration, shared by relatectl (and later the API)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from relate.config import Config
from relate.errors import Invalid, NotFound
from relate.queue.worker import DeliveryWorker
from relate.store import queue as store

STATUSES = ("queued", "sending", "sent", "partial_failure", "failed", "held")


async def list_messages(pool: asyncpg.Pool, **filters: Any) -> list[dict[str, Any]]:
    statuses = filters.get("statuses")
    for status in statuses or ():
        if status not in STATUSES:
            raise Invalid(f"unknown status {status!r}: choose from {', '.join(STATUSES)}")
    return await store.list_messages(pool, **filters)


async def show(pool: asyncpg.Pool, email_id: int) -> dict[str, Any]:
    found = await store.show(pool, email_id)
    if found is None:
        raise NotFound(f"no queued message {email_id}")
    return found


async def ids_for(pool: asyncpg.Pool, *, domain: str | None = None, waiting_only: bool = True) -> list[int]:
    """Ids of every message still in the queue (optionally with a recipient at ``domain``)."""
    rows = await store.list_messages(
        pool, statuses=["queued", "sending", "held"] if waiting_only else None, domain=domain, limit=1_000_000
    )
    return [r["id"] for r in rows]


async def retry(pool: asyncpg.Pool, email_ids: Sequence[int]) -> int:
    async with pool.acquire() as conn, conn.transaction():
        return await store.retry(conn, email_ids, datetime.now(UTC))


async def hold(pool: asyncpg.Pool, email_ids: Sequence[int]) -> list[int]:
    return await store.hold(pool, email_ids, datetime.now(UTC))


async def release(pool: asyncpg.Pool, email_ids: Sequence[int]) -> list[int]:
    async with pool.acquire() as conn, conn.transaction():
        return await store.release(conn, email_ids, datetime.now(UTC))


async def fail(cfg: Config, pool: asyncpg.Pool, email_ids: Sequence[int]) -> int:
    """Fail every waiting recipient now; the senders get a DSN. Returns how many recipients failed."""
    return await DeliveryWorker(cfg, pool).fail_now(email_ids)


async def delete(pool: asyncpg.Pool, email_ids: Sequence[int]) -> list[int]:
    return await store.delete(pool, email_ids)
