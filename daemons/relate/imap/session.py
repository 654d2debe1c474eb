"""One IMAP connection: reading commands (literals included), state, dispatch, and mailbox sync.

The loop reads a whole command (line plus literals: synchronizing ones get
``+`` first; LITERAL+ ones are read at once), parses it, checks the verb is
allowed in the current state, runs its handler, and turns every error into
its wire form here and only here (BAD, NO [code], BYE). Twenty bad commands
in a row end the session.

Mailbox sync (RFC 9051 §5.5, §7.5): a selected session learns of changes
made anywhere from ``NOTIFY relate_mail`` and asks the store for everything
above the modseq it knew (new UIDs, flag changes, expunged UIDs). It reports
them after commands, in IDLE and on NOOP; never EXPUNGE during FETCH, STORE
or SEARCH (their UID forms excepted), so message numbers never shift under a
client mid-command.
"""

from __future__ import annotations

import array
import asyncio
import bisect
import contextlib
import logging
import re
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from relate.auth import Principal
from relate.errors import MailboxGone
from relate.imap import parser
from relate.imap.errors import Bad, Bye, ImapError, No, ParseError
from relate.imap.parser import Literal, Part
from relate.imap.responses import flag_list
from relate.store import imap_messages

if TYPE_CHECKING:
    from relate.imap.server import ImapServer

log = logging.getLogger("relate.imap")

_LITERAL = re.compile(rb"(~?)\{(\d{1,20})(\+?)\}$")
# Literals bigger than this are streamed to a temporary file, SPOOL_CHUNK octets at a time.
SPOOL_ABOVE = 256 * 1024
SPOOL_CHUNK = 64 * 1024
# Seconds before IDLE tries again to report changes it could not read from the database.
SYNC_RETRY = 2.0


def _close_literals(parts: list[Part]) -> None:
    for part in parts:
        if isinstance(part, Literal):
            part.close()


NOT_AUTHENTICATED, AUTHENTICATED, SELECTED, LOGOUT = "not-authenticated", "authenticated", "selected", "logout"
# Untagged EXPUNGE is not allowed while these run (RFC 9051 §7.5.1); their UID forms are fine.
_NO_EXPUNGE = frozenset({"FETCH", "STORE", "SEARCH"})


class LineTooLong(Exception):
    def __init__(self, tag: str) -> None:
        super().__init__("line too long")
        self.tag = tag  # the overlong command's tag, so the client gets a tagged BAD


@dataclass
class Selected:
    """The selected mailbox as this client knows it."""

    mailbox_id: int
    name: str
    readonly: bool
    uidvalidity: int
    uids: array.array[int]  # message sequence number - 1 -> UID
    known_modseq: int
    max_uid: int
    own_modseqs: set[int] = field(default_factory=set)
    saved: list[int] = field(default_factory=list)  # SEARCH RETURN (SAVE) result, as UIDs
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def msn(self, uid: int) -> int | None:
        """Message sequence number of ``uid`` (binary search; UIDs ascend)."""
        lo = bisect.bisect_left(self.uids, uid)
        return lo + 1 if lo < len(self.uids) and self.uids[lo] == uid else None


Handler = Callable[["ImapSession", parser.Command], Awaitable[None]]


class ImapSession:
    def __init__(
        self, server: ImapServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tls: bool
    ) -> None:
        self.server = server
        self.cfg = server.cfg.imap
        self.reader = reader
        self.writer = writer
        self.tls = tls
        peer = writer.get_extra_info("peername")
        self.client = str(peer[0]) if peer else "-"
        self.state = NOT_AUTHENTICATED
        self.principal: Principal | None = None
        self.selected: Selected | None = None
        self.utf8 = False  # ENABLE UTF8=ACCEPT (RFC 6855), or IMAP4rev2
        self.rev2 = False  # ENABLE IMAP4rev2
        self.bad_in_a_row = 0
        self._out: list[bytes] = []
        self._out_size = 0
        self.started = time.monotonic()
        self.commands = 0
        self.waiting = False  # for the client: between commands, or in IDLE
        self.leaving = False  # shutting down: BYE once the command in progress has answered
        self._sync_failing = False  # a sync in IDLE failed for want of the database (logged once)

    # -- output ----------------------------------------------------------------

    def send(self, data: bytes) -> None:
        # Buffered until flush(): one write (one TLS record, one syscall) per batch of lines.
        self._out.append(data + b"\r\n")
        self._out_size += len(data) + 2

    def untagged(self, text: str | bytes) -> None:
        self.send(b"* " + (text.encode("utf-8") if isinstance(text, str) else text))

    def tagged(self, tag: str, status: str, text: str, code: str | None = None) -> None:
        coded = f"[{code}] " if code else ""
        self.send(f"{tag} {status} {coded}{text}".encode("utf-8", "replace"))

    async def flush(self) -> None:
        if self._out:
            self.writer.write(b"".join(self._out))
            self._out.clear()
            self._out_size = 0
        await self.writer.drain()

    # -- input -----------------------------------------------------------------

    async def readline(self) -> bytes:
        """One line without its CRLF; LineTooLong (after swallowing it) past ``imap.max_line_length``."""
        try:
            line = await self.reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            # Swallow the rest of the overlong line, then refuse it.
            start = await self.reader.readexactly(exc.consumed)
            while True:
                try:
                    await self.reader.readuntil(b"\n")
                    break
                except asyncio.LimitOverrunError as more:
                    await self.reader.readexactly(more.consumed)
            tag = start.split(b" ", 1)[0][:64].decode("ascii", "replace")
            raise LineTooLong(tag if tag and tag.isprintable() and "+" not in tag and "*" not in tag else "*") from None
        return line.rstrip(b"\r\n")

    async def read_command(self) -> list[Part] | None:
        """A whole command with its literals; None when it was answered already (a refused literal)."""
        parts: list[Part] = []
        total = 0
        while True:
            line = await self.readline()
            total += len(line)
            m = _LITERAL.search(line)
            if m is None:
                parts.append(line)
                return parts
            size = int(m.group(2))
            nonsync = m.group(3) == b"+"
            parts.append(line[: m.start()])
            if size > self.cfg.max_literal_size or total + size > self.cfg.max_literal_size + self.cfg.max_line_length:
                tag = (parts[0].split(b" ", 1)[0] if isinstance(parts[0], bytes) else b"*").decode("ascii", "replace")
                if nonsync:
                    # The client is already sending the data; the only safe answer is to hang up.
                    raise Bye(f"literal of {size} octets is over the limit of {self.cfg.max_literal_size}")
                self.tagged(tag or "*", "NO", "Literal too big", "TOOBIG")
                await self.flush()
                return None
            if not nonsync:
                self.send(b"+ Ready for literal data")
                await self.flush()
            binary = m.group(1) == b"~"
            try:
                parts.append(Literal(await self._read_literal(size), binary=binary))
            except BaseException:
                _close_literals(parts)
                raise
            total += size

    async def _read_literal(self, size: int) -> bytes | BinaryIO:
        """Up to SPOOL_ABOVE octets in memory; more are streamed to an unlinked temporary file in chunks,
        so an upload of any size up to APPENDLIMIT holds one chunk of memory while it arrives."""
        if size <= SPOOL_ABOVE:
            return await self.reader.readexactly(size)
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - the Literal owns it; the session closes it
        try:
            remaining = size
            while remaining:
                chunk = await self.reader.read(min(remaining, SPOOL_CHUNK))
                if not chunk:
                    raise asyncio.IncompleteReadError(b"", remaining)
                spool.write(chunk)  # page cache: a 64 KiB write does not stall the loop
                remaining -= len(chunk)
        except BaseException:
            spool.close()
            raise
        return spool

    # -- the loop ----------------------------------------------------------------

    async def run(self) -> None:
        greeting = "IMAP4rev2 server ready" if self.tls or self.cfg.allow_plaintext_auth else "ready, STARTTLS first"
        self.untagged(f"OK [CAPABILITY {' '.join(self.capabilities())}] Relate Mail {greeting}")
        await self.flush()
        try:
            while self.state != LOGOUT:
                self.waiting = True
                try:
                    parts = await asyncio.wait_for(self.read_command(), self.cfg.idle_timeout)
                except TimeoutError:
                    self.untagged("BYE Autologout; idle for too long")
                    break
                except LineTooLong as exc:
                    await self._bad(exc.tag, "Line too long")
                    continue
                finally:
                    self.waiting = False
                if parts is None:
                    continue
                try:
                    await self.execute(parts)
                finally:
                    _close_literals(parts)
                await self.flush()
                if self.leaving:
                    raise Bye("Server shutting down")
        except Bye as bye:
            self.untagged(f"BYE {bye.text}")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing it did half-way was committed
        finally:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.flush()

    async def _bad(self, tag: str, text: str) -> None:
        self.bad_in_a_row += 1
        if self.bad_in_a_row >= self.cfg.max_bad_commands:
            raise Bye("Too many invalid commands")
        self.tagged(tag, "BAD", text)
        await self.flush()

    async def execute(self, parts: list[Part]) -> None:
        from relate.imap.commands import ALLOWED, HANDLERS  # the handlers import this module

        self.commands += 1
        try:
            cmd = parser.parse(parts, utf8=self.utf8)
        except ParseError as exc:
            first = parts[0] if parts and isinstance(parts[0], bytes) else b""
            tag = first.split(b" ", 1)[0].decode("ascii", "replace") if first and b" " in first else "*"
            await self._bad(tag if tag and "+" not in tag else "*", f"Syntax error: {exc.text}")
            return
        if cmd.name not in ALLOWED[self.state]:
            await self._bad(cmd.tag, f"{cmd.name} is not allowed now")
            return
        self.bad_in_a_row = 0
        handler = HANDLERS[cmd.name]
        try:
            await handler(self, cmd)
        except (Bye, ConnectionError, asyncio.IncompleteReadError):
            raise  # run() handles these: BYE, or a client that went away
        except LineTooLong:
            self.tagged(cmd.tag, "BAD", "Line too long")
        except MailboxGone:
            # The mailbox went away under the command (deleted by another session).
            await self.sync()
            self.tagged(cmd.tag, "NO", "The mailbox no longer exists", "NONEXISTENT")
        except ImapError as exc:
            await self.sync_after(cmd)
            self.tagged(cmd.tag, exc.kind, exc.text, exc.code)
            if exc.kind == "BAD":
                self.bad_in_a_row += 1
        except (OSError, TimeoutError) as exc:
            if isinstance(exc, ConnectionError):
                raise
            log.warning("imap-tempfail client=%s command=%s error=%s", self.client, cmd.name, type(exc).__name__)
            self.tagged(cmd.tag, "NO", "Temporary server failure, try again", "UNAVAILABLE")
        except Exception as exc:  # noqa: BLE001 - one place turns any failure into NO, and logs it
            log.error("imap-error client=%s command=%s error=%s: %s", self.client, cmd.name, type(exc).__name__, exc)
            self.tagged(cmd.tag, "NO", "Server failure", "SERVERBUG")

    # -- capabilities ------------------------------------------------------------

    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev1", "IMAP4rev2"]
        plaintext_ok = self.tls or self.cfg.allow_plaintext_auth
        if self.state == NOT_AUTHENTICATED:
            if not self.tls and self.server.has_tls("imap"):
                caps.append("STARTTLS")
            caps += ["AUTH=PLAIN", "SASL-IR"] if plaintext_ok else ["LOGINDISABLED"]
        caps += [
            "ENABLE", "IDLE", "NAMESPACE", "UNSELECT", "UIDPLUS", "MOVE", "SPECIAL-USE", "CHILDREN",
            "LIST-EXTENDED", "LIST-STATUS", "LITERAL+", "LITERAL-", "ID", "ESEARCH", "SEARCHRES", "STATUS=SIZE",
            f"APPENDLIMIT={self.cfg.max_literal_size}", "UTF8=ACCEPT",
        ]  # fmt: skip
        return caps

    # -- the selected mailbox ------------------------------------------------------

    def require_selected(self) -> Selected:
        if self.selected is None:
            raise Bad("No mailbox selected")
        return self.selected

    async def sync(self, *, allow_expunge: bool = True) -> None:
        """Report what changed in the selected mailbox since the client last heard (RFC 9051 §7.5)."""
        sel = self.selected
        if sel is None:
            return
        sel.changed.clear()
        async with self.server.pool.acquire() as conn:
            delta = await imap_messages.changes(conn, sel.mailbox_id, sel.known_modseq, sel.max_uid)
        self._sync_failing = False
        if delta["gone"]:
            self.server.hub.unwatch(self, sel.mailbox_id)
            self.selected = None
            self.state = AUTHENTICATED
            raise Bye("The selected mailbox was deleted")
        expunged = [u for u in delta["expunged"] if sel.msn(u) is not None]
        if expunged and not allow_expunge:
            # Report the rest now, the expunges (and anything after them) at the next chance.
            sel.changed.set()
        else:
            for uid in expunged:
                msn = sel.msn(uid)
                if msn is not None:
                    del sel.uids[msn - 1]
                    self.untagged(f"{msn} EXPUNGE")
        if delta["new"]:
            sel.uids.extend(delta["new"])
            sel.max_uid = max(sel.max_uid, delta["new"][-1])
            self.untagged(f"{len(sel.uids)} EXISTS")
        for uid, flags, modseq in delta["flags"]:
            if modseq in sel.own_modseqs:
                continue
            msn = sel.msn(uid)
            if msn is not None:
                self.untagged(f"{msn} FETCH (UID {uid} FLAGS ".encode() + flag_list(flags) + b")")
        if not (expunged and not allow_expunge):
            sel.known_modseq = max(sel.known_modseq, delta["modseq"])
            sel.own_modseqs.clear()

    async def sync_after(self, cmd: parser.Command) -> None:
        """After a command: report changes if a notification said there are any.

        NOOP, IDLE, EXPUNGE and friends call :meth:`sync` directly, which always
        asks the database, so a lost notification delays news only until then.
        """
        if self.selected is None or not self.selected.changed.is_set():
            return
        uid = getattr(cmd, "uid", False)
        await self.sync(allow_expunge=uid or cmd.name not in _NO_EXPUNGE)

    def log_summary(self) -> None:
        log.info(
            "imap-session client=%s tls=%s user=%s commands=%d seconds=%.1f",
            self.client,
            "yes" if self.tls else "no",
            self.principal.address if self.principal else "-",
            self.commands,
            time.monotonic() - self.started,
        )

    def check_login_allowed(self) -> None:
        if not (self.tls or self.cfg.allow_plaintext_auth):
            raise No("Log in over TLS: use STARTTLS or port 993", "PRIVACYREQUIRED")

    def goodbye(self) -> None:
        """At shutdown: BYE at once to a session waiting for its client (IDLE included); else once
        the command in progress has answered, so a BYE never lands inside another response."""
        if not self.waiting:
            self.leaving = True
            return
        self.untagged("BYE Server shutting down")
        self.writer.write(b"".join(self._out))  # not flush(): this runs outside the session's task
        self._out.clear()
        self.writer.close()

    def sync_failed(self, exc: BaseException) -> None:
        """A sync in IDLE could not reach the database: one log line per outage, and another try soon."""
        sel = self.selected
        if sel is None:
            return
        if not self._sync_failing:
            log.warning("imap-sync-failed client=%s error=%s; retrying", self.client, type(exc).__name__)
            self._sync_failing = True
        asyncio.get_running_loop().call_later(SYNC_RETRY, self.mark_selected_changed, sel.mailbox_id)

    def mark_selected_changed(self, mailbox_id: int) -> None:
        sel = self.selected
        if sel is not None and sel.mailbox_id == mailbox_id:
            sel.changed.set()


__all__ = ["AUTHENTICATED", "LOGOUT", "NOT_AUTHENTICATED", "SELECTED", "ImapSession", "Selected"]
