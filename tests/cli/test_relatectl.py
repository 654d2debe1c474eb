"""relatectl as an admin uses it: domains, users, aliases, keys, the schema, config errors.

Every test drives the real typer app against its own PostgreSQL database and
asserts on what the admin sees: the exit code, stdout and stderr.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from typer.testing import CliRunner, Result

import relate
from relate.auth import USER_SCOPES, Authenticator, AuthRefused, Principal
from relate.config import AuthConfig, DatabaseConfig
from relate.store import db, migrate
from relatectl import common
from relatectl.main import app

LATEST = migrate.latest_version()

Invoke = Callable[..., Result]
UNREACHABLE = "postgresql://nobody@127.0.0.1:1/x"  # nothing listens on port 1
KEY_RE = re.compile(r"^relate_([0-9a-f]{12})_([A-Za-z0-9_\-]{32})$")
DEFAULT_FOLDERS = [
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
]


def cli_env(dsn: str | None, **extra: str | None) -> dict[str, str | None]:
    """The environment of one invocation: nothing RELATE_* from outside, wide and colourless output.

    Every RELATE_* variable of the outer environment is removed (``None``), so
    no RELATE_CONFIG or override of the developer's leaks into the command.
    """
    env: dict[str, str | None] = {name: None for name in os.environ if name.startswith("RELATE_")}
    env.update(
        {
            "COLUMNS": "200",
            "NO_COLOR": "1",
            "FORCE_COLOR": None,
            "TTY_COMPATIBLE": None,
            "RELATE_AUTH__BCRYPT_ROUNDS": "4",
        }
    )
    if dsn is not None:
        env["RELATE_DATABASE__DSN"] = dsn
    env.update(extra)
    return env


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables render 200 columns wide, whatever COLUMNS was when relatectl was imported.

    rich's Console reads COLUMNS once, when it is created (at import), and then
    ignores the COLUMNS given to CliRunner; its private width is reset exactly.
    """
    monkeypatch.setattr(common.console, "_width", 200)


def invoke(dsn: str | None, *args: str, input: str | None = None, **env: str | None) -> Result:
    return CliRunner().invoke(app, list(args), input=input, env=cli_env(dsn, **env))


@pytest.fixture
def relatectl(dsn: str) -> Invoke:
    """``relatectl(*args, input=None, **env)`` against the test's database."""

    def run(*args: str, input: str | None = None, **env: str | None) -> Result:
        return invoke(dsn, *args, input=input, **env)

    return run


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert result.exception is None
    return result


def one_error(result: Result) -> str:
    """The single ``error: ...`` line of a failed command (exit 1, nothing on stdout)."""
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # no traceback
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def as_json(result: Result) -> Any:
    return json.loads(ok(result).stdout)


def query(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(dsn)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(go())


def authenticate(dsn: str, login: str, key: str, scope: str) -> Principal | str:
    """The principal a daemon would get for (login, key, scope), or the refusal reason."""

    async def go() -> Principal | str:
        pool = await db.create_pool(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=2))
        try:
            authenticator = Authenticator(pool, AuthConfig(bcrypt_rounds=4))
            try:
                return await authenticator.authenticate(login, key, scope, client="192.0.2.7", service="imap")
            except AuthRefused as exc:
                return exc.reason
        finally:
            await pool.close()

    return asyncio.run(go())


def create_key(relatectl: Invoke, user: str, *options: str) -> tuple[str, Result]:
    """Create a key; (the key printed on stdout, the result)."""
    result = ok(relatectl("key", "create", user, *options))
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    assert KEY_RE.match(lines[0]), lines[0]
    return lines[0], result


@pytest.fixture
def bob(relatectl: Invoke) -> str:
    """A hosted domain example.com with one user, bob@example.com."""
    ok(relatectl("domain", "add", "example.com"))
    ok(relatectl("user", "add", "bob@example.com", "--name", "Bob"))
    return "bob@example.com"


def _with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


@pytest.fixture
def empty_dsn(pg_server: str) -> Iterator[str]:
    """A DSN of a brand-new database with no schema at all (not cloned from the migrated template)."""
    name = f"relate_empty_{os.getpid()}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(pg_server)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    asyncio.run(admin(f"CREATE DATABASE {name}"))
    yield _with_database(pg_server, name)
    asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


# --- domains -----------------------------------------------------------------


def test_domain_add_then_list_as_table_and_json(relatectl: Invoke) -> None:
    """`domain list` starts empty; `domain add` confirms the lower-cased name; `domain list` shows it (table, JSON)."""
    assert ok(relatectl("domain", "list")).stdout == "no domains\n"
    assert as_json(relatectl("domain", "list", "--json")) == []

    assert ok(relatectl("domain", "add", "Example.COM")).stdout == "added domain example.com\n"
    ok(relatectl("domain", "add", "example.org"))

    table = ok(relatectl("domain", "list")).stdout
    assert "Domains" in table
    assert re.search(r"│ example\.com\s+│ 0\s+│ 0\s+│", table), table
    assert "example.org" in table

    rows = as_json(relatectl("domain", "list", "--json"))
    assert [(r["name"], r["users"], r["aliases"]) for r in rows] == [("example.com", 0, 0), ("example.org", 0, 0)]
    assert set(rows[0]) == {"name", "users", "aliases", "created_at"}
    datetime.fromisoformat(rows[0]["created_at"])


def test_domain_add_duplicate_is_refused_case_insensitively(relatectl: Invoke) -> None:
    """Adding Example.COM after example.com fails with exit 1 and one error line."""
    ok(relatectl("domain", "add", "example.com"))
    line = one_error(relatectl("domain", "add", "Example.COM"))
    assert line == "error: domain example.com already exists"
    assert [r["name"] for r in as_json(relatectl("domain", "list", "--json"))] == ["example.com"]


def test_domain_add_refuses_invalid_names(relatectl: Invoke) -> None:
    """A malformed domain name is refused with one error line quoting it, and nothing is added."""
    for name in ["localhost", "-bad.example", "exa mple.com", "example.com.", "a..b", "x" * 64 + ".com", ""]:
        line = one_error(relatectl("domain", "add", "--", name))
        assert line == f"error: not a valid domain name: {name!r}"
    assert as_json(relatectl("domain", "list", "--json")) == []


def test_domain_remove(relatectl: Invoke) -> None:
    """`domain remove` of an unused domain (any case) confirms and it is gone; an unknown domain fails."""
    ok(relatectl("domain", "add", "example.com"))
    ok(relatectl("domain", "add", "example.org"))
    assert ok(relatectl("domain", "remove", "EXAMPLE.com")).stdout == "removed domain example.com\n"
    assert [r["name"] for r in as_json(relatectl("domain", "list", "--json"))] == ["example.org"]
    assert one_error(relatectl("domain", "remove", "example.com")) == "error: no such domain: example.com"
    assert one_error(relatectl("domain", "remove", "nowhere.example")) == "error: no such domain: nowhere.example"


def test_domain_remove_with_users_is_refused_naming_them(relatectl: Invoke, bob: str) -> None:
    """Removing a domain that still has users fails with exit 1 and names the users."""
    ok(relatectl("user", "add", "alice@example.com"))
    line = one_error(relatectl("domain", "remove", "example.com"))
    assert "still has users" in line
    assert "alice@example.com, bob@example.com" in line
    assert [r["name"] for r in as_json(relatectl("domain", "list", "--json"))] == ["example.com"]


def test_domain_remove_with_aliases_is_refused_naming_them(relatectl: Invoke, bob: str) -> None:
    """Removing a domain that only holds aliases (of users elsewhere) fails and names the aliases."""
    ok(relatectl("domain", "add", "example.net"))
    ok(relatectl("alias", "add", "bob@example.net", bob))
    line = one_error(relatectl("domain", "remove", "example.net"))
    assert "still has aliases: bob@example.net" in line


# --- users -------------------------------------------------------------------


def test_user_add_at_unhosted_domain_says_how_to_add_it(relatectl: Invoke) -> None:
    """`user add` at a domain not hosted fails and tells the admin the `domain add` command."""
    line = one_error(relatectl("user", "add", "bob@example.com"))
    assert "domain example.com is not hosted here" in line
    assert "relatectl domain add example.com" in line
    assert as_json(relatectl("user", "list", "--json")) == []


def test_user_add_then_list_json(relatectl: Invoke) -> None:
    """`user add` lower-cases the address and suggests a key; `user list --json` shows the user."""
    ok(relatectl("domain", "add", "example.com"))
    out = ok(relatectl("user", "add", "Bob@Example.COM", "--name", "Bob Builder")).stdout
    assert out.startswith("added user bob@example.com; give it a key: relatectl key create bob@example.com")

    users = as_json(relatectl("user", "list", "--json"))
    assert len(users) == 1
    user = users[0]
    assert user["address"] == "bob@example.com"
    assert user["display_name"] == "Bob Builder"
    assert (user["aliases"], user["keys"], user["disabled"]) == (0, 0, False)
    datetime.fromisoformat(user["created_at"])


def test_user_errors_are_one_line(relatectl: Invoke, bob: str) -> None:
    """A taken address, a malformed address and an unknown user each fail with one error line."""
    assert one_error(relatectl("user", "add", "BOB@example.com")) == "error: address bob@example.com is already in use"
    assert one_error(relatectl("user", "add", "bob")) == "error: not a valid address: 'bob'"
    assert one_error(relatectl("user", "add", "a%b@example.com")) == "error: not a valid address: 'a%b@example.com'"
    assert one_error(relatectl("user", "show", "carol@example.com")) == "error: no such user: carol@example.com"
    assert one_error(relatectl("user", "remove", "--yes", "carol@example.com")) == (
        "error: no such user: carol@example.com"
    )
    assert [u["address"] for u in as_json(relatectl("user", "list", "--json"))] == [bob]


def test_user_show_json_lists_default_folders(relatectl: Invoke, bob: str) -> None:
    """`user show --json` lists the six default folders with their special-use attributes."""
    user = as_json(relatectl("user", "show", bob, "--json"))
    assert user["address"] == bob
    assert [(b["name"], b["special_use"]) for b in user["mailboxes"]] == DEFAULT_FOLDERS
    assert all(b["messages"] == 0 and b["unread"] == 0 and b["bytes"] == 0 for b in user["mailboxes"])
    assert user["aliases"] == []
    assert user["keys"] == []


def test_user_show_table_lists_default_folders(relatectl: Invoke, bob: str) -> None:
    """`user show` lists the six default folders, in order, with their special-use attributes."""
    out = ok(relatectl("user", "show", bob)).stdout
    assert out.splitlines()[0].split() == [bob, "Bob"]
    assert "aliases: -" in out
    shown = [
        (m.group(1), None if m.group(2) == "-" else m.group(2))
        for m in re.finditer(r"^│ (\w+)\s+│ (\S+)\s+│ 0\s+│ 0\s+│ 0\s+│$", out, re.MULTILINE)
    ]
    assert shown == DEFAULT_FOLDERS, out
    assert "no keys" in out


def test_user_remove_yes_removes_user_and_keys(relatectl: Invoke, bob: str, dsn: str) -> None:
    """`user remove --yes` deletes the user without asking, and its keys go with it."""
    key, _ = create_key(relatectl, bob, "--scope", "imap")
    ok(relatectl("user", "add", "alice@example.com"))
    create_key(relatectl, "alice@example.com", "--scope", "imap")

    assert ok(relatectl("user", "remove", "--yes", "Bob@Example.com")).stdout == "removed user bob@example.com\n"
    assert [u["address"] for u in as_json(relatectl("user", "list", "--json"))] == ["alice@example.com"]
    assert [k["user"] for k in as_json(relatectl("key", "list", "--all", "--json"))] == ["alice@example.com"]
    assert (
        query(dsn, "SELECT count(*) AS n FROM api_keys k JOIN users u ON u.id = k.user_id WHERE u.address = $1", bob)[
            0
        ]["n"]
        == 0
    )
    assert authenticate(dsn, bob, key, "imap") == "unknown-key"
    assert one_error(relatectl("user", "show", bob)) == f"error: no such user: {bob}"


def test_user_remove_without_yes_asks_and_no_aborts(relatectl: Invoke, bob: str) -> None:
    """`user remove` without --yes asks first; answering "n" aborts and the user stays."""
    result = relatectl("user", "remove", bob, input="n\n")
    assert result.exit_code == 1
    assert f"Delete {bob} and all its mail? [y/N]" in result.stdout
    assert "Aborted" in result.output
    assert "removed user" not in result.output
    assert [u["address"] for u in as_json(relatectl("user", "list", "--json"))] == [bob]


def test_user_remove_confirmed_with_yes_answer(relatectl: Invoke, bob: str) -> None:
    """`user remove` without --yes deletes the user when the admin answers "y"."""
    result = ok(relatectl("user", "remove", bob, input="y\n"))
    assert result.stdout.endswith("removed user bob@example.com\n")
    assert as_json(relatectl("user", "list", "--json")) == []


def test_user_remove_by_alias_does_not_delete_the_user(relatectl: Invoke, bob: str) -> None:
    """`user remove --yes ALIAS` is refused and does not delete the user the alias delivers to."""
    ok(relatectl("alias", "add", "postmaster@example.com", bob))
    result = relatectl("user", "remove", "--yes", "postmaster@example.com")
    assert [u["address"] for u in as_json(relatectl("user", "list", "--json"))] == [bob]
    one_error(result)


def test_display_name_with_brackets_is_shown_verbatim(relatectl: Invoke) -> None:
    """A display name with square brackets is listed and shown exactly as typed."""
    ok(relatectl("domain", "add", "example.com"))
    ok(relatectl("user", "add", "bob@example.com", "--name", "[/x] Bob [red]"))
    assert "[/x] Bob [red]" in ok(relatectl("user", "list")).stdout
    assert "[/x] Bob [red]" in ok(relatectl("user", "show", "bob@example.com")).stdout


def test_error_line_shows_input_with_brackets_verbatim(relatectl: Invoke) -> None:
    """An error about input containing square brackets quotes that input exactly, on one line."""
    assert one_error(relatectl("domain", "add", "[bold]x.com")) == "error: not a valid domain name: '[bold]x.com'"
    assert one_error(relatectl("domain", "add", "[/x].com")) == "error: not a valid domain name: '[/x].com'"


# --- aliases -----------------------------------------------------------------


def test_alias_add_list_remove(relatectl: Invoke, bob: str) -> None:
    """An alias is added (lower-cased), listed with its user, shown on the user, removed, then unknown."""
    assert ok(relatectl("alias", "add", "Postmaster@Example.com", bob)).stdout == (
        "added alias postmaster@example.com -> bob@example.com\n"
    )
    aliases = as_json(relatectl("alias", "list", "--json"))
    assert [(a["alias"], a["target"]) for a in aliases] == [("postmaster@example.com", bob)]
    table = ok(relatectl("alias", "list")).stdout
    assert re.search(r"│ postmaster@example\.com\s+│ bob@example\.com\s+│", table), table
    assert "aliases: postmaster@example.com" in ok(relatectl("user", "show", bob)).stdout
    assert as_json(relatectl("user", "list", "--json"))[0]["aliases"] == 1
    assert as_json(relatectl("domain", "list", "--json"))[0]["aliases"] == 1

    assert ok(relatectl("alias", "remove", "postmaster@example.com")).stdout == "removed alias postmaster@example.com\n"
    assert as_json(relatectl("alias", "list", "--json")) == []
    assert ok(relatectl("alias", "list")).stdout == "no aliases\n"
    assert [u["address"] for u in as_json(relatectl("user", "list", "--json"))] == [bob]
    assert one_error(relatectl("alias", "remove", "postmaster@example.com")) == (
        "error: no such alias: postmaster@example.com"
    )


def test_alias_to_unknown_user_fails(relatectl: Invoke, bob: str) -> None:
    """An alias for a user that does not exist is refused and nothing is added."""
    assert one_error(relatectl("alias", "add", "info@example.com", "carol@example.com")) == (
        "error: no such user: carol@example.com"
    )
    assert as_json(relatectl("alias", "list", "--json")) == []


def test_alias_at_unhosted_domain_fails(relatectl: Invoke, bob: str) -> None:
    """An alias at a domain not hosted here is refused with the `domain add` hint."""
    assert "relatectl domain add example.net" in one_error(relatectl("alias", "add", "bob@example.net", bob))


def test_alias_taking_a_users_address_fails(relatectl: Invoke, bob: str) -> None:
    """An alias cannot take an address that is already a user's primary address (any case)."""
    ok(relatectl("user", "add", "alice@example.com"))
    assert one_error(relatectl("alias", "add", "Alice@example.com", bob)) == (
        "error: address alice@example.com is already in use"
    )
    assert as_json(relatectl("alias", "list", "--json")) == []


def test_alias_remove_refuses_a_primary_address(relatectl: Invoke, bob: str) -> None:
    """`alias remove` of a user's primary address is refused and points to `user remove`."""
    line = one_error(relatectl("alias", "remove", bob))
    assert "primary address" in line
    assert "relatectl user remove" in line
    assert [u["address"] for u in as_json(relatectl("user", "list", "--json"))] == [bob]


# --- keys --------------------------------------------------------------------


def test_key_create_prints_the_key_once_and_it_works(relatectl: Invoke, bob: str, dsn: str) -> None:
    """The key is printed once on stdout, never again by any command, and logs in with its scopes only."""
    key, result = create_key(relatectl, bob, "--scope", "imap,smtp", "--name", "phone")
    secret = KEY_RE.match(key).group(2)  # type: ignore[union-attr]
    assert key not in result.stderr
    assert "shown only this once" in result.stderr
    assert "for bob@example.com (scopes imap,smtp)" in result.stderr

    later = [
        relatectl("key", "list"),
        relatectl("key", "list", "--all"),
        relatectl("key", "list", "--json"),
        relatectl("key", "list", bob, "--json"),
        relatectl("user", "list"),
        relatectl("user", "list", "--json"),
        relatectl("user", "show", bob),
    ]
    for res in later:
        ok(res)
        assert secret not in res.output
        assert key not in res.output
    assert re.search(r"│ bob@example\.com\s+│ phone\s+│ [0-9a-f]{12}\s+│ imap,smtp\s+│", later[0].stdout), later[
        0
    ].stdout

    principal = authenticate(dsn, bob, key, "imap")
    assert isinstance(principal, Principal)
    assert principal.address == bob
    assert principal.scopes == {"imap", "smtp"}
    assert isinstance(authenticate(dsn, "BOB@example.com", key, "smtp"), Principal)
    assert authenticate(dsn, bob, key, "pop3") == "missing-scope:pop3"


def test_key_list_json_shows_scopes_and_no_secret_anywhere(relatectl: Invoke, bob: str, dsn: str) -> None:
    """`key list --json` shows the key's scopes but neither key nor hash; the database holds no secret."""
    key, _ = create_key(relatectl, bob, "--scope", "imap,smtp", "--name", "phone")
    prefix, secret = KEY_RE.match(key).groups()  # type: ignore[union-attr]

    listed = as_json(relatectl("key", "list", "--json"))
    assert len(listed) == 1
    row = listed[0]
    assert (row["user"], row["name"], row["prefix"], row["scopes"]) == (bob, "phone", prefix, ["imap", "smtp"])
    assert row["revoked_at"] is None
    assert row["expires_at"] is None
    assert "hash" not in row
    assert "key" not in row
    text = json.dumps(listed)
    assert key not in text
    assert secret not in text
    assert "$2b$" not in text  # no bcrypt hash

    stored = query(dsn, "SELECT * FROM api_keys")
    assert len(stored) == 1
    assert stored[0]["prefix"] == prefix
    assert stored[0]["hash"].startswith("$2")
    for column, value in stored[0].items():
        assert secret not in str(value), column
        assert key not in str(value), column


def test_key_create_unknown_scope_refused_naming_the_allowed_ones(relatectl: Invoke, bob: str) -> None:
    """An unknown (or no) scope is refused with exit 1 listing every allowed scope; so is an unknown user."""
    line = one_error(relatectl("key", "create", bob, "--scope", "imap,mail"))
    assert "unknown scope 'mail'" in line
    assert line.endswith(", ".join(USER_SCOPES))
    assert one_error(relatectl("key", "create", bob, "--scope", " , ")) == (
        f"error: give at least one scope: {', '.join(USER_SCOPES)}"
    )
    assert one_error(relatectl("key", "create", "carol@example.com", "--scope", "imap")) == (
        "error: no such user: carol@example.com"
    )
    assert as_json(relatectl("key", "list", "--all", "--json")) == []


def test_key_create_internal_scope_refused(relatectl: Invoke, bob: str) -> None:
    """The daemons' `internal` scope cannot be given to a user's key."""
    line = one_error(relatectl("key", "create", bob, "--scope", "internal"))
    assert "unknown scope 'internal'" in line
    assert as_json(relatectl("key", "list", "--all", "--json")) == []


def test_key_create_expires_in_two_hours(relatectl: Invoke, bob: str, dsn: str) -> None:
    """`--expires 2h` makes a key that expires about two hours from now."""
    before = datetime.now(UTC)
    created = as_json(relatectl("key", "create", bob, "--scope", "imap", "--expires", "2h", "--json"))
    expires = datetime.fromisoformat(created["expires_at"])
    assert before + timedelta(hours=2) - timedelta(seconds=5) <= expires <= datetime.now(UTC) + timedelta(hours=2)
    listed = as_json(relatectl("key", "list", "--json"))
    assert datetime.fromisoformat(listed[0]["expires_at"]) == expires
    assert isinstance(authenticate(dsn, bob, created["key"], "imap"), Principal)


def test_key_create_bad_expiry_refused(relatectl: Invoke, bob: str) -> None:
    """An --expires that is neither a duration nor a date is refused, naming the formats."""
    line = one_error(relatectl("key", "create", bob, "--scope", "imap", "--expires", "soon"))
    assert "--expires: expected like 90d, 12h, 2w or 2027-01-31, got 'soon'" in line
    assert as_json(relatectl("key", "list", "--all", "--json")) == []


def test_key_create_with_a_past_or_far_expiry_is_refused(relatectl: Invoke, bob: str) -> None:
    """`--expires 2020-01-01` is refused as the API refuses it (it made a key that never worked), and so is a
    date more than ten years ahead; no key is made."""
    line = one_error(relatectl("key", "create", bob, "--scope", "imap", "--expires", "2020-01-01"))
    assert line == "error: the expiry 2020-01-01 00:00 UTC is in the past: a key must expire later"
    line = one_error(relatectl("key", "create", bob, "--scope", "imap", "--expires", "2999-01-01"))
    assert "too far ahead" in line
    assert as_json(relatectl("key", "list", "--all", "--json")) == []


def test_key_create_json(relatectl: Invoke, bob: str, dsn: str) -> None:
    """`key create --json` prints the key with its id, user, name and scopes, and nothing on stderr."""
    result = ok(relatectl("key", "create", bob, "--scope", "app,imap", "--name", "laptop", "--json"))
    assert result.stderr == ""
    created = json.loads(result.stdout)
    assert {"key", "id", "user", "name", "prefix", "scopes", "created_at", "expires_at", "revoked_at"} <= set(created)
    assert "hash" not in created
    assert KEY_RE.match(created["key"])
    assert (created["user"], created["name"], created["scopes"]) == (bob, "laptop", ["app", "imap"])
    assert created["key"].startswith(f"relate_{created['prefix']}_")
    assert [k["id"] for k in as_json(relatectl("key", "list", "--json"))] == [created["id"]]
    principal = authenticate(dsn, bob, created["key"], "api:write")  # app implies api:*
    assert isinstance(principal, Principal)
    assert principal.key_id == created["id"]


def test_key_revoke_hides_it_and_it_stops_working(relatectl: Invoke, bob: str, dsn: str) -> None:
    """A revoked key disappears from `key list`, shows as revoked with --all, and no longer logs in."""
    key, _ = create_key(relatectl, bob, "--scope", "imap", "--name", "phone")
    keep, _ = create_key(relatectl, bob, "--scope", "imap", "--name", "laptop")
    ids = {k["name"]: k["id"] for k in as_json(relatectl("key", "list", "--json"))}
    assert isinstance(authenticate(dsn, bob, key, "imap"), Principal)

    assert ok(relatectl("key", "revoke", str(ids["phone"]))).stdout == f"revoked key {ids['phone']}\n"

    assert [k["name"] for k in as_json(relatectl("key", "list", "--json"))] == ["laptop"]
    assert "phone" not in ok(relatectl("key", "list")).stdout
    everything = {k["name"]: k for k in as_json(relatectl("key", "list", "--all", "--json"))}
    assert set(everything) == {"phone", "laptop"}
    assert datetime.fromisoformat(everything["phone"]["revoked_at"]) <= datetime.now(UTC)
    assert everything["laptop"]["revoked_at"] is None
    listed = ok(relatectl("key", "list", "--all")).stdout
    assert re.search(r"│ phone .*│ (?:\d{4}-)?\d\d-\d\d \d\d:\d\d\s+│$", listed, re.M)
    assert as_json(relatectl("user", "list", "--json"))[0]["keys"] == 1

    assert authenticate(dsn, bob, key, "imap") == "revoked"
    assert isinstance(authenticate(dsn, bob, keep, "imap"), Principal)


def test_key_revoke_twice_says_already_revoked(relatectl: Invoke, bob: str) -> None:
    """Revoking a key a second time succeeds (exit 0) saying so; an unknown key id fails."""
    created = as_json(relatectl("key", "create", bob, "--scope", "imap", "--json"))
    ok(relatectl("key", "revoke", str(created["id"])))
    again = ok(relatectl("key", "revoke", str(created["id"])))
    assert again.stdout == f"key {created['id']} was already revoked\n"
    assert one_error(relatectl("key", "revoke", "4242")) == "error: no such key: 4242"
    assert one_error(relatectl("key", "rotate", "4242")) == "error: no such key: 4242"


def test_key_rotate_replaces_the_key(relatectl: Invoke, bob: str, dsn: str) -> None:
    """`key rotate` prints a new key of the same name and scopes; the old one is revoked and stops working."""
    old_key, _ = create_key(relatectl, bob, "--scope", "imap,smtp", "--name", "phone", "--expires", "30d")
    old = as_json(relatectl("key", "list", "--json"))[0]

    result = ok(relatectl("key", "rotate", str(old["id"])))
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    new_key = lines[0]
    assert KEY_RE.match(new_key)
    assert new_key != old_key
    assert new_key not in result.stderr
    assert f"rotated key {old['id']} into key" in result.stderr

    active = as_json(relatectl("key", "list", "--json"))
    assert len(active) == 1
    new = active[0]
    assert new["id"] != old["id"]
    assert (new["user"], new["name"], new["scopes"], new["expires_at"]) == (
        bob,
        "phone",
        ["imap", "smtp"],
        old["expires_at"],
    )
    assert new_key.startswith(f"relate_{new['prefix']}_")
    everything = {k["id"]: k for k in as_json(relatectl("key", "list", "--all", "--json"))}
    assert everything[old["id"]]["revoked_at"] is not None

    assert authenticate(dsn, bob, old_key, "imap") == "revoked"
    principal = authenticate(dsn, bob, new_key, "smtp")
    assert isinstance(principal, Principal)
    assert principal.key_id == new["id"]


def test_key_rotate_json(relatectl: Invoke, bob: str) -> None:
    """`key rotate --json` prints the new key and its record."""
    created = as_json(relatectl("key", "create", bob, "--scope", "pop3", "--name", "tablet", "--json"))
    rotated = as_json(relatectl("key", "rotate", str(created["id"]), "--json"))
    assert KEY_RE.match(rotated["key"])
    assert rotated["key"] != created["key"]
    assert (rotated["name"], rotated["scopes"], rotated["user"]) == ("tablet", ["pop3"], bob)
    assert rotated["id"] != created["id"]


def test_key_rotate_revoked_key_refused(relatectl: Invoke, bob: str) -> None:
    """A revoked key cannot be rotated; the message says to create a new one."""
    created = as_json(relatectl("key", "create", bob, "--scope", "imap", "--json"))
    ok(relatectl("key", "revoke", str(created["id"])))
    assert "create a new one" in one_error(relatectl("key", "rotate", str(created["id"])))
    assert as_json(relatectl("key", "list", "--json")) == []


def test_key_rotate_expired_key_refused(relatectl: Invoke, bob: str, dsn: str) -> None:
    """A key whose expiry has passed cannot be rotated (the new key would carry it); no key is made."""
    created = as_json(relatectl("key", "create", bob, "--scope", "imap", "--expires", "30d", "--json"))
    query(dsn, "UPDATE api_keys SET expires_at = now() - interval '1 minute' WHERE id = $1", created["id"])
    assert "has expired; create a new one" in one_error(relatectl("key", "rotate", str(created["id"])))
    assert [k["id"] for k in as_json(relatectl("key", "list", "--json"))] == [created["id"]]


# --- database schema ---------------------------------------------------------


def test_db_status_on_a_migrated_database_says_current(relatectl: Invoke) -> None:
    """`db status` lists 0001 initial as applied and says the schema is current."""
    out = ok(relatectl("db", "status")).stdout
    assert re.search(r"│ 1\s+│ initial\s+│ yes\s+│ (?:\d{4}-)?\d\d-\d\d \d\d:\d\d\s+│", out), out
    assert out.splitlines()[-1] == f"schema is current (version {LATEST})"


def test_db_status_json(relatectl: Invoke) -> None:
    """`db status --json` lists every migration with whether and when it was applied."""
    rows = as_json(relatectl("db", "status", "--json"))
    assert rows[0]["version"] == 1
    assert rows[0]["name"] == "initial"
    assert all(r["applied"] is True for r in rows)
    datetime.fromisoformat(rows[0]["applied_at"])


def test_db_migrate_on_a_current_database_does_nothing(relatectl: Invoke) -> None:
    """`db migrate` on a current schema says there is nothing to do."""
    assert ok(relatectl("db", "migrate")).stdout == f"schema is current (version {LATEST}); nothing to do\n"


def test_empty_database_needs_db_migrate_first(empty_dsn: str) -> None:
    """On an empty database, commands fail naming `relatectl db migrate`; after it, they work."""
    for args in (["domain", "list"], ["user", "add", "bob@example.com"], ["key", "list"]):
        line = one_error(invoke(empty_dsn, *args))
        assert f"database schema is at version 0, this release needs {LATEST}" in line
        assert "relatectl db migrate" in line

    status = ok(invoke(empty_dsn, "db", "status")).stdout
    assert re.search(r"│ 1\s+│ initial\s+│ no\s+│$", status, re.M), status  # "Applied at" empty everywhere: not shown
    assert f"{len(migrate.available())} pending: run `relatectl db migrate`" in status
    assert as_json(invoke(empty_dsn, "db", "status", "--json"))[0] == {
        "version": 1,
        "name": "initial",
        "applied": False,
        "applied_at": None,
    }

    assert ok(invoke(empty_dsn, "db", "migrate")).stdout == "".join(
        f"applied {m.version:04d}_{m.name}\n" for m in migrate.available()
    )
    assert ok(invoke(empty_dsn, "domain", "list")).stdout == "no domains\n"
    ok(invoke(empty_dsn, "domain", "add", "example.com"))
    assert ok(invoke(empty_dsn, "db", "status")).stdout.splitlines()[-1] == f"schema is current (version {LATEST})"


# --- configuration errors ----------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["not a dsn", "host=localhost dbname=relate", "postgresql://relate:secret@localhost:notaport/relate"],
)
def test_a_malformed_dsn_is_one_line_saying_what_to_write(bad: str) -> None:
    """A DSN the driver cannot read is one line naming database.dsn and the form it takes (no traceback,
    and not the password)."""
    line = one_error(invoke(bad, "domain", "list"))
    assert line.startswith("error: database.dsn: must be a URI like postgresql://USER:PASSWORD@HOST:5432/DATABASE")
    assert "secret" not in line


def test_a_dsn_option_the_driver_refuses_is_one_line(pg_server: str) -> None:
    line = one_error(invoke(pg_server + "&sslmode=sometimes", "domain", "list"))
    assert line.startswith("error: database.dsn: ")
    assert "sslmode" in line


@pytest.mark.skipif(os.geteuid() != 0, reason="the retry as the DSN's system user happens only as root")
def test_as_root_a_missing_database_is_named_not_hidden_by_the_peer_retry(pg_server: str) -> None:
    """As root, a refused connection is tried again as the DSN's system user (peer authentication); when
    that fails too, the first answer (here: the role is missing) still reaches the admin."""
    parts = urlsplit(pg_server)
    missing = urlunsplit(parts._replace(netloc="nobody@", path="/relate_missing"))
    line = one_error(invoke(missing, "domain", "list"))
    assert 'role "nobody" does not exist' in line, line


def test_missing_config_file_named_with_config(tmp_path: Path) -> None:
    """`--config` naming a file that does not exist fails with one line naming the file."""
    missing = tmp_path / "nonexistent.yaml"
    assert one_error(invoke(UNREACHABLE, "--config", str(missing), "domain", "list")) == (
        f"error: {missing}: no such configuration file"
    )


def test_missing_config_file_named_with_relate_config(tmp_path: Path) -> None:
    """RELATE_CONFIG naming a file that does not exist fails the same way."""
    missing = tmp_path / "nonexistent.yaml"
    line = one_error(invoke(UNREACHABLE, "domain", "list", RELATE_CONFIG=str(missing)))
    assert line == f"error: {missing}: no such configuration file"


def test_config_file_with_unknown_key(tmp_path: Path) -> None:
    """A misspelt key in the config file fails with one line naming the key and the file."""
    cfg = tmp_path / "relate.yaml"
    cfg.write_text("databse:\n  dsn: postgresql://relate@/relate\n", encoding="utf-8")
    line = one_error(invoke(UNREACHABLE, "--config", str(cfg), "domain", "list"))
    assert "databse" in line
    assert str(cfg) in line
    assert "unknown key" in line


def test_config_file_with_invalid_yaml(tmp_path: Path) -> None:
    """A config file that is not valid YAML fails with one line naming the file and the line."""
    cfg = tmp_path / "relate.yaml"
    cfg.write_text("database:\n  dsn: [unclosed\n", encoding="utf-8")
    line = one_error(invoke(UNREACHABLE, "--config", str(cfg), "domain", "list"))
    assert str(cfg) in line
    assert "line " in line


def test_config_file_is_used(dsn: str, tmp_path: Path) -> None:
    """The database named in the config file is the one the commands use."""
    cfg = tmp_path / "relate.yaml"
    cfg.write_text(f"database:\n  dsn: {json.dumps(dsn)}\n", encoding="utf-8")
    ok(invoke(None, "--config", str(cfg), "domain", "add", "example.com"))
    assert [r["name"] for r in query(dsn, "SELECT name FROM domains")] == ["example.com"]


def test_bad_environment_value_names_the_variable() -> None:
    """RELATE_DATABASE__POOL_MAX=ten fails with one line naming the variable."""
    line = one_error(invoke(UNREACHABLE, "domain", "list", RELATE_DATABASE__POOL_MAX="ten"))
    assert "$RELATE_DATABASE__POOL_MAX" in line
    assert "expected an integer" in line


def test_unknown_environment_variable_is_named() -> None:
    """A RELATE_ variable that is no config key fails with one line naming it."""
    line = one_error(invoke(UNREACHABLE, "domain", "list", RELATE_DATABSE__DSN="postgresql://x@/y"))
    assert "$RELATE_DATABSE__DSN" in line
    assert "unknown key" in line


def test_unreachable_database_is_one_line() -> None:
    """A database that cannot be reached fails with one line: cannot connect to the database."""
    line = one_error(invoke(UNREACHABLE, "domain", "list"))
    assert line.startswith("error: cannot connect to the database")


def test_no_database_configured_is_one_line() -> None:
    """Without any DSN, commands fail with one line saying how to set database.dsn."""
    line = one_error(invoke(None, "domain", "list"))
    assert "database.dsn is not set" in line
    assert "RELATE_DATABASE__DSN" in line


# --- quota ------------------------------------------------------------------------------------


def test_user_quota_sets_shows_and_clears_limits(relatectl: Invoke, bob: str, dsn: str) -> None:
    """`user quota` sets --storage (binary units) and --messages, shows them, --none lifts and --default restores."""
    assert ok(relatectl("user", "quota", bob)).stdout.strip() == (
        f"quota of {bob}: storage 0 B (no limit), messages 0 (no limit)"
    )
    out = ok(relatectl("user", "quota", bob, "--storage", "2G", "--messages", "5000")).stdout
    assert out.strip() == f"quota of {bob}: storage 0 B / 2 GiB, messages 0 / 5000"
    assert query(dsn, "SELECT quota_storage, quota_messages FROM users") == [
        {"quota_storage": 2 * 1024**3, "quota_messages": 5000}
    ]
    ok(relatectl("user", "quota", bob, "--messages", "none"))  # storage stays
    shown = as_json(relatectl("user", "quota", bob, "--json"))
    assert shown["storage"] == {"used": 0, "limit": 2 * 1024**3}
    assert shown["messages"] == {"used": 0, "limit": None}
    ok(relatectl("user", "quota", bob, "--none"))
    assert query(dsn, "SELECT quota_storage, quota_messages FROM users") == [{"quota_storage": 0, "quota_messages": 0}]
    # Back to the configured defaults, which now apply.
    ok(relatectl("user", "quota", bob, "--default"))
    assert query(dsn, "SELECT quota_storage, quota_messages FROM users") == [
        {"quota_storage": None, "quota_messages": None}
    ]
    shown = as_json(relatectl("user", "quota", bob, "--json", RELATE_QUOTA__STORAGE="1048576"))
    assert shown["storage"] == {"used": 0, "limit": 1024 * 1024}


def test_user_quota_refuses_bad_values_in_one_line(relatectl: Invoke, bob: str, dsn: str) -> None:
    """A size that is no size, zero, a negative count, or --none with --storage: one error line, nothing changed."""
    assert "--storage: not a size" in one_error(relatectl("user", "quota", bob, "--storage", "lots"))
    assert "--storage: a size must be" in one_error(relatectl("user", "quota", bob, "--storage", "0"))
    assert "--messages: expected a number" in one_error(relatectl("user", "quota", bob, "--messages", "-3"))
    assert "stand alone" in one_error(relatectl("user", "quota", bob, "--none", "--storage", "1G"))
    assert one_error(relatectl("user", "quota", "carol@example.com", "--messages", "3")) == (
        "error: no such user: carol@example.com"
    )
    assert query(dsn, "SELECT quota_storage, quota_messages FROM users") == [
        {"quota_storage": None, "quota_messages": None}
    ]


def test_user_limits_sets_shows_and_restores_sending_limits(relatectl: Invoke, bob: str, dsn: str) -> None:
    """`user limits` shows the day's sending against the limits, sets the user's own, none lifts, default restores."""
    assert ok(relatectl("user", "limits", bob)).stdout.strip() == (
        f"sending of {bob} in the last 24 hours: messages 0 / 1000 (default), new recipients 0 / 200 (default)"
    )
    (user_id,) = [r["id"] for r in query(dsn, "SELECT id FROM users")]
    query(dsn, "INSERT INTO sending_counts VALUES ($1, date_trunc('hour', now()), 7, 3)", user_id)
    out = ok(relatectl("user", "limits", bob, "--messages-per-day", "50", "--recipients-per-day", "none")).stdout
    assert out.strip() == (
        f"sending of {bob} in the last 24 hours: messages 7 / 50 (own), new recipients 3 / no limit (own)"
    )
    assert query(dsn, "SELECT send_messages_per_day, send_recipients_per_day FROM users") == [
        {"send_messages_per_day": 50, "send_recipients_per_day": 0}
    ]
    ok(relatectl("user", "limits", bob, "--messages-per-day", "default"))  # recipients stay
    shown = as_json(relatectl("user", "limits", bob, "--json", RELATE_SUBMISSION__LIMITS__MESSAGES_PER_DAY="9"))
    assert shown["messages"] == {"used": 7, "limit": 9, "own": False}
    assert shown["recipients"] == {"used": 3, "limit": None, "own": True}
    assert "--messages-per-day: expected a number" in one_error(
        relatectl("user", "limits", bob, "--messages-per-day", "-1")
    )
    assert one_error(relatectl("user", "limits", "carol@example.com")) == "error: no such user: carol@example.com"


def test_user_list_and_show_include_the_quota(relatectl: Invoke, bob: str, dsn: str) -> None:
    """`user list` shows each user's storage and messages against the limits; `user show` has a quota line."""
    ok(relatectl("user", "quota", bob, "--storage", "1M", "--messages", "10"))
    query(dsn, "UPDATE mailboxes SET message_count = 10, message_bytes = 524288 WHERE name = 'INBOX'")
    query(dsn, "UPDATE users SET quota_full_since = '2026-01-02 03:04:00+00'")
    out = ok(relatectl("user", "list")).stdout
    assert re.search(r"│ 512 KiB / 1 MiB\s+│ 10 / 10\s+│", out), out
    (listed,) = as_json(relatectl("user", "list", "--json"))
    assert listed["quota"]["storage"] == {"used": 524288, "limit": 1024 * 1024}
    assert listed["quota"]["messages"] == {"used": 10, "limit": 10}
    assert listed["quota"]["full"] is True
    out = ok(relatectl("user", "show", bob)).stdout
    assert f"quota of {bob}: storage 512 KiB / 1 MiB, messages 10 / 10; FULL since 2026-01-0" in out


def test_version_answers_without_loading_the_commands() -> None:
    """`relatectl --version` (the console script) prints the version without importing the command tree, the
    database driver or the mail parser: it answers in milliseconds, not a quarter of a second."""
    probe = (
        "import sys; sys.argv = ['relatectl', '--version']\n"
        "from relatectl.launch import main\n"
        "main()\n"
        "print(sorted(m for m in ('relatectl.main', 'asyncpg', 'relate.mail.mime', 'typer') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out == f"relatectl {relate.__version__}\n[]\n"
    full = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.argv = ['relatectl', '--help']\nfrom relatectl.launch import main\nmain()",
        ],
        capture_output=True,
        text=True,
    )
    assert full.returncode == 0
    assert "Usage: relatectl" in full.stdout


def test_user_allow_block_unlist_senders(relatectl: Invoke, bob: str) -> None:
    """allow and block put senders on bob's lists (a second call moves one), senders lists them, unlist removes."""
    assert "example.org is on the allow list" in ok(relatectl("user", "allow", bob, "Example.ORG")).stdout
    ok(relatectl("user", "block", bob, "spammer@bad.example"))
    assert "example.org is on the block list" in ok(relatectl("user", "block", bob, "example.org")).stdout
    rows = json.loads(ok(relatectl("user", "senders", bob, "--json")).stdout)
    assert [(r["pattern"], r["kind"]) for r in rows] == [("example.org", "block"), ("spammer@bad.example", "block")]
    ok(relatectl("user", "unlist", bob, "example.org"))
    assert "example.org" not in ok(relatectl("user", "senders", bob)).stdout
    failed = relatectl("user", "unlist", bob, "example.org")
    assert failed.exit_code != 0
    assert "neither list" in failed.stderr
    assert relatectl("user", "allow", bob, "not a domain").exit_code != 0


def test_an_idna_domain_is_one_domain_whichever_form_is_typed(relatectl: Invoke) -> None:
    """`domain add München.de` hosts xn--mnchen-3ya.de (and says both); the A-label form is then the same domain;
    users of either form are one; the DKIM record to publish is named by the A-label; ☃.net is refused."""
    assert ok(relatectl("domain", "add", "München.de")).stdout == "added domain münchen.de (xn--mnchen-3ya.de)\n"
    one_error(relatectl("domain", "add", "xn--mnchen-3ya.de"))
    ok(relatectl("user", "add", "jörg@xn--mnchen-3ya.de"))
    one_error(relatectl("user", "add", "Jörg@münchen.de"))
    assert "jörg@münchen.de" in ok(relatectl("user", "list")).stdout
    assert as_json(relatectl("user", "show", "jörg@münchen.de", "--json"))["address"] == "jörg@xn--mnchen-3ya.de"
    record = ok(relatectl("dkim", "keygen", "münchen.de", "--algorithm", "ed25519")).stdout
    assert re.match(r"relate\d{8}\._domainkey\.xn--mnchen-3ya\.de\. TXT ", record), record
    assert "not a valid domain name" in one_error(relatectl("domain", "add", "☃.net"))
