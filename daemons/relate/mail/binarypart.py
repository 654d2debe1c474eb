"""Binary content made readable by every client: parts sent with ``Content-Transfer-Encoding: binary``
become base64 (RFC 3516 §4.3, RFC 2045 §6.8), without loss.

Policy: a message APPENDed as binary data (an IMAP literal8) may carry NUL and
lines of any length in such parts, which no IMAP4rev1 client can be sent as
BODY[] (a literal holds no NUL); BINARY[] gives the decoded octets back
exactly. Each leaf part whose transfer encoding is ``binary`` gets its body
replaced by its base64 form (lines of 76 characters, CRLF between them) and
its Content-Transfer-Encoding field replaced by ``base64``; nothing else of
the message changes. Encapsulated messages are left as they are, their own
parts converted. The work is linear in the message: one pass over the body
structure ``mail.mime`` made at parse time, which bounds its parts.
"""

from __future__ import annotations

import base64
import re
from typing import Any

__all__ = ["encode_binary_parts"]

_LINE = 76  # RFC 2045 §6.8: encoded lines of at most 76 characters
# The field and its continuation lines, in a part's header section (RFC 5322 §2.2.3 folding).
_CTE_FIELD = re.compile(rb"(?im)^content-transfer-encoding[ \t]*:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*")
_MAX_NODES = 1000


def _binary_leaves(structure: dict[str, Any]) -> list[tuple[int, int, int]]:
    """(header start, body start, end) of every leaf sent as binary, in the message's order."""
    out: list[tuple[int, int, int]] = []
    stack = [structure]
    seen = 0
    while stack and seen < _MAX_NODES:
        node = stack.pop()
        seen += 1
        if node.get("parts"):
            stack.extend(reversed(node["parts"]))
        elif node.get("message") is not None:
            stack.append(node["message"]["body"])
        elif str(node.get("encoding") or "").lower() == "binary":
            out.append((int(node["header_start"]), int(node["body_start"]), int(node["end"])))
    return sorted(out)


def _base64_lines(data: bytes) -> bytes:
    encoded = base64.b64encode(data)
    return b"\r\n".join(encoded[i : i + _LINE] for i in range(0, len(encoded), _LINE))


def encode_binary_parts(raw: bytes, structure: dict[str, Any]) -> bytes | None:
    """``raw`` with every binary part base64-encoded, or None when no part is binary (nothing to do)."""
    leaves = _binary_leaves(structure)
    out: list[bytes] = []
    pos = 0
    for header_start, body_start, end in leaves:
        if header_start < pos or not header_start <= body_start <= end <= len(raw):
            continue  # offsets that do not nest as parts do: leave that part alone
        header = raw[header_start:body_start]
        new_header, found = _CTE_FIELD.subn(b"Content-Transfer-Encoding: base64", header, count=1)
        if not found:
            continue
        out += [raw[pos:header_start], new_header, _base64_lines(raw[body_start:end])]
        pos = end
    if not out:
        return None
    out.append(raw[pos:])
    return b"".join(out)
