"""Many MX sessions delivering to one mailbox at once (store/group_commit.py): every message answered 250
is stored exactly once, and the mailbox's UIDs stay gap-free and ascending as an IMAP session lists them."""

from __future__ import annotations

import asyncio

from relate.store import imap_messages

from .conftest import Smtp
from .helpers import Client, make_message


async def test_concurrent_sessions_to_one_mailbox_are_each_stored_once(smtp: Smtp) -> None:
    """20 sessions send 5 messages each to bob at once: 100 x 250, 100 messages in bob's INBOX (each
    once), UIDs 1..100; a reader listing the UIDs meanwhile always sees 1..n."""
    inbox = await smtp.pool.fetchval(
        """SELECT x.id FROM mailboxes x JOIN users u ON u.id = x.user_id
            WHERE u.address = 'bob@example.com' AND x.name = 'INBOX'"""
    )
    seen: list[list[int]] = []
    done = asyncio.Event()

    async def reader() -> None:
        async with smtp.pool.acquire() as conn:
            while not done.is_set():
                seen.append(await imap_messages.uids(conn, inbox))
                await asyncio.sleep(0.005)

    async def session(k: int) -> list[str]:
        client = await Client.connect(smtp.mx)
        await client.ehlo()
        heads = []
        for n in range(5):
            replies = await client.mail("carol@remote.example", ["bob@example.com"], make_message(subject=f"s{k}m{n}"))
            heads.append(replies[-1].head)
        await client.cmd("QUIT")
        await client.close()
        return heads

    watching = asyncio.create_task(reader())
    answers = await asyncio.gather(*(session(k) for k in range(20)))
    done.set()
    await watching
    assert [h for heads in answers for h in heads] == ["250 2.0.0"] * 100
    subjects = await smtp.pool.fetch("SELECT subject, uid FROM messages WHERE mailbox_id = $1 ORDER BY uid", inbox)
    assert sorted(r["subject"] for r in subjects) == sorted(f"s{k}m{n}" for k in range(20) for n in range(5))
    assert [r["uid"] for r in subjects] == list(range(1, 101))
    assert all(uids == list(range(1, len(uids) + 1)) for uids in seen)
    assert smtp.server.commit_group.transactions < 100  # sessions waiting on one another shared commits
