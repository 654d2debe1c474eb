"""The database going away: every step that needs it answers 4xx (451 4.3.0), never 250, and the daemon lives on."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from relate.auth import Authenticator
from relate.config import Config, DatabaseConfig, ListenerConfig
from relate.services import accounts
from relate.smtp.server import SmtpServer
from relate.store import db

from .helpers import Client, insecure_client_context, make_message

_names = itertools.count()
# A Python exception class name (FooError, SomethingException) or a traceback leaking into a reply.
LEAK = re.compile(r"Error|Exception|Traceback|asyncpg|postgres|database", re.IGNORECASE)


@dataclass
class Doomed:
    """A daemon whose database can be dropped under it."""

    server: SmtpServer
    mx: int
    submission: int
    alice_key: str
    pg_server: str
    name: str

    async def drop_database(self, settle: float = 0.2) -> None:
        conn = await asyncpg.connect(self.pg_server)
        try:
            await conn.execute(f"DROP DATABASE {self.name} WITH (FORCE)")
        finally:
            await conn.close()
        # Let the pool notice its connections were terminated (or, with 0, not yet).
        await asyncio.sleep(settle)


@pytest.fixture
async def doomed(pg_server: str, tls_files: tuple[Path, Path]) -> AsyncIterator[Doomed]:
    """An SMTP daemon on a throwaway copy of the migrated template database."""
    name = f"relate_doomed_{os.getpid()}_{next(_names)}"
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE relate_template STRATEGY FILE_COPY")
    finally:
        await admin.close()
    dsn = urlunsplit(urlsplit(pg_server)._replace(path=f"/{name}"))
    pool = await db.create_pool(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=4))
    await accounts.add_domain(pool, "example.com")
    await accounts.add_user(pool, "alice@example.com")
    await accounts.add_user(pool, "bob@example.com")
    key, _ = await accounts.create_key(pool, "alice@example.com", "test", "smtp", rounds=4)
    cfg = Config(hostname="mail.example.com")
    cfg.database.dsn = dsn
    cfg.tls.cert, cfg.tls.key = tls_files
    cfg.auth.bcrypt_rounds = 4
    cfg.smtp.mx = ListenerConfig(listen=["127.0.0.1:0"])
    cfg.smtp.submission = ListenerConfig(listen=["127.0.0.1:0"])
    cfg.smtp.submissions = ListenerConfig(listen=[])
    server = SmtpServer(cfg, pool, Authenticator(pool, cfg.auth))
    await server.start()
    yield Doomed(
        server=server,
        mx=server.addresses("mx")[0][1],
        submission=server.addresses("submission")[0][1],
        alice_key=key,
        pg_server=pg_server,
        name=name,
    )
    await server.stop(grace=1)
    pool.terminate()
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


def assert_clean(client: Client) -> None:
    for line in client.transcript:
        assert not LEAK.search(line), line


@pytest.mark.parametrize("settle", [0.2, 0.0])
async def test_data_after_database_loss_is_451(doomed: Doomed, settle: float) -> None:
    """A transaction whose database disappears before DATA gets 451 4.3.0 after the data, and the next MAIL 250."""
    client = await Client.connect(doomed.mx)
    await client.ehlo()
    assert (await client.cmd("MAIL FROM:<carol@remote.example>")).head == "250 2.1.0"
    assert (await client.cmd("RCPT TO:<bob@example.com>")).head == "250 2.1.5"
    await doomed.drop_database(settle)
    assert (await client.data(make_message())).head == "451 4.3.0"
    # The failed transaction is over (RFC 5321 §4.1.1.4): a new one may start.
    assert (await client.cmd("MAIL FROM:<carol@remote.example>")).head == "250 2.1.0"
    assert (await client.cmd("RCPT TO:<bob@example.com>")).head == "451 4.3.0"
    assert_clean(client)


async def test_rcpt_after_database_loss_is_451(doomed: Doomed) -> None:
    """With the database gone, a new client is still greeted, and RCPT gets 451 4.3.0; the daemon keeps running."""
    await doomed.drop_database()
    for _ in range(2):
        client = await Client.connect(doomed.mx)
        assert client.greeting is not None
        assert client.greeting.head == "220"
        assert (await client.ehlo()).code == 250
        assert (await client.cmd("MAIL FROM:<carol@remote.example>")).head == "250 2.1.0"
        assert (await client.cmd("RCPT TO:<bob@example.com>")).head == "451 4.3.0"
        assert (await client.cmd("RCPT TO:<alice@example.com>")).head == "451 4.3.0"
        assert (await client.cmd("DATA")).head == "503 5.5.1"
        assert (await client.cmd("NOOP")).head == "250 2.0.0"
        assert (await client.cmd("QUIT")).head == "221 2.0.0"
        assert_clean(client)
        await client.close()


async def test_auth_after_database_loss_is_temporary(doomed: Doomed, caplog: pytest.LogCaptureFixture) -> None:
    """With the database gone, AUTH gets a 4xx (454 4.7.0), not 535, and is not counted as a failed login."""
    caplog.set_level(logging.WARNING, logger="relate")
    await doomed.drop_database()
    client = await Client.connect(doomed.submission)
    await client.ehlo()
    await client.starttls(insecure_client_context())
    await client.ehlo()
    for _ in range(6):
        assert (await client.auth_plain("alice@example.com", doomed.alice_key)).head == "454 4.7.0"
    assert_clean(client)
    assert not [r for r in caplog.records if r.getMessage().startswith(("auth-failure", "auth-lockout"))]
