"""The SMTP daemon's listeners: one role per listener (mx, submission, submissions)."""

from __future__ import annotations

import asyncio
import collections
import logging
import socket

import asyncpg

from relate.auth import Authenticator
from relate.config import Config, ConfigError
from relate.notify import Notifier
from relate.runtime.listen import bound, open_servers
from relate.runtime.tls import ReloadableTLS, TLSRegistry
from relate.smtp import replies
from relate.smtp.replies import Reply
from relate.smtp.session import SmtpSession

log = logging.getLogger("relate.smtp")

ROLES = ("mx", "submission", "submissions")


class SmtpServer:
    def __init__(self, cfg: Config, pool: asyncpg.Pool, authenticator: Authenticator, notifier: Notifier) -> None:
        self.cfg = cfg
        self.pool = pool
        self.authenticator = authenticator
        self.notifier = notifier
        self.sessions: set[SmtpSession] = set()
        self._per_client: collections.Counter[str] = collections.Counter()
        self._servers: dict[str, list[asyncio.Server]] = {}
        self._tls = TLSRegistry(cfg.tls.cert, cfg.tls.key)
        self._role_tls: dict[str, ReloadableTLS | None] = {}
        self._closing = False

    # -- TLS -------------------------------------------------------------------

    def _load_tls(self) -> None:
        for role, lst in self.cfg.smtp.listeners().items():
            try:
                self._role_tls[role] = self._tls.for_listener(
                    f"smtp.{role}", lst.cert, lst.key, required=role != "mx" and bool(lst.listen)
                )
            except ValueError as exc:
                raise ConfigError(str(exc)) from None

    def tls_for(self, role: str) -> ReloadableTLS | None:
        return self._role_tls.get(role)

    def reload_tls(self) -> None:
        """Re-read every certificate; a pair that fails to load keeps the old one, and says why."""
        self._tls.reload(log)

    # -- connections -----------------------------------------------------------

    def admit(self, client: str) -> Reply | None:
        """Count a new connection, or say why it is refused."""
        if self._closing:
            return replies.SHUTTING_DOWN
        if len(self.sessions) >= self.cfg.smtp.max_connections:
            return replies.TOO_MANY_CONNECTIONS
        if self._per_client[client] >= self.cfg.smtp.max_connections_per_client:
            return replies.TOO_MANY_CONNECTIONS
        self._per_client[client] += 1
        return None

    def open_connections(self) -> int:
        """Sessions being served now (for systemd's STATUS= and the heartbeat)."""
        return len(self.sessions)

    def release(self, client: str) -> None:
        self._per_client[client] -= 1
        if self._per_client[client] <= 0:
            del self._per_client[client]

    async def start(self, sockets: dict[str, list[socket.socket]] | None = None) -> None:
        """Listen on the configured addresses, or on ``sockets`` handed over (socket activation)."""
        self._load_tls()
        for role in ROLES:
            tls = self._role_tls.get(role)
            ssl = tls.context if (role == "submissions" and tls is not None) else None

            def factory(role: str = role) -> SmtpSession:
                return SmtpSession(self, role)

            inherited = sockets.get(role, []) if sockets is not None else None
            addresses = self.cfg.smtp.listeners()[role].listen
            self._servers[role] = await open_servers(
                factory, addresses, inherited, ssl, handshake_timeout=self.cfg.smtp.command_timeout
            )
            mode = "implicit" if ssl else ("starttls" if tls is not None else "none")
            for host, port in self.addresses(role):
                log.info("smtp-listening role=%s address=%s:%d tls=%s", role, host, port, mode)

    def addresses(self, role: str) -> list[tuple[str, int]]:
        """(host, port) of each socket the role listens on."""
        return bound(self._servers.get(role, []))

    async def stop(self, grace: float = 30.0) -> None:
        """Stop listening, let transactions in flight finish (up to ``grace`` seconds), then close."""
        self._closing = True
        for servers in self._servers.values():
            for server in servers:
                server.close()
        deadline = asyncio.get_running_loop().time() + grace
        while self.sessions and asyncio.get_running_loop().time() < deadline:
            busy = [s for s in self.sessions if s.in_data]
            if not busy:
                break
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            if isinstance(session.transport, asyncio.Transport):
                session.transport.write(f"{replies.SHUTTING_DOWN}\r\n".encode())
                session.transport.close()
        await self.notifier.drain()
