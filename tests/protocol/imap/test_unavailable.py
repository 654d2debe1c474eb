"""A database out of reach (a full pool, a server that is down): NO [UNAVAILABLE], one log line, the session lives."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pytest

from relate.auth import Authenticator
from relate.config import DatabaseConfig
from relate.imap.server import ImapServer
from relate.store import db

from .conftest import Imap
from .helpers import ImapClient, Lit, LogLines, captured_logs, make_message

# Every command that needs the database, run in a session with INBOX selected (one message in it).
SELECTED = [
    "NOOP",
    "CHECK",
    "FETCH 1 (FLAGS ENVELOPE)",
    "FETCH 1 BODY[]",
    "STORE 1 +FLAGS (\\Flagged)",
    "SEARCH ALL",
    "UID SEARCH TEXT hello",
    "COPY 1 Trash",
    "MOVE 1 Trash",
    "UID EXPUNGE 1",
    "EXPUNGE",
    "STATUS INBOX (MESSAGES)",
    'LIST "" *',
    "CREATE Later",
    "RENAME Trash Bin",
    "SUBSCRIBE Trash",
    "DELETE Trash",
    "SELECT Trash",
]


async def _everything_unavailable(client: ImapClient, imap: Imap, lines: LogLines) -> None:
    """Each command answers NO [UNAVAILABLE] and logs one imap-tempfail line; the session goes on."""
    for command in SELECTED:
        before = len(lines.records)
        result = await client.command(command, wait=20)
        assert (result.status, result.code) == ("NO", "UNAVAILABLE"), (command, str(result))
        tempfails = [r for r in lines.records[before:] if r.getMessage().startswith("imap-tempfail")]
        assert len(tempfails) == 1, (command, [r.getMessage() for r in lines.records[before:]])
        assert "\n" not in tempfails[0].getMessage()
        assert tempfails[0].exc_info is None
    result = await client.command("APPEND INBOX ", Lit(make_message()), wait=20)
    assert (result.status, result.code) == ("NO", "UNAVAILABLE"), str(result)
    assert (await client.command("CAPABILITY")).ok  # what needs no database still works
    assert not [r for r in lines.records if r.levelno >= logging.ERROR], [r.getMessage() for r in lines.records]


@pytest.fixture
async def small(imap: Imap) -> AsyncIterator[tuple[ImapServer, db.Pool]]:
    """A second daemon on a pool of one connection for every session (its change feed listens on its own)."""
    pool = await db.create_pool(DatabaseConfig(dsn=imap.cfg.database.dsn, pool_min=1, pool_max=1, acquire_timeout=0.3))
    server = ImapServer(imap.cfg, pool, Authenticator(pool, imap.cfg.auth))
    await server.start()
    try:
        yield server, pool
    finally:
        await server.stop(grace=2)
        await pool.close()


async def test_full_pool_answers_unavailable(imap: Imap, small: tuple[ImapServer, db.Pool]) -> None:
    """With every pooled connection held elsewhere, each command gets NO [UNAVAILABLE] in acquire_timeout."""
    server, pool = small
    await imap.deliver()
    client = await ImapClient.connect(server.addresses("imaps")[0][1], tls=imap.client_tls)
    await client.login("bob@example.com", imap.bob_key)
    await client.ok("SELECT INBOX")
    newcomer = await ImapClient.connect(server.addresses("imaps")[0][1], tls=imap.client_tls)
    with captured_logs("relate") as lines:
        async with pool.acquire() as held:
            await held.execute("SELECT 1")
            await _everything_unavailable(client, imap, lines)
            # alice's key has not been verified yet (a verified key is cached and needs no database)
            result = await newcomer.command(f"LOGIN alice@example.com {imap.alice_key}", wait=20)
            assert (result.status, result.code) == ("NO", "UNAVAILABLE"), str(result)
    await client.ok("SELECT INBOX")  # the failed SELECT left none selected (RFC 9051 §6.3.2)
    assert len((await client.ok("FETCH 1:* FLAGS")).fetches()) == 1
    await newcomer.login("alice@example.com", imap.alice_key)
    assert imap.errors.records == []


class _Proxy:
    """A TCP relay to PostgreSQL that the test can cut (refusing and breaking connections) and restore."""

    def __init__(self, dsn: str) -> None:
        parts = urlsplit(dsn)
        query = parse_qs(parts.query)
        host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
        port = int(query.get("port", [str(parts.port or 5432)])[0])
        self.unix = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else None
        self.target = (host, port)
        self.database = parts.path
        self.port = 0
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.StreamWriter] = set()

    @property
    def dsn(self) -> str:
        return urlunsplit(("postgresql", f"postgres@127.0.0.1:{self.port}", self.database, "", ""))

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        for writer in list(self.links):
            writer.transport.abort()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.unix is not None:
            up_reader, up_writer = await asyncio.open_unix_connection(self.unix)
        else:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.links -= {writer, up_writer}


async def test_database_down_answers_unavailable_and_recovers(imap: Imap) -> None:
    """With PostgreSQL out of reach (connections broken, new ones refused), every command gets NO [UNAVAILABLE]
    with one log line; once it is back, the same session works again."""
    await imap.deliver(make_message(body="hello there\r\n"))
    proxy = _Proxy(imap.cfg.database.dsn or "")
    await proxy.start()
    pool = await db.create_pool(DatabaseConfig(dsn=proxy.dsn, pool_min=1, pool_max=4, acquire_timeout=2))
    server = ImapServer(imap.cfg, pool, Authenticator(pool, imap.cfg.auth))
    await server.start()
    try:
        client = await ImapClient.connect(server.addresses("imaps")[0][1], tls=imap.client_tls)
        await client.login("bob@example.com", imap.bob_key)
        await client.ok("SELECT INBOX")
        with captured_logs("relate") as lines:
            await proxy.cut()
            await _everything_unavailable(client, imap, lines)
            newcomer = await ImapClient.connect(server.addresses("imaps")[0][1], tls=imap.client_tls)
            result = await newcomer.command(f"LOGIN alice@example.com {imap.alice_key}", wait=20)
            assert (result.status, result.code) == ("NO", "UNAVAILABLE"), str(result)
            await proxy.start()
            for _ in range(50):  # the pool reconnects on the next acquire
                if (await client.command("SELECT INBOX")).ok:
                    break
                await asyncio.sleep(0.1)
            assert len((await client.ok("FETCH 1:* FLAGS")).fetches()) == 1
            await newcomer.login("alice@example.com", imap.alice_key)
    finally:
        await server.stop(grace=2)
        await pool.close()
        await proxy.cut()
    assert imap.errors.records == []


async def test_idle_rides_out_a_full_pool(imap: Imap, small: tuple[ImapServer, db.Pool]) -> None:
    """News for an IDLE client that cannot be read (pool full) comes once a connection is free; IDLE never
    ends with an error, and the outage is one log line."""
    server, pool = small
    client = await ImapClient.connect(server.addresses("imaps")[0][1], tls=imap.client_tls)
    await client.login("bob@example.com", imap.bob_key)
    await client.ok("SELECT INBOX")
    tag = await client.idle()
    with captured_logs("relate") as lines:
        async with pool.acquire() as held:
            await held.execute("SELECT 1")
            await imap.deliver()  # through the test's own pool: the daemon hears the NOTIFY, cannot ask
            assert await client.untagged_within(1.0) == []
        lines_then = [m for m in lines.messages() if m.startswith("imap-tempfail")]
        exists = await client.read_until(lambda line: line.endswith(b"EXISTS"), wait=10)
    assert exists[-1] == b"* 1 EXISTS"
    assert len(lines_then) == 1
    assert "command=IDLE" in lines_then[0]
    assert (await client.done(tag)).ok
