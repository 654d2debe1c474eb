"""What every relatectl command shares: config, database, output, errors.

Errors are one line on stderr and exit code 1; usage errors are typer's
(exit code 2). Lists print a rich table, or JSON with ``--json``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from relate.errors import RelateError
from relate.mail.address import domain_to_unicode
from relatectl.cli import lazy_module
from relatectl.cli import state as state  # re-exported: commands read state.config_path here

if TYPE_CHECKING:  # imported when a command first uses them, not by --help or a TAB completion
    import asyncpg

    from relate import config as config_mod
    from relate.config import Config
    from relate.services import setup as setup_service
    from relate.store import db
else:
    asyncpg = lazy_module("asyncpg")
    config_mod = lazy_module("relate.config")
    setup_service = lazy_module("relate.services.setup")
    db = lazy_module("relate.store.db")

T = TypeVar("T")

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def print_error(message: str) -> None:
    """One ``error: ...`` line on standard error."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)


def fail(message: str, code: int = 1) -> NoReturn:
    print_error(message)
    raise typer.Exit(code)


def load_config() -> Config:
    try:
        return config_mod.load(state.config_path)
    except config_mod.ConfigError as exc:
        fail(str(exc))


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine, turning Relate Mail's errors into one line and exit 1."""
    try:
        import asyncio  # here: --help and TAB completion of a noun do not need it

        return asyncio.run(coro)
    except (RelateError, config_mod.ConfigError) as exc:
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
    """A value as a line of text shows it: local time to the minute, lists joined, '-' for nothing."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M")
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def table_cell(value: Any) -> str:
    """A value as a table column shows it: as ``cell``, but a time this year without its year (``12-07 18:05``)."""
    if isinstance(value, datetime):
        local = value.astimezone()
        if local.year == datetime.now().year:
            return local.strftime("%m-%d %H:%M")
    return cell(value)


# A column: (key, heading), or (key, heading, drop): drop > 0 marks a column that a narrow terminal may go
# without, the highest number first (the reader gets it back from --json or a wider terminal).
Column = tuple[str, str] | tuple[str, str, int]


_WORD = re.compile(r"[^\s,]+")
_PROSE = 24  # columns a column of prose (an error, a reply) keeps before other columns are dropped for it


def print_table(title: str, columns: Sequence[Column], rows: Sequence[Sequence[str | Text]]) -> None:
    """A table that fits the terminal without cutting a value short.

    Columns that may go (``drop`` > 0) go when every row leaves them empty, then one by one, highest
    ``drop`` first, while the table does not fit: each column counts its longest value, but a column of
    prose (an error) only up to 24 characters, since it wraps. No word is broken: an id, an address, a
    time stays whole while the terminal has room for it, else folds; prose wraps at spaces; nothing ends in '…'.
    """
    texts = [[c if isinstance(c, str) else c.plain for c in row] for row in rows]

    def drop_of(i: int) -> int:
        return columns[i][2] if len(columns[i]) == 3 else 0  # type: ignore[misc]

    def longest_word(i: int) -> int:
        words = [len(w) for row in texts for w in _WORD.findall(row[i])]
        return min(max([*words, *(len(w) for w in columns[i][1].split())]), console.width - 16)

    def needed(i: int) -> int:
        natural = max([cell_len(columns[i][1]), *(cell_len(line) for row in texts for line in row[i].splitlines())])
        return min(natural, max(longest_word(i), _PROSE)) + 3  # a space each side and a rule

    keep = [i for i in range(len(columns)) if not (drop_of(i) and all(row[i] in {"-", ""} for row in texts))]
    while sum(needed(i) for i in keep) + 1 > console.width:
        droppable = [i for i in keep if drop_of(i)]
        if not droppable:
            break
        keep.remove(max(droppable, key=lambda i: (drop_of(i), i)))
    # Whole words where the terminal allows; two long addresses side by side fold the longer one.
    least = {i: longest_word(i) for i in keep}
    room = console.width - 3 * len(keep) - 2  # padding, rules, and one for rich rounding its shares
    while sum(least.values()) > room and max(least.values()) > 1:
        widest = max(least, key=lambda i: least[i])
        least[widest] -= 1
    table = Table(title=title, title_justify="left")
    for i in keep:
        table.add_column(columns[i][1], overflow="fold", min_width=least[i])
    for row in rows:
        table.add_row(*(row[i] for i in keep))
    console.print(table)
    gone = [i for i in range(len(columns)) if i not in keep and any(row[i] not in {"-", ""} for row in texts)]
    if gone:
        names = ", ".join(columns[i][1] for i in gone)
        note = Text(f"(left out at this width: {names}; --json has every field)", style="dim")
        console.print(note, soft_wrap=False)


def shown_domain(name: str) -> str:
    """A stored domain as the admin reads it: ``münchen.de (xn--mnchen-3ya.de)``, or the name alone."""
    readable = domain_to_unicode(name)
    return name if readable == name else f"{readable} ({name})"


def print_rows(rows: Sequence[dict[str, Any]], columns: Sequence[Column], *, as_json: bool, title: str) -> None:
    """A table of ``rows`` (``columns``: see Column), or JSON of the same keys."""
    if as_json:
        print_json([{column[0]: row.get(column[0]) for column in columns} for row in rows])
        return
    if not rows:
        console.print(f"no {title.lower()}", highlight=False)
        return
    print_table(title, columns, [[Text(table_cell(row.get(column[0]))) for column in columns] for row in rows])
