"""Migration 0042: mail stored before threads gets its threads afterwards, in short batches, and new mail
stored meanwhile (replies to old mail included) ends up in the same threads."""

from __future__ import annotations

import asyncpg

from relate.config import DatabaseConfig
from relate.store import db, messages, migrate, threads
from tests.support import make_message


async def _old_message(
    conn: asyncpg.Connection, box: int, uid: int, subject: str, msgid: str, refs: list[str], at: str
) -> int:
    """A message row as the code before 0042 stored it (no thread)."""
    found: int = await conn.fetchval(
        """INSERT INTO messages (mailbox_id, uid, modseq, size, blob_hash, envelope, bodystructure, header_end,
                                 subject, message_id, "references", internal_date)
           VALUES ($1, $2, 1, 3, '\\x01', '{}', '{}', 0, $3, $4, $5, $6::text::timestamptz) RETURNING id""",
        box,
        uid,
        subject,
        msgid,
        refs,
        at,
    )
    return found


async def test_old_mail_is_threaded_in_batches_after_the_migration(empty_dsn: str) -> None:
    """After 0042 old messages have no thread; thread_pending threads them a few per call (reply chains and
    subjects as at ingest, across folders), and a reply stored before the backfill reaches its parent
    shares the parent's thread."""
    conn = await db.connect(DatabaseConfig(dsn=empty_dsn))
    try:
        await migrate.migrate(conn, up_to=41)
        await conn.execute(
            """INSERT INTO domains (name) VALUES ('example.com');
               INSERT INTO users (domain_id, address) SELECT id, 'bob@example.com' FROM domains;
               INSERT INTO mailboxes (user_id, name) SELECT id, n FROM users, unnest(ARRAY['INBOX', 'Old']) n;
               INSERT INTO blobs (hash, size, data) VALUES ('\\x01', 3, 'abc');"""
        )
        inbox = await conn.fetchval("SELECT id FROM mailboxes WHERE name = 'INBOX'")
        old = await conn.fetchval("SELECT id FROM mailboxes WHERE name = 'Old'")
        a = await _old_message(conn, inbox, 1, "Budget", "<a@x>", [], "2026-01-01T10:00Z")
        b = await _old_message(conn, old, 1, "Re: Budget", "<b@x>", ["<a@x>"], "2026-01-02T10:00Z")
        lone = await _old_message(conn, inbox, 2, "Lunch", "<l@x>", [], "2026-01-03T10:00Z")
        c = await _old_message(conn, inbox, 3, "AW: budget", "<c@x>", [], "2026-01-04T10:00Z")
        far = await _old_message(conn, inbox, 4, "Budget", "<f@x>", [], "2026-03-01T10:00Z")
        await conn.execute("UPDATE mailboxes SET uidnext = 10, highestmodseq = 10")

        ran = await migrate.migrate(conn)
        assert 42 in [m.version for m in ran]
        assert await conn.fetchval("SELECT count(*) FROM messages WHERE thread_id IS NULL") == 5

        # New mail before the backfill: a reply to the old Lunch message.
        raw = make_message(subject="Re: Lunch", message_id="<n@x>", headers=("References: <l@x>",))
        (new,) = await messages.ingest(conn, raw, [inbox])

        batches = []
        while done := await threads.thread_pending(conn, limit=2):
            batches.append(done)
        assert batches == [2, 2, 1]
        rows = dict(await conn.fetch("SELECT id, thread_id FROM messages"))
        assert None not in rows.values()
        assert rows[a] == rows[b] == rows[c]  # References, then the subject within a week
        assert rows[lone] == rows[new.id]  # the reply stored first found by its parent's msg-id
        assert len({rows[a], rows[lone], rows[far]}) == 3  # Budget two months later is another thread
        owners = await conn.fetch("SELECT DISTINCT user_id FROM threads")
        assert len(owners) == 1
    finally:
        await conn.close()
