"""The process pool (store/db.py): connections go back at once, clean, and a held transaction never leaks."""

from __future__ import annotations

import asyncio
import collections

import asyncpg
import pytest

from relate.config import DatabaseConfig
from relate.store import db


async def test_released_connection_is_reused_without_a_task(pool: asyncpg.Pool) -> None:
    """A connection released outside a transaction is free again before release() returns, and works."""
    async with pool.acquire() as conn:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
    assert pool.get_idle_size() == pool.get_size()
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT pg_backend_pid()") == pid  # the same connection, free again


async def test_release_inside_a_transaction_rolls_it_back(pool: asyncpg.Pool) -> None:
    """A connection given back with a transaction open has it rolled back: nothing of it is kept."""
    await pool.execute("CREATE TABLE pool_probe (n int)")
    conn = await pool.acquire()
    await conn.execute("BEGIN")
    await conn.execute("INSERT INTO pool_probe VALUES (1)")
    await pool.release(conn)
    assert await pool.fetchval("SELECT count(*) FROM pool_probe") == 0
    async with pool.acquire() as again:
        assert not again.is_in_transaction()


async def test_listener_left_behind_is_dropped(pool: asyncpg.Pool) -> None:
    """A listener callback left on a released connection is dropped, so it never hears a later user's NOTIFY."""
    heard: list[str] = []
    conn = await pool.acquire()
    await conn.add_listener("pool_probe", lambda *args: heard.append(args[-1]))
    with pytest.warns(asyncpg.InterfaceWarning, match="listener"):  # asyncpg warns of the one left behind
        await pool.release(conn)
    async with pool.acquire() as again:
        await again.execute("LISTEN pool_probe")
        await again.execute("NOTIFY pool_probe, 'x'")
        await again.execute("UNLISTEN pool_probe")
    await asyncio.sleep(0.05)
    assert heard == []


async def test_full_pool_still_times_out(dsn: str) -> None:
    """With every connection held, acquire() gives up after database.acquire_timeout (TimeoutError)."""
    pool = await db.create_pool(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=1, acquire_timeout=0.2))
    try:
        held = await pool.acquire()
        with pytest.raises(TimeoutError):
            async with pool.acquire():
                pass
        await pool.release(held)
        async with pool.acquire() as conn:  # free again once released
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await pool.close()


async def test_a_waiting_caller_comes_before_the_releaser_again(dsn: str) -> None:
    """With one connection, a caller waiting for it gets it before the one who released it can take it back."""
    pool = await db.create_pool(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=1, acquire_timeout=5))
    order: list[str] = []

    async def waiter() -> None:
        async with pool.acquire():
            order.append("waiter")

    try:
        held = await pool.acquire()
        waiting = asyncio.create_task(waiter())
        await asyncio.sleep(0.05)  # it is waiting for the one connection
        await pool.release(held)
        async with pool.acquire():
            order.append("releaser")
        await waiting
    finally:
        await pool.close()
    assert order == ["waiter", "releaser"]


def test_asyncpg_internals_the_pool_relies_on() -> None:
    """The private asyncpg members db.Pool's acquire and release use are there (adapt them on an upgrade)."""
    holder = set(asyncpg.pool.PoolConnectionHolder.__slots__)
    assert {"_pool", "_in_use", "_max_queries", "_generation", "_timeout"} <= holder
    assert callable(asyncpg.pool.PoolConnectionHolder._release)
    assert callable(asyncpg.pool.PoolConnectionHolder._setup_inactive_callback)
    assert {"_listeners", "_log_listeners", "_top_xact", "_protocol"} <= set(asyncpg.Connection.__slots__)
    assert callable(asyncpg.Connection._on_release)
    protocol = asyncpg.protocol.protocol.BaseProtocol
    assert all(hasattr(protocol, name) for name in ("is_in_transaction", "_is_cancelling", "queries_count"))
    assert "_queue" in asyncpg.Pool.__slots__
    assert isinstance(asyncio.Queue()._getters, collections.deque)  # type: ignore[attr-defined]
