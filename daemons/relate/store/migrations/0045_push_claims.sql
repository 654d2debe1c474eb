-- Web push exactly once per delivered message, however many relate-api processes hear the change feed
-- (store/push.py claim_new): the first to insert a message's row pushes it, the others find it taken.
-- UNLOGGED: a claim matters only while the NOTIFY that caused it is being heard (seconds). A transaction
-- that writes only unlogged tables does not wait for a WAL flush, so a claim costs no fsync; after a
-- database crash or a failover the table is empty, and then nothing is heard twice either (a NOTIFY is
-- never replayed). Rows older than a day are deleted by relate-api (store/push.py prune_claims).
CREATE UNLOGGED TABLE push_claims (
    message_id  bigint PRIMARY KEY,
    claimed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX push_claims_claimed_at ON push_claims (claimed_at);
