"""The ``Authentication-Results:`` header field (RFC 8601): written, read back, and removed when forged.

Policy (§5): the field we add names our authserv-id (``smtp.mailauth.authserv_id``,
by default the host name) and goes at the top of the message. Before it is
added, every field already in the message that claims our authserv-id is
removed: no one outside could have written it truthfully. Fields of other
authserv-ids are kept as they came (they are someone else's claims, which
readers ignore unless they trust that id).

Reading back (for the REST detail) takes the topmost field with our id and
splits it into ``method=result`` entries with their properties. Parsing is
one pass over the value, linear in its length; comments are dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_NAME = re.compile(rb"^authentication-results[ \t]*:", re.IGNORECASE)
# Any line of a header section that starts such a field: a section without one is passed over in one search.
_ANY = re.compile(rb"^authentication-results[ \t]*:", re.IGNORECASE | re.MULTILINE)
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@\-]+\Z")
_WORD = re.compile(r'(?:"(?:[^"\\]|\\.)*"?|[^\s"])+')  # a run of non-space characters and quoted strings
_SAFE_REASON = re.compile(r"[^\x20-\x7e]|[\"\\]")
_SAFE_COMMENT = re.compile(r"[^\x20-\x7e]|[()\\]")


@dataclass(frozen=True)
class Entry:
    method: str  # spf, dkim, dmarc, auth
    result: str
    reason: str = ""
    properties: dict[str, str] = field(default_factory=dict)  # e.g. {"smtp.mailfrom": "a@b.example"}
    comment: str = ""  # written in parentheses after the result; not read back


def pvalue(value: str) -> str:
    """A property value as RFC 8601 §2.2 allows it: bare when it is a token or address, else quoted."""
    if _TOKEN.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(authserv_id: str, entries: list[Entry]) -> bytes:
    """The whole field, folded one result per line, CRLF-terminated."""
    parts = []
    for entry in entries:
        text = f"{entry.method}={entry.result}"
        if entry.comment:
            text += " (" + _SAFE_COMMENT.sub("?", entry.comment) + ")"
        if entry.reason:
            text += ' reason="' + _SAFE_REASON.sub("?", entry.reason)[:150] + '"'
        for name, value in entry.properties.items():
            text += f" {name}={pvalue(value)}"
        parts.append(text)
    if not parts:
        parts = ["none"]  # §2.2: no authentication was done
    value = authserv_id + ";" + ";".join("\r\n\t" + p for p in parts)
    return b"Authentication-Results: " + value.encode("utf-8", "surrogateescape") + b"\r\n"


def _fields(section: bytes) -> list[tuple[int, int, bool]]:
    """(start, end, is an Authentication-Results field) for each field of a header section, in order."""
    out: list[tuple[int, int, bool]] = []
    pos = 0
    size = len(section)
    while pos < size:
        end = section.find(b"\n", pos)
        end = size if end < 0 else end + 1
        line = section[pos:end]
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and out:
            start, _, is_ar = out[-1]
            out[-1] = (start, end, is_ar)
        else:
            out.append((pos, end, bool(_NAME.match(line))))
        pos = end
    return out


def authserv_id(value: str) -> str:
    """The authserv-id a field's value starts with (after any comment), lower case."""
    text = _drop_comments(value).strip()
    if text.startswith('"'):
        end = text.find('"', 1)
        return text[1:end].lower() if end > 0 else ""
    return re.split(r"[\s;]", text, maxsplit=1)[0].lower()


def strip_ours(section: bytes, ours: str) -> bytes | None:
    """The header section without the fields claiming authserv-id ``ours``; None when it has none."""
    # (The substring test first: one C pass, where the expression steps through every byte in Python's engine.)
    if b"authentication-results" not in section.lower() or _ANY.search(section) is None:
        return None
    ours = ours.lower()
    kept: list[bytes] = []
    dropped = False
    last = 0
    for start, end, is_ar in _fields(section):
        if is_ar:
            value = section[start:end].split(b":", 1)[1].decode("utf-8", "replace")
            if authserv_id(value) == ours:
                kept.append(section[last:start])
                last = end
                dropped = True
    if not dropped:
        return None
    kept.append(section[last:])
    return b"".join(kept)


def _drop_comments(text: str) -> str:
    out: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(ch)
            continue
        if ch == "\\":
            escaped = True
            if depth == 0:
                out.append(ch)
        elif quoted:
            quoted = ch != '"'
            out.append(ch)
        elif ch == '"' and depth == 0:
            quoted = True
            out.append(ch)
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def _split(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside quoted strings."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse(value: str) -> tuple[str, list[Entry]]:
    """(authserv-id, entries) of a field value; unreadable pieces are skipped."""
    pieces = _split(_drop_comments(value), ";")
    ident = authserv_id(pieces[0]) if pieces else ""
    entries: list[Entry] = []
    for piece in pieces[1:]:
        words = _WORD.findall(piece)
        # "method = result" may be written with spaces: join a lone "=" with its neighbours.
        joined: list[str] = []
        for word in words:
            if joined and (word.startswith("=") or joined[-1].endswith("=")):
                joined[-1] += word
            else:
                joined.append(word)
        if not joined or "=" not in joined[0]:
            continue
        method, _, result = joined[0].partition("=")
        method = method.split("/", 1)[0].lower()
        reason = ""
        properties: dict[str, str] = {}
        for word in joined[1:]:
            name, eq, val = word.partition("=")
            if not eq:
                continue
            if name.lower() == "reason":
                reason = _unquote(val)
            else:
                properties.setdefault(name.lower(), _unquote(val))
        entries.append(Entry(method, result.lower(), reason, properties))
    return ident, entries


def find_ours(fields: list[tuple[str, str]], ours: str) -> list[Entry] | None:
    """The entries of the topmost Authentication-Results field with our authserv-id among (name, value) pairs."""
    ours = ours.lower()
    for name, value in fields:
        if name.lower() == "authentication-results":
            ident, entries = parse(value)
            if ident == ours:
                return entries
    return None
