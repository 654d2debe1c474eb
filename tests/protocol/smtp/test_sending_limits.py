"""Per-user sending limits on submission: messages and first-time recipients per day, one budget for every host."""

from __future__ import annotations

import asyncio
import logging

import pytest

from relate.auth import Authenticator
from relate.services import accounts
from relate.smtp.server import SmtpServer
from relate.store import db

from .conftest import Smtp
from .helpers import Client, make_message, outbound_recipients
from .test_submission import submission_client

ALICE = "alice@example.com"


async def send(smtp: Smtp, rcpts: list[str], *, port: int | None = None) -> str:
    """One message from alice to ``rcpts`` over 587 (STARTTLS, AUTH); the head of the final reply."""
    if port is None:
        client = await submission_client(smtp)
    else:
        client = await Client.connect(port)
        await client.ehlo()
        await client.starttls(smtp.client_tls)
        await client.ehlo()
        assert (await client.auth_plain(ALICE, smtp.alice_key)).head == "235 2.7.0"
    try:
        replies = await client.mail(ALICE, rcpts, make_message(sender=ALICE, to=", ".join(rcpts)))
        assert [r.head for r in replies[:-1]] == ["250 2.1.0"] + ["250 2.1.5"] * len(rcpts)
        await client.cmd("QUIT")
        return replies[-1].head
    finally:
        await client.close()


def limit_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("smtp-sending-limit")]


async def test_messages_per_day_refuses_with_451_and_logs_the_user_once(
    smtp: Smtp, caplog: pytest.LogCaptureFixture
) -> None:
    """Past submission.limits.messages_per_day a message gets 451 4.7.0, is not kept, and one log line names alice."""
    caplog.set_level(logging.INFO, logger="relate")
    smtp.cfg.submission.limits.messages_per_day = 3
    for i in range(3):
        assert await send(smtp, ["bob@example.com", f"friend{i}@remote.example"]) == "250 2.0.0"
    before = len(await smtp.inbox("bob@example.com"))
    queued = len(await outbound_recipients(smtp))
    assert await send(smtp, ["bob@example.com"]) == "451 4.7.0"
    assert await send(smtp, ["friend0@remote.example"]) == "451 4.7.0"
    assert len(await smtp.inbox("bob@example.com")) == before
    assert len(await outbound_recipients(smtp)) == queued
    (line,) = limit_lines(caplog)
    assert "user=alice@example.com limit=messages used=3/3 client=127.0.0.1" in line
    # Another user has a budget of their own.
    bob_key, _ = await accounts.create_key(smtp.pool, "bob@example.com", "t", "smtp", rounds=4)
    client = await Client.connect(smtp.submission)
    await client.ehlo()
    await client.starttls(smtp.client_tls)
    await client.ehlo()
    assert (await client.auth_plain("bob@example.com", bob_key)).head == "235 2.7.0"
    replies = await client.mail("bob@example.com", [ALICE], make_message(sender="bob@example.com", to=ALICE))
    assert replies[-1].head == "250 2.0.0"


async def test_first_time_recipients_count_once_each(smtp: Smtp, caplog: pytest.LogCaptureFixture) -> None:
    """recipients_per_day counts addresses alice never wrote to: writing to them again is free, new ones are not."""
    caplog.set_level(logging.INFO, logger="relate")
    smtp.cfg.submission.limits.recipients_per_day = 3
    assert await send(smtp, ["a@remote.example", "b@remote.example"]) == "250 2.0.0"
    for _ in range(3):
        assert await send(smtp, ["a@remote.example", "b@remote.example"]) == "250 2.0.0"
    assert await send(smtp, ["c@remote.example", "d@remote.example"]) == "451 4.7.0"
    (line,) = limit_lines(caplog)
    assert "user=alice@example.com limit=recipients used=2+2/3" in line
    assert await send(smtp, ["c@remote.example", "b@remote.example"]) == "250 2.0.0"  # one new: 3 of 3
    assert await send(smtp, ["d@remote.example"]) == "451 4.7.0"
    # Logged again: a message fitted between the two refusals.
    assert len(limit_lines(caplog)) == 2


async def test_the_window_is_the_last_24_hours(smtp: Smtp) -> None:
    """Messages counted more than 24 hours ago no longer count; those of the last hours do."""
    smtp.cfg.submission.limits.messages_per_day = 2
    assert await send(smtp, ["bob@example.com"]) == "250 2.0.0"
    assert await send(smtp, ["bob@example.com"]) == "250 2.0.0"
    assert await send(smtp, ["bob@example.com"]) == "451 4.7.0"
    await smtp.pool.execute("UPDATE sending_counts SET hour = hour - interval '25 hours'")
    assert await send(smtp, ["bob@example.com"]) == "250 2.0.0"
    await smtp.pool.execute("UPDATE sending_counts SET hour = hour - interval '22 hours' WHERE messages = 1")
    assert await send(smtp, ["bob@example.com"]) == "250 2.0.0"
    assert await send(smtp, ["bob@example.com"]) == "451 4.7.0"


async def test_a_users_own_limits_win_over_the_defaults(smtp: Smtp) -> None:
    """A limit set for alice (relatectl user limits) replaces the configured one; 0 lifts it; None restores it."""
    smtp.cfg.submission.limits.messages_per_day = 1
    await accounts.set_sending_limits(smtp.pool, ALICE, {"messages": 3})
    for _ in range(3):
        assert await send(smtp, ["bob@example.com"]) == "250 2.0.0"
    assert await send(smtp, ["bob@example.com"]) == "451 4.7.0"
    await accounts.set_sending_limits(smtp.pool, ALICE, {"messages": accounts.NO_LIMIT})
    assert await send(smtp, ["bob@example.com"]) == "250 2.0.0"
    await accounts.set_sending_limits(smtp.pool, ALICE, {"messages": None})
    assert await send(smtp, ["bob@example.com"]) == "451 4.7.0"


async def test_two_hosts_share_one_budget_under_concurrent_sends(smtp: Smtp) -> None:
    """Two SMTP daemons on one database (each its own pool), 12 messages at once: exactly the limit of 5 is accepted."""
    smtp.cfg.submission.limits.messages_per_day = 5
    other_pool = await db.create_pool(smtp.cfg.database)
    other = SmtpServer(smtp.cfg, other_pool, Authenticator(other_pool, smtp.cfg.auth))
    await other.start()
    try:
        ports = [smtp.submission, other.addresses("submission")[0][1]]
        results = await asyncio.gather(*(send(smtp, ["bob@example.com"], port=ports[i % 2]) for i in range(12)))
    finally:
        await other.stop(grace=1)
        await other_pool.close()
    assert sorted(results) == ["250 2.0.0"] * 5 + ["451 4.7.0"] * 7
    assert len(await smtp.inbox("bob@example.com")) == 5
