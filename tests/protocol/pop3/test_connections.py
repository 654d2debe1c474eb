"""Database connections: the maildrop locks share one connection per process, everything else the pool.

Issue 12, finding 5: each session held a database connection of its own for
its maildrop lock, so about 90 POP3 users exhausted PostgreSQL and logins were
dropped after PASS without a word. These tests count PostgreSQL's backends
while sessions are open, cut the lock connection and the pool from under live
sessions, and check that every failure is answered ``-ERR [SYS/TEMP]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from relate.auth import Authenticator
from relate.config import Config
from relate.pop3.server import Pop3Server
from relate.services import accounts
from relate.store import accounts as account_store
from relate.store import db, messages
from tests.daemons import Daemon, clean_env, daemon_argv, free_port, write_config

from . import many_clients
from .helpers import ALICE, BOB, Client, Pop3, logged_in, make_message, pop3_config, wait_until

_LOCK_CLASS = 0x504F5033  # the maildrop lock's first key ("POP3"), as every relate-pop3 process takes it


async def backends(dsn: str) -> int:
    """Client connections to the test's database other than the one asking (autovacuum is not one)."""
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval(
            """SELECT count(*) FROM pg_stat_activity
                WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"""
        )
        return count
    finally:
        await conn.close()


async def maildrop_lock_holders(pool: asyncpg.Pool) -> list[int]:
    """Backend pids holding a POP3 maildrop lock in the test's database."""
    rows = await pool.fetch(
        """SELECT DISTINCT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database
            WHERE l.locktype = 'advisory' AND l.classid = $1::bigint::oid AND d.datname = current_database()""",
        _LOCK_CLASS,
    )
    return [r["pid"] for r in rows]


@contextlib.asynccontextmanager
async def pool_held(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Every connection of ``pool`` taken (as by other busy sessions) until the block ends."""
    held = [await pool.acquire() for _ in range(pool.get_max_size())]
    try:
        yield
    finally:
        for conn in held:
            await pool.release(conn)


# -- one connection for the locks, the pool for the rest ------------------------------------------------


async def test_sessions_do_not_hold_a_connection_each(pop3: Pop3, dsn: str) -> None:
    """Twenty logged-in sessions of different users open no connection beyond the pool's and one for the locks."""
    for n in range(18):
        await accounts.add_user(pop3.pool, f"user{n}@example.com")
    keys = [await accounts.create_key(pop3.pool, f"user{n}@example.com", "k", "pop3", rounds=4) for n in range(18)]
    clients = [await logged_in(pop3), await logged_in(pop3, BOB)]
    for n, (key, _) in enumerate(keys):
        clients.append(await logged_in(pop3, f"user{n}@example.com", key))
    assert len(await maildrop_lock_holders(pop3.pool)) == 1, "every maildrop lock on one connection"
    assert await backends(dsn) <= pop3.pool.get_max_size() + 1
    for client in clients:
        assert await client.cmd("STAT") == "+OK 0 0"


async def test_thousand_sessions_on_the_default_pool(dsn: str, tmp_path: Path) -> None:
    """1,000 sessions at once on the default pool: all log in, STAT, RETR and QUIT; PostgreSQL sees pool_max + 1."""
    cfg = pop3_config(dsn, tmp_path)
    cfg.pop3.allow_plaintext_auth = True  # plain text: the test is about connections, not TLS handshakes
    cfg.pop3.max_connections_per_client = 1000  # every client comes from 127.0.0.1
    users = 1000
    assert cfg.database.pool_max == 10, "the default pool"
    assert cfg.pop3.max_connections == users, "the default connection limit"
    pool = await db.create_pool(cfg.database)
    server = Pop3Server(cfg, pool, Authenticator(pool, cfg.auth))
    try:
        await accounts.add_domain(pool, "many.example")
        gate = asyncio.Semaphore(8)

        async def add(n: int) -> tuple[int, str]:
            async with gate:
                user = await accounts.add_user(pool, f"u{n}@many.example")
                key, _ = await accounts.create_key(pool, f"u{n}@many.example", "k", "pop3", rounds=4)
                async with pool.acquire() as conn:
                    inbox = await account_store.inbox_id(conn, user["id"])
                assert inbox is not None
                return inbox, key

        made = await asyncio.gather(*(add(n) for n in range(users)))
        raw = make_message(subject="for everyone")
        async with pool.acquire() as conn:
            await messages.ingest(conn, raw, [inbox for inbox, _ in made])
        await server.start()
        port = server.addresses("pop3")[0][1]

        peak = 0
        sampling = True

        async def sample() -> None:
            nonlocal peak
            conn = await asyncpg.connect(dsn)
            try:
                while sampling:
                    count = await conn.fetchval(
                        """SELECT count(*) FROM pg_stat_activity
                            WHERE datname = current_database() AND pid <> pg_backend_pid()
                              AND backend_type = 'client backend'"""
                    )
                    peak = max(peak, count)
                    await asyncio.sleep(0.05)
            finally:
                await conn.close()

        sampler = asyncio.create_task(sample())
        loop = asyncio.get_running_loop()
        started = loop.time()
        # The clients run in a process of their own, as they would on other machines: the daemon's loop
        # (watched for stalls over 100 ms) does the daemon's work only, and shares no GIL with them.
        results = await many_clients.run(port, [key for _, key in made], raw, tmp_path)
        seconds = loop.time() - started
        sampling = False
        await sampler
        failed = [r for r in results if r != "ok"]
        assert failed == [], f"{len(failed)} sessions failed, e.g. {failed[:5]}"
        assert peak <= cfg.database.pool_max + 1, f"{peak} connections to PostgreSQL"
        logging.getLogger(__name__).info("1000 sessions in %.1f s, peak %d connections", seconds, peak)
    finally:
        await server.stop(grace=2)
        await pool.close()


# -- the lock connection -------------------------------------------------------------------------------


async def test_lost_lock_connection_ends_the_sessions_holding_locks(
    pop3: Pop3, caplog: pytest.LogCaptureFixture
) -> None:
    """The lock connection cut (database restart): holders hear -ERR [SYS/TEMP] and are closed; next login re-locks."""
    caplog.set_level(logging.INFO)
    await pop3.deliver(ALICE, make_message())
    alice = await logged_in(pop3)
    bob = await logged_in(pop3, BOB)
    waiting = await Client.connect(pop3.pop3s, tls=pop3.client_tls)  # in AUTHORIZATION: holds no lock
    [holder] = await maildrop_lock_holders(pop3.pool)
    await pop3.pool.execute("SELECT pg_terminate_backend($1)", holder)
    for client in (alice, bob):
        assert (await client.status()).startswith("-ERR [SYS/TEMP] "), client.transcript
        assert await client.closed()
    assert (await waiting.cmd("NOOP")).startswith("-ERR")  # still served: NOOP is not allowed before login
    assert len([r for r in caplog.records if "pop3-locks-lost" in r.getMessage()]) == 1
    # The next login makes a new lock connection, and the lock works again.
    assert (await waiting.login(ALICE, pop3.alice_key)).startswith("+OK Maildrop has 1 messages")
    assert len([r for r in caplog.records if "pop3-locks-restored" in r.getMessage()]) == 1
    second = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert (await second.login(ALICE, pop3.alice_key)).startswith("-ERR [IN-USE]")
    assert (await waiting.multi("RETR 1"))[0].startswith("+OK")
    assert await maildrop_lock_holders(pop3.pool) not in ([], [holder])


async def test_lock_lost_mid_command_answers_the_command_first(pop3: Pop3) -> None:
    """A session busy with a command when the lock goes answers that command, then -ERR [SYS/TEMP], then closes."""
    for n in range(3):
        await pop3.deliver(ALICE, make_message(subject=f"m{n}"))
    client = await logged_in(pop3)
    [holder] = await maildrop_lock_holders(pop3.pool)
    async with pool_held(pop3.pool):  # RETR waits for a pooled connection while the lock goes
        await client.write(b"RETR 1\r\n")
        await asyncio.sleep(0.1)
        lock_killer = await asyncpg.connect(pop3.cfg.database.dsn)
        await lock_killer.execute("SELECT pg_terminate_backend($1)", holder)
        await lock_killer.close()
        await asyncio.sleep(0.1)
    status, _ = await client.status(), await client.body()
    assert status.startswith("+OK"), status
    assert (await client.status()).startswith("-ERR [SYS/TEMP] ")
    assert await client.closed()


async def test_maildrop_lock_holds_across_processes(pop3: Pop3, config: Config) -> None:
    """Two daemons on one database (two lock connections): a maildrop open on one is [IN-USE] on the other."""
    other = Pop3Server(config, pop3.pool, Authenticator(pop3.pool, config.auth))
    await other.start()
    try:
        there = other.addresses("pop3s")[0][1]
        first = await logged_in(pop3)
        second = await Client.connect(there, tls=pop3.client_tls)
        assert (await second.login(ALICE, pop3.alice_key)).startswith("-ERR [IN-USE]")
        assert (await second.login(BOB, pop3.bob_key)).startswith("+OK")
        back = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
        assert (await back.login(BOB, pop3.bob_key)).startswith("-ERR [IN-USE]")
        assert (await first.cmd("QUIT")).startswith("+OK")
        assert await first.closed()
        again = await Client.connect(there, tls=pop3.client_tls)
        assert (await again.login(ALICE, pop3.alice_key)).startswith("+OK")
    finally:
        await other.stop(grace=2)


async def test_killed_daemon_releases_its_locks(pop3: Pop3, dsn: str, tmp_path: Path) -> None:
    """kill -9 of a relate-pop3 process holding maildrops frees them at once (PostgreSQL drops its connection)."""
    key, port = pop3.alice_key, free_port()
    config = write_config(
        tmp_path / "relate.yaml",
        dsn,
        tls={"cert": str(pop3.cfg.tls.cert), "key": str(pop3.cfg.tls.key)},
        pop3={"pop3": {"listen": []}, "pop3s": {"listen": [f"127.0.0.1:{port}"]}},
    )
    daemon = Daemon(daemon_argv("relate.pop3", config), clean_env(), tmp_path / "pop3.log")
    try:
        await asyncio.to_thread(daemon.wait_log, "ready service=pop3", 30)
        victim = await Client.connect(port, tls=pop3.client_tls)
        assert (await victim.login(ALICE, key)).startswith("+OK")
        assert (await (await Client.connect(pop3.pop3s, tls=pop3.client_tls)).login(ALICE, key)).startswith(
            "-ERR [IN-USE]"
        )
        daemon.signal(signal.SIGKILL)
        await asyncio.to_thread(daemon.proc.wait, 10)
    finally:
        await asyncio.to_thread(daemon.stop)

    async def free() -> bool:
        client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
        return (await client.login(ALICE, key)).startswith("+OK")

    assert await wait_until(free, wait=5)


# -- failures answer -ERR [SYS/TEMP] -----------------------------------------------------------------


async def test_database_refusing_connections_answers_sys_temp(
    pop3: Pop3, pg_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A database that refuses new connections: PASS answers -ERR [SYS/TEMP] with one log line; later it works."""
    caplog.set_level(logging.INFO)
    name = await pop3.pool.fetchval("SELECT current_database()")
    admin = await asyncpg.connect(pg_server)  # another database: PostgreSQL refuses this for the current one
    await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
    try:
        client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
        assert (await client.login(ALICE, pop3.alice_key)).startswith("-ERR [SYS/TEMP] ")
        lines = [r.getMessage() for r in caplog.records if r.name.startswith("relate") and r.levelno >= logging.WARNING]
        assert len([line for line in lines if "pop3-tempfail" in line and "command=PASS" in line]) == 1, lines
        assert not [r for r in caplog.records if r.exc_info], "no traceback"
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await admin.close()
    assert (await client.login(ALICE, pop3.alice_key)).startswith("+OK")
    assert await client.cmd("STAT") == "+OK 0 0"


async def test_full_pool_answers_sys_temp_and_the_session_goes_on(pop3: Pop3, caplog: pytest.LogCaptureFixture) -> None:
    """With every pooled connection busy past acquire_timeout, RETR and QUIT answer -ERR [SYS/TEMP]; then they work."""
    caplog.set_level(logging.INFO)
    raw = make_message()
    await pop3.deliver(ALICE, raw)
    client = await logged_in(pop3)
    assert await client.cmd("DELE 1") == "+OK Message 1 deleted"
    pop3.pool.acquire_timeout = 0.3
    async with pool_held(pop3.pool):
        assert (await client.cmd("RSET")).startswith("+OK")
        assert (await client.cmd("RETR 1")).startswith("-ERR [SYS/TEMP] ")
        assert await client.cmd("DELE 1") == "+OK Message 1 deleted"
        assert (await client.cmd("QUIT")).startswith("-ERR [SYS/TEMP] ")
    tempfails = [r.getMessage() for r in caplog.records if "pop3-tempfail" in r.getMessage()]
    assert len(tempfails) == 2, tempfails
    assert "command=RETR" in tempfails[0], tempfails
    assert "command=QUIT" in tempfails[1], tempfails
    assert len(await pop3.stored(ALICE)) == 1, "nothing removed by the failed QUIT"
    assert await client.cmd("STAT") == "+OK 0 0"
    assert (await client.cmd("QUIT")).startswith("+OK")
    assert await pop3.stored(ALICE) == []


async def test_full_pool_at_login_answers_sys_temp(pop3: Pop3) -> None:
    """A login (key already verified) while every pooled connection is busy answers -ERR [SYS/TEMP]; then it works."""
    first = await logged_in(pop3)  # the key's verification is cached from now on: the maildrop is what waits
    assert (await first.cmd("QUIT")).startswith("+OK")
    assert await first.closed()
    pop3.pool.acquire_timeout = 0.3
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    async with pool_held(pop3.pool):
        assert (await client.login(ALICE, pop3.alice_key)).startswith("-ERR [SYS/TEMP] ")
    assert (await client.login(ALICE, pop3.alice_key)).startswith("+OK")
