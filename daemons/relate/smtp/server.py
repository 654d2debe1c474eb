"""The SMTP daemon's listeners: one role per listener (mx, submission, submissions)."""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from pathlib import Path

import asyncpg

from relate.auth import Authenticator
from relate.config import Config, ConfigError, parse_listen
from relate.notify import Notifier
from relate.runtime.tls import ReloadableTLS
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
        self._tls: dict[tuple[Path, Path], ReloadableTLS] = {}
        self._role_tls: dict[str, ReloadableTLS | None] = {}
        self._closing = False

    # -- TLS -------------------------------------------------------------------

    def _load_tls(self) -> None:
        for role, lst in self.cfg.smtp.listeners().items():
            cert = lst.cert or self.cfg.tls.cert
            key = lst.key or self.cfg.tls.key
            if cert is None or key is None:
                if role != "mx" and lst.listen:
                    raise ConfigError(f"smtp.{role}: needs a certificate (tls.cert and tls.key, or smtp.{role}.cert)")
                self._role_tls[role] = None
                continue
            pair = (cert, key)
            if pair not in self._tls:
                try:
                    self._tls[pair] = ReloadableTLS(cert, key)
                except (OSError, ValueError) as exc:
                    raise ConfigError(f"smtp.{role}: cannot load certificate {cert} with key {key}: {exc}") from None
            self._role_tls[role] = self._tls[pair]

    def tls_for(self, role: str) -> ReloadableTLS | None:
        return self._role_tls.get(role)

    def reload_tls(self) -> None:
        """Re-read every certificate; a pair that fails to load keeps the old one, and says why."""
        for tls in self._tls.values():
            try:
                tls.reload()
                log.info("tls-reloaded cert=%s", tls.cert)
            except (OSError, ValueError) as exc:
                log.error("tls-reload-failed cert=%s error=%s (keeping the previous certificate)", tls.cert, exc)

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

    def release(self, client: str) -> None:
        self._per_client[client] -= 1
        if self._per_client[client] <= 0:
            del self._per_client[client]

    async def start(self, sockets: dict[str, list[socket.socket]] | None = None) -> None:
        """Listen on the configured addresses, or on ``sockets`` handed over (socket activation)."""
        self._load_tls()
        loop = asyncio.get_running_loop()
        for role in ROLES:
            tls = self._role_tls.get(role)
            ssl = tls.context if (role == "submissions" and tls is not None) else None

            def factory(role: str = role) -> SmtpSession:
                return SmtpSession(self, role)

            servers: list[asyncio.Server] = []
            if sockets is not None:
                for sock in sockets.get(role, []):
                    servers.append(await loop.create_server(factory, sock=sock, ssl=ssl))
            else:
                for item in self.cfg.smtp.listeners()[role].listen:
                    host, port = parse_listen(item)
                    servers.append(await loop.create_server(factory, host, port, ssl=ssl, reuse_address=True))
            self._servers[role] = servers
            mode = "implicit" if ssl else ("starttls" if tls is not None else "none")
            for host, port in self.addresses(role):
                log.info("smtp-listening role=%s address=%s:%d tls=%s", role, host, port, mode)

    def addresses(self, role: str) -> list[tuple[str, int]]:
        """(host, port) of each socket the role listens on."""
        return [sock.getsockname()[:2] for server in self._servers.get(role, []) for sock in server.sockets]

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
