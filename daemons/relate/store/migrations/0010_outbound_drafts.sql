-- REST outbound: drafts kept as outbound rows with a composed copy in the user's Drafts folder.

ALTER TABLE outbound_emails
    ADD COLUMN from_name text,
    -- The composed copy (flag \Draft) in the Drafts folder, replaced on every save, removed on send.
    ADD COLUMN draft_message_id bigint REFERENCES messages (id) ON DELETE SET NULL,
    -- The copy that landed in Sent when the message was sent through the API.
    ADD COLUMN sent_message_id bigint REFERENCES messages (id) ON DELETE SET NULL;
-- The foreign keys above are checked on every message delete: keep those checks index lookups.
CREATE INDEX outbound_emails_draft_message_idx ON outbound_emails (draft_message_id)
    WHERE draft_message_id IS NOT NULL;
CREATE INDEX outbound_emails_sent_message_idx ON outbound_emails (sent_message_id)
    WHERE sent_message_id IS NOT NULL;
-- Newest first per user and status (drafts, outbox and sent listings).
CREATE INDEX outbound_emails_user_updated_idx ON outbound_emails (user_id, status, updated_at DESC, id DESC);

ALTER TABLE outbound_recipients
    ADD COLUMN name text;   -- the display name the sender gave, for the draft and the API
