"""SQL for TLS-RPT results (table ``tls_results``, migration 0028); the policy is relate/queue/tlsrpt.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from relate.store.db import Queryable


@dataclass(frozen=True)
class Tally:
    """Sessions of one kind: successes (mx_host and result_type '') or one failure kind at one MX host."""

    policy_domain: str
    day: date
    policy_type: str  # sts | no-policy-found
    mx_host: str
    result_type: str
    policy: str  # the policy's lines joined with "\n" (sts), else ""


async def add(conn: Queryable, counts: Sequence[tuple[Tally, int]]) -> None:
    """Add these counts (one statement for them all; concurrent daemons' additions all count)."""
    if not counts:
        return
    await conn.executemany(
        """INSERT INTO tls_results AS t (policy_domain, day, policy_type, mx_host, result_type, sessions, policy)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (policy_domain, day, policy_type, mx_host, result_type) DO UPDATE
              SET sessions = t.sessions + excluded.sessions, policy = excluded.policy""",
        [(k.policy_domain, k.day, k.policy_type, k.mx_host, k.result_type, n, k.policy) for k, n in counts],
    )


async def due(conn: Queryable, before: date, limit: int) -> list[tuple[str, date]]:
    """(policy domain, day) pairs with results from days before ``before`` (not reported yet)."""
    rows = await conn.fetch(
        "SELECT DISTINCT policy_domain, day FROM tls_results WHERE day < $1 ORDER BY day, policy_domain LIMIT $2",
        before,
        limit,
    )
    return [(r["policy_domain"], r["day"]) for r in rows]


async def take(conn: Queryable, domain: str, day: date) -> list[tuple[Tally, int]]:
    """Delete and return one domain's results of one day; rows another daemon holds are left to it. Call in the
    transaction that queues the report, so that the report is queued once, or not at all."""
    rows = await conn.fetch(
        """DELETE FROM tls_results WHERE (policy_domain, day, policy_type, mx_host, result_type) IN (
               SELECT policy_domain, day, policy_type, mx_host, result_type FROM tls_results
                WHERE policy_domain = $1 AND day = $2 FOR UPDATE SKIP LOCKED)
           RETURNING policy_domain, day, policy_type, mx_host, result_type, sessions, policy""",
        domain,
        day,
    )
    return [
        (
            Tally(r["policy_domain"], r["day"], r["policy_type"], r["mx_host"], r["result_type"], r["policy"]),
            r["sessions"],
        )
        for r in rows
    ]
