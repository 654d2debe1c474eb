"""relatectl import: move a user's mail in from a Maildir tree, mbox files or a live IMAP server.

The importer (relate.services.imports) and what it needs (the mail parser, the store) are imported when a
command runs, not when relatectl starts, so other commands and shell completion do not pay for them.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from relate.config import Config
from relate.importing import DEFAULT_MAX_SIZE
from relatectl.cli import App, JsonOption
from relatectl.common import console, err_console, fail, load_config, print_json, with_pool
from relatectl.sizes import format_size

if TYPE_CHECKING:
    from relate.importing.imap import ImapSource, Security
    from relate.services import imports
    from relate.store.imports import Progress as SourceProgress


app = App(help="Move mail in from an old server: a Maildir tree, mbox files, or a live IMAP account.")

UserOption = typer.Option(..., "--user", "-u", metavar="ADDRESS", help="The Relate Mail user it goes to.")
MaxSizeOption = typer.Option(
    DEFAULT_MAX_SIZE, "--max-size", metavar="OCTETS", help="Skip (and count) messages larger than this."
)


class _Bar:
    """The rich progress bar on standard error: one line per folder."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def folder(self, name: str, total: int) -> None:
        if self.task is not None:
            self.progress.stop_task(self.task)
        self.task = self.progress.add_task(name, total=None if total < 0 else total)

    def advance(self, messages: int, octets: int) -> None:
        if self.task is not None:
            self.progress.advance(self.task, messages)


def _summary(result: imports.Result, as_json: bool) -> None:
    if as_json:
        print_json(result.as_dict())
        return
    table = Table(title=f"Imported into {result.user}", title_justify="left")
    for heading, justify in (
        ("Folder", "left"),
        ("Messages", "right"),
        ("Imported", "right"),
        ("Already here", "right"),
        ("Skipped", "right"),
        ("Size", "right"),
    ):
        table.add_column(heading, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for f in result.folders:
        table.add_row(f.name, str(f.messages), str(f.imported), str(f.already), str(f.skipped), format_size(f.octets))
    table.add_section()
    table.add_row(
        f"{len(result.folders)} folder{'' if len(result.folders) == 1 else 's'}",
        *(str(result.total(key)) for key in ("messages", "imported", "already", "skipped")),
        format_size(result.total("octets")),
    )
    done = f"{result.rate:.0f} messages/s" if result.total("imported") else "nothing new"
    table.caption = f"{result.seconds:.1f} s, {done}"
    console.print(table)
    for problem in result.problems[:20]:
        err_console.print(f"[yellow]skipped:[/] {problem}", highlight=False, markup=True)
    if len(result.problems) > 20:
        err_console.print(f"[yellow]skipped:[/] ... and {len(result.problems) - 20} more (see --json)", highlight=False)


def _import(
    address: str,
    events: Callable[[dict[str, SourceProgress]], Iterator[imports.Event]],
    *,
    as_json: bool,
    source: str | None = None,
    before: Callable[[], Any] | None = None,
    after: Callable[[], Any] | None = None,
) -> None:
    from relate.services import imports

    cfg: Config = load_config()

    async def go(pool: asyncpg.Pool) -> imports.Result:
        await imports.find_user(pool, address)  # an unknown user is said before anything else is tried
        if before is not None:
            await asyncio.to_thread(before)
        try:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
                disable=as_json or not sys.stderr.isatty(),
            ) as progress:
                return await imports.run(pool, cfg, address, events, source=source, progress=_Bar(progress))
        finally:
            if after is not None:
                await asyncio.to_thread(after)

    try:
        result = with_pool(go, cfg=cfg)
    except KeyboardInterrupt:
        fail("interrupted: what was committed stays; run the same command again to go on", 130)
    _summary(result, as_json)


@app.command("maildir")
def maildir(
    path: Path = typer.Argument(..., metavar="PATH", help="The Maildir: the directory holding cur/, new/, .Folder/."),
    user: str = UserOption,
    max_size: int = MaxSizeOption,
    as_json: bool = JsonOption,
) -> None:
    """Import a Maildir++ tree as Dovecot (or Courier) keeps it: every folder, flags and keywords, dates.

    Run it again and only what is new is stored: a message already in its folder is never stored twice.
    """
    from relate.services import imports

    if not path.is_dir():
        fail(f"{path} is not a directory")
    _import(user, lambda _known: imports.maildir_events(path, max_size), as_json=as_json)


@app.command("mbox")
def mbox(
    file: list[Path] = typer.Argument(..., metavar="FILE", help="mbox files."),
    user: str = UserOption,
    mailbox: str | None = typer.Option(
        None, "--mailbox", "-m", metavar="NAME", help="The folder they all go to (default: one per file, by its name)."
    ),
    mboxo: bool = typer.Option(False, "--mboxo", help="Only '>From ' was quoted (mboxo), not '>>From ' (mboxrd)."),
    max_size: int = MaxSizeOption,
    as_json: bool = JsonOption,
) -> None:
    """Import mbox files, with the flags of their Status: and X-Status: fields.

    Each file goes to the folder named after it (inbox or mbox: INBOX) unless --mailbox names one.

    Run it again and only what is new is stored: a message already in its folder is never stored twice.
    """
    from relate.services import imports

    for f in file:
        if not f.is_file():
            fail(f"{f} is not a file")
    _import(user, lambda _known: imports.mbox_events(file, mailbox, rd=not mboxo, max_size=max_size), as_json=as_json)


@app.command("imap")
def imap(
    host: str = typer.Option(..., "--host", metavar="HOST", help="The old IMAP server."),
    port: int | None = typer.Option(None, "--port", metavar="PORT", help="Its port (default 993; 143 for the others)."),
    tls: bool = typer.Option(False, "--tls", help="Implicit TLS (the default)."),
    starttls: bool = typer.Option(False, "--starttls", help="STARTTLS on the plain port."),
    plain: bool = typer.Option(False, "--plain", help="No TLS at all (a server on this machine or a trusted network)."),
    insecure: bool = typer.Option(False, "--insecure", help="Do not check the server's certificate."),
    login: str = typer.Option(..., "--login", metavar="LOGIN", help="The login on the old server."),
    password_file: Path = typer.Option(
        ..., "--password-file", metavar="FILE", help="A file holding the password (its first line; - for stdin)."
    ),
    user: str = UserOption,
    max_size: int = MaxSizeOption,
    as_json: bool = JsonOption,
) -> None:
    """Import a whole IMAP account: every folder, flags and keywords, internal dates, the exact bytes.

    The old server is only read (EXAMINE, BODY.PEEK): nothing there changes.

    Resumable: each folder's UIDVALIDITY and last UID imported are kept, so a second run fetches only new mail.

    An interrupted run goes on where it stopped; after a UIDVALIDITY change, messages are compared by content.
    """
    from relate.importing.imap import ImapSource
    from relate.services import imports

    if sum((tls, starttls, plain)) > 1:
        fail("give one of --tls, --starttls, --plain", 2)
    security: Security = "starttls" if starttls else "plain" if plain else "tls"
    port = port or (993 if security == "tls" else 143)
    try:
        text = sys.stdin.readline() if str(password_file) == "-" else password_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read the password file {password_file}: {getattr(exc, 'strerror', None) or exc}")
    password = text.splitlines()[0] if text else ""
    if not password:
        fail(f"the password file {password_file} is empty")
    holder: dict[str, ImapSource] = {}

    def connect() -> None:
        source = ImapSource(host, port, security, verify=not insecure)
        holder["source"] = source
        source.login(login, password)

    def logout() -> None:
        if "source" in holder:
            holder["source"].logout()

    _import(
        user,
        lambda known: imports.imap_events(holder["source"], known, max_size),
        as_json=as_json,
        source=imports.imap_source_name(host, port, login),
        before=connect,
        after=logout,
    )
