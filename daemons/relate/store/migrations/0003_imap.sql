-- IMAP: expunged UIDs per mailbox, so every session (on any host) can tell
-- its client which messages went away since the modseq it last saw.

CREATE TABLE mailbox_expunges (
    mailbox_id  bigint NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    uid         bigint NOT NULL,
    modseq      bigint NOT NULL,
    expunged_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX mailbox_expunges_modseq_idx ON mailbox_expunges (mailbox_id, modseq);
CREATE INDEX outbound_emails_blob_idx ON outbound_emails (blob_hash);

-- Body text reaches the full-text vector after delivery, from a background
-- indexer (the delivery daemon), so accepting mail never waits for it.
ALTER TABLE messages ADD COLUMN text_indexed boolean NOT NULL DEFAULT true;
CREATE INDEX messages_text_pending_idx ON messages (id) WHERE NOT text_indexed;
