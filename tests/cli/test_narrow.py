"""Every list of relatectl in an 80-column terminal: the ids and addresses a reader needs, whole, nothing cut to '…'.

Columns a narrow terminal can go without are left out (and named under the
table); what remains wraps rather than ending in an ellipsis; --json keeps
every field whatever the width.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from rich.cells import cell_len
from typer.testing import CliRunner, Result

from relate.config import DatabaseConfig
from relate.services import accounts
from relate.services import dns as dns_service
from relate.store import db
from relate.store import queue as queue_store
from relate.store.queue import Outcome
from relatectl import common
from relatectl.main import app
from tests.protocol.delivery.helpers import queue_mail

LONG_USER = "firstname.middlename.lastname@accounts.example.com"
LONG_ERROR = (
    "451 4.7.1 Greylisted: please try again later; see https://postmaster.remote.test/greylisting for the "
    "reasons and the retry interval"
)


@pytest.fixture(autouse=True)
def narrow_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich's console reads COLUMNS once, at import: set its width to what COLUMNS=80 gives."""
    monkeypatch.setattr(common.console, "_width", 80)


def run(dsn: str, *args: str) -> str:
    result: Result = CliRunner().invoke(
        app, list(args), env={"COLUMNS": "80", "NO_COLOR": "1", "RELATE_DATABASE__DSN": dsn}
    )
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result.stdout


@pytest.fixture
def data(dsn: str) -> dict[str, Any]:
    """Two domains (one IDNA), users with long addresses and names, aliases, keys, a DKIM key, queued mail
    with a long error."""

    async def go() -> dict[str, Any]:
        pool = await db.create_pool(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=2))
        try:
            for domain in ("example.com", "accounts.example.com", "münchen.de"):
                await accounts.add_domain(pool, domain)
            await accounts.add_user(pool, "alice@example.com", "Alice Liddell of Daresbury, Cheshire")
            await accounts.add_user(pool, LONG_USER, "Firstname Middlename Lastname")
            await accounts.add_user(pool, "jörg@münchen.de", "Jörg")
            await accounts.add_alias(pool, "postmaster-and-abuse-desk@accounts.example.com", LONG_USER)
            keys = [
                (await accounts.create_key(pool, user, "thunderbird on the laptop", "imap,smtp,pop3,app", rounds=4))[1]
                for user in ("alice@example.com", LONG_USER, "jörg@münchen.de")
            ]
            await accounts.revoke_key(pool, keys[0]["id"])
            await dns_service.dkim_keygen(pool, "accounts.example.com", kind="ed25519", selector="relate20261207")
            email_id = await queue_mail(
                pool, ["someone.with.a.long.name@faraway.example.org", "second@remote.test"], sender=LONG_USER
            )
            async with pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    "UPDATE outbound_recipients SET attempts = 3 WHERE outbound_email_id = $1 RETURNING id", email_id
                )
                now = datetime.now(UTC)
                outcomes = [
                    Outcome(r["id"], "deferred", "4.7.1", LONG_ERROR, "mx.faraway.example.org", now) for r in rows
                ]
                await queue_store.record(conn, outcomes, now)
            return {"keys": [k["id"] for k in keys], "email": email_id}
        finally:
            await pool.close()

    return asyncio.run(go())


def columns(out: str) -> list[str]:
    """Each table column's text, its cells' lines joined in order: a folded address is one string again."""
    found: list[str] = []
    block: list[list[str]] = []
    for line in [*out.splitlines(), ""]:
        if line.startswith("│"):
            block.append([p.strip() for p in line.strip().strip("│").split("│")])
        elif block:
            found += ["".join(parts) for parts in zip(*block, strict=True)]
            block = []
    return found


def readable(out: str, *whole: str) -> None:
    """Every table line fits 80 cells (sentences are the terminal's to wrap), nothing ends in '…', and each of
    ``whole`` is in one cell's text (its lines joined) or one sentence."""
    for line in out.splitlines():
        if line[:1] in set("┏┃┡│└"):
            assert cell_len(line) <= 80, f"{cell_len(line)} cells: {line}\n{out}"
    assert "…" not in out, out
    texts = [*columns(out), *out.splitlines()]
    for value in whole:
        assert any(value in text for text in texts), f"{value!r} is not whole in:\n{out}"


def test_lists_fit_80_columns_with_ids_and_addresses_whole(dsn: str, data: dict[str, Any]) -> None:
    """domain, user, alias, key, dkim, queue and db lists at 80 columns keep every id and address whole."""
    readable(run(dsn, "domain", "list"), "example.com", "accounts.example.com", "münchen.de")
    readable(run(dsn, "user", "list"), "alice@example.com", LONG_USER, "jörg@münchen.de")
    readable(run(dsn, "alias", "list"), "postmaster-and-abuse-desk@accounts.example.com", LONG_USER)
    keys = run(dsn, "key", "list", "--all")
    readable(keys, "alice@example.com", LONG_USER, "jörg@münchen.de")
    assert columns(keys)[0] == "".join(str(k) for k in data["keys"])  # the Id column, whole
    readable(run(dsn, "dkim", "list"), "accounts.example.com", "relate20261207")
    queue = run(dsn, "queue", "list")
    readable(queue, LONG_USER, "someone.with.a.long.name@faraway.example.org")
    assert columns(queue)[0] == str(data["email"])
    # The error is read whole, over several lines.
    assert LONG_ERROR.replace(" ", "") in [c.replace(" ", "") for c in columns(queue)], queue
    readable(run(dsn, "queue", "show", str(data["email"])), "someone.with.a.long.name@faraway.example.org")
    readable(run(dsn, "user", "show", LONG_USER), LONG_USER, "thunderbird")
    readable(run(dsn, "db", "status"), "idna_a_labels")


def test_what_a_narrow_table_leaves_out_is_named_and_in_json(dsn: str, data: dict[str, Any]) -> None:
    """`key list --all` at 80 columns names the columns it left out; --json has every field of every key."""
    out = run(dsn, "key", "list", "--all")
    assert "(left out at this width: Name, Prefix, Created" in out
    rows = json.loads(run(dsn, "key", "list", "--all", "--json"))
    assert {"prefix", "created_at", "last_used_at", "expires_at", "revoked_at"} <= set(rows[0])
    assert len(rows) == 3


def test_u_labels_are_shown_and_json_keeps_the_stored_a_labels(dsn: str, data: dict[str, Any]) -> None:
    """Tables show münchen.de; --json gives the stored form xn--mnchen-3ya.de, which every command accepts."""
    assert "münchen.de" in run(dsn, "domain", "list")
    names = [row["name"] for row in json.loads(run(dsn, "domain", "list", "--json"))]
    assert "xn--mnchen-3ya.de" in names
    users = [row["address"] for row in json.loads(run(dsn, "user", "list", "--json"))]
    assert "jörg@xn--mnchen-3ya.de" in users
    assert "jörg@münchen.de" in run(dsn, "user", "show", "jörg@xn--mnchen-3ya.de")
