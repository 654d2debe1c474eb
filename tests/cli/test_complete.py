"""TAB completion as bash asks for it: the installed relatectl, the completion variables, a real database.

Each test runs the console script the way bash's completion function does
(``_RELATECTL_COMPLETE=complete_bash COMP_WORDS=... COMP_CWORD=...``) and
reads the values it prints, one per line.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from relate.config import DatabaseConfig
from relate.services import accounts
from relate.services import dns as dns_service
from relate.store import db
from tests.protocol.delivery.helpers import ALICE, queue_mail

RELATECTL = str(Path(sys.executable).with_name("relatectl"))
UNREACHABLE = "postgresql://nobody@127.0.0.1:1/x"  # nothing listens on port 1


def complete(dsn: str, line: str, *, config: str | None = None) -> list[str]:
    """What bash is offered for ``line`` (completing its last word; a trailing space starts a new one)."""
    words = line.split()
    if line.endswith(" "):
        words.append("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELATE_")}
    env.update(
        {
            "_RELATECTL_COMPLETE": "complete_bash",
            "COMP_WORDS": line,
            "COMP_CWORD": str(len(words) - 1),
            "RELATE_DATABASE__DSN": dsn,
        }
    )
    if config is not None:
        env["RELATE_CONFIG"] = config
    done = subprocess.run([RELATECTL], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done
    assert done.stderr == "", done.stderr  # never a traceback in the admin's shell
    return [line for line in done.stdout.splitlines() if line]  # nothing to offer: bash gets one empty line


def _setup(dsn: str) -> dict[str, int]:
    async def go() -> dict[str, int]:
        pool = await db.create_pool(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=2))
        try:
            await accounts.add_domain(pool, "example.com")
            await accounts.add_domain(pool, "münchen.de")
            await accounts.add_user(pool, ALICE, "Alice")
            await accounts.add_user(pool, "bob@example.com", "Bob")
            await accounts.add_user(pool, "jörg@münchen.de")
            await accounts.add_alias(pool, "bobby@example.com", "bob@example.com")
            _, key = await accounts.create_key(pool, "bob@example.com", "phone", "imap", rounds=4)
            _, revoked = await accounts.create_key(pool, "bob@example.com", "old", "imap", rounds=4)
            await accounts.revoke_key(pool, revoked["id"])
            queued = await queue_mail(pool, ["carol@remote.test"])
            held = await queue_mail(pool, ["dave@remote.test"])
            await pool.execute("UPDATE outbound_emails SET status = 'held' WHERE id = $1", held)
            await dns_service.dkim_keygen(pool, "example.com", kind="ed25519", selector="s2026")
            return {"key": key["id"], "queued": queued, "held": held}
        finally:
            await pool.close()

    return asyncio.run(go())


@pytest.fixture
def data(dsn: str) -> dict[str, int]:
    """example.com and münchen.de hosted; alice, bob (alias bobby, keys: one live, one revoked), jörg@münchen.de;
    one message queued and one held; a DKIM key s2026 for example.com."""
    return _setup(dsn)


def test_nouns_and_verbs_complete(dsn: str) -> None:
    """`relatectl <TAB>` offers every noun, `relatectl us<TAB>` user, `relatectl user s<TAB>` its s-verbs."""
    assert complete(dsn, "relatectl ") == [
        "db", "domain", "user", "alias", "sieve", "key", "queue", "dkim", "tls", "import", "setup", "dev", "status",
        "backup", "restore",
    ]  # fmt: skip
    assert complete(dsn, "relatectl us") == ["user"]
    assert complete(dsn, "relatectl user s") == ["show", "senders"]


def test_domains_users_and_addresses_complete(dsn: str, data: dict[str, int]) -> None:
    """Hosted domains (as U-labels), users by primary address, and addresses with aliases complete."""
    assert complete(dsn, "relatectl domain dns ") == ["example.com", "münchen.de"]
    assert complete(dsn, "relatectl domain check mü") == ["münchen.de"]
    assert complete(dsn, "relatectl user list --domain e") == ["example.com"]
    assert complete(dsn, "relatectl user show ") == ["alice@example.com", "bob@example.com", "jörg@münchen.de"]
    assert complete(dsn, "relatectl user show b") == ["bob@example.com"]
    assert complete(dsn, "relatectl user show jörg@mü") == ["jörg@münchen.de"]
    assert complete(dsn, "relatectl key create bo") == ["bob@example.com", "bobby@example.com"]
    assert complete(dsn, "relatectl alias remove ") == ["bobby@example.com"]


def test_queue_ids_key_ids_scopes_and_selectors_complete(dsn: str, data: dict[str, int]) -> None:
    """Queue ids (release: held ones only), live key ids, scopes after a comma, DKIM selectors of the domain."""
    assert complete(dsn, "relatectl queue show ") == [str(data["queued"]), str(data["held"])]
    assert complete(dsn, "relatectl queue hold ") == [str(data["queued"]), str(data["held"])]
    assert complete(dsn, "relatectl queue release ") == [str(data["held"])]
    assert complete(dsn, "relatectl key revoke ") == [str(data["key"])]
    assert complete(dsn, "relatectl key create bob@example.com --scope imap,s") == ["imap,smtp"]
    assert complete(dsn, "relatectl key create bob@example.com --scope api") == ["api:read", "api:write"]
    assert complete(dsn, "relatectl queue list --status h") == ["held"]
    assert complete(dsn, "relatectl dkim retire example.com ") == ["s2026"]
    assert complete(dsn, "relatectl dkim retire münchen.de ") == []


@pytest.mark.parametrize(
    ("dsn_given", "config"), [(UNREACHABLE, None), ("not a dsn", None), (UNREACHABLE, "/nonexistent/relate.yaml")]
)
def test_nothing_when_the_database_cannot_be_reached(dsn_given: str, config: str | None) -> None:
    """Database down, a malformed DSN, or a config file that is not there: no values, no traceback, exit 0,
    in well under the connect timeout of a command."""
    started = time.monotonic()
    assert complete(dsn_given, "relatectl user show ", config=config) == []
    assert time.monotonic() - started < 5
    assert complete(dsn_given, "relatectl ", config=config)[:2] == ["db", "domain"]  # the nouns need no database


def test_no_stale_connections_are_left(dsn: str, data: dict[str, int]) -> None:
    """A completion closes its connection: none named relatectl-complete remains."""
    complete(dsn, "relatectl user show ")

    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'relatectl-complete'"
                )
            )
        finally:
            await conn.close()

    assert asyncio.run(count()) == 0
