"""Numbered SQL migrations shipped in the package.

Files are ``migrations/NNNN_name.sql``; each is applied once, in number
order, in its own transaction, and recorded in ``schema_migrations``. A
session-level advisory lock serialises concurrent migrators (two daemons
started at once, or `relatectl setup` racing a package upgrade), so each file
runs exactly once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from relate.errors import SchemaOutdated

_LOCK_KEY = 0x52454C415445  # "RELATE": the advisory lock id of migrations
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """Every migration shipped in the package, in order."""
    found = []
    for entry in resources.files("relate.store").joinpath("migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.version)
    return found


def latest_version() -> int:
    return available()[-1].version


async def _ensure_table(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version     integer PRIMARY KEY,
               name        text NOT NULL,
               applied_at  timestamptz NOT NULL DEFAULT now())"""
    )


async def applied(conn: asyncpg.Connection) -> dict[int, tuple[str, object]]:
    """Applied migrations: version -> (name, applied_at). Empty on a new database."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
    return {r["version"]: (r["name"], r["applied_at"]) for r in rows}


async def current_version(conn: asyncpg.Connection) -> int:
    done = await applied(conn)
    return max(done, default=0)


async def migrate(conn: asyncpg.Connection, up_to: int | None = None) -> list[Migration]:
    """Apply every pending migration (``up_to``: those numbered up to it only); returns those applied now."""
    ran: list[Migration] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await _ensure_table(conn)
        done = await applied(conn)
        for mig in available():
            if mig.version in done or (up_to is not None and mig.version > up_to):
                continue
            async with conn.transaction():
                await conn.execute(mig.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", mig.version, mig.name
                )
            ran.append(mig)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return ran


async def check_current(conn: asyncpg.Connection) -> None:
    """Refuse to run on a schema older than this code expects (any shipped migration not applied)."""
    done = await applied(conn)
    have = max(done, default=0)
    want = latest_version()
    if have > want:
        raise SchemaOutdated(
            f"database schema is at version {have}, newer than this release knows ({want}): upgrade Relate Mail"
        )
    missing = [mig.version for mig in available() if mig.version not in done]
    if missing:
        gaps = f" (missing {', '.join(f'{v:04d}' for v in missing)})" if have else ""
        raise SchemaOutdated(
            f"database schema is at version {have}, this release needs {want}{gaps}: run `relatectl db migrate`"
        )
