"""Daemon heartbeats, and the overview of the system that ``relatectl status`` shows.

Policy: every daemon process owns one ``daemon_heartbeats`` row, keyed by
(host, service, pid). It is written when the process starts serving,
refreshed every ``runtime.heartbeat_seconds`` with its open connection
count and what it reports as degraded (``problem``, e.g. its change feed is
down), and deleted on a clean stop. A process that dies leaves its row
behind; a row not refreshed for three of its own intervals is *stale*, and
shown as such rather than hidden, because a daemon that died is exactly what
an admin wants to see, until a process of the same service on the same host
starts (it replaces what died: a daemon that crashed and was restarted ten
times leaves no ten rows). Rows stale for more than a week are pruned
whenever a daemon starts, so a box that was rebuilt does not haunt the table
forever; ``relatectl status`` says when a host whose every row is stale was
last heard from.

The host is the machine's own name (``socket.gethostname()``), not the mail
hostname, which every copy of a cluster shares.
"""

from __future__ import annotations

from typing import Any

from relate.store.db import Queryable

STALE_INTERVALS = 3
PRUNE_AFTER_SECONDS = 7 * 24 * 3600


async def register(
    conn: Queryable,
    *,
    host: str,
    service: str,
    pid: int,
    version: str,
    interval: float,
    connections: int = 0,
    problem: str | None = None,
) -> int:
    """Record a process that has started serving; returns its row id. It replaces the stale rows of its service
    on its host (and a reused pid's row)."""
    await conn.execute(
        f"""DELETE FROM daemon_heartbeats
             WHERE last_seen < now() - make_interval(secs => $1)
                OR (host = $2 AND service = $3
                    AND last_seen < now() - make_interval(secs => interval_seconds * {STALE_INTERVALS}))""",
        float(PRUNE_AFTER_SECONDS),
        host,
        service,
    )
    row_id: int = await conn.fetchval(
        """INSERT INTO daemon_heartbeats (host, service, pid, version, connections, interval_seconds, problem)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (host, service, pid) DO UPDATE
              SET version = EXCLUDED.version, started_at = now(), last_seen = now(),
                  connections = EXCLUDED.connections, interval_seconds = EXCLUDED.interval_seconds,
                  problem = EXCLUDED.problem
           RETURNING id""",
        host,
        service,
        pid,
        version,
        connections,
        interval,
        problem,
    )
    return row_id


async def beat(conn: Queryable, row_id: int, connections: int, problem: str | None = None) -> bool:
    """Refresh a row; False when it is gone (deleted by hand), so the caller can register again."""
    status = await conn.execute(
        "UPDATE daemon_heartbeats SET last_seen = now(), connections = $2, problem = $3 WHERE id = $1",
        row_id,
        connections,
        problem,
    )
    return status != "UPDATE 0"


async def remove(conn: Queryable, row_id: int) -> None:
    await conn.execute("DELETE FROM daemon_heartbeats WHERE id = $1", row_id)


async def instances(conn: Queryable, *, with_problem: bool = True) -> list[dict[str, Any]]:
    """Every recorded process, by host, service and start time, with ``stale`` and ``age_seconds``.

    ``with_problem=False`` for a schema older than migration 0015 (``problem`` is then None).
    """
    problem = "problem" if with_problem else "NULL::text AS problem"
    rows = await conn.fetch(
        f"""SELECT host, service, pid, version, started_at, last_seen, connections, interval_seconds, {problem},
                   extract(epoch FROM now() - last_seen)::float8 AS age_seconds,
                   last_seen < now() - make_interval(secs => interval_seconds * {STALE_INTERVALS}) AS stale
              FROM daemon_heartbeats ORDER BY host, service, started_at, pid"""
    )
    return [dict(r) for r in rows]


async def local_pids(conn: Queryable, host: str) -> list[tuple[str, int]]:
    """(service, pid) of the live (not stale) processes recorded for ``host``."""
    rows = await conn.fetch(
        f"""SELECT service, pid FROM daemon_heartbeats
             WHERE host = $1
               AND last_seen >= now() - make_interval(secs => interval_seconds * {STALE_INTERVALS})
             ORDER BY service, pid""",
        host,
    )
    return [(r["service"], r["pid"]) for r in rows]


async def queue_depth(conn: Queryable) -> dict[str, int]:
    """Outbound messages by status (drafts are not queued and not counted)."""
    rows = await conn.fetch(
        "SELECT status, count(*)::int AS n FROM outbound_emails WHERE status <> 'draft' GROUP BY status"
    )
    return {r["status"]: r["n"] for r in rows}


async def oldest_deferred(conn: Queryable) -> dict[str, Any] | None:
    """The queued message waiting longest with at least one recipient deferred after a failed attempt."""
    row = await conn.fetchrow(
        """SELECT e.id, e.mail_from, e.queued_at,
                  extract(epoch FROM now() - e.queued_at)::float8 AS age_seconds,
                  d.next_attempt_at, d.attempts, d.last_error
             FROM outbound_emails e
             JOIN LATERAL (SELECT r.next_attempt_at, r.attempts, r.last_error
                             FROM outbound_recipients r
                            WHERE r.outbound_email_id = e.id AND r.status = 'deferred'
                            ORDER BY r.next_attempt_at NULLS LAST
                            LIMIT 1) d ON true
            WHERE e.status = 'queued'
            ORDER BY e.queued_at NULLS LAST, e.id
            LIMIT 1"""
    )
    return dict(row) if row is not None else None
