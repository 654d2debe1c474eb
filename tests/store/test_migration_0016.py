"""Migration 0016: subscribed mailboxes become subscriptions by name; messages stored before it are not \\Recent."""

from __future__ import annotations

from relate.config import DatabaseConfig
from relate.store import db, migrate


async def test_subscribed_mailboxes_become_subscriptions(empty_dsn: str) -> None:
    """Each mailbox marked subscribed before 0016 is a subscription after it (INBOX spelt INBOX); the column goes.

    And every UID given out before counts as taken (recent_uid = uidnext - 1): no old message becomes \\Recent.
    """
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
            "INSERT INTO mailboxes (user_id, name, subscribed, uidnext) VALUES ($1, $2, $3, $4)",
            [
                (users[0], "Inbox", True, 7),
                (users[0], "Work", True, 1),
                (users[0], "Work/Old", False, 3),
                (users[1], "INBOX", False, 1),
                (users[1], "Lists", True, 2),
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
        recent = {r["name"]: r["recent_uid"] for r in await conn.fetch("SELECT name, recent_uid FROM mailboxes")}
        assert recent == {"Inbox": 6, "Work": 0, "Work/Old": 2, "INBOX": 0, "Lists": 1}
    finally:
        await conn.close()
