"""The SMTP daemon's listeners: one role per listener (mx 25, submission 587, submissions 465).

Built on the stream server IMAP and POP3 use (listeners per role, socket
activation, certificate reload, connection limits). SMTP's own parts: every
role but ``mx`` needs a certificate; implicit TLS on 465 is handshaken by the
server itself, so a failed handshake is one ``smtp-tls-failed`` line and the
handshake gets ``smtp.command_timeout``; a refused connection gets ``421``
and one ``smtp-refused`` line; the limits are read from the configuration at
every connection; and stopping lets every message being transferred or stored
finish (up to the grace period) before each session gets ``421 4.3.2``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import asyncpg

from relate.auth import Authenticator
from relate.config import Config
from relate.mailauth.dns import Dns
from relate.mailauth.verdict import Checker
from relate.runtime.budget import MemoryBudget
from relate.runtime.resolver import make_resolver
from relate.runtime.streams import Session, StreamServer, describe_tls_error
from relate.runtime.tls import TLSRegistry
from relate.smtp import commands, replies
from relate.smtp.session import SmtpSession
from relate.spam.filter import SpamFilter
from relate.spam.learner import Learner
from relate.store import accounts
from relate.store.group_commit import CommitGroup

log = logging.getLogger("relate.smtp")

ROLES = ("mx", "submission", "submissions")


class SmtpServer(StreamServer):
    log = log
    protocol = "smtp"
    handshake_in_server = True

    def __init__(self, cfg: Config, pool: asyncpg.Pool, authenticator: Authenticator) -> None:
        super().__init__(
            TLSRegistry(cfg.tls.cert, cfg.tls.key),
            max_connections=cfg.smtp.max_connections,
            max_per_client=cfg.smtp.max_connections_per_client,
            line_limit=cfg.smtp.max_line_length,
        )
        self.cfg = cfg
        self.pool = pool
        self.authenticator = authenticator
        self.budget = MemoryBudget(cfg.smtp.memory_budget)
        # SPF, DKIM and DMARC (relate.mailauth): one resolver, so one DNS cache, for every session.
        self.checker = Checker(
            cfg, Dns(make_resolver(cfg.delivery)), lambda names: accounts.hosted_domains(pool, names)
        )
        # Sender lists and rspamd (relate.spam); the learner teaches rspamd what users move into or out of Junk.
        self.spam = SpamFilter(cfg.smtp.rspamd, pool)
        self.learner = Learner(pool, self.spam.rspamd, cfg.smtp.rspamd)
        self.commit_group = CommitGroup(pool)  # MX deliveries arriving together share a commit
        self.commands = commands.COMMANDS
        self.listeners = {
            "mx": (cfg.smtp.mx, False),
            "submission": (cfg.smtp.submission, False),
            "submissions": (cfg.smtp.submissions, True),
        }

    # -- StreamServer's hooks ----------------------------------------------------------

    def tls_required(self, role: str, implicit: bool) -> bool:
        return role != "mx"  # submission needs STARTTLS before AUTH, submissions is TLS

    def tls_name(self, role: str) -> str:
        return f"smtp.{role}"

    def handshake_timeout(self) -> float:
        return self.cfg.smtp.command_timeout

    def over_limits(self, client: str) -> bool:
        cfg = self.cfg.smtp
        return len(self.sessions) >= cfg.max_connections or self._per_client[client] >= cfg.max_connections_per_client

    def reader_limit(self) -> int:
        return self.cfg.smtp.max_line_length

    def refuse(self, writer: asyncio.StreamWriter, role: str, client: str, reason: str) -> None:
        reply = replies.SHUTTING_DOWN if reason == "shutting-down" else replies.TOO_MANY_CONNECTIONS
        writer.write(f"{reply}\r\n".encode())
        log.warning("smtp-refused client=%s role=%s reply=%s reason=%s", client, role, reply.enhanced, reason)

    def tls_failed(self, role: str, client: str, error: BaseException) -> None:
        log.info("smtp-tls-failed client=%s role=%s error=%s", client, role, describe_tls_error(error))

    def make_session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, role: str) -> SmtpSession:
        return SmtpSession(self, reader, writer, role)

    async def session_ended(self, session: Session) -> None:
        assert isinstance(session, SmtpSession)
        log.info(
            "smtp-session client=%s role=%s tls=%s auth=%s from=%s messages=%d rcpts=%d size=%d result=%s seconds=%.2f",
            session.client,
            session.role,
            session.tls_version or "-",
            session.principal_address or "-",
            session.last_sender,
            session.messages,
            session.recipient_count,
            session.bytes_in,
            session.last_result,
            time.monotonic() - session.started,
        )

    # -- start and stop ------------------------------------------------------------------

    async def start(self, sockets: dict[str, list[socket.socket]] | None = None, *, hold: bool = False) -> None:
        """Listen on the configured addresses, or on ``sockets`` handed over (socket activation); ``hold``:
        accept nothing until :meth:`start_serving`."""
        await self.checker.prepare()
        await self.start_listeners(sockets, hold=hold)
        self.learner.start()

    async def stop(self, grace: float = 30.0) -> None:
        """Stop listening, let transactions in flight finish (up to ``grace`` seconds), then close with 421."""
        await self.stop_listeners(grace)
        for session in list(self.sessions):
            assert isinstance(session, SmtpSession)
            session.abort()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        await self.learner.stop()
        await self.spam.close()
