"""NOTIFY (RFC 5465): which news a session gets unasked, of which mailboxes, and the responses that carry them.

Policy (Dovecot 2.3 is the reference where the RFC leaves room):

- Events offered: MessageNew, MessageExpunge, FlagChange, MailboxName,
  SubscriptionChange. Any other is ``NO [BADEVENT (those five)]`` (§3.1) and
  the settings in force stay. Two SELECTED groups are BAD (the parser's).
  Like Dovecot, the other combination rules of §5 (MessageNew without
  MessageExpunge, mailbox events in a SELECTED group) are not enforced: what
  is asked for is reported, the rest ignored.
- The selected mailbox's message events come only through a SELECTED or
  SELECTED-DELAYED group (§6.1): with SELECTED they are reported as soon as
  they are heard while no command runs (EXISTS and RECENT, then a FETCH of
  the MessageNew items; FETCH FLAGS; EXPUNGE or VANISHED); SELECTED-DELAYED
  holds expunges until a command that allows them (NOOP, IDLE, ...). Without
  such a group, or after NOTIFY NONE, the selected mailbox is not reported at
  all, not even on NOOP, as Dovecot answers; the session's own commands still
  answer what they did. The MessageNew items are sent as if .PEEK: \\Seen is
  never set by a notification.
- Other mailboxes: the first group whose filter names the mailbox decides
  (NONE there silences it, §6). Message events come as ``STATUS name
  (MESSAGES n UIDNEXT n UIDVALIDITY n UNSEEN n)``, with HIGHESTMODSEQ when
  the group has FlagChange or the session uses CONDSTORE, read when sent, so
  a burst of changes to one mailbox becomes one STATUS. NOTIFY SET STATUS
  sends one for each mailbox a group names at once (not the selected one).
- MailboxName: ``LIST () "/" name`` for a new mailbox, with ``("OLDNAME"
  (old))`` for a renamed one, ``LIST (\\NonExistent) "/" name`` for a deleted
  one. SubscriptionChange: ``LIST (\\Subscribed) "/" name`` or ``LIST ()
  "/" name``. Both come from comparing the user's mailboxes and subscriptions
  with what the session last reported, read when something changed, so
  nothing is missed and nothing is said twice, also after the change feed was
  lost for a while. Changes by the session itself are reported too, after
  its tagged answer, as Dovecot does.
- Filters: INBOXES is INBOX (all mail is delivered there); PERSONAL is every
  mailbox of the user; SUBSCRIBED follows the subscriptions as they are;
  SUBTREE a is a and every name below it; MAILBOXES names mailboxes exactly
  (INBOX in any case). A name without a mailbox is no error.

News come from the change feed (imap/server.py's ChangeHub, by user) and are
written by the session between commands and in IDLE (imap/session.py), never
inside another response. What waits is bounded by the user's mailboxes: one
entry per mailbox, whatever the number of changes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from relate.errors import NotFound
from relate.imap import fetch as fetching
from relate.imap import preview as previewing
from relate.imap.errors import No
from relate.imap.mutf7 import encode_mailbox
from relate.imap.parser import Notify, NotifyGroup
from relate.imap.session import DELAYED, IMMEDIATE, SILENT, ImapSession
from relate.mail.imapwire import astring
from relate.store import imap_messages, mailboxes
from relate.store.changes import MailChange
from relate.store.db import Queryable

__all__ = ["EVENTS", "Notifier", "notify"]

EVENTS = ("MessageNew", "MessageExpunge", "FlagChange", "MailboxName", "SubscriptionChange")
_OFFERED = frozenset(e.upper() for e in EVENTS)
_MESSAGE_EVENTS = frozenset({"MESSAGENEW", "MESSAGEEXPUNGE", "FLAGCHANGE"})
# The change feed's message events (store/changes.py) as NOTIFY names them.
_KIND = {"new": "MESSAGENEW", "expunge": "MESSAGEEXPUNGE", "flags": "FLAGCHANGE"}
_NAME_EVENTS = frozenset({"created", "deleted", "renamed"})
# New messages whose MessageNew items are read from the database at once (one at a time with body sections).
_FETCH_ROWS = 100
# A message bigger than this has its MessageNew items rendered in a worker thread (BINARY decoding).
_RENDER_INLINE = 256 * 1024


def _name(name: str) -> str:
    return "INBOX" if mailboxes.is_inbox(name) else name


class Notifier:
    """One session's NOTIFY settings and what waits to be reported (imap/session.py's Notifications)."""

    def __init__(self, groups: Sequence[NotifyGroup], user_id: int) -> None:
        self.user_id = user_id
        self.selected = next((g for g in groups if g.filter.startswith("SELECTED")), None)
        self.groups = [
            replace(g, mailboxes=tuple(_name(n) for n in g.mailboxes))
            for g in groups
            if not g.filter.startswith("SELECTED")
        ]
        events = {e for g in self.groups for e in g.events}
        self.messages = bool(events & _MESSAGE_EVENTS)
        self.names = "MAILBOXNAME" in events
        self.subscriptions = "SUBSCRIPTIONCHANGE" in events
        self.reads_subscriptions = self.subscriptions or any(g.filter == "SUBSCRIBED" for g in self.groups)
        self.wakeup = asyncio.Event()
        self._pending: dict[int, set[str]] = {}  # mailbox id -> message events heard, in the order first heard
        self._names_dirty = False
        self._boxes: dict[int, str] = {}  # the user's mailboxes as last reported: id -> name
        self._subscribed: frozenset[str] = frozenset()

    @property
    def listens(self) -> bool:
        """Whether anything but the selected mailbox is reported (the session then hears of the user's changes)."""
        return self.messages or self.names or self.subscriptions

    def selected_mode(self) -> str:
        group = self.selected
        if group is None or not set(group.events) & _MESSAGE_EVENTS:
            return SILENT
        return DELAYED if group.filter == "SELECTED-DELAYED" else IMMEDIATE

    # -- hearing -----------------------------------------------------------------------------

    def changed(self, change: MailChange | None) -> None:
        """A change to one of the user's mailboxes; None: any may have changed (the change feed was lost)."""
        if change is None:
            for mailbox_id in self._boxes if self.messages else ():
                self._pending.setdefault(mailbox_id, set()).update(_KIND.values())
            self._names_dirty = True
        elif (kind := _KIND.get(change.event)) is not None:
            if not self.messages:
                return
            self._pending.setdefault(change.mailbox, set()).add(kind)
        elif change.event in _NAME_EVENTS or change.event == "subscriptions":
            if not (self.names or self.reads_subscriptions):
                return
            self._names_dirty = True  # renames move subscriptions along: both lists are read again
        else:
            return
        self.wakeup.set()

    # -- matching --------------------------------------------------------------------------------

    def _covers(self, group: NotifyGroup, name: str, subscribed: frozenset[str]) -> bool:
        kind = group.filter
        if kind == "PERSONAL":
            return True
        if kind == "INBOXES":
            return mailboxes.is_inbox(name)
        if kind == "SUBSCRIBED":
            return name in subscribed
        if kind == "SUBTREE":
            return any(name == top or name.startswith(top + "/") for top in group.mailboxes)
        return _name(name) in group.mailboxes  # MAILBOXES

    def group_for(
        self, name: str, events: Iterable[str], subscribed: frozenset[str] | None = None
    ) -> NotifyGroup | None:
        """The group that reports any of ``events`` of mailbox ``name``: the first naming it (§6), unless it says NONE
        or has none of them."""
        wanted = set(events)
        for group in self.groups:
            if not self._covers(group, name, self._subscribed if subscribed is None else subscribed):
                continue
            return group if wanted & set(group.events) else None
        return None

    # -- reporting ----------------------------------------------------------------------------------

    async def _read(self, conn: Queryable) -> tuple[dict[int, str], frozenset[str]]:
        """The user's mailboxes (id -> name) and, when they matter here, subscriptions, as they are now."""
        if self.reads_subscriptions:
            rows, subscribed = await mailboxes.listing(conn, self.user_id)
        else:
            rows, subscribed = await mailboxes.list_all(conn, self.user_id), frozenset()
        return {b["id"]: b["name"] for b in rows}, subscribed

    async def start(self, session: ImapSession, conn: Queryable, *, status: bool) -> None:
        """Take the mailboxes and subscriptions as they are as what the client knows; with ``status``, send
        each mailbox's STATUS a group reports, the selected one excepted (§3.1 NOTIFY SET STATUS)."""
        self._boxes, self._subscribed = await self._read(conn)
        if not status:
            return
        selected = session.selected.mailbox_id if session.selected is not None else None
        for mailbox_id, name in sorted(self._boxes.items(), key=lambda item: item[1]):
            group = self.group_for(name, _MESSAGE_EVENTS)
            if group is not None and mailbox_id != selected:
                with contextlib.suppress(NotFound):  # deleted meanwhile: MailboxName tells
                    session.untagged(await self.status_line(session, conn, mailbox_id, group))

    async def status_line(self, session: ImapSession, conn: Queryable, mailbox_id: int, group: NotifyGroup) -> bytes:
        """``STATUS name (...)`` for a mailbox this group reports (§5.2-§5.4, Dovecot's items)."""
        values = await mailboxes.status(conn, mailbox_id, frozenset({"messages", "unseen"}))
        items = [f"MESSAGES {values['messages']}", f"UIDNEXT {values['uidnext']}"]
        items += [f"UIDVALIDITY {values['uidvalidity']}", f"UNSEEN {values['unseen']}"]
        if "FLAGCHANGE" in group.events or session.condstore:
            items.append(f"HIGHESTMODSEQ {values['highestmodseq']}")
        return b"STATUS " + _wire(session, self._boxes[mailbox_id]) + f" ({' '.join(items)})".encode()

    async def deliver(self, session: ImapSession) -> None:
        """Send what waits (between commands, in IDLE); on a database error it waits on, untouched."""
        if not self.wakeup.is_set():
            return
        self.wakeup.clear()
        pending, self._pending = self._pending, {}
        names, self._names_dirty = self._names_dirty, False
        selected = session.selected.mailbox_id if session.selected is not None else None
        lines: list[bytes] = []
        try:
            async with session.server.pool.acquire() as conn:
                if names or any(m not in self._boxes for m in pending):
                    lines += await self._name_lines(session, conn)
                for mailbox_id, kinds in pending.items():
                    name = self._boxes.get(mailbox_id)
                    if mailbox_id == selected or name is None:
                        continue  # the selected mailbox is SELECTED's (§6.1); a deleted one is MailboxName's
                    group = self.group_for(name, kinds)
                    if group is not None:
                        try:
                            lines.append(await self.status_line(session, conn, mailbox_id, group))
                        except NotFound:
                            continue
        except BaseException:
            for mailbox_id, kinds in pending.items():
                self._pending.setdefault(mailbox_id, set()).update(kinds)
            self._names_dirty = self._names_dirty or names
            self.wakeup.set()
            raise
        for line in lines:
            session.untagged(line)

    async def _name_lines(self, session: ImapSession, conn: Queryable) -> list[bytes]:
        """LIST lines for mailboxes made, renamed, deleted and names (un)subscribed since the last report."""
        before, subscribed_before = self._boxes, self._subscribed
        after, subscribed_after = await self._read(conn)
        self._boxes, self._subscribed = after, subscribed_after
        lines: list[bytes] = []
        if self.names:
            for mailbox_id, name in after.items():
                old = before.get(mailbox_id)
                if old == name:
                    continue
                if old is None:
                    if self.group_for(name, ["MAILBOXNAME"]) is not None:
                        lines.append(b'LIST () "/" ' + _wire(session, name))
                elif self.group_for(name, ["MAILBOXNAME"]) or self.group_for(old, ["MAILBOXNAME"], subscribed_before):
                    lines.append(
                        b'LIST () "/" ' + _wire(session, name) + b' ("OLDNAME" (' + _wire(session, old) + b"))"
                    )
            for mailbox_id, old in before.items():
                if mailbox_id not in after and self.group_for(old, ["MAILBOXNAME"], subscribed_before) is not None:
                    lines.append(b'LIST (\\NonExistent) "/" ' + _wire(session, old))
        if self.subscriptions:
            both = subscribed_before | subscribed_after
            for name in sorted(subscribed_after - subscribed_before):
                if self.group_for(name, ["SUBSCRIPTIONCHANGE"], both) is not None:
                    lines.append(b'LIST (\\Subscribed) "/" ' + _wire(session, name))
            for name in sorted(subscribed_before - subscribed_after):
                if self.group_for(name, ["SUBSCRIPTIONCHANGE"], both) is not None:
                    lines.append(b'LIST () "/" ' + _wire(session, name))
        return lines

    async def new_messages(self, session: ImapSession, uids: Sequence[int]) -> None:
        """After EXISTS for ``uids`` in the selected mailbox: a FETCH of MessageNew's items for each (§5.2)."""
        group, sel = self.selected, session.selected
        if group is None or sel is None or not group.fetch_atts or self.selected_mode() == SILENT:
            return
        atts = tuple(replace(a, peek=True) if a.name in ("BODY[]", "BINARY[]") else a for a in group.fetch_atts)
        with_raw = fetching.needs_raw(atts)
        header_only = with_raw and fetching.header_only(atts)
        columns = fetching.columns(atts)
        # A body section holds its message in memory: one at a time (headers are small: many at once).
        step = 1 if with_raw and not header_only else _FETCH_ROWS
        for start in range(0, len(uids), step):
            async with session.server.pool.acquire() as conn:
                rows: list[Any] = await imap_messages.fetch(
                    conn,
                    sel.mailbox_id,
                    uids[start : start + step],
                    with_raw=with_raw,
                    columns=columns,
                    utf8=session.utf8,
                    header_only=header_only,
                )
            if previewing.wanted(atts):
                rows = await previewing.fill(session, sel.mailbox_id, rows)
            for row in rows:
                msn = sel.msn(row["uid"])
                if msn is None:
                    continue
                recent = sel.is_recent(row["uid"]) if sel.recent else False
                session.announce_flags(row["flags"])
                if not with_raw:
                    session.send(b"* %d FETCH " % msn + fetching.render(row, atts, utf8=session.utf8, recent=recent))
                    continue
                raw = bytes(row["raw"])
                if len(raw) > _RENDER_INLINE:
                    pieces = await asyncio.to_thread(
                        fetching.render_pieces, row, raw, atts, utf8=session.utf8, recent=recent
                    )
                else:
                    pieces = fetching.render_pieces(row, raw, atts, utf8=session.utf8, recent=recent)
                session.send_pieces([b"* %d FETCH " % msn, *pieces])
            await session.flush()


def _wire(session: ImapSession, name: str) -> bytes:
    return astring(encode_mailbox(name, utf8=session.utf8), utf8=session.utf8)


def _check_events(groups: Sequence[NotifyGroup]) -> None:
    for group in groups:
        if any(event not in _OFFERED for event in group.events):
            raise No("Event not offered", f"BADEVENT ({' '.join(EVENTS)})")


# RFC 5465 §3.1 (NOTIFY)
async def notify(session: ImapSession, cmd: Notify) -> None:
    assert session.principal is not None
    user_id = session.principal.user_id
    groups = cmd.groups or ()
    _check_events(groups)  # before anything changes: a refused NOTIFY leaves the settings in force
    hub = session.server.hub
    notifier = Notifier(groups, user_id)
    if notifier.listens:
        async with session.server.pool.acquire() as conn:
            await notifier.start(session, conn, status=cmd.status)
        hub.watch_user(session, user_id)
    else:
        hub.unwatch_user(session, user_id)
    session.notifier = notifier
    session.tagged(cmd.tag, "OK", "NOTIFY completed")
