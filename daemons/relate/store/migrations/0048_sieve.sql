-- Sieve (RFC 5228): each user's scripts, at most one of them active (the one delivery runs); the
-- ids the duplicate test (RFC 7352) remembers; and the actions a run took that send mail (redirect,
-- reject, ereject, vacation), recorded for the sending side (relate/sieve/filing.py).
CREATE TABLE sieve_scripts (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name <> '' AND length(name) <= 255),
    script      text NOT NULL,
    active      boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, name)
);
-- One active script per user; delivery reads it through this index.
CREATE UNIQUE INDEX sieve_scripts_active ON sieve_scripts (user_id) WHERE active;

CREATE TABLE sieve_duplicates (
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    handle      text NOT NULL,
    id_hash     bytea NOT NULL,  -- sha256 of the tracked value (a Message-ID, say)
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (user_id, handle, id_hash)
);
CREATE INDEX sieve_duplicates_expiry ON sieve_duplicates (expires_at);

CREATE TABLE sieve_actions (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('redirect', 'reject', 'ereject', 'vacation')),
    detail      jsonb NOT NULL,
    mail_from   text NOT NULL,  -- the envelope sender of the message acted on ('' for a bounce)
    rcpt_to     text NOT NULL,  -- the local address it was delivered to
    blob_hash   bytea,          -- the message as filtered (redirect sends it on)
    message_id  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    done_at     timestamptz     -- set by the sending side once it has acted
);
CREATE INDEX sieve_actions_pending ON sieve_actions (id) WHERE done_at IS NULL;
