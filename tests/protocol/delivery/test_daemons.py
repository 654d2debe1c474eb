"""The delivery loop as a daemon: several on one queue, one dying mid-delivery, waking on NOTIFY."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from relate.config import DatabaseConfig
from relate.queue.worker import DeliveryWorker
from relate.store import db
from relate.store import queue as store

from .conftest import Harness
from .helpers import queue_mail


@pytest.fixture
async def other_pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A second pool on the test's database, as a second delivery daemon would have."""
    p = await db.create_pool(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=4))
    yield p
    await p.close()


async def wait_for(predicate, limit: float = 20.0) -> float:  # type: ignore[no-untyped-def]
    """Poll the async ``predicate`` until it holds; returns the seconds it took."""
    start = time.monotonic()
    while not await predicate():
        assert time.monotonic() - start < limit, "timed out"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_two_daemons_deliver_every_message_exactly_once(h: Harness, other_pool: asyncpg.Pool) -> None:
    """Two delivery daemons on one queue of 200 messages: each message reaches the MTA once, every recipient is sent."""
    sink = await h.net.mta("127.0.0.2")
    h.net.mx("bulk.test", (10, "mx.bulk.test", "127.0.0.2"))
    h.cfg.delivery.batch_size = 10  # small batches, so both daemons get work
    ids = await asyncio.gather(*(queue_mail(h.pool, [f"user{i}@bulk.test"]) for i in range(200)))
    assert len(set(ids)) == 200

    first = DeliveryWorker(dataclasses.replace(h.cfg, hostname="d1.example.com"), h.pool)
    second = DeliveryWorker(dataclasses.replace(h.cfg, hostname="d2.example.com"), other_pool)
    h.workers += [first, second]
    await first.start()
    await second.start()

    async def all_sent() -> bool:
        n = await h.pool.fetchval("SELECT count(*) FROM outbound_recipients WHERE status = 'sent'")
        return bool(n == 200)

    await wait_for(all_sent, 30)
    await first.stop(grace=5)
    await second.stop(grace=5)
    h.workers.clear()

    seen = collections.Counter(t.message_id for t in sink.transactions)
    assert len(seen) == 200
    assert set(seen.values()) == {1}
    assert {t.helo for t in sink.transactions} == {"d1.example.com", "d2.example.com"}  # both did work
    statuses = await h.pool.fetch("SELECT status, count(*) AS n FROM outbound_emails GROUP BY status")
    assert {r["status"]: r["n"] for r in statuses} == {"sent": 200}
    attempts = await h.pool.fetch("SELECT DISTINCT attempts FROM outbound_recipients")
    assert [r["attempts"] for r in attempts] == [1]


async def test_daemon_killed_mid_delivery_is_taken_over_after_the_lease(h: Harness, other_pool: asyncpg.Pool) -> None:
    """Recipients a dead daemon left in 'sending' go out through another once lease_seconds have passed, not before."""
    sink = await h.net.mta("127.0.0.2")
    h.net.mx("remote.test", (10, "mx1.remote.test", "127.0.0.2"))
    eid = await h.queue(["a@remote.test", "b@remote.test"])
    lease = h.cfg.delivery.lease_seconds

    # The first daemon claims, then dies before it records anything.
    async with h.pool.acquire() as conn, conn.transaction():
        claimed = await store.claim(conn, h.clock(), timedelta(seconds=lease), 100)
    assert len(claimed) == 2
    assert {r["status"] for r in (await h.recipients(eid)).values()} == {"sending"}
    assert await h.status(eid) == "sending"

    survivor = DeliveryWorker(h.cfg, other_pool, clock=h.clock)
    h.clock.advance(lease - 5)
    assert await survivor.run_once() is False
    assert sink.connections == 0
    assert {r["status"] for r in (await h.recipients(eid)).values()} == {"sending"}

    h.clock.advance(10)
    assert await survivor.run_once() is True
    rcpts = await h.recipients(eid)
    assert {(r["status"], r["attempts"]) for r in rcpts.values()} == {("sent", 2)}
    assert await h.status(eid) == "sent"
    assert [sorted(t.rcpt_tos) for t in sink.transactions] == [["a@remote.test", "b@remote.test"]]


async def test_notify_wakes_the_daemon_at_once(h: Harness) -> None:
    """With a 60 s poll interval, a newly queued message is delivered within a second (NOTIFY relate_queue)."""
    sink = await h.net.mta("127.0.0.2")
    h.net.mx("remote.test", (10, "mx1.remote.test", "127.0.0.2"))
    h.cfg.delivery.poll_seconds = 60
    worker = DeliveryWorker(h.cfg, h.pool)  # the real clock
    h.workers.append(worker)
    await worker.start()
    await asyncio.sleep(0.3)  # its first pass found nothing; it is asleep now

    for n in (1, 2):
        start = time.monotonic()
        await queue_mail(h.pool, [f"friend{n}@remote.test"])

        async def delivered(n: int = n) -> bool:
            return len(sink.transactions) == n

        await wait_for(delivered, 5)
        assert time.monotonic() - start < 1.0
    await worker.stop(grace=5)
    h.workers.clear()


async def test_stop_lets_the_daemon_finish(h: Harness) -> None:
    """stop() on an idle daemon returns promptly and leaves nothing claimed."""
    await h.net.mta("127.0.0.2")
    h.net.mx("remote.test", (10, "mx1.remote.test", "127.0.0.2"))
    worker = DeliveryWorker(h.cfg, h.pool)
    await worker.start()
    eid = await queue_mail(h.pool, ["friend@remote.test"])

    async def sent() -> bool:
        return await h.status(eid) == "sent"

    await wait_for(sent, 5)
    start = time.monotonic()
    await worker.stop(grace=5)
    assert time.monotonic() - start < 1.0
    assert await h.pool.fetchval("SELECT count(*) FROM outbound_recipients WHERE status = 'sending'") == 0
