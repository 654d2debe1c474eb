-- Vacation (RFC 5230 §4.2, RFC 6131): whom each user's auto-reply went to, per :handle, and until when
-- no second reply goes to that sender (relate/sieve/vacation.py, run by the delivery daemon).
CREATE TABLE sieve_vacation_replies (
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    handle      bytea NOT NULL,  -- sha256 of the :handle (or of the arguments that make the default one)
    sender      text NOT NULL,   -- the envelope sender replied to, lower-cased
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (user_id, handle, sender)
);
CREATE INDEX sieve_vacation_replies_expiry ON sieve_vacation_replies (expires_at);
