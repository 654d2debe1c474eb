-- MTA-STS (RFC 8461): recipient domains' policies as last fetched (store/mtasts.py, relate/queue/mtasts.py),
-- shared by every delivery daemon. A row is used until expires_at (fetched_at + max_age) and refetched
-- when the domain's _mta-sts TXT record names another id.
CREATE TABLE mta_sts_policies (
    domain      text PRIMARY KEY CHECK (domain = lower(domain)),
    policy_id   text NOT NULL,
    mode        text NOT NULL CHECK (mode IN ('enforce', 'testing', 'none')),
    mx          text[] NOT NULL,
    max_age     integer NOT NULL CHECK (max_age >= 0),
    fetched_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
