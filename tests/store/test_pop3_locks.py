"""The POP3 maildrop locks: one connection per process, exclusion in and across processes, loss and recovery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from relate.config import DatabaseConfig
from relate.store.pop3 import APPLICATION_NAME, MaildropLocks


@pytest.fixture
async def locks(dsn: str) -> AsyncIterator[MaildropLocks]:
    """A process's maildrop locks on the test's database."""
    held = MaildropLocks(DatabaseConfig(dsn=dsn))
    yield held
    await held.close()


async def lock_backends(pool: asyncpg.Pool) -> list[int]:
    rows = await pool.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
        APPLICATION_NAME,
    )
    return [r["pid"] for r in rows]


async def test_one_connection_for_every_lock(locks: MaildropLocks, pool: asyncpg.Pool) -> None:
    """A hundred maildrops locked by one process use one connection; each is refused a second time."""
    for mailbox in range(1, 101):
        assert await locks.acquire(mailbox, lambda: None)
    assert len(await lock_backends(pool)) == 1
    assert not await locks.acquire(7, lambda: None), "PostgreSQL's lock is re-entrant: this process must refuse"
    await locks.release(7)
    assert await locks.acquire(7, lambda: None)
    assert locks.held() == 100


async def test_two_processes_exclude_each_other(locks: MaildropLocks, dsn: str) -> None:
    """What one process holds, another cannot take until it is released."""
    other = MaildropLocks(DatabaseConfig(dsn=dsn))
    try:
        assert await locks.acquire(1, lambda: None)
        assert not await other.acquire(1, lambda: None)
        assert await other.acquire(2, lambda: None)
        await locks.release(1)
        assert await other.acquire(1, lambda: None)
    finally:
        await other.close()


async def test_lost_connection_tells_every_holder_and_comes_back(locks: MaildropLocks, pool: asyncpg.Pool) -> None:
    """The connection killed: each holder is told once, the locks are free, and the next acquire reconnects."""
    told: list[int] = []
    for mailbox in (1, 2, 3):
        assert await locks.acquire(mailbox, lambda m=mailbox: told.append(m))
    [backend] = await lock_backends(pool)
    await pool.execute("SELECT pg_terminate_backend($1)", backend)
    for _ in range(100):
        if len(told) == 3:
            break
        await asyncio.sleep(0.02)
    assert sorted(told) == [1, 2, 3]
    assert locks.held() == 0
    await locks.release(2)  # a holder that ends after the loss: nothing to do, nothing raised
    assert await locks.acquire(1, lambda: None)
    assert await lock_backends(pool) not in ([], [backend])
    assert sorted(told) == [1, 2, 3], "told once"


async def test_cancelled_acquire_leaks_no_lock(locks: MaildropLocks, dsn: str) -> None:
    """An acquire cancelled while its query is out drops the connection (telling the holders) rather than risk
    a lock the server took that nobody will release."""
    told: list[int] = []
    assert await locks.acquire(1, lambda: told.append(1))  # connected: the next acquire goes straight to the query
    task = asyncio.create_task(locks.acquire(2, lambda: None))
    await asyncio.sleep(0)  # the task runs until it waits for PostgreSQL's answer
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert told == [1]
    assert locks.held() == 0
    other = MaildropLocks(DatabaseConfig(dsn=dsn))
    try:
        for mailbox in (1, 2):
            for _ in range(100):  # the server ends the dropped connection's backend, and its locks, by itself
                if await other.acquire(mailbox, lambda: None):
                    break
                await asyncio.sleep(0.02)
        assert other.held() == 2, "neither maildrop is locked by the dropped connection"
    finally:
        await other.close()
