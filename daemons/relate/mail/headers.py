"""Header sections (RFC 5322 §2.2, §3.6) read from raw bytes in time linear in their size.

Policy:

- A header section starts at an entity's first byte and ends at the first
  empty line (CRLF or bare LF, RFC 5322 §2.1), or before the first line that is
  neither a field nor a continuation (the body then starts at that line: a
  missing separator). A leading mbox ``From `` line (RFC 4155) is skipped.
- Field names match case-insensitively; white space before the colon is the
  obsolete syntax of RFC 5322 §4.5 and is accepted.
- Only the fields a caller asks for are looked at: the others are skipped by a
  regular expression without Python work per field, so a header of a million
  fields costs a scan, not a million loop turns. At most ``MAX_FIELDS``
  occurrences are examined per section, and at most ``MAX_FIELD_BYTES`` of a
  value (cut at a fold when there is one).
- Values are unfolded (§2.2.3) and read as UTF-8 (RFC 6532), falling back to
  latin-1 for a value that is not UTF-8.
"""

from __future__ import annotations

import email.utils
import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from relate.mail import encoded_words
from relate.mail.limits import MAX_DATE_CHARS, MAX_FIELD_BYTES, MAX_FIELDS, MAX_REFERENCES, MAX_SHOWN_FIELDS

__all__ = [
    "FieldNames",
    "Section",
    "decoded_fields",
    "field_text",
    "fields",
    "message_ids",
    "parse_date",
    "scan",
    "unfold",
]

# RFC 5322 §3.6.8: a field name is printable US-ASCII except ":". Possessive, so a long run that is no
# field name fails without backtracking.
_NAME = rb"[\x21-\x39\x3b-\x7e]++[ \t]*+:"
_FIELD_LINE = re.compile(_NAME)
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]++)[ \t]*+:")
# The line break before the first line that is neither a field nor a continuation (empty lines included).
_STOP = re.compile(rb"\n(?!" + _NAME + rb"|[ \t])")
_EMPTY_LINE = re.compile(rb"\r*+(?:\n|\Z)")
_NEXT_FIELD = re.compile(rb"\n(?![ \t])")  # the end of a value: a line that is no continuation
_LINE_BREAK = re.compile(rb"\r?\n")
_MSG_ID = re.compile(r"<[^<>\s]+>")


@dataclass(frozen=True, slots=True)
class Section:
    """Where a header section's fields lie in the raw bytes, and where the body starts."""

    first: int  # start of the first field line (after an mbox From_ line)
    stop: int  # end of the last field line, or start of the line that ended the section
    body: int  # where the body starts


def leading_section(head: bytes) -> bytes | None:
    """The header section at the start of ``head`` (a message's first bytes) up to and including its first
    empty line (CRLF or bare LF); None when ``head`` has no empty line."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        cut = head.find(separator)
        if cut >= 0:
            return head[: cut + len(separator)]
    return None


def scan(raw: bytes, start: int, end: int) -> Section:
    """Find the header section that starts at ``start`` in raw[start:end]."""
    pos = start
    if start == 0 and raw.startswith(b"From "):  # mbox From_ line (RFC 4155), not a field
        newline = raw.find(b"\n", 0, end)
        pos = end if newline < 0 else newline + 1
    if pos >= end:
        return Section(pos, end, end)
    if _FIELD_LINE.match(raw, pos, end) is None:
        stop = pos
    else:
        found = _STOP.search(raw, pos, end)
        stop = end if found is None else found.start() + 1
    empty = _EMPTY_LINE.match(raw, stop, end)
    return Section(pos, stop, stop if empty is None else empty.end())


def _value_end(raw: bytes, start: int, stop: int) -> int:
    """The end of the value starting at ``start``: the line break before the next field line, or ``stop``."""
    found = _NEXT_FIELD.search(raw, start, stop)
    return stop if found is None else found.start()


def _capped(raw: bytes, start: int, end: int, notes: set[str] | None) -> bytes:
    """raw[start:end] without its final line break, or its first MAX_FIELD_BYTES cut at the last fold within them."""
    if end - start > MAX_FIELD_BYTES:
        if notes is not None:
            notes.add("field-bytes")
        cut = raw.rfind(b"\n", start, start + MAX_FIELD_BYTES)
        end = cut if cut > start else start + MAX_FIELD_BYTES
    return raw[start:end].rstrip(b"\r\n")


class FieldNames:
    """A set of field names that :func:`fields` looks for, all others being skipped without a look."""

    __slots__ = ("_longest", "names", "pattern")

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(name.lower() for name in names)
        alternatives = b"|".join(re.escape(name.encode("ascii")) for name in sorted(self.names, key=len, reverse=True))
        # After a line break: a field line's name, then the obsolete white space and the colon.
        self.pattern = re.compile(rb"\n(" + alternatives + rb")[ \t]*+:", re.IGNORECASE)
        self._longest = max(map(len, self.names), default=0)

    def first(self, raw: bytes, section: Section) -> re.Match[bytes] | None:
        """The match of the section's first field line when its name is one of these, else None."""
        match = _FIELD_NAME.match(raw, section.first, section.stop)
        if match is None or match.end(1) - section.first > self._longest:
            return None
        return match if raw[section.first : match.end(1)].decode("ascii").lower() in self.names else None


def fields(
    raw: bytes, section: Section, names: FieldNames, notes: set[str] | None = None
) -> Iterator[tuple[str, bytes]]:
    """(lower-case name, raw folded value) of each field of ``names`` in the section, in order.

    At most MAX_FIELDS occurrences (then "fields" goes into ``notes``); each
    value is cut at MAX_FIELD_BYTES ("field-bytes").
    """
    if section.first >= section.stop:
        return
    head = names.first(raw, section)
    matches = names.pattern.finditer(raw, section.first, section.stop)
    for seen, match in enumerate(itertools.chain(() if head is None else (head,), matches), 1):
        if seen > MAX_FIELDS:
            if notes is not None:
                notes.add("fields")
            return
        end = _value_end(raw, match.end(), section.stop)
        yield match.group(1).decode("ascii").lower(), _capped(raw, match.end(), end, notes)


def field_text(value: bytes) -> str:
    """Raw header bytes as text: UTF-8 (RFC 6532), else latin-1; a UTF-8 sequence cut at the end is dropped."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start >= len(value) - 3 and exc.reason == "unexpected end of data":
            return value[: exc.start].decode("utf-8", "replace")
        return value.decode("latin-1")


def unfold(value: bytes) -> str:
    """The unfolded (RFC 5322 §2.2.3), undecoded text of a raw value, without surrounding white space."""
    return field_text(_LINE_BREAK.sub(b"", value) if b"\n" in value else value).strip()


def parse_date(value: str | None) -> datetime | None:
    """An RFC 5322 §3.3 date (obsolete forms too) as an aware datetime; None if absent, too long or invalid."""
    if not value or len(value) > MAX_DATE_CHARS:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError, IndexError):  # unparseable (type varies by Python version)
        return None
    # RFC 5322 §3.3: "-0000" means UTC without local-offset information.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def message_ids(value: str | None) -> list[str]:
    """The msg-ids (RFC 5322 §3.6.4) of a References or In-Reply-To value, at most MAX_REFERENCES."""
    if not value:
        return []
    found: list[str] = []
    for match in _MSG_ID.finditer(value):
        if len(found) == MAX_REFERENCES:
            break
        found.append(match.group())
    return found


def decoded_fields(raw: bytes, end: int) -> list[tuple[str, str]]:
    """Every field of the header section in raw[:end] in order, as (name, unfolded value with encoded words decoded).

    For showing a message's header: at most MAX_SHOWN_FIELDS fields, each
    value cut at MAX_FIELD_BYTES, white space runs collapsed to one space.
    """
    section = scan(raw, 0, min(end, len(raw)))
    out: list[tuple[str, str]] = []
    pos = section.first
    while pos < section.stop and len(out) < MAX_SHOWN_FIELDS:
        match = _FIELD_NAME.match(raw, pos, section.stop)
        if match is None:  # cannot happen inside a section; stop rather than loop
            break
        value_end = _value_end(raw, match.end(), section.stop)
        text = encoded_words.decode(unfold(_capped(raw, match.end(), value_end, None)))
        name = raw[pos : min(match.end(1), pos + MAX_FIELD_BYTES)].decode("ascii")
        out.append((name, " ".join(text.split())))
        pos = value_end + 1
    return out
