-- Trigram indexes make substring search (IMAP SEARCH TEXT/BODY) an index
-- lookup instead of a scan of every message's text. pg_trgm is a trusted
-- extension: the database owner may create it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX messages_search_body_trgm_idx ON messages USING gin (search_body gin_trgm_ops);
CREATE INDEX messages_search_head_trgm_idx ON messages USING gin (search_head gin_trgm_ops);
