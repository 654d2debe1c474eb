"""SQL for cached MTA-STS policies (table ``mta_sts_policies``, migration 0028); policy: relate/queue/mtasts.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from relate.mail.mtasts import Policy
from relate.store.db import Queryable


@dataclass(frozen=True)
class Cached:
    policy_id: str
    policy: Policy
    fetched_at: datetime
    expires_at: datetime


async def get(conn: Queryable, domain: str) -> Cached | None:
    """The policy last fetched for ``domain``, expired or not."""
    row = await conn.fetchrow(
        "SELECT policy_id, mode, mx, max_age, fetched_at, expires_at FROM mta_sts_policies WHERE domain = $1", domain
    )
    if row is None:
        return None
    policy = Policy(row["mode"], tuple(row["mx"]), row["max_age"])
    return Cached(row["policy_id"], policy, row["fetched_at"], row["expires_at"])


async def get_many(conn: Queryable, domains: list[str]) -> dict[str, Cached]:
    """The policies last fetched for ``domains`` (those that have one), expired or not."""
    rows = await conn.fetch(
        """SELECT domain, policy_id, mode, mx, max_age, fetched_at, expires_at FROM mta_sts_policies
            WHERE domain = ANY($1::text[])""",
        domains,
    )
    return {
        r["domain"]: Cached(
            r["policy_id"], Policy(r["mode"], tuple(r["mx"]), r["max_age"]), r["fetched_at"], r["expires_at"]
        )
        for r in rows
    }


async def put(conn: Queryable, domain: str, policy_id: str, policy: Policy, now: datetime) -> None:
    """Store a policy just fetched; it is valid for its max_age from ``now``."""
    await conn.execute(
        """INSERT INTO mta_sts_policies (domain, policy_id, mode, mx, max_age, fetched_at, expires_at)
           VALUES ($1, $2, $3, $4, $5::integer, $6::timestamptz, $6::timestamptz + $5::integer * interval '1 second')
           ON CONFLICT (domain) DO UPDATE
             SET policy_id = excluded.policy_id, mode = excluded.mode, mx = excluded.mx, max_age = excluded.max_age,
                 fetched_at = excluded.fetched_at, expires_at = excluded.expires_at""",
        domain,
        policy_id,
        policy.mode,
        list(policy.mx),
        policy.max_age,
        now,
    )
