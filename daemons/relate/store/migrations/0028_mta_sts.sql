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

-- TLS-RPT (RFC 8460): the TLS results of our deliveries per recipient policy domain and UTC day
-- (store/tlsrpt.py). Each delivery daemon tallies in memory and adds its counts here now and then (one
-- upsert per domain and result, not one per connection); the day's rows go when its report is queued,
-- or when the domain publishes no TLS-RPT address. mx_host and result_type are '' on the row of the
-- successful sessions; policy holds the policy's lines (sts), the latest seen that day.
CREATE TABLE tls_results (
    policy_domain  text NOT NULL,
    day            date NOT NULL,
    policy_type    text NOT NULL CHECK (policy_type IN ('sts', 'no-policy-found')),
    mx_host        text NOT NULL DEFAULT '',
    result_type    text NOT NULL DEFAULT '',
    sessions       bigint NOT NULL CHECK (sessions >= 0),
    policy         text NOT NULL DEFAULT '',
    PRIMARY KEY (policy_domain, day, policy_type, mx_host, result_type)
);
