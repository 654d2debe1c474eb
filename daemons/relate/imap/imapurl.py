"""IMAP URLs of messages and their parts (RFC 5092), as CATENATE names them (RFC 4469 §3); pure, no I/O.

Accepted: a relative URL with an absolute path (``/INBOX;UIDVALIDITY=3/;UID=20/;SECTION=1.2``),
which RFC 4469 §5 requires, and an absolute one (``imap://user@host/INBOX/;UID=20``). Each
names a message by its mailbox (%-encoded UTF-8, RFC 5092 §3.1), an optional UIDVALIDITY and
its UID, then optionally a section (RFC 5092 ``enc-section``, the section-spec of a BODY[...]
fetch) and a partial range (RFC 5550 §5 ``;PARTIAL=start[.length]``). Everything else (URLAUTH,
EXPIRE, a search, a mailbox list) is refused with :class:`UrlError`, which the APPEND handler
answers ``NO [BADURL ...]``; whose messages a URL may name is the handler's business (the user's own).
The parser is one pass over at most ``limits.MAX_URL_LENGTH`` characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from relate.imap import limits
from relate.imap.errors import ParseError
from relate.imap.parser import Section, parse_section

__all__ = ["MessageUrl", "UrlError", "parse"]


class UrlError(ValueError):
    """Not a URL of a message (or part) this server can resolve."""


@dataclass(frozen=True)
class MessageUrl:
    user: str | None  # from imap://user@host/..., None for a relative URL or one without a user
    host: str | None
    mailbox: str
    uidvalidity: int | None
    uid: int
    section: Section | None
    partial: tuple[int, int | None] | None  # (start, length or None for the rest)


_SERVER = re.compile(r"imap://(?:([^@/;]*)(?:;AUTH=[^@/]*)?@)?([^/:]*)(?::(\d{1,5}))?(?=/)", re.IGNORECASE)
_NUMBER = re.compile(r"[0-9]{1,10}")
# The parts after the mailbox, in the order RFC 5092 imessagepart gives them; the UID comes first.
_ORDER = {"UID": 0, "SECTION": 1, "PARTIAL": 2}
# What a %-encoded piece may hold (RFC 5092 bchar, loosely): no space, no control, no ";" left unencoded.
_BCHARS = re.compile(r"[^\x00-\x20\x7f;]*")


def _number(text: str, what: str, *, zero: bool = False) -> int:
    if not _NUMBER.fullmatch(text):
        raise UrlError(f"bad {what}")
    value = int(text)
    if value > 0xFFFFFFFF or (value == 0 and not zero):
        raise UrlError(f"bad {what}")
    return value


def _decoded(text: str, what: str) -> str:
    if not _BCHARS.fullmatch(text):
        raise UrlError(f"bad {what}")
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise UrlError(f"{what} is not UTF-8") from None


def parse(url: str) -> MessageUrl:
    """The message (part) ``url`` names; raises UrlError for anything else."""
    if len(url) > limits.MAX_URL_LENGTH or not url.isascii():
        raise UrlError("not an IMAP URL")
    user = host = None
    path = url
    m = _SERVER.match(url)
    if m:
        user = _decoded(m.group(1), "user") if m.group(1) else None
        host = _decoded(m.group(2), "host").lower()
        path = url[m.end() :]
    elif url[:7].lower() == "imap://":
        raise UrlError("bad server part")
    if not path.startswith("/"):
        raise UrlError("a URL of a message needs an absolute path")
    pieces = path[1:].split("/;")
    mailbox_part, rest = pieces[0], pieces[1:]
    uidvalidity = None
    name, _, params = mailbox_part.partition(";")
    if params:
        key, _, value = params.partition("=")
        if key.upper() != "UIDVALIDITY":
            raise UrlError("bad mailbox parameter")
        uidvalidity = _number(value, "UIDVALIDITY")
    mailbox = _decoded(name, "mailbox").rstrip("/")
    if not mailbox:
        raise UrlError("no mailbox")
    found: dict[str, str] = {}
    last = -1
    for piece in rest:
        key, eq, value = piece.partition("=")
        key = key.upper()
        rank = _ORDER.get(key)
        if not eq or rank is None or rank <= last or (last < 0 and rank > 0):
            raise UrlError(f"unsupported or misplaced {key[:20] or 'part'}")
        last = rank
        found[key] = value
    if "UID" not in found:
        raise UrlError("no UID")
    uid = _number(found["UID"].rstrip("/"), "UID")
    section = None
    if "SECTION" in found:
        try:
            section = parse_section(_decoded(found["SECTION"].rstrip("/"), "section").upper().encode())
        except ParseError:
            raise UrlError("bad section") from None
    partial = None
    if "PARTIAL" in found:
        start, dot, length = found["PARTIAL"].partition(".")
        partial = (_number(start, "partial range", zero=True), _number(length, "partial range") if dot else None)
    return MessageUrl(user, host, mailbox, uidvalidity, uid, section, partial)
