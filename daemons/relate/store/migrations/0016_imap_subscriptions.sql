-- IMAP subscriptions are names, not mailboxes (RFC 9051 §6.3.7, §6.3.9; RFC 5258): a name stays
-- subscribed after its mailbox is deleted (LIST shows it \Subscribed \NonExistent), creating a mailbox
-- subscribes nothing, and a name without a mailbox may be subscribed. INBOX is spelt "INBOX".
-- The REST API's "subscribed" of a folder is whether its name is in this table.
CREATE TABLE subscriptions (
    user_id  bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name     text NOT NULL,
    PRIMARY KEY (user_id, name)
);

INSERT INTO subscriptions (user_id, name)
SELECT user_id, CASE WHEN upper(name) = 'INBOX' THEN 'INBOX' ELSE name END FROM mailboxes WHERE subscribed
ON CONFLICT DO NOTHING;

ALTER TABLE mailboxes DROP COLUMN subscribed;
