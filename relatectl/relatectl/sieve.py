"""relatectl sieve: users' Sieve filter scripts (docs/sieve.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from relate.errors import Invalid
from relatectl import complete
from relatectl.cli import App, JsonOption, lazy_module
from relatectl.common import console, fail, load_config, print_rows, with_pool

if TYPE_CHECKING:
    import asyncpg

    from relate.services import sieve
else:
    sieve = lazy_module("relate.services.sieve")

app = App(help="Sieve filters: each user's scripts, one of them run at every delivery.")


def _read(path: str) -> str:
    data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise typer.BadParameter("a Sieve script is UTF-8") from None


@app.command("put")
def put(
    user: str = typer.Argument(..., help="The user's address.", autocompletion=complete.users),
    name: str = typer.Argument(..., help="The script's name."),
    file: str = typer.Argument(..., metavar="FILE", help="The script (- for standard input)."),
    activate: bool = typer.Option(False, "--activate", help="Make it the user's active script."),
) -> None:
    """Store a script for USER under NAME (replacing one of that name) once it compiles."""
    text = _read(file)
    cfg = load_config()

    async def go(pool: asyncpg.Pool) -> None:
        await sieve.put(pool, user, name, text, cfg.sieve, activate=activate)

    with_pool(go, cfg=cfg)
    console.print(f"stored {name}" + (" (active)" if activate else ""), highlight=False)


@app.command("check")
def check(file: str = typer.Argument(..., metavar="FILE", help="The script (- for standard input).")) -> None:
    """Check that a script compiles (with the configured limits), without storing it."""
    try:
        sieve.check(_read(file), load_config().sieve)
    except Invalid as exc:
        fail(str(exc))
    console.print("ok", highlight=False)


@app.command("activate")
def activate(
    user: str = typer.Argument(..., help="The user's address.", autocompletion=complete.users),
    name: str | None = typer.Argument(None, help="The script to run; none given: no script runs."),
) -> None:
    """Make NAME the script run at USER's deliveries (only one is); without NAME, none."""

    async def go(pool: asyncpg.Pool) -> None:
        await sieve.activate(pool, user, name)

    with_pool(go)
    console.print(f"active: {name}" if name else "no active script", highlight=False)


@app.command("list")
def list_cmd(
    user: str = typer.Argument(..., help="The user's address.", autocompletion=complete.users),
    as_json: bool = JsonOption,
) -> None:
    """List USER's scripts, the active one marked."""

    async def go(pool: asyncpg.Pool) -> list[dict[str, Any]]:
        return [
            {"name": s.name, "active": s.active, "size": s.size, "updated_at": s.updated_at}
            for s in await sieve.list_scripts(pool, user)
        ]

    rows = with_pool(go)
    print_rows(
        rows,
        [("name", "Name"), ("active", "Active"), ("size", "Bytes"), ("updated_at", "Changed", 1)],
        as_json=as_json,
        title="Sieve scripts",
    )


@app.command("show")
def show(
    user: str = typer.Argument(..., help="The user's address.", autocompletion=complete.users),
    name: str = typer.Argument(..., help="The script's name."),
) -> None:
    """Print a script."""

    async def go(pool: asyncpg.Pool) -> str:
        return await sieve.get(pool, user, name)

    sys.stdout.write(with_pool(go))


@app.command("delete")
def delete(
    user: str = typer.Argument(..., help="The user's address.", autocompletion=complete.users),
    name: str = typer.Argument(..., help="The script's name."),
) -> None:
    """Delete a script (the active one too: then none runs)."""

    async def go(pool: asyncpg.Pool) -> None:
        await sieve.delete(pool, user, name)

    with_pool(go)
    console.print(f"deleted {name}", highlight=False)
