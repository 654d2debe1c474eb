"""SQL for failed-login counts (table ``auth_failures``, migration 0013); the policy is in relate/auth.py.

Every statement here is one round trip and uses the database's clock, so
hosts whose clocks disagree still share one window. A login is counted
under its *canonical* form: the primary address of the user it names (an
alias counts for its user), else the login as given (a bearer key's prefix,
an unknown address, "-").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from relate.store.db import Queryable

# The login of a client's own row: the count of every failure from that address.
WHOLE_ADDRESS = ""
# Expired rows of other clients deleted with each recorded failure (bounded work per failure).
_PRUNE_BATCH = 20

# $1 client, $2 login as given.
_CANONICAL = """WITH who AS (
    SELECT coalesce((SELECT u.address FROM addresses a JOIN users u ON u.id = a.user_id WHERE a.address = $2),
                    $2) AS login)"""


@dataclass(frozen=True)
class LockState:
    """Whether a (client, login) may try now, and whether it has a count a success should clear."""

    locked_until: datetime | None
    counted: bool


@dataclass(frozen=True)
class Recorded:
    """What recording one failure did."""

    counted: bool  # False: the client or the login was locked out already, nothing was counted
    locked: tuple[str, ...]  # the rows this failure locked: the canonical login and/or WHOLE_ADDRESS


async def state(conn: Queryable, client: str, login: str) -> LockState:
    """The lockout in force for (client, login) or for the whole client address, if any."""
    row = await conn.fetchrow(
        f"""{_CANONICAL}
            SELECT max(f.locked_until) FILTER (WHERE f.locked_until > now()) AS locked_until,
                   coalesce(bool_or(f.login <> ''), false) AS counted
              FROM auth_failures f, who
             WHERE f.client = $1 AND f.login IN (who.login, '')""",
        client,
        login,
    )
    return LockState(row["locked_until"], row["counted"])


async def record(
    conn: Queryable,
    client: str,
    login: str,
    *,
    window: float,
    max_per_login: int,
    max_per_address: int,
    lockout: float,
) -> Recorded:
    """Count one failure for (client, login) and for the client alone; lock whichever reaches its cap.

    Nothing is counted while either is locked out. Each row keeps the failures
    of the last ``window`` seconds (at most its cap); the failure that brings
    a row to its cap empties it and locks it for ``lockout`` seconds.
    ``ON CONFLICT DO UPDATE`` computes from the row as committed, so
    concurrent failures on any number of hosts are all counted.
    """
    rows = await conn.fetch(
        f"""{_CANONICAL},
            locked AS (
                SELECT 1 FROM auth_failures f, who
                 WHERE f.client = $1 AND f.login IN (who.login, '') AND f.locked_until > now()),
            keys (login, cap) AS (
                SELECT who.login, $3::int FROM who WHERE NOT EXISTS (SELECT 1 FROM locked)
                UNION ALL
                SELECT '', $4::int WHERE NOT EXISTS (SELECT 1 FROM locked)),
            -- Other clients' rows only: this statement's own rows are updated below, never deleted.
            pruned AS (
                DELETE FROM auth_failures WHERE ctid = ANY (ARRAY(
                    SELECT ctid FROM auth_failures
                     WHERE expires_at < now() AND client <> $1
                     ORDER BY expires_at LIMIT {_PRUNE_BATCH} FOR UPDATE SKIP LOCKED)))
            INSERT INTO auth_failures AS f (client, login, failures, locked_until, expires_at)
            SELECT $1, k.login,
                   CASE WHEN k.cap > 1 THEN ARRAY[now()] ELSE '{{}}' END,
                   CASE WHEN k.cap > 1 THEN NULL ELSE now() + make_interval(secs => $6) END,
                   now() + make_interval(secs => CASE WHEN k.cap > 1 THEN $5 ELSE greatest($5, $6) END)
              FROM keys k
            ON CONFLICT (client, login) DO UPDATE SET (failures, locked_until, expires_at) = (
                SELECT CASE WHEN c.capped THEN '{{}}' ELSE c.recent END,
                       CASE WHEN c.capped THEN now() + make_interval(secs => $6)
                            WHEN f.locked_until > now() THEN f.locked_until END,
                       greatest(now() + make_interval(secs => $5),
                                CASE WHEN c.capped THEN now() + make_interval(secs => $6) ELSE f.locked_until END)
                  FROM (SELECT r.recent, cardinality(r.recent) >= CASE WHEN f.login = '' THEN $4 ELSE $3 END AS capped
                          FROM (SELECT ARRAY(SELECT t FROM unnest(f.failures) t
                                              WHERE t > now() - make_interval(secs => $5) ORDER BY t)
                                       || now() AS recent) r) c)
            RETURNING f.login, cardinality(f.failures) = 0 AS locked_now""",
        client,
        login,
        max_per_login,
        max_per_address,
        float(window),
        float(lockout),
    )
    return Recorded(bool(rows), tuple(r["login"] for r in rows if r["locked_now"]))


async def clear(conn: Queryable, client: str, login: str) -> None:
    """Forget the failures of (client, login) (a success); the client's own count stays."""
    await conn.execute(
        f"""{_CANONICAL}
            DELETE FROM auth_failures f USING who WHERE f.client = $1 AND f.login = who.login""",
        client,
        login,
    )
