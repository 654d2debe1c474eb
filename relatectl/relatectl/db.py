"""relatectl db: schema migrations."""

from __future__ import annotations

from typing import TYPE_CHECKING

from relate.store import migrate
from relatectl.cli import App, JsonOption
from relatectl.common import console, print_rows, with_pool

if TYPE_CHECKING:
    import asyncpg

app = App(help="Database schema: apply migrations, show the version.")


@app.command("migrate")
def migrate_cmd() -> None:
    """Apply every pending schema migration (safe to run at any time)."""

    async def go(pool: asyncpg.Pool) -> list[migrate.Migration]:
        async with pool.acquire() as conn:
            return await migrate.migrate(conn)

    ran = with_pool(go, check_schema=False)
    if not ran:
        console.print(f"schema is current (version {migrate.latest_version()}); nothing to do", highlight=False)
    for mig in ran:
        console.print(f"applied {mig.version:04d}_{mig.name}", highlight=False)


@app.command("status")
def status_cmd(as_json: bool = JsonOption) -> None:
    """Show each migration shipped with this release and whether it is applied."""

    async def go(pool: asyncpg.Pool) -> dict[int, tuple[str, object]]:
        async with pool.acquire() as conn:
            return await migrate.applied(conn)

    done = with_pool(go, check_schema=False)
    rows = [
        {
            "version": mig.version,
            "name": mig.name,
            "applied": mig.version in done,
            "applied_at": done[mig.version][1] if mig.version in done else None,
        }
        for mig in migrate.available()
    ]
    print_rows(
        rows,
        [("version", "Version"), ("name", "Name"), ("applied", "Applied"), ("applied_at", "Applied at", 1)],
        as_json=as_json,
        title="Migrations",
    )
    if not as_json:
        pending = [r for r in rows if not r["applied"]]
        if pending:
            console.print(f"{len(pending)} pending: run `relatectl db migrate`", highlight=False)
        else:
            console.print(f"schema is current (version {migrate.latest_version()})", highlight=False)
