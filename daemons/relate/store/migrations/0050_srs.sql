-- The secret of the Sender Rewriting Scheme (relate/sieve/srs.py): one row, made on first use.
CREATE TABLE srs_secret (
    id      int PRIMARY KEY CHECK (id = 1),
    secret  bytea NOT NULL
);

-- The redirects of a user in the last day (sieve.max_redirects_per_day, relate/sieve/redirect.py).
CREATE INDEX sieve_actions_redirects ON sieve_actions (user_id, created_at) WHERE kind = 'redirect';
