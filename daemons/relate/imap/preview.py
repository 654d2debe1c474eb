"""FETCH PREVIEW (RFC 8970): a message's preview is made the first time a client asks, then kept.

The preview (relate.mail.preview) reads only the first octets of one text
part, which the database cuts out of the stored message; the previews are made
in a worker thread (HTML is scanned) and stored with the messages, so the next
FETCH PREVIEW of them, in any session, only reads a column. Messages are done
``BATCH`` at a time, so a FETCH 1:* PREVIEW over a mailbox never made before
holds at most ``BATCH`` parts' octets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from relate.imap.session import ImapSession
from relate.mail import preview
from relate.store import imap_messages

BATCH = 100


def wanted(atts: Sequence[Any]) -> bool:
    return any(a.name == "PREVIEW" for a in atts)


async def fill(session: ImapSession, mailbox_id: int, rows: Sequence[Any]) -> list[Any]:
    """``rows`` (FETCH rows with a ``preview`` column), each with its preview made where it was missing."""
    missing = [r["uid"] for r in rows if r["preview"] is None]
    made: dict[int, str] = {}
    for start in range(0, len(missing), BATCH):
        made.update(await _make(session, mailbox_id, missing[start : start + BATCH]))
    if not made:
        return list(rows)
    return [{**r, "preview": made[r["uid"]]} if r["uid"] in made else r for r in rows]


async def _make(session: ImapSession, mailbox_id: int, uids: list[int]) -> dict[int, str]:
    async with session.server.pool.acquire() as conn:
        found = await imap_messages.structures(conn, mailbox_id, uids)
        sources = {uid: (message_id, preview.source(structure)) for message_id, uid, structure in found}
        cuts = [(uid, s.start, s.end - s.start) for uid, (_, s) in sources.items() if s is not None]
        octets = await imap_messages.slices(conn, mailbox_id, cuts) if cuts else {}
    texts = await asyncio.to_thread(_texts, sources, octets)
    async with session.server.pool.acquire() as conn:
        await imap_messages.save_previews(conn, [(sources[uid][0], text) for uid, text in texts.items()])
    return texts


def _texts(sources: dict[int, tuple[int, preview.Source | None]], octets: dict[int, bytes]) -> dict[int, str]:
    """uid -> preview (pure CPU, run in a worker thread); a message expunged meanwhile has none."""
    out: dict[int, str] = {}
    for uid, (_, src) in sources.items():
        if src is None:
            out[uid] = ""
        elif uid in octets:
            out[uid] = preview.make(octets[uid], src)
    return out
