"""What every relatectl command shares: config, database, output, errors.

Errors are one line on stderr and exit code 1; usage errors are typer's
(exit code 2). Lists print a rich table, or JSON with ``--json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import asyncpg
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from relate import config as config_mod
from relate.config import Config, ConfigError
from relate.errors import RelateError
from relate.services import setup as setup_service
from relate.store import db

T = TypeVar("T")

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

JsonOption = typer.Option(False, "--json", help="Print JSON instead of a table.")


@dataclass
class State:
    config_path: Path | None = None


state = State()


def print_error(message: str) -> None:
    """One ``error: ...`` line on standard error."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)


def fail(message: str, code: int = 1) -> NoReturn:
    print_error(message)
    raise typer.Exit(code)


def load_config() -> Config:
    try:
        return config_mod.load(state.config_path)
    except ConfigError as exc:
        fail(str(exc))


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine, turning Relate Mail's errors into one line and exit 1."""
    try:
        return asyncio.run(coro)
    except (RelateError, ConfigError) as exc:
        fail(str(exc))
    except (OSError, asyncpg.PostgresError) as exc:
        fail(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


async def as_peer(cfg: Config, opener: Callable[[], Awaitable[T]]) -> T:
    """Open a connection (or pool) as this process; if refused, as the DSN's own user.

    Root only: a packaged install reaches PostgreSQL by peer authentication as
    the ``relate`` role, which the kernel reports from the effective uid at
    connect. Every connection of a pool must open inside, so pools opened
    here have pool_min == pool_max.
    """
    try:
        return await opener()
    except db.DatabaseUnavailable as refused:
        peer = setup_service.peer_user(cfg.database.dsn)
        if peer is None or os.geteuid() != 0:
            raise
        try:
            with setup_service.acting_as(peer):
                return await opener()
        except db.DatabaseUnavailable as again:
            if str(again) == str(refused):
                raise
            # Both answers: the first is often the one that says what is wrong (a missing database), the
            # second why the peer attempt failed too (a socket that user cannot open).
            detail = str(again).removeprefix("cannot connect to the database: ")
            raise db.DatabaseUnavailable(f"{refused}; and as the system user {peer}: {detail}") from None


def with_pool(fn: Callable[[asyncpg.Pool], Awaitable[T]], *, check_schema: bool = True, cfg: Config | None = None) -> T:
    """Open a small pool (on ``cfg``, or the loaded config), run ``fn`` with it, close it."""
    cfg = cfg or load_config()
    cfg.database.pool_min = cfg.database.pool_max = 2  # both open at once (see as_peer)

    async def main() -> T:
        pool = await as_peer(cfg, lambda: db.create_pool(cfg.database, check_schema=check_schema))
        try:
            return await fn(pool)
        finally:
            await pool.close()

    return run(main())


def _jsonable(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(_jsonable(data), indent=2, ensure_ascii=False) + "\n")


def cell(value: Any) -> str:
    """A value as a table shows it: local time to the minute, lists joined, '-' for nothing."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M")
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def print_rows(
    rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], *, as_json: bool, title: str
) -> None:
    """A table of ``rows`` (``columns`` = (key, heading) pairs), or JSON of the same keys."""
    if as_json:
        print_json([{key: row.get(key) for key, _ in columns} for row in rows])
        return
    if not rows:
        console.print(f"no {title.lower()}", highlight=False)
        return
    table = Table(title=title, title_justify="left")
    for _, heading in columns:
        table.add_column(heading)
    for row in rows:
        table.add_row(*(Text(cell(row.get(key))) for key, _ in columns))
    console.print(table)
