"""One POP3 connection (RFC 1939): the AUTHORIZATION, TRANSACTION and UPDATE states, reading and answering.

Policy:

- The maildrop is the user's INBOX as it was at login: message numbers,
  sizes and UIDs are fixed for the session; mail arriving meanwhile waits
  for the next one.
- One session per maildrop, on every host: login takes the maildrop's
  PostgreSQL advisory lock, on the one connection that holds every lock of
  the process (:mod:`relate.store.pop3` says why), so it is released however
  the session ends (QUIT, before its +OK; a dropped connection; a killed
  daemon). A second login gets ``-ERR [IN-USE]``. If that connection is lost (a database
  restart), the sessions holding locks hear ``-ERR [SYS/TEMP]`` (after the
  answer to a command in progress) and are closed; the next login makes a
  new connection. Nothing else pins a connection: every read and write of a
  session takes one from the pool for that operation only.
- DELE only marks. QUIT in TRANSACTION removes the marked messages in one
  transaction (the UPDATE state); a connection that drops removes nothing.
- Sizes are octets as RETR sends them: CRLF line endings, before
  dot-stuffing. UIDL is ``UIDVALIDITY.UID``, unique and stable for the
  message's life.
- RETR sets ``\\Seen``, which IMAP and the API see: written in the
  background (the next commands do not wait for it, one write at a time)
  once the client pauses (no command for 0.2 s) or 2 s after the oldest
  RETR not yet written, whichever comes first, and at the latest when the
  session ends, however it ends. A message already marked by DELE is left
  out of these writes (QUIT removes it; a dropped connection, which removes
  nothing, still writes its \\Seen at the end, and so does RSET's undoing
  the mark), so a fetch-and-delete client costs no flag writes at all, as
  with Dovecot, which sets \\Seen only at QUIT. QUIT writes the rest before
  removing anything. Background writes commit without waiting for the disk
  (synchronous_commit off): a database crash within a fraction of a second
  may forget a \\Seen, never a message, and QUIT's removal, which commits
  durably, makes every earlier write durable with it (the WAL is flushed in
  order).
- Downloads are read ahead: the messages after the one asked for come in one
  query (up to 4 MB or 100 messages), and while they are sent the next such
  batch is already being fetched, on another pooled connection.
- Pipelined commands are taken from the input buffer together and answered
  in order; the answers to a burst go out in one write. A command that needs
  no database (DELE, or RETR of a message already read ahead) runs without
  yielding to the event loop.
- Errors are answered here and only here (:meth:`Pop3Session._failed`): a
  refusal as ``-ERR [code] text``; the database down, slow or full (the pool
  waits ``database.acquire_timeout``) as ``-ERR [SYS/TEMP]`` with one
  ``pop3-tempfail`` log line; anything unforeseen as ``-ERR [SYS/TEMP]`` with
  one ``pop3-error`` line. The session goes on after each. Lines that are not
  commands count towards ``pop3.max_bad_commands``; then the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import asyncpg

from relate.auth import Authenticator, Principal
from relate.config import Config
from relate.pop3 import parser, responses
from relate.pop3.errors import GONE, TEMPORARY, ClientGone, ParseError, Pop3Error, TempFail
from relate.pop3.maildrop import Maildrop
from relate.runtime import metrics
from relate.runtime.streams import pending_input, read_line
from relate.runtime.tls import ReloadableTLS
from relate.store.pop3 import MaildropLocks

log = logging.getLogger("relate.pop3")

AUTHORIZATION, TRANSACTION, UPDATE = "authorization", "transaction", "update"
# Queued answers are handed to the socket once they reach this size, or when no command is waiting.
OUT_BYTES = 256 * 1024


T = TypeVar("T")

# A handler answers at once and returns None, or returns what it still has to wait for (an async handler).
Handler = Callable[["Pop3Session", Any], Awaitable[None] | None]


@dataclass(frozen=True)
class Dispatch:
    """The command table (pop3/commands.py): each verb's handler, and the verbs each state allows."""

    handlers: Mapping[str, Handler]
    allowed: Mapping[str, frozenset[str]]


class Host(Protocol):
    """What a session needs of the server that accepted it (pop3/server.py's Pop3Server)."""

    cfg: Config
    pool: asyncpg.Pool
    authenticator: Authenticator
    locks: MaildropLocks
    line_limit: int
    commands: Dispatch

    def tls_for(self, role: str) -> ReloadableTLS | None: ...


class Pop3Session:
    def __init__(self, server: Host, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tls: bool) -> None:
        self.server = server
        self.cfg = server.cfg.pop3
        self.reader = reader
        self.writer = writer
        self.tls = tls
        peer = writer.get_extra_info("peername")
        self.client = str(peer[0]) if peer else "-"
        self.state = AUTHORIZATION
        self.user: str | None = None  # from USER, for PASS
        self.principal: Principal | None = None
        self.maildrop: Maildrop | None = None
        self.bad_in_a_row = 0
        self.started = time.monotonic()
        self.retrieved = 0
        self.removed = 0
        self.commands = 0  # commands executed (the background \Seen write waits for a pause in them)
        self.waiting = False  # for the client's next line: a goodbye can be written at once
        self.leaving: str | None = None  # the line to end with once the command in progress has answered
        self.lock_lost = False
        self._lines: deque[bytes | None] = deque()  # pipelined command lines taken from the reader, not yet run
        self._out: list[bytes] = []
        self._out_size = 0

    # -- output -----------------------------------------------------------------------------

    def send(self, line: str | bytes) -> None:
        data = line.encode() if isinstance(line, str) else line
        if data[:1] in (b"+", b"-"):  # a status line (+OK, -ERR); a list's lines start with a digit, a name or "."
            if data.startswith(b"+OK"):
                metrics.reply("pop3", "+OK")
            elif data.startswith(b"-ERR"):
                metrics.reply("pop3", "-ERR")
        self.out(data + b"\r\n")

    def out(self, *data: bytes) -> None:
        """Queue bytes for the client: the answers to a burst of pipelined commands go out in one write."""
        self._out.extend(data)
        for part in data:
            self._out_size += len(part)
        if self._out_size >= OUT_BYTES:
            self._push()

    def _push(self) -> None:
        if self._out:
            self.writer.write(b"".join(self._out))
            self._out.clear()
            self._out_size = 0

    async def flush(self) -> None:
        """Send what is queued; a client that stops reading for the idle timeout is cut off (ClientGone)."""
        self._push()
        try:
            async with asyncio.timeout(self.cfg.idle_timeout):
                await self.writer.drain()
        except TimeoutError:
            self.writer.transport.abort()
            raise ClientGone("client stopped reading") from None
        except OSError as exc:
            raise ClientGone(type(exc).__name__) from None

    # -- input ------------------------------------------------------------------------------

    async def read_line(self) -> bytes | None:
        """One line without CRLF within the idle timeout (TimeoutError); None for an overlong one, swallowed."""
        if self._lines:
            return self._lines.popleft()
        if pending_input(self.reader).find(b"\n") >= 0:
            return await self._read_line()  # pipelined: here already, no timer needed
        self.waiting = True
        try:
            async with asyncio.timeout(self.cfg.idle_timeout):
                return await self._read_line()
        finally:
            self.waiting = False

    async def read_lines(self) -> None:
        """Queue every complete line the client has sent (at least one, within the idle timeout)."""
        buffered = pending_input(self.reader)
        end = buffered.rfind(b"\n")
        if end < 0:
            self._lines.append(await self.read_line())
            return
        # All there already: one read for the lot (readexactly keeps the reader's flow control right).
        chunk = await self._client_io(self.reader.readexactly(end + 1))
        limit = self.server.line_limit
        for line in chunk.split(b"\n")[:-1]:
            # As readuntil() would: a line longer than the limit is swallowed and reported as None.
            self._lines.append(line.rstrip(b"\r") if len(line) <= limit else None)

    def has_input(self) -> bool:
        """Whether bytes the client sent wait, read or not (used where none may: STLS)."""
        return bool(self._lines or pending_input(self.reader))

    async def _read_line(self) -> bytes | None:
        line = await self._client_io(read_line(self.reader))
        return None if line is None else line.rstrip(b"\r\n")

    @staticmethod
    async def _client_io(pending: Awaitable[T]) -> T:
        """A read from the client; its end (EOF, reset, a TLS error) is ClientGone."""
        try:
            return await pending
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise ClientGone(type(exc).__name__) from None

    async def start_tls(self, context: ssl.SSLContext) -> None:
        try:
            await self.writer.start_tls(context)
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            raise ClientGone(type(exc).__name__) from None
        self.tls = True

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        self.send(responses.GREETING)
        try:
            lines = self._lines
            while self.state != UPDATE:
                if self.leaving is not None:
                    self.send(self.leaving)
                    break
                if not lines:
                    if pending_input(self.reader).find(b"\n") < 0:  # no command waits
                        if self.maildrop is not None:
                            self.maildrop.start_seen()
                        await self.flush()
                    try:
                        await self.read_lines()
                    except TimeoutError:
                        self.send(responses.AUTOLOGOUT)
                        break
                line = lines.popleft()
                if line is None:
                    self._bad("Line too long")
                    continue
                pending = self.execute(line)
                if pending is not None:
                    await pending
        except ClientGone:
            pass  # a dropped connection removes nothing (RFC 1939 §6)
        except Exception as exc:  # noqa: BLE001 - the loop's own failure: one line, and the session ends
            log.error("pop3-error client=%s where=loop error=%s: %s", self.client, type(exc).__name__, exc)
        finally:
            with contextlib.suppress(ClientGone, RuntimeError):
                await self.flush()

    def _bad(self, text: str) -> None:
        """A line that is no command: -ERR, and past max_bad_commands in a row, the end of the session."""
        self.bad_in_a_row += 1
        if self.bad_in_a_row >= self.cfg.max_bad_commands:
            self.send("-ERR Too many invalid commands")
            self.state = UPDATE
            return
        self.send(f"-ERR {text}")

    def execute(self, line: bytes) -> Awaitable[None] | None:
        """Run one command line; what it still has to wait for (the database, the client), if anything.

        Handlers that need not wait answer at once and return None; the others return an awaitable,
        which :meth:`_finish` wraps so that errors are answered in :meth:`_failed` either way.
        """
        allowed = self.server.commands.allowed[self.state]
        try:
            cmd = parser.parse(line, max_length=self.server.line_limit)
        except ParseError as exc:
            metrics.command("pop3", exc.verb or "invalid")
            if exc.verb is None:
                self._bad(exc.text)
            elif exc.verb not in allowed:
                self._bad(f"{exc.verb} is not allowed now")
            else:
                self.send(exc.line)
            return None
        verb = cmd.verb
        metrics.command("pop3", verb)
        if verb not in allowed:
            self._bad(f"{verb} is not allowed now")
            return None
        self.commands += 1
        try:
            pending = self.server.commands.handlers[verb](self, cmd)
        except Exception as exc:  # noqa: BLE001 - _failed sorts it out, in one place
            self._failed(verb, exc)
            return None
        if pending is not None:
            return self._finish(verb, pending)
        self.bad_in_a_row = 0
        return None

    async def _finish(self, verb: str, pending: Awaitable[None]) -> None:
        try:
            await pending
            self.bad_in_a_row = 0
        except Exception as exc:  # noqa: BLE001 - _failed sorts it out, in one place
            self._failed(verb, exc)

    def _failed(self, verb: str, exc: Exception) -> None:
        """The one place a failed command is answered and logged; the session goes on."""
        if isinstance(exc, Pop3Error):
            self.send(exc.line)
        elif isinstance(exc, ClientGone):
            raise exc
        elif isinstance(exc, TEMPORARY):
            log.warning("pop3-tempfail client=%s command=%s error=%s", self.client, verb, _describe(exc))
            self.send(TempFail(responses.TEMPORARY_FAILURE).line)
        elif isinstance(exc, GONE):
            log.warning("pop3-maildrop-gone client=%s command=%s", self.client, verb)
            self.send("-ERR [SYS/PERM] The maildrop no longer exists")
        else:
            log.error("pop3-error client=%s command=%s error=%s", self.client, verb, _describe(exc))
            self.send(TempFail(responses.SERVER_FAILURE).line)

    # -- leaving ----------------------------------------------------------------------------

    def leave(self, line: str) -> None:
        """End the session with ``line``: now if it waits for the client, else once the command in progress
        has answered (so the line never lands inside another answer). Called from outside the session's task."""
        if self.state == UPDATE or self.leaving is not None:
            return
        self.leaving = line
        if self.waiting:
            self.send(line)
            self._push()  # not flush(): this runs outside the session's task
            self.writer.close()

    def goodbye(self) -> None:
        """At shutdown."""
        self.leave(responses.SHUTTING_DOWN)

    def maildrop_lost(self) -> None:
        """The maildrop lock went with the lock connection (MaildropLocks calls this): the session ends."""
        self.lock_lost = True
        if self.state == TRANSACTION:
            self.leave(responses.LOCK_LOST)

    # -- the maildrop -----------------------------------------------------------------------

    def require_maildrop(self) -> Maildrop:
        assert self.maildrop is not None, "TRANSACTION without a maildrop"
        return self.maildrop

    async def open_maildrop(self, principal: Principal) -> Maildrop:
        """Lock the maildrop and take its snapshot, or raise [IN-USE] / [SYS/TEMP] / [SYS/PERM]."""
        self.lock_lost = False
        maildrop = await Maildrop.open(
            self.server.pool, self.server.locks, principal.user_id, client=self.client, on_lost=self.maildrop_lost
        )
        if self.lock_lost:  # lost while the snapshot was taken
            await maildrop.close()
            raise TempFail("The maildrop lock was lost; log in again")
        maildrop.activity = lambda: self.commands
        self.maildrop = maildrop
        self.principal = principal
        self.state = TRANSACTION
        return maildrop

    async def close_maildrop(self) -> None:
        """The maildrop's last \\Seen writes, then its lock given back (QUIT, or the end of the session)."""
        if self.maildrop is not None:
            maildrop, self.maildrop = self.maildrop, None
            await maildrop.close()

    async def release(self) -> None:
        """After the session, however it ended: the maildrop closed if QUIT did not; one log line."""
        await self.close_maildrop()
        log.info(
            "pop3-session client=%s tls=%s user=%s retrieved=%d removed=%d seconds=%.1f%s",
            self.client,
            "yes" if self.tls else "no",
            self.principal.address if self.principal else "-",
            self.retrieved,
            self.removed,
            time.monotonic() - self.started,
            " lock=lost" if self.lock_lost else "",
        )


def _describe(exc: BaseException) -> str:
    """An exception in one short log field: its type and the first line of its text."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
