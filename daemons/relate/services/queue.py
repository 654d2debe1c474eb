"""Queue administration, shared by relatectl (and later the API)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from relate.config import Config
from relate.errors import Invalid, NotFound
from relate.store import queue as store

STATUSES = ("queued", "sending", "sent", "partial_failure", "failed", "held", "deferred")


@dataclass
class Done:
    """What an action did: the messages it acted on, and why each other one asked for was left alone."""

    done: list[int]
    problems: dict[int, str] = field(default_factory=dict)
    recipients: int = 0  # fail: how many recipients failed


async def _done(pool: asyncpg.Pool, asked: Sequence[int], done: Sequence[int], why: Callable[[int, str], str]) -> Done:
    """``done`` with a problem for every id asked for and not done: unknown, or ``why(id, status)``."""
    acted = set(done)
    skipped = [i for i in asked if i not in acted]
    found = await store.statuses(pool, skipped) if skipped else {}
    problems = {i: why(i, found[i]) if i in found else f"no queued message {i}" for i in skipped}
    return Done(sorted(acted), problems)


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
    """Ids of every message still in the queue and not held (optionally with a recipient at ``domain``)."""
    rows = await store.list_messages(
        pool, statuses=["queued", "sending"] if waiting_only else None, domain=domain, limit=1_000_000
    )
    return [r["id"] for r in rows]


async def retry(pool: asyncpg.Pool, email_ids: Sequence[int]) -> Done:
    """Make the waiting recipients of these messages due now (a held message stays held: a problem)."""
    async with pool.acquire() as conn, conn.transaction():
        moved = await store.retry(conn, email_ids, datetime.now(UTC))

    def why(email_id: int, status: str) -> str:
        if status == "held":
            return f"message {email_id} is held: release it first (relatectl queue release {email_id})"
        return f"message {email_id} is {status}: nothing waiting to retry"

    return await _done(pool, email_ids, moved, why)


async def hold(pool: asyncpg.Pool, email_ids: Sequence[int]) -> Done:
    held = await store.hold(pool, email_ids, datetime.now(UTC))

    def why(email_id: int, status: str) -> str:
        if status == "held":
            return f"message {email_id} is already held"
        return f"message {email_id} is {status}: only mail waiting in the queue can be held"

    return await _done(pool, email_ids, held, why)


async def release(pool: asyncpg.Pool, email_ids: Sequence[int]) -> Done:
    async with pool.acquire() as conn, conn.transaction():
        released = await store.release(conn, email_ids, datetime.now(UTC))
    return await _done(pool, email_ids, released, lambda i, status: f"message {i} is {status}, not held")


async def fail(cfg: Config, pool: asyncpg.Pool, email_ids: Sequence[int]) -> Done:
    """Fail every waiting recipient now; the senders get a DSN."""
    from relate.queue.worker import DeliveryWorker  # the delivery daemon's code: only this command needs it

    failed = await DeliveryWorker(cfg, pool).fail_now(email_ids)
    done = await _done(
        pool, email_ids, [f.email_id for f in failed], lambda i, status: f"message {i} is {status}: nothing to fail"
    )
    done.recipients = len(failed)
    return done


async def delete(pool: asyncpg.Pool, email_ids: Sequence[int]) -> Done:
    deleted = await store.delete(pool, email_ids)
    return await _done(pool, email_ids, deleted, lambda i, status: f"message {i} is {status}: not deleted, try again")
