-- Quota (RFC 9208 STORAGE and MESSAGE): per-user limits, and usage kept per mailbox (store/quota.py
-- says why there is no per-user usage row).

-- What a mailbox holds: its messages and the sum of their sizes (messages.size). Kept by the statements
-- that already write the mailbox row whenever its messages change (ingest and COPY take UIDNEXT from
-- it, expunges their modseq), so counting costs no extra statement and no extra row lock.
ALTER TABLE mailboxes
    ADD COLUMN message_count bigint NOT NULL DEFAULT 0,
    ADD COLUMN message_bytes bigint NOT NULL DEFAULT 0;

UPDATE mailboxes b SET message_count = s.n, message_bytes = s.bytes
  FROM (SELECT mailbox_id, count(*) AS n, sum(size) AS bytes FROM messages GROUP BY mailbox_id) AS s
 WHERE s.mailbox_id = b.id;

-- A user's own limits: NULL follows the configured default (quota.storage, quota.messages), 0 is no
-- limit, any other value the limit (bytes, messages). quota_full_since: when mail to the user was
-- first refused for a full mailbox since the user last made room (quota.bounce_after_days counts
-- from it); NULL while there is room.
ALTER TABLE users
    ADD COLUMN quota_storage bigint CHECK (quota_storage >= 0),
    ADD COLUMN quota_messages bigint CHECK (quota_messages >= 0),
    ADD COLUMN quota_full_since timestamptz;
