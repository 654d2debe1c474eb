"""Modified UTF-7 (RFC 3501 §5.1.3): how IMAP4rev1 spells mailbox names, and Maildir++ folder names.

Names are stored as UTF-8; this codec is used by the IMAP server (relate/imap/mutf7.py: names on its
wire), by the importers (a server's or a maildir's folder names) and by labels (the keyword Thunderbird
derives from a tag's name). Malformed input raises :class:`InvalidName`.
"""

from __future__ import annotations

import base64


class InvalidName(ValueError):
    """Text that is not valid modified UTF-7."""


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
    """The text of one ``&…-`` run (modified BASE64 of UTF-16BE); InvalidName unless it is well-formed.

    Well-formed (RFC 3501 §5.1.3): only the modified BASE64 alphabet (``,`` for ``/``), no
    padding, whole UTF-16 code units with the leftover bits zero (so the run has one spelling),
    no lone surrogates, and no printable US-ASCII character, which must be sent as itself.
    """
    if not set(chunk) <= _BASE64 or len(chunk) % 8 not in (0, 3, 6):  # whole UTF-16 code units
        raise InvalidName("mailbox name is not valid modified UTF-7")
    b64 = chunk.replace(",", "/")
    raw = base64.b64decode(b64 + "=" * (-len(b64) % 4))
    if len(raw) % 2 or base64.b64encode(raw).decode().rstrip("=") != b64:
        raise InvalidName("mailbox name is not valid modified UTF-7")
    try:
        text = raw.decode("utf-16-be")
    except UnicodeDecodeError:
        raise InvalidName("mailbox name is not valid modified UTF-7") from None
    if any(0x20 <= ord(ch) <= 0x7E for ch in text):
        raise InvalidName("mailbox name is not valid modified UTF-7")
    return text


def decode(text: str) -> str:
    """Modified UTF-7 to UTF-8 text; raises InvalidName on malformed input. Linear in ``text``.

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
                raise InvalidName("mailbox name is not valid modified UTF-7")
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i)
        if end < 0:
            raise InvalidName("mailbox name is not valid modified UTF-7")
        chunk = text[i + 1 : end]
        if chunk and i == shifted_until:
            raise InvalidName("mailbox name is not valid modified UTF-7")
        out.append(_shifted(chunk) if chunk else "&")
        i = end + 1
        if chunk:
            shifted_until = i
    return "".join(out)
