"""Parse an RFC 5322 message once, at ingest, into everything later served from the store.

``parse_message(raw)`` derives, from the raw bytes that the caller stores separately:

* the IMAP ENVELOPE and BODYSTRUCTURE (RFC 9051 §7.5.2) as plain dicts that
  ``json.dumps`` accepts directly;
* for every MIME entity, byte offsets into ``raw`` (``header_start``,
  ``body_start``, ``end``) so that BODY[HEADER], BODY[TEXT], BODY[n.m] and
  BODY[n.m.MIME] are served by slicing the raw message;
* decoded header columns, the attachment list and text for full-text search.

Guarantees:

* It never raises, whatever the input (malformed MIME, broken boundaries, missing
  headers, 8-bit garbage, bare LF line endings, empty input); the result is best
  effort.
* Its time is linear in the size of ``raw`` and its memory about the size of the
  text it decodes: every parser it uses is iterative and bounded by the limits
  of ``relate.mail.limits`` (header fields, field bytes, encoded words, comment
  nesting, addresses, MIME depth and part count, decoded text). Past a limit the
  parse degrades (what it cannot interpret is left undecoded or skipped) and
  ``ParsedMessage.limits`` names the limits reached. Transfer encodings are
  removed a chunk at a time: an attachment's size is counted, not decoded whole.
* The MIME tree is found by one scanner over the raw bytes (RFC 2046 §5.1.1), so
  offsets are exact. Every node satisfies
  ``0 <= header_start <= body_start <= end <= len(raw)``.
* Header fields are read by this package's own parsers (``headers``,
  ``structured``, ``encoded_words``), never by the ``email`` package's header
  registry, whose recursion and quadratic cases hostile input reaches.
* Input is never modified. The module does no I/O and uses only the standard library.
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from relate.mail import charset, encoded_words, headers, htmltext, structured, transfer
from relate.mail.limits import (
    MAX_ADDRESSES,
    MAX_BODY_BYTES,
    MAX_BOUNDARY,
    MAX_HEADER_WORK,
    MAX_HTML_SCAN,
    MAX_MIME_DEPTH,
    MAX_PARTS,
    MAX_SEARCH_TEXT,
    MAX_SENDER_FIELD_BYTES,
)

__all__ = ["Address", "AttachmentInfo", "ParsedMessage", "field_addresses", "parse_message", "part_content"]

_ADDRESS_FIELDS = ("from", "sender", "reply-to", "to", "cc", "bcc")
# Every field parse_message reads; the scanner skips all others without looking at them.
_FIELDS = headers.FieldNames(
    (
        *_ADDRESS_FIELDS,
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "content-id",
        "content-description",
        "content-md5",
        "content-language",
        "content-location",
    )
)
_NON_ASCII = re.compile(rb"[\x80-\xff]")
_FIRST_TOKEN = re.compile(r"[^\s;(]+")  # of Content-Transfer-Encoding, before any comment

# (group display name or None for addresses outside a group, [(name, addr-spec)])
_AddressGroup = tuple[str | None, list[tuple[str, str]]]


@dataclass(frozen=True, slots=True)
class Address:
    """A decoded address for display and API columns."""

    name: str | None  # display name, RFC 2047-decoded
    email: str  # "local@domain" as given; "" for an empty group or garbage


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    """An attachment of the outer message (not of attached messages)."""

    part: str  # IMAP part number, e.g. "2" or "1.3"
    filename: str | None  # decoded (RFC 2231 and RFC 2047 forms)
    content_type: str  # lower-case, e.g. "application/pdf"
    size: int  # octets after transfer decoding
    content_id: str | None  # as in the header, e.g. "<logo@example>"
    inline: bool  # Content-Disposition inline, or an undisposed part with a Content-ID


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """Everything derived from one raw message; see the module docstring."""

    subject: str | None
    from_: list[Address]
    sender: list[Address]
    reply_to: list[Address]
    to: list[Address]
    cc: list[Address]
    bcc: list[Address]
    date: datetime | None  # aware; None if missing or unparseable
    message_id: str | None
    in_reply_to: str | None
    references: list[str]
    envelope: dict[str, Any]
    bodystructure: dict[str, Any]
    attachments: list[AttachmentInfo]
    text: str  # full-text search text, at most MAX_SEARCH_TEXT characters
    text_body: str | None  # the first text/plain body, at most MAX_BODY_BYTES of it decoded
    html_body: str | None  # the first text/html body, likewise
    header_end: int  # offset of the body in raw; len(raw) if there is no body
    has_8bit_headers: bool
    # The limits of relate.mail.limits this message reached (names from limits.NOTES), sorted; empty for real mail.
    limits: tuple[str, ...] = ()

    @property
    def truncated(self) -> bool:
        """Whether text_body or html_body holds only the first MAX_BODY_BYTES of its part."""
        return "body-bytes" in self.limits

    def to_json(self) -> dict[str, Any]:
        """Return all fields as JSON-serialisable values (date as ISO 8601)."""
        data = dataclasses.asdict(self)
        data["date"] = None if self.date is None else self.date.isoformat()
        data["limits"] = list(self.limits)
        return data


@dataclass
class _Entity:
    """One MIME entity as found by the scanner."""

    header_start: int
    body_start: int
    end: int
    fields: dict[str, bytes]  # lower-cased name -> first occurrence's raw (folded) value, for the names of _FIELDS
    maintype: str = "text"
    subtype: str = "plain"
    params: dict[str, str] = field(default_factory=dict)
    encoding: str = "7bit"
    disposition: str | None = None
    disposition_params: dict[str, str] = field(default_factory=dict)
    children: list[_Entity] = field(default_factory=list)
    message: _Entity | None = None  # the encapsulated message of message/rfc822

    @property
    def content_type(self) -> str:
        return f"{self.maintype}/{self.subtype}"

    @property
    def filename(self) -> str | None:
        # RFC 2183 §2.3 filename, else the older Content-Type "name" parameter (both already decoded).
        return self.disposition_params.get("filename") or self.params.get("name") or None


class _Context:
    """One parse's limits reached, and what it may still spend on header values read by Python-level parsers.

    The fast paths (regular expressions) cost nothing here; the general parsers of address lists and
    parameters and the encoded-word decoder spend the length of what they read, at most
    MAX_HEADER_WORK characters per message. Past that, values are left unparsed or undecoded.
    """

    __slots__ = ("left", "notes")

    def __init__(self) -> None:
        self.notes: set[str] = set()
        self.left = MAX_HEADER_WORK

    def spend(self, text: str) -> bool:
        """Whether ``text`` may be read; False (and "header-work" noted) once the budget is spent."""
        if len(text) > self.left:
            self.notes.add("header-work")
            self.left = 0
            return False
        self.left -= len(text)
        return True

    def decode(self, text: str) -> str:
        """``text`` with its encoded words decoded, within the budget."""
        if "=?" not in text or not self.spend(text):
            return text
        return encoded_words.decode(text, self.notes)


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse ``raw`` once; never raises (see the module docstring)."""
    ctx = _Context()
    root = _parse_tree(raw, ctx)
    fields = root.fields
    addresses, routes = _address_headers(fields, ctx)
    collector = _Collector(raw, ctx.notes)
    for leaf, number, searchable, outer in _leaves(root):
        collector.add(leaf, number, searchable, outer)
    subject = _field_value(fields, "subject")
    return ParsedMessage(
        subject=None if subject is None else ctx.decode(subject),
        from_=_decoded_addresses(addresses["from"], ctx),
        sender=_decoded_addresses(addresses["sender"], ctx),
        reply_to=_decoded_addresses(addresses["reply-to"], ctx),
        to=_decoded_addresses(addresses["to"], ctx),
        cc=_decoded_addresses(addresses["cc"], ctx),
        bcc=_decoded_addresses(addresses["bcc"], ctx),
        date=headers.parse_date(_field_value(fields, "date")),
        message_id=_field_value(fields, "message-id") or None,
        in_reply_to=_field_value(fields, "in-reply-to") or None,
        references=headers.message_ids(_field_value(fields, "references")),
        envelope=_envelope(fields, addresses, routes),
        bodystructure=_bodystructure(raw, root, ctx),
        attachments=collector.attachments,
        text="\n".join(collector.search)[:MAX_SEARCH_TEXT],
        text_body=collector.text_body,
        html_body=collector.html_body,
        header_end=root.body_start,
        has_8bit_headers=_NON_ASCII.search(raw, 0, root.body_start) is not None,
        limits=tuple(sorted(ctx.notes)),
    )


# --- structure scanner ---------------------------------------------------------


def _entity(raw: bytes, start: int, end: int, default: tuple[str, str], ctx: _Context) -> _Entity:
    """The entity in raw[start:end]: its header section, content type and disposition (not its children)."""
    section = headers.scan(raw, start, end)
    fields: dict[str, bytes] = {}
    for name, value in headers.fields(raw, section, _FIELDS, ctx.notes):
        fields.setdefault(name, value)
    ent = _Entity(start, section.body, end, fields)
    content_type = _field_value(fields, "content-type")
    parsed_type = None if content_type is None else _content_type(content_type, ctx)
    if parsed_type is not None:
        ent.maintype, ent.subtype, ent.params = parsed_type
    else:  # RFC 2045 §5.2: absent or invalid is text/plain (RFC 2046 §5.1.5: message/rfc822 inside a digest)
        ent.maintype, ent.subtype = default if content_type is None else ("text", "plain")
        ent.params = {"charset": "us-ascii"} if ent.maintype == "text" else {}
    encoding = _FIRST_TOKEN.match(_field_value(fields, "content-transfer-encoding") or "")
    ent.encoding = encoding.group().lower() if encoding and encoding.group() else "7bit"
    disposition = _field_value(fields, "content-disposition")
    if disposition is not None and ctx.spend(disposition):
        parsed = structured.parse_parameters(disposition, content_type=False)
        if parsed.value:
            ent.disposition, ent.disposition_params = parsed.value, parsed.params
    return ent


def _parse_tree(raw: bytes, ctx: _Context) -> _Entity:
    """Scan the MIME tree of ``raw`` without recursion (an explicit stack, at most MAX_MIME_DEPTH deep).

    Each multipart level scans its own body for its boundary, so the scan costs
    at most MAX_MIME_DEPTH times the message size; at most MAX_PARTS entities
    are made. A multipart past either limit, or without a usable boundary,
    becomes one opaque text/plain leaf (its body is served as it is).
    """
    notes = ctx.notes
    root = _entity(raw, 0, len(raw), ("text", "plain"), ctx)
    count = 1
    stack: list[tuple[_Entity, int]] = [(root, 0)]
    while stack:
        ent, depth = stack.pop()
        if ent.maintype == "multipart":
            boundary = ent.params.get("boundary", "")
            spans: list[tuple[int, int]] = []
            if depth >= MAX_MIME_DEPTH:
                notes.add("mime-depth")
            elif count >= MAX_PARTS:
                notes.add("parts")
            elif len(boundary) > MAX_BOUNDARY:
                notes.add("boundary")
            elif boundary:
                spans = _split_multipart(raw, boundary.encode("utf-8", "surrogateescape"), ent.body_start, ent.end)
            if spans:
                if len(spans) > MAX_PARTS - count:
                    notes.add("parts")
                    del spans[MAX_PARTS - count :]
                child_default = ("message", "rfc822") if ent.subtype == "digest" else ("text", "plain")
                ent.children = [_entity(raw, s, e, child_default, ctx) for s, e in spans]
                count += len(spans)
                stack.extend((child, depth + 1) for child in reversed(ent.children))
            else:  # no usable delimiter: keep the body as one opaque text leaf
                ent.maintype, ent.subtype, ent.params = "text", "plain", {"charset": "us-ascii"}
        elif (
            ent.maintype == "message"
            and ent.subtype in ("rfc822", "global")  # RFC 2046 §5.2.1, RFC 6532 §3.7
            and ent.encoding in transfer.IDENTITY
        ):
            if depth >= MAX_MIME_DEPTH:
                notes.add("mime-depth")
            elif count >= MAX_PARTS:
                notes.add("parts")
            else:
                ent.message = _entity(raw, ent.body_start, ent.end, ("text", "plain"), ctx)
                count += 1
                stack.append((ent.message, depth + 1))
    return root


def _split_multipart(raw: bytes, boundary: bytes, start: int, end: int) -> list[tuple[int, int]]:
    """Return (start, end) of each body part of the multipart body raw[start:end].

    RFC 2046 §5.1.1: a delimiter is "--" boundary at the start of a line, optionally
    followed by "--" (close delimiter) and transport padding; the CRLF preceding it
    belongs to the delimiter. Preamble and epilogue are ignored. Without a close
    delimiter the last part runs to ``end``. Only line starts are candidates: the
    scan is ``bytes.find`` for the line break before the delimiter, and one fixed
    regular expression checks what follows it (a pattern per boundary would be
    compiled anew for every message: the boundaries differ).
    """
    spans: list[tuple[int, int]] = []
    part_start: int | None = None
    found = _delimiter(raw, b"--" + boundary, start, end, first=True)
    while found is not None:
        at, after, closing = found
        if part_start is not None:
            part_end = at
            if part_end > start and raw[part_end - 1] == 0x0A:
                part_end -= 1
                if part_end > start and raw[part_end - 1] == 0x0D:
                    part_end -= 1
            spans.append((part_start, max(part_start, part_end)))
        if closing:
            return spans
        part_start = after
        found = _delimiter(raw, b"--" + boundary, after, end, first=False)
    if part_start is not None:
        spans.append((part_start, end))
    return spans


# What may follow "--" boundary on a delimiter line: "--" if it closes, transport padding, the line end.
_DELIMITER_TAIL = re.compile(rb"(--)?[ \t]*(?:\r?\n|\Z)")


def _delimiter(raw: bytes, dashed: bytes, pos: int, end: int, *, first: bool) -> tuple[int, int, bool] | None:
    """The first delimiter line (``dashed`` is "--" boundary) from ``pos`` on: where it starts, where the
    line after it starts, and whether it is the close delimiter; with ``first``, it may start at ``pos``."""
    if first and raw.startswith(dashed, pos, end):
        tail = _DELIMITER_TAIL.match(raw, pos + len(dashed), end)
        if tail is not None:
            return pos, tail.end(), tail.group(1) is not None
    needle = b"\n" + dashed
    at = raw.find(needle, pos, end)
    while at != -1:
        tail = _DELIMITER_TAIL.match(raw, at + len(needle), end)
        if tail is not None:
            return at + 1, tail.end(), tail.group(1) is not None
        at = raw.find(needle, at + 1, end)
    return None


def _leaves(root: _Entity) -> Iterator[tuple[_Entity, str, bool, bool]]:
    """Yield (leaf, IMAP part number, searchable, in the outer message) in document order, without recursion.

    RFC 9051 §6.4.5 part numbering; the body of a non-multipart message is part 1.
    """
    stack: list[tuple[_Entity, str, bool, bool]] = [(root, "", True, True)]
    while stack:
        ent, number, searchable, outer = stack.pop()
        if ent.children:
            # RFC 2046 §5.1.4: alternatives carry the same content; index the plain text one.
            has_plain = ent.subtype == "alternative" and any(c.content_type == "text/plain" for c in ent.children)
            children = []
            for i, child in enumerate(ent.children, 1):
                child_searchable = searchable and (not has_plain or child.content_type == "text/plain")
                children.append((child, f"{number}.{i}" if number else str(i), child_searchable, outer))
            stack.extend(reversed(children))
            continue
        part = number or "1"
        yield ent, part, searchable, outer
        if ent.message is not None:
            inner = ent.message
            stack.append((inner, part if inner.children else f"{part}.1", searchable, False))


# --- headers -------------------------------------------------------------------


def _field_value(fields: dict[str, bytes], name: str) -> str | None:
    """The unfolded (RFC 5322 §2.2.3), undecoded value of a field, or None if absent."""
    value = fields.get(name)
    return None if value is None else headers.unfold(value)


def _address_headers(
    fields: dict[str, bytes], ctx: _Context
) -> tuple[dict[str, list[_AddressGroup] | None], dict[str, dict[str, str]]]:
    """Parse each address field once; None where the field is absent. Also each field's source routes by addr-spec."""
    parsed: dict[str, list[_AddressGroup] | None] = {}
    routes: dict[str, dict[str, str]] = {}
    for name in _ADDRESS_FIELDS:
        value = _field_value(fields, name)
        if value is None:
            parsed[name] = None
            continue
        parsed[name] = _address_list(value, ctx, routes.setdefault(name, {}))
    return parsed, routes


# Fast paths for the common simple forms of two fields. Each accepts only input on which it gives
# exactly what the general parser (relate.mail.structured) gives (tests compare both on a corpus and
# on generated input); anything else takes the general path. Each is checked with a pattern whose every
# repetition is possessive (what one matched is never tried again, so a failing match costs time linear in
# the value) and without capturing groups (CPython 3.11's re mishandles groups in possessive repeats),
# then read with a capturing pattern that is only ever applied to input the check accepted.
# RFC 2045 §5.1 tokens of the usual characters only (no "*", "'" or "%": RFC 2231 forms).
_MIME_TOKEN = r"[A-Za-z0-9._+-]++"  # noqa: S105 - a pattern, not a password
# A quoted value of printable ASCII without backslash (quoted-pair) or "=?" (encoded words).
_QUOTED_VALUE = r'"(?:[\x20\x21\x23-\x3c\x3e-\x5b\x5d-\x7e]|=(?!\?))*+"'
_CT_PARAM = rf"[ \t]*+;[ \t]*+{_MIME_TOKEN}=(?:{_MIME_TOKEN}|{_QUOTED_VALUE})"
_SIMPLE_CONTENT_TYPE = re.compile(rf"{_MIME_TOKEN}/{_MIME_TOKEN}(?:{_CT_PARAM})*+")
_CT_HEAD = re.compile(rf"({_MIME_TOKEN})/({_MIME_TOKEN})")
_CT_PARAMS = re.compile(rf"[ \t]*;[ \t]*({_MIME_TOKEN})=({_MIME_TOKEN}|{_QUOTED_VALUE})")


def _simple_content_type(value: str) -> tuple[str, str, dict[str, str]] | None:
    """(maintype, subtype, params) of a plain ``type/subtype; name=value`` field, else None."""
    if _SIMPLE_CONTENT_TYPE.fullmatch(value) is None:
        return None
    match = _CT_HEAD.match(value)
    assert match is not None  # the check above accepted it
    params: dict[str, str] = {}
    for name, raw in _CT_PARAMS.findall(value, match.end()):
        key = name.lower()
        if key in params:
            return None  # repeated parameter: the general parser's choice applies
        params[key] = raw[1:-1] if raw.startswith('"') else raw
    return match.group(1).lower(), match.group(2).lower(), params


def _content_type(value: str, ctx: _Context | None = None) -> tuple[str, str, dict[str, str]] | None:
    """(maintype, subtype, params) of a Content-Type value, or None when it is invalid (RFC 2045 §5.2)."""
    simple = _simple_content_type(value)
    if simple is not None:
        return simple
    if ctx is not None and not ctx.spend(value):
        return None
    parsed = structured.parse_parameters(value, content_type=True)
    if not parsed.value:
        return None
    maintype, _, subtype = parsed.value.partition("/")
    return maintype, subtype, parsed.params


# Mailboxes (RFC 5322 §3.4) of the simple forms: addr-spec, <addr-spec>, and a display name of atoms
# (dots allowed, as in obsolete phrases) or one quoted string without quoted-pairs, then <addr-spec>.
# Non-ASCII characters count as atext (RFC 6532 §3.2). Each class is written as the complement of the ASCII
# characters it leaves out: the same set as "[A-Za-z0-9!#...\u0080-\U0010ffff]", compiled 100 times faster
# (a range up to U+10FFFF costs the compiler ~9 ms a class, 0.2 s for this module at every start).
_ATEXT = r"[^\x00-\x20\x22\x28\x29\x2c\x2e\x3a-\x3c\x3e\x40\x5b-\x5d\x7f]"  # RFC 5322 atext, and non-ASCII
_LABEL = r"[^\x00-\x2c\x2e\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]++"  # letters, digits, "-", and non-ASCII
_ADDR_SPEC = rf"{_ATEXT}++(?:\.{_ATEXT}++)*+@{_LABEL}(?:\.{_LABEL})*+"
_PHRASE_ATOM = r"[^\x00-\x20\x22\x28\x29\x2c\x3a-\x3c\x3e\x40\x5b-\x5d\x7f]++"  # atext and "."
_DISPLAY = rf'(?:{_PHRASE_ATOM}(?:[ \t]++{_PHRASE_ATOM})*+|"[^\x00-\x1f\x22\x5c\x7f]*+")'
_MAILBOX = rf"(?:{_ADDR_SPEC}|(?:{_DISPLAY}[ \t]*+)?<{_ADDR_SPEC}>)"
_SIMPLE_ADDRESS_LIST = re.compile(rf"[ \t]*+{_MAILBOX}(?:[ \t]*+,[ \t]*+{_MAILBOX})*+[ \t]*+")
_MAILBOXES = re.compile(rf"({_ADDR_SPEC})|(?:({_DISPLAY})[ \t]*)?<({_ADDR_SPEC})>")


def _simple_address_list(value: str) -> list[_AddressGroup] | None:
    """:func:`_address_list` of a list of simple mailboxes (no groups, comments or escapes), else None."""
    if _SIMPLE_ADDRESS_LIST.fullmatch(value) is None:
        return None
    members: list[tuple[str, str]] = []
    for bare, display, angled in _MAILBOXES.findall(value):
        if len(members) == MAX_ADDRESSES:
            return None  # the general parser reports the limit
        if bare:
            members.append(("", bare))
        elif display.startswith('"'):
            members.append((display[1:-1], angled))
        else:
            members.append((" ".join(display.split()), angled))
    return [(None, members)]


def _address_list(value: str, ctx: _Context | None = None, routes: dict[str, str] | None = None) -> list[_AddressGroup]:
    """The groups of an address-list (RFC 5322 §3.4): (group name or None, [(display name, addr-spec)]).

    ``routes``, if given, gets the source route written before an addr-spec (RFC 5322 §4.4), by addr-spec.
    """
    simple = _simple_address_list(value)
    if simple is not None:
        return simple
    if ctx is not None and not ctx.spend(value):
        return []
    result = structured.parse_address_list(value)
    if ctx is not None:
        if "too-many" in result.problems:
            ctx.notes.add("addresses")
        if "nesting" in result.problems:
            ctx.notes.add("nesting")
    if routes is not None:
        routes.update(result.routes)
    return result.groups


def _imap_addresses(
    groups: list[_AddressGroup] | None, routes: dict[str, str] | None = None
) -> list[list[str | None]] | None:
    """RFC 9051 §7.5.2 address structures [name, adl, mailbox, host]; None for NIL.

    adl is the source route (``@route``) written before the address, if any (RFC 5322 §4.4 obs-route).
    """
    out: list[list[str | None]] = []
    for group, members in groups or []:
        if group is not None:
            out.append([None, None, group, None])  # start of group
        for name, addr in members:
            local, at, domain = addr.rpartition("@")
            route = routes.get(addr) if routes else None
            out.append([name or None, route, local if at else addr, domain if at else ""])
        if group is not None:
            out.append([None, None, None, None])  # end of group
    return out or None


def _decoded_addresses(groups: list[_AddressGroup] | None, ctx: _Context) -> list[Address]:
    """Group members flattened; an empty group is kept as its name with no address."""
    out: list[Address] = []
    for group, members in groups or []:
        if group and not members:
            out.append(Address(ctx.decode(group), ""))
        out.extend(Address(ctx.decode(name) or None, addr) for name, addr in members)
    return out


def _envelope(
    fields: dict[str, bytes], addresses: dict[str, list[_AddressGroup] | None], routes: dict[str, dict[str, str]]
) -> dict[str, Any]:
    """RFC 9051 §7.5.2 ENVELOPE; strings are unfolded but not RFC 2047-decoded."""

    def field(name: str) -> list[list[str | None]] | None:
        return _imap_addresses(addresses[name], routes.get(name))

    from_ = field("from")
    return {
        "date": _field_value(fields, "date"),
        "subject": _field_value(fields, "subject"),
        "from": from_,
        # RFC 9051 §7.5.2: an absent Sender or Reply-To defaults to From.
        "sender": field("sender") or from_,
        "reply_to": field("reply-to") or from_,
        "to": field("to"),
        "cc": field("cc"),
        "bcc": field("bcc"),
        "in_reply_to": _field_value(fields, "in-reply-to"),
        "message_id": _field_value(fields, "message-id"),
    }


# --- BODYSTRUCTURE ---------------------------------------------------------------


def _bodystructure(raw: bytes, ent: _Entity, ctx: _Context) -> dict[str, Any]:
    """RFC 9051 §7.5.2 BODYSTRUCTURE fields plus absolute offsets into raw.

    Recursive, but no deeper than the tree, which _parse_tree keeps within MAX_MIME_DEPTH levels.
    """
    fields = ent.fields
    disposition = None
    if ent.disposition is not None:
        disposition = [ent.disposition, [[k, v] for k, v in ent.disposition_params.items()]]
    language = _field_value(fields, "content-language")  # RFC 3282 §2: comma-separated tags
    tags = [tag.strip() for tag in language.split(",") if tag.strip()] if language else []
    extension = {
        "disposition": disposition,
        "language": tags or None,
        "location": _field_value(fields, "content-location"),
        "header_start": ent.header_start,
        "body_start": ent.body_start,
        "end": ent.end,
    }
    params = [[k, v] for k, v in ent.params.items()]
    if ent.children:
        return {
            "type": ent.maintype,
            "subtype": ent.subtype,
            "params": params,
            "parts": [_bodystructure(raw, child, ctx) for child in ent.children],
            **extension,
        }
    node: dict[str, Any] = {
        "type": ent.maintype,
        "subtype": ent.subtype,
        "params": params,
        "id": _field_value(fields, "content-id"),
        "description": _field_value(fields, "content-description"),
        "encoding": ent.encoding,
        "size": ent.end - ent.body_start,
        # body-fld-lines exists only in body-type-text and body-type-msg (RFC 9051 §9).
        "lines": _count_lines(raw, ent.body_start, ent.end)
        if ent.maintype == "text" or ent.message is not None
        else None,
        "md5": _field_value(fields, "content-md5"),
        **extension,
    }
    if ent.message is not None:
        inner = ent.message
        node["message"] = {
            "envelope": _envelope(inner.fields, *_address_headers(inner.fields, ctx)),
            "body": _bodystructure(raw, inner, ctx),
        }
    return node


def _count_lines(raw: bytes, start: int, end: int) -> int:
    """Line endings in raw[start:end]; a final unterminated line counts too."""
    if start >= end:
        return 0
    lines = raw.count(b"\n", start, end)
    return lines if raw[end - 1] == 0x0A else lines + 1


# --- content: attachments, display bodies, search text ---------------------------


class _Collector:
    """Visits the leaves once, decoding at most MAX_BODY_BYTES of each text part and counting attachments."""

    def __init__(self, raw: bytes, notes: set[str]) -> None:
        self.raw = raw
        self.notes = notes
        self.attachments: list[AttachmentInfo] = []
        self.text_body: str | None = None
        self.html_body: str | None = None
        self.search: list[str] = []
        self._budget = MAX_SEARCH_TEXT  # characters of search text still wanted
        self._html_budget = MAX_HTML_SCAN  # characters of HTML still to be read for search text, per message

    def add(self, leaf: _Entity, number: str, searchable: bool, outer: bool) -> None:
        filename = leaf.filename
        content_id = _field_value(leaf.fields, "content-id")
        attached, inline = _classify(leaf, filename, content_id)
        if attached:
            if outer:
                size = transfer.decoded_size(self.raw, leaf.body_start, leaf.end, leaf.encoding)
                self.attachments.append(AttachmentInfo(number, filename, leaf.content_type, size, content_id, inline))
            return
        if leaf.content_type not in ("text/plain", "text/html"):
            return
        is_html = leaf.subtype == "html"
        display = outer and (self.html_body if is_html else self.text_body) is None
        search = searchable and self._budget > 0 and (not is_html or self._html_budget > 0)
        if not (display or search):
            return
        # For search alone, no more octets than the characters still wanted can take (4 each in UTF-8).
        wanted = self._html_budget if is_html else self._budget
        limit = MAX_BODY_BYTES if display else min(MAX_BODY_BYTES, 4 * wanted + 4)
        data, cut = transfer.decode(self.raw, leaf.body_start, leaf.end, leaf.encoding, limit)
        if cut and display:
            self.notes.add("body-bytes")
        text = _decode_text(data, leaf.params.get("charset") or "us-ascii", final=not cut)
        del data
        if display and is_html:
            self.html_body = text
        elif display:
            self.text_body = text
        if search:
            if is_html:
                if len(text) > self._html_budget:
                    self.notes.add("html-scan")
                scanned = text[: self._html_budget]
                self._html_budget -= len(scanned)
                text = htmltext.visible_text(scanned)
            chunk = text[: self._budget]
            self._budget -= len(chunk) + 1
            self.search.append(chunk)


def _classify(leaf: _Entity, filename: str | None, content_id: str | None) -> tuple[bool, bool]:
    """Return (is an attachment, is inline), following RFC 2183 §2 where present."""
    if leaf.disposition == "attachment":
        return True, False
    if leaf.disposition == "inline":
        return filename is not None or content_id is not None or leaf.maintype != "text", True
    if leaf.maintype == "text" and filename is None:
        return False, False  # undisposed, unnamed text is body text
    return True, content_id is not None  # e.g. an image referenced from multipart/related


def _decode_text(data: bytes, label: str, *, final: bool = True) -> str:
    """Decode with the declared charset, else UTF-8, else latin-1 (never fails).

    With ``final`` false the data was cut: a character split at the end is dropped, not an error.
    """
    for name in (charset.codec(label), "utf-8"):
        if name is None:
            continue
        try:
            return codecs.getincrementaldecoder(name)("strict").decode(data, final)
        except ValueError:  # bytes invalid in that charset (UnicodeDecodeError is a ValueError)
            continue
    return data.decode("latin-1")


def part_content(raw: bytes, part: str) -> bytes | None:
    """The transfer-decoded content of leaf ``part`` (IMAP numbering, e.g. ``"2"`` or ``"1.3"``), or None.

    Linear in the size of ``raw``; the result is decoded a chunk at a time into one buffer.
    """
    for leaf, number, _, _ in _leaves(_parse_tree(raw, _Context())):
        if number == part:
            return transfer.decode(raw, leaf.body_start, leaf.end, leaf.encoding)[0]
    return None


# --- the submission check: what a reader may show as the sender ------------------

_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Something a reader could take for an address, wherever it stands (full-width at signs included).
_ADDRESS_LIKE = re.compile(r"[^\s\"<>()\[\],;:@\uff20\ufe6b]+[@\uff20\ufe6b][^\s\"<>()\[\],;:@\uff20\ufe6b]+")


@functools.lru_cache(maxsize=16)
def _field_names(name: str) -> headers.FieldNames:
    """The FieldNames of one field (its expression compiled once per name, not per message)."""
    return headers.FieldNames((name,))


def _unsafe(head: bytes, stop: int) -> bool:
    """Whether head[:stop] has a NUL (it ends strings in some readers) or a bare CR (a line break to some): a CR
    that no LF follows within it, i.e. fewer CRLF pairs than CRs. Counted in C, not by a regular expression
    (which steps through every byte in Python's engine)."""
    return head.find(b"\x00", 0, stop) >= 0 or head.count(b"\r", 0, stop) != head.count(b"\r\n", 0, stop)


def field_addresses(head: bytes, name: str) -> list[str] | None:
    """Every address a mail client could show for field ``name`` (e.g. "From", "Sender"), or None.

    ``head`` is the message's header section, or the whole message (only the
    part before the first empty line is read). The answer is meant for the
    check that a submitted message names only its author's addresses, so it
    errs towards None:

    - The result lists, in order and without repeats, the addr-spec of every
      mailbox in every occurrence of the field (group members included), and
      anything that looks like an address in a display name, a group name or
      a comment once encoded words are decoded (``"bob@example.org"
      <mallory@example.net>`` gives both). Addresses are as written, not
      normalised. An absent field gives [].
    - None when a reader could take the header another way: a line that is
      neither a field nor a continuation before the empty line, a leading
      mbox ``From`` line, a bare CR or NUL, a value that is not UTF-8 or holds
      control characters; unbalanced quotes, comments, brackets or angle
      brackets, comments nested deeper than MAX_NESTING, a source route, text
      after an address, an encoded word inside an address; the field's values
      together over MAX_SENDER_FIELD_BYTES, more than MAX_ADDRESSES addresses
      or MAX_ENCODED_WORDS encoded words.

    Cheap enough for an event loop: the header is scanned by regular
    expressions, and at most MAX_SENDER_FIELD_BYTES of it are parsed in Python.
    Raises ValueError only for a ``name`` that is not a field name.
    """
    if _FIELD_NAME.fullmatch(name) is None:
        raise ValueError(f"not a header field name: {name!r}")
    if head.startswith(b"From "):
        return None
    section = headers.scan(head, 0, len(head))
    if section.body == section.stop < len(head) or _unsafe(head, section.stop):
        return None  # the section ended at a line that is not a field: a reader may read on
    notes: set[str] = set()
    found: dict[str, None] = {}
    size = 0
    for _, raw_value in headers.fields(head, section, _field_names(name), notes):
        size += len(raw_value)
        if size > MAX_SENDER_FIELD_BYTES:
            return None
        try:
            raw_value.decode("utf-8")
        except UnicodeDecodeError:
            return None
        value = headers.unfold(raw_value)
        if _CONTROL.search(value) is not None:
            return None
        groups = _simple_address_list(value)  # the common forms without the general parser (same answer)
        texts: list[str] = []
        if groups is None:
            parsed = structured.parse_address_list(value)
            if parsed.problems:
                return None
            groups, texts = parsed.groups, list(parsed.comments)
        for group, members in groups:
            if group:
                texts.append(group)
            for display, addr in members:
                if "=?" in addr:
                    return None
                if addr:
                    found.setdefault(addr)
                texts.append(display)
        for text in texts:
            decoded = encoded_words.decode(text, notes) if "=?" in text else text
            if "@" not in decoded and "\uff20" not in decoded and "\ufe6b" not in decoded:
                continue  # no at sign of _ADDRESS_LIKE's: it finds nothing (in time quadratic in a long name)
            for match in _ADDRESS_LIKE.finditer(decoded):
                found.setdefault(match.group())
    if notes:  # a limit was reached: part of the field went unread
        return None
    return list(found)
