"""A line-protocol server over asyncio streams: listeners per role, TLS, connection limits, shutdown.

IMAP, POP3 and SMTP share it; each supplies its session type. A connection
over ``max_connections`` in all, or over ``max_connections_per_client`` from
one address, or one that arrives while the server stops, is answered with the
protocol's refusal line (:meth:`StreamServer.refuse`) and closed.

Implicit TLS (993, 995, 465) is asyncio's by default: the listener does the
handshake before the session exists, and a failed handshake is dropped
without a word. A server that sets ``handshake_in_server`` does it itself
(``StreamWriter.start_tls``, the connection read nothing before), so each
failure reaches :meth:`StreamServer.tls_failed` as one log line and the
handshake timeout is read at every connection.
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
from relate.runtime import metrics
from relate.runtime.listen import bound, open_servers, socket_unit
from relate.runtime.tls import ReloadableTLS, TLSRegistry


class Session(Protocol):
    client: str

    async def run(self) -> None: ...

    def goodbye(self) -> None:
        """Tell the client the server is going away (at shutdown)."""


def pending_input(reader: asyncio.StreamReader) -> bytearray:
    """The bytes ``reader`` holds that no read has taken yet (asyncio has no public view of them)."""
    buffer: bytearray = reader._buffer  # type: ignore[attr-defined]
    return buffer


def unread(reader: asyncio.StreamReader, data: bytes | bytearray | memoryview) -> None:
    """Put ``data`` back in front of what ``reader`` holds, so the next read returns it first.

    For bytes read past the end of something (SMTP's end of data, say) that
    belong to what follows; every read method consumes the buffer from the front.
    """
    if data:
        pending_input(reader)[:0] = data


async def read_line(reader: asyncio.StreamReader) -> bytes | None:
    """One line with its LF; None for a line longer than the reader's limit, which is read and thrown away.

    Memory stays within the limit however long the line: asyncio raises
    LimitOverrunError once its buffer holds that much without an LF, and what
    it holds is consumed before reading on.
    """
    try:
        return await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError as exc:
        await reader.readexactly(exc.consumed)
        while True:
            try:
                await reader.readuntil(b"\n")
                return None
            except asyncio.LimitOverrunError as more:
                await reader.readexactly(more.consumed)


class _ReadNothingYet(asyncio.StreamReaderProtocol):
    """A connection whose first bytes must go to the TLS layer that the server is about to start."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Before the transport's first read (scheduled after this call): loop.start_tls resumes reading.
        assert isinstance(transport, asyncio.ReadTransport)
        transport.pause_reading()
        super().connection_made(transport)


class StreamServer(abc.ABC):
    #: role -> (listener config, implicit TLS?)
    listeners: dict[str, tuple[ListenerConfig, bool]]
    refusal: bytes = b""
    log: logging.Logger
    #: The protocol's name in metrics (relate_connections_total{protocol=...}).
    protocol: str = ""
    #: Implicit-TLS handshakes done by the server (see the module docstring) instead of by asyncio's listener.
    handshake_in_server: bool = False

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
        self.closing = False

    @abc.abstractmethod
    def make_session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, role: str) -> Session:
        """A session for a new connection on ``role``."""

    def tls_for(self, role: str) -> ReloadableTLS | None:
        return self._role_tls.get(role)

    def over_limits(self, client: str) -> bool:
        """Whether one more connection from ``client`` would pass max_connections or max_per_client."""
        return len(self.sessions) >= self.max_connections or self._per_client[client] >= self.max_per_client

    def reader_limit(self) -> int:
        """The longest line a session's reader takes (its StreamReader limit)."""
        return self.line_limit

    def tls_required(self, role: str, implicit: bool) -> bool:
        """Whether ``role`` cannot serve without a certificate (start-up fails, naming the key)."""
        return implicit

    def tls_name(self, role: str) -> str:
        """The configuration key of ``role``'s listener, for messages."""
        return role.replace("-", ".")

    def handshake_timeout(self) -> float:
        """Seconds a client has to finish a TLS handshake."""
        return 30.0

    def refuse(self, writer: asyncio.StreamWriter, role: str, client: str, reason: str) -> None:
        """Answer a connection that is not admitted (``reason``: too-many-connections, shutting-down)."""
        writer.write(self.refusal)
        self.log.warning("refused client=%s reason=%s", client, reason)

    def tls_failed(self, role: str, client: str, error: BaseException) -> None:
        """A TLS handshake the server ran failed: one line, no traceback (clients cause these)."""
        self.log.info("tls-failed client=%s role=%s error=%s", client, role, describe_tls_error(error))

    def open_connections(self) -> int:
        """Sessions being served now (for systemd's STATUS= and the heartbeat)."""
        return len(self.sessions)

    def reload_tls(self) -> None:
        self._tls.reload(self.log)

    async def start_listeners(self, sockets: dict[str, list[socket.socket]] | None, *, hold: bool = False) -> None:
        """Listen on each enabled role: on ``sockets`` handed over, else on its configured addresses.

        With ``hold`` the listeners accept nothing until :meth:`start_serving` (connections wait in the
        backlog): a daemon serves only once everything it serves with runs and systemd has its READY=1.
        """
        for role, (lst, implicit) in self.listeners.items():
            try:
                self._role_tls[role] = self._tls.for_listener(
                    self.tls_name(role),
                    lst.cert,
                    lst.key,
                    required=self.tls_required(role, implicit) and bool(lst.listen) and lst.enabled,
                )
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        for role, (lst, implicit) in self.listeners.items():
            if not lst.enabled:
                self.log.info("listener-off role=%s: disabled in config", role)
                for sock in (sockets or {}).get(role, []):
                    # Not served, and closed here; systemd's copy keeps listening until its unit is stopped.
                    self.log.warning(
                        "listener-disabled role=%s: %s passed it, closed unserved; "
                        "run `relatectl setup` as root to mask that unit",
                        role,
                        socket_unit(role),
                    )
                    sock.close()
                continue
            tls = self._role_tls[role]
            ssl = tls.context if implicit and tls is not None and not self.handshake_in_server else None
            inherited = sockets.get(role, []) if sockets is not None else None
            factory = self._factory(role, paused=implicit and tls is not None and self.handshake_in_server)
            self._servers[role] = await open_servers(factory, lst.listen, inherited, ssl, start_serving=not hold)
            for host, port in self.addresses(role):
                self.log.info("listening role=%s address=%s:%d", role, host, port)

    async def start_serving(self) -> None:
        """Accept on every listener that :meth:`start_listeners` held (a no-op on those already serving)."""
        for servers in self._servers.values():
            for server in servers:
                await server.start_serving()

    def _factory(self, role: str, *, paused: bool = False) -> Callable[[], asyncio.StreamReaderProtocol]:
        protocol = _ReadNothingYet if paused else asyncio.StreamReaderProtocol

        def factory() -> asyncio.StreamReaderProtocol:
            reader = asyncio.StreamReader(limit=self.reader_limit())
            return protocol(reader, lambda r, w: self._connected(r, w, role))

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
        if isinstance(writer.transport.get_protocol(), _ReadNothingYet):
            tls = self._role_tls[role]
            assert tls is not None
            try:
                await writer.start_tls(tls.context, ssl_handshake_timeout=self.handshake_timeout())
            except (OSError, EOFError, TimeoutError) as exc:  # ssl.SSLError is an OSError
                self.tls_failed(role, client, exc)
                await close(writer)
                return
        if self.closing:
            reason = "shutting-down"
        elif self.over_limits(client):
            reason = "too-many-connections"
        else:
            reason = ""
        if reason:
            metrics.child(metrics.CONNECTIONS_REFUSED, self.protocol, reason).inc()
            self.refuse(writer, role, client, reason)
            await close(writer)
            return
        session = self.make_session(reader, writer, role)
        self.sessions.add(session)
        self._per_client[client] += 1
        metrics.child(metrics.CONNECTIONS, self.protocol, role).inc()
        open_now = metrics.child(metrics.CONNECTIONS_OPEN, self.protocol, role)
        open_now.inc()
        try:
            await session.run()
        finally:
            open_now.dec()
            self.sessions.discard(session)
            self._per_client[client] -= 1
            if self._per_client[client] <= 0:
                del self._per_client[client]
            await self.session_ended(session)
            await close(writer)

    @abc.abstractmethod
    async def session_ended(self, session: Session) -> None:
        """Per-protocol cleanup after a session, however it ended."""

    async def stop_listeners(self, grace: float) -> None:
        self.closing = True
        for servers in self._servers.values():
            for server in servers:
                server.close()
        for session in list(self.sessions):
            session.goodbye()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)


#: Seconds a closed connection may take to go (a TLS close_notify answered, the peer's FIN) before it is cut.
CLOSE_LINGER = 30.0


async def close(writer: asyncio.StreamWriter) -> None:
    """Close ``writer`` and make sure its socket goes: cut it (RST) if it has not gone within CLOSE_LINGER.

    ``close()`` alone can leave a TLS connection open for good: when the peer's FIN arrived while the
    session's reader was full (reading paused), asyncio's TLS layer (3.11) waits for the reader to take
    more and ignores the close, so the socket stayed open until garbage collection. Reading is resumed
    first (what arrives is thrown away with the reader), which lets that close finish at once.
    """
    if isinstance(writer.transport, asyncio.ReadTransport):
        writer.transport.resume_reading()
    writer.close()
    try:
        # asyncio.timeout, not wait_for: wait_for (3.11) runs the wait as a task of its own, plus a future and
        # a timer, for every connection closed; this bounds it in the caller's task with one timer.
        async with asyncio.timeout(CLOSE_LINGER):
            await writer.wait_closed()
    except (OSError, TimeoutError):  # ssl.SSLError is an OSError; the connection went either way
        writer.transport.abort()
    except asyncio.CancelledError:
        writer.transport.abort()
        raise


def describe_tls_error(error: BaseException) -> str:
    """A TLS failure as one token for a log line: OpenSSL's reason if any, ``timeout``, else the class name."""
    reason = getattr(error, "reason", None)
    if isinstance(reason, str) and reason:
        return reason
    if isinstance(error, TimeoutError) or (isinstance(error, ConnectionAbortedError) and "longer" in str(error)):
        return "timeout"  # asyncio aborts a handshake past ssl_handshake_timeout with ConnectionAbortedError
    return type(error).__name__
