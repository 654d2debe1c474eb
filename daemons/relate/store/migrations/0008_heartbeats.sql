-- One row per running daemon process, written by the process itself: inserted at
-- start, refreshed every runtime.heartbeat_seconds, deleted on a clean stop. A row
-- whose last_seen is older than three intervals belongs to a process that died
-- (or cannot reach the database); `relatectl status` shows it as stale.
CREATE TABLE daemon_heartbeats (
    id                bigserial PRIMARY KEY,
    host              text NOT NULL,
    service           text NOT NULL,
    pid               integer NOT NULL,
    version           text NOT NULL,
    started_at        timestamptz NOT NULL DEFAULT now(),
    last_seen         timestamptz NOT NULL DEFAULT now(),
    connections       integer NOT NULL DEFAULT 0,
    interval_seconds  double precision NOT NULL,
    UNIQUE (host, service, pid)
);
