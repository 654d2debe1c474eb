"""One POP3 connection (RFC 1939): the AUTHORIZATION, TRANSACTION and UPDATE states.

Policy:

- The maildrop is the user's INBOX as it was at login: message numbers,
  sizes and UIDs are fixed for the session; mail arriving meanwhile waits
  for the next one.
- One session per maildrop: login takes a PostgreSQL advisory lock on a
  connection of the session's own, so it is released however the session
  ends (QUIT, a dropped connection, a killed daemon). A second login gets
  ``-ERR [IN-USE]``.
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
  batch is already being fetched, on another connection.
- Pipelined commands are taken from the input buffer together and answered
  in order; the answers to a burst go out in one write. A command that needs
  no database (DELE, or RETR of a message already read ahead) runs without
  yielding to the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from relate.auth import AuthRefused, Principal
from relate.errors import MailboxGone
from relate.store import accounts, db, imap_messages, mailboxes

if TYPE_CHECKING:
    from relate.pop3.server import Pop3Server

log = logging.getLogger("relate.pop3")

AUTHORIZATION, TRANSACTION, UPDATE = "authorization", "transaction", "update"
_LOCK_CLASS = 0x504F5033  # "POP3": first key of the maildrop advisory lock
_PREFETCH_BYTES = 4 * 1024 * 1024
_PREFETCH_COUNT = 100
# Queued answers are handed to the socket once they reach this size, or when no command is waiting.
_OUT_BYTES = 256 * 1024
# \Seen of RETR'd messages is written once the client pauses this long, or this long after the oldest RETR.
_SEEN_IDLE = 0.2
_SEEN_MAX_DELAY = 2.0


class PopError(Exception):
    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.line = f"-ERR [{code}] {text}" if code else f"-ERR {text}"


@dataclass
class Message:
    uid: int
    size: int
    deleted: bool = False
    crlf: bool = False  # stored with CRLF line ends and a final CRLF already (no wire_size)


def to_wire(raw: bytes, *, crlf: bool = False) -> bytes:
    """CRLF line endings, a final CRLF, and dot-stuffing (RFC 1939 §3), ready to send before ``.``.

    ``crlf``: the caller knows ``raw`` has CRLF line ends only and ends with one.
    """
    if not raw:
        return b""
    data = raw if crlf else raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..") if _line_starts_with_dot(data) else data


def _line_starts_with_dot(data: bytes) -> bool:
    """Whether a line after the first starts with ``.``; in CRLF text, as ``b"\\r\\n." in data``, only faster.

    Searching for the pair steps a few bytes at a time past every line end; most messages have few
    dots (base64 has none), and finding each of them is a memchr.
    """
    if data.count(b".") > 64:
        return b"\r\n." in data
    at = data.find(b".", 1)
    while at > 0:
        if data[at - 1] == 0x0A:
            return True
        at = data.find(b".", at + 1)
    return False


class Pop3Session:
    def __init__(
        self, server: Pop3Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tls: bool
    ) -> None:
        self.server = server
        self.cfg = server.cfg.pop3
        self.reader = reader
        self.writer = writer
        self.tls = tls
        peer = writer.get_extra_info("peername")
        self.client = str(peer[0]) if peer else "-"
        self.state = AUTHORIZATION
        self.user: str | None = None
        self.principal: Principal | None = None
        self.lock_conn: asyncpg.Connection | None = None
        self.inbox_id = 0
        self.uidvalidity = 0
        self.drop: list[Message] = []
        self.bad_in_a_row = 0
        self.started = time.monotonic()
        self.retrieved = 0
        self.removed = 0
        self.seen_pending: list[Message] = []  # RETR'd, \Seen not yet written (in RETR order)
        self._seen_since = 0.0  # loop time of the oldest of them
        self._seen_writing = False  # the background task is past its wait, in the database
        self.commands = 0  # commands executed (the background \Seen write waits for a pause in them)
        self._lines: deque[bytes | None] = deque()  # pipelined command lines taken from the reader, not yet run
        self._out: list[bytes] = []
        self._out_size = 0
        self._seen_task: asyncio.Task[None] | None = None
        self._prefetched: dict[int, bytes] = {}
        # The batch being read ahead: its UIDs and the query fetching it.
        self._ahead: tuple[frozenset[int], asyncio.Task[dict[int, bytes]]] | None = None

    # -- I/O -------------------------------------------------------------------

    def send(self, line: str | bytes) -> None:
        self.out((line.encode() if isinstance(line, str) else line) + b"\r\n")

    def out(self, *data: bytes) -> None:
        """Queue bytes for the client: the answers to a burst of pipelined commands go out in one write."""
        self._out.extend(data)
        for part in data:
            self._out_size += len(part)
        if self._out_size >= _OUT_BYTES:
            self._push()

    def _push(self) -> None:
        if self._out:
            self.writer.write(b"".join(self._out))
            self._out.clear()
            self._out_size = 0

    def goodbye(self) -> None:
        self.send("-ERR [SYS/TEMP] Server shutting down")
        self._push()
        self.writer.close()

    async def flush(self) -> None:
        """Send what is buffered; a client that stops reading for the idle timeout is cut off."""
        self._push()
        try:
            async with asyncio.timeout(self.cfg.idle_timeout):
                await self.writer.drain()
        except TimeoutError:
            self.writer.transport.abort()
            raise ConnectionAbortedError("client stopped reading") from None

    async def read_line(self) -> bytes | None:
        """One line without CRLF within the idle timeout (TimeoutError); None for an overlong one, swallowed."""
        if self._lines:
            return self._lines.popleft()
        if self.reader._buffer.find(b"\n") >= 0:  # type: ignore[attr-defined]
            return await self._read_line()  # pipelined: here already, no timer needed
        async with asyncio.timeout(self.cfg.idle_timeout):
            return await self._read_line()

    async def read_lines(self) -> None:
        """Queue every complete line the client has sent (at least one, within the idle timeout)."""
        buffered: bytearray = self.reader._buffer  # type: ignore[attr-defined]
        end = buffered.rfind(b"\n")
        if end < 0:
            self._lines.append(await self.read_line())
            return
        # All there already: one read for the lot (readexactly keeps the reader's flow control right).
        chunk = await self.reader.readexactly(end + 1)
        limit = self.server.line_limit
        for line in chunk.split(b"\n")[:-1]:
            # As readuntil() would: a line longer than the limit is swallowed and reported as None.
            self._lines.append(line.rstrip(b"\r") if len(line) <= limit else None)

    def has_input(self) -> bool:
        """Whether bytes the client sent wait, read or not (used where none may: STLS)."""
        return bool(self._lines or self.reader._buffer)  # type: ignore[attr-defined]

    async def _read_line(self) -> bytes | None:
        try:
            return (await self.reader.readuntil(b"\n")).rstrip(b"\r\n")
        except asyncio.LimitOverrunError as exc:
            await self.reader.readexactly(exc.consumed)
            while True:
                try:
                    await self.reader.readuntil(b"\n")
                    return None
                except asyncio.LimitOverrunError as more:
                    await self.reader.readexactly(more.consumed)

    async def run(self) -> None:
        self.send("+OK Relate Mail POP3 server ready")
        try:
            lines = self._lines
            while self.state != UPDATE:
                if not lines:
                    if self.reader._buffer.find(b"\n") < 0:  # type: ignore[attr-defined]  # no command waits
                        self.start_seen()
                        await self.flush()
                    try:
                        await self.read_lines()
                    except TimeoutError:
                        self.send("-ERR Autologout; idle for too long")
                        break
                line = lines.popleft()
                if line is None:
                    self._bad("Line too long")
                    continue
                pending = self.execute(line)
                if pending is not None:
                    await pending
        except (OSError, asyncio.IncompleteReadError):
            pass  # a dropped connection removes nothing (RFC 1939 §6)
        finally:
            with contextlib.suppress(OSError, RuntimeError, asyncpg.PostgresError):
                await self.write_seen()
            with contextlib.suppress(OSError, RuntimeError):
                await self.flush()

    def note_retrieved(self, msg: Message) -> None:
        if not self.seen_pending:
            self._seen_since = time.monotonic()
        self.seen_pending.append(msg)

    def _take_seen(self, *, marked_too: bool) -> list[int]:
        """UIDs whose \\Seen is to be written now; messages marked by DELE stay pending unless ``marked_too``."""
        if marked_too:
            taken, self.seen_pending = self.seen_pending, []
        else:
            taken = [m for m in self.seen_pending if not m.deleted]
            self.seen_pending = [m for m in self.seen_pending if m.deleted]
            self._seen_since = time.monotonic()  # those left are not due until DELE's mark is undone
        return [m.uid for m in taken]

    async def write_seen(self, *, marked_too: bool = True) -> None:
        """Set \\Seen on what RETR sent, now: the background write in flight, then what is left.

        ``marked_too=False`` (QUIT, which removes them next) leaves out the messages marked by DELE.
        """
        if self._seen_task is not None:
            task, self._seen_task = self._seen_task, None
            if not self._seen_writing:
                task.cancel()  # still waiting for a pause: this write does its work
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.lock_conn is None:
            return
        uids = self._take_seen(marked_too=marked_too)
        if uids:
            await self._store_seen(self.lock_conn, uids)

    def start_seen(self) -> None:
        """Have \\Seen written in the background, once the client pauses; one write at a time."""
        if not self.seen_pending or self.lock_conn is None:
            return
        if self._seen_task is not None and not self._seen_task.done():
            return  # the write waiting or in flight takes these along
        self._seen_task = asyncio.create_task(self._seen_in_background())

    async def _seen_in_background(self) -> None:
        # Wait for the client to pause (no command for _SEEN_IDLE), at most until the oldest RETR is
        # _SEEN_MAX_DELAY old: a fetch-and-delete client has marked most messages for removal by then.
        seen_commands = -1
        while self.commands != seen_commands and time.monotonic() - self._seen_since < _SEEN_MAX_DELAY:
            seen_commands = self.commands
            await asyncio.sleep(_SEEN_IDLE)
        self._seen_writing = True
        try:
            async with self.server.pool.acquire() as conn:
                while uids := self._take_seen(marked_too=False):
                    await self._store_seen(conn, uids, durable=False)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.warning("pop3-seen-failed client=%s error=%s", self.client, type(exc).__name__)
        finally:
            self._seen_writing = False

    async def _store_seen(self, conn: asyncpg.Connection, uids: list[int], *, durable: bool = True) -> None:
        try:
            if durable:
                await imap_messages.store_flags(conn, self.inbox_id, uids, "+", ["\\Seen"])
                return
            async with conn.transaction():  # SET LOCAL: pooled connections carry no settings out
                await conn.execute("SET LOCAL synchronous_commit = off")
                await imap_messages.store_flags(conn, self.inbox_id, uids, "+", ["\\Seen"])
        except (asyncpg.PostgresError, MailboxGone) as exc:
            log.warning("pop3-seen-failed client=%s error=%s", self.client, type(exc).__name__)

    def _bad(self, text: str) -> None:
        self.bad_in_a_row += 1
        if self.bad_in_a_row >= self.cfg.max_bad_commands:
            self.send("-ERR Too many invalid commands")
            self.state = UPDATE
            return
        self.send(f"-ERR {text}")

    def execute(self, line: bytes) -> Awaitable[None] | None:
        """Run one command line; what it still has to wait for (the database, the client), if anything.

        Handlers that need not wait answer at once and return None; the others return an awaitable,
        which :meth:`_finish` wraps so that errors are answered in this one place either way.
        """
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self._bad("Commands are text")
            return None
        verb, _, rest = text.partition(" ")
        verb = verb.upper()
        handler = HANDLERS.get(verb)
        if handler is None:
            self._bad("Unknown command")
            return None
        if verb not in ALLOWED[self.state]:
            self._bad(f"{verb} is not allowed now")
            return None
        self.commands += 1
        try:
            pending = handler(self, rest.split(" ") if rest else [])
        except PopError as exc:
            self.send(exc.line)
            return None
        if pending is not None:
            return self._finish(verb, pending)
        self.bad_in_a_row = 0
        return None

    async def _finish(self, verb: str, pending: Awaitable[None]) -> None:
        try:
            await pending
            self.bad_in_a_row = 0
        except PopError as exc:
            self.send(exc.line)
        except (ConnectionError, ssl.SSLError):
            raise  # the session is over; run() ends it quietly
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.warning("pop3-tempfail client=%s command=%s error=%s", self.client, verb, type(exc).__name__)
            self.send("-ERR [SYS/TEMP] Temporary failure, try again")

    # -- maildrop -----------------------------------------------------------------

    def message(self, arg: str) -> tuple[int, Message]:
        if not (arg.isascii() and arg.isdigit()) or not 1 <= int(arg) <= len(self.drop):
            raise PopError("No such message")
        number = int(arg)
        msg = self.drop[number - 1]
        if msg.deleted:
            raise PopError("Message is deleted")
        return number, msg

    async def open_maildrop(self, principal: Principal) -> None:
        """Lock the maildrop and take its snapshot, or raise [IN-USE] / [SYS/TEMP]."""
        conn = await db.connect(self.server.cfg.database)
        try:
            inbox = await accounts.inbox_id(conn, principal.user_id)
            if inbox is None:
                raise PopError("No maildrop", "SYS/PERM")
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", _LOCK_CLASS, inbox):
                raise PopError("Maildrop is in use by another session", "IN-USE")
            box = await mailboxes.by_id(conn, inbox)
            rows = await conn.fetch(
                """SELECT uid, coalesce(wire_size, size) AS size, wire_size IS NULL AS crlf
                     FROM messages WHERE mailbox_id = $1 ORDER BY uid""",
                inbox,
            )
        except BaseException:
            await conn.close()
            raise
        assert box is not None
        self.lock_conn = conn
        self.inbox_id = inbox
        self.uidvalidity = box["uidvalidity"]
        self.drop = [Message(r["uid"], r["size"], crlf=r["crlf"]) for r in rows]
        self.principal = principal
        self.state = TRANSACTION

    async def release(self) -> None:
        """Drop the maildrop lock (closing its connection releases it)."""
        if self._ahead is not None:
            self._ahead[1].cancel()
            with contextlib.suppress(BaseException):
                await self._ahead[1]
            self._ahead = None
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            await self.write_seen()
        if self.lock_conn is not None:
            await self.lock_conn.close()
            self.lock_conn = None
        log.info(
            "pop3-session client=%s tls=%s user=%s retrieved=%d removed=%d seconds=%.1f",
            self.client,
            "yes" if self.tls else "no",
            self.principal.address if self.principal else "-",
            self.retrieved,
            self.removed,
            time.monotonic() - self.started,
        )

    async def raw(self, number: int, msg: Message) -> bytes:
        """The message's bytes. Clients fetch in order, so the next ones come in the same query, read ahead."""
        data = self._prefetched.pop(msg.uid, None)
        if data is not None:
            return data
        if self._ahead is not None and msg.uid in self._ahead[0]:
            task = self._ahead[1]
            self._ahead = None
            self._prefetched = await task
        if msg.uid not in self._prefetched:  # not read ahead, or the read-ahead failed
            assert self.lock_conn is not None
            self._prefetched = await _fetch_raw(self.lock_conn, self.inbox_id, self._batch(number - 1))
        self._read_ahead(number)
        data = self._prefetched.pop(msg.uid, None)
        if data is None:
            raise PopError("Message is gone", "SYS/TEMP")
        return data

    def _batch(self, start: int) -> list[int]:
        """UIDs of the undeleted messages from index ``start`` on, up to one batch's bytes and count."""
        batch: list[int] = []
        total = 0
        for following in self.drop[start:]:
            if following.deleted:
                continue
            if batch and (total + following.size > _PREFETCH_BYTES or len(batch) >= _PREFETCH_COUNT):
                break
            batch.append(following.uid)
            total += following.size
        return batch

    def _read_ahead(self, number: int) -> None:
        """Start fetching the batch after the one just fetched (message ``number`` was its first)."""
        if self._ahead is not None:
            self._ahead[1].cancel()
            self._ahead = None
        start = number
        while start < len(self.drop) and self.drop[start].uid in self._prefetched:
            start += 1
        batch = self._batch(start)
        if batch:
            self._ahead = (frozenset(batch), asyncio.create_task(self._fetch_ahead(batch)))

    async def _fetch_ahead(self, batch: list[int]) -> dict[int, bytes]:
        try:
            async with self.server.pool.acquire() as conn:
                return await _fetch_raw(conn, self.inbox_id, batch)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return {}  # each message is then fetched again when asked for


async def _fetch_raw(conn: asyncpg.Connection, inbox_id: int, batch: list[int]) -> dict[int, bytes]:
    rows = await imap_messages.fetch(conn, inbox_id, batch, with_raw=True, columns=frozenset())
    return {r["uid"]: bytes(r["raw"]) for r in rows}


# -- commands -----------------------------------------------------------------------

# A handler answers at once and returns None, or returns what it still has to wait for (an async handler).
Handler = Callable[[Pop3Session, list[str]], Awaitable[None] | None]


# RFC 2449 §5 (CAPA)
def capa(session: Pop3Session, args: list[str]) -> None:
    caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "IMPLEMENTATION Relate-Mail"]
    if session.state == AUTHORIZATION:
        if session.tls or session.cfg.allow_plaintext_auth:
            caps += ["USER", "SASL PLAIN"]
        if not session.tls and session.server.tls_for("pop3") is not None:
            caps.append("STLS")
    session.send("+OK Capability list follows")
    for cap in caps:
        session.send(cap)
    session.send(".")


def _plaintext_check(session: Pop3Session) -> None:
    if not (session.tls or session.cfg.allow_plaintext_auth):
        raise PopError("Log in over TLS: use STLS or port 995", "AUTH")


# RFC 2595 §4 (STLS)
async def stls(session: Pop3Session, args: list[str]) -> None:
    tls = session.server.tls_for("pop3")
    if session.tls or tls is None:
        raise PopError("TLS is not available here")
    if session.has_input():
        session.send("-ERR Data after STLS before the TLS handshake")
        session.state = UPDATE
        return
    session.send("+OK Begin TLS negotiation")
    await session.flush()
    await session.writer.start_tls(tls.context)
    session.tls = True
    session.user = None  # RFC 2595 §4: nothing said before TLS carries over


# RFC 1939 §7 (USER)
def user(session: Pop3Session, args: list[str]) -> None:
    _plaintext_check(session)
    if len(args) != 1 or not args[0]:
        raise PopError("USER takes one argument")
    session.user = args[0]
    session.send("+OK Send your key with PASS")


async def _login(session: Pop3Session, login: str, key: str) -> None:
    try:
        principal = await session.server.authenticator.authenticate(
            login, key, "pop3", client=session.client, service="pop3"
        )
    except AuthRefused:
        raise PopError("Authentication failed", "AUTH") from None
    await session.open_maildrop(principal)
    total = sum(m.size for m in session.drop)
    session.send(f"+OK Maildrop has {len(session.drop)} messages ({total} octets)")


# RFC 1939 §7 (PASS)
async def pass_(session: Pop3Session, args: list[str]) -> None:
    _plaintext_check(session)
    if session.user is None:
        raise PopError("Send USER first")
    login, session.user = session.user, None
    await _login(session, login, " ".join(args))


# RFC 5034 §4 (AUTH), RFC 4616 (PLAIN)
async def auth(session: Pop3Session, args: list[str]) -> None:
    if not args:
        session.send("+OK Supported mechanisms follow")
        session.send("PLAIN")
        session.send(".")
        return
    _plaintext_check(session)
    if args[0].upper() != "PLAIN":
        raise PopError("Unsupported mechanism")
    if len(args) > 1:
        encoded = args[1].encode()
    else:
        session.send("+ ")
        await session.flush()
        try:
            line = await session.read_line()
        except TimeoutError:
            session.send("-ERR Autologout; idle for too long")
            session.state = UPDATE
            return
        if line is None:
            raise PopError("Line too long")
        encoded = line.strip()
        if encoded == b"*":
            raise PopError("Authentication cancelled")
    try:
        response = base64.b64decode(encoded if encoded != b"=" else b"", validate=True)
    except (binascii.Error, ValueError):
        raise PopError("Invalid base64") from None
    pieces = response.split(b"\x00")
    if len(pieces) != 3:
        raise PopError("Malformed PLAIN response", "AUTH")
    authzid, login, key = (p.decode("utf-8", "replace") for p in pieces)
    if authzid and authzid.lower() != login.lower():
        key = ""  # acting as another user is not supported: refused like a wrong key
    await _login(session, login, key)


# RFC 1939 §5 (STAT)
def stat(session: Pop3Session, args: list[str]) -> None:
    live = [m for m in session.drop if not m.deleted]
    session.send(f"+OK {len(live)} {sum(m.size for m in live)}")


def _listing(session: Pop3Session, args: list[str], what: str, value: Callable[[Message], str]) -> None:
    """LIST and UIDL: one message's line, or every undeleted message's as a multi-line answer."""
    if args:
        number, msg = session.message(args[0])
        session.send(f"+OK {number} {value(msg)}")
        return
    session.send(f"+OK {what} follows")
    for number, msg in enumerate(session.drop, 1):
        if not msg.deleted:
            session.send(f"{number} {value(msg)}")
    session.send(".")


# RFC 1939 §5 (LIST)
def list_(session: Pop3Session, args: list[str]) -> None:
    _listing(session, args, "Scan listing", lambda msg: str(msg.size))


# RFC 1939 §7 (UIDL)
def uidl(session: Pop3Session, args: list[str]) -> None:
    _listing(session, args, "Unique-id listing", lambda msg: f"{session.uidvalidity}.{msg.uid}")


# RFC 1939 §5 (RETR)
def retr(session: Pop3Session, args: list[str]) -> Awaitable[None] | None:
    if len(args) != 1:
        raise PopError("RETR takes a message number")
    number, msg = session.message(args[0])
    raw = session._prefetched.pop(msg.uid, None)  # read ahead: answered without waiting
    if raw is None:
        return _retr_fetching(session, number, msg)
    _send_message(session, msg, raw)
    return None


async def _retr_fetching(session: Pop3Session, number: int, msg: Message) -> None:
    _send_message(session, msg, await session.raw(number, msg))


def _send_message(session: Pop3Session, msg: Message, raw: bytes) -> None:
    session.out(b"+OK %d octets\r\n" % msg.size, to_wire(raw, crlf=msg.crlf), b".\r\n")
    session.retrieved += 1
    session.note_retrieved(msg)


# RFC 1939 §7 (TOP)
async def top(session: Pop3Session, args: list[str]) -> None:
    if len(args) != 2 or not (args[1].isascii() and args[1].isdigit()):
        raise PopError("TOP takes a message number and a line count")
    number, msg = session.message(args[0])
    wire = to_wire(await session.raw(number, msg), crlf=msg.crlf)
    # The headers, the blank line, then at most n lines of the body (RFC 1939 §7).
    cut = -2 if wire.startswith(b"\r\n") else wire.find(b"\r\n\r\n")
    head, body = (wire, b"") if cut == -1 else (wire[: cut + 4], wire[cut + 4 :])
    body_lines = body.split(b"\r\n")[:-1]
    session.send("+OK Top of message follows")
    session.out(head + b"".join(line + b"\r\n" for line in body_lines[: int(args[1])]))
    session.send(".")


# RFC 1939 §5 (DELE)
def dele(session: Pop3Session, args: list[str]) -> None:
    if len(args) != 1:
        raise PopError("DELE takes a message number")
    number, msg = session.message(args[0])
    msg.deleted = True
    session.send(f"+OK Message {number} deleted")


# RFC 1939 §5 (NOOP)
def noop(session: Pop3Session, args: list[str]) -> None:
    session.send("+OK")


# RFC 1939 §5 (RSET)
def rset(session: Pop3Session, args: list[str]) -> None:
    for msg in session.drop:
        msg.deleted = False
    session.send(f"+OK Maildrop has {len(session.drop)} messages")


# RFC 1939 §4, §6 (QUIT, and the UPDATE state)
async def quit_(session: Pop3Session, args: list[str]) -> None:
    # Marked messages are removed next: their \Seen would be written for nothing.
    await session.write_seen(marked_too=False)
    if session.state == TRANSACTION:
        marked = [m.uid for m in session.drop if m.deleted]
        if marked:
            assert session.lock_conn is not None
            removed = await imap_messages.remove(session.lock_conn, session.inbox_id, marked)
            session.removed = len(removed)
            session.seen_pending.clear()  # all of them marked, now gone
    session.state = UPDATE
    session.send("+OK Relate Mail POP3 server signing off")


HANDLERS: dict[str, Handler] = {
    "CAPA": capa,
    "STLS": stls,
    "USER": user,
    "PASS": pass_,
    "AUTH": auth,
    "STAT": stat,
    "LIST": list_,
    "UIDL": uidl,
    "RETR": retr,
    "TOP": top,
    "DELE": dele,
    "NOOP": noop,
    "RSET": rset,
    "QUIT": quit_,
}
ALLOWED: dict[str, frozenset[str]] = {
    AUTHORIZATION: frozenset({"CAPA", "STLS", "USER", "PASS", "AUTH", "QUIT"}),
    TRANSACTION: frozenset({"CAPA", "STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "NOOP", "RSET", "QUIT"}),
    UPDATE: frozenset(),
}
