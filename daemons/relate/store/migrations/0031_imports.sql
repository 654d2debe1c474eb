-- relatectl import imap: how far each source folder has been copied, so a second run fetches nothing
-- and an interrupted one goes on where it stopped. One row per (user, source account, source folder);
-- updated in the transaction that stores each batch, so it never claims a message that was not stored.
-- uidvalidity: the source folder's UIDVALIDITY when last_uid was recorded (RFC 9051 §2.3.1.1); when the
-- source changes it, UIDs say nothing any more and the import compares contents instead.
CREATE TABLE import_progress (
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    source      text NOT NULL,
    folder      text NOT NULL,
    uidvalidity bigint NOT NULL,
    last_uid    bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, source, folder)
);
