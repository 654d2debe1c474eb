"""Crash safety of the delivery loop: outcomes recorded per transaction, short renewed leases, exactly-once DSNs."""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from relate.config import DatabaseConfig
from relate.queue.worker import DeliveryWorker
from relate.store import db
from relate.store import queue as store
from relate.store.queue import Outcome

from .conftest import Harness, Sink
from .helpers import ALICE, queue_mail
from .test_daemons import wait_for


@pytest.fixture
async def other_pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A second pool on the test's database, as a second delivery daemon would have."""
    p = await db.create_pool(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=4))
    yield p
    await p.close()


async def bulk(h: Harness, n: int, delay: float) -> tuple[Sink, list[int]]:
    """``n`` messages to bulk.test, whose one MX answers each message's data after ``delay`` seconds."""
    sink = await h.net.mta("127.0.0.2")
    sink.data_delay = delay
    h.net.mx("bulk.test", (10, "mx.bulk.test", "127.0.0.2"))
    return sink, [await h.queue([f"user{i}@bulk.test"]) for i in range(n)]


async def statuses(h: Harness) -> dict[str, int]:
    rows = await h.pool.fetch("SELECT status, count(*) AS n FROM outbound_recipients GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


async def test_each_message_is_recorded_as_soon_as_its_reply_is_in(h: Harness) -> None:
    """Five messages over one slow connection: each recipient is 'sent' in the database before the next 250 comes."""
    sink, _ = await bulk(h, 5, 0.4)
    task = asyncio.get_running_loop().create_task(h.run())

    async def first_accepted() -> bool:
        return len(sink.transactions) >= 1

    await wait_for(first_accepted, 10)
    first = sink.transactions[0].rcpt_tos[0]

    async def first_recorded() -> bool:
        status = await h.pool.fetchval("SELECT status FROM outbound_recipients WHERE address = $1", first)
        return bool(status == "sent")

    await wait_for(first_recorded, 0.3)
    assert len(sink.transactions) == 1
    assert (await statuses(h)) == {"sent": 1, "sending": 4}
    assert await task is True
    assert (await statuses(h)) == {"sent": 5}


async def test_lease_is_renewed_while_a_slow_message_is_sent(h: Harness, other_pool: asyncpg.Pool) -> None:
    """A 3 s lease and a message whose data takes 5 s: another daemon never takes it over; it arrives once."""
    h.cfg.delivery.lease_seconds = 3
    h.cfg.delivery.command_timeout = 10
    sink, (eid,) = await bulk(h, 1, 5.0)
    first = DeliveryWorker(h.cfg, h.pool)  # the real clock: its lease really runs
    second = DeliveryWorker(h.cfg, other_pool)
    task = asyncio.get_running_loop().create_task(first.run_once())

    async def under_way() -> bool:
        return sink.mail_commands == 1

    await wait_for(under_way, 10)
    while not task.done():
        assert await second.run_once() is False  # nothing to claim: the lease is renewed every second
        await asyncio.sleep(0.25)
    assert await task is True
    assert sink.mail_commands == 1
    assert [t.rcpt_tos for t in sink.transactions] == [["user0@bulk.test"]]
    assert {(r["status"], r["attempts"]) for r in (await h.recipients(eid)).values()} == {("sent", 1)}


async def test_daemon_whose_rows_were_taken_over_stops_sending_them(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows another daemon took over mid-pass, noticed at the next renewal: not sent, not recorded by the old owner."""
    h.cfg.delivery.lease_seconds = 3
    sink, _ = await bulk(h, 10, 0.4)
    worker = DeliveryWorker(h.cfg, h.pool)
    task = asyncio.get_running_loop().create_task(worker.run_once())

    async def first_accepted() -> bool:
        return len(sink.transactions) >= 1

    await wait_for(first_accepted, 10)
    other = uuid.uuid4()  # what a daemon that claimed them after the lease passed would have written
    taken = await h.pool.fetch(
        "UPDATE outbound_recipients SET lease_owner = $1 WHERE status = 'sending' RETURNING address", other
    )
    await task
    assert len(sink.transactions) < 10
    rows = await h.pool.fetch(
        "SELECT status, lease_owner FROM outbound_recipients WHERE address = ANY($1::text[])",
        [r["address"] for r in taken],
    )
    assert {(r["status"], r["lease_owner"]) for r in rows} == {("sending", other)}  # left to their new owner
    assert "delivery-lease-lost" in caplog.text


async def test_stop_hands_unsent_work_back_at_once(h: Harness, other_pool: asyncpg.Pool) -> None:
    """stop() mid-backlog: what was not tried is 'pending' again (attempt not counted); another daemon sends it now."""
    sink, ids = await bulk(h, 10, 0.2)
    worker = DeliveryWorker(h.cfg, h.pool)
    await worker.start()

    async def two_accepted() -> bool:
        return len(sink.transactions) >= 2

    await wait_for(two_accepted, 10)
    start = time.monotonic()
    await worker.stop(grace=5)
    assert time.monotonic() - start < 1.0
    counts = await statuses(h)
    assert set(counts) == {"sent", "pending"}, counts
    assert counts["sent"] == len(sink.transactions)
    assert await h.pool.fetchval("SELECT max(attempts) FROM outbound_recipients WHERE status = 'pending'") == 0

    assert await DeliveryWorker(h.cfg, other_pool).run_once() is True  # no lease to wait for
    assert (await statuses(h)) == {"sent": 10}
    assert set(collections.Counter(t.rcpt_tos[0] for t in sink.transactions).values()) == {1}
    assert {await h.status(eid) for eid in ids} == {"sent"}


async def test_idle_daemon_retries_a_dead_daemons_claim_when_its_lease_ends(h: Harness) -> None:
    """A dead daemon's claim (3 s lease) is delivered by an idle daemon polling every 60 s as soon as the lease ends."""
    h.cfg.delivery.poll_seconds = 60
    sink, (eid,) = await bulk(h, 1, 0.0)
    async with h.pool.acquire() as conn, conn.transaction():
        assert len(await store.claim(conn, datetime.now(UTC), timedelta(seconds=3), 10)) == 1
    claimed = time.monotonic()
    worker = DeliveryWorker(h.cfg, h.pool)
    h.workers.append(worker)
    await worker.start()

    async def sent() -> bool:
        return await h.status(eid) == "sent"

    await wait_for(sent, 10)
    assert 2.9 <= time.monotonic() - claimed < 4.5
    assert len(sink.transactions) == 1


async def test_failure_recorded_before_a_crash_bounces_exactly_once(h: Harness, other_pool: asyncpg.Pool) -> None:
    """A failure a dead daemon committed without its DSN: the next passes (two daemons at once) make exactly one DSN."""
    eid = await h.queue(["bad@remote.test", "ok@remote.test"], subject="Lost bounce")
    owner = uuid.uuid4()
    now = h.clock()
    async with h.pool.acquire() as conn, conn.transaction():
        claimed = {c.address: c for c in await store.claim(conn, now, timedelta(seconds=60), 10, owner)}
        outcomes = [
            Outcome(
                claimed["bad@remote.test"].recipient_id, "failed", "5.1.1", "550 5.1.1 no such user", "mx1.remote.test"
            ),
            Outcome(claimed["ok@remote.test"].recipient_id, "sent", "2.0.0", "250 2.0.0 Ok", "mx1.remote.test"),
        ]
        await store.record(conn, outcomes, now, owner)
    assert await h.inbox(ALICE) == []  # the daemon died here

    first = DeliveryWorker(h.cfg, h.pool, clock=h.clock)
    second = DeliveryWorker(h.cfg, other_pool, clock=h.clock)
    assert sorted(await asyncio.gather(first.run_once(), second.run_once())) == [False, True]
    (dsn,) = await h.dsns(ALICE)
    block = dsn.recipient("bad@remote.test")
    assert (block["Action"], block["Status"]) == ("failed", "5.1.1")
    assert block["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert dsn.original["Subject"] == "Lost bounce"
    assert await h.status(eid) == "partial_failure"
    assert await first.run_once() is False
    assert len(await h.inbox(ALICE)) == 1


async def test_two_daemons_warn_of_a_delay_once(h: Harness, other_pool: asyncpg.Pool) -> None:
    """Two daemons passing at the same moment after delay_warning: the sender gets one "delayed" DSN, not two."""
    sink = await h.net.mta("127.0.0.2")
    h.net.mx("remote.test", (10, "mx1.remote.test", "127.0.0.2"))
    sink.rcpt_replies["later@remote.test"] = "451 4.2.0 mailbox busy"
    await queue_mail(h.pool, ["later@remote.test"])
    await h.run()
    h.clock.advance(4 * 3600 + 60)
    first = DeliveryWorker(h.cfg, h.pool, clock=h.clock)
    second = DeliveryWorker(h.cfg, other_pool, clock=h.clock)
    await asyncio.gather(first.run_once(), second.run_once())
    assert [d.recipient("later@remote.test")["Action"] for d in await h.dsns(ALICE)] == ["delayed"]
