"""Quota in the delivery daemon's local deliveries: deferred while the mailbox is full, bounced after the days."""

from __future__ import annotations

from datetime import timedelta

from relate.services import accounts
from relate.store import imap_messages

from .conftest import Harness
from .helpers import ALICE, BOB


async def limit(h: Harness, user: str, *, storage: int | None = None, messages: int | None = None) -> None:
    changes = {k: v for k, v in (("storage", storage), ("messages", messages)) if v is not None}
    await accounts.set_quota(h.pool, user, changes)


async def test_full_mailbox_defers_and_delivers_once_there_is_room(h: Harness) -> None:
    """A queued copy for a full mailbox is deferred 4.2.2; after the user expunges, the next try delivers it."""
    await limit(h, BOB, messages=1)
    first = await h.queue([BOB], subject="first")
    await h.run()
    assert (await h.recipients(first))[BOB]["status"] == "sent"
    eid = await h.queue([BOB], subject="second")
    await h.run()
    r = (await h.recipients(eid))[BOB]
    assert (r["status"], r["status_code"]) == ("deferred", "4.2.2")
    assert len(await h.inbox(BOB)) == 1
    assert await h.dsns(ALICE) == []
    inbox = await h.pool.fetchval(
        "SELECT b.id FROM mailboxes b JOIN users u ON u.id = b.user_id WHERE u.address = $1 AND b.name = 'INBOX'", BOB
    )
    async with h.pool.acquire() as conn:
        await imap_messages.remove(conn, inbox, [1])
    h.clock.advance(3600)
    await h.run()
    assert (await h.recipients(eid))[BOB]["status"] == "sent"
    (raw,) = await h.inbox(BOB)
    assert b"Subject: second" in raw


async def test_full_for_the_configured_days_bounces_5_2_2_even_to_a_full_sender(h: Harness) -> None:
    """Full for quota.bounce_after_days: the copy fails 5.2.2 and the sender gets a DSN, though her mailbox is full."""
    await limit(h, BOB, messages=1)
    await limit(h, ALICE, messages=1)
    await h.queue([BOB], subject="fills bob")
    await h.run()
    eid = await h.queue([BOB], subject="too many")
    await h.run()
    assert (await h.recipients(eid))[BOB]["status"] == "deferred"
    h.clock.advance(h.cfg.quota.bounce_after_days * 86400)
    await h.run()
    r = (await h.recipients(eid))[BOB]
    assert (r["status"], r["status_code"]) == ("failed", "5.2.2")
    # The delay warning filled her mailbox (a limit of one message); the failure DSN lands all the same.
    delayed, dsn = await h.dsns(ALICE)
    assert delayed.recipient(BOB)["Action"] == "delayed"
    block = dsn.recipient(BOB)
    assert (block["Action"], block["Status"]) == ("failed", "5.2.2")
    assert "mailbox full" in block["X-Relate-Diagnostic"]


async def test_message_larger_than_the_limit_bounces_at_once(h: Harness) -> None:
    """A message larger than the recipient's storage limit itself fails 5.2.2 at the first try."""
    await limit(h, BOB, storage=2000)
    eid = await h.queue([BOB], body=("y" * 78 + "\r\n") * 40)
    await h.run()
    r = (await h.recipients(eid))[BOB]
    assert (r["status"], r["status_code"]) == ("failed", "5.2.2")
    assert await h.inbox(BOB) == []


async def test_message_that_would_cross_waits_without_starting_the_clock(h: Harness) -> None:
    """A message too big for the room left is deferred, but the mailbox is not full: no bounce clock starts."""
    await limit(h, BOB, storage=6000)
    await h.queue([BOB], body=("a" * 78 + "\r\n") * 40)
    await h.run()
    eid = await h.queue([BOB], body=("b" * 78 + "\r\n") * 40)
    await h.run()
    assert (await h.recipients(eid))[BOB]["status"] == "deferred"
    assert await h.pool.fetchval("SELECT quota_full_since FROM users WHERE address = $1", BOB) is None
    h.clock.advance(timedelta(days=4).total_seconds())  # past quota.bounce_after_days (3), within max_age (5)
    await h.run()
    r = (await h.recipients(eid))[BOB]
    assert (r["status"], r["status_code"]) == ("deferred", "4.2.2")
