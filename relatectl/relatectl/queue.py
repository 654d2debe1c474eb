"""relatectl queue: see and steer the outbound queue (postqueue/postsuper's jobs).

Every command that takes ids also reads them from standard input when given
``-``: whitespace-separated numbers, or the JSON of ``queue list --json``,
so a filtered list can be piped back in.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import typer

from relate.errors import Invalid
from relate.mail.address import address_to_unicode, comparable_address, comparable_domain
from relatectl import complete
from relatectl.cli import App, JsonOption, lazy_module
from relatectl.common import (
    cell,
    console,
    err_console,
    fail,
    load_config,
    print_error,
    print_json,
    print_rows,
    with_pool,
)

if TYPE_CHECKING:
    import asyncpg

    from relate.services import queue as queue_service
else:
    queue_service = lazy_module("relate.services.queue")

app = App(help="The outbound queue: list, show, retry, hold, release, fail, delete, flush.")

_AGE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
IdsArgument = typer.Argument(
    None, help="Message ids, or - to read them from standard input.", metavar="ID...", autocompletion=complete.queue_ids
)
HeldArgument = typer.Argument(
    None, help="Message ids, or - to read them from standard input.", metavar="ID...", autocompletion=complete.held_ids
)


def _age(text: str) -> timedelta:
    m = _AGE.match(text.strip())
    if not m:
        raise Invalid(f"--older-than: expected like 30m, 2h or 5d, got {text!r}")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def _read_ids(args: list[str] | None) -> list[int]:
    """Ids from the arguments, with ``-`` standing for standard input (numbers or list JSON)."""
    ids: list[int] = []
    for arg in args or []:
        if arg != "-":
            if not arg.isdigit():
                fail(f"not a message id: {arg!r}")
            ids.append(int(arg))
            continue
        text = sys.stdin.read()
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, list):
            for item in data:
                value = item.get("id") if isinstance(item, dict) else item
                if not isinstance(value, int):
                    fail("standard input: expected the JSON of `queue list --json` or a list of ids")
                ids.append(value)
        else:
            for word in text.split():
                if not word.isdigit():
                    fail(f"standard input: not a message id: {word!r}")
                ids.append(int(word))
    return list(dict.fromkeys(ids))


def _require(ids: list[int]) -> list[int]:
    if not ids:
        fail("give message ids (or - to read them from standard input)")
    return ids


@app.command("list")
def list_cmd(
    status: list[str] = typer.Option(
        [],
        "--status",
        autocompletion=lambda incomplete: [s for s in queue_service.STATUSES if s.startswith(incomplete)],
        help="Only these statuses (repeatable).",
    ),
    sender: str | None = typer.Option(
        None, "--from", metavar="ADDRESS", autocompletion=complete.addresses, help="Only mail from this address."
    ),
    recipient: str | None = typer.Option(None, "--to", metavar="ADDRESS", help="Only mail to this address."),
    domain: str | None = typer.Option(
        None, "--domain", autocompletion=complete.domains, help="Only mail with a recipient at this domain."
    ),
    older_than: str | None = typer.Option(
        None, "--older-than", metavar="AGE", help="Only mail queued longer ago (30m, 2h, 5d)."
    ),
    limit: int = typer.Option(
        1000, "--limit", min=1, metavar="N", help="Show at most this many (the oldest); says how many more."
    ),
    as_json: bool = JsonOption,
) -> None:
    """List queued and recently finished outbound mail, oldest first.

    Statuses: queued, sending, held, sent, partial_failure, failed, and deferred (waiting mail that has
    been tried and will be again)."""

    async def go(pool: asyncpg.Pool) -> list[dict[str, Any]]:
        return await queue_service.list_messages(
            pool,
            statuses=[s.lower() for s in status] or None,
            sender=comparable_address(sender) if sender else None,
            recipient=comparable_address(recipient) if recipient else None,
            domain=comparable_domain(domain) if domain else None,
            queued_before=datetime.now(UTC) - _age(older_than) if older_than else None,
            limit=limit,
        )

    rows = with_pool(go)
    more = rows[0]["matched"] - len(rows) if rows else 0
    for row in rows:
        del row["matched"]
        shown = address_to_unicode if not as_json else str
        row["recipients"] = [
            f"{shown(a)} ({s})" for a, s in zip(row["recipients"], row.pop("recipient_statuses"), strict=True)
        ]
        if not as_json and row["mail_from"]:
            row["mail_from"] = address_to_unicode(row["mail_from"])
    print_rows(
        rows,
        [
            ("id", "Id"),
            ("status", "Status"),
            ("queued_at", "Queued", 2),
            ("mail_from", "From"),
            ("recipients", "Recipients"),
            ("size", "Size", 3),
            ("next_retry_at", "Next try", 1),
            ("last_error", "Last error"),
        ],
        as_json=as_json,
        title="Queue",
    )
    if more:
        (err_console if as_json else console).print(
            f"{more} more not shown (the oldest {len(rows)} are): use --limit {len(rows) + more} or filters",
            highlight=False,
        )


@app.command("show")
def show(
    email_id: int = typer.Argument(..., help="Message id.", metavar="ID", autocompletion=complete.queue_ids),
    as_json: bool = JsonOption,
) -> None:
    """Show one message: headers, and every recipient with status, attempts, next try and last reply."""

    async def go(pool: asyncpg.Pool) -> dict[str, Any]:
        return await queue_service.show(pool, email_id)

    msg = with_pool(go)
    if as_json:
        print_json(msg)
        return
    for key in ("id", "status", "user", "mail_from", "subject", "message_id", "size", "queued_at", "next_retry_at"):
        console.print(f"{key:<14} {cell(msg.get(key))}", highlight=False, markup=False)
    print_rows(
        msg["recipients"],
        [
            ("address", "Recipient"),
            ("status", "Status"),
            ("attempts", "Attempts", 1),
            ("next_attempt_at", "Next try", 2),
            ("remote_mta", "Remote MTA", 3),
            ("remote_reply", "Last reply"),
        ],
        as_json=False,
        title="Recipients",
    )


def _targets(ids: list[str] | None, all_: bool, domain: str | None) -> list[int]:
    if all_ or domain:

        async def go(pool: asyncpg.Pool) -> list[int]:
            return await queue_service.ids_for(pool, domain=comparable_domain(domain) if domain else None)

        return with_pool(go)
    return _require(_read_ids(ids))


def _report(done: queue_service.Done, result: str, summary: str, *, as_json: bool) -> None:
    """Print what an action did (``summary`` on stdout, or JSON per id) and one ``error:`` line per id it left
    alone; exit 1 when there was any."""
    if as_json:
        rows: list[dict[str, Any]] = [{"id": i, "result": result} for i in done.done]
        rows += [{"id": i, "result": "error", "error": why} for i, why in done.problems.items()]
        print_json(sorted(rows, key=lambda row: row["id"]))
    elif done.done or not done.problems:
        console.print(summary, highlight=False)
    for why in done.problems.values():
        print_error(why)
    if done.problems:
        raise typer.Exit(1)


@app.command("retry")
def retry(
    ids: list[str] | None = IdsArgument,
    all_: bool = typer.Option(False, "--all", help="Every waiting message that is not held."),
    domain: str | None = typer.Option(
        None,
        "--domain",
        autocompletion=complete.domains,
        help="Every waiting message with a recipient at this domain.",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Make waiting recipients due now (the delivery daemon picks them up at once); held mail stays held."""
    targets = _targets(ids, all_, domain)

    async def go(pool: asyncpg.Pool) -> queue_service.Done:
        return await queue_service.retry(pool, targets)

    done = with_pool(go)
    _report(done, "due", f"{len(done.done)} message(s) due now", as_json=as_json)


@app.command("flush")
def flush(as_json: bool = JsonOption) -> None:
    """Retry everything waiting in the queue now (held mail stays held)."""
    retry(None, all_=True, domain=None, as_json=as_json)


@app.command("hold")
def hold(ids: list[str] | None = IdsArgument, as_json: bool = JsonOption) -> None:
    """Keep messages in the queue without trying them until released."""
    targets = _require(_read_ids(ids))

    async def go(pool: asyncpg.Pool) -> queue_service.Done:
        return await queue_service.hold(pool, targets)

    done = with_pool(go)
    listed = f": {', '.join(map(str, done.done))}" if done.done else ""
    _report(done, "held", f"held {len(done.done)} message(s){listed}", as_json=as_json)


@app.command("release")
def release(ids: list[str] | None = HeldArgument, as_json: bool = JsonOption) -> None:
    """Put held messages back in the queue."""
    targets = _require(_read_ids(ids))

    async def go(pool: asyncpg.Pool) -> queue_service.Done:
        return await queue_service.release(pool, targets)

    done = with_pool(go)
    _report(done, "released", f"released {len(done.done)} message(s)", as_json=as_json)


@app.command("fail")
def fail_cmd(ids: list[str] | None = IdsArgument, as_json: bool = JsonOption) -> None:
    """Give up on messages now: their waiting recipients fail and the senders get a bounce."""
    targets = _require(_read_ids(ids))
    cfg = load_config()

    async def go(pool: asyncpg.Pool) -> queue_service.Done:
        return await queue_service.fail(cfg, pool, targets)

    done = with_pool(go, cfg=cfg)
    _report(done, "failed", f"failed {done.recipients} recipient(s); bounces sent to the senders", as_json=as_json)


@app.command("delete")
def delete(
    ids: list[str] | None = IdsArgument,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = JsonOption,
) -> None:
    """Drop messages from the queue silently (no bounce)."""
    targets = _require(_read_ids(ids))
    if not yes:
        if not sys.stdin.isatty() and "-" in (ids or []):
            fail("reading ids from standard input: add --yes to confirm the deletion")
        typer.confirm(f"Delete {len(targets)} message(s) without telling their senders?", abort=True)

    async def go(pool: asyncpg.Pool) -> queue_service.Done:
        return await queue_service.delete(pool, targets)

    done = with_pool(go)
    _report(done, "deleted", f"deleted {len(done.done)} message(s)", as_json=as_json)
