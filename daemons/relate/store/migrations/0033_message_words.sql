-- The full-text vector (REST search, websearch_to_tsquery) moves out of messages into a table of its own,
-- written once by the indexer. A message's row changes at every flag change (flags, modseq), and the new
-- row version goes into every index of the table again: with the GIN index over the vector on messages,
-- marking an indexed 10 KiB message read cost PostgreSQL about 0.8 ms instead of 0.1 ms. As with the
-- trigram text (0032), the vector is now written when the message is indexed and never again.
--
-- A message not indexed yet has no row here; search computes its vector from its subject and address
-- columns (relate_head_words, the same words the indexer puts first), so it is found before indexing.
--
-- Live upgrade: the new table is filled and indexed while messages stays open to deliveries, flag changes
-- and expunges (a new table blocks nobody; reading messages takes no lock a writer waits for). Its foreign
-- key is added NOT VALID (adding a valid one would hold writers off messages for the whole copy) and
-- validated by 0034 without blocking them. Only the last step locks messages: the rows the old indexer
-- indexed during the copy (at most those pending when it began, and newer ones) are copied, and the old
-- column and its index dropped, which is brief.
CREATE FUNCTION relate_head_words(subject text, from_addr jsonb, to_addr jsonb, cc_addr jsonb)
RETURNS tsvector LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT setweight(to_tsvector('simple', coalesce(subject, '')), 'A')
        || setweight(to_tsvector('simple', from_addr) || to_tsvector('simple', to_addr)
                     || to_tsvector('simple', cc_addr), 'B')
$$;

CREATE TABLE message_words (
    message_id  bigint PRIMARY KEY,
    words       tsvector NOT NULL
);

-- Whether one message has the words of a query: its row here, or its head's words while it has none. The
-- REST search asks this of each message its date index gives, newest first, when a word is common: as a
-- function (not inlined, for the sub-select) the planner takes it to hold for a third of the messages
-- and walks the index, stopping after a page; the bare expression it took for a rare one, and sorted
-- the whole mailbox.
CREATE FUNCTION relate_has_words(message bigint, indexed boolean, subject text, from_addr jsonb, to_addr jsonb,
                                 cc_addr jsonb, query tsquery)
RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce((SELECT w.words FROM message_words w WHERE w.message_id = message),
                    CASE WHEN NOT indexed THEN relate_head_words(subject, from_addr, to_addr, cc_addr) END) @@ query
$$;

-- No statistics on the words: the planner then takes any word for a rare one (tsmatchsel's default) and
-- reads the GIN index, whose answer needs no check against the row. With statistics, a word found in
-- most messages made it read every row instead, taking each vector out of TOAST (0.2 s for 10,000).
ALTER TABLE message_words ALTER COLUMN words SET STATISTICS 0;

CREATE TEMPORARY TABLE words_pending ON COMMIT DROP AS
SELECT id FROM messages WHERE NOT text_indexed
UNION ALL SELECT coalesce(max(id), 0) FROM messages;
CREATE INDEX ON words_pending (id);

INSERT INTO message_words (message_id, words) SELECT id, search FROM messages WHERE text_indexed;
CREATE INDEX message_words_idx ON message_words USING gin (words);

LOCK TABLE messages IN ACCESS EXCLUSIVE MODE;
INSERT INTO message_words (message_id, words)
SELECT m.id, m.search FROM messages m
 WHERE m.text_indexed
   AND (m.id IN (SELECT id FROM words_pending) OR m.id > (SELECT max(id) FROM words_pending))
ON CONFLICT (message_id) DO NOTHING;
ALTER TABLE message_words ADD CONSTRAINT message_words_message_id_fkey
    FOREIGN KEY (message_id) REFERENCES messages (id) ON DELETE CASCADE NOT VALID;
DROP INDEX messages_search_idx;
ALTER TABLE messages DROP COLUMN search;
