-- Per-user allow and block lists of senders (relate.spam.filter): an entry is an address
-- (alice@example.org) or a domain (example.org, which covers its subdomains too), applied to the
-- envelope sender and the From addresses before rspamd's verdict.
CREATE TABLE sender_rules (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    pattern     text NOT NULL CHECK (pattern = lower(pattern) AND pattern <> ''),
    kind        text NOT NULL CHECK (kind IN ('allow', 'block')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, pattern)
);
