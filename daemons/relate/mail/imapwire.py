"""IMAP response data on the wire (RFC 9051 §7, grammar §9), built from the columns stored at ingest.

Protocol-neutral rendering, here in mail/ because the store renders each
message's ENVELOPE once at ingest (store/messages.py) and the IMAP daemon
sends it and the rest (imap/fetch.py).

Strings become quoted strings when they can (printable, no CR/LF, short)
and literals otherwise; 8-bit text goes out as a literal unless the session
has UTF-8 enabled (RFC 9051 §6.3.1, RFC 6855).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

# What a response is written as: bytes, and views into a message's raw bytes (sent without a copy).
Piece = bytes | memoryview

_QUOTED_MAX = 1000
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


_PLAIN = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{0,1000}\Z")  # printable ASCII without " and \\


def astring(value: str | bytes, *, utf8: bool = False) -> bytes:
    """A string as a quoted string or, when it cannot be one, a literal."""
    if type(value) is str and _PLAIN.match(value):
        return b'"' + value.encode("ascii") + b'"'  # the common case, on the FETCH hot path
    # NUL may appear in no string at all (RFC 9051 §4.3): it is dropped.
    data = (value.encode("utf-8") if isinstance(value, str) else value).replace(b"\x00", b"")
    quotable = len(data) <= _QUOTED_MAX and b"\r" not in data and b"\n" not in data
    if quotable and (data.isascii() or utf8):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


def nstring(value: str | bytes | None, *, utf8: bool = False) -> bytes:
    return b"NIL" if value is None else astring(value, utf8=utf8)


def flag_list(flags: Iterable[str]) -> bytes:
    return b"(" + " ".join(flags).encode("utf-8") + b")"


def date_time(value: datetime) -> bytes:
    """``"17-Jul-1996 02:44:25 -0700"`` (RFC 9051 date-time)."""
    offset = value.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset else 0
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    text = (
        f'"{value.day:2d}-{_MONTHS[value.month - 1]}-{value.year:04d} '
        f'{value.hour:02d}:{value.minute:02d}:{value.second:02d} {sign}{minutes // 60:02d}{minutes % 60:02d}"'
    )
    return text.encode()


def _addresses(items: Sequence[Sequence[str | None]] | None, utf8: bool) -> bytes:
    if not items:
        return b"NIL"
    return b"(" + b"".join(b"(" + b" ".join(nstring(f, utf8=utf8) for f in addr) + b")" for addr in items) + b")"


def envelope(env: dict[str, Any], *, utf8: bool = False) -> bytes:
    """ENVELOPE (RFC 9051 §7.5.2) from the stored structure."""
    fields = [
        nstring(env.get("date"), utf8=utf8),
        nstring(env.get("subject"), utf8=utf8),
        *(_addresses(env.get(key), utf8) for key in ("from", "sender", "reply_to", "to", "cc", "bcc")),
        nstring(env.get("in_reply_to"), utf8=utf8),
        nstring(env.get("message_id"), utf8=utf8),
    ]
    return b"(" + b" ".join(fields) + b")"


def _params(params: Sequence[Sequence[str]] | None, utf8: bool) -> bytes:
    if not params:
        return b"NIL"
    return b"(" + b" ".join(astring(k, utf8=utf8) + b" " + astring(v, utf8=utf8) for k, v in params) + b")"


def _disposition(value: Sequence[Any] | None, utf8: bool) -> bytes:
    if not value:
        return b"NIL"
    return b"(" + astring(str(value[0]).upper(), utf8=utf8) + b" " + _params(value[1], utf8) + b")"


def _language(value: Sequence[str] | str | None, utf8: bool) -> bytes:
    if not value:
        return b"NIL"
    if isinstance(value, str):
        return astring(value, utf8=utf8)
    if len(value) == 1:
        return astring(value[0], utf8=utf8)
    return b"(" + b" ".join(astring(v, utf8=utf8) for v in value) + b")"


def body_structure(node: dict[str, Any], *, extended: bool, utf8: bool = False) -> bytes:
    """BODY (``extended=False``) or BODYSTRUCTURE (RFC 9051 §7.5.2) from the stored structure."""
    if node.get("type") == "multipart":
        parts = b"".join(body_structure(p, extended=extended, utf8=utf8) for p in node.get("parts", []))
        out = b"(" + parts + b" " + astring(node.get("subtype", "mixed").upper(), utf8=utf8)
        if extended:
            out += b" " + _params(node.get("params"), utf8)
            out += b" " + _disposition(node.get("disposition"), utf8)
            out += b" " + _language(node.get("language"), utf8)
            out += b" " + nstring(node.get("location"), utf8=utf8)
        return out + b")"
    fields = [
        astring(str(node.get("type", "text")).upper(), utf8=utf8),
        astring(str(node.get("subtype", "plain")).upper(), utf8=utf8),
        _params(node.get("params"), utf8),
        nstring(node.get("id"), utf8=utf8),
        nstring(node.get("description"), utf8=utf8),
        astring(str(node.get("encoding") or "7bit").upper(), utf8=utf8),
        str(int(node.get("size", 0))).encode(),
    ]
    message = node.get("message")
    if message is not None:
        # message/rfc822: envelope, body structure, line count (RFC 9051 §7.5.2 body-type-msg).
        fields.append(envelope(message["envelope"], utf8=utf8))
        fields.append(body_structure(message["body"], extended=extended, utf8=utf8))
        fields.append(str(int(node.get("lines") or 0)).encode())
    elif node.get("type") == "text":
        fields.append(str(int(node.get("lines") or 0)).encode())
    if extended:
        fields.append(nstring(node.get("md5"), utf8=utf8))
        fields.append(_disposition(node.get("disposition"), utf8))
        fields.append(_language(node.get("language"), utf8))
        fields.append(nstring(node.get("location"), utf8=utf8))
    return b"(" + b" ".join(fields) + b")"
