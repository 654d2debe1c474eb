"""Changes to a user's mail: mark read or unread, flag, label, move, delete; one message or many, over one path.

Policy:

- The REST API's routes for one message and its bulk route both come here;
  the work is done by the store functions IMAP's STORE, MOVE and EXPUNGE
  use (store/imap_messages.py), so every change takes a modseq, is logged
  for QRESYNC and announced on the change feed the same way, and IMAP
  sessions (IDLE included) and the WebSocket hub hear of it whoever made it.
- A message keeps its id when it moves between the user's folders (JMAP's
  model); IMAP sees a MOVE: an expunge in the source, a new UID in the target.
- Deleting moves to the user's Trash (the ``\\Trash`` folder, else one named
  Trash, made when missing); deleting what is in Trash removes it for good,
  for this user only (a copy another user received is another message).
- An action runs in one transaction: all of it or none. The mailboxes it
  touches are locked first, in id order, as a MOVE locks its two, so two
  actions (or an action and an IMAP MOVE) cannot deadlock.
- A bulk action (up to :data:`MAX_BULK` ids) marks its message changes with
  the action (store/changes.py) and ends with one ``bulk`` event naming the
  action, the count and the mailboxes touched (null past 300): the hub sends apps that one
  summary (``BulkChanged``) instead of an event per message, while IMAP
  sessions follow each mailbox as ever.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from relate.errors import Invalid, NotFound
from relate.store import emails, imap_messages, mailboxes
from relate.store.changes import BULK_SETTING
from relate.store.emails import Located

MAX_BULK = 1000
TRASH = "\\Trash"

# Flag actions: (STORE mode, flag).
FLAG_ACTIONS = {
    "markRead": ("+", "\\Seen"),
    "markUnread": ("-", "\\Seen"),
    "flag": ("+", "\\Flagged"),
    "unflag": ("-", "\\Flagged"),
}
# Label actions: (STORE mode); the flag is the label's keyword (services/labels.py).
LABEL_ACTIONS = {"label": "+", "unlabel": "-"}
ACTIONS = (*FLAG_ACTIONS, "move", "delete", *LABEL_ACTIONS)


@dataclass(frozen=True)
class Changed:
    """What an action did."""

    action: str
    ids: list[int]  # the user's messages it applied to, ascending (changed, or already as asked)
    not_found: list[int]  # ids asked for that are not messages of the user, ascending
    mailbox_id: int | None = None  # move, delete: where the moved messages are now (the target, Trash)
    removed: tuple[int, ...] = ()  # delete: ids removed for good (they were in Trash)


async def trash(conn: asyncpg.Connection, user_id: int) -> dict[str, Any]:
    """The user's Trash: the ``\\Trash`` folder, else the one named Trash, else a new one."""
    box = await emails.special(conn, user_id, TRASH)
    if box is None:
        box = await emails.find_mailbox(conn, user_id, "Trash")
    if box is None:
        box = await mailboxes.create(conn, user_id, "Trash", TRASH)
    return box


async def _lock(conn: asyncpg.Connection, user_id: int, mailbox_ids: set[int]) -> set[int]:
    """Lock the user's mailboxes among ``mailbox_ids`` in id order; returns those that exist."""
    rows = await conn.fetch(
        "SELECT id FROM mailboxes WHERE id = ANY($1::bigint[]) AND user_id = $2 ORDER BY id FOR UPDATE",
        sorted(mailbox_ids),
        user_id,
    )
    return {r["id"] for r in rows}


async def apply(
    pool: asyncpg.Pool,
    user_id: int,
    action: str,
    ids: Sequence[int],
    *,
    target_id: int | None = None,
    keyword: str | None = None,
    bulk: bool = True,
) -> Changed:
    """Apply ``action`` (one of :data:`ACTIONS`) to the user's messages ``ids``, in one transaction.

    ``target_id`` is the folder a move goes to (NotFound if it is not the user's); ``keyword`` the label's
    keyword a label or unlabel action adds or removes. ``bulk=False`` is a change to
    one message that apps hear of message by message (EmailUpdated, EmailMoved, EmailDeleted).
    """
    if action not in ACTIONS:
        raise Invalid(f"action must be one of {', '.join(ACTIONS)}")
    if len(ids) > MAX_BULK:
        raise Invalid(f"at most {MAX_BULK} messages at once")
    if action == "move" and target_id is None:
        raise Invalid("a move needs a target mailbox")
    if (action in LABEL_ACTIONS) != (keyword is not None):
        raise Invalid("label and unlabel, and only they, need a label")
    wanted = sorted(set(ids))
    async with pool.acquire() as conn, conn.transaction():
        if bulk:
            await conn.execute("SELECT set_config($1, $2, true)", BULK_SETTING, action)
        found = await emails.locate_many(conn, user_id, wanted)
        missing = sorted(set(wanted) - {f.id for f in found})
        bin_id = (await trash(conn, user_id))["id"] if action == "delete" and found else None
        target = target_id if action == "move" else bin_id
        boxes = {f.mailbox_id for f in found} | ({target} if target is not None else set())
        held = await _lock(conn, user_id, boxes)
        if target is not None and target not in held:
            raise NotFound("no such mailbox")
        if found:
            # Read again under the locks: a message moved (or expunged) meanwhile is left out, as one in a
            # folder deleted meanwhile is: the answer lists what the action was applied to.
            found = [f for f in await emails.locate_many(conn, user_id, wanted) if f.mailbox_id in held]
        removed = await _run(conn, action, found, target, keyword)
        touched = sorted({f.mailbox_id for f in found} | ({target} if target is not None and found else set()))
        if bulk and found:
            # Listed while it fits a NOTIFY payload (8000 bytes), as expunged ids are; else null: refetch all.
            listed = touched if len(touched) <= imap_messages.EXPUNGE_IDS_MAX else None
            await mailboxes.notify(conn, "bulk", 0, user_id, 0, action=action, count=len(found), mailboxes=listed)
    return Changed(action, sorted(f.id for f in found), missing, target, tuple(removed))


async def _run(
    conn: asyncpg.Connection, action: str, found: list[Located], target: int | None, keyword: str | None
) -> list[int]:
    """The action's store calls, mailbox by mailbox in id order; returns the ids removed for good.

    ``target`` is where a move goes, or the Trash for a delete: what is in a Trash folder already (that one or
    another ``\\Trash``) is removed, everything else moved there.
    """
    by_box: dict[int, list[Located]] = defaultdict(list)
    for f in found:
        by_box[f.mailbox_id].append(f)
    removed: list[int] = []
    for box_id, items in sorted(by_box.items()):
        uids = [f.uid for f in items]
        if action in FLAG_ACTIONS:
            mode, flag = FLAG_ACTIONS[action]
            await imap_messages.store_flags(conn, box_id, uids, mode, [flag])
            continue
        if action in LABEL_ACTIONS:
            assert keyword is not None
            await imap_messages.store_flags(conn, box_id, uids, LABEL_ACTIONS[action], [keyword])
            continue
        assert target is not None
        if action == "delete" and (box_id == target or items[0].special_use == TRASH):
            await imap_messages.remove(conn, box_id, uids)
            removed += [f.id for f in items]
        elif box_id != target:
            await imap_messages.copy(conn, box_id, uids, target, move=True)
    return removed


async def set_flags(pool: asyncpg.Pool, user_id: int, email_id: int, flags: Sequence[str]) -> bool:
    """Set one message's flags to exactly ``flags`` (IMAP STORE FLAGS); False if it is not the user's."""
    async with pool.acquire() as conn:
        found = await emails.locate_many(conn, user_id, [email_id])
        if not found:
            return False
        await imap_messages.store_flags(conn, found[0].mailbox_id, [found[0].uid], "", list(flags))
    return True
