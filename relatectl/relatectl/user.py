"""relatectl user: mailbox owners."""

from __future__ import annotations

from typing import Any

import asyncpg
import typer
from rich.markup import escape
from rich.text import Text

from relate.services import accounts
from relatectl.common import JsonOption, console, print_json, print_rows, with_pool

app = typer.Typer(help="Users (mailbox owners).", no_args_is_help=True)


@app.command("add")
def add(
    address: str = typer.Argument(..., help="Primary address, at a hosted domain."),
    name: str | None = typer.Option(None, "--name", help="Display name."),
) -> None:
    """Create a user with INBOX, Sent, Drafts, Trash, Junk and Archive."""

    async def go(pool: asyncpg.Pool) -> dict[str, Any]:
        return await accounts.add_user(pool, address, name)

    row = with_pool(go)
    console.print(
        f"added user {row['address']}; give it a key: relatectl key create {row['address']} --scope imap,smtp,pop3,app",
        highlight=False,
    )


@app.command("list")
def list_cmd(
    domain: str | None = typer.Option(None, "--domain", help="Only users of this domain."),
    as_json: bool = JsonOption,
) -> None:
    """List users with their alias and key counts."""

    async def go(pool: asyncpg.Pool) -> list[dict[str, Any]]:
        return await accounts.list_users(pool, domain)

    rows = with_pool(go)
    print_rows(
        rows,
        [
            ("address", "Address"),
            ("display_name", "Name"),
            ("aliases", "Aliases"),
            ("keys", "Keys"),
            ("disabled", "Disabled"),
            ("created_at", "Created"),
        ],
        as_json=as_json,
        title="Users",
    )


@app.command("show")
def show(
    address: str = typer.Argument(..., help="The user's address or an alias."), as_json: bool = JsonOption
) -> None:
    """Show a user's aliases, folders (messages, unread, size) and keys."""

    async def go(pool: asyncpg.Pool) -> dict[str, Any]:
        return await accounts.show_user(pool, address)

    user = with_pool(go)
    if as_json:
        print_json(user)
        return
    console.print(f"[bold]{escape(user['address'])}[/]  {escape(user['display_name'] or '')}", highlight=False)
    console.print(Text(f"aliases: {', '.join(user['aliases']) or '-'}"))
    print_rows(
        user["mailboxes"],
        [
            ("name", "Folder"),
            ("special_use", "Special use"),
            ("messages", "Messages"),
            ("unread", "Unread"),
            ("bytes", "Bytes"),
        ],
        as_json=False,
        title="Folders",
    )
    print_rows(
        user["keys"],
        [
            ("id", "Key id"),
            ("name", "Name"),
            ("scopes", "Scopes"),
            ("last_used_at", "Last used"),
            ("expires_at", "Expires"),
        ],
        as_json=False,
        title="Keys",
    )


@app.command("remove")
def remove(
    address: str = typer.Argument(..., help="The user's primary address."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete a user with all its mail, folders, aliases and keys."""
    if not yes:
        typer.confirm(f"Delete {address} and all its mail?", abort=True)

    async def go(pool: asyncpg.Pool) -> None:
        await accounts.remove_user(pool, address)

    with_pool(go)
    console.print(f"removed user {address.lower()}", highlight=False)
