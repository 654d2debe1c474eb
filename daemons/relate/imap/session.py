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
client mid-command. The session's own changes (STORE, APPEND, EXPUNGE, FETCH's \\Seen) need no such
question when they took the modseq right after the one it knew: nothing else can lie between, so it
takes them into its view itself (``own_change``), and their notifications wake nothing. Once the
client has enabled QRESYNC (RFC 7162 §3.2),
expunges are reported as ``VANISHED uids`` instead; once it has used
CONDSTORE, reported flag changes carry their MODSEQ. Searches the client
keeps up to date (RFC 5267 UPDATE, ``Selected.updates``) hear of the same
changes there: REMOVEFROM before the EXPUNGE (or VANISHED) responses, ADDTO
after EXISTS; while any is kept, the session looks after every command, so
its own changes are reported before the tagged OK.

Under NOTIFY (RFC 5465, imap/notify.py) news are also written between
commands: the session waits for the next command's first line and for news
at once, and writes news only while no command is being read or run; the
selected mailbox is then reported as NOTIFY asks (at once, with expunges
held, or not at all).

\\Recent (RFC 3501 §2.3.2) is for IMAP4rev1 sessions only: a session that
SELECTs a mailbox takes, as recent, the messages no session has taken yet, and
while it has the mailbox selected it takes the new ones when it hears of them
(``* n EXISTS`` then ``* n RECENT``); EXAMINE shows them without taking them.
The store hands each message to exactly one session, on any host
(``imap_messages.claim_recent``). IMAP4rev2 has no \\Recent: such sessions
neither show nor take it.
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
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

import asyncpg

from relate.auth import Authenticator, Principal
from relate.config import Config
from relate.errors import MailboxGone
from relate.imap import limits, parser
from relate.imap.errors import Bad, Bye, ImapError, No, ParseError
from relate.imap.parser import Literal, Part
from relate.imap.views import MailboxViews
from relate.mail.imapwire import Piece, flag_list
from relate.runtime import metrics
from relate.runtime.budget import MemoryBudget
from relate.runtime.streams import pending_input
from relate.runtime.tls import ReloadableTLS
from relate.store import db
from relate.store.changes import MailChange

log = logging.getLogger("relate.imap")

_LITERAL = re.compile(rb"(~?)\{(\d{1,20})(\+?)\}$")
# Output pieces of this size or more are written on their own rather than joined with the rest,
# in slices of this size.
_WRITE_ALONE = 256 * 1024
# Literals bigger than this are streamed to a temporary file, SPOOL_CHUNK octets at a time.
SPOOL_ABOVE = 256 * 1024
SPOOL_CHUNK = 64 * 1024
# The change hub writes news to a session in IDLE itself only while less than this waits for the client.
_PUSH_BUFFER = 64 * 1024


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


# A tag as the grammar allows it (RFC 9051 §9: astring characters but "+"), to answer a command
# that could not be parsed; anything else is answered untagged.
_TAG = re.compile(rb"[\x21\x23\x24\x26\x27\x2c-\x5b\x5d-\x7a\x7c-\x7e]{1,64}")
# Enough of a line's end to hold a literal announcement (~{20 digits+}).
_TAIL = 32
# UID runs per VANISHED line (RFC 7162 §4 asks clients to take lines of 8192 octets; a run is at most 21).
VANISHED_RUNS = 300


def uid_runs(ascending: Sequence[int]) -> list[tuple[int, int]]:
    """Ascending numbers as runs of consecutive ones: [1, 2, 3, 7] -> [(1, 3), (7, 7)]."""
    runs: list[tuple[int, int]] = []
    for n in ascending:
        if runs and n == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs


def _tag_of(line: bytes) -> str:
    """The tag a line starts with, or "*" when it does not start with one followed by a space."""
    tag, space, _ = line.partition(b" ")
    return tag.decode("ascii") if space and _TAG.fullmatch(tag) else "*"


def transport_reason(exc: BaseException) -> str:
    """A short name for a transport failure: the OpenSSL reason (WRONG_VERSION_NUMBER) or the error's type."""
    return str(getattr(exc, "reason", None) or type(exc).__name__)


def _where(exc: BaseException) -> str:
    """file:line of the innermost frame an exception came from."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else "-"


# What a handler meets when it cannot get at the database (store/db.py says which errors those are).
DB_UNAVAILABLE = db.UNAVAILABLE


def describe(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters), for a one-line log."""
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _verb_of(line: bytes) -> bytes:
    words = line.split(b" ", 2)
    return words[1].upper() if len(words) > 1 else b""


class Signal:
    """asyncio.Event's set, clear, is_set and wait, and :meth:`waiter`: a plain future, done once set.

    A session in IDLE (or under NOTIFY) waits on it beside the client's next line; a future costs
    less to make and to wake than the task that would wrap ``Event.wait()``, which counts when one
    delivery wakes 10,000 sessions at once.
    """

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def clear(self) -> None:
        self._set = False

    def waiter(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._set:
            fut.set_result(None)
            return fut
        if len(self._waiters) >= 8:  # waiters given up on (cancelled) go, so the list stays short
            self._waiters = [f for f in self._waiters if not f.done()]
        self._waiters.append(fut)
        return fut

    async def wait(self) -> None:
        await self.waiter()


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
    changed: Signal = field(default_factory=Signal)
    updates: ResultUpdates | None = None  # searches kept up to date (RFC 5267 UPDATE), imap/contexts.py
    # A VANISHED was sent since the client last heard HIGHESTMODSEQ: no FETCH carries an expunge's
    # modseq, so NOOP, IDLE and EXPUNGE tell it in their tagged OK (QRESYNC only).
    vanished_unacknowledged: bool = False
    # The flags the client has been told of in FLAGS (in that order), keywords included.
    flags: dict[str, None] = field(default_factory=dict)
    # \\Recent (IMAP4rev1 only): the UID ranges lo < uid <= hi recent in this session, ascending and disjoint,
    # and whether the session takes new mail as recent when it hears of it (read-write, IMAP4rev1).
    recent: list[tuple[int, int]] = field(default_factory=list)
    takes_recent: bool = False
    # Expunges (and, with CONDSTORE, flag changes) heard of but not reportable yet: the next command that
    # allows them reports them (sync_after), whether or not another notification comes meanwhile.
    held: bool = False
    # What set ``changed`` since the last sync asked: changes to messages up to this modseq, and whether
    # anything else (a change of unknown modseq, a reconnected feed, a failed report). When all of it is
    # the session's own change, known already, own_change() clears ``changed`` again.
    heard_modseq: int = 0
    heard_other: bool = False

    def msn(self, uid: int) -> int | None:
        """Message sequence number of ``uid`` (binary search; UIDs ascend)."""
        lo = bisect.bisect_left(self.uids, uid)
        return lo + 1 if lo < len(self.uids) and self.uids[lo] == uid else None

    def add_recent(self, lo: int, hi: int) -> None:
        """Messages lo < uid <= hi are recent in this session (claims only go up: ranges stay ascending)."""
        if hi <= lo:
            return
        if self.recent and self.recent[-1][1] >= lo:
            self.recent[-1] = (self.recent[-1][0], max(hi, self.recent[-1][1]))
        else:
            self.recent.append((lo, hi))

    def is_recent(self, uid: int) -> bool:
        spans = self.recent
        if len(spans) <= 1:  # the usual case (FETCH asks once per message): no search
            return bool(spans) and spans[0][0] < uid <= spans[0][1]
        i = bisect.bisect_left(spans, uid, key=_low) - 1  # the last range starting below uid
        return i >= 0 and uid <= spans[i][1]

    def recent_count(self) -> int:
        """How many of the messages this client knows are recent in this session (RECENT, RFC 3501 §7.3.2)."""
        return sum(bisect.bisect_right(self.uids, hi) - bisect.bisect_right(self.uids, lo) for lo, hi in self.recent)

    def flags_of(self, uid: int, flags: Iterable[str]) -> list[str]:
        """A message's flags as this session shows them: \\Recent first when it is recent here."""
        return ["\\Recent", *flags] if self.recent and self.is_recent(uid) else list(flags)


def _low(span: tuple[int, int]) -> int:
    return span[0]


class UpdatePlan(Protocol):
    """What one sync tells the client of its kept-up-to-date searches (imap/contexts.py's Plan)."""

    def removals(self, sel: Selected) -> list[bytes]: ...

    def additions(self, sel: Selected) -> list[bytes]: ...


class ResultUpdates(Protocol):
    """The searches a client asked to keep up to date (RFC 5267 UPDATE): imap/contexts.py's Updates."""

    def __bool__(self) -> bool: ...

    async def prepare(
        self,
        conn: Any,
        sel: Selected,
        *,
        new: Sequence[int],
        flagged: Sequence[int],
        expunged: Sequence[int],
        deferred: bool,
    ) -> UpdatePlan: ...


Handler = Callable[["ImapSession", Any], Awaitable[None]]


@dataclass(frozen=True)
class Dispatch:
    """The command table (imap/commands.py): each verb's handler, and the verbs each state allows."""

    handlers: Mapping[str, Handler]
    allowed: Mapping[str, frozenset[str]]


class Watchers(Protocol):
    """Who is told of changes to a selected mailbox (imap/server.py's ChangeHub)."""

    def watch(self, session: ImapSession, mailbox_id: int) -> None: ...

    def unwatch(self, session: ImapSession, mailbox_id: int) -> None: ...

    def watch_user(self, session: ImapSession, user_id: int) -> None: ...

    def unwatch_user(self, session: ImapSession, user_id: int) -> None: ...

    async def changes(self, mailbox_id: int, since_modseq: int, max_uid: int, *, share: bool) -> dict[str, Any]: ...

    async def claim_recent(self, mailbox_id: int, upto: int | None) -> tuple[int, int] | None: ...

    def claimed_recent(self, mailbox_id: int, uid: int) -> None: ...


# How NOTIFY (imap/notify.py) has the selected mailbox reported: as without NOTIFY (no NOTIFY in force), at once
# between commands (SELECTED), at once but expunges only at a command that allows them (SELECTED-DELAYED), or
# not at all (NOTIFY without a SELECTED group, or NOTIFY NONE: RFC 5465 §3.1, as Dovecot does).
BASE, IMMEDIATE, DELAYED, SILENT = "base", "immediate", "delayed", "silent"
# Seconds between attempts to report news between commands while the database is out of reach.
NEWS_RETRY = 2.0


class Notifications(Protocol):
    """What a session asks of its NOTIFY settings (imap/notify.py's Notifier)."""

    wakeup: asyncio.Event  # set when something is to be reported

    def selected_mode(self) -> str: ...

    def changed(self, change: MailChange | None) -> None: ...

    async def deliver(self, session: ImapSession) -> None: ...

    async def new_messages(self, session: ImapSession, uids: Sequence[int]) -> None: ...


class Host(Protocol):
    """What a session needs of the server that accepted it (imap/server.py's ImapServer)."""

    cfg: Config
    pool: asyncpg.Pool
    authenticator: Authenticator
    memory: MemoryBudget
    commands: Dispatch
    views: MailboxViews

    @property
    def hub(self) -> Watchers: ...

    def has_tls(self, role: str) -> bool: ...

    def tls_for(self, role: str) -> ReloadableTLS | None: ...

    def admit_user(self, session: ImapSession, user_id: int) -> str | None: ...


class ImapSession:
    def __init__(self, server: Host, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tls: bool) -> None:
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
        # STATUS counts over messages by mailbox name: (mailbox id, modseq they were made at, the counts).
        self.status_counts: dict[str, tuple[int, int, dict[str, int]]] = {}
        self.utf8 = False  # ENABLE UTF8=ACCEPT (RFC 6855), or IMAP4rev2
        self.rev2 = False  # ENABLE IMAP4rev2
        self.condstore = False  # after a CONDSTORE enabling command (RFC 7162 §3.1)
        self.qresync = False  # ENABLE QRESYNC (RFC 7162 §3.2.3): VANISHED instead of EXPUNGE
        self.notifier: Notifications | None = None  # NOTIFY in force (RFC 5465)
        self.compressed = False  # COMPRESS DEFLATE (RFC 4978, imap/compress.py) in force
        self._news_warned = False  # a news report failed for want of the database (logged once)
        self.bad_in_a_row = 0
        self._out: list[Piece] = []
        self._big_piece = False  # a piece of _WRITE_ALONE octets or more is buffered
        self._out_size = 0
        self.started = time.monotonic()
        self.commands = 0
        self.waiting = False  # for the client: between commands, or in IDLE
        self.idling = False  # in IDLE, waiting (the change hub may report news itself: pushable())
        self.leaving = False  # shutting down: BYE once the command in progress has answered
        self._rest_of_line = False  # an overlong line was refused: drop the rest of it before the next read
        self.end = ""  # how the session ended, for its log line: logout, bye, client-gone, tls-failed:REASON, ...
        self._tail = b""  # the last octets of that line read so far
        # The wait for the next command ends at this loop time (run(), _idle_until): the session's one timer.
        self._task: asyncio.Task[Any] | None = None
        self._idle_deadline = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_expired = False  # the timer cancelled the wait (BYE), not someone stopping the session
        self._reading = False  # waiting for the next command (the timer may end the wait)

    # -- output ----------------------------------------------------------------

    def send(self, data: bytes) -> None:
        # Buffered until flush(): one write (one TLS record, one syscall) per batch of lines.
        self._out.append(data + b"\r\n")
        self._out_size += len(data) + 2

    def send_pieces(self, pieces: list[Piece]) -> None:
        """One response line given as pieces (a FETCH with literals): buffered as they are, never joined."""
        self._out += pieces
        self._out.append(b"\r\n")
        sizes = [len(p) for p in pieces]
        self._out_size += sum(sizes) + 2
        self._big_piece = self._big_piece or max(sizes, default=0) >= _WRITE_ALONE

    @property
    def pending(self) -> int:
        """Octets buffered for the client and not yet written."""
        return self._out_size

    def untagged(self, text: str | bytes) -> None:
        self.send(b"* " + (text.encode("utf-8") if isinstance(text, str) else text))

    def tagged(self, tag: str, status: str, text: str, code: str | None = None) -> None:
        metrics.reply("imap", status)
        coded = f"[{code}] " if code else ""
        self.send(f"{tag} {status} {coded}{text}".encode("utf-8", "replace"))

    async def flush(self) -> None:
        # Compressing costs CPU per octet: more than a slice at once goes the slow way, a slice at a time.
        if self._out and not self._big_piece and not (self.compressed and self._out_size > _WRITE_ALONE):
            self.writer.write(b"".join(self._out))  # the usual case: one write per batch of lines
            self._out.clear()
            self._out_size = 0
        elif self._out:
            out, self._out, self._out_size, self._big_piece = self._out, [], 0, False
            # Small pieces go out joined (one write); a big one (a message body) uncopied, a slice at a time
            # with the transport drained in between, so encrypting it never holds the loop for long.
            run: list[Piece] = []
            run_size = 0
            for piece in out:
                if len(piece) < _WRITE_ALONE:
                    run.append(piece)
                    run_size += len(piece)
                    if run_size >= _WRITE_ALONE:  # many small pieces are a big one too
                        self.writer.write(b"".join(run))
                        run, run_size = [], 0
                        await self._drain_slice()
                    continue
                if run:
                    self.writer.write(b"".join(run))
                    run, run_size = [], 0
                view = memoryview(piece)
                for start in range(0, len(view), _WRITE_ALONE):
                    self.writer.write(view[start : start + _WRITE_ALONE])
                    await self._drain_slice()
            if run:
                self.writer.write(b"".join(run))
        await self.writer.drain()

    async def _drain_slice(self) -> None:
        """After one slice of a big response: wait for the socket, and let other sessions run even when it
        had room (drain() returns at once then, and a 20 MB body that DEFLATE shrinks to little would
        otherwise be compressed and encrypted in one go)."""
        await self.writer.drain()
        await asyncio.sleep(0)

    # -- input -----------------------------------------------------------------

    async def readline(self) -> bytes:
        """One line without its CRLF.

        Past ``imap.max_line_length`` this raises LineTooLong as soon as that much
        has arrived, so the client hears BAD at once; the rest of the line is read
        and dropped a buffer at a time (never held) before the next line is read.
        """
        if self._rest_of_line:
            await self._drop_rest(self._tail, mid_line=True)
            self._rest_of_line, self._tail = False, b""
        try:
            line = await self.reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            head = await self.reader.readexactly(exc.consumed)
            self._rest_of_line = True
            self._tail = head[-_TAIL:]
            raise LineTooLong(_tag_of(head)) from None
        return line.rstrip(b"\r\n")

    async def _drop_rest(self, tail: bytes, *, mid_line: bool) -> None:
        """Drop the rest of a refused command as it arrives, never holding more than a buffer of it.

        ``tail`` is the end of what was read of the current line; ``mid_line``, whether its
        CRLF is still to come. A line that ends in a LITERAL+ announcement is followed by the
        literal's data and more command text, which the client sends without waiting: those
        go too. A synchronizing literal is never sent, since the client waits for ``+``.
        """
        skipped = 0
        while True:
            while mid_line:
                try:
                    chunk = await self.reader.readuntil(b"\n")
                    mid_line = False
                except asyncio.LimitOverrunError as exc:
                    chunk = await self.reader.readexactly(exc.consumed)
                tail = (tail + chunk)[-_TAIL:]
            m = _LITERAL.search(tail.rstrip(b"\r\n"))
            if m is None or m.group(3) != b"+":
                return
            size = int(m.group(2))
            skipped += size
            if skipped > self.cfg.max_literal_size:
                raise Bye("Literal too big")
            await self._skip(size)
            tail, mid_line = b"", True

    async def _skip(self, size: int) -> None:
        """Read and drop ``size`` octets, SPOOL_CHUNK at a time."""
        while size:
            chunk = await self.reader.read(min(size, SPOOL_CHUNK))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", size)
            size -= len(chunk)

    async def read_command(self, first: bytes | None = None) -> list[Part] | None:
        """A whole command with its literals; None when it was refused (and answered) while being read.

        The command's lines and literals together may hold at most ``imap.max_line_length``
        octets, and at most MAX_LITERALS literals; only an APPEND's message literals (and
        CATENATE text) may be bigger, each up to ``imap.max_literal_size`` and together up to
        ``imap.max_append_size``. Those alone are spooled to disk when large, and at most
        SPOOL_ABOVE octets of them are held in memory.
        """
        parts: list[Part] = []
        tag = "*"
        append = False
        used = 0  # octets of lines and literals, the APPEND messages aside
        literals = 0
        messages = 0  # octets of APPEND message literals (those past the line budget)
        held = 0  # of those, octets kept in memory rather than spooled
        limit, biggest = self.cfg.max_line_length, self.cfg.max_literal_size
        total = max(biggest, self.cfg.max_append_size)
        try:
            while True:
                if first is not None:  # read already, while news were reported (NOTIFY)
                    line, first = first, None
                else:
                    try:
                        line = await self.readline()
                    except LineTooLong as exc:
                        raise LineTooLong(tag if parts else exc.tag) from None
                if not parts:
                    tag = _tag_of(line)
                    append = _verb_of(line) == b"APPEND"
                used += len(line)
                m = _LITERAL.search(line)
                if m is None:
                    if used > limit:
                        raise LineTooLong(tag)
                    parts.append(line)
                    return parts
                parts.append(line[: m.start()])
                size = int(m.group(2))
                nonsync = m.group(3) == b"+"
                literals += 1
                big = False
                refusal: tuple[str, str, str | None] | None = None
                if size > biggest and nonsync:
                    # The client is already sending the data; the only safe answer is to hang up.
                    raise Bye(f"literal of {size} octets is over the limit of {biggest}")
                if literals > limits.MAX_LITERALS:
                    refusal = ("BAD", f"Too many literals in one command (at most {limits.MAX_LITERALS})", None)
                elif append and size > biggest:
                    refusal = ("NO", "Literal too big", "TOOBIG")  # APPENDLIMIT says how big it may be
                elif used + size <= limit:
                    pass
                elif append and used <= limit and messages + size <= total:
                    big = True
                    messages += size
                else:
                    refusal = ("NO", f"Literal too big (at most {limit} octets outside an APPEND message)", "TOOBIG")
                if refusal is not None:
                    if nonsync:  # the client is sending the data and the rest of the command: drop them
                        await self._drop_rest(line[-_TAIL:], mid_line=False)
                    kind, text, code = refusal
                    if kind == "BAD":
                        await self._bad(tag, text)
                    else:
                        self.tagged(tag, kind, text, code)
                        await self.flush()
                    _close_literals(parts)
                    return None
                if not nonsync:
                    self.send(b"+ Ready for literal data")
                    await self.flush()
                if big:
                    content = await self._read_literal(size, to_disk=held + size > SPOOL_ABOVE)
                    held += size if isinstance(content, bytes) else 0
                else:
                    used += size
                    content = await self.reader.readexactly(size)
                parts.append(Literal(content, binary=m.group(1) == b"~", size=size))
        except BaseException:
            _close_literals(parts)
            raise

    async def _read_literal(self, size: int, *, to_disk: bool) -> bytes | BinaryIO:
        """In memory, or (``to_disk``) streamed to an unlinked temporary file in chunks, so an upload of
        any size up to APPENDLIMIT holds one chunk of memory while it arrives."""
        if not to_disk:
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
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        try:
            while self.state != LOGOUT:
                self.waiting = True
                self._idle_until(loop.time() + self.cfg.idle_timeout)
                try:
                    parts = await self._next_command()
                except asyncio.CancelledError:
                    if not self._idle_expired or task.uncancel() > 0:
                        raise  # not (only) the idle timer's: the session is being stopped
                    self.untagged("BYE Autologout; idle for too long")
                    break
                except LineTooLong as exc:
                    await self._bad(exc.tag, f"Command line too long (at most {self.cfg.max_line_length} octets)")
                    continue
                finally:
                    self.waiting = False
                    self._reading = False
                if parts is None:
                    continue
                try:
                    await self.execute(parts)
                finally:
                    _close_literals(parts)
                if not self.more_pipelined() or self.pending >= _WRITE_ALONE:
                    await self.flush()
                if self.leaving:
                    raise Bye("Server shutting down")
            self.end = self.end or ("logout" if self.state == LOGOUT else "idle-timeout")
        except Bye as bye:
            self.end = self.end or "bye"
            self.untagged(f"BYE {bye.text}")
        except (ConnectionError, asyncio.IncompleteReadError):
            self.end = self.end or "client-gone"  # nothing it did half-way was committed
        except OSError as exc:
            # ssl.SSLError (bytes that are not TLS records) and other socket failures: the connection is
            # unusable, and the client's doing. The session's log line says so; no traceback.
            self.end = self.end or f"network-error:{transport_reason(exc)}"
        except Exception as exc:  # noqa: BLE001 - a bug: one line that says where, never a dead task's traceback
            self.end = f"server-error:{type(exc).__name__}"
            log.error(
                "imap-session-error client=%s error=%s: %s at=%s", self.client, type(exc).__name__, exc, _where(exc)
            )
        finally:
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None
            with contextlib.suppress(OSError, RuntimeError):
                await self.flush()

    def _idle_until(self, deadline: float) -> None:
        """The wait for the next command ends at ``deadline`` (loop time) with BYE, unless a command comes.

        One timer per session, not one per command (asyncio.timeout sets a timer and cancels it around
        every read, which a busy session pays on each command): the deadline moves with each command,
        and the timer, when it fires before it, is set again for it. Only a timer set for later than
        the new deadline (a shorter idle_timeout) is set again at once.
        """
        self._idle_deadline = deadline
        self._idle_expired = False
        self._reading = True
        timer = self._idle_timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._idle_timer = asyncio.get_running_loop().call_at(deadline, self._idle_check)

    def _idle_check(self) -> None:
        """The idle timer fired: past the deadline while waiting for a command, the wait is cancelled
        (run() answers BYE); else the timer is set for the deadline, or left unset until the next wait."""
        self._idle_timer = None
        if not self._reading or self._task is None:
            return  # a command is running: the next wait for one sets the timer again
        loop = asyncio.get_running_loop()
        if loop.time() < self._idle_deadline:
            self._idle_timer = loop.call_at(self._idle_deadline, self._idle_check)
            return
        self._idle_expired = True
        self._task.cancel()

    def more_pipelined(self) -> bool:
        """Whether the client has sent the next command line already (pipelining, RFC 9051 §5.5).

        Then the answer to this one waits for the next one's, up to _WRITE_ALONE octets, and both go
        out in one write: the client is not waiting on it before it sends more, and a connection
        carrying a pipelining client (imaptest, mbsync, mutt) costs a syscall per batch, not per
        command. Any answer goes out at once when no whole line is waiting, and before the session
        waits for anything of the client's (a literal's ``+``, IDLE's ``+``, STARTTLS).
        """
        # Not while the rest of a refused overlong line is still to be dropped: its CRLF is no command.
        return not self._rest_of_line and b"\n" in pending_input(self.reader)

    async def _next_command(self) -> list[Part] | None:
        """The next command; under NOTIFY, news are reported (RFC 5465 §3) until its first line has come.

        The first line is read by a task of its own, never cancelled while news go out, so nothing the
        client sends is lost; once it is in, the rest of the command is read as always, without news.
        """
        if self.notifier is None:
            return await self.read_command()
        line = asyncio.ensure_future(self.readline())
        try:
            while not line.done():
                self.waiting = False  # a shutdown now says BYE after this report, not inside it
                try:
                    await self.report_news(idle=False)
                except DB_UNAVAILABLE as exc:
                    if isinstance(exc, OSError) and self.writer.is_closing():
                        raise
                    if not self._news_warned:
                        log.warning("imap-tempfail client=%s command=NOTIFY error=%s", self.client, describe(exc))
                        self._news_warned = True
                    await asyncio.wait([line], timeout=NEWS_RETRY)
                    continue
                finally:
                    self.waiting = True
                if self.leaving:
                    raise Bye("Server shutting down")
                news = [asyncio.ensure_future(w) for w in self.news_waiters(idle=False)]
                try:
                    await asyncio.wait([line, *news], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in news:
                        waiter.cancel()
            first = line.result()
        finally:
            if not line.done():
                line.cancel()
        return await self.read_command(first)

    def selected_mode(self) -> str:
        return BASE if self.notifier is None else self.notifier.selected_mode()

    def reports_selected(self) -> bool:
        """Whether changes to the selected mailbox are reported at all (not under NOTIFY without SELECTED)."""
        return self.selected_mode() != SILENT

    def news_waiters(self, *, idle: bool) -> list[Awaitable[Any]]:
        """What to wait for between commands (under NOTIFY) or in IDLE: the selected mailbox's changes when
        they are reported there, and NOTIFY's other news."""
        out: list[Awaitable[Any]] = []
        sel, mode = self.selected, self.selected_mode()
        if sel is not None and (mode in (IMMEDIATE, DELAYED) or (idle and mode == BASE)):
            out.append(sel.changed.waiter())
        if self.notifier is not None:
            out.append(self.notifier.wakeup.wait())
        return out

    async def report_news(self, *, idle: bool) -> None:
        """Report what :meth:`news_waiters` waited for, and write it out. In IDLE, or under SELECTED,
        expunges too; under SELECTED-DELAYED they wait for a command that allows them (RFC 5465 §6)."""
        sel, mode = self.selected, self.selected_mode()
        if sel is not None and sel.changed.is_set() and mode != SILENT:
            await self.sync(allow_expunge=idle or mode != DELAYED, share=True)
        if self.notifier is not None:
            await self.notifier.deliver(self)
        self._news_warned = False
        await self.flush()

    def compress_failed(self, reason: str) -> None:
        """The client's input is not DEFLATE (imap/compress.py closes the connection): the session's log says so."""
        self.end = "network-error:deflate"

    def mail_changed(self, change: MailChange | None) -> None:
        """A change to one of the user's mailboxes (None: any may have changed), for NOTIFY."""
        if self.notifier is not None:
            self.notifier.changed(change)

    async def _bad(self, tag: str, text: str) -> None:
        self.bad_in_a_row += 1
        if self.bad_in_a_row >= self.cfg.max_bad_commands:
            raise Bye("Too many invalid commands")
        self.tagged(tag, "BAD", text)
        await self.flush()

    async def execute(self, parts: list[Part]) -> None:

        self.commands += 1
        try:
            cmd = parser.parse(parts, utf8=self.utf8)
        except ParseError as exc:
            metrics.command("imap", "invalid")
            first = parts[0] if parts and isinstance(parts[0], bytes) else b""
            await self._bad(_tag_of(first), f"Syntax error: {exc.text}")
            return
        metrics.command("imap", cmd.name)
        if cmd.name not in self.server.commands.allowed[self.state]:
            await self._bad(cmd.tag, f"{cmd.name} is not allowed now")
            return
        self.bad_in_a_row = 0
        try:
            await self._handle(self.server.commands.handlers[cmd.name], cmd)
        except (Bye, asyncio.IncompleteReadError):
            raise  # run() handles these: BYE, or a client that went away
        except LineTooLong:
            self.tagged(cmd.tag, "BAD", f"Line too long (at most {self.cfg.max_line_length} octets)")
        except Exception as exc:  # one place turns any failure into NO, and logs it in one line
            if isinstance(exc, OSError) and self.writer.is_closing():
                raise  # the client's connection broke, not the database's: run() ends the session
            if isinstance(exc, DB_UNAVAILABLE):
                # No free pooled connection within database.acquire_timeout, or the database is down or
                # restarting: a temporary failure the client may retry, never a dropped connection.
                log.warning("imap-tempfail client=%s command=%s error=%s", self.client, cmd.name, describe(exc))
                self.tagged(cmd.tag, "NO", "Temporary server failure, try again", "UNAVAILABLE")
            else:
                log.error(
                    "imap-error client=%s command=%s error=%s at=%s", self.client, cmd.name, describe(exc), _where(exc)
                )
                self.tagged(cmd.tag, "NO", "Server failure", "SERVERBUG")

    async def _handle(self, handler: Handler, cmd: parser.Command) -> None:
        """Run a handler; answer the IMAP errors it raises (after reporting mailbox changes, as any answer does)."""
        try:
            await handler(self, cmd)
        except Bye:
            raise
        except MailboxGone:
            # The mailbox went away under the command (deleted by another session).
            await self.sync()
            self.tagged(cmd.tag, "NO", "The mailbox no longer exists", "NONEXISTENT")
        except ImapError as exc:
            # The refusal stands even if the database cannot say what changed meanwhile (sync() keeps
            # the news pending for the next command then).
            with contextlib.suppress(*DB_UNAVAILABLE):
                await self.sync_after(cmd)
            self.tagged(cmd.tag, exc.kind, exc.text, exc.code)
            if exc.kind == "BAD":
                self.bad_in_a_row += 1

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
            f"APPENDLIMIT={self.cfg.max_literal_size}", "UTF8=ACCEPT", "CONDSTORE", "QRESYNC",
            "SORT", "SORT=DISPLAY", "ESORT", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES", "THREAD=REFS",
            "CONTEXT=SEARCH", "CONTEXT=SORT",
        ]  # fmt: skip
        caps += ["QUOTA", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE"]  # RFC 9208; no QUOTASET: SETQUOTA is refused
        caps += self.extension_capabilities()
        return caps

    def extension_capabilities(self) -> list[str]:
        """The extensions of imap/append.py, preview.py, notify.py and compress.py, each listed once complete."""
        caps = ["BINARY", "MULTIAPPEND", "CATENATE", "URL-PARTIAL", "WITHIN", "SAVEDATE", "PREVIEW", "NOTIFY"]
        return caps + (["COMPRESS=DEFLATE"] if self.state != NOT_AUTHENTICATED else [])  # RFC 4978 §3

    # -- the selected mailbox ------------------------------------------------------

    def flags_known(self) -> None:
        """FLAGS and PERMANENTFLAGS for the selected mailbox as this client knows it (SELECT, and news of keywords)."""
        sel = self.selected
        assert sel is not None
        self.untagged(b"FLAGS " + flag_list(sel.flags))
        permanent = [] if sel.readonly else [*sel.flags, "\\*"]
        self.untagged(b"OK [PERMANENTFLAGS " + flag_list(permanent) + b"] Flags permitted")

    def announce_flags(self, flags: Iterable[str]) -> None:
        """Tell the client of keywords it has not heard of before a response shows them (RFC 9051 §7.3.5).

        A STORE or APPEND in any session can bring a keyword in; each session sends FLAGS and
        PERMANENTFLAGS again (with the new keywords added) before the first FETCH that carries one.
        """
        sel = self.selected
        if sel is None:
            return
        new = [f for f in flags if f not in sel.flags and f != "\\Recent"]
        if new:
            sel.flags.update(dict.fromkeys(new))
            self.flags_known()

    def require_selected(self) -> Selected:
        if self.selected is None:
            raise Bad("No mailbox selected")
        return self.selected

    def enable_condstore(self) -> None:
        """RFC 7162 §3.1: after a CONDSTORE enabling command, FETCH responses carry MODSEQ; the first one
        with a mailbox selected reports its HIGHESTMODSEQ (what the client has heard of, not more)."""
        if self.condstore:
            return
        self.condstore = True
        if self.selected is not None:
            self.untagged(f"OK [HIGHESTMODSEQ {self.selected.known_modseq}] Highest")

    def vanished(self, runs: list[tuple[int, int]], *, earlier: bool) -> None:
        """``* VANISHED [(EARLIER)] uids`` (RFC 7162 §3.2.10) for ascending runs of UIDs, a line per VANISHED_RUNS."""
        head = b"VANISHED (EARLIER) " if earlier else b"VANISHED "
        for start in range(0, len(runs), VANISHED_RUNS):
            line = runs[start : start + VANISHED_RUNS]
            self.untagged(head + b",".join(b"%d" % lo if lo == hi else b"%d:%d" % (lo, hi) for lo, hi in line))

    async def sync(self, *, allow_expunge: bool = True, share: bool = False) -> None:
        """Report what changed in the selected mailbox since the client last heard (RFC 9051 §7.5).

        ``share``: the session changed nothing since it was told of the change (IDLE, news between
        commands), so it may share the question with other sessions (ChangeHub.changes).

        With CONDSTORE, flag changes wait with the expunges when those cannot be reported yet (during
        FETCH, STORE, SEARCH): their MODSEQ would tell the client it had heard of everything below it.
        """
        sel = self.selected
        if sel is None:
            return
        sel.changed.clear()
        sel.heard_other = False  # the query below covers whatever it was
        plan = None
        hub = self.server.hub
        try:
            delta = await hub.changes(sel.mailbox_id, sel.known_modseq, sel.max_uid, share=share)
            if sel.takes_recent and delta.get("new"):
                claimed = await hub.claim_recent(sel.mailbox_id, delta["new"][-1])
                if claimed is not None:  # kept at once (the claim is committed), so kept searches see them
                    sel.add_recent(*claimed)
            if sel.updates and not delta["gone"]:
                known = [u for u in delta["expunged"] if sel.msn(u) is not None]
                async with self.server.pool.acquire() as conn:
                    plan = await sel.updates.prepare(
                        conn,
                        sel,
                        new=delta["new"],
                        flagged=[f[0] for f in delta["flags"]],
                        expunged=known if allow_expunge else [],
                        deferred=bool(known) and not allow_expunge,
                    )
        except BaseException:
            sel.heard_other = True
            sel.changed.set()  # nothing was reported: the news stays pending
            raise
        if delta["gone"]:
            self.server.hub.unwatch(self, sel.mailbox_id)
            self.selected = None
            self.state = AUTHENTICATED
            raise Bye("The selected mailbox was deleted")
        self.report(sel, delta, plan, allow_expunge=allow_expunge)
        if delta["new"] and self.notifier is not None:
            await self.notifier.new_messages(self, delta["new"])  # NOTIFY MessageNew's fetch items

    def pushable(self) -> bool:
        """Whether the change hub may report news to this session itself (ChangeHub's push): in plain
        IDLE with nothing pending, no NOTIFY and no kept-up-to-date search, and the client reading."""
        sel = self.selected
        return (
            self.idling
            and sel is not None
            and not sel.changed.is_set()
            and not sel.held
            and not sel.updates
            and self.notifier is None
            and self.writer.transport.get_write_buffer_size() < _PUSH_BUFFER
        )

    def push(self, delta: Mapping[str, Any], claimed: tuple[int, int] | None) -> None:
        """What :meth:`sync` does with ``delta`` (asked for this session's state, by the hub for every
        session in IDLE on the mailbox at once) and the \\Recent ``claimed`` for it, written at once.
        Runs between the session's awaits (it is in IDLE, see :meth:`pushable`): no await in here."""
        sel = self.selected
        assert sel is not None
        if claimed is not None:
            sel.add_recent(*claimed)
        self.report(sel, delta, None, allow_expunge=True)
        if self._out:
            self.writer.write(b"".join(self._out))  # small lines: the transport buffers them (see pushable)
            self._out.clear()
            self._out_size = 0

    def report(self, sel: Selected, delta: Mapping[str, Any], plan: UpdatePlan | None, *, allow_expunge: bool) -> None:
        """The untagged responses for ``delta`` (see :meth:`sync`), and the session's view brought up to it."""
        expunged = [u for u in delta["expunged"] if sel.msn(u) is not None]
        for line in plan.removals(sel) if plan is not None else ():
            self.untagged(line)  # RFC 5267 §4.3.4: before the EXPUNGE responses, while the numbers hold
        waiting = bool(expunged) and not allow_expunge
        sel.held = waiting  # report the rest now, the expunges (and anything after them) at the next chance
        if expunged and not waiting and self.qresync:
            gone = set(expunged)
            sel.uids = array.array("Q", (u for u in sel.uids if u not in gone))
            self.vanished(uid_runs(expunged), earlier=False)
            sel.vanished_unacknowledged = True
        elif not waiting:
            for uid in expunged:
                msn = sel.msn(uid)
                if msn is not None:
                    del sel.uids[msn - 1]
                    self.untagged(f"{msn} EXPUNGE")
        if delta["new"]:
            sel.uids.extend(delta["new"])
            sel.max_uid = max(sel.max_uid, delta["new"][-1])
            self.untagged(f"{len(sel.uids)} EXISTS")
            if not self.rev2:
                self.untagged(f"{sel.recent_count()} RECENT")
        for line in plan.additions(sel) if plan is not None else ():
            self.untagged(line)  # RFC 5267 §4.3.3: after EXISTS, so new messages have numbers
        reported = () if waiting and self.condstore else delta["flags"]
        self.announce_flags(f for _, flags, modseq in reported if modseq not in sel.own_modseqs for f in flags)
        for uid, flags, modseq in reported:
            if modseq in sel.own_modseqs:
                continue
            msn = sel.msn(uid)
            if msn is not None:
                line = f"{msn} FETCH (UID {uid} FLAGS ".encode() + flag_list(sel.flags_of(uid, flags))
                self.untagged(line + (b" MODSEQ (%d))" % modseq if self.condstore else b")"))
        if not waiting:
            sel.known_modseq = max(sel.known_modseq, delta["modseq"])
            sel.own_modseqs.clear()

    async def own_change(
        self,
        mailbox_id: int,
        first: int | None,
        last: int | None = None,
        *,
        new: Sequence[int] = (),
        expunged: Sequence[int] = (),
    ) -> bool:
        """After this session's own change to the selected mailbox, which took modseqs ``first`` to ``last``
        (one change: ``last`` is ``first``): bring the session's view up to it without asking the database,
        when nothing else can have happened meanwhile. Returns False, doing nothing, when that is not sure;
        :meth:`sync` then asks as before.

        Sure means: the change's first modseq follows the one the session knows (the mailbox row lock hands
        out modseqs one at a time, so no other change came between what the session last heard and its
        own), nothing is held back, and no search kept up to date nor NOTIFY needs the database's view.
        ``new`` are the UIDs the change added (APPEND: EXISTS, and \\Recent taken as :meth:`sync` takes
        it), ``expunged`` those it removed (EXPUNGE: reported now). The notification of the change, when it
        comes, then finds the session knowing its modseq and wakes nothing (ChangeHub._on_change).
        """
        sel = self.selected
        if (
            first is None
            or sel is None
            or sel.mailbox_id != mailbox_id
            or first != sel.known_modseq + 1
            or sel.held
            or sel.updates
            or self.notifier is not None
            or not self.reports_selected()
        ):
            return False
        if new and sel.takes_recent:
            claimed = await self.server.hub.claim_recent(mailbox_id, new[-1])
            if claimed is not None:
                sel.add_recent(*claimed)
        if sel is not self.selected or first != sel.known_modseq + 1:
            return False  # (only the claim awaited) the view moved meanwhile: ask as before
        delta = {
            "gone": False,
            "modseq": first if last is None else last,
            "new": new,
            "flags": (),
            "expunged": expunged,
        }
        self.report(sel, delta, None, allow_expunge=True)
        if sel.changed.is_set() and not sel.heard_other and sel.heard_modseq <= sel.known_modseq:
            sel.changed.clear()  # set by this very change's notification, which came first
        return True

    async def sync_after(self, cmd: parser.Command) -> None:
        """After a command: report changes if a notification said there are any.

        NOOP, IDLE, EXPUNGE and friends call :meth:`sync` directly, which always
        asks the database, so a lost notification delays news only until then.
        """
        sel = self.selected
        if sel is None or not (sel.changed.is_set() or sel.held or sel.updates) or not self.reports_selected():
            return  # a search kept up to date hears of this session's own changes at once
        uid = getattr(cmd, "uid", False)
        await self.sync(allow_expunge=uid or cmd.name not in _NO_EXPUNGE)

    def log_summary(self) -> None:
        log.info(
            "imap-session client=%s tls=%s user=%s commands=%d seconds=%.1f end=%s",
            self.client,
            "yes" if self.tls else "no",
            self.principal.address if self.principal else "-",
            self.commands,
            time.monotonic() - self.started,
            self.end or "closed",
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

    def mark_selected_changed(self, mailbox_id: int, modseq: int | None = None) -> None:
        """The selected mailbox changed: a change to its messages that took ``modseq``, or (None) anything."""
        sel = self.selected
        if sel is not None and sel.mailbox_id == mailbox_id:
            if modseq is None:
                sel.heard_other = True
            else:
                sel.heard_modseq = max(sel.heard_modseq, modseq)
            sel.changed.set()


__all__ = [
    "AUTHENTICATED",
    "DB_UNAVAILABLE",
    "LOGOUT",
    "NEWS_RETRY",
    "NOT_AUTHENTICATED",
    "SELECTED",
    "ImapSession",
    "Selected",
    "describe",
    "transport_reason",
]
