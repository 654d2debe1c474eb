-- Relate Mail schema, version 1: the model of the product design.
-- Addresses are stored lower-case; every lookup lower-cases its input first.

CREATE TABLE domains (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name = lower(name) AND name <> ''),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id            bigserial PRIMARY KEY,
    domain_id     bigint NOT NULL REFERENCES domains (id) ON DELETE RESTRICT,
    address       text NOT NULL UNIQUE CHECK (address = lower(address)),
    display_name  text,
    disabled      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_domain_idx ON users (domain_id);

-- Every address that delivers to a user: the primary one and its aliases.
CREATE TABLE addresses (
    id          bigserial PRIMARY KEY,
    address     text NOT NULL UNIQUE CHECK (address = lower(address)),
    domain_id   bigint NOT NULL REFERENCES domains (id) ON DELETE RESTRICT,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    is_primary  boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX addresses_user_idx ON addresses (user_id);
CREATE INDEX addresses_domain_idx ON addresses (domain_id);

-- App passwords. The secret is never stored: `prefix` finds the row, `hash`
-- (bcrypt) proves the key.
CREATE TABLE api_keys (
    id            bigserial PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          text NOT NULL,
    prefix        text NOT NULL UNIQUE,
    hash          text NOT NULL,
    scopes        text[] NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    expires_at    timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_keys_user_idx ON api_keys (user_id);

-- UIDVALIDITY values come from one sequence started at the migration's epoch
-- second, so a mailbox deleted and created again never reuses one.
CREATE SEQUENCE mailbox_uidvalidity_seq;
SELECT setval('mailbox_uidvalidity_seq', extract(epoch FROM now())::bigint);

CREATE TABLE mailboxes (
    id             bigserial PRIMARY KEY,
    user_id        bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name           text NOT NULL,   -- UTF-8, hierarchy delimiter '/'
    special_use    text CHECK (special_use IN ('\Sent', '\Drafts', '\Trash', '\Junk', '\Archive', '\All', '\Flagged')),
    uidvalidity    bigint NOT NULL DEFAULT nextval('mailbox_uidvalidity_seq'),
    uidnext        bigint NOT NULL DEFAULT 1,
    highestmodseq  bigint NOT NULL DEFAULT 1,
    subscribed     boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, name)
);
-- INBOX is unique per user whatever its case (RFC 9051 §5.1).
CREATE UNIQUE INDEX mailboxes_inbox_idx ON mailboxes (user_id) WHERE upper(name) = 'INBOX';

-- Raw RFC 5322 bytes, once per content hash (SHA-256).
CREATE TABLE blobs (
    hash        bytea PRIMARY KEY,
    size        bigint NOT NULL,
    data        bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE messages (
    id             bigserial PRIMARY KEY,
    mailbox_id     bigint NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    uid            bigint NOT NULL,
    modseq         bigint NOT NULL,
    flags          text[] NOT NULL DEFAULT '{}',
    internal_date  timestamptz NOT NULL DEFAULT now(),
    size           bigint NOT NULL,
    blob_hash      bytea NOT NULL REFERENCES blobs (hash),
    -- Parsed once at ingest (relate.mail.mime); FETCH and listings never re-parse.
    subject        text,
    from_addr      jsonb NOT NULL DEFAULT '[]',   -- [{name, email}]
    to_addr        jsonb NOT NULL DEFAULT '[]',
    cc_addr        jsonb NOT NULL DEFAULT '[]',
    bcc_addr       jsonb NOT NULL DEFAULT '[]',
    date_header    timestamptz,
    message_id     text,
    in_reply_to    text,
    "references"   text[] NOT NULL DEFAULT '{}',
    envelope       jsonb NOT NULL,
    bodystructure  jsonb NOT NULL,
    header_end     bigint NOT NULL,
    attachments    jsonb NOT NULL DEFAULT '[]',
    attachment_count integer NOT NULL DEFAULT 0,
    search         tsvector NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (mailbox_id, uid)
);
CREATE INDEX messages_mailbox_modseq_idx ON messages (mailbox_id, modseq);
CREATE INDEX messages_blob_idx ON messages (blob_hash);
CREATE INDEX messages_message_id_idx ON messages (message_id);
CREATE INDEX messages_search_idx ON messages USING gin (search);

CREATE TABLE outbound_emails (
    id              bigserial PRIMARY KEY,
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status          text NOT NULL DEFAULT 'draft'
                    CHECK (status IN ('draft', 'queued', 'sending', 'sent', 'partial_failure', 'failed', 'held')),
    from_address    text NOT NULL,
    -- Envelope sender for delivery; '' is the null sender.
    mail_from       text NOT NULL DEFAULT '',
    subject         text,
    text_body       text,
    html_body       text,
    -- The exact message to send, once composed (SMTP submission stores it at once).
    blob_hash       bytea REFERENCES blobs (hash),
    message_id      text,
    in_reply_to     text,
    "references"    text[] NOT NULL DEFAULT '{}',
    retry_count     integer NOT NULL DEFAULT 0,
    next_retry_at   timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    queued_at       timestamptz,
    sent_at         timestamptz
);
CREATE INDEX outbound_emails_user_status_idx ON outbound_emails (user_id, status);
CREATE INDEX outbound_emails_due_idx ON outbound_emails (next_retry_at) WHERE status IN ('queued', 'sending');

CREATE TABLE outbound_recipients (
    id                 bigserial PRIMARY KEY,
    outbound_email_id  bigint NOT NULL REFERENCES outbound_emails (id) ON DELETE CASCADE,
    kind               text NOT NULL CHECK (kind IN ('to', 'cc', 'bcc')),
    address            text NOT NULL,
    status             text NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'sending', 'sent', 'deferred', 'failed')),
    attempts           integer NOT NULL DEFAULT 0,
    next_attempt_at    timestamptz,
    last_error         text,
    remote_reply       text,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbound_recipients_email_idx ON outbound_recipients (outbound_email_id);
CREATE INDEX outbound_recipients_due_idx ON outbound_recipients (next_attempt_at)
    WHERE status IN ('pending', 'deferred', 'sending');

CREATE TABLE outbound_attachments (
    id                 bigserial PRIMARY KEY,
    outbound_email_id  bigint NOT NULL REFERENCES outbound_emails (id) ON DELETE CASCADE,
    filename           text NOT NULL,
    content_type       text NOT NULL DEFAULT 'application/octet-stream',
    content_id         text,
    inline             boolean NOT NULL DEFAULT false,
    size               bigint NOT NULL,
    data               bytea NOT NULL
);
CREATE INDEX outbound_attachments_email_idx ON outbound_attachments (outbound_email_id);

CREATE TABLE push_subscriptions (
    id            bigserial PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    endpoint      text NOT NULL UNIQUE,
    p256dh        text NOT NULL,
    auth          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz
);
CREATE INDEX push_subscriptions_user_idx ON push_subscriptions (user_id);
