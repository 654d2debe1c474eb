"""Threads at ingest under concurrency: storing never waits for another transaction of the same thread, and
the threads such a race starts apart are merged by the next message that names them."""

from __future__ import annotations

import asyncio

import asyncpg

from relate.services import accounts
from relate.store import accounts as store_accounts
from relate.store import messages
from tests.support import make_message


async def test_a_reply_into_inbox_does_not_wait_for_an_open_one_into_sent(pool: asyncpg.Pool) -> None:
    """While one transaction holds a new reply to <p@x> in Sent, another stores a reply to <p@x> (same subject)
    into INBOX at once; the two start apart, and the parent, arriving later, joins them into one thread."""
    await accounts.add_domain(pool, "example.com")
    user = await accounts.add_user(pool, "bob@example.com")
    boxes = {
        r["name"]: r["id"] for r in await pool.fetch("SELECT id, name FROM mailboxes WHERE user_id = $1", user["id"])
    }
    async with pool.acquire() as holder, holder.transaction():
        (sent,) = await messages.ingest(
            holder, make_message(subject="Re: Plan", headers=("References: <p@x>",)), [boxes["Sent"]]
        )
        async with pool.acquire() as conn:
            (inbox,) = await asyncio.wait_for(
                messages.ingest(
                    conn, make_message(subject="Re: Plan", headers=("References: <p@x>",)), [boxes["INBOX"]]
                ),
                5,
            )
    async with pool.acquire() as conn:
        (parent,) = await messages.ingest(conn, make_message(subject="Plan", message_id="<p@x>"), [boxes["INBOX"]])
    found = dict(await pool.fetch("SELECT id, thread_id FROM messages"))
    assert found[sent.id] == found[inbox.id] == found[parent.id]
    assert await pool.fetchval("SELECT count(*) FROM threads") == 1


async def test_a_removed_user_takes_their_threads_along(pool: asyncpg.Pool) -> None:
    """Removing a user removes their threads and thread keys; another user's stay."""
    await accounts.add_domain(pool, "example.com")
    for name in ("bob", "carol"):
        await accounts.add_user(pool, f"{name}@example.com")
    inboxes = dict(
        await pool.fetch(
            "SELECT u.address, b.id FROM mailboxes b JOIN users u ON u.id = b.user_id WHERE b.name = 'INBOX'"
        )
    )
    async with pool.acquire() as conn:
        for box in inboxes.values():
            await messages.ingest(conn, make_message(subject="Hello", headers=("References: <h@x>",)), [box])
        assert await conn.fetchval("SELECT count(*) FROM threads") == 2
        async with conn.transaction():
            await store_accounts.remove_user(conn, "bob@example.com")
        owners = {r[0] for r in await conn.fetch("SELECT user_id FROM threads UNION SELECT user_id FROM thread_keys")}
        assert owners == {await conn.fetchval("SELECT id FROM users WHERE address = 'carol@example.com'")}
