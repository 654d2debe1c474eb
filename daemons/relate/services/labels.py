"""A user's labels: names and colours for the apps, IMAP keywords on the messages, so mail clients see them.

Policy:

- A label is an IMAP keyword (RFC 9051 §2.3.2) on the messages it labels:
  adding or removing it is a flag change (services/mail.py), so IMAP
  clients see it and can set it, and whatever sets the keyword (REST, an
  IMAP STORE, a Sieve ``addflag``) labels the message.
- The keyword is chosen once, when the label is made, and never changes:
  renaming or recolouring a label changes only what the apps show, so no
  message needs rewriting and clients that know the keyword keep it.
- Thunderbird's five default tags are the keywords ``$label1`` to
  ``$label5`` (Important, Work, Personal, To Do, Later): a label made with
  one of those names (in any case) gets that keyword, and Thunderbird's
  colour for it unless one is given. Any other label's keyword is derived
  from its name the way Thunderbird derives a new tag's key: the
  characters `` ()/{%*<>\\"`` become ``_``, the rest is IMAP modified UTF-7
  (RFC 3501 §5.1.3), lower-cased; then anything that is not an atom
  character the API accepts (``,``, ``]``...) becomes ``_``. So a tag made
  in Thunderbird and a label of the same name made here are the same
  keyword. A keyword the user's other labels have already gets ``_2``,
  ``_3``... A label may also be made with an explicit ``keyword`` (to adopt
  a keyword a client already sets); system flags (``\\Seen``...) and the
  registered keywords with another meaning (``$Junk``, ``$Forwarded``...)
  are refused.
- Deleting a label removes its keyword from every message of the user, in
  one transaction (a bulk ``unlabel``: one hub event, IMAP sessions see the
  flag changes), then the label.
- At most :data:`MAX_LABELS` labels per user; names are 1 to 100
  characters, unique per user in any case; colours are ``#RRGGBB``.
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg

from relate.errors import Conflict, Invalid, NotFound, TooMany
from relate.mail import mutf7  # Thunderbird derives a tag's key through modified UTF-7
from relate.store import imap_messages, mailboxes
from relate.store import labels as store
from relate.store.changes import BULK_SETTING
from relate.store.labels import Label

MAX_LABELS = 500
MAX_NAME = 100
MAX_KEYWORD = 100
DEFAULT_COLOR = "#808080"

# Thunderbird's default tags (mailnews.tags.$labelN in its prefs): keyword and colour by lower-cased name.
THUNDERBIRD = {
    "important": ("$label1", "#FF0000"),
    "work": ("$label2", "#FF9900"),
    "personal": ("$label3", "#009900"),
    "to do": ("$label4", "#3333FF"),
    "later": ("$label5", "#993399"),
}
# Registered keywords (IANA IMAP keywords registry) that mean something else than a label.
RESERVED = frozenset(
    k.lower()
    for k in ("$Forwarded", "$MDNSent", "$Junk", "$NotJunk", "$Phishing", "$SubmitPending", "$Submitted", "$Muted")
)
# RFC 9051 §9 flag-keyword: an atom (no specials, no `\`); the API's keyword rule (api/mail.py).
KEYWORD = re.compile(r"^[!#$&'+\-.0-9:;<=>?@A-Z^_`a-z|~]{1,100}$")
_NOT_ATOM = re.compile(r"[^!#$&'+\-.0-9:;<=>?@A-Z^_`a-z|~]")
_COLOR = re.compile(r"^#[0-9A-Fa-f]{6}$")


def check_name(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid("name must be a string")
    name = value.strip()
    if not 0 < len(name) <= MAX_NAME:
        raise Invalid(f"name must be 1 to {MAX_NAME} characters")
    if any(ord(c) < 0x20 or c == "\x7f" or 0xD800 <= ord(c) <= 0xDFFF for c in name):
        raise Invalid("name must not contain control characters or lone surrogates")
    return name


def check_color(value: Any) -> str:
    if not isinstance(value, str) or not _COLOR.match(value):
        raise Invalid("color must be #RRGGBB")
    return value.upper()


def check_keyword(value: Any) -> str:
    if not isinstance(value, str) or not KEYWORD.match(value):
        raise Invalid("keyword must be an IMAP keyword (an atom of 1 to 100 characters, not a system flag)")
    if value.lower() in RESERVED:
        raise Invalid(f"{value} is a registered keyword with another meaning")
    return value


def derived_keyword(name: str) -> str:
    """The keyword Thunderbird would give a tag named ``name`` (see the module's policy), before de-duplication."""
    default = THUNDERBIRD.get(name.lower())
    if default is not None:
        return default[0]
    key = mutf7.encode(re.sub(r'[ ()/{%*<>\\"]', "_", name)).lower()
    key = _NOT_ATOM.sub("_", key)[:MAX_KEYWORD]
    return key if key.lower() not in RESERVED else key + "_"


def _unique(keyword: str, taken: set[str]) -> str:
    if keyword.lower() not in taken:
        return keyword
    n = 2
    while True:
        suffix = f"_{n}"
        candidate = keyword[: MAX_KEYWORD - len(suffix)] + suffix
        if candidate.lower() not in taken:
            return candidate
        n += 1


async def create(pool: asyncpg.Pool, user_id: int, data: dict[str, Any]) -> Label:
    unknown = set(data) - {"name", "color", "keyword"}
    if unknown:
        raise Invalid(f"unknown fields: {', '.join(sorted(unknown))}")
    name = check_name(data.get("name"))
    default = THUNDERBIRD.get(name.lower())
    color = check_color(data["color"]) if data.get("color") is not None else (default or ("", DEFAULT_COLOR))[1]
    asked = check_keyword(data["keyword"]) if data.get("keyword") is not None else None
    async with pool.acquire() as conn, conn.transaction():
        # Serialise the user's label changes: the count and the keywords taken hold until commit.
        await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE", user_id)
        have = await store.list_all(conn, user_id)
        if len(have) >= MAX_LABELS:
            raise TooMany(f"at most {MAX_LABELS} labels")
        taken = {label.keyword.lower() for label in have}
        if asked is not None and asked.lower() in taken:
            raise Conflict("a label with this keyword exists")
        keyword = asked if asked is not None else _unique(derived_keyword(name), taken)
        return await store.create(conn, user_id, name, color, keyword)


async def update(pool: asyncpg.Pool, user_id: int, label_id: int, data: dict[str, Any]) -> Label:
    unknown = set(data) - {"name", "color"}
    if unknown:
        hint = " (a label's keyword never changes)" if "keyword" in unknown else ""
        raise Invalid(f"unknown fields: {', '.join(sorted(unknown))}{hint}")
    async with pool.acquire() as conn, conn.transaction():
        label = await store.get(conn, user_id, label_id, lock=True)
        if label is None:
            raise NotFound("no such label")
        name = check_name(data["name"]) if "name" in data else label.name
        color = check_color(data["color"]) if "color" in data else label.color
        changed = await store.update(conn, user_id, label_id, name, color)
    if changed is None:
        raise NotFound("no such label")
    return changed


async def delete(pool: asyncpg.Pool, user_id: int, label_id: int) -> tuple[Label, int]:
    """Remove the label's keyword from the user's messages, then the label; (the label, messages unlabelled)."""
    async with pool.acquire() as conn, conn.transaction():
        label = await store.get(conn, user_id, label_id, lock=True)
        if label is None:
            raise NotFound("no such label")
        await conn.execute("SELECT set_config($1, $2, true)", BULK_SETTING, "unlabel")
        found = await store.labelled(conn, user_id, label.keyword)
        for mailbox_id, uids in found:  # mailbox id order, as services/mail.py locks them
            await imap_messages.store_flags(conn, mailbox_id, uids, "-", [label.keyword])
        count = sum(len(uids) for _, uids in found)
        if found:
            boxes = [box for box, _ in found]
            listed = boxes if len(boxes) <= imap_messages.EXPUNGE_IDS_MAX else None
            await mailboxes.notify(conn, "bulk", 0, user_id, 0, action="unlabel", count=count, mailboxes=listed)
        await store.delete(conn, user_id, label_id)
    return label, count


async def keyword_of(pool: asyncpg.Pool, user_id: int, label_id: Any) -> str:
    """The keyword of the user's label ``label_id`` (an id from the API); NotFound if there is none."""
    if not isinstance(label_id, int) or isinstance(label_id, bool) or not 0 < label_id < 2**63:
        raise NotFound("no such label")
    label = await store.get(pool, user_id, label_id)
    if label is None:
        raise NotFound("no such label")
    return label.keyword


async def by_keyword(pool: asyncpg.Pool, user_id: int) -> dict[str, int]:
    """The user's label ids by keyword: which of a message's flags are labels."""
    return {label.keyword: label.id for label in await store.list_all(pool, user_id)}
