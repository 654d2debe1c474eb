"""relatectl alias: extra addresses that deliver to a user."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from relate.mail.address import address_to_unicode
from relatectl import complete
from relatectl.cli import App, JsonOption, lazy_module
from relatectl.common import console, print_rows, with_pool

if TYPE_CHECKING:
    import asyncpg

    from relate.services import accounts
else:
    accounts = lazy_module("relate.services.accounts")

app = App(help="Aliases: more addresses for a user.")


@app.command("add")
def add(
    alias: str = typer.Argument(..., help="The new address, at a hosted domain."),
    target: str = typer.Argument(..., help="The user it delivers to.", autocompletion=complete.users),
) -> None:
    """Make ALIAS deliver to TARGET's mailbox (and let TARGET send as ALIAS)."""

    async def go(pool: asyncpg.Pool) -> None:
        await accounts.add_alias(pool, alias, target)

    with_pool(go)
    console.print(f"added alias {alias.lower()} -> {target.lower()}", highlight=False)


@app.command("list")
def list_cmd(
    domain: str | None = typer.Option(
        None, "--domain", help="Only aliases at this domain.", autocompletion=complete.domains
    ),
    as_json: bool = JsonOption,
) -> None:
    """List aliases and the users they deliver to."""

    async def go(pool: asyncpg.Pool) -> list[dict[str, Any]]:
        return await accounts.list_aliases(pool, domain)

    rows = with_pool(go)
    if not as_json:
        for row in rows:
            row["alias"], row["target"] = address_to_unicode(row["alias"]), address_to_unicode(row["target"])
    print_rows(
        rows, [("alias", "Alias"), ("target", "User"), ("created_at", "Created", 1)], as_json=as_json, title="Aliases"
    )


@app.command("remove")
def remove(alias: str = typer.Argument(..., help="The alias address.", autocompletion=complete.aliases)) -> None:
    """Remove an alias (a user's primary address cannot be removed this way)."""

    async def go(pool: asyncpg.Pool) -> None:
        await accounts.remove_alias(pool, alias)

    with_pool(go)
    console.print(f"removed alias {alias.lower()}", highlight=False)
