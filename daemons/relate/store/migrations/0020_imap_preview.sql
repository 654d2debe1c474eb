-- IMAP PREVIEW (RFC 8970): a message's preview text, made from its first body text part the first
-- time a client asks (relate.mail.preview) and kept; NULL until then. Copies carry it along.
-- SAVEDATE (RFC 8514) is created_at: when the message was stored in its mailbox (a copy or a
-- move is a new row), so it needs no column of its own.
ALTER TABLE messages ADD COLUMN preview text;
