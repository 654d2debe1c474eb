-- Failed logins, counted in the database so that every host enforces one budget (the policy is in
-- relate/auth.py, the SQL in relate/store/login_failures.py).
--
-- One row per (client address, login) and one per client address alone (login ''): the times of the
-- key's recent failures, oldest first and never more than its cap, and, once the cap is reached, the
-- end of its lockout (the times are then emptied, so a fresh count starts when the lockout ends).
-- `login` is the primary address of the user a login names (so aliases share one count), the login
-- as given when it names nobody, or a bearer key's prefix.
--
-- expires_at is when a row stops mattering: the failure window after its last failure, or the end of
-- its lockout, whichever is later. Each recorded failure deletes a few expired rows of other clients
-- (index below), so the table holds live counts only, however many addresses have ever failed.

CREATE TABLE auth_failures (
    client        text NOT NULL,
    login         text NOT NULL,
    failures      timestamptz[] NOT NULL,
    locked_until  timestamptz,
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (client, login)
);
CREATE INDEX auth_failures_expires_idx ON auth_failures (expires_at);
