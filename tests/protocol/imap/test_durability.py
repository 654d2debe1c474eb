"""What APPEND, COPY and MOVE acknowledge survives a crash of PostgreSQL right after the OK.

They commit synchronously: PostgreSQL has flushed the commit before the OK. (Not asynchronously with a
wait for the flush afterwards: other sessions would see the new UIDs before they are on disk, and a crash
in between would give those UIDs to other messages, which IMAP forbids.) Here the database is a durable
cluster of the test's own (the shared one runs without fsync), its WAL writer asleep for 10 s, so nothing
reaches the WAL files unless a commit asks for it; it is killed with an immediate shutdown (shared memory
and the WAL buffers in it lost, as in a power cut after the OK).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from relate.runtime.embedded_pg import EmbeddedPostgres
from relate.store import migrate

from .conftest import Imap
from .helpers import Lit, make_message


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[EmbeddedPostgres]:
    """A durable cluster of the test's own, its WAL writer asleep."""
    pg = EmbeddedPostgres(tmp_path / "pgdata")
    conn = await asyncpg.connect(await asyncio.to_thread(pg.start))
    try:
        await conn.execute("ALTER SYSTEM SET wal_writer_delay = '10s'")
        await conn.execute("ALTER SYSTEM SET wal_writer_flush_after = '1GB'")
        await conn.execute("SELECT pg_reload_conf()")
        await migrate.migrate(conn)
    finally:
        await conn.close()
    try:
        yield pg
    finally:
        await asyncio.to_thread(pg.stop)


@pytest.fixture
async def dsn(cluster: EmbeddedPostgres) -> str:
    """The imap fixture's database: the test's own crashable cluster."""
    return await asyncio.to_thread(cluster.start)  # running already: its DSN


async def _count(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT x.name, count(m.id) AS n
                 FROM mailboxes x LEFT JOIN messages m ON m.mailbox_id = x.id GROUP BY x.name"""
        )
    finally:
        await conn.close()
    return {r["name"]: r["n"] for r in rows}


async def test_appended_copied_and_moved_messages_survive_a_database_crash(
    imap: Imap, cluster: EmbeddedPostgres
) -> None:
    """Every APPEND, COPY and MOVE that was answered OK is there after PostgreSQL is killed and restarted."""
    client = await imap.connect()
    await client.ok("CREATE Projects")
    await client.ok("CREATE Kept")
    for n in range(12):
        await client.ok("APPEND INBOX ", Lit(make_message(subject=f"message {n}")))
    await client.ok("SELECT INBOX")
    await client.ok("UID COPY 1:4 Projects")
    await client.ok("UID MOVE 5:6 Kept")
    # The last OK is answered: PostgreSQL dies now, before its WAL writer would have written anything.
    await asyncio.to_thread(cluster.stop, immediate=True)
    await client.close()
    dsn = await asyncio.to_thread(cluster.start)
    counts = await _count(dsn)
    assert (counts["INBOX"], counts["Projects"], counts["Kept"]) == (10, 4, 2)
