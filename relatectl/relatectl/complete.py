"""Values for TAB completion: hosted domains, users, addresses, queue ids, key ids, scopes, DKIM selectors.

A completion runs on every TAB press, so each is one small query on one
connection with a short timeout (0.5 s to connect, 0.5 s per statement), a
few hundred answers at most, and nothing at all, never a traceback, when
the config cannot be read or the database does not answer. The database is
the one the command would use: ``--config`` (or RELATE_CONFIG) as given on
the line being completed, and the RELATE_* environment.

Domains are stored as A-labels (``xn--mnchen-3ya.de``) and offered as the
admin reads them (``münchen.de``); a command takes either form.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from relate.errors import Invalid
from relate.mail.address import address_to_unicode, domain_to_unicode, normalize_domain
from relatectl.cli import lazy_module

if TYPE_CHECKING:
    from relate.store import completion
    from relate.store import dkim as dkim_store
else:
    completion = lazy_module("relate.store.completion")
    dkim_store = lazy_module("relate.store.dkim")

TIMEOUT = 0.5  # seconds: to connect, and per statement
MOST = 300  # answers per completion

Items = list[tuple[str, str]]  # (value, help)
T = TypeVar("T")


def _query(ctx: typer.Context, fn: Callable[[Any], Awaitable[list[T]]]) -> list[T]:
    """``fn(connection)`` on the command's database, or [] when anything goes wrong."""
    try:
        from relate import config as config_mod

        cfg = config_mod.load(ctx.find_root().params.get("config"))
        dsn = cfg.database.dsn
        if not dsn:
            return []

        async def go() -> list[T]:
            import asyncpg

            conn = await asyncpg.connect(
                dsn,
                timeout=TIMEOUT,
                command_timeout=TIMEOUT,
                server_settings={"application_name": "relatectl-complete"},
            )
            try:
                return await fn(conn)
            finally:
                await conn.close(timeout=TIMEOUT)

        return asyncio.run(go())
    except Exception:  # noqa: BLE001 - a completion offers nothing rather than a traceback in the shell
        return []


def _matching(items: Items, incomplete: str) -> Items:
    """The items whose value as shown starts with what was typed, case-insensitively."""
    typed = incomplete.lower()
    return [(value, why) for value, why in items if value.lower().startswith(typed)]


def _prefix(incomplete: str) -> str:
    """A LIKE pattern on the stored (A-label) form of what was typed; a U-label domain is matched after."""
    typed = incomplete.strip().lower()
    local, at, domain = typed.partition("@")
    if not at:
        return completion.like_prefix(typed) if typed.isascii() else "%"
    return completion.like_prefix(typed if domain.isascii() else local + at)


def domains(ctx: typer.Context, incomplete: str) -> Items:
    """Hosted domains."""
    names = _query(ctx, lambda conn: completion.domains(conn, _prefix(incomplete), MOST))
    return _matching([(domain_to_unicode(n), "hosted domain") for n in names], incomplete)


def users(ctx: typer.Context, incomplete: str) -> Items:
    """Users by primary address."""
    rows = _query(ctx, lambda conn: completion.users(conn, _prefix(incomplete), MOST))
    return _matching([(address_to_unicode(r["address"]), r["display_name"] or "user") for r in rows], incomplete)


def addresses(ctx: typer.Context, incomplete: str) -> Items:
    """Every address that delivers to a user: primary addresses and aliases."""
    rows = _query(ctx, lambda conn: completion.addresses(conn, _prefix(incomplete), MOST))
    items = [
        (address_to_unicode(r["address"]), "user" if r["address"] == r["owner"] else f"alias of {r['owner']}")
        for r in rows
    ]
    return _matching(items, incomplete)


def aliases(ctx: typer.Context, incomplete: str) -> Items:
    """Aliases (addresses that are not a user's primary one)."""
    rows = _query(ctx, lambda conn: completion.addresses(conn, _prefix(incomplete), MOST, aliases_only=True))
    return _matching([(address_to_unicode(r["address"]), f"to {r['owner']}") for r in rows], incomplete)


def _queue(ctx: typer.Context, incomplete: str, statuses: Sequence[str]) -> Items:
    if incomplete and not incomplete.isdigit():
        return []
    rows = _query(ctx, lambda conn: completion.queue_ids(conn, completion.like_prefix(incomplete), statuses, MOST))
    return [(str(r["id"]), f"{r['status']} from {r['from_address']}") for r in rows]


def queue_ids(ctx: typer.Context, incomplete: str) -> Items:
    """Ids of messages in the queue (waiting, being sent, or held)."""
    return _queue(ctx, incomplete, ("queued", "sending", "held"))


def held_ids(ctx: typer.Context, incomplete: str) -> Items:
    """Ids of held messages (what `queue release` takes)."""
    return _queue(ctx, incomplete, ("held",))


def key_ids(ctx: typer.Context, incomplete: str) -> Items:
    """Ids of keys that are not revoked, with their user and name."""
    if incomplete and not incomplete.isdigit():
        return []
    rows = _query(ctx, lambda conn: completion.key_ids(conn, completion.like_prefix(incomplete), MOST))
    return [(str(r["id"]), f"{address_to_unicode(r['address'])} ({r['name']})") for r in rows]


def selectors(ctx: typer.Context, incomplete: str) -> Items:
    """DKIM selectors of the domain given before on the line (every domain's when none is)."""
    domain = ctx.params.get("domain")
    try:
        name = normalize_domain(domain) if domain else None
    except Invalid:
        return []
    rows = _query(ctx, lambda conn: dkim_store.selector_list(conn, name, MOST))
    return _matching([(r["selector"], f"{r['state']}, {domain_to_unicode(r['domain'])}") for r in rows], incomplete)


def comma_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """A completer for a comma-separated list of ``choices`` (``--scope imap,sm<TAB>``)."""

    def complete(incomplete: str) -> list[str]:
        done, _, last = incomplete.rpartition(",")
        given = set(done.split(",")) if done else set()
        head = f"{done}," if done else ""
        return [head + c for c in choices if c.startswith(last) and c not in given]

    return complete
