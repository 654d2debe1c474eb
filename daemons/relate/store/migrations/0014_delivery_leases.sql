-- Outbound recipients are recorded one SMTP transaction at a time, under short leases that the
-- delivery daemon renews while it works (issue 12, finding 6).
--
-- lease_owner: the token of the claim that holds a 'sending' row. The daemon renews and records only
-- rows that still carry its token, so a daemon that lost its lease (renewal failed, another daemon
-- took the row over) neither records over the new owner nor keeps sending what it no longer owns.
--
-- dsn_due: the recipient failed and its sender has not had the DSN yet. It is set in the transaction
-- that records the failure and cleared in the transaction that puts the DSN in the sender's INBOX,
-- so a crash between the two delays the DSN instead of losing it, and no failure bounces twice.
ALTER TABLE outbound_recipients
    ADD COLUMN lease_owner uuid,
    ADD COLUMN dsn_due boolean NOT NULL DEFAULT false;

CREATE INDEX outbound_recipients_dsn_idx ON outbound_recipients (outbound_email_id) WHERE dsn_due;
