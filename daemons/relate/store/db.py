"""Connections to the one PostgreSQL database every daemon shares."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

import asyncpg

from relate.config import ConfigError, DatabaseConfig
from relate.errors import RelateError
from relate.store import migrate


class Queryable(Protocol):
    """What the store needs of a connection or a pool (asyncpg ships no types)."""

    async def execute(self, query: str, *args: Any) -> str: ...
    async def fetch(self, query: str, *args: Any) -> list[Any]: ...
    async def fetchrow(self, query: str, *args: Any) -> Any: ...
    async def fetchval(self, query: str, *args: Any) -> Any: ...
    async def executemany(self, query: str, args: Any) -> None: ...


class DatabaseUnavailable(RelateError):
    """The database cannot be reached or refused the login."""


# What an unreachable, lost or overloaded database raises (refused or dropped connections, a server
# shutting down or starting up, too many clients, a pool with no free connection, a deadlock or
# serialization failure, and what a new pooled connection meets when the database or the login it
# names is gone): a temporary failure, which every daemon answers as one (451, NO [UNAVAILABLE],
# -ERR [SYS/TEMP], 503) and logs in one line; never a bug report.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    DatabaseUnavailable,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,
    asyncpg.TransactionRollbackError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.ObjectNotInPrerequisiteStateError,  # 55000: a database that does not allow connections now
    asyncpg.InternalClientError,  # a query on a connection the server has just terminated (a restart)
)

# Any failure of a database call, unavailability or not: what a background loop (the change feed, the
# hub's event work, the delivery loop, login-failure counting) survives and tries again after.
ERRORS: tuple[type[BaseException], ...] = (*UNAVAILABLE, asyncpg.PostgresError)


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database is out of reach (a temporary failure), not a bug."""
    return isinstance(exc, UNAVAILABLE) and not isinstance(exc, asyncpg.DataError)  # DataError: a bad argument


class Pool(asyncpg.Pool):  # type: ignore[misc]  # asyncpg ships no types
    """asyncpg's pool, with a bound on the wait for a free connection.

    With every connection busy, ``acquire()`` waits at most ``acquire_timeout``
    seconds (``database.acquire_timeout``), then raises TimeoutError, which
    every daemon answers as a temporary failure (451, NO [UNAVAILABLE], -ERR
    [SYS/TEMP], 503): a full pool slows clients down and then says so, it
    never hangs them or drops them without a word.
    """

    acquire_timeout: float = 10.0

    def acquire(self, *, timeout: float | None = None) -> Any:
        return super().acquire(timeout=self.acquire_timeout if timeout is None else timeout)

    async def _acquire(self, timeout: float | None) -> Any:  # noqa: ASYNC109 - asyncpg's signature
        # asyncpg bounds the wait with its wait_for, which runs the wait as a task of its own, and then
        # bounds the release with the same timeout: a task and two timers per query of every daemon.
        # asyncio.timeout bounds it in the caller's task; the release (a local reset, see _release)
        # needs no bound. Nor does taking a connection that is free right now: no wait for another
        # caller's release (only a holder whose connection is gone connects again, bounded by
        # database.connect_timeout), so no timer is set.
        if timeout is None or self._queue.empty():
            if timeout is None:
                return await super()._acquire(None)
            async with asyncio.timeout(timeout):
                return await super()._acquire(None)
        return await super()._acquire(None)

    async def release(self, connection: Any, *, timeout: float | None = None) -> None:  # noqa: ASYNC109
        # asyncpg's release runs the holder's release in a task of its own (asyncio.shield, so that a
        # cancelled caller still returns the connection) and then resets the connection. A connection
        # left outside a transaction, healthy and not being cancelled, needs no await to go back: its
        # reset is local (listeners dropped; _release above sends nothing), so it is returned here, in
        # the caller's step, where no cancellation can come between. Anything else goes asyncpg's way.
        holder = getattr(connection, "_holder", None)
        con = getattr(connection, "_con", None)
        if (
            holder is None
            or con is None
            or holder._pool is not self
            or holder._in_use is None
            or con.is_closed()
            or con._top_xact is not None
            or con._protocol.is_in_transaction()
            or con._protocol._is_cancelling()
            or con._protocol.queries_count >= holder._max_queries
            or holder._generation != self._generation
        ):
            await super().release(connection, timeout=timeout)
            return
        # Callers waiting for a connection: the first is woken by this release, and must take it before
        # this caller (who may acquire again at once) can; asyncpg's release task gave it that turn.
        waiting = bool(self._queue._getters)
        con._on_release()
        holder._timeout = None
        con._listeners.clear()
        con._log_listeners.clear()
        holder._release()
        holder._setup_inactive_callback()
        if waiting:
            await asyncio.sleep(0)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb columns travel as Python objects; the store never hand-encodes JSON.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _release(conn: asyncpg.Connection) -> None:
    """What a pooled connection goes through on release, beyond asyncpg's own ROLLBACK of an open transaction.

    asyncpg's default sends ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` on every release: one more round trip per acquire, i.e. per SMTP
    RCPT and per message stored. Nothing needs it, because pooled connections never
    carry session state out of a transaction:
    - advisory locks taken on pooled connections are transaction-scoped
      (``pg_try_advisory_xact_lock``), except the migration lock, which
      :func:`relate.store.migrate.migrate` releases itself in a ``finally``; the POP3
      maildrop locks live on one connection of their own per process
      (:mod:`relate.store.pop3`), never a pooled one;
    - LISTEN runs only on the change feed's own connection (store/changes.py), never on a
      pooled one;
    - settings are changed with ``SET LOCAL`` only, cursors live in transactions.
    So the server-side reset is skipped (asyncpg still rolls back a transaction left
    open and drops listener callbacks before calling this). :meth:`Pool.release` returns a
    connection outside a transaction without calling this at all: anything added here must
    be added there too.
    """


def _require_dsn(cfg: DatabaseConfig) -> str:
    if not cfg.dsn:
        raise DatabaseUnavailable(
            "database.dsn is not set: set it in the config file or RELATE_DATABASE__DSN "
            "(or use `relatectl dev` for an embedded database)"
        )
    return cfg.dsn


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


async def connect(cfg: DatabaseConfig, *, application_name: str | None = None) -> asyncpg.Connection:
    """One connection, for short admin work and LISTEN (``application_name`` shows in pg_stat_activity)."""
    dsn = _require_dsn(cfg)
    settings = {"application_name": application_name} if application_name else None
    try:
        conn = await asyncpg.connect(
            dsn, timeout=cfg.connect_timeout, command_timeout=cfg.command_timeout, server_settings=settings
        )
    except ValueError as exc:
        raise ConfigError(f"database.dsn: {_describe(exc)}") from None
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseUnavailable(f"cannot connect to the database: {_describe(exc)}") from None
    await _init_connection(conn)
    return conn


async def create_pool(cfg: DatabaseConfig, *, check_schema: bool = True) -> asyncpg.Pool:
    """The process's pool; refuses an out-of-date schema unless told not to check."""
    dsn = _require_dsn(cfg)
    pool = Pool(
        dsn,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        min_size=cfg.pool_min,
        max_size=cfg.pool_max,
        max_queries=50000,
        max_inactive_connection_lifetime=300.0,
        timeout=cfg.connect_timeout,
        command_timeout=cfg.command_timeout,
        init=_init_connection,
        reset=_release,
    )
    pool.acquire_timeout = cfg.acquire_timeout
    try:
        await pool
    except ValueError as exc:  # a DSN the driver cannot read (ClientConfigurationError, a malformed option)
        raise ConfigError(f"database.dsn: {_describe(exc)}") from None
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseUnavailable(f"cannot connect to the database: {_describe(exc)}") from None
    if check_schema:
        try:
            async with pool.acquire() as conn:
                await migrate.check_current(conn)
        except BaseException:
            await pool.close()
            raise
    return pool
