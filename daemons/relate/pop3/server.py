"""The POP3 daemon's listeners, pop3 (110, STLS) and pop3s (995, implicit TLS), and what its sessions share:
the pool, the authenticator, and the one connection holding every maildrop lock of the process."""

from __future__ import annotations

import asyncio
import logging
import socket

import asyncpg

from relate.auth import Authenticator
from relate.config import Config
from relate.pop3 import commands
from relate.pop3.session import Dispatch, Pop3Session
from relate.runtime.streams import Session, StreamServer
from relate.runtime.tls import TLSRegistry
from relate.store.pop3 import MaildropLocks


class Pop3Server(StreamServer):
    log = logging.getLogger("relate.pop3")
    protocol = "pop3"
    refusal = b"-ERR [SYS/TEMP] Too many connections, try again later\r\n"

    def __init__(self, cfg: Config, pool: asyncpg.Pool, authenticator: Authenticator) -> None:
        super().__init__(
            TLSRegistry(cfg.tls.cert, cfg.tls.key),
            max_connections=cfg.pop3.max_connections,
            max_per_client=cfg.pop3.max_connections_per_client,
            line_limit=cfg.pop3.max_line_length,
        )
        self.cfg = cfg
        self.pool = pool
        self.authenticator = authenticator
        self.locks = MaildropLocks(cfg.database)
        self.commands = Dispatch(commands.HANDLERS, commands.ALLOWED)
        self.listeners = {"pop3": (cfg.pop3.pop3, False), "pop3s": (cfg.pop3.pop3s, True)}

    def make_session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, role: str) -> Pop3Session:
        return Pop3Session(self, reader, writer, tls=role == "pop3s")

    async def session_ended(self, session: Session) -> None:
        assert isinstance(session, Pop3Session)
        await session.release()

    async def start(self, sockets: dict[str, list[socket.socket]] | None = None, *, hold: bool = False) -> None:
        await self.start_listeners(sockets, hold=hold)

    async def stop(self, grace: float = 5.0) -> None:
        await self.stop_listeners(grace)
        await self.locks.close()
