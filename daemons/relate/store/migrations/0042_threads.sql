-- Threads (conversations): every message belongs to one thread of its account, assigned at ingest
-- (relate/store/threads.py says how). A thread spans the user's folders; a copy is in its original's.
--
--   threads       one row per thread: its owner and its latest arrival (the thread list's order).
--   thread_keys   what finds a thread: each msg-id a message has or refers to ("<...>"), and each
--                 subject key ("s:" + relate.mail.threadsubject) with the time of its latest message.
--   messages.thread_id   the message's thread; NULL for mail stored before this migration until the
--                 background threader reaches it (the delivery daemon, when idle, a batch at a time).
--
-- Live upgrade: the new column has no default (no table rewrite) and no foreign key (ingest would check it
-- for every message; threads.id is only ever assigned with its row). Its index is built under a SHARE lock
-- on messages, which holds deliveries and flag changes off for the length of one scan of the table
-- (about a second per million messages); the existing mail is threaded afterwards, outside any migration,
-- in short transactions (store/threads.py: thread_pending), so no lock is held for the whole of it.
-- No foreign keys on threads and thread_keys: ingest would check them for every row it writes (a trigger
-- each); a user's threads and keys go with the user (the trigger below), a merged thread's in the merge.
CREATE TABLE threads (
    id       bigserial PRIMARY KEY,
    user_id  bigint NOT NULL,
    last_at  timestamptz NOT NULL
);
CREATE INDEX threads_user_last_idx ON threads (user_id, last_at DESC, id DESC);

-- Not unique: ingest never waits for another transaction's key (a delivery to INBOX must not wait for one
-- to Sent). Two transactions storing a new key at once both insert it; lookups take every row of a key.
CREATE TABLE thread_keys (
    user_id    bigint NOT NULL,
    key        text NOT NULL,
    thread_id  bigint NOT NULL,
    at         timestamptz NOT NULL
);
CREATE INDEX thread_keys_user_key_idx ON thread_keys (user_id, key);
CREATE INDEX thread_keys_thread_idx ON thread_keys (thread_id);

ALTER TABLE messages ADD COLUMN thread_id bigint;
CREATE INDEX messages_thread_idx ON messages (thread_id, internal_date, id) WHERE thread_id IS NOT NULL;
-- What the background threader has left: empty once it is done, and new mail never enters it.
CREATE INDEX messages_unthreaded_idx ON messages (id) WHERE thread_id IS NULL;

CREATE FUNCTION relate_threads_of_user_gone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM thread_keys WHERE user_id = OLD.id;
    DELETE FROM threads WHERE user_id = OLD.id;
    RETURN OLD;
END $$;
CREATE TRIGGER users_threads_gone AFTER DELETE ON users FOR EACH ROW EXECUTE FUNCTION relate_threads_of_user_gone();
