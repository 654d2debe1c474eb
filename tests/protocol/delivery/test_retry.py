"""Time in the queue: the retry schedule, the 5-day expiry and the delay warning, on an injected clock."""

from __future__ import annotations

from datetime import timedelta

from .conftest import Harness
from .helpers import ALICE

MX1 = "mx1.remote.test"


async def remote(h: Harness) -> None:
    await h.net.mta("127.0.0.2")
    h.net.mx("remote.test", (10, MX1, "127.0.0.2"))


async def test_deferred_recipient_retried_with_backoff_then_sent(h: Harness) -> None:
    """A 451'd recipient is retried after ~60s, ~120s, ~240s, ... capped at 1h (retry_max), never early; then sent."""
    assert (h.cfg.delivery.retry_first, h.cfg.delivery.retry_max) == (60, 3600)
    await remote(h)
    sink = h.net.sinks["127.0.0.2"]
    sink.rcpt_replies["later@remote.test"] = "451 4.2.0 mailbox busy"
    eid = await h.queue(["ok@remote.test", "later@remote.test"])

    tried_at = h.clock()
    assert await h.run() is True
    assert (await h.recipients(eid))["ok@remote.test"]["status"] == "sent"

    # Less than retry_first later, nothing is due: the pass finds no work and sends nothing.
    h.clock.advance(30)
    assert await h.run() is False
    assert sink.rcpts.count("later@remote.test") == 1

    schedule = [60, 120, 240, 480, 960, 1920, 3600, 3600]
    for attempt, expected in enumerate(schedule, start=1):
        later = (await h.recipients(eid))["later@remote.test"]
        assert (later["status"], later["attempts"]) == ("deferred", attempt)
        due = later["next_attempt_at"]
        delay = (due - tried_at).total_seconds()
        assert expected * 0.9 - 0.01 <= delay <= expected * 1.1 + 0.01, (attempt, delay)
        msg = await h.email(eid)
        assert msg["status"] == "queued"
        assert msg["next_retry_at"] == due

        # A second before it is due: nothing; when due: one more try.
        h.clock.now = due - timedelta(seconds=1)
        assert await h.run() is False
        assert sink.rcpts.count("later@remote.test") == attempt
        h.clock.now = tried_at = due
        if attempt == len(schedule):
            sink.rcpt_replies.pop("later@remote.test")  # the mailbox has room again
        assert await h.run() is True
        assert sink.rcpts.count("later@remote.test") == attempt + 1

    later = (await h.recipients(eid))["later@remote.test"]
    assert (later["status"], later["attempts"], later["next_attempt_at"]) == ("sent", len(schedule) + 1, None)
    assert await h.status(eid) == "sent"
    # Only the deferred recipient was retried: the other one got the message exactly once.
    assert len(sink.received_by("ok@remote.test")) == 1
    assert len(sink.received_by("later@remote.test")) == 1
    assert sink.rcpts.count("ok@remote.test") == 1
    assert await h.inbox(ALICE) == []


async def test_message_expires_after_max_age_with_one_dsn(h: Harness) -> None:
    """Still deferred past max_age (5 days): the recipient fails with 4.4.7 and the sender gets exactly one DSN."""
    await remote(h)
    sink = h.net.sinks["127.0.0.2"]
    sink.rcpt_replies["later@remote.test"] = "451 4.2.0 mailbox busy"
    eid = await h.queue(["ok@remote.test", "later@remote.test"], subject="Party on Friday")
    await h.run()

    h.clock.advance(5 * 24 * 3600 + 1)
    tries = sink.rcpts.count("later@remote.test")
    await h.run()
    later = (await h.recipients(eid))["later@remote.test"]
    assert (later["status"], later["status_code"]) == ("failed", "4.4.7")
    assert sink.rcpts.count("later@remote.test") == tries  # not tried again
    assert await h.status(eid) == "partial_failure"

    dsns = await h.dsns(ALICE)
    assert len(dsns) == 1
    dsn = dsns[0]
    assert dsn.message["Subject"] == "Undelivered mail returned to sender"
    assert [r["Final-Recipient"] for r in dsn.recipients] == ["rfc822; later@remote.test"]
    block = dsn.recipient("later@remote.test")
    assert (block["Action"], block["Status"]) == ("failed", "4.4.7")
    assert dsn.original["Subject"] == "Party on Friday"
    assert dsn.original["From"] == f"Alice <{ALICE}>"

    h.clock.advance(24 * 3600)
    await h.run()
    assert len(await h.inbox(ALICE)) == 1  # never a second one


async def test_expiry_after_a_delay_warning_adds_one_failed_dsn(h: Harness) -> None:
    """Warned at 4h, retried for days, expired at 5 days: one "delayed" DSN, then one "failed" DSN with 4.4.7."""
    await remote(h)
    sink = h.net.sinks["127.0.0.2"]
    sink.rcpt_replies["later@remote.test"] = "451 4.2.0 mailbox busy"
    eid = await h.queue(["later@remote.test"])
    await h.run()
    for _ in range(39):  # a retry every three hours, for 117 hours
        h.clock.advance(3 * 3600)
        await h.run()
    later = (await h.recipients(eid))["later@remote.test"]
    assert later["status"] == "deferred"
    assert later["attempts"] == 40
    assert [d.recipient("later@remote.test")["Action"] for d in await h.dsns(ALICE)] == ["delayed"]

    h.clock.advance(4 * 3600)
    await h.run()
    assert (await h.recipients(eid))["later@remote.test"]["status_code"] == "4.4.7"
    assert await h.status(eid) == "failed"
    actions = [
        (d.recipient("later@remote.test")["Action"], d.recipient("later@remote.test")["Status"])
        for d in await h.dsns(ALICE)
    ]
    assert actions == [("delayed", "4.2.0"), ("failed", "4.4.7")]


async def test_expired_null_sender_message_fails_without_dsn(h: Harness) -> None:
    """A null-sender message that expires fails with 4.4.7 but nobody is sent a DSN (or a delay warning)."""
    await remote(h)
    h.net.sinks["127.0.0.2"].rcpt_replies["later@remote.test"] = "451 4.2.0 mailbox busy"
    eid = await h.queue(["later@remote.test"], mail_from="")
    await h.run()
    h.clock.advance(5 * 3600)  # past the delay warning
    await h.run()
    h.clock.advance(5 * 24 * 3600)
    await h.run()
    later = (await h.recipients(eid))["later@remote.test"]
    assert (later["status"], later["status_code"]) == ("failed", "4.4.7")
    assert await h.status(eid) == "failed"
    assert await h.inbox(ALICE) == []


async def test_delay_warning_sent_once_after_four_hours(h: Harness) -> None:
    """Still deferred after delay_warning (4h): the sender gets one "delayed" DSN for the waiting recipient, once."""
    await remote(h)
    sink = h.net.sinks["127.0.0.2"]
    sink.rcpt_replies["later@remote.test"] = "451 4.2.0 mailbox busy"
    eid = await h.queue(["ok@remote.test", "later@remote.test"], subject="Minutes")
    await h.run()

    h.clock.advance(4 * 3600 - 120)
    await h.run()
    assert await h.inbox(ALICE) == []  # not yet

    h.clock.advance(180)
    await h.run()
    dsns = await h.dsns(ALICE)
    assert len(dsns) == 1
    dsn = dsns[0]
    assert dsn.message["Subject"] == "Delivery delayed"
    assert [r["Final-Recipient"] for r in dsn.recipients] == ["rfc822; later@remote.test"]  # not the sent one
    block = dsn.recipient("later@remote.test")
    assert block["Action"] == "delayed"
    assert block["Status"] == "4.2.0"
    assert block["Diagnostic-Code"] == "smtp; 451 4.2.0 mailbox busy"
    assert block["Remote-MTA"] == f"dns; {MX1}"
    assert dsn.original["Subject"] == "Minutes"
    assert "will be retried" in dsn.human
    assert await h.status(eid) == "queued"

    for _ in range(3):
        h.clock.advance(4 * 3600)
        await h.run()
    assert len(await h.inbox(ALICE)) == 1  # only once

    sink.rcpt_replies.pop("later@remote.test")
    h.clock.advance(3600)
    await h.run()
    assert await h.status(eid) == "sent"
    assert len(await h.inbox(ALICE)) == 1


async def test_delay_warning_disabled_with_zero(h: Harness) -> None:
    """delay_warning = 0: a message waiting for hours gets no warning."""
    h.cfg.delivery.delay_warning = 0
    await remote(h)
    h.net.sinks["127.0.0.2"].rcpt_replies["later@remote.test"] = "451 4.2.0 mailbox busy"
    await h.queue(["later@remote.test"])
    await h.run()
    h.clock.advance(10 * 3600)
    await h.run()
    assert await h.inbox(ALICE) == []
