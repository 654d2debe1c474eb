"""Submission's header rule: which addresses the From and Sender fields name (RFC 5322 §3.6.2).

Policy: a submitted message without a ``Date`` or a ``Message-ID`` field
gets one (RFC 6409 §8.3, §8.4: the submission server may add them), at the
top of its header: the date of its arrival, and an id at the domain of the
authenticated user's address. Nothing else of the message is changed.

On the submission ports every address that the From field or the
Sender field names must be one of the authenticated user's; a message with no
From, or with a From or Sender that cannot be read without doubt, is refused
(``550 5.7.1``). What a field "names" is :func:`relate.mail.mime.field_addresses`:
every address any mail client could show for it (display names and comments
that look like addresses included), or "unreadable" (None) for anything a
reader could take two ways. Beyond that, a field given twice (RFC 5322 §3.6
allows one From and one Sender) or one that names nobody (``Sender: <>``) is
unreadable too: readers differ on which one they show. It is bounded and
linear; only the header section's first ``MAX_HEADER_SECTION`` bytes are
read, and a message whose header goes on past them is refused as unreadable.
"""

from __future__ import annotations

import email.utils
import re
from datetime import datetime

from relate.mail.compose import make_message_id
from relate.mail.headers import leading_section
from relate.mail.mime import field_addresses

MAX_HEADER_SECTION = 1024 * 1024
FIELDS = ("from", "sender")


def header_section(head: bytes) -> bytes | None:
    """The header section at the start of ``head`` (the message's first bytes), blank line included.

    None when no blank line comes within ``MAX_HEADER_SECTION`` bytes of a
    longer message (``head`` is then exactly that long); a message without a
    body is all header.
    """
    section = leading_section(head)
    if section is None and len(head) < MAX_HEADER_SECTION:
        return head
    return section


def named_addresses(head: bytes) -> dict[str, set[str] | None] | None:
    """For From and Sender: every address a reader could see (an empty set: the field is absent), or None
    for a field that is unreadable. None overall when the header section is too big."""
    section = header_section(head)
    if section is None:
        return None
    result: dict[str, set[str] | None] = {}
    for name in FIELDS:
        found = field_addresses(section, name.capitalize())
        given = len(_FIELD_START[name].findall(section))
        result[name] = None if found is None or given > 1 or (given and not found) else set(found)
    return result


def _field_start(name: str) -> re.Pattern[bytes]:
    """A field's first line (continuation lines start with white space, so they never match)."""
    return re.compile(rb"^" + name.encode() + rb"[ \t]*:", re.IGNORECASE | re.MULTILINE)


_FIELD_START = {name: _field_start(name) for name in FIELDS}
_DATE = _field_start("date")
_MESSAGE_ID = _field_start("message-id")


def missing_fields(head: bytes, domain: str, now: datetime) -> bytes:
    """The Date and Message-ID fields (RFC 6409 §8.3, §8.4) the message starting with ``head`` lacks, to prepend."""
    section = header_section(head)
    if section is None:
        return b""
    added = b""
    if not _DATE.search(section):
        added += b"Date: " + email.utils.format_datetime(now).encode() + b"\r\n"
    if not _MESSAGE_ID.search(section):
        added += b"Message-ID: " + make_message_id(domain).encode("utf-8", "surrogateescape") + b"\r\n"
    return added
