"""Raw messages outlive their last reference only until the sweep: every removal path, shared blobs, the
grace period, and a delivery of the same bytes racing the sweep."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from relate.config import Config
from relate.queue.worker import DeliveryWorker
from relate.services import accounts
from relate.store import imap_messages, mailboxes, messages, outbound
from relate.store import queue as queue_store

NOW = timedelta(0)


def message(n: int) -> bytes:
    return (
        f"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: sweep {n}\r\n"
        f"Message-ID: <sweep-{n}@example.com>\r\n\r\nbody {n}\r\n"
    ).encode()


@pytest.fixture
async def bob(pool: asyncpg.Pool) -> dict[str, Any]:
    """bob@example.com with his INBOX and his Archive folder."""
    await accounts.add_domain(pool, "example.com")
    user = await accounts.add_user(pool, "bob@example.com")
    inbox = await pool.fetchval("SELECT id FROM mailboxes WHERE user_id = $1 AND name = 'INBOX'", user["id"])
    archive = await pool.fetchval("SELECT id FROM mailboxes WHERE user_id = $1 AND name = 'Archive'", user["id"])
    return {"id": user["id"], "inbox": inbox, "archive": archive}


async def deliver(pool: asyncpg.Pool, raw: bytes, *mailbox_ids: int) -> list[messages.StoredMessage]:
    async with pool.acquire() as conn:
        return await messages.ingest(conn, raw, mailbox_ids)


async def sweep(pool: asyncpg.Pool, grace: timedelta = NOW) -> tuple[int, int]:
    async with pool.acquire() as conn:
        return await mailboxes.sweep_blobs(conn, grace)


async def blob_count(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM blobs")
    return count


async def dangling(pool: asyncpg.Pool) -> int:
    """Messages whose bytes are missing (what a FETCH or RETR could not send)."""
    count: int = await pool.fetchval(
        "SELECT count(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.hash = m.blob_hash)"
    )
    return count


async def _expunge(pool: asyncpg.Pool, bob: dict[str, Any], uid: int) -> None:
    async with pool.acquire() as conn:
        await imap_messages.store_flags(conn, bob["inbox"], [uid], "+", ["\\Deleted"])
        await imap_messages.expunge(conn, bob["inbox"], None)


async def _remove(pool: asyncpg.Pool, bob: dict[str, Any], uid: int) -> None:
    async with pool.acquire() as conn:
        await imap_messages.remove(conn, bob["inbox"], [uid])


async def _move(pool: asyncpg.Pool, bob: dict[str, Any], uid: int) -> None:
    """MOVE to Archive (the same row, so no blob is even noted), then EXPUNGE there: referenced, then not."""
    async with pool.acquire() as conn:
        ((_, new_uid),) = await imap_messages.copy(conn, bob["inbox"], [uid], bob["archive"], move=True)
    assert await sweep(pool) == (0, 0), "moved, not orphaned"
    async with pool.acquire() as conn:
        await imap_messages.remove(conn, bob["archive"], [new_uid])


async def _delete_folder(pool: asyncpg.Pool, bob: dict[str, Any], uid: int) -> None:
    async with pool.acquire() as conn:
        await mailboxes.delete(conn, bob["id"], "INBOX")


async def _remove_user(pool: asyncpg.Pool, bob: dict[str, Any], uid: int) -> None:
    await accounts.remove_user(pool, "bob@example.com")


Removal = Callable[[asyncpg.Pool, dict[str, Any], int], Awaitable[None]]


@pytest.mark.parametrize(
    "remove",
    [_expunge, _remove, _move, _delete_folder, _remove_user],
    ids=["imap-expunge", "pop3-quit-and-api-delete", "imap-move", "folder-deletion", "user-removal"],
)
async def test_every_removal_path_leaves_the_blob_to_the_sweep(
    pool: asyncpg.Pool, bob: dict[str, Any], remove: Removal
) -> None:
    """Removing a message keeps its bytes until the sweep, which then deletes exactly the unreferenced ones."""
    (gone,) = await deliver(pool, message(1), bob["inbox"])
    await deliver(pool, message(2), bob["archive"])  # another message that stays, in a folder that stays
    await remove(pool, bob, gone.uid)
    assert await blob_count(pool) == 2, "the removing transaction leaves the blob"
    everything = remove is _remove_user  # the other folder and its message go too
    assert await sweep(pool) == ((2, 2) if everything else (1, 1))
    assert await blob_count(pool) == (0 if everything else 1)
    assert await dangling(pool) == 0
    assert await sweep(pool) == (0, 0), "nothing is swept twice"


async def test_shared_blob_stays_while_any_copy_refers_to_it(pool: asyncpg.Pool, bob: dict[str, Any]) -> None:
    """One message delivered to two folders keeps its bytes until the second copy goes too."""
    first, second = await deliver(pool, message(1), bob["inbox"], bob["archive"])
    async with pool.acquire() as conn:
        await imap_messages.remove(conn, bob["inbox"], [first.uid])
    assert await sweep(pool) == (1, 0)
    assert await blob_count(pool) == 1
    assert await dangling(pool) == 0
    async with pool.acquire() as conn:
        await imap_messages.remove(conn, bob["archive"], [second.uid])
    assert await sweep(pool) == (1, 1)
    assert await blob_count(pool) == 0


async def test_queued_outbound_mail_keeps_its_blob(pool: asyncpg.Pool, bob: dict[str, Any]) -> None:
    """A blob referred to by queued outbound mail survives the sweep; deleting that mail lets it go."""
    raw = message(1)
    (stored,) = await deliver(pool, raw, bob["inbox"])
    async with pool.acquire() as conn, conn.transaction():
        digest = await messages.put_blob(conn, raw)
        email_id = await outbound.queue_message(
            conn,
            user_id=bob["id"],
            from_address="bob@example.com",
            mail_from="bob@example.com",
            subject="sweep 1",
            message_id=None,
            blob_hash=digest,
            recipients=["carol@example.net"],
        )
    async with pool.acquire() as conn:
        await imap_messages.remove(conn, bob["inbox"], [stored.uid])
    assert await sweep(pool) == (1, 0)
    assert await blob_count(pool) == 1
    async with pool.acquire() as conn:
        assert await queue_store.delete(conn, [email_id]) == [email_id]
    assert await sweep(pool) == (1, 1)
    assert await blob_count(pool) == 0


async def test_grace_period_keeps_recent_orphans(pool: asyncpg.Pool, bob: dict[str, Any]) -> None:
    """A blob unreferenced for less than the grace period is left for a later sweep."""
    (stored,) = await deliver(pool, message(1), bob["inbox"])
    async with pool.acquire() as conn:
        await imap_messages.remove(conn, bob["inbox"], [stored.uid])
    assert await sweep(pool, timedelta(minutes=5)) == (0, 0)
    assert await blob_count(pool) == 1
    await asyncio.sleep(0.3)
    assert await sweep(pool, timedelta(seconds=0.2)) == (1, 1)
    assert await blob_count(pool) == 0


async def test_delivery_of_the_same_bytes_during_the_sweep_keeps_them(pool: asyncpg.Pool, bob: dict[str, Any]) -> None:
    """A delivery that found the orphaned blob already stored, and refers to it after the sweep began, succeeds."""
    raw = message(1)
    (stored,) = await deliver(pool, raw, bob["inbox"])
    async with pool.acquire() as conn:
        await imap_messages.remove(conn, bob["inbox"], [stored.uid])
    async with pool.acquire() as delivery:
        tx = delivery.transaction()
        await tx.start()
        await messages.put_blob(delivery, raw)  # the bytes are there: nothing written, nothing locked
        sweeping = asyncio.create_task(sweep(pool))
        await asyncio.sleep(0.3)
        assert not sweeping.done(), "the sweep waits for the delivery in progress"
        (again,) = await messages.ingest(delivery, raw, [bob["inbox"]])
        await tx.commit()
    assert await sweeping == (1, 0)
    assert await dangling(pool) == 0
    async with pool.acquire() as conn:
        (row,) = await imap_messages.fetch(conn, bob["inbox"], [again.uid], with_raw=True, columns=frozenset())
    assert bytes(row["raw"]) == raw


async def test_sweep_does_not_hold_up_deliveries_for_long(pool: asyncpg.Pool, bob: dict[str, Any]) -> None:
    """A sweep that cannot get the blobs table within a second gives up, and the delivery holding it goes on."""
    (stored,) = await deliver(pool, message(1), bob["inbox"])
    async with pool.acquire() as conn:
        await imap_messages.remove(conn, bob["inbox"], [stored.uid])
    async with pool.acquire() as delivery, delivery.transaction():
        await messages.ingest(delivery, message(2), [bob["inbox"]])
        assert await asyncio.wait_for(sweep(pool), 5) == (0, 0)
    assert await sweep(pool) == (1, 1)
    assert await blob_count(pool) == 1


class _AlwaysBusy(DeliveryWorker):
    """A delivery daemon whose queue always has work (a saturated outbound queue)."""

    async def run_once(self) -> bool:
        await asyncio.sleep(0.01)
        return True


@pytest.mark.parametrize("worker_class", [DeliveryWorker, _AlwaysBusy], ids=["idle-queue", "never-idle-queue"])
async def test_delivery_daemon_sweeps_by_itself(
    pool: asyncpg.Pool, bob: dict[str, Any], worker_class: type[DeliveryWorker]
) -> None:
    """The delivery daemon's loop deletes a removed message's bytes by itself, also when its queue is never idle."""
    (stored,) = await deliver(pool, message(1), bob["inbox"])
    await deliver(pool, message(2), bob["inbox"])
    async with pool.acquire() as conn:
        await imap_messages.remove(conn, bob["inbox"], [stored.uid])
    worker = worker_class(Config(hostname="mail.example.com"), pool, blob_grace=NOW)
    await worker.start()
    try:
        for _ in range(100):
            if await blob_count(pool) == 1:
                break
            await asyncio.sleep(0.05)
    finally:
        await worker.stop()
    assert await blob_count(pool) == 1
    assert await dangling(pool) == 0
