"""Migration 0033: the full-text vector of each indexed message moves to message_words; messages keep none."""

from __future__ import annotations

from relate.config import DatabaseConfig
from relate.store import db, migrate
from tests.store import premigration


async def test_indexed_words_move_out_of_messages(empty_dsn: str) -> None:
    """After 0033 an indexed message's words are found in message_words through its GIN index, a message not
    indexed yet has no row there (the indexer makes it), and messages has neither the column nor its index."""
    conn = await db.connect(DatabaseConfig(dsn=empty_dsn))
    try:
        await premigration.before(conn, 33)
        await conn.execute(
            """INSERT INTO messages (mailbox_id, uid, modseq, size, blob_hash, envelope, bodystructure, header_end,
                                     subject, search, text_indexed)
               SELECT b.id, g, 1, 3, '\\x01', '{}', '{}', 0, 'hello ' || g,
                      to_tsvector('simple', 'hello ' || g || CASE WHEN g < 3 THEN ' zebra' ELSE '' END), g < 3
                 FROM mailboxes b, generate_series(1, 3) g WHERE b.name = 'INBOX'"""
        )
        await premigration.apply(conn, 33)
        await conn.execute("SET enable_seqscan = off")
        found = await conn.fetch(
            """SELECT m.uid FROM message_words w JOIN messages m ON m.id = w.message_id
                WHERE w.words @@ websearch_to_tsquery('simple', 'zebra') ORDER BY m.uid"""
        )
        rows = await conn.fetchval("SELECT count(*) FROM message_words")
        left = await conn.fetchval(
            """SELECT count(*) FROM pg_attribute
                WHERE attrelid = 'messages'::regclass AND attname = 'search' AND NOT attisdropped"""
        )
        index = await conn.fetchval("SELECT to_regclass('messages_search_idx')")
    finally:
        await conn.close()
    assert [r["uid"] for r in found] == [1, 2]
    assert rows == 2
    assert left == 0
    assert index is None


async def test_0034_validates_the_key_without_stranded_words(empty_dsn: str) -> None:
    """0034 removes words whose message went while 0033 copied, validates the key (so expunging a message takes
    its words), drops the Message-ID index nothing reads, leaves the trigram text without the statistics that
    sent SEARCH TEXT past its indexes, and runs on a server without lz4 as well."""
    conn = await db.connect(DatabaseConfig(dsn=empty_dsn))
    try:
        await premigration.before(conn, 34)
        await conn.execute(
            """INSERT INTO messages (mailbox_id, uid, modseq, size, blob_hash, envelope, bodystructure, header_end)
               SELECT b.id, g, 1, 3, '\\x01', '{}', '{}', 0 FROM mailboxes b, generate_series(1, 2) g
                WHERE b.name = 'INBOX';
               INSERT INTO message_words (message_id, words) SELECT id, to_tsvector('simple', 'zebra') FROM messages;
               INSERT INTO message_texts (message_id, head, body) SELECT id, 'subject: zebra', 'zebra' FROM messages;
               ANALYZE message_texts"""
        )
        # As if a message had been expunged between 0033's copy and its key (which now refuses such a row).
        await conn.execute(
            """SET session_replication_role = replica;
               INSERT INTO message_words (message_id, words) VALUES (-1, to_tsvector('simple', 'zebra'));
               RESET session_replication_role"""
        )
        await premigration.apply(conn, 34)
        await conn.execute("ANALYZE message_texts")
        stats = await conn.fetchval(
            "SELECT count(*) FROM pg_stats WHERE tablename = 'message_texts' AND attname IN ('head', 'body')"
        )
        valid = await conn.fetchval(
            "SELECT convalidated FROM pg_constraint WHERE conname = 'message_words_message_id_fkey'"
        )
        await conn.execute("DELETE FROM messages WHERE uid = 1")
        left = await conn.fetchval("SELECT count(*) FROM message_words")
        index = await conn.fetchval("SELECT to_regclass('messages_message_id_idx')")
    finally:
        await conn.close()
    assert valid is True
    assert stats == 0
    assert left == 1
    assert index is None


async def test_0033_lets_writers_on_until_its_last_step(empty_dsn: str) -> None:
    """While 0033 copies, a flag change and an old indexer's work on messages go through without waiting, and
    what that indexer indexed meanwhile is in message_words once 0033 commits."""
    conn = await db.connect(DatabaseConfig(dsn=empty_dsn))
    other = await db.connect(DatabaseConfig(dsn=empty_dsn))
    try:
        await premigration.before(conn, 33)
        await conn.execute(
            """INSERT INTO messages (mailbox_id, uid, modseq, size, blob_hash, envelope, bodystructure, header_end,
                                     subject, search, text_indexed)
               SELECT b.id, g, 1, 3, '\\x01', '{}', '{}', 0, 'note ' || g, to_tsvector('simple', 'note ' || g), g = 1
                 FROM mailboxes b, generate_series(1, 2) g WHERE b.name = 'INBOX'"""
        )
        sql = next(m for m in migrate.available() if m.version == 33).sql
        copy, last = sql.split("LOCK TABLE messages", 1)
        async with conn.transaction():
            await conn.execute(copy)
            await other.execute("SET lock_timeout = '2s'")
            await other.execute("UPDATE messages SET flags = ARRAY['\\Seen'] WHERE uid = 1")
            # The old indexer (before 0033) adds the body's words to the vector of the message pending.
            await other.execute(
                """UPDATE messages SET search = search || to_tsvector('simple', 'okapi'), text_indexed = true
                    WHERE uid = 2"""
            )
            await conn.execute("LOCK TABLE messages" + last)
        found = await conn.fetch(
            """SELECT m.uid FROM message_words w JOIN messages m ON m.id = w.message_id
                WHERE w.words @@ websearch_to_tsquery('simple', 'okapi')"""
        )
        seen = await conn.fetchval("SELECT flags FROM messages WHERE uid = 1")
    finally:
        await other.close()
        await conn.close()
    assert [r["uid"] for r in found] == [2]
    assert seen == ["\\Seen"]
