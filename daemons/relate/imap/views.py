"""What SELECT read of a mailbox, kept for the next SELECT of it in this process while it still holds.

A mailbox's UIDs and its first unseen message change only by a change that raises its
HIGHESTMODSEQ (every message added, removed or re-flagged raises it), so what was read at one
modseq is exact for as long as the mailbox is at that modseq. SELECT hands the kept mailbox id and
modseq to the store (imap_messages.select_state), which reads the UIDs again only when they differ:
clients that keep re-selecting a big mailbox that has not changed (20 sessions of one user over
10,000 messages) cost no scan of its messages. The views are shared by the process's sessions and
bounded in octets: past the bound, they are all dropped and kept afresh.
"""

from __future__ import annotations

from dataclasses import dataclass

# The octets of UIDs kept at most (8 per message): a million messages' worth.
VIEWS_OCTETS = 8 * 1024 * 1024


@dataclass(frozen=True)
class View:
    mailbox_id: int
    modseq: int
    uids: bytes  # 8-octet big-endian UIDs, ascending (imap_messages.uid_array)
    unseen: int | None  # the lowest UID without \Seen


class MailboxViews:
    """Views by (user id, mailbox name as SELECT matched it: INBOX in capitals)."""

    def __init__(self, octets: int = VIEWS_OCTETS) -> None:
        self._octets = octets
        self._held = 0
        self._views: dict[tuple[int, str], View] = {}

    def get(self, key: tuple[int, str]) -> View | None:
        return self._views.get(key)

    def keep(self, key: tuple[int, str], view: View) -> None:
        if len(view.uids) > self._octets:
            return
        old = self._views.pop(key, None)
        self._held -= len(old.uids) if old is not None else 0
        if self._held + len(view.uids) > self._octets:
            self._views.clear()
            self._held = 0
        self._views[key] = view
        self._held += len(view.uids)
