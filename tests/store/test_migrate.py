"""Schema migrations: applied once, in order, and a refusal to run on an old schema."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from relate.config import DatabaseConfig
from relate.errors import SchemaOutdated
from relate.store import db, migrate


async def test_new_database_is_refused_until_migrated(empty_dsn: str) -> None:
    """A process refuses an unmigrated database and names the fixing command."""
    with pytest.raises(SchemaOutdated, match="relatectl db migrate"):
        await db.create_pool(DatabaseConfig(dsn=empty_dsn))


async def test_migrate_applies_each_file_once(empty_dsn: str) -> None:
    """Migrating applies every shipped migration once; a second run applies none."""
    conn = await db.connect(DatabaseConfig(dsn=empty_dsn))
    try:
        ran = await migrate.migrate(conn)
        assert [m.version for m in ran] == [m.version for m in migrate.available()]
        assert await migrate.migrate(conn) == []
        assert await migrate.current_version(conn) == migrate.latest_version()
        tables = {
            r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    finally:
        await conn.close()
    assert {
        "domains",
        "users",
        "addresses",
        "api_keys",
        "mailboxes",
        "messages",
        "blobs",
        "outbound_emails",
        "outbound_recipients",
        "outbound_attachments",
        "push_subscriptions",
    } <= tables
    pool = await db.create_pool(DatabaseConfig(dsn=empty_dsn))
    await pool.close()


async def test_concurrent_migrators_apply_once(empty_dsn: str) -> None:
    """Two migrators started at once (two daemons booting) apply each migration exactly once."""
    conns = [await db.connect(DatabaseConfig(dsn=empty_dsn)) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate.migrate(c) for c in conns))
        assert sum(len(r) for r in results) == len(migrate.available())
    finally:
        for c in conns:
            await c.close()


async def test_newer_schema_is_refused(dsn: str) -> None:
    """A schema newer than the release (a downgrade) is refused with the reason."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (9999, 'future')")
    finally:
        await conn.close()
    with pytest.raises(SchemaOutdated, match="newer than this release"):
        await db.create_pool(DatabaseConfig(dsn=dsn))


async def test_a_skipped_migration_is_refused(pool: asyncpg.Pool) -> None:
    """A database missing one shipped migration (below its highest) is refused, naming the missing one."""
    victim = migrate.available()[-2].version
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM schema_migrations WHERE version = $1", victim)
        with pytest.raises(SchemaOutdated, match=f"missing {victim:04d}"):
            await migrate.check_current(conn)
