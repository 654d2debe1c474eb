"""FETCH data items (RFC 9051 §6.4.5, §7.5.2) from stored columns and raw bytes, byte-exact.

ENVELOPE, BODY and BODYSTRUCTURE come from the structures parsed at ingest;
BODY[section] is cut from the raw message using the part offsets recorded
then; BINARY[section] decodes the part's transfer encoding. Nothing here
re-parses a message.

ENVELOPE is rendered once, at ingest, in both forms (with and without
UTF-8, see migration 0009): FETCH ENVELOPE copies the stored bytes and
renders from the jsonb structure only for a row that lacks them.
"""

from __future__ import annotations

import json
from typing import Any

from relate.imap.errors import No
from relate.imap.parser import FetchAtt, Section
from relate.mail import transfer
from relate.mail.imapwire import Piece, body_structure, date_time, envelope, flag_list, nstring

RAW_ITEMS = frozenset({"BODY[]", "BINARY[]", "BINARY.SIZE", "RFC822", "RFC822.HEADER", "RFC822.TEXT"})


def needs_raw(atts: tuple[FetchAtt, ...]) -> bool:
    return any(a.name in RAW_ITEMS for a in atts)


_HEADER_TEXTS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})


def header_only(atts: tuple[FetchAtt, ...]) -> bool:
    """Whether the items that read the message's bytes read only its header (RFC822.HEADER, BODY[HEADER],
    BODY[HEADER.FIELDS ...]): what a client listing a folder asks for, and a fraction of the bytes."""
    return all(
        a.name not in RAW_ITEMS
        or a.name == "RFC822.HEADER"
        or (a.name == "BODY[]" and a.section is not None and not a.section.part and a.section.text in _HEADER_TEXTS)
        for a in atts
    )


_COLUMNS_FOR = {
    "INTERNALDATE": {"internal_date"},
    "RFC822.SIZE": {"size"},
    "MODSEQ": {"modseq"},
    "SAVEDATE": {"created_at"},
    "PREVIEW": {"preview"},
    "ENVELOPE": {"envelope"},
    "BODYSTRUCTURE": {"bodystructure_text"},
    "BODY": {"bodystructure_text"},
    "RFC822": {"header_end"},
    "RFC822.HEADER": {"header_end"},
    "RFC822.TEXT": {"header_end"},
}


def columns(atts: tuple[FetchAtt, ...]) -> frozenset[str]:
    """The stored columns these items are rendered from (UID and FLAGS always come)."""
    out: set[str] = set()
    for att in atts:
        if att.name in ("UID", "FLAGS"):
            continue
        if att.section is None:
            out |= _COLUMNS_FOR.get(att.name, set())
        elif att.section.part:
            # A numbered part is found with the part offsets in the body structure.
            out |= {"bodystructure", "header_end"}
        else:
            # The message's own HEADER, TEXT or fields: the header end is all it takes (and decoding the
            # body structure of every message of a `FETCH 1:* (BODY.PEEK[HEADER.FIELDS ...])` is not free).
            out.add("header_end")
    if "bodystructure" in out:
        out.discard("bodystructure_text")  # the decoded structure renders BODY and BODYSTRUCTURE too
    return frozenset(out)


def sets_seen(atts: tuple[FetchAtt, ...]) -> bool:
    """Non-PEEK body fetches set \\Seen (RFC 9051 §6.4.5); RFC822.HEADER does not."""
    return any((a.name in ("BODY[]", "BINARY[]") and not a.peek) or a.name in ("RFC822", "RFC822.TEXT") for a in atts)


def _node(structure: dict[str, Any], part: tuple[int, ...]) -> dict[str, Any] | None:
    """The body part numbered ``part`` (RFC 9051 §6.4.5 part numbering), or None when there is no such part.

    The message itself is not one of its parts: part 1 of a message that is not multipart is its
    body, whatever its type, so BODY[1] of a message whose own type is message/rfc822 is the whole
    encapsulated message. Below that, the parts of a multipart part are its children, and those of a
    message/rfc822 part are the parts of the message it holds, numbered as a message's are (its body
    is n.1 unless it is multipart). Part 1 of any other part is that part itself, as Dovecot answers.
    """
    node = structure
    for depth, number in enumerate(part):
        if node.get("parts"):
            children = node["parts"]
        elif depth and node.get("message") is not None:
            inner = node["message"]["body"]
            children = inner["parts"] if inner.get("parts") else [inner]
        else:
            children = [node]
        if not 1 <= number <= len(children):
            return None
        node = children[number - 1]
    return node


def _fields(header: bytes, names: tuple[str, ...], *, exclude: bool) -> bytes:
    """HEADER.FIELDS (or .NOT): the matching header lines, folding kept, plus the blank line."""
    wanted = {n.lower().encode("utf-8", "replace") for n in names}  # compared as octets: no decode per line
    out: list[bytes] = []
    keep = False
    for line in header.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        keep = (line.split(b":", 1)[0].strip().lower() in wanted) != exclude
        if keep:
            out.append(line)
    return b"".join(out) + b"\r\n"


def section_span(row: dict[str, Any], section: Section) -> tuple[int, int | None] | None:
    """Where BODY[section] lies in the message (RFC 9051 §6.4.5): (start, end or None for the end).

    None for a section the message does not have (a part number past its parts, HEADER or TEXT of a
    part that holds no message): the client gets it empty, as from Dovecot, and the other messages
    of the range their data. For HEADER.FIELDS (and .NOT) it is the header block the fields are
    picked from.
    """
    if not section.part:
        header_end = int(row["header_end"])
        if section.text is None:
            return 0, None
        if section.text == "TEXT":
            return header_end, None
        return 0, header_end
    node = _node(row["bodystructure"], section.part)
    if node is None:
        return None
    header_start, body_start, end = int(node["header_start"]), int(node["body_start"]), int(node["end"])
    if section.text is None:
        return body_start, end
    if section.text == "MIME":
        return header_start, body_start
    # HEADER, TEXT and HEADER.FIELDS of an encapsulated message/rfc822 part.
    inner = node.get("message")
    if inner is None:
        return None
    inner_start, inner_body = int(inner["body"]["header_start"]), int(inner["body"]["body_start"])
    if section.text == "TEXT":
        return inner_body, end
    return inner_start, inner_body


def header_fields(header: bytes, section: Section) -> bytes:
    """The fields a HEADER.FIELDS (or .NOT) section picks from a header block (RFC 9051 §6.4.5)."""
    return _fields(header, section.fields, exclude=section.text == "HEADER.FIELDS.NOT")


def section_bytes(raw: Piece, row: dict[str, Any], section: Section) -> Piece:
    """The octets of BODY[section]: a slice of ``raw`` (a view, if ``raw`` is one), or the fields picked."""
    span = section_span(row, section)
    if span is None:
        return b""
    start, end = span
    data = raw[start:end]
    if section.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        return _fields(bytes(data), section.fields, exclude=section.text == "HEADER.FIELDS.NOT")
    return data


# Transfer encodings BINARY can undo (RFC 3516 §4.2); any other is NO [UNKNOWN-CTE].
_DECODABLE = transfer.IDENTITY | {"base64", "quoted-printable"}


def _encoded_body(row: dict[str, Any], part: tuple[int, ...]) -> tuple[int, int, str] | None:
    """(start, end, transfer encoding) of part ``part``'s body, for BINARY (RFC 3516 §4.2); None: no such part."""
    node = _node(row["bodystructure"], part)
    if node is None:
        return None
    encoding = str(node.get("encoding") or "7bit").lower()
    if encoding not in _DECODABLE:
        raise No(f"Unknown transfer encoding {encoding[:40]}", "UNKNOWN-CTE")
    return int(node["body_start"]), int(node["end"]), encoding


def decoded_part(raw: bytes, row: dict[str, Any], part: tuple[int, ...]) -> bytes:
    """BINARY[part]: the part's body with its transfer encoding removed (RFC 3516 §4.2, mail/transfer.py)."""
    if not part:
        return raw
    body = _encoded_body(row, part)
    if body is None:
        return b""  # no such part: empty, as for BODY[part]
    return transfer.decode(raw, *body)[0]


def decoded_size(raw: bytes, row: dict[str, Any], part: tuple[int, ...]) -> int:
    """BINARY.SIZE[part]: octets of the decoded part, counted without decoding it whole (RFC 3516 §4.2)."""
    if not part:
        return len(raw)
    body = _encoded_body(row, part)
    return 0 if body is None else transfer.decoded_size(raw, *body)


def decodes(atts: tuple[FetchAtt, ...]) -> bool:
    """Whether these items undo a transfer encoding (work that grows with the message)."""
    return any(a.name in ("BINARY[]", "BINARY.SIZE") for a in atts)


def _partial(data: Piece, att: FetchAtt) -> tuple[Piece, str]:
    if att.partial is None:
        return data, ""
    start, count = att.partial
    return data[start : start + count], f"<{start}>"


def render(row: dict[str, Any], atts: tuple[FetchAtt, ...], *, utf8: bool, recent: bool = False) -> bytes:
    """The parenthesized list of one FETCH response without body sections (the common, hot case).

    ``recent``: the message is recent in this session (IMAP4rev1): FLAGS shows \\Recent too.
    """
    return b"(" + b" ".join([_item(row, att, utf8, recent) for att in atts]) + b")"


def render_pieces(
    row: dict[str, Any], raw: bytes, atts: tuple[FetchAtt, ...], *, utf8: bool, recent: bool = False
) -> list[Piece]:
    """The parenthesized list of one FETCH response with body sections, as pieces to write one after another.

    A body section is a view into ``raw``, not a copy, and is never joined with the rest:
    a 50 MB BODY[] costs the raw bytes the row already holds and what the transport buffers.
    """
    out: list[Piece] = [b"("]
    for i, att in enumerate(atts):
        if i:
            out.append(b" ")
        if att.name in _SIMPLE_ITEMS:
            out.append(_item(row, att, utf8, recent))
        else:
            out += _raw_item(row, raw, att)
    out.append(b")")
    return out


_SIMPLE_ITEMS = frozenset(
    {
        "UID",
        "FLAGS",
        "INTERNALDATE",
        "RFC822.SIZE",
        "MODSEQ",
        "ENVELOPE",
        "BODYSTRUCTURE",
        "BODY",
        "SAVEDATE",
        "PREVIEW",
    }
)


def _item(row: dict[str, Any], att: FetchAtt, utf8: bool, recent: bool) -> bytes:
    """One data item that comes from stored columns, not from the message's bytes."""
    name = att.name
    if name == "UID":
        return b"UID %d" % row["uid"]
    if name == "FLAGS":
        return b"FLAGS " + flag_list(["\\Recent", *row["flags"]] if recent else row["flags"])
    if name == "INTERNALDATE":
        return b"INTERNALDATE " + date_time(row["internal_date"])
    if name == "RFC822.SIZE":
        return b"RFC822.SIZE %d" % row["size"]
    if name == "MODSEQ":
        return b"MODSEQ (%d)" % row["modseq"]
    if name == "SAVEDATE":  # RFC 8514 §4.1: when the message was stored in this mailbox
        return b"SAVEDATE " + date_time(row["created_at"])
    if name == "PREVIEW":  # RFC 8970 §3.1: imap/preview.py fills in a preview that was never made
        return b"PREVIEW " + nstring(row["preview"], utf8=utf8)
    if name == "ENVELOPE":
        wire = row["envelope_wire"]  # rendered at ingest for this session's UTF-8 mode
        return b"ENVELOPE " + (wire if wire is not None else envelope(row["envelope"], utf8=utf8))
    assert name in ("BODYSTRUCTURE", "BODY"), name
    return name.encode() + b" " + _structure(row, extended=name == "BODYSTRUCTURE", utf8=utf8)


def _structure(row: dict[str, Any], *, extended: bool, utf8: bool) -> bytes:
    """BODY or BODYSTRUCTURE as sent: from the decoded structure if the row has it, else from its JSON text."""
    text = row.get("bodystructure_text")
    if text is None:
        return body_structure(row["bodystructure"], extended=extended, utf8=utf8)
    key = (text, extended, utf8)
    wire = _STRUCTURES.get(key)
    if wire is None:
        wire = body_structure(json.loads(text), extended=extended, utf8=utf8)
        _STRUCTURES.put(key, wire)
    return wire


class WireMemo:
    """Rendered BODY/BODYSTRUCTURE by the stored structure's JSON text, up to ``budget`` octets (oldest out first).

    Clients fetch the same structures again and again (every device of a user, a client that
    lists a range with BODYSTRUCTURE on each resync), and decoding the JSON and rendering it is
    most of what such a FETCH costs. Keyed by the text itself, an entry can never be stale: the
    same structure always renders the same way.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._wires: dict[tuple[str, bool, bool], bytes] = {}

    def get(self, key: tuple[str, bool, bool]) -> bytes | None:
        return self._wires.get(key)

    def put(self, key: tuple[str, bool, bool], wire: bytes) -> None:
        cost = len(key[0]) + len(wire) + _ENTRY_OVERHEAD
        if cost > self.budget:
            return
        while self.used + cost > self.budget:
            oldest = next(iter(self._wires))
            self.used -= len(oldest[0]) + len(self._wires.pop(oldest)) + _ENTRY_OVERHEAD
        self._wires[key] = wire
        self.used += cost


# What a memo entry costs beyond its text and wire: the key tuple, two str/bytes headers, the dict slot.
_ENTRY_OVERHEAD = 200
_STRUCTURES = WireMemo(16 * 1024 * 1024)


def _literal(prefix: bytes, data: Piece, *, binary: bool = False) -> list[Piece]:
    """``prefix`` and a literal (``{n}`` or ``~{n}``) of ``data``, with ``data`` left as its own piece."""
    return [prefix + (b"~" if binary else b"") + b"{%d}\r\n" % len(data), data]


def _raw_item(row: dict[str, Any], raw: bytes, att: FetchAtt) -> list[Piece]:
    name = att.name
    header_end = int(row["header_end"])
    view = memoryview(raw)
    if name == "RFC822":
        return _literal(b"RFC822 ", view)
    if name == "RFC822.HEADER":
        return _literal(b"RFC822.HEADER ", view[:header_end])
    if name == "RFC822.TEXT":
        return _literal(b"RFC822.TEXT ", view[header_end:])
    section = att.section or Section()
    if name == "BINARY.SIZE":
        return [b"BINARY.SIZE[%s] %d" % (section.spec().encode(), decoded_size(raw, row, section.part))]
    if name == "BINARY[]":
        data, origin = _partial(decoded_part(raw, row, section.part), att)
        binary = b"\x00" in data
        return _literal(b"BINARY[%s]%s " % (section.spec().encode(), origin.encode()), data, binary=binary)
    data, origin = _partial(section_bytes(view, row, section), att)  # a view into raw, except picked fields
    return _literal(b"BODY[%s]%s " % (section.spec().encode(), origin.encode()), data)
