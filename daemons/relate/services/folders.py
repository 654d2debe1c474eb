"""A user's folders: create, rename, delete, with IMAP's rules, for the REST API.

Policy (RFC 9051 §5.1, §6.3.4 to §6.3.6; RFC 6154 for special use):

- Names are UTF-8 with ``/`` between levels: no empty level, no control
  characters, at most ``store.mailboxes.MAX_NAME`` octets and ``MAX_DEPTH``
  levels (the IMAP daemon's bounds too, so a folder made here can be selected
  there); a trailing ``/`` is dropped. ``INBOX`` is matched in any case and
  spelt ``INBOX``; ``INBOX/x`` is below it.
- Create makes the missing folders above the name too, as CREATE does, and
  counts against ``quota.mailboxes``. A special use (``\\Archive``,
  ``\\Sent``...) may be given, once per user: a second Trash would leave
  apps guessing where deleted mail goes.
- Rename takes the folders below along, makes missing ones above the new
  name, and refuses a name that exists or one below the folder itself.
  Renaming INBOX moves its messages (keeping their ids) into a new folder of
  that name and leaves INBOX empty, as RFC 9051 §6.3.6 says.
- Delete removes the folder and its messages for good (they do not go to
  Trash: an IMAP client deletes the same way). INBOX cannot be deleted; a
  folder with folders below it cannot either (delete those first, as
  Dovecot asks); nor a special-use folder (Sent, Trash, Drafts, Junk,
  Archive...), which apps and clients file mail into: rename it, or
  delete it with an IMAP client if it really must go.
- Every change is announced on the change feed by the store (``created``,
  ``renamed``, ``deleted``), like IMAP's CREATE, RENAME and DELETE, so the
  hub and IMAP NOTIFY hear of it whichever protocol made it.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from relate.errors import Conflict, Invalid
from relate.store import imap_messages, mailboxes

SPECIAL_USES = ("\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash", "\\All", "\\Flagged")


def check_name(name: str) -> str:
    """A folder name as stored, or Invalid."""
    name = name.rstrip("/")
    if not name or "//" in name or name.startswith("/") or any(ord(c) < 0x20 or c == "\x7f" for c in name):
        raise Invalid("name must be levels of text joined by '/', without empty levels or control characters")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        raise Invalid("name must not contain lone surrogates")
    if len(name.encode()) > mailboxes.MAX_NAME:
        raise Invalid(f"name is too long (at most {mailboxes.MAX_NAME} octets)")
    if name.count("/") >= mailboxes.MAX_DEPTH:
        raise Invalid(f"name is too deep (at most {mailboxes.MAX_DEPTH} levels)")
    return "INBOX" + name[5:] if name.upper().startswith("INBOX/") else name


def check_special_use(value: str | None) -> str | None:
    if value is None:
        return None
    found = next((s for s in SPECIAL_USES if s.lower() == value.lower()), None)
    if found is None:
        raise Invalid(f"specialUse must be one of {', '.join(SPECIAL_USES)} or null")
    return found


async def create(pool: asyncpg.Pool, user_id: int, name: str, special_use: str | None, *, limit: int) -> int:
    """Create a folder (and those above it); its id. Conflict if it exists, or the special use is taken."""
    name = check_name(name)
    special_use = check_special_use(special_use)
    if mailboxes.is_inbox(name):
        raise Conflict("INBOX always exists")
    async with pool.acquire() as conn, conn.transaction():
        if special_use is not None:
            # Serialised per user by the user row, so two creates cannot both take one special use.
            await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user_id)
            taken = await conn.fetchval(
                "SELECT name FROM mailboxes WHERE user_id = $1 AND special_use = $2", user_id, special_use
            )
            if taken is not None:
                raise Conflict(f"the {special_use} folder is {taken} already")
        made = await mailboxes.create(conn, user_id, name, special_use, limit=limit)
    return int(made["id"])


async def rename(pool: asyncpg.Pool, user_id: int, box: dict[str, Any], new: str) -> int:
    """Rename ``box`` (a row of the user's, with ``id`` and ``name``) to ``new``; the id of the folder that now
    has that name (a new one when INBOX was renamed)."""
    new = check_name(new)
    old = box["name"]
    if mailboxes.is_inbox(new):
        raise Conflict("INBOX exists already: a folder cannot be renamed to it")
    if new == old:
        return int(box["id"])
    if new.startswith(old + "/") and not mailboxes.is_inbox(old):
        raise Invalid("a folder cannot be moved below itself")
    async with pool.acquire() as conn, conn.transaction():
        if not mailboxes.is_inbox(old):
            await mailboxes.rename(conn, user_id, old, new)
            return int(box["id"])
        # RFC 9051 §6.3.6: INBOX's messages move to the new name; INBOX stays, empty.
        target = await mailboxes.create(conn, user_id, new)
        uids = await imap_messages.uids(conn, box["id"])
        if uids:
            await imap_messages.copy(conn, box["id"], uids, target["id"], move=True)
        return int(target["id"])


async def delete(pool: asyncpg.Pool, user_id: int, box: dict[str, Any]) -> None:
    """Delete ``box`` (a row of the user's with ``id``, ``name``, ``special_use``) and its messages."""
    name = box["name"]
    if mailboxes.is_inbox(name):
        raise Conflict("INBOX cannot be deleted")
    if box["special_use"] is not None:
        raise Conflict(f"{name} is the {box['special_use']} folder: rename it, or delete it with an IMAP client")
    async with pool.acquire() as conn, conn.transaction():
        below = await conn.fetchval(
            "SELECT name FROM mailboxes WHERE user_id = $1 AND starts_with(name, $2) LIMIT 1", user_id, name + "/"
        )
        if below is not None:
            raise Conflict(f"{name} has folders below it ({below}): delete those first")
        await mailboxes.delete(conn, user_id, name)
