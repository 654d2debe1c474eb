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

-- \Recent for IMAP4rev1 sessions (RFC 3501 §2.3.2), one column per mailbox rather than a row per message:
-- the highest UID already given out as recent. A session takes the messages above it, up to the newest,
-- by relate_claim_recent (at SELECT, and when it hears of new mail), which locks the mailbox row, so of
-- any number of sessions on any number of hosts exactly one gets each message. Messages stored before
-- this migration count as seen.
ALTER TABLE mailboxes ADD COLUMN recent_uid bigint NOT NULL DEFAULT 0;
UPDATE mailboxes SET recent_uid = uidnext - 1;

-- (lo, hi): the caller's recent messages are those with lo < uid <= hi (none when lo = hi).
-- upto bounds what is taken (the newest UID the caller knows of); NULL takes everything stored.
-- NULL, NULL when the mailbox is gone.
CREATE FUNCTION relate_claim_recent(box bigint, upto bigint, OUT lo bigint, OUT hi bigint)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT recent_uid INTO lo FROM mailboxes WHERE id = box FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE mailboxes SET recent_uid = least(upto, uidnext - 1)
     WHERE id = box AND recent_uid < least(upto, uidnext - 1)
    RETURNING recent_uid INTO hi;
    hi := coalesce(hi, lo);
END $$;
