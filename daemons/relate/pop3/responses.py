"""What POP3 sends: the fixed replies, and message bytes made ready for a multi-line response (RFC 1939 §3)."""

from __future__ import annotations

GREETING = "+OK Relate Mail POP3 server ready"
SIGNING_OFF = "+OK Relate Mail POP3 server signing off"
AUTOLOGOUT = "-ERR Autologout; idle for too long"
SHUTTING_DOWN = "-ERR [SYS/TEMP] Server shutting down"
LOCK_LOST = "-ERR [SYS/TEMP] The maildrop lock was lost; log in again"
TEMPORARY_FAILURE = "Temporary failure, try again"  # after -ERR [SYS/TEMP]
SERVER_FAILURE = "Server failure, try again later"  # after -ERR [SYS/TEMP], for what nobody foresaw
CAPABILITIES = ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "IMPLEMENTATION Relate-Mail")
END = b".\r\n"  # the end of a multi-line response


def to_wire(raw: bytes, *, crlf: bool = False) -> bytes:
    """CRLF line endings, a final CRLF, and dot-stuffing (RFC 1939 §3), ready to send before ``.``.

    ``crlf``: the caller knows ``raw`` has CRLF line ends only and ends with one.
    """
    if not raw:
        return b""
    data = raw if crlf else raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..") if _line_starts_with_dot(data) else data


def _line_starts_with_dot(data: bytes) -> bool:
    """Whether a line after the first starts with ``.``; in CRLF text, as ``b"\\r\\n." in data``, only faster.

    Searching for the pair steps a few bytes at a time past every line end; most messages have few
    dots (base64 has none), and finding each of them is a memchr.
    """
    if data.count(b".") > 64:
        return b"\r\n." in data
    at = data.find(b".", 1)
    while at > 0:
        if data[at - 1] == 0x0A:
            return True
        at = data.find(b".", at + 1)
    return False


def top(wire: bytes, lines: int) -> bytes:
    """The headers, the blank line, then at most ``lines`` lines of the body (RFC 1939 §7), of a message
    already made ready by :func:`to_wire`."""
    cut = -2 if wire.startswith(b"\r\n") else wire.find(b"\r\n\r\n")
    head, body = (wire, b"") if cut == -1 else (wire[: cut + 4], wire[cut + 4 :])
    if lines <= 0 or not body:
        return head
    end = -2
    for _ in range(lines):  # bounded by the body's lines: find() returns -1 past the last one
        end = body.find(b"\r\n", end + 2)
        if end < 0:
            return head + body
    return head + body[: end + 2]
