"""IMAP command parser: bytes in, immutable command objects out, no network I/O (RFC 9051 §9).

The session reads a command as a list of parts: line text (``bytes``) and
the literals between them (:class:`Literal`), each literal already read in
full (an APPEND message above 256 KiB into a temporary file, which the
handler reads back once it has room for it in the memory budget).
:func:`parse` walks those parts with a cursor whose methods consume one
grammar element each and raise :class:`ParseError` (answered ``BAD``) on
anything else, including every limit of :mod:`relate.imap.limits`; no
other exception comes out of it, whatever the input. Commands come out as
frozen dataclasses; sequence sets keep ``*`` and ``$`` symbolic, to be
resolved against the selected mailbox.

Strings follow the grammar strictly where it protects the store: NUL is in
no string (RFC 9051 §4.3: CHAR8 and quoted characters exclude it), so it can
never reach a query; a literal8 is APPEND data only.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import BinaryIO

from relate.imap import limits
from relate.imap.errors import ParseError
from relate.imap.mutf7 import lenient_mailbox


@dataclass(frozen=True)
class Literal:
    """A literal's octets: in memory, or (an APPEND message) in the unlinked temporary file it was streamed into.

    A spooled literal is read back by :meth:`read` only when the handler is
    about to store it, and not kept: the bytes live as long as the caller
    holds them, so a slow upload holds a file, not memory, and a stored one
    nothing. The session closes every literal after its command.
    """

    content: bytes | BinaryIO
    binary: bool = False  # literal8 (~{n}), RFC 9051 §4.3
    size: int = -1  # octets; -1: len(content)

    def __len__(self) -> int:
        return len(self.content) if isinstance(self.content, bytes) else self.size

    @property
    def in_memory(self) -> bool:
        return isinstance(self.content, bytes)

    def read(self) -> bytes:
        """The octets, read back from the spool file if there is one (blocking: call it off the loop)."""
        if isinstance(self.content, bytes):
            return self.content
        spool = self.content
        spool.seek(0)
        data = spool.read(self.size)  # one allocation of the known size; read() alone would grow and copy
        if len(data) != self.size:
            raise OSError(f"literal spool holds {len(data)} of {self.size} octets")
        return data

    def close(self) -> None:
        if not isinstance(self.content, bytes):
            self.content.close()


Part = bytes | Literal

# -- values ----------------------------------------------------------------------


@dataclass(frozen=True)
class SeqRange:
    start: int | None  # None means "*"
    end: int | None


@dataclass(frozen=True)
class SeqSet:
    """A sequence set as sent; :meth:`resolve` turns it into ranges, never into one entry per number."""

    ranges: tuple[SeqRange, ...] = ()
    saved: bool = False  # "$": the result of the last SEARCH ... RETURN (SAVE), RFC 9051 §6.4.4.1

    def resolve(self, largest: int) -> Spans:
        """The numbers named, ``*`` being ``largest`` (RFC 9051 §9 seq-range), as sorted disjoint ranges.

        ``1:4294967295`` is one range, however many numbers it spans; overlapping and
        adjacent ranges merge, so what a client repeats costs it nothing later.
        """
        spans = sorted(
            (min(a, b), max(a, b))
            for a, b in (
                (largest if r.start is None else r.start, largest if r.end is None else r.end) for r in self.ranges
            )
        )
        merged: list[tuple[int, int]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1] + 1:
                if hi > merged[-1][1]:
                    merged[-1] = (merged[-1][0], hi)
            else:
                merged.append((lo, hi))
        return Spans(tuple(lo for lo, _ in merged), tuple(hi for _, hi in merged))


@dataclass(frozen=True)
class Spans:
    """Sorted, disjoint, non-adjacent inclusive ranges ``lows[i]..highs[i]``; membership by binary search."""

    lows: tuple[int, ...]
    highs: tuple[int, ...]

    def __contains__(self, n: int) -> bool:
        i = bisect.bisect_right(self.lows, n) - 1
        return i >= 0 and n <= self.highs[i]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self.lows, self.highs, strict=True)

    def pick(self, ascending: Sequence[int]) -> list[int]:
        """The members of ``ascending`` (sorted, no duplicates) that fall in these ranges, in order."""
        out: list[int] = []
        for lo, hi in self:
            out.extend(ascending[bisect.bisect_left(ascending, lo) : bisect.bisect_right(ascending, hi)])
        return out


@dataclass(frozen=True)
class Section:
    """BODY[<part>.<text>] (RFC 9051 §6.4.5)."""

    part: tuple[int, ...] = ()
    text: str | None = None  # HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME
    fields: tuple[str, ...] = ()

    def spec(self) -> str:
        """The section as echoed back in the FETCH response."""
        pieces = [".".join(str(p) for p in self.part)] if self.part else []
        if self.text:
            text = self.text
            if self.fields:
                text += " (" + " ".join(self.fields) + ")"
            pieces.append(text)
        return ".".join(pieces)


@dataclass(frozen=True)
class FetchAtt:
    name: str  # FLAGS, UID, ENVELOPE, BODY, BODYSTRUCTURE, BODY[], BINARY[], BINARY.SIZE, RFC822, ...
    section: Section | None = None
    partial: tuple[int, int] | None = None  # <start.count>
    peek: bool = False


@dataclass(frozen=True)
class SearchKey:
    name: str  # ALL, AND, OR, NOT, FLAG keys, SINCE, HEADER, UID, SEQ, ...
    args: tuple[object, ...] = ()


# -- commands ----------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    tag: str
    name: str


@dataclass(frozen=True)
class Login(Command):
    user: str
    password: str


@dataclass(frozen=True)
class Authenticate(Command):
    mechanism: str
    initial: bytes | None  # SASL-IR initial response, already base64-decoded; b"" for "="


@dataclass(frozen=True)
class Enable(Command):
    capabilities: tuple[str, ...]


@dataclass(frozen=True)
class QResync:
    """SELECT's QRESYNC parameter (RFC 7162 §3.2.5): what the client knew when it last saw the mailbox."""

    uidvalidity: int
    modseq: int
    known_uids: SeqSet | None = None  # no "*" or "$" (RFC 7162 §7 known-uids)
    # seq-match-data is checked and then not needed: the expunge log is complete (RFC 7162 §3.2.5.2).
    seq_match: tuple[SeqSet, SeqSet] | None = None


@dataclass(frozen=True)
class Select(Command):
    mailbox: str
    readonly: bool
    condstore: bool = False  # SELECT ... (CONDSTORE), RFC 7162 §3.1.8
    qresync: QResync | None = None


@dataclass(frozen=True)
class MailboxCommand(Command):
    """CREATE, DELETE, SUBSCRIBE, UNSUBSCRIBE, GETQUOTAROOT."""

    mailbox: str


@dataclass(frozen=True)
class Rename(Command):
    old: str
    new: str


@dataclass(frozen=True)
class ListCommand(Command):
    reference: str
    patterns: tuple[str, ...]
    select: tuple[str, ...] = ()  # SUBSCRIBED, REMOTE, RECURSIVEMATCH, SPECIAL-USE
    returns: tuple[str, ...] = ()  # SUBSCRIBED, CHILDREN, SPECIAL-USE, STATUS
    status_items: tuple[str, ...] = ()
    lsub: bool = False
    extended: bool = False  # RFC 5258 §3: selection options, a pattern list or RETURN (even empty) were given


@dataclass(frozen=True)
class Status(Command):
    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True)
class AppendMessage:
    """One message of an APPEND: its data is one literal, or (CATENATE, RFC 4469) literals and IMAP URLs."""

    flags: tuple[str, ...]
    date: datetime | None
    parts: tuple[Literal | str, ...]  # a literal's data, or (CATENATE URL) the URL as sent
    catenate: bool = False

    @property
    def literal_octets(self) -> int:
        return sum(len(p) for p in self.parts if isinstance(p, Literal))


@dataclass(frozen=True)
class Append(Command):
    """APPEND of one message or, MULTIAPPEND (RFC 3502), several, stored all or none."""

    mailbox: str
    messages: tuple[AppendMessage, ...]  # read into memory by the handler, one at a time, within the memory budget


@dataclass(frozen=True)
class Partial:
    """A PARTIAL range (RFC 9394 §3.1): result positions ``low`` to ``high`` (1-based, ``low <= high``),
    counted from the last result backwards when ``from_end`` (``-1:-100``)."""

    low: int
    high: int
    from_end: bool = False

    def spec(self) -> str:
        """The range as the PARTIAL response echoes it (``2:4``, ``-1:-100``)."""
        sign = "-" if self.from_end else ""
        return f"{sign}{self.low}:{sign}{self.high}"

    def pick(self, count: int) -> range:
        """The indexes (0-based, ascending) of a result of ``count`` items that this range selects."""
        if self.from_end:
            return range(max(0, count - self.high), max(0, count - self.low + 1))
        return range(min(count, self.low - 1), min(count, self.high))


@dataclass(frozen=True)
class Search(Command):
    uid: bool
    key: SearchKey
    returns: tuple[str, ...] | None  # None: plain SEARCH (rev1); () means RETURN () = ALL
    charset: str | None = None
    partial: Partial | None = None  # with "PARTIAL" in returns


@dataclass(frozen=True)
class Sort(Command):
    """SORT and UID SORT (RFC 5256 §3), with ESORT and CONTEXT=SORT return options (RFC 5267)."""

    uid: bool
    program: tuple[tuple[str, bool], ...]  # (criterion, REVERSE)
    charset: str
    key: SearchKey
    returns: tuple[str, ...] | None  # None: plain SORT; () means RETURN () = ALL
    partial: Partial | None = None


@dataclass(frozen=True)
class Thread(Command):
    """THREAD and UID THREAD (RFC 5256 §3)."""

    uid: bool
    algorithm: str
    charset: str
    key: SearchKey


@dataclass(frozen=True)
class CancelUpdate(Command):
    """CANCELUPDATE (RFC 5267 §4.3.5): the tags of searches whose updates stop."""

    tags: tuple[str, ...]


@dataclass(frozen=True)
class Fetch(Command):
    uid: bool
    seqset: SeqSet
    atts: tuple[FetchAtt, ...]
    changed_since: int | None = None  # RFC 7162 §3.1.4.1 CHANGEDSINCE modifier
    vanished: bool = False  # RFC 7162 §3.2.6 VANISHED modifier (UID FETCH with CHANGEDSINCE only)


@dataclass(frozen=True)
class Store(Command):
    uid: bool
    seqset: SeqSet
    mode: str  # "+", "-" or ""
    silent: bool
    flags: tuple[str, ...]
    unchanged_since: int | None = None  # RFC 7162 §3.1.3 UNCHANGEDSINCE modifier


@dataclass(frozen=True)
class CopyMove(Command):
    """COPY and MOVE."""

    uid: bool
    seqset: SeqSet
    mailbox: str


@dataclass(frozen=True)
class UidExpunge(Command):
    seqset: SeqSet


@dataclass(frozen=True)
class Id(Command):
    params: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True)
class QuotaRoot(Command):
    """GETQUOTA (RFC 9208 §4.1.1), and SETQUOTA's root."""

    root: str


@dataclass(frozen=True)
class SetQuota(QuotaRoot):
    """SETQUOTA (RFC 9208 §4.1.3): resource names (upper-case) and limits."""

    limits: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class NotifyGroup:
    """One event group of NOTIFY SET (RFC 5465 §3.1): which mailboxes, which events."""

    filter: str  # SELECTED, SELECTED-DELAYED, INBOXES, PERSONAL, SUBSCRIBED, SUBTREE, MAILBOXES
    mailboxes: tuple[str, ...]  # SUBTREE and MAILBOXES only
    events: tuple[str, ...]  # upper-cased names as sent, unknown ones too (the handler says BADEVENT); () is NONE
    fetch_atts: tuple[FetchAtt, ...] = ()  # MessageNew's


@dataclass(frozen=True)
class Notify(Command):
    groups: tuple[NotifyGroup, ...] | None  # None: NOTIFY NONE
    status: bool = False


@dataclass(frozen=True)
class Compress(Command):
    mechanism: str


# -- the cursor -----------------------------------------------------------------------

# RFC 7162 §7: a mod-sequence is an unsigned 63-bit integer (PostgreSQL's bigint).
MAX_MODSEQ = 2**63 - 1

_ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | frozenset(range(0x20)) | {0x7F}
_ASTRING_EXTRA = frozenset(b"]")  # ASTRING-CHAR = ATOM-CHAR / resp-specials
_LIST_WILDCARDS = frozenset(b"%*")
_TAG_FORBIDDEN = _ATOM_SPECIALS | {ord("+")}
_MONTHS = {
    m: i + 1 for i, m in enumerate(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"])
}
_DATE_TIME = re.compile(rb'"([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"')
_DATE = re.compile(rb"(\d{1,2})-([A-Za-z]{3})-(\d{4})")


class Cursor:
    def __init__(self, parts: list[Part], *, utf8: bool = False) -> None:
        self.parts = parts
        self.index = 0  # which part
        self.pos = 0  # offset in the current bytes part
        self.utf8 = utf8
        self.depth = 0
        self.search_keys = 0

    # Low level.

    def _line(self) -> bytes:
        part = self.parts[self.index] if self.index < len(self.parts) else b""
        return part if isinstance(part, bytes) else b""

    def peek(self) -> int | None:
        """The next byte, or None at the end of a bytes part (a literal or the end follows)."""
        line = self._line()
        if self.index < len(self.parts) and isinstance(self.parts[self.index], Literal):
            return None
        return line[self.pos] if self.pos < len(line) else None

    def at_literal(self) -> bool:
        """Whether a literal comes next (the bytes part before it is used up)."""
        if self.index < len(self.parts) and isinstance(self.parts[self.index], bytes):
            if self.pos < len(self._line()):
                return False
            return self.index + 1 < len(self.parts) and isinstance(self.parts[self.index + 1], Literal)
        return self.index < len(self.parts) and isinstance(self.parts[self.index], Literal)

    def at_end(self) -> bool:
        return not self.at_literal() and self.peek() is None and self.index >= len(self.parts) - 1

    def end(self) -> None:
        if not self.at_end():
            raise ParseError("unexpected extra arguments")

    def take(self, token: bytes) -> bool:
        line = self._line()
        if self.peek() is not None and line[self.pos : self.pos + len(token)].upper() == token.upper():
            self.pos += len(token)
            return True
        return False

    def expect(self, token: bytes, what: str | None = None) -> None:
        if not self.take(token):
            raise ParseError(f"expected {what or token.decode()}")

    def sp(self) -> None:
        self.expect(b" ", "a space")

    def literal(self) -> Literal:
        if not self.at_literal():
            raise ParseError("expected a literal")
        if isinstance(self.parts[self.index], bytes):
            self.index += 1
        lit = self.parts[self.index]
        assert isinstance(lit, Literal)
        self.index += 1
        self.pos = 0
        return lit

    def _run(self, forbidden: frozenset[int]) -> bytes:
        line = self._line()
        start = self.pos
        while self.pos < len(line) and line[self.pos] not in forbidden and (line[self.pos] < 0x80 or self.utf8):
            self.pos += 1
        return line[start : self.pos]

    # Grammar elements.

    def atom(self, what: str = "an atom") -> str:
        text = self._run(_ATOM_SPECIALS)
        if not text:
            raise ParseError(f"expected {what}")
        return text.decode("utf-8", "replace")

    def tag(self) -> str:
        text = self._run(_TAG_FORBIDDEN)
        if not text:
            raise ParseError("expected a tag")
        return text.decode("ascii", "replace")

    def number(self, most: int = 0xFFFFFFFF) -> int:
        line = self._line()
        start = self.pos
        while self.pos < len(line) and 0x30 <= line[self.pos] <= 0x39:
            self.pos += 1
        text = line[start : self.pos]
        if not text or len(text) > len(str(most)):
            raise ParseError("expected a number")
        value = int(text)
        if value > most:
            raise ParseError("number out of range")
        return value

    def number64(self) -> int:
        """RFC 9051 §9 number64: 0 to 2^63-1."""
        return self.number(0x7FFFFFFFFFFFFFFF)

    def nz_number(self) -> int:
        value = self.number()
        if value == 0:
            raise ParseError("expected a non-zero number")
        return value

    def mod_sequence(self) -> int:
        """mod-sequence-valzer (RFC 7162 §7): 0 up to MAX_MODSEQ, at most 19 digits."""
        line = self._line()
        start = self.pos
        while self.pos < len(line) and 0x30 <= line[self.pos] <= 0x39 and self.pos - start < 20:
            self.pos += 1
        text = line[start : self.pos]
        if not text:
            raise ParseError("expected a mod-sequence")
        if len(text) > 19 or int(text) > MAX_MODSEQ:
            raise ParseError(f"mod-sequence out of range (at most {MAX_MODSEQ})")
        return int(text)

    def parameters(self, what: str, *, at_least_one: bool) -> Iterator[str]:
        """The names in a parenthesized list of parameters (RFC 4466), upper-cased, each at most once.

        The caller reads each one's value (if it has one) before asking for the next name.
        """
        self.expect(b"(")
        seen: list[str] = []
        while (at_least_one and not seen) or not self.take(b")"):
            if seen:
                self.sp()
            name = self.atom(what).upper()
            if name in seen:
                raise ParseError(f"{name[:40]} given twice")
            seen.append(name)
            yield name

    def uid_set(self, what: str) -> SeqSet:
        """A sequence set of UIDs a client names from memory: no "*" and no "$" (RFC 7162 §7 known-uids)."""
        seqset = self.seqset()
        if seqset.saved or any(r.start is None or r.end is None for r in seqset.ranges):
            raise ParseError(f"{what} cannot use * or $")
        return seqset

    def quoted(self) -> bytes:
        self.expect(b'"', "a quoted string")
        line = self._line()
        out = bytearray()
        while self.pos < len(line):
            ch = line[self.pos]
            self.pos += 1
            if ch == 0x22:
                return bytes(out)
            if ch == 0x5C:
                if self.pos >= len(line) or line[self.pos] not in b'"\\':
                    raise ParseError("bad escape in quoted string")
                ch = line[self.pos]
                self.pos += 1
            elif ch in (0x00, 0x0D, 0x0A) or (ch >= 0x80 and not self.utf8):
                raise ParseError("bad character in quoted string")
            out.append(ch)
        raise ParseError("unterminated quoted string")

    def literal_string(self) -> bytes:
        """A literal used as a string: in memory (the session keeps every such literal there), no NUL, not literal8."""
        lit = self.literal()
        if lit.binary:
            raise ParseError("a literal8 is allowed only for APPEND data")
        if not isinstance(lit.content, bytes):
            raise ParseError("string too long")
        if b"\x00" in lit.content:
            raise ParseError("NUL in a string")
        return lit.content

    def string(self) -> bytes:
        if self.at_literal():
            return self.literal_string()
        return self.quoted()

    def astring_bytes(self) -> bytes:
        if self.at_literal():
            return self.literal_string()
        if self.peek() == 0x22:
            return self.quoted()
        text = self._run(_ATOM_SPECIALS - _ASTRING_EXTRA)
        if not text:
            raise ParseError("expected a string")
        return text

    def astring(self) -> str:
        return self.astring_bytes().decode("utf-8", "replace")

    def mailbox(self) -> str:
        """A mailbox name; one that is not valid modified UTF-7 (or UTF-8) comes as an UndecodableName, not BAD."""
        raw = self.astring_bytes()
        return lenient_mailbox(raw, utf8=self.utf8)

    def list_mailbox(self) -> str:
        """A LIST pattern: astring or list-char run (wildcards allowed)."""
        if self.at_literal() or self.peek() == 0x22:
            raw = self.string()
        else:
            raw = self._run((_ATOM_SPECIALS - _LIST_WILDCARDS) - _ASTRING_EXTRA)
            if not raw:
                raise ParseError("expected a mailbox pattern")
        return lenient_mailbox(raw, utf8=self.utf8)

    def paren_list(self, item: str = "list", *, most: int = 16) -> list[str]:
        """``(a b c)`` of atoms or flags, at most ``most`` of them."""
        self.expect(b"(", f"a parenthesized {item}")
        out: list[str] = []
        while not self.take(b")"):
            if out:
                self.sp()
            if len(out) >= most:
                raise ParseError(f"too many items in the {item} (at most {most})")
            out.append(self.flag_or_atom())
        return out

    def flag_list(self) -> list[str]:
        """A flag list for STORE or APPEND: at most MAX_FLAGS flags of at most MAX_KEYWORD_LENGTH octets."""
        if self.peek() == ord("("):
            flags = self.paren_list("flag list", most=limits.MAX_FLAGS)
        else:  # STORE's flag-list without parentheses (RFC 9051 §9 store-att-flags)
            flags = [self.flag_or_atom()]
            while self.take(b" "):
                if len(flags) >= limits.MAX_FLAGS:
                    raise ParseError(f"too many flags (at most {limits.MAX_FLAGS})")
                flags.append(self.flag_or_atom())
        if any(len(f.encode()) > limits.MAX_KEYWORD_LENGTH for f in flags):
            raise ParseError(f"keyword too long (at most {limits.MAX_KEYWORD_LENGTH} octets)")
        return flags

    def flag_or_atom(self) -> str:
        if self.take(b"\\"):
            if self.take(b"*"):
                return "\\*"
            return "\\" + self.atom("a flag")
        return self.atom("a flag or keyword")

    def seq_number(self) -> int | None:
        if self.take(b"*"):
            return None
        return self.nz_number()

    def seqset(self) -> SeqSet:
        if self.take(b"$"):
            return SeqSet(saved=True)
        ranges = []
        while True:
            start = self.seq_number()
            end = self.seq_number() if self.take(b":") else start
            ranges.append(SeqRange(start, end))
            if not self.take(b","):
                return SeqSet(tuple(ranges))

    def date(self) -> datetime:
        """date = date-text / DQUOTE date-text DQUOTE (RFC 9051 §9)."""
        quoted = self.take(b'"')
        line = self._line()
        m = _DATE.match(line, self.pos)
        if not m or m.group(2).decode().title() not in _MONTHS:
            raise ParseError("expected a date like 1-Feb-2026")
        self.pos = m.end()
        if quoted:
            self.expect(b'"')
        try:
            return datetime(int(m.group(3)), _MONTHS[m.group(2).decode().title()], int(m.group(1)), tzinfo=UTC)
        except ValueError:
            raise ParseError("invalid date") from None

    def date_time(self) -> datetime:
        line = self._line()
        m = _DATE_TIME.match(line, self.pos)
        if not m or m.group(2).decode().title() not in _MONTHS:
            raise ParseError('expected a date-time like "01-Feb-2026 10:00:00 +0000"')
        self.pos = m.end()
        try:
            # A zone of +9999 is 4 days: timezone() refuses it with ValueError, like a 31-Feb date.
            offset = timedelta(hours=int(m.group(8)), minutes=int(m.group(9)))
            tz = timezone(offset if m.group(7) == b"+" else -offset)
            return datetime(
                int(m.group(3)),
                _MONTHS[m.group(2).decode().title()],
                int(m.group(1).strip()),
                int(m.group(4)),
                int(m.group(5)),
                int(m.group(6)),
                tzinfo=tz,
            )
        except ValueError:
            raise ParseError("invalid date-time") from None

    def enter(self) -> None:
        self.depth += 1
        if self.depth > limits.MAX_NESTING:
            raise ParseError(f"too deeply nested (at most {limits.MAX_NESTING} levels)")

    def leave(self) -> None:
        self.depth -= 1


# -- commands -----------------------------------------------------------------------


# Clients repeat commands (a FETCH of FLAGS, STATUS of each folder, NOOP), and what follows the tag
# parses to the same Command each time. The last _REMEMBER of them (of these verbs, no literal, at
# most _REMEMBER_LINE octets) are kept by that text, so a repeat costs a look-up and a copy with its
# own tag rather than a parse. LOGIN and AUTHENTICATE are never kept: no credential stays in memory.
_REMEMBER_VERBS = frozenset(
    {"NOOP", "CHECK", "SELECT", "EXAMINE", "LIST", "LSUB", "STATUS", "SEARCH", "FETCH", "STORE", "COPY", "MOVE"}
    | {"EXPUNGE", "SORT", "THREAD", "UNSELECT", "CLOSE", "CAPABILITY", "NAMESPACE", "IDLE", "GETQUOTAROOT"}
)
_REMEMBER = 512
_REMEMBER_LINE = 1024
_remembered: dict[tuple[bytes, bool], Command] = {}
# The octets a tag may hold (what Cursor.tag() takes), without and with UTF-8 (non-ASCII octets).
_TAG_OCTETS = {
    utf8: bytes(b for b in range(256) if b not in _TAG_FORBIDDEN and (b < 0x80 or utf8)) for utf8 in (False, True)
}


def parse(parts: list[Part], *, utf8: bool = False) -> Command:
    """One complete command (literals included) into a Command; raises ParseError."""
    line = parts[0] if len(parts) == 1 else None
    if not isinstance(line, bytes) or len(line) > _REMEMBER_LINE:
        return _parse(parts, utf8=utf8)
    tag, space, rest = line.partition(b" ")
    known = _remembered.get((rest, utf8)) if space else None
    if known is not None and tag and not tag.translate(None, _TAG_OCTETS[utf8]):
        again = object.__new__(type(known))  # a copy with this tag (no __init__: the fields are checked already)
        again.__dict__.update(known.__dict__, tag=tag.decode("ascii", "replace"))
        return again
    cmd = _parse(parts, utf8=utf8)
    if space and cmd.name in _REMEMBER_VERBS:
        if len(_remembered) >= _REMEMBER:
            del _remembered[next(iter(_remembered))]  # the oldest
        _remembered[rest, utf8] = cmd
    return cmd


def _parse(parts: list[Part], *, utf8: bool) -> Command:
    cur = Cursor(parts, utf8=utf8)
    tag = cur.tag()
    cur.sp()
    name = cur.atom("a command name").upper()
    uid = False
    if name == "UID":
        cur.sp()
        uid = True
        name = cur.atom("a command name").upper()
        if name not in ("FETCH", "SEARCH", "STORE", "COPY", "MOVE", "EXPUNGE", "SORT", "THREAD"):
            raise ParseError(f"UID {name} is not a command")
    handler = _PARSERS.get(name)
    if handler is None:
        raise ParseError(f"unknown command {name[:40]}")
    cmd = handler(cur, tag, name, uid)
    cur.end()
    return cmd


def _simple(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    return Command(tag, name)


def _credential(cur: Cursor) -> str:
    raw = cur.astring_bytes()
    if len(raw) > limits.MAX_CREDENTIAL:
        raise ParseError(f"user name or password too long (at most {limits.MAX_CREDENTIAL} octets)")
    return raw.decode("utf-8", "replace")


def _login(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    user = _credential(cur)
    cur.sp()
    password = _credential(cur)
    return Login(tag, name, user, password)


def _authenticate(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    mechanism = cur.atom("a SASL mechanism").upper()
    initial = None
    if cur.take(b" "):
        if cur.take(b"="):
            initial = b""
        else:
            text = cur.atom("a base64 initial response")
            if len(text) > limits.MAX_SASL_RESPONSE:
                raise ParseError(f"initial response too long (at most {limits.MAX_SASL_RESPONSE} octets)")
            try:
                initial = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise ParseError("invalid base64 in initial response") from None
    return Authenticate(tag, name, mechanism, initial)


def _enable(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    caps: list[str] = []
    while cur.take(b" "):
        if len(caps) >= limits.MAX_ENABLE:
            raise ParseError(f"too many capabilities (at most {limits.MAX_ENABLE})")
        caps.append(cur.atom("a capability").upper())
    if not caps:
        raise ParseError("ENABLE needs at least one capability")
    return Enable(tag, name, tuple(caps))


def _select(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    mailbox = cur.mailbox()
    condstore = False
    qresync = None
    if cur.take(b" "):
        # RFC 4466 §2.1 select-params; RFC 7162 §3.1.8 (CONDSTORE) and §3.2.5 (QRESYNC). Others are BAD.
        for param in cur.parameters("a select parameter", at_least_one=False):
            if param == "CONDSTORE":
                condstore = True
            elif param == "QRESYNC":
                cur.sp()
                qresync = _qresync(cur)
            else:
                raise ParseError(f"unknown select parameter {param[:40]}")
    return Select(tag, name, mailbox, readonly=name == "EXAMINE", condstore=condstore, qresync=qresync)


def _qresync(cur: Cursor) -> QResync:
    """``(uidvalidity modseq [known-uids] [(known-sequence-set known-uid-set)])`` (RFC 7162 §7 select-param)."""
    cur.expect(b"(")
    uidvalidity = cur.nz_number()
    cur.sp()
    modseq = cur.mod_sequence()
    known = None
    seq_match = None
    if cur.take(b" "):
        if cur.peek() != ord("("):
            known = cur.uid_set("known UIDs")
            if cur.take(b" "):
                seq_match = _seq_match(cur)
        else:
            seq_match = _seq_match(cur)
    cur.expect(b")")
    return QResync(uidvalidity, modseq, known, seq_match)


def _seq_match(cur: Cursor) -> tuple[SeqSet, SeqSet]:
    """``(known-sequence-set known-uid-set)``: as many message numbers as UIDs (RFC 7162 §3.2.5)."""
    cur.expect(b"(")
    sequences = cur.seqset()
    cur.sp()
    uids = cur.uid_set("known UIDs")
    cur.expect(b")")
    if sequences.saved or _count(sequences) != _count(uids):
        raise ParseError("the two sets of seq-match-data differ in size")
    return sequences, uids


def _count(seqset: SeqSet) -> int:
    """How many numbers a sequence set names (``*`` counted as the largest number there is)."""
    return sum(hi - lo + 1 for lo, hi in seqset.resolve(0xFFFFFFFF))


def _mailbox_command(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    mailbox = cur.mailbox()
    if name == "CREATE" and cur.take(b" "):
        # RFC 6154 §5.3: CREATE mailbox (USE (\Sent)); only the form is checked here.
        cur.expect(b"(")
        cur.expect(b"USE ")
        uses = cur.paren_list("special-use list", most=8)
        cur.expect(b")")
        return CreateSpecial(tag, name, mailbox, tuple(uses))
    return MailboxCommand(tag, name, mailbox)


@dataclass(frozen=True)
class CreateSpecial(MailboxCommand):
    uses: tuple[str, ...] = field(default=())


def _rename(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    old = cur.mailbox()
    cur.sp()
    return Rename(tag, name, old, cur.mailbox())


# RFC 5258 §3.1, §3.2 (with RFC 6154 SPECIAL-USE, RFC 5819 STATUS): any other option is BAD.
LIST_SELECT_OPTIONS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
LIST_RETURN_OPTIONS = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})


def _list(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    select: list[str] = []
    extended = False
    if name == "LIST" and cur.peek() == ord("("):
        extended = True
        select = [s.upper() for s in cur.paren_list("selection options", most=8)]
        unknown = next((s for s in select if s not in LIST_SELECT_OPTIONS), None)
        if unknown is not None:
            raise ParseError(f"unknown LIST selection option {unknown[:40]}")
        if "RECURSIVEMATCH" in select and not set(select) - {"RECURSIVEMATCH", "REMOTE"}:
            raise ParseError("RECURSIVEMATCH needs another selection option")  # RFC 5258 §3
        cur.sp()
    reference = lenient_mailbox(cur.astring_bytes(), utf8=cur.utf8) if not cur.take(b'""') else ""
    cur.sp()
    patterns: list[str] = []
    if name == "LIST" and cur.peek() == ord("(") and not cur.at_literal():
        extended = True
        cur.expect(b"(")
        while not cur.take(b")"):
            if patterns:
                cur.sp()
            if len(patterns) >= limits.MAX_LIST_PATTERNS:
                raise ParseError(f"too many patterns (at most {limits.MAX_LIST_PATTERNS})")
            patterns.append(cur.list_mailbox())
    else:
        patterns.append(cur.list_mailbox() if not cur.take(b'""') else "")
    if any(len(reference) + len(p) > limits.MAX_PATTERN_LENGTH for p in patterns):
        raise ParseError(f"reference and pattern too long (at most {limits.MAX_PATTERN_LENGTH} characters)")
    returns: list[str] = []
    status_items: list[str] = []
    if name == "LIST" and cur.take(b" "):
        extended = True
        cur.expect(b"RETURN ")
        cur.expect(b"(")
        while not cur.take(b")"):
            if returns:
                cur.sp()
            if len(returns) >= 8:
                raise ParseError("too many return options (at most 8)")
            option = cur.atom("a return option").upper()
            if option not in LIST_RETURN_OPTIONS:
                raise ParseError(f"unknown LIST return option {option[:40]}")
            returns.append(option)
            if option == "STATUS":
                cur.sp()
                status_items = [s.upper() for s in cur.paren_list("status items", most=limits.MAX_STATUS_ITEMS)]
    return ListCommand(
        tag,
        name,
        reference,
        tuple(patterns),
        tuple(select),
        tuple(returns),
        tuple(status_items),
        lsub=name == "LSUB",
        extended=extended,
    )


def _status(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    mailbox = cur.mailbox()
    cur.sp()
    items = tuple(s.upper() for s in cur.paren_list("status items", most=limits.MAX_STATUS_ITEMS))
    if not items:
        raise ParseError("STATUS needs at least one item")
    return Status(tag, name, mailbox, items)


def _append(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    """RFC 9051 §6.3.12 with MULTIAPPEND (RFC 3502: more messages), CATENATE (RFC 4469), BINARY (RFC 3516
    literal8) and UTF8 (RFC 6855 §4) data; no other append-ext (RFC 4466 §2.3) is known."""
    cur.sp()
    mailbox = cur.mailbox()
    cur.sp()
    found: list[AppendMessage] = []
    while True:
        if len(found) >= limits.MAX_APPEND_MESSAGES:
            raise ParseError(f"too many messages in one APPEND (at most {limits.MAX_APPEND_MESSAGES})")
        flags: list[str] = []
        date = None
        if cur.peek() == ord("("):
            flags = cur.flag_list()
            cur.sp()
        if cur.peek() == ord('"'):
            date = cur.date_time()
            cur.sp()
        catenate = False
        parts: list[Literal | str]
        if cur.take(b"CATENATE ("):
            parts = _catenate_parts(cur)
            catenate = True
        elif cur.take(b"UTF8 ("):
            parts = [cur.literal()]  # RFC 6855 §4 append-data-ext for UTF8=ACCEPT
            cur.expect(b")")
        else:
            cur.take(b"~")  # literal8 marker; the session already read it as a literal
            parts = [cur.literal()]
        found.append(AppendMessage(tuple(flags), date, tuple(parts), catenate))
        if not cur.take(b" "):  # MULTIAPPEND: another message follows (RFC 3502 §6.3.11)
            return Append(tag, name, mailbox, tuple(found))


def _catenate_parts(cur: Cursor) -> list[Literal | str]:
    """After ``CATENATE (``: ``TEXT literal`` and ``URL astring`` parts up to ``)`` (RFC 4469 §5)."""
    parts: list[Literal | str] = []
    while not cur.take(b")"):
        if parts:
            cur.sp()
        if len(parts) >= limits.MAX_CATENATE_PARTS:
            raise ParseError(f"too many CATENATE parts (at most {limits.MAX_CATENATE_PARTS})")
        if cur.take(b"TEXT "):
            cur.take(b"~")
            parts.append(cur.literal())
        elif cur.take(b"URL "):
            url = cur.astring_bytes()
            if len(url) > limits.MAX_URL_LENGTH:
                raise ParseError(f"URL too long (at most {limits.MAX_URL_LENGTH} octets)")
            parts.append(url.decode("utf-8", "replace"))
        else:
            raise ParseError("expected TEXT or URL")
    if not parts:
        raise ParseError("CATENATE needs at least one part")
    return parts


_SEARCH_NO_ARGS = {
    "ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN",
    "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN",
}  # fmt: skip
_SEARCH_STRING = {"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"}
_SEARCH_DATE = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"}
_SEARCH_NUMBER = {"LARGER", "SMALLER"}
_SEARCH_FLAG = {"KEYWORD", "UNKEYWORD"}
# RFC 5032 (WITHIN): seconds; RFC 8514 (SAVEDATE): the date a message was saved in its mailbox.
_SEARCH_SECONDS = {"OLDER", "YOUNGER"}
_SEARCH_SAVED = {"SAVEDBEFORE", "SAVEDON", "SAVEDSINCE"}


def _search_key(cur: Cursor) -> SearchKey:
    cur.enter()
    cur.search_keys += 1
    if cur.search_keys > limits.MAX_SEARCH_KEYS:
        raise ParseError(f"too many search keys (at most {limits.MAX_SEARCH_KEYS})")
    try:
        if cur.take(b"("):
            keys = [_search_key(cur)]
            while not cur.take(b")"):
                cur.sp()
                keys.append(_search_key(cur))
            return SearchKey("AND", tuple(keys))
        nxt = cur.peek()
        if nxt is not None and (0x30 <= nxt <= 0x39 or nxt in b"*$"):
            return SearchKey("SEQ", (cur.seqset(),))
        word = cur.atom("a search key").upper()
        if word in _SEARCH_NO_ARGS or word == "SAVEDATESUPPORTED":
            return SearchKey(word)
        cur.sp()
        if word in _SEARCH_STRING:
            return SearchKey(word, (cur.astring(),))
        if word in _SEARCH_DATE or word in _SEARCH_SAVED:
            return SearchKey(word, (cur.date(),))
        if word in _SEARCH_SECONDS:
            return SearchKey(word, (cur.nz_number(),))
        if word in _SEARCH_NUMBER:
            return SearchKey(word, (cur.number(),))
        if word in _SEARCH_FLAG:
            return SearchKey(word, (cur.flag_or_atom(),))
        if word == "HEADER":
            field_name = cur.astring()
            cur.sp()
            return SearchKey(word, (field_name, cur.astring()))
        if word == "NOT":
            return SearchKey(word, (_search_key(cur),))
        if word == "OR":
            left = _search_key(cur)
            cur.sp()
            return SearchKey(word, (left, _search_key(cur)))
        if word == "UID":
            return SearchKey(word, (cur.seqset(),))
        if word == "MODSEQ":
            return SearchKey(word, (_search_modseq(cur),))
        raise ParseError(f"unknown search key {word[:40]}")
    finally:
        cur.leave()


def _search_modseq(cur: Cursor) -> int:
    """``MODSEQ ["/flags/<flag>" priv|shared|all] n`` after MODSEQ (RFC 7162 §3.1.5).

    The entry names a flag's own mod-sequence; a message has one mod-sequence for all its
    flags here (at least as high as any flag's), so the entry is checked and then not needed.
    """
    if cur.peek() == ord('"'):
        entry = cur.quoted()
        if not entry.lower().startswith(b"/flags/") or len(entry) == len(b"/flags/"):
            raise ParseError("MODSEQ entry names a flag: /flags/<flag>")
        cur.sp()
        if cur.atom("an entry type").lower() not in ("priv", "shared", "all"):
            raise ParseError("MODSEQ entry type is priv, shared or all")
        cur.sp()
    return cur.mod_sequence()


def _search(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    returns, partial = _return_options(cur)
    charset = None
    if cur.take(b"CHARSET "):
        charset = cur.astring().upper()
        cur.sp()
    return Search(tag, name, uid, _criteria(cur), returns, charset, partial)


def _criteria(cur: Cursor) -> SearchKey:
    """1*(SP search-key) after the first key's position: one key, or their AND."""
    keys = [_search_key(cur)]
    while cur.take(b" "):
        keys.append(_search_key(cur))
    return keys[0] if len(keys) == 1 else SearchKey("AND", tuple(keys))


# RFC 4731 §3.1, RFC 5182 §2, RFC 5267 §4 (CONTEXT=SEARCH, CONTEXT=SORT), RFC 9394 §3.1 (PARTIAL).
_RETURN_OPTIONS = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE", "CONTEXT", "UPDATE", "PARTIAL"})
SORT_CRITERIA = frozenset({"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"})
THREAD_ALGORITHMS = frozenset({"ORDEREDSUBJECT", "REFERENCES", "REFS"})


def _return_options(cur: Cursor) -> tuple[tuple[str, ...] | None, Partial | None]:
    """``RETURN (...) SP`` if there is one (RFC 4466 search-return-opts): the options and the PARTIAL range."""
    if not cur.take(b"RETURN ("):
        return None, None
    opts: list[str] = []
    partial = None
    while not cur.take(b")"):
        if opts:
            cur.sp()
        if len(opts) >= limits.MAX_RETURN_OPTIONS:
            raise ParseError(f"too many return options (at most {limits.MAX_RETURN_OPTIONS})")
        option = cur.atom("a return option").upper()
        if option not in _RETURN_OPTIONS:
            raise ParseError(f"unknown return option {option[:40]}")
        if option in opts and option in ("PARTIAL", "UPDATE"):
            raise ParseError(f"{option} given twice")
        opts.append(option)
        if option == "PARTIAL":
            cur.sp()
            partial = _partial_range(cur)
    if "PARTIAL" in opts and "ALL" in opts:
        raise ParseError("PARTIAL and ALL exclude each other")  # RFC 5267 §4.4, RFC 9394 §3.1
    cur.sp()
    return tuple(opts), partial


def _partial_range(cur: Cursor) -> Partial:
    """partial-range-first (``1:100``) or partial-range-last (``-1:-100``), RFC 9394 §5; either end first."""
    from_end = cur.take(b"-")
    first = cur.nz_number()
    cur.expect(b":")
    if cur.take(b"-") != from_end:
        raise ParseError("a PARTIAL range counts from the start or from the end, not both")
    second = cur.nz_number()
    return Partial(min(first, second), max(first, second), from_end)


def _charset(cur: Cursor) -> str:
    return cur.astring().upper()


def _sort(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    returns, partial = _return_options(cur)
    cur.expect(b"(", "a parenthesized list of sort criteria")
    program: list[tuple[str, bool]] = []
    while True:
        if len(program) >= limits.MAX_SORT_CRITERIA:
            raise ParseError(f"too many sort criteria (at most {limits.MAX_SORT_CRITERIA})")
        reverse = cur.take(b"REVERSE ")
        criterion = cur.atom("a sort criterion").upper()
        if criterion not in SORT_CRITERIA:
            raise ParseError(f"unknown sort criterion {criterion[:40]}")
        program.append((criterion, reverse))
        if cur.take(b")"):
            break
        cur.sp()
    cur.sp()
    charset = _charset(cur)
    cur.sp()
    return Sort(tag, name, uid, tuple(program), charset, _criteria(cur), returns, partial)


def _thread(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    algorithm = cur.atom("a threading algorithm").upper()
    if algorithm not in THREAD_ALGORITHMS:
        raise ParseError(f"unknown threading algorithm {algorithm[:40]}")
    cur.sp()
    charset = _charset(cur)
    cur.sp()
    return Thread(tag, name, uid, algorithm, charset, _criteria(cur))


def _cancelupdate(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    tags: list[str] = []
    while cur.take(b" "):
        if len(tags) >= limits.MAX_RETURN_OPTIONS:
            raise ParseError(f"too many tags (at most {limits.MAX_RETURN_OPTIONS})")
        tags.append(cur.quoted().decode("utf-8", "replace"))  # RFC 5267 §5: 1*(SP quoted)
    if not tags:
        raise ParseError("CANCELUPDATE needs the tag of a search")
    return CancelUpdate(tag, name, tuple(tags))


_FETCH_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_FETCH_SIMPLE = {
    "ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE", "RFC822.TEXT",
    "BODYSTRUCTURE", "UID", "BODY", "MODSEQ", "SAVEDATE",
}  # fmt: skip


def _section(cur: Cursor, binary: bool) -> Section:
    """After ``[``: section-spec and ``]``."""
    part: list[int] = []
    text = None
    fields: tuple[str, ...] = ()
    while True:
        if cur.take(b"]"):
            return Section(tuple(part), text, fields)
        if part and not cur.take(b"."):
            raise ParseError("bad section")
        peek = cur.peek()
        if peek is not None and 0x30 <= peek <= 0x39:
            if len(part) >= limits.MAX_SECTION_DEPTH:
                raise ParseError(f"section part number too deep (at most {limits.MAX_SECTION_DEPTH} levels)")
            part.append(cur.nz_number())
            continue
        if binary:
            raise ParseError("BINARY sections are part numbers only")
        word = cur.atom("a section").upper()
        if word in ("HEADER", "TEXT") or (word == "MIME" and part):
            text = word
        elif word in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            text = word
            cur.sp()
            cur.expect(b"(")
            names = [cur.astring().upper()]
            while cur.take(b" "):
                if len(names) >= limits.MAX_HEADER_FIELDS:
                    raise ParseError(f"too many header fields (at most {limits.MAX_HEADER_FIELDS})")
                names.append(cur.astring().upper())
            cur.expect(b")")
            fields = tuple(names)
        else:
            raise ParseError(f"bad section {word[:40]}")
        cur.expect(b"]")
        return Section(tuple(part), text, fields)


def _fetch_att(cur: Cursor) -> FetchAtt:
    word = cur._run(_ATOM_SPECIALS | {ord("[")}).decode("ascii", "replace").upper()
    if not word:
        raise ParseError("expected a fetch item")
    if word in ("BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE") and cur.take(b"["):
        binary = word.startswith("BINARY")
        section = _section(cur, binary)
        partial = None
        if word != "BINARY.SIZE" and cur.take(b"<"):
            start = cur.number()
            cur.expect(b".")
            partial = (start, cur.nz_number())
            cur.expect(b">")
        base = word.split(".")[0] if word != "BINARY.SIZE" else word
        return FetchAtt(base + ("[]" if base != "BINARY.SIZE" else ""), section, partial, peek=word.endswith(".PEEK"))
    if word in _FETCH_SIMPLE:
        return FetchAtt(word)
    if word == "PREVIEW":
        # RFC 8970 §3.1: PREVIEW [(LAZY)]. The preview is kept once made, so LAZY changes nothing here.
        if cur.take(b" ("):
            modifiers = [cur.atom("a preview modifier").upper()]
            while cur.take(b" "):
                modifiers.append(cur.atom("a preview modifier").upper())
            cur.expect(b")")
            if set(modifiers) != {"LAZY"} or len(modifiers) > 1:
                raise ParseError("unknown or repeated preview modifier")
        return FetchAtt(word)
    raise ParseError(f"unknown fetch item {word[:40]}")


def _fetch_att_list(cur: Cursor) -> list[FetchAtt]:
    """After ``(``: fetch items up to ``)``, at least one, at most MAX_FETCH_ITEMS."""
    atts: list[FetchAtt] = []
    while not cur.take(b")"):
        if atts:
            cur.sp()
        if len(atts) >= limits.MAX_FETCH_ITEMS:
            raise ParseError(f"too many fetch items (at most {limits.MAX_FETCH_ITEMS})")
        atts.append(_fetch_att(cur))
    if not atts:
        raise ParseError("empty fetch list")
    return atts


def _fetch(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    seqset = cur.seqset()
    cur.sp()
    atts: list[FetchAtt] = []
    if cur.take(b"("):
        atts = _fetch_att_list(cur)
    else:
        peek = cur._line()[cur.pos : cur.pos + 4].upper()
        macro = next((m for m in _FETCH_MACROS if peek.startswith(m.encode())), None)
        if macro and not _fetch_att_follows(cur, macro):
            cur.pos += len(macro)
            atts = [FetchAtt(a) for a in _FETCH_MACROS[macro]]
        else:
            atts.append(_fetch_att(cur))
    if uid and not any(a.name == "UID" for a in atts):
        atts.insert(0, FetchAtt("UID"))  # RFC 9051 §6.4.9: UID FETCH always returns UID
    changed_since = None
    vanished = False
    if cur.take(b" "):
        # RFC 4466 §2.4 fetch-modifiers; RFC 7162 §3.1.4.1 (CHANGEDSINCE), §3.2.6 (VANISHED).
        for modifier in cur.parameters("a fetch modifier", at_least_one=True):
            if modifier == "CHANGEDSINCE":
                cur.sp()
                changed_since = cur.mod_sequence()
            elif modifier == "VANISHED" and uid:
                vanished = True
            else:
                raise ParseError(f"unknown fetch modifier {modifier[:40]}")
        if vanished and changed_since is None:
            raise ParseError("VANISHED needs CHANGEDSINCE")  # RFC 7162 §3.2.6
    return Fetch(tag, name, uid, seqset, tuple(atts), changed_since, vanished)


def _fetch_att_follows(cur: Cursor, macro: str) -> bool:
    """Whether the macro name is really the start of a longer item name."""
    line = cur._line()
    after = line[cur.pos + len(macro) : cur.pos + len(macro) + 1]
    return bool(after) and after not in b" )"


def _store(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    seqset = cur.seqset()
    cur.sp()
    unchanged_since = None
    if cur.take(b"("):
        # RFC 4466 §2.5 store-modifiers; RFC 7162 §3.1.3 (UNCHANGEDSINCE) is the only one there is.
        cur.expect(b"UNCHANGEDSINCE ", "UNCHANGEDSINCE")
        unchanged_since = cur.mod_sequence()
        cur.expect(b")")
        cur.sp()
    mode = "+" if cur.take(b"+") else "-" if cur.take(b"-") else ""
    cur.expect(b"FLAGS", "FLAGS")
    silent = cur.take(b".SILENT")
    cur.sp()
    flags = cur.flag_list()
    return Store(tag, name, uid, seqset, mode, silent, tuple(flags), unchanged_since)


def _copy_move(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    seqset = cur.seqset()
    cur.sp()
    return CopyMove(tag, name, uid, seqset, cur.mailbox())


def _expunge(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    if uid:
        cur.sp()
        return UidExpunge(tag, "UID EXPUNGE", cur.seqset())
    return Command(tag, name)


def _id(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    if cur.take(b"NIL"):
        return Id(tag, name, None)
    cur.expect(b"(")
    params: list[tuple[str, str | None]] = []
    while not cur.take(b")"):
        if params:
            cur.sp()
        if len(params) >= limits.MAX_ID_PARAMS:
            raise ParseError(f"too many ID parameters (at most {limits.MAX_ID_PARAMS})")  # RFC 2971 §3.3
        key = cur.string()
        cur.sp()
        value = None if cur.take(b"NIL") else cur.string()
        if len(key) > limits.MAX_ID_FIELD or (value is not None and len(value) > limits.MAX_ID_VALUE):
            raise ParseError(f"ID field or value too long (at most {limits.MAX_ID_FIELD} and {limits.MAX_ID_VALUE})")
        params.append((key.decode("utf-8", "replace"), None if value is None else value.decode("utf-8", "replace")))
    return Id(tag, name, tuple(params))


def _getquota(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    return QuotaRoot(tag, name, cur.astring_bytes().decode("utf-8", "replace"))


def _setquota(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    # RFC 9208 §7: setquota = "SETQUOTA" SP quota-root-name SP setquota-list;
    # setquota-list = "(" [setquota-resource *(SP setquota-resource)] ")"; resource-limit = number64
    cur.sp()
    root = cur.astring_bytes().decode("utf-8", "replace")
    cur.sp()
    cur.expect(b"(")
    resources: list[tuple[str, int]] = []
    while not cur.take(b")"):
        if resources:
            cur.sp()
        if len(resources) >= limits.MAX_QUOTA_RESOURCES:
            raise ParseError(f"too many quota resources (at most {limits.MAX_QUOTA_RESOURCES})")
        resource = cur.atom("a resource name").upper()
        cur.sp()
        resources.append((resource, cur.number64()))
    return SetQuota(tag, name, root, tuple(resources))


_NOTIFY_FILTERS = ("SELECTED", "SELECTED-DELAYED", "INBOXES", "PERSONAL", "SUBSCRIBED", "SUBTREE", "MAILBOXES")


def _notify(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    """RFC 5465 §8: ``NOTIFY NONE`` or ``NOTIFY SET [STATUS] (filter events) ...``."""
    cur.sp()
    if cur.take(b"NONE"):
        return Notify(tag, name, None)
    cur.expect(b"SET", "SET or NONE")
    status = cur.take(b" STATUS")
    groups: list[NotifyGroup] = []
    while cur.take(b" "):
        if len(groups) >= limits.MAX_NOTIFY_GROUPS:
            raise ParseError(f"too many event groups (at most {limits.MAX_NOTIFY_GROUPS})")
        groups.append(_notify_group(cur))
    if not groups:
        raise ParseError("NOTIFY SET needs an event group")
    selected = [g.filter for g in groups if g.filter.startswith("SELECTED")]
    if len(selected) > 1:
        raise ParseError("SELECTED given twice")  # RFC 5465 §6.1
    return Notify(tag, name, tuple(groups), status)


def _notify_group(cur: Cursor) -> NotifyGroup:
    cur.expect(b"(")
    word = cur.atom("a mailbox filter").upper()
    if word not in _NOTIFY_FILTERS:
        raise ParseError(f"unknown mailbox filter {word[:40]}")
    names: list[str] = []
    if word in ("SUBTREE", "MAILBOXES"):
        cur.sp()
        if cur.take(b"("):
            while not cur.take(b")"):
                if names:
                    cur.sp()
                if len(names) >= limits.MAX_NOTIFY_MAILBOXES:
                    raise ParseError(f"too many mailboxes (at most {limits.MAX_NOTIFY_MAILBOXES})")
                names.append(cur.mailbox())
            if not names:
                raise ParseError("expected a mailbox")
        else:
            names.append(cur.mailbox())
    cur.sp()
    events: list[str] = []
    atts: list[FetchAtt] = []
    if not cur.take(b"NONE"):
        cur.expect(b"(", "a list of events or NONE")
        while not cur.take(b")"):
            if events:
                cur.sp()
            if len(events) >= limits.MAX_NOTIFY_EVENTS:
                raise ParseError(f"too many events (at most {limits.MAX_NOTIFY_EVENTS})")
            event = cur.atom("an event").upper()
            if event in events:
                raise ParseError(f"{event[:40]} given twice")
            events.append(event)
            if event == "MESSAGENEW" and cur.take(b" ("):
                atts = _fetch_att_list(cur)
        if not events:
            raise ParseError("expected an event")
    cur.expect(b")")
    return NotifyGroup(word, tuple(names), tuple(events), tuple(atts))


def _compress(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    return Compress(tag, name, cur.atom("a compression mechanism").upper())


def parse_section(text: bytes) -> Section:
    """A section spec without brackets (``1.2.HEADER``, ``TEXT``, ``""``), as IMAP URLs name one (RFC 5092)."""
    cur = Cursor([text + b"]"])
    section = _section(cur, binary=False)
    cur.end()
    return section


_PARSERS = {
    "CAPABILITY": _simple,
    "NOOP": _simple,
    "LOGOUT": _simple,
    "STARTTLS": _simple,
    "IDLE": _simple,
    "CHECK": _simple,
    "CLOSE": _simple,
    "UNSELECT": _simple,
    "NAMESPACE": _simple,
    "LOGIN": _login,
    "AUTHENTICATE": _authenticate,
    "ENABLE": _enable,
    "SELECT": _select,
    "EXAMINE": _select,
    "CREATE": _mailbox_command,
    "DELETE": _mailbox_command,
    "SUBSCRIBE": _mailbox_command,
    "UNSUBSCRIBE": _mailbox_command,
    "RENAME": _rename,
    "LIST": _list,
    "LSUB": _list,
    "STATUS": _status,
    "APPEND": _append,
    "SEARCH": _search,
    "FETCH": _fetch,
    "STORE": _store,
    "COPY": _copy_move,
    "MOVE": _copy_move,
    "EXPUNGE": _expunge,
    "ID": _id,
    "SORT": _sort,
    "THREAD": _thread,
    "CANCELUPDATE": _cancelupdate,
    "GETQUOTA": _getquota,
    "GETQUOTAROOT": _mailbox_command,
    "SETQUOTA": _setquota,
    "NOTIFY": _notify,
    "COMPRESS": _compress,
}
COMMANDS = frozenset(_PARSERS)
