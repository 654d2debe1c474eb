"""Threads for the apps: the list and one thread, with a snippet of each thread's latest message.

The thread of a message is decided at ingest (store/threads.py says how); this
module reads, and labels a whole thread (:func:`label`). A snippet is the
message's preview (RFC 8970, relate.mail.preview), made the first time anything
asks (here or IMAP's FETCH PREVIEW) and then kept with the message; a page of
threads makes at most one preview per thread, from the first octets of one text
part, in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from relate.mail import preview
from relate.services import mail
from relate.store import imap_messages, threads
from relate.store.threads import ThreadFigures


@dataclass(frozen=True)
class Thread:
    figures: ThreadFigures
    snippet: str


async def page(pool: asyncpg.Pool, user_id: int, offset: int, limit: int) -> tuple[list[Thread], int]:
    """One page of the user's threads, latest arrival first, and how many the user has."""
    async with pool.acquire() as conn:
        found, total = await threads.listing(conn, user_id, offset, limit)
        made = await snippets(conn, [f.latest_id for f in found])
    return [Thread(f, made.get(f.latest_id, "")) for f in found], total


async def one(
    pool: asyncpg.Pool, user_id: int, thread_id: int, offset: int, limit: int
) -> tuple[Thread, list[dict[str, Any]]] | None:
    """A thread of the user and one page of its messages, oldest first (None: no such thread)."""
    async with pool.acquire() as conn:
        found = await threads.figures(conn, user_id, thread_id)
        if found is None:
            return None
        rows = await threads.messages(conn, user_id, thread_id, offset, limit)
        made = await snippets(conn, [found.latest_id])
    return Thread(found, made.get(found.latest_id, "")), rows


async def label(pool: asyncpg.Pool, user_id: int, thread_id: int, action: str, keyword: str) -> int | None:
    """Put a label's keyword on every email of the thread (``action`` "label") or take it off ("unlabel"),
    through services/mail.py's bulk action, :data:`mail.MAX_BULK` emails per transaction (a longer thread
    in several); how many emails it was applied to, None when the user has no such thread."""
    async with pool.acquire() as conn:
        ids = await threads.message_ids(conn, user_id, thread_id)
    if not ids:
        return None
    done = 0
    for start in range(0, len(ids), mail.MAX_BULK):
        changed = await mail.apply(pool, user_id, action, ids[start : start + mail.MAX_BULK], keyword=keyword)
        done += len(changed.ids)
    return done


async def snippets(conn: asyncpg.Connection, message_ids: Sequence[int]) -> dict[int, str]:
    """The previews of some messages, by id: those kept, and the others made now (and kept)."""
    known = await threads.previews(conn, message_ids)
    out = {mid: text for mid, (_, _, text) in known.items() if text is not None}
    missing: dict[int, dict[int, int]] = defaultdict(dict)  # mailbox -> uid -> message id
    for mid, (mailbox_id, uid, text) in known.items():
        if text is None:
            missing[mailbox_id][uid] = mid
    made: list[tuple[int, str]] = []
    for mailbox_id, by_uid in missing.items():
        found = await imap_messages.structures(conn, mailbox_id, list(by_uid))
        sources = {uid: (mid, preview.source(structure)) for mid, uid, structure in found}
        cuts = [(uid, s.start, s.end - s.start) for uid, (_, s) in sources.items() if s is not None]
        octets = await imap_messages.slices(conn, mailbox_id, cuts) if cuts else {}
        made += await asyncio.to_thread(_make, sources, octets)
    if made:
        await imap_messages.save_previews(conn, made)
    return out | dict(made)


def _make(sources: dict[int, tuple[int, preview.Source | None]], octets: dict[int, bytes]) -> list[tuple[int, str]]:
    """(message id, preview) of each source (pure CPU, in a worker thread)."""
    out: list[tuple[int, str]] = []
    for uid, (mid, src) in sources.items():
        if src is None:
            out.append((mid, ""))
        elif uid in octets:
            out.append((mid, preview.make(octets[uid], src)))
    return out
