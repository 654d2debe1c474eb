"""A user's mail as one MBOX file (mboxrd), for GET /api/export/mbox and ``relatectl user export``.

Format (mboxrd, as mutt, Thunderbird and Python's mailbox module read it):
each message starts with ``From SENDER DATE`` (the first From address, else
MAILER-DAEMON; the internal date in UTC, asctime form), line ends become LF,
every line of the message that matches ``>*From `` gets one more ``>`` (so
reading back removes exactly one and nothing is lost), and a blank line
follows each message. The stored bytes are otherwise written as they are.

Memory: messages come from the store's cursor a few at a time and are
written before the next is read, so memory does not grow with the account.
A message over ``_THREADED`` bytes is converted in a worker thread (the
regular expression costs about 1 ms per 256 KiB) to keep the event loop free.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import asyncpg

from relate.errors import NotFound
from relate.services import accounts
from relate.store import emails
from relate.store import export as store
from relate.store.export import Selection

__all__ = ["Selection", "export_user", "mbox", "mboxrd_entry"]

_FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)
_SENDER = re.compile(r"^[!-~]{1,320}$")  # printable ASCII, no spaces: the From_ line splits on spaces
_THREADED = 256 * 1024


def mboxrd_entry(raw: bytes, sender: str | None, when: datetime) -> bytes:
    """One message as an mboxrd entry: From_ line, the escaped message with LF line ends, a blank line."""
    who = sender if sender and _SENDER.match(sender) else "MAILER-DAEMON"
    d = when.astimezone(UTC)
    head = f"From {who} {d:%a %b} {d.day:2d} {d:%H:%M:%S %Y}\n".encode()
    body = _FROM_LINE.sub(rb">\1", raw.replace(b"\r\n", b"\n"))
    return head + body + (b"\n" if body.endswith(b"\n") else b"\n\n")


async def mbox(pool: asyncpg.Pool, user_id: int, selection: Selection) -> AsyncIterator[bytes]:
    """The selected messages as mboxrd entries, one chunk per message."""
    async for row in store.rows(pool, user_id, selection):
        if len(row.raw) > _THREADED:
            yield await asyncio.to_thread(mboxrd_entry, row.raw, row.sender, row.internal_date)
        else:
            yield mboxrd_entry(row.raw, row.sender, row.internal_date)


async def export_user(
    pool: asyncpg.Pool, address: str, write: Callable[[bytes], object], *, mailbox: str | None, query: str | None
) -> tuple[int, int]:
    """``relatectl user export``: the user's mail (one folder, a search, or all) into ``write``; (messages, bytes)."""
    user = await accounts.get_user(pool, address)
    box_id = None
    if mailbox is not None:
        box = await emails.find_mailbox(pool, user["id"], mailbox)
        if box is None:
            raise NotFound(f"{user['address']} has no folder {mailbox}")
        box_id = box["id"]
    count = size = 0
    async for chunk in mbox(pool, user["id"], Selection(mailbox_id=box_id, query=query or None)):
        write(chunk)
        count += 1
        size += len(chunk)
    return count, size
