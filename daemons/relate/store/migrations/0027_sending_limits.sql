-- Per-user sending limits (store/sending.py): messages and first-time recipients in the last 24 hours,
-- counted by the hour so that every host shares one budget and no row is shared between users.

-- A user's own limits: NULL follows the configured default (submission.limits.*), 0 is no limit.
ALTER TABLE users
    ADD COLUMN send_messages_per_day integer CHECK (send_messages_per_day >= 0),
    ADD COLUMN send_recipients_per_day integer CHECK (send_recipients_per_day >= 0);

-- What a user sent in one hour (hour = date_trunc('hour', now()) of the database's clock). Rows older
-- than two days are deleted by the user's next message.
CREATE TABLE sending_counts (
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    hour            timestamptz NOT NULL,
    messages        integer NOT NULL DEFAULT 0,
    new_recipients  integer NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, hour)
);

-- Every address a user has sent to: a recipient not in here is a first-time (new) recipient.
CREATE TABLE sent_recipients (
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    address     text NOT NULL,
    first_sent  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, address)
);

-- A limit a user is being refused by, since its first refusal (logged once); deleted by the user's
-- next message that fits.
CREATE TABLE sending_limit_hits (
    user_id  bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind     text NOT NULL CHECK (kind IN ('messages', 'recipients')),
    since    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, kind)
);
