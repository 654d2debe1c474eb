"""CONDSTORE and QRESYNC (RFC 7162): what the handlers of imap/commands.py do for them.

Every message carries the modseq of its last change (flags, or its arrival),
every mailbox its HIGHESTMODSEQ, and every expunged UID is logged with the
modseq of its expunge (store/imap_messages.py). The log is kept for the
mailbox's life, so QRESYNC's answers are exact: VANISHED (EARLIER) names the
UIDs expunged since the client's modseq and nothing else, and the
seq-match-data a client sends to narrow it is never needed (§3.2.5.2).

The session (imap/session.py) holds what is enabled: ``condstore`` after any
CONDSTORE enabling command (§3.1: ENABLE CONDSTORE or QRESYNC, SELECT/EXAMINE
(CONDSTORE), STATUS HIGHESTMODSEQ, FETCH MODSEQ or CHANGEDSINCE, SEARCH
MODSEQ, STORE UNCHANGEDSINCE), after which every untagged FETCH that reports
a flag change (with UID, as always), or answers a STORE or a FETCH that set
\\Seen, carries MODSEQ; and ``qresync`` after ENABLE QRESYNC (§3.2.3), after
which those carry UID too (§3.2.4), expunges are reported as VANISHED, and
NOOP, IDLE, MOVE and EXPUNGE say the HIGHESTMODSEQ an expunge reached. No mailbox lacks mod-sequences, so NOMODSEQ
is never sent.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from relate.imap.parser import FetchAtt, QResync, SearchKey, SeqSet
from relate.imap.search import compact
from relate.imap.session import ImapSession, Selected, uid_runs
from relate.mail.imapwire import flag_list
from relate.store import imap_messages

# SELECT (QRESYNC) reads the messages that changed this many at a time, flushing in between.
_RESYNC_ROWS = 2000
# Up to this many changed messages are looked up in the requested UIDs one by one, more through a set.
_FEW = 1000

_MODSEQ = FetchAtt("MODSEQ")
_UID = FetchAtt("UID")

Runs = list[tuple[int, int]]


def uses_modseq(key: SearchKey) -> bool:
    """Whether a search key names MODSEQ anywhere (a CONDSTORE enabling SEARCH, §3.1.5)."""
    stack = [key]
    while stack:  # iterative: the parser bounds the nesting, and nothing here needs to recurse
        item = stack.pop()
        if item.name == "MODSEQ":
            return True
        stack += [a for a in item.args if isinstance(a, SearchKey)]
    return False


def with_modseq(atts: tuple[FetchAtt, ...], *, uid: bool = False) -> tuple[FetchAtt, ...]:
    """``atts`` with MODSEQ last (and, if ``uid``, UID first) unless they are there already."""
    out = list(atts)
    if uid and not any(a.name == "UID" for a in out):
        out.insert(0, _UID)
    if not any(a.name == "MODSEQ" for a in out):
        out.append(_MODSEQ)
    return tuple(out)


def highest_code(session: ImapSession, *, expunge: bool = False) -> str | None:
    """``HIGHESTMODSEQ n`` for a tagged OK under QRESYNC: always for EXPUNGE (§3.2.7), for NOOP, IDLE and
    MOVE once they reported a VANISHED (no FETCH carries an expunge's modseq; Dovecot does the same)."""
    sel = session.selected
    if sel is None or not session.qresync or not (expunge or sel.vanished_unacknowledged):
        return None
    sel.vanished_unacknowledged = False
    return f"HIGHESTMODSEQ {sel.known_modseq}"


def modified_code(sel: Selected, failed: Sequence[int], uid: bool) -> str | None:
    """``MODIFIED set`` (§3.1.3): the messages STORE (UNCHANGEDSINCE) left alone, by UID or number."""
    if not failed:
        return None
    numbers = list(failed) if uid else [n for n in (sel.msn(u) for u in failed) if n is not None]
    return f"MODIFIED {compact(numbers)}" if numbers else None


def search_modseq(returns: set[str] | None, uids: list[int], modseqs: dict[int, int]) -> int | None:
    """The MODSEQ a SEARCH (MODSEQ ...) reports (§3.1.5): the highest of the messages it returns; with
    only MIN and/or MAX asked for, of those (RFC 4731 with 7162, as imaptest and Dovecot answer)."""
    if not uids:
        return None
    if returns and returns <= {"MIN", "MAX"}:
        picked = ([uids[0]] if "MIN" in returns else []) + ([uids[-1]] if "MAX" in returns else [])
    else:
        picked = uids
    return max(modseqs[u] for u in picked)


async def changed(session: ImapSession, sel: Selected, uids: list[int], since: int) -> list[int]:
    """The UIDs of ``uids`` (ascending) whose messages changed above modseq ``since`` (CHANGEDSINCE, §3.1.4.1)."""
    async with session.server.pool.acquire() as conn:
        modified = await imap_messages.modified_uids(conn, sel.mailbox_id, since)
    if len(modified) <= _FEW:
        return [u for u in modified if _has(uids, u)]  # a binary search each: a resync changes few
    wanted = set(uids)
    return [u for u in modified if u in wanted]


async def report_vanished(session: ImapSession, sel: Selected, seqset: SeqSet, since: int) -> None:
    """UID FETCH ... (CHANGEDSINCE n VANISHED) (§3.2.6): ``* VANISHED (EARLIER)`` for the set's UIDs expunged
    above ``n``. ``*`` is the highest UID the session knows of. A UID the session still shows is left to
    the plain VANISHED that will report its expunge (and take it out of the message count)."""
    async with session.server.pool.acquire() as conn:
        runs = await imap_messages.vanished(conn, sel.mailbox_id, since)
    wanted = uid_runs(sel.saved) if seqset.saved else list(seqset.resolve(sel.max_uid))
    runs = _without(_intersect(runs, wanted), sel.uids)
    if runs:
        session.vanished(runs, earlier=True)


async def resync(session: ImapSession, sel: Selected, qresync: QResync, highest: int) -> None:
    """SELECT/EXAMINE (QRESYNC (...)) (§3.2.5.1): after the usual responses, ``* VANISHED (EARLIER)`` for the
    UIDs expunged since the client's modseq, then ``* n FETCH (UID FLAGS MODSEQ)`` for the messages changed
    since, both limited to the client's known UIDs if it sent them (as Dovecot does), and nothing at all
    when its UIDVALIDITY is not the mailbox's.

    Both stop at ``highest``, the HIGHESTMODSEQ of the snapshot SELECT answered from: what changed after
    it reaches the session as any change does, so nothing is reported twice or missed.
    """
    if qresync.uidvalidity != sel.uidvalidity:
        return
    known = qresync.known_uids.resolve(0) if qresync.known_uids is not None else None  # no "*" in known-uids
    async with session.server.pool.acquire() as conn:
        runs = await imap_messages.vanished(conn, sel.mailbox_id, qresync.modseq, highest)
    if known is not None:
        runs = _intersect(runs, list(known))
    if runs:
        session.vanished(runs, earlier=True)
    after = 0
    while True:
        async with session.server.pool.acquire() as conn:
            rows = await imap_messages.modified(conn, sel.mailbox_id, qresync.modseq, highest, after, _RESYNC_ROWS)
        for uid, flags, modseq in rows:
            msn = sel.msn(uid)
            if msn is None or (known is not None and uid not in known):
                continue
            session.send(
                b"* %d FETCH (UID %d FLAGS " % (msn, uid)
                + flag_list(sel.flags_of(uid, flags))
                + b" MODSEQ (%d))" % modseq
            )
        if len(rows) < _RESYNC_ROWS:
            return
        after = rows[-1][0]
        await session.flush()


def _has(ascending: Sequence[int], n: int) -> bool:
    i = bisect.bisect_left(ascending, n)
    return i < len(ascending) and ascending[i] == n


def _intersect(a: Runs, b: Runs) -> Runs:
    """The numbers in both of two ascending lists of disjoint runs, as runs (a linear merge)."""
    out: Runs = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _without(runs: Runs, present: Sequence[int]) -> Runs:
    """``runs`` less the numbers of ``present`` (ascending), in time linear in the runs and the numbers removed."""
    out: Runs = []
    for lo, hi in runs:
        k = bisect.bisect_left(present, lo)
        while k < len(present) and present[k] <= hi:
            if present[k] > lo:
                out.append((lo, present[k] - 1))
            lo = present[k] + 1
            k += 1
        if lo <= hi:
            out.append((lo, hi))
    return out
