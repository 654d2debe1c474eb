"""relatectl key: API keys (app passwords) for every protocol and the REST API."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import typer

from relate.errors import Invalid
from relate.mail.address import address_to_unicode
from relate.scopes import USER_SCOPES
from relatectl import complete
from relatectl.cli import App, JsonOption, lazy_module
from relatectl.common import Column, console, err_console, load_config, print_json, print_rows, with_pool

if TYPE_CHECKING:
    import asyncpg

    from relate.services import accounts
else:
    accounts = lazy_module("relate.services.accounts")

app = App(help="API keys: the passwords of IMAP, POP3, SMTP and the REST API.")
KeyId = typer.Argument(..., help="The key's id (see `key list`).", metavar="KEY_ID", autocompletion=complete.key_ids)

_COLUMNS: list[Column] = [
    ("id", "Id"),
    ("user", "User"),
    ("name", "Name", 2),
    ("prefix", "Prefix", 4),
    ("scopes", "Scopes"),
    ("created_at", "Created", 5),
    ("last_used_at", "Last used", 3),
    ("expires_at", "Expires", 1),
    ("revoked_at", "Revoked", 1),
]
_DURATION = re.compile(r"^(\d+)([hdw])$")


def parse_expiry(text: str | None) -> datetime | None:
    """``90d``, ``12h``, ``2w`` from now, or an ISO date/time; None for never."""
    if not text:
        return None
    m = _DURATION.match(text.strip())
    if m:
        unit = {"h": "hours", "d": "days", "w": "weeks"}[m.group(2)]
        return datetime.now(UTC) + timedelta(**{unit: int(m.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise Invalid(f"--expires: expected like 90d, 12h, 2w or 2027-01-31, got {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _show_new_key(key: str, row: dict[str, Any], as_json: bool, verb: str) -> None:
    if as_json:
        print_json({"key": key, **{c[0]: row.get(c[0]) for c in _COLUMNS}})
        return
    user, scopes = address_to_unicode(row["user"]), ",".join(row["scopes"])
    err_console.print(
        f"{verb} key {row['id']} for {user} (scopes {scopes}); it is shown only this once:", highlight=False
    )
    console.print(key, highlight=False, soft_wrap=True)


@app.command("create")
def create(
    user: str = typer.Argument(
        ..., help="The user's address (or an alias).", metavar="USER", autocompletion=complete.addresses
    ),
    scope: str = typer.Option(
        ...,
        "--scope",
        metavar="SCOPES",
        autocompletion=complete.comma_list(USER_SCOPES),
        help=f"Comma list of: {', '.join(USER_SCOPES)}.",
    ),
    name: str = typer.Option("default", "--name", help="A label, e.g. the device that uses it."),
    expires: str | None = typer.Option(
        None, "--expires", metavar="WHEN", help="Lifetime (90d, 12h, 2w) or a date; default never."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Create a key and print it once; only its hash is stored."""
    cfg = load_config()

    async def go(pool: asyncpg.Pool) -> tuple[str, dict[str, Any]]:
        return await accounts.create_key(
            pool, user, name, scope, expires_at=parse_expiry(expires), rounds=cfg.auth.bcrypt_rounds
        )

    key, row = with_pool(go, cfg=cfg)
    _show_new_key(key, row, as_json, "created")


@app.command("list")
def list_cmd(
    user: str | None = typer.Argument(
        None, help="Only this user's keys.", metavar="USER", autocompletion=complete.addresses
    ),
    include_revoked: bool = typer.Option(False, "--all", help="Include revoked keys."),
    as_json: bool = JsonOption,
) -> None:
    """List keys (never their secrets)."""

    async def go(pool: asyncpg.Pool) -> list[dict[str, Any]]:
        return await accounts.list_keys(pool, user, include_revoked=include_revoked)

    rows = with_pool(go)
    if not as_json:
        for row in rows:
            row["user"] = address_to_unicode(row["user"])
    print_rows(rows, _COLUMNS, as_json=as_json, title="Keys")


@app.command("revoke")
def revoke(key_id: int = KeyId) -> None:
    """Revoke a key; every daemon refuses it within 30 seconds."""

    async def go(pool: asyncpg.Pool) -> bool:
        return await accounts.revoke_key(pool, key_id)

    if with_pool(go):
        console.print(f"revoked key {key_id}", highlight=False)
    else:
        console.print(f"key {key_id} was already revoked", highlight=False)


@app.command("rotate")
def rotate(key_id: int = KeyId, as_json: bool = JsonOption) -> None:
    """Replace a key with a new one of the same user, name and scopes; the old one is revoked."""
    cfg = load_config()

    async def go(pool: asyncpg.Pool) -> tuple[str, dict[str, Any]]:
        return await accounts.rotate_key(pool, key_id, rounds=cfg.auth.bcrypt_rounds)

    key, row = with_pool(go, cfg=cfg)
    _show_new_key(key, row, as_json, f"rotated key {key_id} into")
