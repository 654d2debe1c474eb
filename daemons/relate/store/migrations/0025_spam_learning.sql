-- Learning from the user (relate.spam.learner): a message moved or copied into Junk is to be learnt
-- as spam, out of Junk (anywhere but Trash) as ham. One row per user and message content (the blob:
-- a move gives the message a new id, its bytes stay), so a message is learnt once per verdict however
-- often it is moved; a row whose wanted verdict differs from the one learnt is due. The SMTP daemon
-- works the due rows off in the background (FOR UPDATE SKIP LOCKED), so MOVE never waits on rspamd.
CREATE TABLE spam_learning (
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    blob_hash   bytea NOT NULL,
    wanted      text NOT NULL CHECK (wanted IN ('spam', 'ham')),
    learnt      text CHECK (learnt IN ('spam', 'ham')),
    attempts    integer NOT NULL DEFAULT 0,
    -- When to try next; NULL: nothing to do (learnt, or given up after too many attempts).
    due         timestamptz DEFAULT now(),
    last_error  text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, blob_hash)
);
CREATE INDEX spam_learning_due_idx ON spam_learning (due) WHERE due IS NOT NULL;
