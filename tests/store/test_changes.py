"""The change feed: typed payloads, one LISTEN connection that comes back by itself, and resync after a gap."""

from __future__ import annotations

import asyncio
import json

import asyncpg

from relate.config import DatabaseConfig
from relate.store import mailboxes
from relate.store.changes import (
    APPLICATION_NAME,
    DELIVERY_CHANNEL,
    MAIL_CHANNEL,
    ChangeFeed,
    DeliveryChange,
    MailChange,
    parse_delivery,
    parse_mail,
)


def test_payloads_parse_into_typed_changes() -> None:
    """Mail and delivery payloads become typed changes (moves and bulk actions too); anything else is ignored."""
    assert parse_mail('{"event": "expunge", "user": 1, "mailbox": 2, "modseq": 7, "ids": [3, "x", 4]}') == MailChange(
        "expunge", 1, 2, modseq=7, ids=(3, 4)
    )
    moved = '{"event": "new", "user": 1, "mailbox": 5, "modseq": 8, "from": 2, "bulk": "move"}'
    assert parse_mail(moved) == MailChange("new", 1, 5, modseq=8, source=2, bulk="move")
    summary = (
        '{"event": "bulk", "user": 1, "mailbox": 0, "modseq": 0, "action": "flag", "count": 3, "mailboxes": [2, 5]}'
    )
    assert parse_mail(summary) == MailChange("bulk", 1, 0, modseq=0, bulk="flag", count=3, mailboxes=(2, 5))
    assert parse_delivery('{"user": 1, "id": 9, "status": "sent"}') == DeliveryChange(1, 9, "sent")
    for junk in ("", "null", "[]", '{"user": "1", "mailbox": 2, "event": "new"}', '{"user": true, "id": 1}', "{"):
        assert parse_mail(junk) is None
        assert parse_delivery(junk) is None


async def _feed(dsn: str) -> tuple[ChangeFeed, list[MailChange], list[str]]:
    feed = ChangeFeed(DatabaseConfig(dsn=dsn))
    heard: list[MailChange] = []
    resyncs: list[str] = []
    feed.subscribe(MAIL_CHANNEL, heard.append)
    feed.on_resync(lambda: resyncs.append("resync"))
    await feed.start()
    return feed, heard, resyncs


async def _wait(predicate, seconds: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_changes_committed_are_heard_and_rolled_back_ones_are_not(dsn: str, pool: asyncpg.Pool) -> None:
    """A NOTIFY from a committed transaction reaches subscribers, typed; one from a rolled-back one never does."""
    feed, heard, _ = await _feed(dsn)
    try:
        assert feed.listening
        assert feed.problem() is None
        async with pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            await mailboxes.notify(conn, "flags", 5, 1, 10)
            await transaction.rollback()
            await mailboxes.notify(conn, "flags", 6, 1, 11)
        await _wait(lambda: heard)
        await asyncio.sleep(0.1)
        assert heard == [MailChange("flags", 1, 6, modseq=11)]
    finally:
        await feed.stop()


async def test_a_lost_connection_comes_back_with_a_resync(dsn: str, pool: asyncpg.Pool) -> None:
    """The feed's backend killed: it reconnects by itself, subscribers get one resync, and changes flow again."""
    feed, heard, resyncs = await _feed(dsn)
    try:
        killed = await pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            APPLICATION_NAME,
        )
        assert killed == 1
        await _wait(lambda: resyncs)
        assert feed.listening
        await mailboxes.notify(pool, "new", 3, 1, 2)
        await _wait(lambda: heard)
        assert heard[0].mailbox == 3
        assert resyncs == ["resync"]
    finally:
        await feed.stop()


async def test_an_unreachable_database_is_reported_as_a_problem(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With no database to listen on, the feed says what is wrong (what the heartbeat shows) and keeps trying."""
    feed = ChangeFeed(DatabaseConfig(dsn=f"postgresql://nobody@/relate?host={tmp_path}&port=1", connect_timeout=1))
    feed.subscribe(DELIVERY_CHANNEL, lambda change: None)
    await feed.start(wait=0.3)
    try:
        assert not feed.listening
        problem = feed.problem()
        assert problem is not None
        assert problem.startswith("change feed down")
    finally:
        await feed.stop()


async def test_a_failing_subscriber_does_not_silence_the_others(dsn: str, pool: asyncpg.Pool) -> None:
    """One callback raising is logged; the next subscriber still hears the change."""
    feed = ChangeFeed(DatabaseConfig(dsn=dsn))
    heard: list[int] = []

    def broken(change: MailChange) -> None:
        raise ValueError("bug")

    feed.subscribe(MAIL_CHANNEL, broken)
    feed.subscribe(MAIL_CHANNEL, lambda change: heard.append(change.mailbox))
    await feed.start()
    try:
        await pool.execute("SELECT pg_notify('relate_mail', $1)", json.dumps({"event": "new", "user": 1, "mailbox": 4}))
        await _wait(lambda: heard)
        assert heard == [4]
    finally:
        await feed.stop()
