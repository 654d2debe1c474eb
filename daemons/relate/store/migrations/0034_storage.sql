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

-- No statistics on the trigram text, as on message_words' words (0033): PostgreSQL keeps none that help
-- LIKE on texts this long (values over 1 kB are left out of its sample), guessed that a rare needle was in a
-- fifth of the messages, and read every text out of TOAST instead of asking the trigram indexes (1.06 s
-- instead of 1 ms for SEARCH TEXT of a word in 20 of 10,000 messages: the first runs of each SEARCH
-- statement, before the generic plan). Without statistics it takes the needle for a rare one. Those an
-- earlier ANALYZE left are cleared where this role may (the table's owner on PostgreSQL 18, a superuser
-- before); otherwise they stay until the column is analyzed with statistics again, which it no longer is.
ALTER TABLE message_texts ALTER COLUMN head SET STATISTICS 0, ALTER COLUMN body SET STATISTICS 0;
DO $$
BEGIN
    IF to_regprocedure('pg_clear_attribute_stats(text, text, text, boolean)') IS NOT NULL THEN
        PERFORM pg_clear_attribute_stats(current_schema(), 'message_texts', name, false)
           FROM unnest(ARRAY['head', 'body']) name;
    ELSE
        DELETE FROM pg_statistic
         WHERE starelid = 'message_texts'::regclass
           AND staattnum IN (SELECT attnum FROM pg_attribute
                              WHERE attrelid = 'message_texts'::regclass AND attname IN ('head', 'body'));
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'message_texts keeps the statistics of its text columns: clear them as a superuser';
END
$$;

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
