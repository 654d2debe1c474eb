"""What POP3 needs of the store: the maildrop locks, the snapshot taken at login, message bytes, \\Seen, removal.

The maildrop lock (RFC 1939 §8: one session per maildrop) is a PostgreSQL
session-level advisory lock keyed ``(POP3, mailbox id)``, and every lock of a
process lives on ONE connection of its own (:class:`MaildropLocks`), not on a
pooled one and not on one per session. Why this and not a lease row per
maildrop:

- A crashed or killed daemon releases every lock it held at once: PostgreSQL
  drops a connection's locks with it. A lease row would lock the user out
  until it expired, and would need a write per session every few seconds to
  stay alive, plus a clock to agree on.
- The lock is in the database, so it holds across processes and hosts; it
  costs no write (no WAL, no bloat), and a try-lock never waits.
- One connection per process, whatever the number of sessions: 1,000 POP3
  users cost ``database.pool_max`` + 1 connections. Everything else a session
  does goes through the pool, one operation at a time.

The price is that the locks live exactly as long as that connection. When it
is lost (a database restart or failover, a network cut, a lock call whose
outcome is unknown), every lock of the process is gone at once: the sessions
holding them are told (their ``on_lost`` callback; the POP3 session answers
``-ERR [SYS/TEMP]`` and closes), one ``pop3-locks-lost`` line is logged, and
the next login makes a new connection (one ``pop3-locks-restored`` line).
Taking the locks again for the sessions instead was rejected: in the gap,
another host's session may have opened the maildrop and removed messages, so
the sessions' snapshots could no longer be trusted.

asyncpg runs one operation at a time on a connection, so the lock calls are
serialised by an asyncio.Lock; the wait for it is bounded by
``database.acquire_timeout``, like a pool acquire. Advisory locks are
re-entrant within one connection, so two sessions of one process are kept
apart here (the ``_held`` map), before PostgreSQL is asked. A lock or unlock
call whose outcome is unknown (timeout, cancellation, error) drops the
connection: dropping it is the one way to be sure what is held (nothing).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg

from relate.config import DatabaseConfig
from relate.store import db, imap_messages
from relate.store.db import DatabaseUnavailable

log = logging.getLogger("relate.store.pop3")

LOCK_CLASS = 0x504F5033  # "POP3": the first key of every maildrop lock, in every relate-pop3 release
APPLICATION_NAME = "relate-pop3-locks"  # how the lock connection shows in pg_stat_activity

_TRY_LOCK = "SELECT pg_try_advisory_lock($1, $2)"
_UNLOCK = "SELECT pg_advisory_unlock($1, $2)"


@dataclass
class _Hold:
    on_lost: Callable[[], None]
    conn: asyncpg.Connection | None = None  # the connection holding it; None while it is being taken


class MaildropLocks:
    """Every maildrop lock of this process, on one connection of its own (see the module's docstring)."""

    def __init__(self, cfg: DatabaseConfig) -> None:
        self._cfg = cfg
        self._conn: asyncpg.Connection | None = None
        self._busy = asyncio.Lock()  # one operation at a time on the connection
        self._held: dict[int, _Hold] = {}  # mailbox id -> its holder in this process
        self._lost = False  # a connection was lost: the next one is logged as restored
        self._closing = False

    def held(self) -> int:
        """Maildrop locks held (or being taken) by this process."""
        return len(self._held)

    async def acquire(self, mailbox_id: int, on_lost: Callable[[], None]) -> bool:
        """Lock the maildrop for a session of this process; False when a session anywhere holds it.

        ``on_lost`` is called once, from the event loop, if the lock goes with its connection before
        :meth:`release`. Raises DatabaseUnavailable, TimeoutError or asyncpg's errors when the database
        cannot answer; nothing is held then.
        """
        if mailbox_id in self._held:
            return False  # PostgreSQL would say yes: the lock is re-entrant on our one connection
        hold = _Hold(on_lost)
        self._held[mailbox_id] = hold
        try:
            conn, taken = await self._call(_TRY_LOCK, mailbox_id)
            if taken and conn.is_closed():
                raise DatabaseUnavailable("the lock connection was lost")
        except BaseException:
            del self._held[mailbox_id]
            raise
        if not taken:
            del self._held[mailbox_id]
            return False
        hold.conn = conn  # from here on, losing ``conn`` tells the holder
        return True

    async def release(self, mailbox_id: int) -> None:
        """Give the maildrop back; never raises (a failure drops the connection, which releases it)."""
        hold = self._held.get(mailbox_id)
        if hold is None or hold.conn is None:
            return  # lost with its connection already
        try:
            await self._call(_UNLOCK, mailbox_id, conn=hold.conn, bounded=False)
        except asyncio.CancelledError:
            self._drop(hold.conn, "cancelled")
            raise
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, dropping the connection frees the lock
            self._drop(hold.conn, type(exc).__name__)
        finally:
            if self._held.get(mailbox_id) is hold:
                del self._held[mailbox_id]

    async def close(self) -> None:
        """Close the connection (at shutdown): every lock still held goes with it, without a lost line."""
        self._closing = True
        conn, self._conn = self._conn, None
        self._held.clear()
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), self._cfg.connect_timeout)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                conn.terminate()

    async def _call(
        self, query: str, mailbox_id: int, *, conn: asyncpg.Connection | None = None, bounded: bool = True
    ) -> tuple[asyncpg.Connection, bool]:
        """Run a lock function on the lock connection (made if needed); with ``conn``, only on that one.

        The wait for the connection is bounded by ``database.acquire_timeout`` unless not ``bounded`` (an
        unlock, which must happen or take the connection down with it, waits its turn however long).
        """
        async with asyncio.timeout(self._cfg.acquire_timeout if bounded else None):
            await self._busy.acquire()
        try:
            if conn is None:
                target = await self._connection()
            elif not conn.is_closed() and conn is self._conn:
                target = conn
            else:
                return conn, False  # that connection is gone, and its locks with it
            try:
                return target, bool(await target.fetchval(query, LOCK_CLASS, mailbox_id))
            except BaseException as exc:
                # Did the server take (or drop) the lock before the failure? Unknown: drop the connection.
                self._drop(target, type(exc).__name__)
                raise
        finally:
            self._busy.release()

    async def _connection(self) -> asyncpg.Connection:
        if self._closing:
            raise DatabaseUnavailable("the daemon is stopping")  # a session outliving stop() makes no new one
        if self._conn is not None:
            if not self._conn.is_closed():
                return self._conn
            self._terminated(self._conn)  # before asyncpg's own call to it comes round
        conn = await db.connect(self._cfg, application_name=APPLICATION_NAME)
        conn.add_termination_listener(self._terminated)
        self._conn = conn
        if self._lost:
            self._lost = False
            log.warning("pop3-locks-restored")
        return conn

    def _drop(self, conn: asyncpg.Connection, reason: str) -> None:
        """Close ``conn`` at once: its locks are gone, and their holders are told."""
        if not conn.is_closed():
            conn.terminate()
        self._terminated(conn, reason)

    def _terminated(self, conn: asyncpg.Connection, reason: str = "connection-lost") -> None:
        """``conn`` closed (asyncpg's termination listener, or :meth:`_drop`); once per connection."""
        if conn is not self._conn:
            return  # told already, or a connection we never kept
        self._conn = None
        if self._closing:
            return
        gone = [(mailbox_id, hold) for mailbox_id, hold in self._held.items() if hold.conn is conn]
        for mailbox_id, _ in gone:
            del self._held[mailbox_id]
        self._lost = True
        log.warning("pop3-locks-lost sessions=%d reason=%s", len(gone), reason)
        for _, hold in gone:
            try:
                hold.on_lost()
            except Exception as exc:  # noqa: BLE001 - one holder's failure must not keep the others untold
                log.error("pop3-locks-lost-callback error=%s: %s", type(exc).__name__, exc)


# -- the maildrop --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """The maildrop as it is at login: UIDVALIDITY and, in UID order, (uid, octets as sent, stored with CRLF)."""

    uidvalidity: int
    messages: list[tuple[int, int, bool]]


async def snapshot(conn: db.Queryable, mailbox_id: int) -> Snapshot | None:
    """The mailbox's messages in one statement (one consistent view); None when the mailbox is gone.

    The size is ``wire_size`` (CRLF line ends, a final CRLF), or ``size`` where the stored bytes are
    that already (``wire_size`` NULL, flagged True).
    """
    rows = await conn.fetch(
        """SELECT b.uidvalidity, m.uid, coalesce(m.wire_size, m.size) AS size, m.wire_size IS NULL AS crlf
             FROM mailboxes b LEFT JOIN messages m ON m.mailbox_id = b.id
            WHERE b.id = $1 ORDER BY m.uid""",
        mailbox_id,
    )
    if not rows:
        return None
    return Snapshot(rows[0]["uidvalidity"], [(r[1], r[2], r[3]) for r in rows if r[1] is not None])


async def fetch_raw(conn: db.Queryable, mailbox_id: int, uids: Sequence[int]) -> dict[int, bytes]:
    """The stored bytes of these messages, by UID; a message removed meanwhile is simply not there."""
    rows = await conn.fetch(
        """SELECT m.uid, b.data FROM messages m JOIN blobs b ON b.hash = m.blob_hash
            WHERE m.mailbox_id = $1 AND m.uid = ANY($2::bigint[])""",
        mailbox_id,
        list(uids),
    )
    return {r[0]: r[1] for r in rows}


async def mark_seen(conn: asyncpg.Connection, mailbox_id: int, uids: Sequence[int], *, durable: bool) -> None:
    """Add \\Seen to these messages (IMAP and the API see it); ``durable=False`` commits without waiting for
    the disk (a crash may forget it; the next durable commit, e.g. QUIT's removal, flushes it with its own)."""
    await imap_messages.store_flags(conn, mailbox_id, uids, "+", ["\\Seen"], durable=durable)


async def remove(conn: asyncpg.Connection, mailbox_id: int, uids: Sequence[int]) -> list[int]:
    """Remove these messages in one transaction (the UPDATE state); returns the UIDs that were still there."""
    return await imap_messages.remove(conn, mailbox_id, uids)
