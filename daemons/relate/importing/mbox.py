"""Reading mbox files (RFC 4155) one message at a time: the ``From `` separator, quoting, and flags.

Policy:

- A message starts at a line beginning ``From `` that is the file's first
  line or follows an empty line (what mutt, Dovecot and Thunderbird write);
  the empty line before it ends the message before, and is not part of it.
- Quoting: in mboxrd (the default) a body line ``>From ``, ``>>From ``... lost
  one ``>`` when it was written, so one is taken off again; in mboxo only
  ``>From `` was quoted (``>>From `` is a body line as it stands).
- The mail store's own bookkeeping fields are turned into flags and taken
  out of the message, as Dovecot's mbox driver hides them from IMAP clients:
  ``Status:`` (R: \\Seen), ``X-Status:`` (A: \\Answered, F: \\Flagged,
  T: \\Draft, D: \\Deleted), ``X-Keywords:`` (keywords); ``X-UID:``,
  ``X-IMAP:`` and ``X-IMAPbase:`` are dropped.
- The internal date is the separator line's date (asctime form, read as
  UTC), else the ``Date:`` field, else None (the time of import).
- Linear and bounded: the file is read a line (at most ``_LINE`` octets) at a
  time; a message longer than ``max_size`` is skipped whole (reported, not
  held), so memory is one message.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from relate.importing import KEYWORD

_LINE = 64 * 1024
_QUOTED_RD = re.compile(rb"^>+From ")
_STATUS_FLAGS = {"R": "\\Seen"}
_X_STATUS_FLAGS = {"A": "\\Answered", "F": "\\Flagged", "T": "\\Draft", "D": "\\Deleted"}
_HIDDEN = {b"status", b"x-status", b"x-keywords", b"x-uid", b"x-imap", b"x-imapbase"}
_MONTHS = {
    m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)
}


@dataclass(frozen=True)
class MboxMessage:
    raw: bytes  # the message as it was before it went into the mbox (quoting and bookkeeping fields taken out)
    flags: tuple[str, ...]
    internal_date: datetime | None
    offset: int  # where its separator line starts in the file


@dataclass(frozen=True)
class Oversized:
    """A message past ``max_size``: skipped, not read into memory."""

    offset: int
    size: int


def separator_date(line: bytes) -> datetime | None:
    """The date of a ``From sender Wed Dec  7 17:58:47 2026`` line (a zone, if any, is ignored: UTC)."""
    words = line.decode("ascii", "replace").split()
    # From SENDER DOW MON DAY HH:MM:SS [ZONE] YEAR [ZONE]
    for i in range(2, max(2, len(words) - 3)):
        mon, day, clock = words[i + 1 : i + 4] if i + 3 < len(words) else ("", "", "")
        if mon[:3] in _MONTHS and day.isdigit() and clock.count(":") in (1, 2):
            year = next((w for w in words[i + 4 : i + 6] if len(w) == 4 and w.isdigit()), None)
            if year is None:
                return None
            try:
                parts = [int(p) for p in clock.split(":")] + [0]
                return datetime(int(year), _MONTHS[mon[:3]], int(day), parts[0], parts[1], parts[2], tzinfo=UTC)
            except ValueError:
                return None
    return None


def _header_end(raw: bytes) -> int:
    """Where the body starts (after the empty line), or len(raw) for a message with no body."""
    if raw.startswith((b"\n", b"\r\n")):
        return 0
    ends = [i for i in (raw.find(b"\n\n"), raw.find(b"\n\r\n")) if i >= 0]
    if not ends:
        return len(raw)
    cut = min(ends)
    return cut + (2 if raw[cut : cut + 2] == b"\n\n" else 3)


def _fields(head: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(name lower-cased, the whole field with its folded lines) for each field of ``head``; b"" for no name."""
    lines = head.splitlines(keepends=True)
    field: list[bytes] = []
    for line in lines:
        if field and line[:1] in (b" ", b"\t"):
            field.append(line)
            continue
        if field:
            whole = b"".join(field)
            yield whole.split(b":", 1)[0].strip().lower() if b":" in whole else b"", whole
        field = [line]
    if field:
        whole = b"".join(field)
        yield whole.split(b":", 1)[0].strip().lower() if b":" in whole else b"", whole


def bookkeeping(raw: bytes) -> tuple[bytes, tuple[str, ...], datetime | None]:
    """``raw`` without the mbox bookkeeping fields, the flags they held, and its Date: field's date."""
    end = _header_end(raw)
    kept: list[bytes] = []
    flags: list[str] = []
    date: datetime | None = None
    for name, whole in _fields(raw[:end]):
        value = whole.split(b":", 1)[1].decode("latin-1").strip() if b":" in whole else ""
        if name == b"status":
            flags += [f for c, f in _STATUS_FLAGS.items() if c in value]
        elif name == b"x-status":
            flags += [f for c, f in _X_STATUS_FLAGS.items() if c in value]
        elif name == b"x-keywords":
            flags += [k for k in re.split(r"[\s,]+", value) if k and KEYWORD.match(k)]
        elif name == b"date" and date is None:
            try:
                date = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                date = None
            if date is not None and date.tzinfo is None:
                date = date.replace(tzinfo=UTC)
        if name not in _HIDDEN:
            kept.append(whole)
    if len(kept) == sum(1 for _ in _fields(raw[:end])):
        return raw, tuple(dict.fromkeys(flags)), date  # nothing hidden: the very bytes
    return b"".join(kept) + raw[end:], tuple(dict.fromkeys(flags)), date


def read(stream: BinaryIO, *, rd: bool = True, max_size: int = 1 << 30) -> Iterator[MboxMessage | Oversized]:
    """Every message of an mbox file, in order (see the module's policy)."""
    unquote = _QUOTED_RD if rd else re.compile(rb"^>From ")
    offset = 0
    start = -1  # offset of the current message's separator; -1 before the first
    separator = b""
    lines: list[bytes] = []
    size = 0
    previous_empty = True
    at_line_start = True

    def finish() -> MboxMessage | Oversized:
        if size > max_size:
            return Oversized(start, size)
        if lines and lines[-1] in (b"\n", b"\r\n"):
            lines.pop()  # the empty line before the next separator (or at the end of the file)
        raw, flags, date = bookkeeping(b"".join(lines))
        return MboxMessage(raw, flags, separator_date(separator) or date, start)

    while True:
        line = stream.readline(_LINE)
        if not line:
            break
        if at_line_start and previous_empty and line.startswith(b"From "):
            if start >= 0:
                yield finish()
            start, separator, lines, size = offset, line, [], 0
            previous_empty = False
        elif start >= 0:
            size += len(line)
            if size <= max_size:
                lines.append(line[1:] if at_line_start and unquote.match(line) else line)
            elif lines:
                lines = []  # over the limit: let go of it, count the rest
            previous_empty = at_line_start and line in (b"\n", b"\r\n")
        offset += len(line)
        at_line_start = line.endswith(b"\n")
    if start >= 0:
        yield finish()
