"""Migration 0016: the subscribed mailboxes of a database before it become subscriptions by name."""

from __future__ import annotations

from relate.config import DatabaseConfig
from relate.store import db, migrate


async def test_subscribed_mailboxes_become_subscriptions(empty_dsn: str) -> None:
    """Each mailbox marked subscribed before 0016 is a subscription after it (INBOX spelt INBOX); the column goes."""
    conn = await db.connect(DatabaseConfig(dsn=empty_dsn))
    try:
        for mig in migrate.available():
            if mig.version < 16:
                async with conn.transaction():
                    await conn.execute(mig.sql)
        domain = await conn.fetchval("INSERT INTO domains (name) VALUES ('example.com') RETURNING id")
        users = [
            await conn.fetchval("INSERT INTO users (domain_id, address) VALUES ($1, $2) RETURNING id", domain, a)
            for a in ("bob@example.com", "alice@example.com")
        ]
        await conn.executemany(
            "INSERT INTO mailboxes (user_id, name, subscribed) VALUES ($1, $2, $3)",
            [
                (users[0], "Inbox", True),
                (users[0], "Work", True),
                (users[0], "Work/Old", False),
                (users[1], "INBOX", False),
                (users[1], "Lists", True),
            ],
        )
        (sql,) = [m.sql for m in migrate.available() if m.version == 16]
        async with conn.transaction():
            await conn.execute(sql)
        rows = await conn.fetch("SELECT user_id, name FROM subscriptions ORDER BY user_id, name")
        assert [(r["user_id"], r["name"]) for r in rows] == [
            (users[0], "INBOX"),
            (users[0], "Work"),
            (users[1], "Lists"),
        ]
        columns = await conn.fetch("SELECT column_name FROM information_schema.columns WHERE table_name = 'mailboxes'")
        assert "subscribed" not in {c["column_name"] for c in columns}
    finally:
        await conn.close()
