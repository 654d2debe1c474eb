-- The second half of 0033's upgrade, and storage that nothing used (issue 14), in a transaction of its own
-- that blocks no delivery, flag change or expunge for longer than a catalog change.
--
-- message_words' foreign key, added NOT VALID by 0033 (new rows were checked from then on), is validated:
-- that takes SHARE UPDATE EXCLUSIVE on message_words and ROW SHARE on messages, which writers do not wait
-- for. Words of messages expunged while 0033 copied (no row of messages any more) go first.
DELETE FROM message_words w WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = w.message_id);
ALTER TABLE message_words VALIDATE CONSTRAINT message_words_message_id_fkey;

-- Nothing looks a message up by its Message-ID (threading reads the column with the rest of the row), so
-- this index only cost every delivery an insertion: 1 MiB per 10,000 messages, and idx_scan 0 in
-- bench/storage.py.
DROP INDEX messages_message_id_idx;

-- lz4 for the large values (TOAST), where the server is built with it (Debian's PostgreSQL is; the
-- embedded one of `relatectl dev` is not, and keeps pglz): on the words corpus of bench/storage.py (10,000
-- messages, PostgreSQL 15) blobs 115 -> 88 MiB, message_texts 98 -> 81 MiB, message_words 178 -> 159
-- MiB, where pglz saved 3% (it stops trying when the first kilobyte does not compress). Values
-- stored already keep their compression until rewritten; new ones take lz4.
DO $$
BEGIN
    ALTER TABLE blobs ALTER COLUMN data SET COMPRESSION lz4;
    ALTER TABLE message_texts ALTER COLUMN head SET COMPRESSION lz4, ALTER COLUMN body SET COMPRESSION lz4;
    ALTER TABLE message_words ALTER COLUMN words SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    NULL;
END
$$;
