"""A database as it stood before one migration, for tests of what that migration does to existing data."""

from __future__ import annotations

import asyncpg

from relate.store import migrate


async def before(conn: asyncpg.Connection, version: int) -> None:
    """Apply the migrations below ``version`` and add bob@example.com with folders INBOX, Old and Empty and one
    3-octet blob (hash ``\\x01``) that the test's messages may point at."""
    for mig in migrate.available():
        if mig.version < version:
            await conn.execute(mig.sql)
    await conn.execute(
        """INSERT INTO domains (name) VALUES ('example.com');
           INSERT INTO users (domain_id, address) SELECT id, 'bob@example.com' FROM domains;
           INSERT INTO mailboxes (user_id, name) SELECT id, n FROM users, unnest(ARRAY['INBOX', 'Old', 'Empty']) n;
           INSERT INTO blobs (hash, size, data) VALUES ('\\x01', 3, 'abc');"""
    )


async def apply(conn: asyncpg.Connection, version: int) -> None:
    """Apply migration ``version`` itself."""
    await conn.execute(next(m for m in migrate.available() if m.version == version).sql)
