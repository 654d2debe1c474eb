-- Raw messages (blobs) are no longer deleted by the transaction that removes their last reference:
-- triggers note every blob that may have lost one, on every path (IMAP EXPUNGE and MOVE, POP3 QUIT,
-- REST delete, folder and user removal, outbound mail deleted or recomposed), and the delivery
-- daemon's sweep (store.mailboxes.sweep_blobs) deletes those still unreferenced a while later.
-- Removing 10,000 messages no longer waits for 20,000 foreign-key checks on blobs, and a delivery
-- of the same bytes that starts meanwhile can no longer lose its blob under it.

CREATE TABLE blob_orphans (
    hash   bytea NOT NULL,
    -- When the reference went (clock time of the removing statement, before its commit).
    since  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX blob_orphans_since_idx ON blob_orphans (since);

-- One INSERT per DELETE statement on messages, however many rows it removed.
CREATE FUNCTION relate_note_message_blobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO blob_orphans (hash) SELECT DISTINCT blob_hash FROM gone;
    RETURN NULL;
END $$;
CREATE TRIGGER messages_note_blobs AFTER DELETE ON messages
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION relate_note_message_blobs();

-- Outbound mail: few rows per statement, and most updates leave blob_hash alone.
CREATE FUNCTION relate_note_outbound_blob() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO blob_orphans (hash) VALUES (OLD.blob_hash);
    RETURN NULL;
END $$;
CREATE TRIGGER outbound_emails_note_blob_delete AFTER DELETE ON outbound_emails
    FOR EACH ROW WHEN (OLD.blob_hash IS NOT NULL) EXECUTE FUNCTION relate_note_outbound_blob();
CREATE TRIGGER outbound_emails_note_blob_update AFTER UPDATE OF blob_hash ON outbound_emails
    FOR EACH ROW WHEN (OLD.blob_hash IS NOT NULL AND OLD.blob_hash IS DISTINCT FROM NEW.blob_hash)
    EXECUTE FUNCTION relate_note_outbound_blob();

-- Blobs left behind before this migration (user removal used to leave them): swept like the rest.
INSERT INTO blob_orphans (hash)
SELECT b.hash FROM blobs b
 WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob_hash = b.hash)
   AND NOT EXISTS (SELECT 1 FROM outbound_emails e WHERE e.blob_hash = b.hash);

-- The expunge log took one foreign-key check per expunged UID (10,000 for one POP3 QUIT). Its rows
-- are only ever written under the mailbox's row lock (store.imap_messages), so the mailbox exists;
-- a trigger replaces ON DELETE CASCADE.
ALTER TABLE mailbox_expunges DROP CONSTRAINT mailbox_expunges_mailbox_id_fkey;
CREATE FUNCTION relate_drop_mailbox_expunges() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM mailbox_expunges e USING gone WHERE e.mailbox_id = gone.id;
    RETURN NULL;
END $$;
CREATE TRIGGER mailboxes_drop_expunges AFTER DELETE ON mailboxes
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION relate_drop_mailbox_expunges();
