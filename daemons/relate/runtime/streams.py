"""A line-protocol server over asyncio streams: listeners per role, TLS, connection limits, shutdown.

IMAP and POP3 share it; each supplies its session type. A connection over
``max_connections`` in all, or over ``max_connections_per_client`` from one
address, is answered with the protocol's refusal line and closed.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import logging
import socket
from collections.abc import Callable
from typing import Protocol

from relate.config import ConfigError, ListenerConfig
from relate.runtime.listen import bound, open_servers
from relate.runtime.tls import ReloadableTLS, TLSRegistry


class Session(Protocol):
    client: str

    async def run(self) -> None: ...

    def goodbye(self) -> None:
        """Tell the client the server is going away (at shutdown)."""


class StreamServer(abc.ABC):
    #: role -> (listener config, implicit TLS?)
    listeners: dict[str, tuple[ListenerConfig, bool]]
    refusal: bytes = b""
    log: logging.Logger

    def __init__(self, tls: TLSRegistry, *, max_connections: int, max_per_client: int, line_limit: int) -> None:
        self._tls = tls
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.line_limit = line_limit
        self.sessions: set[Session] = set()
        self._per_client: collections.Counter[str] = collections.Counter()
        self._servers: dict[str, list[asyncio.Server]] = {}
        self._role_tls: dict[str, ReloadableTLS | None] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @abc.abstractmethod
    def make_session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, role: str) -> Session:
        """A session for a new connection on ``role``."""

    def tls_for(self, role: str) -> ReloadableTLS | None:
        return self._role_tls.get(role)

    def open_connections(self) -> int:
        """Sessions being served now (for systemd's STATUS= and the heartbeat)."""
        return len(self.sessions)

    def reload_tls(self) -> None:
        self._tls.reload(self.log)

    async def start_listeners(self, sockets: dict[str, list[socket.socket]] | None) -> None:
        for role, (lst, implicit) in self.listeners.items():
            try:
                self._role_tls[role] = self._tls.for_listener(
                    role.replace("-", "."), lst.cert, lst.key, required=implicit and bool(lst.listen)
                )
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        for role, (lst, implicit) in self.listeners.items():
            tls = self._role_tls[role]
            ssl = tls.context if implicit and tls is not None else None
            inherited = sockets.get(role, []) if sockets is not None else None
            factory = self._factory(role)
            self._servers[role] = await open_servers(factory, lst.listen, inherited, ssl)
            for host, port in self.addresses(role):
                self.log.info("listening role=%s address=%s:%d", role, host, port)

    def _factory(self, role: str) -> Callable[[], asyncio.StreamReaderProtocol]:
        def factory() -> asyncio.StreamReaderProtocol:
            reader = asyncio.StreamReader(limit=self.line_limit)
            return asyncio.StreamReaderProtocol(reader, lambda r, w: self._connected(r, w, role))

        return factory

    def addresses(self, role: str) -> list[tuple[str, int]]:
        return bound(self._servers.get(role, []))

    def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, role: str) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer, role))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, role: str) -> None:
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else "-"
        if len(self.sessions) >= self.max_connections or self._per_client[client] >= self.max_per_client:
            writer.write(self.refusal)
            self.log.warning("refused client=%s reason=too-many-connections", client)
            writer.close()
            return
        session = self.make_session(reader, writer, role)
        self.sessions.add(session)
        self._per_client[client] += 1
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
            self._per_client[client] -= 1
            if self._per_client[client] <= 0:
                del self._per_client[client]
            await self.session_ended(session)
            writer.close()

    @abc.abstractmethod
    async def session_ended(self, session: Session) -> None:
        """Per-protocol cleanup after a session, however it ended."""

    async def stop_listeners(self, grace: float) -> None:
        for servers in self._servers.values():
            for server in servers:
                server.close()
        for session in list(self.sessions):
            session.goodbye()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)
