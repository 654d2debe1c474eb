"""The IMAP daemon's listeners, connection limits, and the one LISTEN connection that feeds every session."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import socket
from typing import Any

import asyncpg

from relate.auth import Authenticator
from relate.config import Config
from relate.imap.session import ImapSession
from relate.runtime.budget import MemoryBudget
from relate.runtime.streams import Session, StreamServer
from relate.runtime.tls import TLSRegistry
from relate.store.mailboxes import CHANNEL

log = logging.getLogger("relate.imap")


class ChangeHub:
    """Fans ``NOTIFY relate_mail`` out to the sessions that have that mailbox selected.

    One LISTEN connection per process. If it is lost (a database restart, a
    failover), one line is logged and it is made again with backoff; then
    every watched mailbox counts as changed, so each session compares its
    state with the database's (by modseq and the expunge log) and tells its
    client what happened meanwhile: nothing is missed, only late.
    """

    RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._conn: asyncpg.Connection | None = None
        self._watchers: dict[int, set[ImapSession]] = collections.defaultdict(set)
        self._stopping = False
        self._reconnect: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._listen()

    async def _listen(self) -> None:
        conn = await self.pool.acquire()
        try:
            await conn.add_listener(CHANNEL, self._on_notify)
        except BaseException:
            await self.pool.release(conn)
            raise
        conn.add_termination_listener(self._lost)
        self._conn = conn

    def _lost(self, _conn: asyncpg.Connection) -> None:
        if self._stopping or self._reconnect is not None:
            return
        log.warning("imap-listen-lost: re-listening; selected mailboxes will re-sync")
        self._reconnect = asyncio.get_running_loop().create_task(self._relisten())

    async def _relisten(self) -> None:
        old, self._conn = self._conn, None
        if old is not None:
            with contextlib.suppress(Exception):  # a dead connection: the pool only has to forget it
                await self.pool.release(old)
        attempt = 0
        listening = False
        while not self._stopping and not listening:
            try:
                await self._listen()
                listening = True
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                delay = self.RETRY_DELAYS[min(attempt, len(self.RETRY_DELAYS) - 1)]
                attempt += 1
                if attempt == 1:
                    log.warning("imap-listen-retry error=%s", type(exc).__name__)
                await asyncio.sleep(delay)
        self._reconnect = None
        if listening:
            log.info("imap-listen-restored")
            for mailbox_id, sessions in list(self._watchers.items()):
                for session in list(sessions):
                    session.mark_selected_changed(mailbox_id)

    async def stop(self) -> None:
        self._stopping = True
        if self._reconnect is not None:
            self._reconnect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect
        if self._conn is not None:
            self._conn.remove_termination_listener(self._lost)
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await self._conn.remove_listener(CHANNEL, self._on_notify)
            await self.pool.release(self._conn)
            self._conn = None

    def watch(self, session: ImapSession, mailbox_id: int) -> None:
        self._watchers[mailbox_id].add(session)

    def unwatch(self, session: ImapSession, mailbox_id: int) -> None:
        watchers = self._watchers.get(mailbox_id)
        if watchers is not None:
            watchers.discard(session)
            if not watchers:
                del self._watchers[mailbox_id]

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            mailbox_id = int(json.loads(payload)["mailbox"])
        except (ValueError, KeyError, TypeError):
            return
        for session in self._watchers.get(mailbox_id, ()):
            session.mark_selected_changed(mailbox_id)


class ImapServer(StreamServer):
    log = logging.getLogger("relate.imap")
    refusal = b"* BYE Too many connections, try again later\r\n"

    def __init__(self, cfg: Config, pool: asyncpg.Pool, authenticator: Authenticator) -> None:
        super().__init__(
            TLSRegistry(cfg.tls.cert, cfg.tls.key),
            max_connections=cfg.imap.max_connections,
            max_per_client=cfg.imap.max_connections_per_client,
            line_limit=cfg.imap.max_line_length,
        )
        self.cfg = cfg
        self.pool = pool
        self.authenticator = authenticator
        self.hub = ChangeHub(pool)
        # Bytes of APPENDed messages held in memory while they are stored (about twice each message).
        self.memory = MemoryBudget(cfg.imap.memory_budget)
        self.listeners = {"imap": (cfg.imap.imap, False), "imaps": (cfg.imap.imaps, True)}
        self._per_user: collections.Counter[int] = collections.Counter()

    def has_tls(self, role: str) -> bool:
        return self.tls_for(role) is not None

    def admit_user(self, session: ImapSession, user_id: int) -> str | None:
        if self._per_user[user_id] >= self.cfg.imap.max_connections_per_user:
            return "Too many connections for this user"
        self._per_user[user_id] += 1
        return None

    def make_session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, role: str) -> ImapSession:
        return ImapSession(self, reader, writer, tls=role == "imaps")

    async def session_ended(self, session: Session) -> None:
        assert isinstance(session, ImapSession)
        if session.principal is not None:
            self._per_user[session.principal.user_id] -= 1
        if session.selected is not None:
            self.hub.unwatch(session, session.selected.mailbox_id)
        session.log_summary()

    async def start(self, sockets: dict[str, list[socket.socket]] | None = None) -> None:
        await self.hub.start()
        await self.start_listeners(sockets)

    async def stop(self, grace: float = 5.0) -> None:
        await self.stop_listeners(grace)
        await self.hub.stop()
