"""Searches kept up to date (RFC 5267 §4.3, CONTEXT=SEARCH and CONTEXT=SORT): RETURN (UPDATE) and CANCELUPDATE.

Policy:

- A SEARCH or SORT with the UPDATE return option leaves a context behind,
  named by its tag, holding the result as UIDs (mailbox order for SEARCH,
  the requested order for SORT). Message numbers and ``$`` in its criteria
  are fixed to the messages they named when it ran (and ``*`` of UID sets
  to the UID it meant then), so later expunges and arrivals do not move them.
- Whenever the session reports changes (``ImapSession.sync``: after
  commands, in IDLE, on NOOP), the criteria are evaluated again for the
  messages that arrived or whose flags changed, and expunged members leave.
  The client hears ``* ESEARCH (TAG "t") [UID] REMOVEFROM (...)`` before
  the EXPUNGE responses (while the numbers it names are valid) and
  ``... ADDTO (...)`` after EXISTS (RFC 5267 §4.3.3, §4.3.4). SEARCH updates
  use position 0 and one set in mailbox order; SORT updates give each run of
  adjacent results its position (removals against the result before them,
  additions against the result after them: removals go first).
- A message's sort keys never change (they come from its header and arrival),
  so a SORT context's order only changes by members leaving and arriving;
  the new order of a SORT result is asked of PostgreSQL when members arrive.
- Contexts belong to the selected mailbox: selecting another one, CLOSE or
  UNSELECT ends them. CANCELUPDATE ends the ones it names; a tag that names
  none is answered NO. UPDATE with a tag that a live context has is BAD
  (RFC 5267 §4.3); past ``imap.max_update_contexts`` the search still
  answers, with ``* NO [NOUPDATE "tag"]`` (§4.3.1).
- Work that grows with a result (fixing its criteria, finding who leaves and
  who arrives, placing arrivals in a SORT result) runs in a worker thread once
  the result or the mailbox holds more than ``_INLINE`` messages, so a kept
  search over a 100,000-message mailbox never holds the event loop; message
  numbers become UID ranges (one per range, not per message).
"""

from __future__ import annotations

import array
import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from relate.imap import search as searching
from relate.imap.errors import Bad
from relate.imap.parser import SearchKey, SeqRange, SeqSet
from relate.imap.session import Selected
from relate.mail.imapwire import astring
from relate.store import sorting
from relate.store.db import Queryable

__all__ = ["Context", "Updates", "fixed_key", "register"]

_T = TypeVar("_T")
_P = ParamSpec("_P")
# Up to this many messages (in a result, or in the mailbox for fixing criteria) are worked on on the event
# loop; more in a worker thread (a pass over 5000 UIDs in Python takes about 1-3 ms).
_INLINE = 5000


async def _offload(big: bool, work: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``work(*args)``: in a worker thread when ``big``. Only the session's own task changes what it reads
    (its contexts, its view of the mailbox), and that task waits here meanwhile."""
    return await asyncio.to_thread(work, *args, **kwargs) if big else work(*args, **kwargs)


@dataclass
class Context:
    tag: str
    uid: bool  # UIDs in updates (UID SEARCH, UID SORT), else message numbers
    key: SearchKey  # with message numbers, $ and * fixed to UIDs (fixed_key)
    charset: str | None
    program: tuple[tuple[str, bool], ...] | None  # SORT's; None for SEARCH
    members: list[int]  # UIDs: ascending for SEARCH, in the requested order for SORT


def _uid_set(uids: Sequence[int]) -> SeqSet:
    """A UID set naming exactly ``uids`` (ascending), as ranges; empty names nothing."""
    ranges: list[SeqRange] = []
    for uid in uids:
        if ranges and ranges[-1].end == uid - 1:
            ranges[-1] = SeqRange(ranges[-1].start, uid)
        else:
            ranges.append(SeqRange(uid, uid))
    return SeqSet(tuple(ranges) or (SeqRange(0, 0),))  # UID 0 is no message's


def fixed_key(key: SearchKey, sel: Selected) -> SearchKey:
    """``key`` with every message number set, ``$`` and ``*`` replaced by the UIDs they name now.

    A range of message numbers becomes the range of their UIDs: the UIDs between are of messages
    expunged before (UIDs are never given out again), and later arrivals take higher ones.
    Recursion follows the criteria's nesting, which the parser bounds (limits.MAX_NESTING).
    """
    if key.name in ("SEQ", "UID"):
        (seqset,) = key.args
        assert isinstance(seqset, SeqSet)
        if seqset.saved:
            return SearchKey("UID", (_uid_set(sorted(sel.saved)),))
        if key.name == "UID":  # "*" is the largest UID now; other UIDs stay as given (later ones may arrive)
            spans = seqset.resolve(sel.uids[-1] if sel.uids else 0)
            return SearchKey("UID", (SeqSet(tuple(SeqRange(lo, hi) for lo, hi in spans)),))
        count = len(sel.uids)
        ranges = tuple(
            SeqRange(sel.uids[lo - 1], sel.uids[hi - 1])
            for lo, hi in ((max(lo, 1), min(hi, count)) for lo, hi in seqset.resolve(count))
            if lo <= hi
        )
        return SearchKey("UID", (SeqSet(ranges or (SeqRange(0, 0),)),))  # UID 0 is no message's
    if not any(isinstance(arg, SearchKey) for arg in key.args):
        return key
    return SearchKey(key.name, tuple(fixed_key(a, sel) if isinstance(a, SearchKey) else a for a in key.args))


class Plan:
    """One sync's updates: rendered in two parts, before the EXPUNGE responses and after EXISTS."""

    def __init__(self) -> None:
        # Per context: REMOVEFROM pairs and ADDTO pairs, each (position, UIDs in result order).
        self._changes: list[tuple[Context, list[tuple[int, list[int]]], list[tuple[int, list[int]]]]] = []

    def add(self, ctx: Context, removed: list[tuple[int, list[int]]], added: list[tuple[int, list[int]]]) -> None:
        if removed or added:
            self._changes.append((ctx, removed, added))

    def _lines(self, sel: Selected, which: int, name: bytes) -> list[bytes]:
        out = []
        for ctx, *pairs in self._changes:
            items = pairs[which]
            if not items:
                continue
            shown = []
            for position, uids in items:
                numbers = uids if ctx.uid else [n for n in (sel.msn(u) for u in uids) if n is not None]
                if numbers:
                    shown.append(b"%d %s" % (position, searching.compact(numbers).encode()))
            if shown:
                head = b"ESEARCH (TAG " + astring(ctx.tag) + b")" + (b" UID " if ctx.uid else b" ")
                out.append(head + name + b" (" + b" ".join(shown) + b")")
        return out

    def removals(self, sel: Selected) -> list[bytes]:
        """REMOVEFROM responses, numbered as the client knows the mailbox before the expunges."""
        return self._lines(sel, 0, b"REMOVEFROM")

    def additions(self, sel: Selected) -> list[bytes]:
        """ADDTO responses, numbered as the client knows the mailbox after EXISTS."""
        return self._lines(sel, 1, b"ADDTO")


def _runs(positions: list[tuple[int, int]], *, removal: bool) -> list[tuple[int, list[int]]]:
    """(position, UID) steps, applied in order, as pairs of a position and consecutive UIDs.

    An addition continues the previous pair when it lands right after it; a removal, when it
    removes at the position the previous one did (the rest moved up).
    """
    pairs: list[tuple[int, list[int]]] = []
    for position, uid in positions:
        if pairs:
            last_position, last = pairs[-1]
            expected = last_position if removal else last_position + len(last)
            if position == expected:
                last.append(uid)
                continue
        pairs.append((position, [uid]))
    return pairs


class Updates:
    """The contexts of one selected mailbox (``Selected.updates``)."""

    def __init__(self) -> None:
        self.contexts: dict[str, Context] = {}
        self._waiting: set[int] = set()  # arrivals and flag changes not yet worked out (see prepare)

    def __bool__(self) -> bool:
        return bool(self.contexts)

    def cancel(self, tag: str) -> bool:
        return self.contexts.pop(tag, None) is not None

    async def prepare(
        self,
        conn: Queryable,
        sel: Selected,
        *,
        new: Sequence[int],
        flagged: Sequence[int],
        expunged: Sequence[int],
        deferred: bool,
    ) -> Plan:
        """What one sync's changes do to each context, as UIDs and positions (``sel`` as the client knows it).

        ``expunged`` are the expunges this sync reports. With ``deferred`` (expunges it holds back until
        a command that allows them), nothing is worked out now: the arrivals and flag changes wait for
        the next sync, so that no context has to place a message between members that are gone.
        """
        plan = Plan()
        self._waiting.update(new)
        self._waiting.update(flagged)
        if deferred:
            return plan
        leaving = set(expunged)
        candidates = sorted(self._waiting - leaving)
        if not (candidates or leaving):
            return plan
        view = sel
        if candidates:
            arrived = [u for u in new if u not in leaving]
            view = await _offload(bool(leaving) and len(sel.uids) > _INLINE, _view, sel, leaving, arrived)
        results: list[tuple[Context, list[int]]] = []
        for ctx in self.contexts.values():
            matched: set[int] = set()
            if candidates:
                matched = set(await searching.run(conn, view, ctx.key, charset=ctx.charset, only=candidates))
            big = len(ctx.members) > _INLINE
            removed, added = await _offload(big, _delta, ctx.members, leaving, candidates, matched)
            if removed or added:
                result, removals, additions = await self._apply(conn, sel.mailbox_id, ctx, removed, added)
                results.append((ctx, result))
                plan.add(ctx, removals, additions)
        # Only now, with every query answered: a database failure above leaves each context as it was
        # and the changes waiting, as sync() leaves the news pending.
        for ctx, result in results:
            ctx.members = result
        self._waiting.clear()
        return plan

    @staticmethod
    async def _apply(
        conn: Queryable, mailbox_id: int, ctx: Context, removed: set[int], added: list[int]
    ) -> tuple[list[int], list[tuple[int, list[int]]], list[tuple[int, list[int]]]]:
        """``ctx``'s new result, and the REMOVEFROM and ADDTO pairs that tell the client of it."""
        members = ctx.members
        big = len(members) > _INLINE
        if ctx.program is None:  # SEARCH: position 0, one set in mailbox order (RFC 5267 §4.3.3)
            result = await _offload(big, _merged, members, removed, added)
            return result, ([(0, sorted(removed))] if removed else []), ([(0, added)] if added else [])
        result = await _offload(big, _without, members, removed)
        if added:
            # Sort keys never change: the survivors keep their order and the new ones fall in between.
            survivors = len(result)
            result = await sorting.sorted_uids(conn, mailbox_id, ctx.program, only=result + added)
            if len(result) < survivors + len(added):
                # Expunged since this sync's look at the mailbox: they leave now (their numbers are still valid).
                kept = set(result)
                removed = removed | set(await _offload(big, _without, members, kept))
        removals, additions = await _offload(big, _placed, members, removed, result, set(added))
        return result, removals, additions


def _delta(
    members: list[int], leaving: set[int], candidates: list[int], matched: set[int]
) -> tuple[set[int], list[int]]:
    """The members that leave a result (expunged, or no longer matching) and the candidates that join it."""
    present = set(members)
    removed = leaving & present | {u for u in candidates if u in present and u not in matched}
    return removed, [u for u in candidates if u in matched and u not in present]


def _without(members: list[int], gone: set[int]) -> list[int]:
    return [u for u in members if u not in gone]


def _merged(members: list[int], removed: set[int], added: list[int]) -> list[int]:
    """A SEARCH result (ascending) without ``removed`` and with ``added`` (ascending); arrivals usually land
    after every member (no sort needed then)."""
    ascending = _without(members, removed) if removed else list(members)
    if not ascending or not added or added[0] > ascending[-1]:
        return ascending + added
    return sorted(ascending + added)


def _placed(
    members: list[int], removed: set[int], result: list[int], added: set[int]
) -> tuple[list[tuple[int, list[int]]], list[tuple[int, list[int]]]]:
    """The REMOVEFROM and ADDTO pairs that take a SORT result from ``members`` to ``result``."""
    steps, dropped = [], 0
    for index, uid in enumerate(members):
        if uid in removed:
            steps.append((index - dropped + 1, uid))
            dropped += 1
    additions = [(i + 1, u) for i, u in enumerate(result) if u in added]
    return _runs(steps, removal=True), _runs(additions, removal=False)


def _view(sel: Selected, gone: set[int], new: Sequence[int]) -> Selected:
    """The selected mailbox as it will be once this sync is reported (what criteria are evaluated against)."""
    uids = array.array("Q", (u for u in sel.uids if u not in gone)) if gone else array.array("Q", sel.uids)
    uids.extend(u for u in new if not uids or u > uids[-1])
    return dataclasses.replace(sel, uids=uids)


async def register(
    sel: Selected,
    tag: str,
    *,
    uid: bool,
    key: SearchKey,
    charset: str | None,
    program: tuple[tuple[str, bool], ...] | None,
    members: list[int],
    most: int,
) -> bytes | None:
    """Keep a search up to date; the ``NO [NOUPDATE]`` line to send when ``most`` contexts are kept already."""
    if sel.updates is None:
        sel.updates = Updates()
    updates = sel.updates
    assert isinstance(updates, Updates)
    if len(updates.contexts) >= most:
        return b"NO [NOUPDATE " + astring(tag) + b"] Too many contexts, this search will not be updated"
    fixed = await _offload(max(len(sel.uids), len(sel.saved)) > _INLINE, fixed_key, key, sel)
    updates.contexts[tag] = Context(tag, uid, fixed, charset, program, members)
    return None


def check_tag(sel: Selected, tag: str) -> None:
    """RFC 5267 §4.3: UPDATE with the tag of a live context is BAD."""
    updates = sel.updates
    if isinstance(updates, Updates) and tag in updates.contexts:
        raise Bad("That tag already names a search that is being updated")
