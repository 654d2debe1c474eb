-- Text for exact substring search (IMAP SEARCH TEXT/BODY, RFC 9051 §6.4.4):
-- lower-cased header text (raw, plus decoded subject and addresses) and
-- decoded body text, filled in by the background indexer with the vector.
ALTER TABLE messages ADD COLUMN search_head text, ADD COLUMN search_body text;
