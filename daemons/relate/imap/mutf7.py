"""Mailbox names on the wire: modified UTF-7 for IMAP4rev1 (RFC 3501 §5.1.3), UTF-8 otherwise.

Names are stored as UTF-8. A rev1 client that has not enabled UTF8=ACCEPT
(RFC 6855) sends and receives modified UTF-7 (relate/mail/mutf7.py is the
codec); IMAP4rev2 and UTF8=ACCEPT clients use UTF-8 directly (RFC 9051 §5.1).
"""

from __future__ import annotations

from relate.imap.errors import ParseError
from relate.mail.mutf7 import InvalidName, decode, encode


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
    try:
        return decode(text)
    except InvalidName as exc:
        raise ParseError(str(exc)) from None


def encode_mailbox(name: str, *, utf8: bool) -> str:
    return name if utf8 else encode(name)
