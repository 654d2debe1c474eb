"""imap_messages.claim_recent: each message is taken as recent by exactly one claimer, however many claim at once."""

from __future__ import annotations

import asyncio

import asyncpg

from relate.services import accounts
from relate.store import imap_messages, messages
from tests.support import make_message


async def test_concurrent_claims_are_disjoint_and_cover_everything(pool: asyncpg.Pool) -> None:
    """Claims on many connections while mail arrives: the ranges taken never overlap and together hold every UID."""
    await accounts.add_domain(pool, "example.com")
    user = await accounts.add_user(pool, "bob@example.com")
    inbox = await pool.fetchval("SELECT id FROM mailboxes WHERE user_id = $1 AND name = 'INBOX'", user["id"])
    taken: list[tuple[int, int]] = []

    async def claimer() -> None:
        for _ in range(10):
            async with pool.acquire() as conn:
                span = await imap_messages.claim_recent(conn, inbox, None)
            assert span is not None
            taken.append(span)
            await asyncio.sleep(0)

    async def deliver() -> None:
        for _ in range(12):
            async with pool.acquire() as conn:
                await messages.ingest(conn, make_message(), [inbox])

    await asyncio.gather(deliver(), *(claimer() for _ in range(3)))
    async with pool.acquire() as conn:
        last = await imap_messages.claim_recent(conn, inbox, None)
        assert last is not None
        taken.append(last)
        assert await imap_messages.claim_recent(conn, inbox, 5) == (12, 12)  # nothing left; upto never goes back
        assert await imap_messages.claim_recent(conn, inbox + 1000, None) is None  # no such mailbox
    uids = sorted(uid for lo, hi in taken for uid in range(lo + 1, hi + 1))
    assert uids == list(range(1, 13))
