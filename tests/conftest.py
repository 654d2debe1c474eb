"""Fixtures every test shares: one embedded PostgreSQL per test session, and a
fresh database per test cloned from a migrated template (a few milliseconds)."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from relate.config import AuthConfig, DatabaseConfig
from relate.runtime.embedded_pg import EmbeddedPostgres
from relate.runtime.looplag import LoopWatchdog
from relate.store import db, migrate
from tests.rspamd import RspamdServer

TEMPLATE = "relate_template"
_counter = itertools.count()


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _admin(server_dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The DSN of the session's server (database `relate`), with a migrated template beside it.

    TEST_POSTGRES_DSN points the suite at an existing server instead.
    """
    external = os.environ.get("TEST_POSTGRES_DSN")
    server: EmbeddedPostgres | None = None
    if external:
        dsn = external
    else:
        # Not under pytest's basetemp: a concurrent pytest run prunes old
        # basetemps, which would pull the data directory from under the server.
        base = Path(tempfile.mkdtemp(prefix="relate-test-pg-"))
        server = EmbeddedPostgres(base / "data")
        dsn = server.start(durable=False)

    async def make_template() -> None:
        await _admin(dsn, f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        await _admin(dsn, f"CREATE DATABASE {TEMPLATE}")
        conn = await asyncpg.connect(_with_database(dsn, TEMPLATE))
        try:
            await migrate.migrate(conn)
        finally:
            await conn.close()

    asyncio.run(make_template())
    yield dsn
    if server is not None:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _fresh_database(pg_server: str, kind: str, create: str) -> Iterator[str]:
    name = f"relate_{kind}_{os.getpid()}_{next(_counter)}"
    asyncio.run(_admin(pg_server, f"CREATE DATABASE {name} {create}"))
    yield _with_database(pg_server, name)
    asyncio.run(_admin(pg_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def dsn(pg_server: str) -> Iterator[str]:
    """A DSN of a brand-new, fully migrated database, dropped after the test."""
    yield from _fresh_database(pg_server, "test", f"TEMPLATE {TEMPLATE} STRATEGY FILE_COPY")


@pytest.fixture
def empty_dsn(pg_server: str) -> Iterator[str]:
    """A DSN of a brand-new database with no schema at all, dropped after the test."""
    yield from _fresh_database(pg_server, "empty", "")


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A connection pool on the test's own database."""
    p = await db.create_pool(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=4))
    yield p
    await p.close()


@pytest.fixture
def auth_config() -> AuthConfig:
    """The default authentication policy, with the cheapest bcrypt factor for speed."""
    return AuthConfig(bcrypt_rounds=4)


@pytest.fixture
async def loop_watchdog() -> AsyncIterator[LoopWatchdog]:
    """The daemons' loop-lag watchdog on the test's event loop (100 ms, as in production)."""
    watchdog = LoopWatchdog(0.1)
    watchdog.start()
    yield watchdog
    watchdog.stop()
    blocked = [s for s in watchdog.stalls if s.ours and s.blocking]
    if blocked:
        pytest.fail(
            "Relate Mail code blocked the event loop: "
            + "; ".join(f"{s.seconds * 1000:.0f} ms (cpu {s.cpu_seconds}) at {s.where}" for s in blocked),
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _no_loop_blocking(request: pytest.FixtureRequest) -> None:
    """Every async test fails when daemon code blocks the loop for more than 100 ms (see runtime/looplag.py)."""
    if inspect.iscoroutinefunction(request.function):
        request.getfixturevalue("loop_watchdog")


@pytest.fixture(scope="session")
def rspamd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RspamdServer]:
    """A real rspamd on loopback (tests/rspamd.py), started once per test session; skipped when the binary
    is missing, except under CI (scripts/test-deps installs it)."""
    server = RspamdServer(tmp_path_factory.mktemp("rspamd"))
    server.start()
    yield server
    server.stop()
