"""Submission's header rule, bounded: which addresses the From and Sender fields name (RFC 5322 §3.6.2).

Policy: on the submission ports every address that the From field or the
Sender field names must be one of the authenticated user's; a message with no
From, or with a From or Sender that cannot be read without doubt, is refused
(``550 5.7.1``). "Names" means: what the standard library's two address
parsers find, and what Relate Mail's own parser (whose result mail clients
are shown) finds; if any of them sees an address, it counts.

Bounds, checked before any parser of the email package sees the field (its
address parsers recurse on nested comments, and take quadratic time over
many comments: 450 ms for 7 KiB of them): the header section is read up to
``MAX_HEADER_SECTION`` bytes, at most ``MAX_FIELDS`` From and Sender fields,
each at most ``MAX_FIELD`` bytes unfolded, with at most ``MAX_COMMENTS``
comments, and comments and angle brackets nested at most ``MAX_NESTING``
deep. Past a bound the field counts as unreadable, hence refused: real From
and Sender fields are far inside them. Only the From and Sender fields are
handed to the parsers, never the rest of the header (a hostile Subject costs
nothing here). The scan itself is one pass; the caller runs all of it in a
worker thread, so even its worst case (tens of ms) does not hold the loop.
"""

from __future__ import annotations

from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from email.utils import getaddresses

from relate.mail.mime import parse_message

MAX_HEADER_SECTION = 1024 * 1024
MAX_FIELD = 4 * 1024
MAX_FIELDS = 4
MAX_COMMENTS = 16
MAX_NESTING = 8
FIELDS = ("from", "sender")


def header_section(head: bytes) -> bytes | None:
    """The header section at the start of ``head`` (the message's first bytes), blank line included.

    None when no blank line comes within ``MAX_HEADER_SECTION`` bytes of a
    longer message (``head`` is then exactly that long); a message without a
    body is all header.
    """
    for separator in (b"\r\n\r\n", b"\n\n"):
        cut = head.find(separator)
        if cut >= 0:
            return head[: cut + len(separator)]
    return None if len(head) >= MAX_HEADER_SECTION else head


def raw_fields(section: bytes) -> dict[str, list[bytes]] | None:
    """The raw (folded) values of every From and Sender field; None past MAX_FIELDS or MAX_FIELD."""
    found: dict[str, list[list[bytes]]] = {name: [] for name in FIELDS}
    current: list[bytes] | None = None  # the lines of the field being read, when it is one of ours
    size = 0
    count = 0
    for line in section.split(b"\n"):
        if line[:1] in (b" ", b"\t"):  # RFC 5322 §2.2.3: a folded line continues the field
            if current is not None:
                size += len(line)
                if size > MAX_FIELD:
                    return None
                current.append(line)
            continue
        name, colon, value = line.partition(b":")
        key = name.strip().lower().decode("latin-1") if colon else ""
        if key in FIELDS:
            count += 1
            if count > MAX_FIELDS or len(value) > MAX_FIELD:
                return None
            current = [value]
            size = len(value)
            found[key].append(current)
        else:
            current = None
    return {name: [b"\n".join(lines) for lines in values] for name, values in found.items()}


def _shape_ok(value: str) -> bool:
    """At most MAX_COMMENTS comments; comments and angle brackets balanced and nested at most MAX_NESTING deep
    (quoted strings skipped)."""
    comments = 0
    depth = 0
    quoted = False
    escaped = False
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif quoted:
            quoted = ch != '"'
        elif ch == '"':
            quoted = True
        elif ch in "(<":
            depth += 1
            comments += ch == "("
            if depth > MAX_NESTING or comments > MAX_COMMENTS:
                return False
        elif ch in ")>":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0 and not quoted


def named_addresses(head: bytes) -> dict[str, set[str] | None] | None:
    """For From and Sender: every address any of the parsers finds (an empty set: the field is absent),
    or None for a field that is malformed or past a bound. None overall when the header section is too big."""
    section = header_section(head)
    if section is None:
        return None
    fields = raw_fields(section)
    if fields is None:
        return dict.fromkeys(FIELDS)
    result: dict[str, set[str] | None] = {}
    lines: list[bytes] = []
    for name in FIELDS:
        values = fields[name]
        texts = [v.decode("utf-8", "replace").replace("\r", "").replace("\n", "") for v in values]
        if not all(_shape_ok(text) for text in texts):
            result[name] = None
            continue
        result[name] = set()
        lines += [name.capitalize().encode() + b":" + v.rstrip(b"\r") + b"\r\n" for v in values]
    if not lines:
        return result
    # Only these fields, each bounded, reach the email package and our parser.
    mini = b"".join(lines) + b"\r\n"
    headers = BytesHeaderParser(policy=default_policy).parsebytes(mini)
    parsed = parse_message(mini)
    for name in FIELDS:
        found = result[name]
        if found is None:
            continue
        try:
            values = headers.get_all(name, [])
            defects = any(getattr(v, "defects", None) for v in values)
            found |= {addr for _, addr in getaddresses([str(v) for v in values]) if addr}
        except Exception:  # noqa: BLE001 - the email package fails on some input ("From:;"): unreadable, refused
            result[name] = None
            continue
        mine = parsed.from_ if name == "from" else parsed.sender
        found |= {a.email for a in mine if a.email}
        if defects or (values and not found):
            result[name] = None  # a field the email package finds fault with, or one naming nobody ("From: <>")
    return result
