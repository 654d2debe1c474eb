"""The IMAP daemon's listeners, connection limits, and the one LISTEN connection that feeds every session."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import socket
from typing import Any

import asyncpg

from relate.auth import Authenticator
from relate.config import Config, ConfigError
from relate.imap.session import ImapSession
from relate.runtime.listen import bound, open_servers
from relate.runtime.tls import ReloadableTLS, TLSRegistry
from relate.store.mailboxes import CHANNEL

log = logging.getLogger("relate.imap")

ROLES = ("imap", "imaps")


class ChangeHub:
    """Fans ``NOTIFY relate_mail`` out to the sessions that have that mailbox selected."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._conn: asyncpg.Connection | None = None
        self._watchers: dict[int, set[ImapSession]] = collections.defaultdict(set)

    async def start(self) -> None:
        self._conn = await self.pool.acquire()
        await self._conn.add_listener(CHANNEL, self._on_notify)

    async def stop(self) -> None:
        if self._conn is not None:
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


class ImapServer:
    def __init__(self, cfg: Config, pool: asyncpg.Pool, authenticator: Authenticator) -> None:
        self.cfg = cfg
        self.pool = pool
        self.authenticator = authenticator
        self.hub = ChangeHub(pool)
        self.sessions: set[ImapSession] = set()
        self._per_client: collections.Counter[str] = collections.Counter()
        self._per_user: collections.Counter[int] = collections.Counter()
        self._servers: dict[str, list[asyncio.Server]] = {}
        self._tls = TLSRegistry(cfg.tls.cert, cfg.tls.key)
        self._role_tls: dict[str, ReloadableTLS | None] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def tls_for(self, role: str) -> ReloadableTLS | None:
        return self._role_tls.get(role)

    def has_tls(self, role: str) -> bool:
        return self._role_tls.get(role) is not None

    def reload_tls(self) -> None:
        self._tls.reload(log)

    def admit_user(self, session: ImapSession, user_id: int) -> str | None:
        if self._per_user[user_id] >= self.cfg.imap.max_connections_per_user:
            return "Too many connections for this user"
        self._per_user[user_id] += 1
        return None

    async def start(self, sockets: dict[str, list[socket.socket]] | None = None) -> None:
        listeners = {"imap": self.cfg.imap.imap, "imaps": self.cfg.imap.imaps}
        for role, lst in listeners.items():
            try:
                self._role_tls[role] = self._tls.for_listener(
                    f"imap.{role}", lst.cert, lst.key, required=role == "imaps" and bool(lst.listen)
                )
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        await self.hub.start()
        for role, lst in listeners.items():
            tls = self._role_tls[role]
            ssl = tls.context if role == "imaps" and tls is not None else None
            inherited = sockets.get(role, []) if sockets is not None else None

            def factory(role: str = role) -> asyncio.StreamReaderProtocol:
                reader = asyncio.StreamReader(limit=self.cfg.imap.max_line_length)
                return asyncio.StreamReaderProtocol(reader, lambda r, w: self._connected(r, w, role))

            self._servers[role] = await open_servers(factory, lst.listen, inherited, ssl)
            for host, port in self.addresses(role):
                log.info("imap-listening role=%s address=%s:%d", role, host, port)

    def addresses(self, role: str) -> list[tuple[str, int]]:
        return bound(self._servers.get(role, []))

    def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, role: str) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer, role))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, role: str) -> None:
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else "-"
        cfg = self.cfg.imap
        if len(self.sessions) >= cfg.max_connections or self._per_client[client] >= cfg.max_connections_per_client:
            writer.write(b"* BYE Too many connections, try again later\r\n")
            log.warning("imap-refused client=%s reason=too-many-connections", client)
            writer.close()
            return
        session = ImapSession(self, reader, writer, tls=role == "imaps")
        self.sessions.add(session)
        self._per_client[client] += 1
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
            self._per_client[client] -= 1
            if self._per_client[client] <= 0:
                del self._per_client[client]
            if session.principal is not None:
                self._per_user[session.principal.user_id] -= 1
            if session.selected is not None:
                self.hub.unwatch(session, session.selected.mailbox_id)
            session.log_summary()
            writer.close()

    async def stop(self, grace: float = 5.0) -> None:
        for servers in self._servers.values():
            for server in servers:
                server.close()
        for session in list(self.sessions):
            session.untagged("BYE Server shutting down")
            session.writer.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)
        await self.hub.stop()
