-- The secret of the Sender Rewriting Scheme (relate/sieve/srs.py): one row, made on first use.
CREATE TABLE srs_secret (
    id      int PRIMARY KEY CHECK (id = 1),
    secret  bytea NOT NULL
);
