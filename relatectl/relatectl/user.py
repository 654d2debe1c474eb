"""relatectl user: mailbox owners."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.text import Text

from relate.mail.address import address_to_unicode
from relatectl import complete
from relatectl.cli import App, JsonOption, lazy_module
from relatectl.common import Column, cell, console, fail, load_config, print_json, print_rows, with_pool
from relatectl.sizes import format_size, parse_size

if TYPE_CHECKING:
    import asyncpg

    from relate.services import accounts, export, senders
else:
    accounts = lazy_module("relate.services.accounts")
    export = lazy_module("relate.services.export")
    senders = lazy_module("relate.services.senders")

app = App(help="Users (mailbox owners).")
User = typer.Argument(..., help="The user's primary address.", metavar="ADDRESS", autocompletion=complete.users)


@app.command("add")
def add(
    address: str = typer.Argument(..., help="Primary address, at a hosted domain."),
    name: str | None = typer.Option(None, "--name", help="Display name."),
) -> None:
    """Create a user with INBOX, Sent, Drafts, Trash, Junk and Archive."""

    async def go(pool: asyncpg.Pool) -> dict[str, Any]:
        return await accounts.add_user(pool, address, name)

    row = with_pool(go)
    shown = address_to_unicode(row["address"])
    console.print(
        f"added user {shown}; give it a key: relatectl key create {shown} --scope imap,smtp,pop3,app",
        highlight=False,
    )


@app.command("list")
def list_cmd(
    domain: str | None = typer.Option(
        None, "--domain", help="Only users of this domain.", autocompletion=complete.domains
    ),
    as_json: bool = JsonOption,
) -> None:
    """List users with their alias and key counts and their quota (usage / limit)."""
    cfg = load_config()

    async def go(pool: asyncpg.Pool) -> list[dict[str, Any]]:
        return await accounts.list_users(pool, domain, cfg.quota)

    rows = with_pool(go, cfg=cfg)
    columns: list[Column] = [
        ("address", "Address"),
        ("display_name", "Name", 2),
        ("aliases", "Aliases", 4),
        ("keys", "Keys", 4),
        ("disabled", "Disabled", 3),
        ("created_at", "Created", 5),
    ]
    if as_json:
        print_rows(rows, [*columns, ("quota", "Quota")], as_json=True, title="Users")
        return
    for row in rows:
        row["address"] = address_to_unicode(row["address"])
        row["storage"] = _usage_text(row["quota"]["storage"], format_size)
        row["messages"] = _usage_text(row["quota"]["messages"], str)
    print_rows(rows, [*columns, ("storage", "Storage"), ("messages", "Messages", 1)], as_json=False, title="Users")


def _usage_text(resource: dict[str, Any], show: Any) -> str:
    """``1.2 MiB / 2 GiB`` (usage / limit), or the usage alone when there is no limit."""
    used = show(resource["used"])
    return used if resource["limit"] is None else f"{used} / {show(resource['limit'])}"


def _quota_line(address: str, view: dict[str, Any]) -> str:
    """One line for `user show` and `user quota`."""
    storage, messages = view["storage"], view["messages"]
    parts = [
        f"storage {_usage_text(storage, format_size)}" + ("" if storage["limit"] is not None else " (no limit)"),
        f"messages {_usage_text(messages, str)}" + ("" if messages["limit"] is not None else " (no limit)"),
    ]
    line = f"quota of {address}: " + ", ".join(parts)
    if view["full"]:
        since = view["full_since"]
        line += "; FULL" + (f" since {cell(since)}" if since is not None else "")
    return line


@app.command("show")
def show(address: str = User, as_json: bool = JsonOption) -> None:
    """Show a user's aliases, quota, folders (messages, unread, size) and keys."""
    cfg = load_config()

    async def go(pool: asyncpg.Pool) -> dict[str, Any]:
        return await accounts.show_user(pool, address, cfg.quota)

    user = with_pool(go, cfg=cfg)
    if as_json:
        print_json(user)
        return
    console.print(
        f"[bold]{escape(address_to_unicode(user['address']))}[/]  {escape(user['display_name'] or '')}",
        highlight=False,
    )
    console.print(Text(f"aliases: {', '.join(map(address_to_unicode, user['aliases'])) or '-'}"))
    console.print(Text(_quota_line(user["address"], user["quota"])))
    print_rows(
        user["mailboxes"],
        [
            ("name", "Folder"),
            ("special_use", "Special use", 1),
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
            ("last_used_at", "Last used", 1),
            ("expires_at", "Expires", 2),
        ],
        as_json=False,
        title="Keys",
    )


@app.command("quota")
def quota(
    address: str = User,
    storage: str | None = typer.Option(
        None,
        "--storage",
        metavar="SIZE",
        help="Limit on the bytes of the user's messages, every folder: 500M, 2G, 1.5T, or none.",
    ),
    messages: str | None = typer.Option(
        None, "--messages", metavar="N", help="Limit on the number of messages, or none."
    ),
    no_limits: bool = typer.Option(False, "--none", help="No limit at all for this user, whatever the defaults."),
    default: bool = typer.Option(
        False, "--default", help="Follow the configured defaults (quota.storage, quota.messages) again."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Show a user's quota (usage and limits), or set its limits; without options, only show."""
    changes: dict[str, int | None] = {}
    if (no_limits or default) and (storage is not None or messages is not None or (no_limits and default)):
        fail("--none and --default stand alone: give one of them, or --storage/--messages")
    if no_limits:
        changes = {"storage": accounts.NO_LIMIT, "messages": accounts.NO_LIMIT}
    elif default:
        changes = {"storage": None, "messages": None}
    if storage is not None:
        changes["storage"] = _limit(storage, "--storage", parse_size)
    if messages is not None:
        changes["messages"] = _limit(messages, "--messages", _count)
    cfg = load_config()

    async def go(pool: asyncpg.Pool) -> dict[str, Any]:
        user = await accounts.get_user(pool, address)
        if changes:
            await accounts.set_quota(pool, address, changes)
        view = await accounts.user_quota(pool, user["id"], cfg.quota)
        return {"address": user["address"], **view}

    view = with_pool(go, cfg=cfg)
    if as_json:
        print_json(view)
        return
    console.print(Text(_quota_line(view["address"], view)))


def _limit(text: str, option: str, parse: Any) -> int:
    """A limit as given to --storage or --messages: ``none`` (no limit) or a positive value."""
    if text.strip().lower() in {"none", "unlimited"}:
        return accounts.NO_LIMIT
    try:
        value: int = parse(text)
    except ValueError as exc:
        fail(f"{option}: {exc}")
    return value


def _count(text: str) -> int:
    stripped = text.strip()
    if not stripped.isdigit() or len(stripped) > 18 or int(stripped) < 1:
        raise ValueError(f"expected a number of messages from 1, or none, got {text[:40]!r}")
    return int(stripped)


@app.command("limits")
def limits(
    address: str = typer.Argument(
        ..., help="The user's address or an alias.", metavar="ADDRESS", autocompletion=complete.addresses
    ),
    messages: str | None = typer.Option(
        None,
        "--messages-per-day",
        metavar="N",
        help="Messages the user may send in 24 hours: a number, none, or default.",
    ),
    recipients: str | None = typer.Option(
        None,
        "--recipients-per-day",
        metavar="N",
        help="First-time recipients (never written to before) in 24 hours: a number, none, or default.",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Show a user's sending in the last 24 hours against its limits, or set its own limits.

    Without options, only show. "none" lifts a limit for this user, "default"
    follows submission.limits.messages_per_day / recipients_per_day again. Over a
    limit, submission answers 451 4.7.0 and the REST API 429.
    """
    changes: dict[str, int | None] = {}
    if messages is not None:
        changes["messages"] = _sending_limit(messages, "--messages-per-day")
    if recipients is not None:
        changes["recipients"] = _sending_limit(recipients, "--recipients-per-day")
    cfg = load_config()

    async def go(pool: asyncpg.Pool) -> dict[str, Any]:
        if changes:
            await accounts.set_sending_limits(pool, address, changes)
        return await accounts.sending_view(pool, address, cfg.submission.limits)

    view = with_pool(go, cfg=cfg)
    if as_json:
        print_json(view)
        return
    parts = []
    for name, label in (("messages", "messages"), ("recipients", "new recipients")):
        item = view[name]
        limit = "no limit" if item["limit"] is None else str(item["limit"])
        parts.append(f"{label} {item['used']} / {limit}" + (" (own)" if item["own"] else " (default)"))
    console.print(Text(f"sending of {view['address']} in the last 24 hours: " + ", ".join(parts)))


def _sending_limit(text: str, option: str) -> int | None:
    """A value of --messages-per-day or --recipients-per-day: a count, ``none`` (NO_LIMIT) or ``default`` (None)."""
    word = text.strip().lower()
    if word in {"none", "unlimited"}:
        return accounts.NO_LIMIT
    if word == "default":
        return None
    if not word.isdigit() or len(word) > 10 or not 1 <= int(word) < 2**31:
        fail(f"{option}: expected a number from 1, none or default, got {text[:40]!r}")
    return int(word)


@app.command("remove")
def remove(
    address: str = User,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete a user with all its mail, folders, aliases and keys."""
    if not yes:
        typer.confirm(f"Delete {address} and all its mail?", abort=True)

    async def go(pool: asyncpg.Pool) -> None:
        await accounts.remove_user(pool, address)

    with_pool(go)
    console.print(f"removed user {address.lower()}", highlight=False)


# -- sender lists (relate.spam: applied before rspamd's verdict) -------------------------------


def _put_sender(address: str, sender: str, kind: str) -> None:
    async def go(pool: asyncpg.Pool) -> dict[str, Any]:
        return await senders.put(pool, await senders.user_id_of(pool, address), sender, kind)

    rule = with_pool(go)
    console.print(Text(f"{address.lower()}: {rule['pattern']} is on the {kind} list"))


@app.command("allow")
def allow(
    address: str = User,
    sender: str = typer.Argument(..., help="An address, or a domain (its subdomains too)."),
) -> None:
    """Deliver mail from SENDER to INBOX whatever rspamd says (DMARC refusals still apply)."""
    _put_sender(address, sender, "allow")


@app.command("block")
def block(
    address: str = User,
    sender: str = typer.Argument(..., help="An address, or a domain (its subdomains too)."),
) -> None:
    """File mail from SENDER in Junk (or refuse it: smtp.rspamd.block_action)."""
    _put_sender(address, sender, "block")


@app.command("unlist")
def unlist(
    address: str = User,
    sender: str = typer.Argument(..., help="The entry to remove, as allowed or blocked."),
) -> None:
    """Take SENDER off the user's allow or block list."""

    async def go(pool: asyncpg.Pool) -> None:
        await senders.remove(pool, await senders.user_id_of(pool, address), sender)

    with_pool(go)
    console.print(Text(f"{address.lower()}: {sender.lower()} removed"))


@app.command("senders")
def senders_cmd(address: str = User, as_json: bool = JsonOption) -> None:
    """List the user's allowed and blocked senders."""

    async def go(pool: asyncpg.Pool) -> list[dict[str, Any]]:
        return await senders.list_for(pool, await senders.user_id_of(pool, address))

    rows = with_pool(go)
    columns = [("pattern", "Sender"), ("kind", "List"), ("createdAt", "Added")]
    print_rows(rows, columns, as_json=as_json, title="Senders")


@app.command("export")
def export_cmd(
    address: str = User,
    output: str = typer.Option(
        ..., "--output", "-o", help="The MBOX file to write (mode 0600), or - for stdout.", metavar="FILE"
    ),
    mailbox: str | None = typer.Option(None, "--mailbox", help="Only this folder (by name).", metavar="FOLDER"),
    search: str | None = typer.Option(
        None, "--search", help="Only messages matching this full-text search (as the REST search's q).", metavar="QUERY"
    ),
) -> None:
    """Write the user's mail (every folder, one folder, or a search) as one MBOX file (mboxrd), as the REST
    export does. The file appears under its name only when complete."""
    if output == "-":
        sink = sys.stdout.buffer
        count, size = with_pool(
            lambda pool: export.export_user(pool, address, sink.write, mailbox=mailbox, query=search)
        )
        sink.flush()
        print(f"exported {count} messages ({format_size(size)})", file=sys.stderr)
        return
    target = Path(output)
    partial = target.with_name(target.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb", buffering=1024 * 1024) as file:
            count, size = with_pool(
                lambda pool: export.export_user(pool, address, file.write, mailbox=mailbox, query=search)
            )
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    console.print(f"exported {count} messages ({format_size(size)}) to {escape(str(target))}", highlight=False)
