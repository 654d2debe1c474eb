-- REST API: newest-first mailbox listings page through an index, not a sort.
CREATE INDEX messages_mailbox_date_idx ON messages (mailbox_id, internal_date DESC, id DESC);
-- Unread counts per mailbox (the API's folder list and UnreadCountChanged events).
CREATE INDEX messages_unseen_idx ON messages (mailbox_id) WHERE NOT ('\Seen' = ANY (flags));
