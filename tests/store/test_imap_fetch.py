"""What IMAP FETCH reads from the store (store/imap_messages.py fetch): a bounded part of a mailbox at a time."""

from __future__ import annotations

import asyncpg

from relate.services import accounts
from relate.store import imap_messages, messages
from tests.support import make_message


async def test_fetch_with_raw_stops_at_max_bytes_and_the_rest_follows(pool: asyncpg.Pool) -> None:
    """With max_bytes, the rows are the first messages whose sizes fit (the first whatever its size); asking
    again for the UIDs after the last one returned gets the rest, every message exactly once, in UID order."""
    await accounts.add_domain(pool, "example.com")
    user = await accounts.add_user(pool, "bob@example.com")
    inbox = await pool.fetchval("SELECT id FROM mailboxes WHERE user_id = $1 AND name = 'INBOX'", user["id"])
    raws = [make_message(subject=f"m{i}", body="x" * (1000 * (i + 1))) for i in range(5)]
    async with pool.acquire() as conn:
        uids = [(await messages.ingest(conn, raw, [inbox]))[0].uid for raw in raws]
        budget = len(raws[0]) + len(raws[1])
        batches = []
        pending = uids
        while pending:
            rows = await imap_messages.fetch(conn, inbox, pending, with_raw=True, max_bytes=budget)
            batches.append([r["uid"] for r in rows])
            assert [bytes(r["raw"]) for r in rows] == [raws[uids.index(r["uid"])] for r in rows]
            pending = [u for u in pending if u > rows[-1]["uid"]]
    assert batches == [uids[:2], [uids[2]], [uids[3]], [uids[4]]]  # the later ones exceed the budget alone
