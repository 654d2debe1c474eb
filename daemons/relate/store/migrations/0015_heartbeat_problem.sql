-- What a running daemon reports as degraded (e.g. its change feed is down, so IMAP
-- IDLE and API push only catch up by polling); NULL while all is well. Written with
-- every heartbeat; `relatectl status` shows it.
ALTER TABLE daemon_heartbeats ADD COLUMN problem text;
