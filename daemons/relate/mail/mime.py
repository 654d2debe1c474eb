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
* The MIME tree is found by one scanner over the raw bytes (RFC 2046 §5.1.1), so
  offsets are exact. Every node satisfies
  ``0 <= header_start <= body_start <= end <= len(raw)``.
* The ``email`` package only interprets single header fields and transfer-decodes
  single part bodies that the scanner delimited, so decoded data and offsets
  always describe the same tree, even when the MIME structure is broken.
* Input is never modified. The module does no I/O and uses only the standard library.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.policy
import email.utils
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import ContentDispositionHeader, ContentTypeHeader
from email.message import Message
from html.parser import HTMLParser
from typing import Any

__all__ = ["Address", "AttachmentInfo", "ParsedMessage", "parse_message"]

_MAX_TEXT = 1 << 20  # characters of search text kept per message
_HTML_CHUNK = 1 << 16  # HTML is fed to html.parser (slow) in chunks, stopping when the text is full
_MAX_DEPTH = 50  # deeper MIME nesting is kept as an opaque leaf (no recursion limit hit)

# RFC 5322 §3.6.8: field-name is printable US-ASCII except ":"; obsolete syntax
# (RFC 5322 §4.5) allows white space before the colon.
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_LINE_BREAK = re.compile(rb"\r?\n")
_MSG_ID = re.compile(r"<[^<>\s]+>")
_IDENTITY_ENCODINGS = frozenset({"7bit", "8bit", "binary"})  # RFC 2045 §6.2
_ADDRESS_FIELDS = ("from", "sender", "reply-to", "to", "cc", "bcc")
_HTML_BREAKS = frozenset(  # tags that separate words in the rendered text
    {"br", "hr", "p", "div", "blockquote", "pre", "li", "tr", "td", "th", "title", "h1", "h2", "h3", "h4", "h5", "h6"}
)

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
    text: str  # full-text search text, at most 1 MiB characters
    text_body: str | None
    html_body: str | None
    header_end: int  # offset of the body in raw; len(raw) if there is no body
    has_8bit_headers: bool

    def to_json(self) -> dict[str, Any]:
        """Return all fields as JSON-serialisable values (date as ISO 8601)."""
        data = dataclasses.asdict(self)
        data["date"] = None if self.date is None else self.date.isoformat()
        return data


@dataclass
class _Entity:
    """One MIME entity as found by the scanner."""

    header_start: int
    body_start: int
    end: int
    fields: dict[str, bytes]  # lower-cased name -> first occurrence's raw (folded) value
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
        # RFC 2183 §2.3 filename, else the older Content-Type "name" parameter.
        name = self.disposition_params.get("filename") or self.params.get("name")
        return _decode_words(name) if name else None


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse ``raw`` once; never raises (see the module docstring)."""
    root = _parse_entity(raw, 0, len(raw), ("text", "plain"), 0)
    fields = root.fields
    addresses = _address_headers(fields)
    collector = _Collector(raw)
    for leaf, number, searchable, outer in _leaves(root, "", True, True):
        collector.add(leaf, number, searchable, outer)
    subject = _field_value(fields, "subject")
    return ParsedMessage(
        subject=None if subject is None else _decode_words(subject),
        from_=_decoded_addresses(addresses["from"]),
        sender=_decoded_addresses(addresses["sender"]),
        reply_to=_decoded_addresses(addresses["reply-to"]),
        to=_decoded_addresses(addresses["to"]),
        cc=_decoded_addresses(addresses["cc"]),
        bcc=_decoded_addresses(addresses["bcc"]),
        date=_date(_field_value(fields, "date")),
        message_id=_field_value(fields, "message-id") or None,
        in_reply_to=_field_value(fields, "in-reply-to") or None,
        references=_MSG_ID.findall(_field_value(fields, "references") or ""),
        envelope=_envelope(fields, addresses),
        bodystructure=_bodystructure(raw, root),
        attachments=collector.attachments,
        text="\n".join(collector.search)[:_MAX_TEXT],
        text_body=collector.text_body,
        html_body=collector.html_body,
        header_end=root.body_start,
        has_8bit_headers=not raw[: root.body_start].isascii(),
    )


# --- structure scanner ---------------------------------------------------------


def _scan_header(raw: bytes, start: int, end: int) -> tuple[dict[str, bytes], int]:
    """Read the header section at ``start``; return its fields and where the body starts.

    RFC 5322 §2.1: the first empty line (CRLF or bare LF) ends the header section.
    A line that is neither a field nor a continuation also ends it (missing
    separator); the body then starts at that line.
    """
    fields: dict[str, bytes] = {}
    name: str | None = None
    value_start = value_end = pos = start
    body = end
    while pos < end:
        newline = raw.find(b"\n", pos, end)
        stop = end if newline < 0 else newline + 1
        line_end = stop
        while line_end > pos and raw[line_end - 1] in b"\r\n":
            line_end -= 1
        if line_end == pos:
            body = stop
            break
        if pos == 0 and raw.startswith(b"From "):  # mbox From_ line (RFC 4155), not a field
            pos = stop
            continue
        if name is not None and raw[pos] in b" \t":  # RFC 5322 §2.2.3 folded line
            value_end = line_end
        else:
            match = _FIELD_NAME.match(raw, pos, line_end)
            if match is None:
                body = pos
                break
            if name is not None:
                fields.setdefault(name, raw[value_start:value_end])
            name = match.group(1).decode("ascii").lower()
            value_start, value_end = match.end(), line_end
        pos = stop
    if name is not None:
        fields.setdefault(name, raw[value_start:value_end])
    return fields, body


def _parse_entity(raw: bytes, start: int, end: int, default: tuple[str, str], depth: int) -> _Entity:
    """Scan the entity in raw[start:end], recursing into multiparts and messages."""
    fields, body_start = _scan_header(raw, start, end)
    ent = _Entity(start, body_start, end, fields)
    content_type = _field_value(fields, "content-type")
    simple = None if content_type is None else _simple_content_type(content_type)
    header = None if content_type is None or simple is not None else _header("content-type", content_type)
    if simple is not None:
        ent.maintype, ent.subtype, ent.params = simple
    elif isinstance(header, ContentTypeHeader):
        ent.maintype, ent.subtype, ent.params = header.maintype, header.subtype, dict(header.params)
    else:  # RFC 2045 §5.2 default; RFC 2046 §5.1.5 inside a digest
        ent.maintype, ent.subtype = default if content_type is None else ("text", "plain")
        ent.params = {"charset": "us-ascii"} if ent.maintype == "text" else {}
    ent.encoding = (_field_value(fields, "content-transfer-encoding") or "7bit").lower()
    disposition = _field_value(fields, "content-disposition")
    header = None if disposition is None else _header("content-disposition", disposition)
    if isinstance(header, ContentDispositionHeader) and header.content_disposition:
        ent.disposition = header.content_disposition
        ent.disposition_params = dict(header.params)

    if ent.maintype == "multipart":
        boundary = ent.params.get("boundary", "")
        spans = []
        if boundary and depth < _MAX_DEPTH:
            spans = _split_multipart(raw, boundary.encode(), body_start, end)
        if spans:
            child_default = ("message", "rfc822") if ent.subtype == "digest" else ("text", "plain")
            ent.children = [_parse_entity(raw, s, e, child_default, depth + 1) for s, e in spans]
        else:  # no usable delimiter: keep the body as one opaque text leaf
            ent.maintype, ent.subtype, ent.params = "text", "plain", {"charset": "us-ascii"}
    elif (
        ent.maintype == "message"
        and ent.subtype in ("rfc822", "global")  # RFC 2046 §5.2.1, RFC 6532 §3.7
        and ent.encoding in _IDENTITY_ENCODINGS
        and depth < _MAX_DEPTH
    ):
        ent.message = _parse_entity(raw, body_start, end, ("text", "plain"), depth + 1)
    return ent


def _split_multipart(raw: bytes, boundary: bytes, start: int, end: int) -> list[tuple[int, int]]:
    """Return (start, end) of each body part of the multipart body raw[start:end].

    RFC 2046 §5.1.1: a delimiter is "--" boundary at the start of a line, optionally
    followed by "--" (close delimiter) and transport padding; the CRLF preceding it
    belongs to the delimiter. Preamble and epilogue are ignored. Without a close
    delimiter the last part runs to ``end``.
    """
    delimiter = re.compile(rb"--" + re.escape(boundary) + rb"(--)?[ \t]*(?:\r?\n|\Z)")
    spans: list[tuple[int, int]] = []
    part_start: int | None = None
    pos = start
    while (match := delimiter.search(raw, pos, end)) is not None:
        found, pos = match.start(), match.end()
        if found != start and raw[found - 1] != 0x0A:  # not at the start of a line
            continue
        if part_start is not None:
            part_end = found
            if part_end > start and raw[part_end - 1] == 0x0A:
                part_end -= 1
                if part_end > start and raw[part_end - 1] == 0x0D:
                    part_end -= 1
            spans.append((part_start, max(part_start, part_end)))
        if match.group(1):
            return spans
        part_start = pos
    if part_start is not None:
        spans.append((part_start, end))
    return spans


def _leaves(ent: _Entity, number: str, searchable: bool, outer: bool) -> Iterator[tuple[_Entity, str, bool, bool]]:
    """Yield (leaf, IMAP part number, searchable, in the outer message) in document order.

    RFC 9051 §6.4.5 part numbering; the body of a non-multipart message is part 1.
    """
    if ent.children:
        # RFC 2046 §5.1.4: alternatives carry the same content; index the plain text one.
        has_plain = ent.subtype == "alternative" and any(child.content_type == "text/plain" for child in ent.children)
        for i, child in enumerate(ent.children, 1):
            child_searchable = searchable and (not has_plain or child.content_type == "text/plain")
            yield from _leaves(child, f"{number}.{i}" if number else str(i), child_searchable, outer)
        return
    part = number or "1"
    yield ent, part, searchable, outer
    if ent.message is not None:
        inner = ent.message
        yield from _leaves(inner, part if inner.children else f"{part}.1", searchable, False)


# --- headers -------------------------------------------------------------------


def _text(value: bytes) -> str:
    """Decode raw header bytes: UTF-8 (RFC 6532) with a latin-1 fallback."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _field_value(fields: dict[str, bytes], name: str) -> str | None:
    """The unfolded (RFC 5322 §2.2.3), undecoded value of a field, or None if absent."""
    value = fields.get(name)
    if value is None:
        return None
    return _text((_LINE_BREAK.sub(b"", value) if b"\n" in value else value).strip())


def _header(name: str, value: str) -> object:
    """Interpret one field with the email package's header registry; None if that fails.

    The result is a ContentTypeHeader, ContentDispositionHeader, UnstructuredHeader...
    mixed with BaseHeader (a str subclass whose value is RFC 2047/2231-decoded).
    """
    try:
        header: object = email.policy.default.header_factory(name, value)
    except Exception:  # noqa: BLE001 - a complex parser fed hostile input must not abort ingest
        return None
    return header


# Fast paths for the common simple forms of two fields. Each accepts only input on which it gives
# exactly what the general parser gives (tests compare both on a corpus and on generated input);
# anything else takes the general path.
# RFC 2045 §5.1 tokens of the usual characters only (no "*", "'" or "%": RFC 2231 forms).
_MIME_TOKEN = r"[A-Za-z0-9._+-]+"  # noqa: S105 - a pattern, not a password
_PARAM_NAME = _MIME_TOKEN
# A quoted value of printable ASCII without backslash (quoted-pair) or "=?" (encoded words, which the
# email package decodes even there).
_QUOTED_VALUE = r'"(?:[\x20\x21\x23-\x3c\x3e-\x5b\x5d-\x7e]|=(?!\?))*"'
_CT_PARAM = rf"[ \t]*;[ \t]*({_PARAM_NAME})=({_MIME_TOKEN}|{_QUOTED_VALUE})"
_SIMPLE_CONTENT_TYPE = re.compile(rf"({_MIME_TOKEN})/({_MIME_TOKEN})((?:{_CT_PARAM})*)")
_CT_PARAMS = re.compile(_CT_PARAM)


def _simple_content_type(value: str) -> tuple[str, str, dict[str, str]] | None:
    """(maintype, subtype, params) of a plain ``type/subtype; name=value`` field, else None."""
    match = _SIMPLE_CONTENT_TYPE.fullmatch(value)
    if match is None:
        return None
    params: dict[str, str] = {}
    for name, raw in _CT_PARAMS.findall(match.group(3)):
        key = name.lower()
        if key in params:
            return None  # repeated parameter: the general parser's choice (and defect) apply
        params[key] = raw[1:-1] if raw.startswith('"') else raw
    return match.group(1).lower(), match.group(2).lower(), params


# Mailboxes (RFC 5322 §3.4) of the simple forms: addr-spec, <addr-spec>, and a display name of atoms
# (dots allowed, as in obsolete phrases) or one quoted string without quoted-pairs, then <addr-spec>.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_ADDR_SPEC = rf"{_ATEXT}+(?:\.{_ATEXT}+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PHRASE_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"
_DISPLAY = rf'(?:{_PHRASE_ATOM}(?:[ \t]+{_PHRASE_ATOM})*|"[\x20\x21\x23-\x5b\x5d-\x7e]*")'
_MAILBOX = rf"(?:({_ADDR_SPEC})|(?:({_DISPLAY})[ \t]*)?<({_ADDR_SPEC})>)"
_SIMPLE_ADDRESS_LIST = re.compile(rf"[ \t]*{_MAILBOX}(?:[ \t]*,[ \t]*{_MAILBOX})*[ \t]*")
_MAILBOXES = re.compile(_MAILBOX)


def _simple_address_list(value: str) -> list[_AddressGroup] | None:
    """:func:`_address_list` of a list of simple mailboxes (no groups, comments or escapes), else None."""
    if _SIMPLE_ADDRESS_LIST.fullmatch(value) is None:
        return None
    members: list[tuple[str, str]] = []
    for bare, display, angled in _MAILBOXES.findall(value):
        if bare:
            members.append(("", bare))
        elif display.startswith('"'):
            members.append((display[1:-1], angled))
        else:
            members.append((" ".join(display.split()), angled))
    return [(None, members)]


def _decode_words(value: str) -> str:
    """Decode RFC 2047 encoded-words; unknown charsets become U+FFFD."""
    if "=?" not in value:
        return value
    header = _header("subject", value)
    return value if header is None else str(header)


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):  # unparseable (type varies by Python version)
        return None
    # RFC 5322 §3.3: "-0000" means UTC without local-offset information.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _address_headers(fields: dict[str, bytes]) -> dict[str, list[_AddressGroup] | None]:
    """Parse each address field once; None where the field is absent."""
    parsed: dict[str, list[_AddressGroup] | None] = {}
    for name in _ADDRESS_FIELDS:
        value = _field_value(fields, name)
        parsed[name] = None if value is None else (_simple_address_list(value) or _address_list(value))
    return parsed


def _address_list(value: str) -> list[_AddressGroup]:
    """Split an address-list (RFC 5322 §3.4) into groups and ungrouped runs.

    ``getaddresses`` does not report group names, so groups are found here: a ":"
    or ";" outside quoted strings, comments and angle brackets. An unterminated
    group ends at the end of the field.
    """
    groups: list[_AddressGroup] = []
    group: str | None = None
    run = item = i = depth = 0  # run: start of pending text; item: start of current list item
    quoted = angle = False
    while i < len(value):
        char = value[i]
        if char == "\\" and (quoted or depth):  # quoted-pair
            i += 1
        elif quoted:
            quoted = char != '"'
        elif depth:
            depth += {"(": 1, ")": -1}.get(char, 0)
        elif char == '"':
            quoted = True
        elif char == "(":
            depth = 1
        elif char in "<>":
            angle = char == "<"
        elif angle:
            pass
        elif char == "," and group is None:
            item = i + 1
        elif char == ":" and group is None:
            groups.append((None, _mailboxes(value[run:item])))
            group, run = email.utils.unquote(value[item:i].strip()), i + 1
        elif char == ";" and group is not None:
            groups.append((group, _mailboxes(value[run:i])))
            group, run, item = None, i + 1, i + 1
        i += 1
    groups.append((group, _mailboxes(value[run:])))
    return [(name, members) for name, members in groups if name is not None or members]


def _mailboxes(text: str) -> list[tuple[str, str]]:
    if not text.strip():
        return []
    return [(name, addr) for name, addr in email.utils.getaddresses([text]) if name or addr]


def _imap_addresses(groups: list[_AddressGroup] | None) -> list[list[str | None]] | None:
    """RFC 9051 §7.5.2 address structures [name, adl, mailbox, host]; None for NIL."""
    out: list[list[str | None]] = []
    for group, members in groups or []:
        if group is not None:
            out.append([None, None, group, None])  # start of group
        for name, addr in members:
            local, at, domain = addr.rpartition("@")
            out.append([name or None, None, local if at else addr, domain if at else ""])
        if group is not None:
            out.append([None, None, None, None])  # end of group
    return out or None


def _decoded_addresses(groups: list[_AddressGroup] | None) -> list[Address]:
    """Group members flattened; an empty group is kept as its name with no address."""
    out: list[Address] = []
    for group, members in groups or []:
        if group and not members:
            out.append(Address(_decode_words(group), ""))
        out.extend(Address(_decode_words(name) or None, addr) for name, addr in members)
    return out


def _envelope(fields: dict[str, bytes], addresses: dict[str, list[_AddressGroup] | None]) -> dict[str, Any]:
    """RFC 9051 §7.5.2 ENVELOPE; strings are unfolded but not RFC 2047-decoded."""
    from_ = _imap_addresses(addresses["from"])
    return {
        "date": _field_value(fields, "date"),
        "subject": _field_value(fields, "subject"),
        "from": from_,
        # RFC 9051 §7.5.2: an absent Sender or Reply-To defaults to From.
        "sender": _imap_addresses(addresses["sender"]) or from_,
        "reply_to": _imap_addresses(addresses["reply-to"]) or from_,
        "to": _imap_addresses(addresses["to"]),
        "cc": _imap_addresses(addresses["cc"]),
        "bcc": _imap_addresses(addresses["bcc"]),
        "in_reply_to": _field_value(fields, "in-reply-to"),
        "message_id": _field_value(fields, "message-id"),
    }


# --- BODYSTRUCTURE ---------------------------------------------------------------


def _bodystructure(raw: bytes, ent: _Entity) -> dict[str, Any]:
    """RFC 9051 §7.5.2 BODYSTRUCTURE fields plus absolute offsets into raw."""
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
            "parts": [_bodystructure(raw, child) for child in ent.children],
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
            "envelope": _envelope(inner.fields, _address_headers(inner.fields)),
            "body": _bodystructure(raw, inner),
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
    """Visits the leaves once, decoding each payload at most once."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.attachments: list[AttachmentInfo] = []
        self.text_body: str | None = None
        self.html_body: str | None = None
        self.search: list[str] = []
        self._budget = _MAX_TEXT

    def add(self, leaf: _Entity, number: str, searchable: bool, outer: bool) -> None:
        filename = leaf.filename
        content_id = _field_value(leaf.fields, "content-id")
        attached, inline = _classify(leaf, filename, content_id)
        if attached:
            if outer:
                size = (
                    leaf.end - leaf.body_start
                    if leaf.encoding in _IDENTITY_ENCODINGS
                    else len(_payload(self.raw, leaf))
                )
                self.attachments.append(AttachmentInfo(number, filename, leaf.content_type, size, content_id, inline))
            return
        if leaf.content_type not in ("text/plain", "text/html"):
            return
        is_html = leaf.subtype == "html"
        display = outer and (self.html_body if is_html else self.text_body) is None
        search = searchable and self._budget > 0
        if not (display or search):
            return
        text = _decode_text(_payload(self.raw, leaf), leaf.params.get("charset") or "us-ascii")
        if display and is_html:
            self.html_body = text
        elif display:
            self.text_body = text
        if search:
            chunk = (_html_text(text, self._budget) if is_html else text)[: self._budget]
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


def _payload(raw: bytes, leaf: _Entity) -> bytes:
    """The leaf's body with its Content-Transfer-Encoding (RFC 2045 §6) removed."""
    body = raw[leaf.body_start : leaf.end]
    if leaf.encoding in _IDENTITY_ENCODINGS:
        return body
    message = Message()
    message["Content-Transfer-Encoding"] = leaf.encoding
    # The same surrogateescape round trip that BytesParser uses for 8-bit bodies.
    message.set_payload(body.decode("ascii", "surrogateescape"))
    data = message.get_payload(decode=True)  # lenient: bad input yields defects, not errors
    return data if isinstance(data, bytes) else body


def _decode_text(data: bytes, charset: str) -> str:
    """Decode with the declared charset, else UTF-8, else latin-1 (never fails)."""
    for candidate in (charset, "utf-8"):
        try:
            return data.decode(candidate)
        except (LookupError, ValueError):  # unknown codec name, or bytes invalid in it
            continue
    return data.decode("latin-1")


class _HTMLText(HTMLParser):
    """Collects the visible text of an HTML document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.collected = 0  # characters in chunks
        self._hidden = 0  # depth inside <script>/<style>

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._hidden += 1
        elif tag in _HTML_BREAKS:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._hidden = max(0, self._hidden - 1)
        elif tag in _HTML_BREAKS:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.chunks.append(data)
            self.collected += len(data)


def _html_text(html: str, limit: int) -> str:
    """The visible text of ``html``; parsing stops once about ``limit`` characters are collected."""
    parser = _HTMLText()
    # _markupbase raises AssertionError on some malformed marked sections ("<![foo[");
    # the text collected up to that point is kept.
    with contextlib.suppress(AssertionError):
        for start in range(0, len(html), _HTML_CHUNK):
            parser.feed(html[start : start + _HTML_CHUNK])
            if parser.collected >= limit:
                break
        else:
            parser.close()
    lines = (line.strip() for line in "".join(parser.chunks).splitlines())
    return "\n".join(line for line in lines if line)


def part_content(raw: bytes, part: str) -> bytes | None:
    """The transfer-decoded content of leaf ``part`` (IMAP numbering, e.g. ``"2"`` or ``"1.3"``), or None."""
    root = _parse_entity(raw, 0, len(raw), ("text", "plain"), 0)
    for leaf, number, _, _ in _leaves(root, "", True, True):
        if number == part and not leaf.children:
            return _payload(raw, leaf)
    return None
