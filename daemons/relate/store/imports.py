"""SQL for moving mail in (relatectl import): what a mailbox holds already, and how far a source got.

A message is the same message when its bytes are: the blobs are keyed by
SHA-256 already (store/messages.py), so "is it here" is one indexed look-up
of the hash among the target mailbox's messages (``messages_blob_idx``).
The IMAP import also records, per source folder, the UIDVALIDITY and the
highest UID stored (migration 0031), in the transaction that stores them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from relate.store.db import Queryable


@dataclass(frozen=True)
class Progress:
    """How far one source folder has been imported."""

    uidvalidity: int
    last_uid: int


async def present(conn: Queryable, mailbox_id: int, digests: Sequence[bytes]) -> set[bytes]:
    """Which of ``digests`` (SHA-256 of raw messages) a message in ``mailbox_id`` has already."""
    if not digests:
        return set()
    rows = await conn.fetch(
        "SELECT DISTINCT blob_hash FROM messages WHERE blob_hash = ANY($2::bytea[]) AND mailbox_id = $1",
        mailbox_id,
        list(digests),
    )
    return {bytes(r["blob_hash"]) for r in rows}


async def progress(conn: Queryable, user_id: int, source: str, folder: str) -> Progress | None:
    row = await conn.fetchrow(
        "SELECT uidvalidity, last_uid FROM import_progress WHERE user_id = $1 AND source = $2 AND folder = $3",
        user_id,
        source,
        folder,
    )
    return Progress(row["uidvalidity"], row["last_uid"]) if row else None


async def record(conn: Queryable, user_id: int, source: str, folder: str, uidvalidity: int, last_uid: int) -> None:
    """Remember that ``folder`` of ``source`` is stored up to ``last_uid`` under ``uidvalidity``."""
    await conn.execute(
        """INSERT INTO import_progress (user_id, source, folder, uidvalidity, last_uid) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (user_id, source, folder)
           DO UPDATE SET uidvalidity = $4, last_uid = $5, updated_at = now()""",
        user_id,
        source,
        folder,
        uidvalidity,
        last_uid,
    )
