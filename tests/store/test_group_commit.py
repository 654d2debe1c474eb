"""Group commit (store/group_commit.py): deliveries that arrive together share a transaction, and each is
still stored exactly once, with the UIDs a client expects, whatever becomes of the others."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from relate.delivery import Delivery, Recipient, classify
from relate.errors import MailboxGone
from relate.services import accounts
from relate.store import imap_messages
from relate.store.group_commit import CommitGroup
from relate.store.messages import StoredMessage


def message(n: int, to: str = "bob@example.com") -> bytes:
    return (
        f"From: sender@remote.example\r\nTo: {to}\r\nSubject: grouped {n}\r\n"
        f"Message-ID: <grouped-{n}@remote.example>\r\n\r\nbody {n}\r\n"
    ).encode()


@pytest.fixture
async def users(pool: asyncpg.Pool) -> dict[str, int]:
    """bob and carol at example.com: address -> INBOX id."""
    await accounts.add_domain(pool, "example.com")
    out = {}
    for address in ("bob@example.com", "carol@example.com"):
        user = await accounts.add_user(pool, address)
        out[address] = await pool.fetchval("SELECT id FROM mailboxes WHERE user_id = $1 AND name = 'INBOX'", user["id"])
    return out


async def deliver(pool: asyncpg.Pool, group: CommitGroup, to: Recipient, raw: bytes) -> list[StoredMessage]:
    """One MX delivery (no sender) to ``to`` through ``group``; the copies stored."""
    delivery = Delivery(pool, "sender@remote.example", group=group)
    delivery.add(to)
    return (await delivery.commit(raw)).local


async def stored_ids(pool: asyncpg.Pool, mailbox_id: int) -> dict[str, int]:
    """Message-ID -> UID of every message in a mailbox."""
    rows = await pool.fetch("SELECT message_id, uid FROM messages WHERE mailbox_id = $1", mailbox_id)
    return {r["message_id"]: r["uid"] for r in rows}


async def test_deliveries_arriving_together_are_each_stored_once_in_uid_order(
    pool: asyncpg.Pool, users: dict[str, int]
) -> None:
    """40 deliveries at once to one INBOX: each is acknowledged with its own UID, stored once, UIDs 1..40 in
    the order they were submitted, and most went in transactions shared with others."""
    group = CommitGroup(pool)
    inbox = users["bob@example.com"]
    bob = await classify(pool, "bob@example.com")
    results = await asyncio.gather(*(deliver(pool, group, bob, message(n)) for n in range(40)))
    assert [len(r) for r in results] == [1] * 40
    assert [r[0].uid for r in results] == list(range(1, 41))
    assert await stored_ids(pool, inbox) == {f"<grouped-{n}@remote.example>": n + 1 for n in range(40)}
    async with pool.acquire() as conn:
        assert await imap_messages.uids(conn, inbox) == list(range(1, 41))
    status = await pool.fetchrow("SELECT uidnext, message_count FROM mailboxes WHERE id = $1", inbox)
    assert (status["uidnext"], status["message_count"]) == (41, 40)
    assert group.transactions < 40  # they shared transactions


async def test_one_failing_delivery_fails_alone_and_the_others_are_stored_once(
    pool: asyncpg.Pool, users: dict[str, int]
) -> None:
    """In a batch where one delivery's mailbox has gone, that one fails (MailboxGone) and stores nothing;
    every other delivery of the batch is acknowledged once and stored once, UIDs gap-free."""
    group = CommitGroup(pool)
    bob = await classify(pool, "bob@example.com")
    doomed = Delivery(pool, "sender@remote.example", group=group)
    doomed.add(await classify(pool, "carol@example.com"))
    await pool.execute("DELETE FROM mailboxes WHERE id = $1", users["carol@example.com"])
    jobs = [deliver(pool, group, bob, message(n)) for n in range(5)]
    jobs.insert(3, doomed.commit(message(99, "carol@example.com")))
    results = await asyncio.gather(*jobs, return_exceptions=True)
    assert group.split == 1  # they went in one batch, rolled back for that one and run one by one
    assert isinstance(results[3], MailboxGone)
    good = [r for n, r in enumerate(results) if n != 3]
    assert [r[0].uid if isinstance(r, list) and len(r) == 1 else r for r in good] == [1, 2, 3, 4, 5]
    assert await stored_ids(pool, users["bob@example.com"]) == {
        f"<grouped-{n}@remote.example>": n + 1 for n in range(5)
    }
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE message_id = '<grouped-99@remote.example>'") == 0


async def test_a_reader_never_sees_a_later_uid_before_an_earlier_one(pool: asyncpg.Pool, users: dict[str, int]) -> None:
    """While 100 deliveries go in shared transactions, another connection listing the INBOX's UIDs (as an
    IMAP session does) always sees exactly 1..n: a batch appears whole, never with a hole before it."""
    group = CommitGroup(pool, max_batch=8)
    inbox = users["bob@example.com"]
    seen: list[list[int]] = []
    done = asyncio.Event()

    async def reader() -> None:
        async with pool.acquire() as conn:
            while not done.is_set():
                seen.append(await imap_messages.uids(conn, inbox))
                await asyncio.sleep(0)

    bob = await classify(pool, "bob@example.com")

    async def sender(start: int) -> None:
        for n in range(start, start + 10):
            await deliver(pool, group, bob, message(n))

    watching = asyncio.create_task(reader())
    await asyncio.gather(*(sender(k * 10) for k in range(10)))
    done.set()
    await watching
    assert len(seen) > 1
    for uids in seen:
        assert uids == list(range(1, len(uids) + 1))
    assert await imap_messages.uids(pool, inbox) == list(range(1, 101))
    assert len(await stored_ids(pool, inbox)) == 100
