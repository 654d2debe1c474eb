"""SORT, THREAD and CANCELUPDATE (RFC 5256, RFC 5957, RFC 5267), and the RETURN options SEARCH shares with SORT.

SORT asks PostgreSQL for the order (``store.sorting``): the matching messages
are found by the SEARCH code first unless the criteria are just ALL, and
the answer is one array of UIDs. THREAD reads what it needs a batch at a
time and links the messages in a worker thread (``imap.thread``). Both
first derive the stored keys of any message from before migration 0018
(``store.sorting.fill_keys``). Turning UIDs into message numbers, and any
other work that grows with the mailbox, runs in a worker thread past
``_INLINE`` messages, so neither command holds the event loop.

Only UTF-8 and US-ASCII are accepted as the charset (RFC 5256 §3: the
server MUST support US-ASCII); others get ``NO [BADCHARSET]``, as SEARCH
answers them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from relate.imap import condstore, contexts, esearch
from relate.imap import search as searching
from relate.imap import thread as threadalg
from relate.imap.errors import No
from relate.imap.parser import CancelUpdate, Search, SearchKey, Sort, Thread
from relate.imap.session import ImapSession, Selected
from relate.store import sorting
from relate.store.db import Queryable

__all__ = ["answer", "cancelupdate", "sort", "thread"]

# Up to this many messages are numbered (and filtered to the client's view) on the event loop; more in a
# worker thread (a binary search each: about 0.3 µs, so 5000 cost under 2 ms).
_INLINE = 5000
_CHARSETS = frozenset({"UTF-8", "US-ASCII"})


def _check_charset(charset: str) -> None:
    if charset not in _CHARSETS:
        raise No("Only UTF-8 and US-ASCII are supported", "BADCHARSET (UTF-8 US-ASCII)")


def _in_view(sel: Selected, uids: Sequence[int]) -> tuple[list[int], list[int]]:
    """The UIDs the client knows of (not arrived since its last EXISTS) and their message numbers, in order."""
    known: list[int] = []
    numbers: list[int] = []
    for uid in uids:
        number = sel.msn(uid)
        if number is not None:
            known.append(uid)
            numbers.append(number)
    return known, numbers


async def _per_message(sel: Selected, uids: Sequence[int]) -> tuple[list[int], list[int]]:
    """``_in_view(sel, uids)``, in a worker thread when ``uids`` are many (the session's view does not change
    meanwhile: only this command's task changes it)."""
    if len(uids) <= _INLINE:
        return _in_view(sel, uids)
    return await asyncio.to_thread(_in_view, sel, uids)


async def _matching(
    conn: Queryable, sel: Selected, key: SearchKey, charset: str, modseqs: dict[int, int] | None = None
) -> list[int] | None:
    """The UIDs matching ``key`` (the SEARCH code), or None for ALL: every message, left to the SQL that orders them.
    With ``modseqs``, each matching message's modseq goes there (a MODSEQ key, RFC 7162 §3.1.5)."""
    if key.name == "ALL":
        return None
    return await searching.run(conn, sel, key, charset=charset, modseqs=modseqs)


def _modseqs(session: ImapSession, key: SearchKey) -> dict[int, int] | None:
    """A dict for the modseqs of the matching messages when ``key`` names MODSEQ (which enables CONDSTORE,
    RFC 7162 §3.1.5: the answer then reports the highest), else None."""
    if not condstore.uses_modseq(key):
        return None
    session.enable_condstore()
    return {}


async def answer(
    session: ImapSession,
    sel: Selected,
    cmd: Search | Sort,
    uids: list[int],
    *,
    program: tuple[tuple[str, bool], ...] | None,
    numbers: list[int] | None = None,
    modseqs: dict[int, int] | None = None,
) -> None:
    """The answer of SEARCH or SORT with RETURN options (``uids`` in result order, all known to the client,
    and their message numbers if already looked up): ``$``, ESEARCH and UPDATE. ``modseqs`` holds the
    matching messages' modseqs when the key names MODSEQ (RFC 7162 §3.1.5)."""
    opts = esearch.options(cmd.returns)
    if "SAVE" in opts:
        sel.saved = esearch.saved(uids, opts)
    if cmd.uid:
        numbers = uids
    elif numbers is None:
        numbers = (await _per_message(sel, uids))[1]
    # RFC 7162 §3.1.5 with RFC 4731: the highest modseq of the messages returned (of MIN/MAX when only they are).
    shown = opts - {"SAVE", "CONTEXT", "UPDATE"}
    modseq = condstore.search_modseq(shown, uids, modseqs) if modseqs is not None else None
    line = esearch.response(cmd.tag, cmd.uid, numbers, opts, cmd.partial, modseq)
    if line is not None:
        session.untagged(line)
    if "UPDATE" in opts:
        refusal = await contexts.register(
            sel,
            cmd.tag,
            uid=cmd.uid,
            key=cmd.key,
            charset=cmd.charset,
            program=program,
            members=list(uids),
            most=session.cfg.max_update_contexts,
        )
        if refusal is not None:
            session.untagged(refusal)


# RFC 5256 §3 (SORT), RFC 5957 (SORT=DISPLAY), RFC 5267 §3 (ESORT), §4 (CONTEXT=SORT), RFC 9394 (PARTIAL)
async def sort(session: ImapSession, cmd: Sort) -> None:
    sel = session.require_selected()
    _check_charset(cmd.charset)
    if cmd.returns and "UPDATE" in cmd.returns:
        contexts.check_tag(sel, cmd.tag)
    if cmd.returns and "SAVE" in cmd.returns:
        sel.saved = []  # RFC 5182 §2.1: a failed command leaves $ empty
    modseqs = _modseqs(session, cmd.key)
    async with session.server.pool.acquire() as conn:
        await sorting.fill_keys(conn, sel.mailbox_id)
        only = await _matching(conn, sel, cmd.key, cmd.charset, modseqs)
        ordered = await sorting.sorted_uids(conn, sel.mailbox_id, cmd.program, only)
    uids, numbers = await _per_message(sel, ordered)
    if cmd.returns is None:
        modseq = condstore.search_modseq(None, uids, modseqs) if modseqs is not None else None
        tail = [f"(MODSEQ {modseq})"] if modseq else []
        session.untagged(" ".join(["SORT", *map(str, uids if cmd.uid else numbers), *tail]))
    else:
        await answer(session, sel, cmd, uids, program=cmd.program, numbers=numbers, modseqs=modseqs)
    await session.sync_after(cmd)
    session.tagged(cmd.tag, "OK", f"{'UID ' if cmd.uid else ''}SORT completed")


# RFC 5256 §3 (THREAD); REFS: draft-ietf-morg-inthread, as Dovecot implements it
async def thread(session: ImapSession, cmd: Thread) -> None:
    sel = session.require_selected()
    _check_charset(cmd.charset)
    async with session.server.pool.acquire() as conn:
        await sorting.fill_keys(conn, sel.mailbox_id)
        only = await _matching(conn, sel, cmd.key, cmd.charset)
        if cmd.algorithm == "ORDEREDSUBJECT":
            uids, sent, groups = await sorting.subject_order(conn, sel.mailbox_id, only)
            threads = await asyncio.to_thread(_ordered_subject, sel, uids, sent, groups)
        else:
            cfg = session.cfg
            threader = threadalg.References(
                refs=cmd.algorithm == "REFS", walk=cfg.thread_max_walk, dummies=cfg.thread_max_dummies
            )
            async for rows in sorting.thread_rows(conn, sel.mailbox_id, only):
                await asyncio.to_thread(threader.add, [r for r in rows if sel.msn(r[0]) is not None])
            needed = await asyncio.to_thread(threader.subjects_needed)
            subjects = await sorting.subjects(conn, sel.mailbox_id, needed) if needed else {}
            threads = await asyncio.to_thread(threader.threads, subjects)
    number = (lambda uid: uid) if cmd.uid else sel.msn
    data = await asyncio.to_thread(threadalg.render, threads, number)
    session.untagged(b"THREAD " + data if data else b"THREAD")
    await session.sync_after(cmd)
    session.tagged(cmd.tag, "OK", f"{'UID ' if cmd.uid else ''}THREAD completed")


def _ordered_subject(sel: Selected, uids: list[int], sent: list[float], groups: list[int]) -> list[threadalg.Tree]:
    """ORDEREDSUBJECT of the messages the client knows of (pure CPU, for a worker thread)."""
    keep = [i for i, u in enumerate(uids) if sel.msn(u) is not None]
    if len(keep) < len(uids):
        uids, sent, groups = [uids[i] for i in keep], [sent[i] for i in keep], [groups[i] for i in keep]
    return threadalg.ordered_subject(uids, sent, groups)


# RFC 5267 §4.3.5 (CANCELUPDATE)
async def cancelupdate(session: ImapSession, cmd: CancelUpdate) -> None:
    sel = session.require_selected()
    updates = sel.updates
    unknown = [t for t in cmd.tags if not (isinstance(updates, contexts.Updates) and t in updates.contexts)]
    if unknown:
        raise No(f"No search is being updated under tag {unknown[0][:64]}")
    assert isinstance(updates, contexts.Updates)
    for tag in cmd.tags:
        updates.cancel(tag)
    session.tagged(cmd.tag, "OK", "CANCELUPDATE completed")
