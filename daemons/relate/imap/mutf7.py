"""Mailbox names on the wire: modified UTF-7 for IMAP4rev1 (RFC 3501 §5.1.3), UTF-8 otherwise.

Names are stored as UTF-8. A rev1 client that has not enabled UTF8=ACCEPT
(RFC 6855) sends and receives modified UTF-7; IMAP4rev2 and UTF8=ACCEPT
clients use UTF-8 directly (RFC 9051 §5.1).
"""

from __future__ import annotations

import base64

from relate.imap.errors import ParseError


def encode(name: str) -> str:
    """UTF-8 text to modified UTF-7."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


_BASE64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")


def _shifted(chunk: str) -> str:
    """The text of one ``&…-`` run (modified BASE64 of UTF-16BE); ParseError unless it is well-formed.

    Well-formed (RFC 3501 §5.1.3): only the modified BASE64 alphabet (``,`` for ``/``), no
    padding, whole UTF-16 code units with the leftover bits zero (so the run has one spelling),
    no lone surrogates, and no printable US-ASCII character, which must be sent as itself.
    """
    if not set(chunk) <= _BASE64 or len(chunk) % 8 not in (0, 3, 6):  # whole UTF-16 code units
        raise ParseError("mailbox name is not valid modified UTF-7")
    b64 = chunk.replace(",", "/")
    raw = base64.b64decode(b64 + "=" * (-len(b64) % 4))
    if len(raw) % 2 or base64.b64encode(raw).decode().rstrip("=") != b64:
        raise ParseError("mailbox name is not valid modified UTF-7")
    try:
        text = raw.decode("utf-16-be")
    except UnicodeDecodeError:
        raise ParseError("mailbox name is not valid modified UTF-7") from None
    if any(0x20 <= ord(ch) <= 0x7E for ch in text):
        raise ParseError("mailbox name is not valid modified UTF-7")
    return text


def decode(text: str) -> str:
    """Modified UTF-7 to UTF-8 text; raises ParseError on malformed input. Linear in ``text``.

    Only the one spelling :func:`encode` gives is accepted (``encode(decode(text)) == text``), so
    a name cannot be stored or looked up under two: besides what :func:`_shifted` checks, two
    shifted runs in a row (``&AOk-&AOk-`` for ``&AOkA6Q-``) are refused, as Dovecot refuses them.
    """
    out: list[str] = []
    i = 0
    shifted_until = -1  # where the last non-empty shifted run ended
    while i < len(text):
        ch = text[i]
        if ch != "&":
            if not 0x20 <= ord(ch) <= 0x7E:
                raise ParseError("mailbox name is not valid modified UTF-7")
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i)
        if end < 0:
            raise ParseError("mailbox name is not valid modified UTF-7")
        chunk = text[i + 1 : end]
        if chunk and i == shifted_until:
            raise ParseError("mailbox name is not valid modified UTF-7")
        out.append(_shifted(chunk) if chunk else "&")
        i = end + 1
        if chunk:
            shifted_until = i
    return "".join(out)


class UndecodableName(str):
    """A mailbox name as sent that is not valid modified UTF-7 (or, with UTF-8 enabled, UTF-8).

    It names no mailbox and never can: handlers answer NO (``problem`` says why), LIST patterns
    made of one match nothing, and the session goes on, as imaptest's atoms and mutf7 groups (and
    Dovecot) expect. It holds the text sent, so it is never taken for the name it resembles.
    """

    problem: str


def lenient_mailbox(raw: bytes, *, utf8: bool) -> str:
    """:func:`decode_mailbox`, or an :class:`UndecodableName` where that raises (never raises itself)."""
    try:
        return decode_mailbox(raw, utf8=utf8)
    except ParseError as exc:
        name = UndecodableName(raw.decode("utf-8", "replace"))
        name.problem = exc.text
        return name


def decode_mailbox(raw: bytes, *, utf8: bool) -> str:
    """A mailbox name from the wire: UTF-8 when enabled, else modified UTF-7."""
    if utf8:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("mailbox name is not valid UTF-8") from None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        # Clients that send raw UTF-8 without enabling it are common enough to accept.
        return raw.decode("utf-8", "replace")
    return decode(text)


def encode_mailbox(name: str, *, utf8: bool) -> str:
    return name if utf8 else encode(name)
