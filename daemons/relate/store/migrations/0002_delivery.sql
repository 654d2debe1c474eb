-- Delivery: recipient leases, per-domain grouping, delay warnings, DKIM keys.

ALTER TABLE outbound_recipients
    ADD COLUMN domain text NOT NULL DEFAULT '',
    ADD COLUMN lease_until timestamptz,
    ADD COLUMN remote_mta text,
    ADD COLUMN status_code text;   -- enhanced status of the last outcome, e.g. 5.1.1
UPDATE outbound_recipients SET domain = lower(split_part(address, '@', 2));
DROP INDEX outbound_recipients_due_idx;
CREATE INDEX outbound_recipients_due_idx ON outbound_recipients (next_attempt_at)
    WHERE status IN ('pending', 'deferred');
CREATE INDEX outbound_recipients_lease_idx ON outbound_recipients (lease_until)
    WHERE status = 'sending';

ALTER TABLE outbound_emails
    ADD COLUMN delay_warned_at timestamptz,
    ADD COLUMN held_from text;     -- the status a held message returns to on release

CREATE TABLE dkim_keys (
    id           bigserial PRIMARY KEY,
    domain_id    bigint NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    selector     text NOT NULL,
    algorithm    text NOT NULL CHECK (algorithm IN ('rsa-sha256', 'ed25519-sha256')),
    private_key  text NOT NULL,   -- PEM (RSA) or base64 seed (Ed25519)
    public_key   text NOT NULL,   -- the p= value of the DNS record
    created_at   timestamptz NOT NULL DEFAULT now(),
    active       boolean NOT NULL DEFAULT true,
    UNIQUE (domain_id, selector)
);
CREATE UNIQUE INDEX dkim_keys_active_idx ON dkim_keys (domain_id) WHERE active;
