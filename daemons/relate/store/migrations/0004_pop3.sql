-- POP3 counts octets as sent: CRLF line endings and a final CRLF (RFC 1939 §11).
-- Recorded at ingest so STAT and LIST never read message bodies. NULL: same as size.
ALTER TABLE messages ADD COLUMN wire_size bigint;
