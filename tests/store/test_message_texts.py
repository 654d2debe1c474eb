"""Migration 0032: the indexer's text of each indexed message moves to message_texts; messages keep none."""

from __future__ import annotations

from relate.config import DatabaseConfig
from relate.store import db
from tests.store import premigration


async def test_indexed_text_moves_out_of_messages(empty_dsn: str) -> None:
    """An indexed message's header and body text are in message_texts after 0032, and what SEARCH BODY asks of
    the trigram index finds it there; a message not indexed yet gets no row (the indexer makes it)."""
    conn = await db.connect(DatabaseConfig(dsn=empty_dsn))
    try:
        await premigration.before(conn, 32)
        await conn.execute(
            """INSERT INTO messages (mailbox_id, uid, modseq, size, blob_hash, envelope, bodystructure, header_end,
                                     search, text_indexed, search_head, search_body)
               SELECT b.id, g, 1, 3, '\\x01', '{}', '{}', 0, '', g < 3,
                      CASE WHEN g < 3 THEN 'subject: hello ' || g END, CASE WHEN g < 3 THEN 'zebra body ' || g END
                 FROM mailboxes b, generate_series(1, 3) g WHERE b.name = 'INBOX'"""
        )
        await premigration.apply(conn, 32)
        rows = await conn.fetch(
            """SELECT m.uid, t.head, t.body FROM messages m LEFT JOIN message_texts t ON t.message_id = m.id
                ORDER BY m.uid"""
        )
        found = await conn.fetchval("SELECT count(*) FROM message_texts WHERE body LIKE '%zebra body 2%'")
        columns = await conn.fetchval(
            """SELECT count(*) FROM information_schema.columns
                WHERE table_name = 'messages' AND column_name IN ('search_head', 'search_body')"""
        )
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [
        (1, "subject: hello 1", "zebra body 1"),
        (2, "subject: hello 2", "zebra body 2"),
        (3, None, None),
    ]
    assert found == 1
    assert columns == 0
