"""One SMTP connection: state, the command loop, replies, timeouts, STARTTLS and the one place errors become replies.

Relay policy, the one that matters most (never an open relay):

- ``mx`` (port 25, unauthenticated): a recipient is accepted only when it is
  a known address or alias at a hosted domain, or postmaster (RFC 5321
  §4.5.1: ``<postmaster>`` and ``postmaster@`` every hosted domain are
  always accepted, see :mod:`relate.smtp.commands`). An unknown address at a
  hosted domain gets ``550 5.1.1``; any other domain ``554 5.7.1``. An
  address that is not a plain ``local@domain`` (quoted local parts, ``%``
  hacks, source routes, address literals, trailing dots, several ``@``) gets
  ``553 5.1.3``. Mail goes to the envelope recipients only, never to header
  addresses. AUTH is not offered. A recipient whose mailbox is full (quota,
  store/quota.py) gets ``452 4.2.2``, or ``552 5.2.2`` for good
  (relate.delivery says what happens after DATA).
- ``submission`` (587, STARTTLS required) and ``submissions`` (465, implicit
  TLS): nothing but EHLO, HELO, STARTTLS, NOOP and QUIT before TLS, and no
  MAIL, RCPT or DATA before AUTH. MAIL FROM and every From and Sender header
  address must belong to the authenticated user (``553``/``550 5.7.1``).
  Local recipients get the message at once (those without room for it, by
  their quota, through the queue), remote ones are queued for the delivery
  daemon, and a copy goes to the user's Sent folder when it fits theirs.

The loop reads one line at a time (at most ``smtp.max_line_length``; longer
lines are swallowed and answered ``500 5.5.2``), looks the verb up in the
command table (:mod:`relate.smtp.commands`), checks that the verb is allowed
on this port, in this state, now, parses its arguments
(:mod:`relate.smtp.parser`) and runs its handler. Replies are buffered and
written when no further command is waiting in the input (RFC 2920
PIPELINING), so a pipelined batch costs one write.

Errors become replies here and only here: an :class:`SmtpError` is the
client's mistake or our refusal (its reply, nothing logged but what the
handler logs); a database or memory-budget failure is ours and temporary
(``451 4.3.0`` / ``452 4.3.1`` and one ``smtp-tempfail`` line); anything else
is a bug, answered ``451 4.3.0`` and logged as one ``smtp-error`` line with
where it happened. A client's input never produces a 4xx. ``smtp.max_unknown_commands``
unknown verbs in a session, or ``smtp.max_bad_commands`` errors in a row
(syntax, sequence, lines too long), end the session.

Timeouts: one timer per connection, moved by every read (RFC 5321 §4.5.3.2:
``smtp.command_timeout`` between commands, ``smtp.data_timeout`` for the
whole DATA transfer); when it expires the client gets ``421 4.4.2`` and the
connection is closed. Nothing is timed while a command is being carried out.

Each connection logs one summary line when it ends (``smtp-session``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import enum
import logging
import math
import os
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg

from relate.auth import Authenticator, AuthRefused
from relate.config import Config
from relate.delivery import Recipient
from relate.mailauth.verdict import Checker
from relate.runtime import metrics
from relate.runtime.budget import MemoryBudget
from relate.runtime.streams import describe_tls_error, pending_input, read_line
from relate.runtime.tls import ReloadableTLS
from relate.smtp import parser, replies
from relate.smtp.errors import Hangup, ParseError, SmtpError
from relate.smtp.replies import Reply, refusal_reason
from relate.spam.filter import SpamFilter
from relate.store import db
from relate.store.accounts import user_addresses
from relate.store.group_commit import CommitGroup

log = logging.getLogger("relate.smtp")

# asyncio's socket transport allocates max_size (256 KiB) for every recv(), which glibc serves with
# mmap: a few bytes per command would cost far more than the bytes read.
_RECV_SIZE = 64 * 1024
# A database out of reach (store/db.py): answered as temporary and logged as smtp-tempfail. Any other error
# of a database call is a bug: still 451 to the client, but logged as smtp-error with where it happened.
DATABASE_ERRORS = db.UNAVAILABLE


class State(enum.Enum):
    """Where the session is (RFC 5321 §4.1.4 ordering); the command table says which verbs each allows."""

    FRESH = "fresh"  # connected (or just through STARTTLS): no EHLO/HELO yet
    GREETED = "greeted"  # no transaction
    MAIL = "mail"  # MAIL accepted, no recipient yet
    RCPT = "rcpt"  # at least one recipient accepted


@dataclass
class Envelope:
    """One transaction: from MAIL to the end of DATA (or RSET, EHLO, STARTTLS)."""

    mail_from: str  # "" for the null reverse-path
    smtputf8: bool = False
    size: int | None = None  # declared with MAIL FROM's SIZE= (RFC 1870), for the quota check at RCPT
    recipients: list[Recipient] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)  # as accepted, for the trace's "for" clause
    srs_owner: int | None = None  # the user a bounce to an SRS address is queued as (relate/sieve/srs.py)


class Verb(Protocol):
    """One entry of the command table (smtp/commands.py): whether it may run now, and its handler."""

    @property
    def handler(self) -> Callable[[SmtpSession, Any], Awaitable[None]]: ...

    def admit(self, session: SmtpSession) -> None: ...


class Host(Protocol):
    """What a session needs of the server that accepted it (smtp/server.py's SmtpServer)."""

    cfg: Config
    pool: asyncpg.Pool
    authenticator: Authenticator
    budget: MemoryBudget
    checker: Checker
    spam: SpamFilter
    commit_group: CommitGroup

    @property
    def commands(self) -> Mapping[str, Verb]: ...

    def tls_for(self, role: str) -> ReloadableTLS | None: ...


class SmtpSession:
    """Per-connection state; transaction state lives in :class:`Envelope`."""

    def __init__(self, server: Host, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, role: str) -> None:
        self.server = server
        self.cfg = server.cfg.smtp
        self.reader = reader
        self.writer = writer
        self.role = role
        peer = writer.get_extra_info("peername")
        self.client = str(peer[0]) if peer else "-"
        self.started = time.monotonic()
        self.greeted = False
        self.extended = False  # EHLO, not HELO
        self.helo_name = ""
        self.envelope: Envelope | None = None
        self.principal_address: str | None = None
        self.principal_id: int | None = None
        self.tls_version: str | None = None
        self.tls_details: str | None = None  # for the trace header
        self._note_tls()
        # The summary line.
        self.messages = 0
        self.recipient_count = 0
        self.bytes_in = 0
        self.last_sender = "-"
        self.last_result = "-"
        self.last_code = 0
        self.unknown_commands = 0
        self.bad_commands = 0
        # Output, timeouts, shutdown.
        self._out: list[bytes] = []
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[None] | None = None
        self._deadline = math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._stop_reply: Reply | None = None
        self.waiting = False  # for the client's next command
        self.busy = False  # inside a transaction's DATA (reading, storing): shutdown waits for it
        self.leaving = False
        transport = writer.transport
        if hasattr(transport, "max_size"):
            transport.max_size = _RECV_SIZE

    # -- state -----------------------------------------------------------------------

    @property
    def state(self) -> State:
        if not self.greeted:
            return State.FRESH
        if self.envelope is None:
            return State.GREETED
        return State.RCPT if self.envelope.recipients else State.MAIL

    @property
    def tls_active(self) -> bool:
        return self.tls_version is not None

    @property
    def auth_offered(self) -> bool:
        return self.role != "mx" and self.tls_active

    def _note_tls(self) -> None:
        ssl_object = self.writer.get_extra_info("ssl_object")
        if ssl_object is not None:
            cipher = ssl_object.cipher()
            self.tls_version = ssl_object.version()
            self.tls_details = f"version={self.tls_version} cipher={cipher[0]} bits={cipher[2]}" if cipher else None

    # -- output ----------------------------------------------------------------------

    def reply(self, reply: Reply) -> None:
        self.last_code = reply.code
        metrics.smtp_reply(reply.code)
        self.send(str(reply))

    def reply_lines(self, code: int, lines: list[str]) -> None:
        """A multi-line reply (RFC 5321 §4.2.1): ``code-`` on every line but the last."""
        self.last_code = code
        metrics.smtp_reply(code)
        for line in lines[:-1]:
            self.send(f"{code}-{line}")
        self.send(f"{code} {lines[-1]}")

    def send(self, line: str) -> None:
        # Buffered until flush(): one write (one TLS record, one syscall) per batch of replies.
        self._out.append(line.encode("utf-8") + b"\r\n")

    async def flush(self) -> None:
        if self._out:
            self.writer.write(b"".join(self._out))
            self._out.clear()
        await self.writer.drain()

    # -- timeouts and stopping ---------------------------------------------------------

    def arm(self, seconds: float) -> None:
        """Give the client ``seconds`` from now for what follows (a read, a write, a handshake)."""
        self._deadline = self._loop.time() + seconds
        timer = self._timer
        if timer is None or timer.when() > self._deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(self._deadline, self._expire)

    def disarm(self) -> None:
        self._deadline = math.inf

    def _expire(self) -> None:
        # The timer fires at the deadline it was set for; a deadline moved later sets it again.
        self._timer = None
        if self._deadline == math.inf:
            return
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._expire)
            return
        self._stop(replies.TIMEOUT)

    def _stop(self, reply: Reply) -> None:
        """End the session from outside its task: ``reply``, then close (run() turns the cancel into that)."""
        if self._stop_reply is None and self._task is not None and not self._task.done():
            self._stop_reply = reply
            self._task.cancel()

    def goodbye(self) -> None:
        """Shutdown: an idle session gets 421 now; one inside DATA finishes its message first."""
        self.leaving = True
        if self.waiting:
            self._stop(replies.SHUTTING_DOWN)

    def abort(self) -> None:
        """Shutdown after the grace period: 421 now, whatever the session is doing (nothing half-stored)."""
        self._stop(replies.SHUTTING_DOWN)

    # -- input -----------------------------------------------------------------------

    async def next_line(self, seconds: float) -> bytes | None:
        """The client's next line; replies are flushed first unless a pipelined command is already waiting."""
        self.arm(seconds)
        try:
            if b"\n" not in pending_input(self.reader):
                await self.flush()
            self.waiting = True
            return await read_line(self.reader)
        finally:
            self.waiting = False
            self.disarm()

    # -- the loop --------------------------------------------------------------------

    async def run(self) -> None:
        self._task = asyncio.current_task()
        self.send(f"220 {self.server.cfg.hostname} ESMTP Relate Mail")
        try:
            while True:
                if self.leaving:
                    raise Hangup(replies.SHUTTING_DOWN)
                line = await self.next_line(self.cfg.command_timeout)
                if line is None:
                    self._bad(replies.LINE_TOO_LONG)
                    continue
                await self.execute(line)
        except Hangup as hangup:
            if hangup.reply is not None:
                self.reply(hangup.reply)
        except asyncio.CancelledError:
            if self._stop_reply is None:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            self.reply(self._stop_reply)
        except (OSError, EOFError, asyncio.IncompleteReadError):
            pass  # the client went away (or broke TLS): nothing it did half-way was committed
        finally:
            if self._timer is not None:
                self._timer.cancel()
            if self._out and not self.writer.is_closing():
                # Written, not drained: a client that does not read cannot hold the session open.
                self.writer.write(b"".join(self._out))
                self._out.clear()

    def _bad(self, reply: Reply) -> None:
        """Answer a client error, and count it: past smtp.max_bad_commands in a row the session ends."""
        self.bad_commands += 1
        if self.bad_commands >= self.cfg.max_bad_commands:
            log.info("smtp-too-many-errors client=%s role=%s", self.client, self.role)
            raise Hangup(replies.TOO_MANY_ERRORS)
        self.reply(reply)

    async def execute(self, line: bytes) -> None:
        """Parse, check and run one command; every error becomes its reply here (see the module docstring)."""
        try:
            verb, rest = parser.split_verb(parser.decode(line))
        except ParseError as exc:
            metrics.command("smtp", "invalid")
            self.unknown_commands += 1
            if self.unknown_commands >= self.cfg.max_unknown_commands:
                log.info("smtp-too-many-unknown client=%s role=%s", self.client, self.role)
                raise Hangup(replies.TOO_MANY_UNKNOWN) from None
            self._bad(exc.reply)
            return
        spec = self.server.commands[verb]
        metrics.command("smtp", verb)
        try:
            spec.admit(self)
            command = parser.parse_arguments(verb, rest)
            await spec.handler(self, command)
            self.bad_commands = 0
        except (Hangup, OSError, EOFError, asyncio.IncompleteReadError):
            raise  # run() handles these: the end of the session, or a client that went away
        except SmtpError as exc:
            if verb == "RCPT":
                metrics.child(metrics.SMTP_RCPT_REFUSED, self.role, refusal_reason(exc.reply)).inc()
            if exc.reply.code in (500, 501, 503, 555) or isinstance(exc, ParseError):
                self._bad(exc.reply)
            else:
                self.reply(exc.reply)
        except Exception as exc:  # noqa: BLE001 - one place turns a bug into 451 and one log line
            log.error(
                "smtp-error client=%s role=%s command=%s error=%s:%r at=%s",
                self.client,
                self.role,
                verb,
                type(exc).__name__,
                str(exc)[:200],
                _where(exc),
            )
            self.reply(replies.TEMPFAIL)

    @contextlib.contextmanager
    def database(self, stage: str, reply: Reply = replies.TEMPFAIL) -> Iterator[None]:
        """Around a database call: its failure is ours, temporary, logged in one line and answered ``reply``."""
        try:
            yield
        except DATABASE_ERRORS as exc:
            log.warning("smtp-tempfail client=%s stage=%s error=%s", self.client, stage, type(exc).__name__)
            raise SmtpError(reply) from None

    # -- helpers for the handlers ------------------------------------------------------

    async def owned_addresses(self) -> set[str]:
        assert self.principal_id is not None
        with self.database("owned"):
            return await user_addresses(self.server.pool, self.principal_id)

    async def sasl_response(self, challenge: bytes) -> bytes:
        """RFC 4954 §4: send a 334 challenge and read the client's base64 answer ('*' aborts)."""
        self.send("334 " + base64.b64encode(challenge).decode("ascii"))
        line = await self.next_line(self.cfg.command_timeout)
        if line is None:
            raise SmtpError(replies.LINE_TOO_LONG)
        return decode_sasl(line.rstrip(b"\r\n"))

    async def start_tls(self) -> None:
        """RFC 3207 §4: the go-ahead, the handshake, and a fresh session; a failed handshake ends the session."""
        tls = self.server.tls_for(self.role)
        assert tls is not None
        # RFC 3207 §5 (STARTTLS injection): bytes sent in clear after STARTTLS are not commands over TLS.
        pending = pending_input(self.reader)
        if pending:
            log.info("smtp-starttls-pipelined client=%s role=%s bytes=%d", self.client, self.role, len(pending))
            pending.clear()
        self.reply(replies.START_TLS)
        timeout = self.cfg.command_timeout
        self.arm(timeout)
        try:
            await self.flush()
            await self.writer.start_tls(tls.context, ssl_handshake_timeout=timeout)
        except (OSError, EOFError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            log.info("smtp-tls-failed client=%s role=%s error=%s", self.client, self.role, describe_tls_error(exc))
            raise Hangup() from None
        finally:
            self.disarm()
        self._note_tls()
        # Nothing said before TLS counts after it.
        self.greeted = False
        self.extended = False
        self.helo_name = ""
        self.envelope = None


def decode_sasl(line: bytes) -> bytes:
    """A SASL response line: '*' aborts (501 5.7.0), '=' is empty (RFC 4954 §4), else strict base64 (501 5.5.2)."""
    text = line.strip()
    if text == b"*":
        raise SmtpError(replies.AUTH_ABORTED)
    if text == b"=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SmtpError(replies.BAD_BASE64) from None


async def check_login(session: SmtpSession, login: bytes, password: bytes) -> None:
    """The key check of AUTH: 235, 535 (wrong, counted for the lockout) or 454 (the database is away)."""
    try:
        principal = await session.server.authenticator.authenticate(
            login.decode("utf-8", "replace"),
            password.decode("utf-8", "replace"),
            "smtp",
            client=session.client,
            service="smtp",
        )
    except AuthRefused:
        raise SmtpError(replies.AUTH_FAILED) from None
    except DATABASE_ERRORS as exc:
        log.warning("smtp-auth-tempfail client=%s error=%s", session.client, type(exc).__name__)
        raise SmtpError(replies.AUTH_TEMPFAIL) from None
    session.principal_address = principal.address
    session.principal_id = principal.user_id
    session.reply(replies.AUTH_OK)


def _where(exc: BaseException) -> str:
    """file:line of the innermost frame of Relate Mail's own code in the exception's traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    here = os.path.dirname(os.path.dirname(__file__))
    for frame in reversed(frames):
        if frame.filename.startswith(here):
            return f"relate{frame.filename[len(here) :]}:{frame.lineno}"
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "-"
