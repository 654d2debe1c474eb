"""Quota at SMTP delivery (store/quota.py, relate.delivery): 452 4.2.2 while full, 552 5.2.2 after the days."""

from __future__ import annotations

import asyncio
import logging
import smtplib
from datetime import UTC, datetime, timedelta

import pytest

from relate.services import accounts

from .conftest import Smtp
from .helpers import Client, blocking, make_message, outbound, outbound_recipients, run_session
from .test_submission import submission_client

ALICE = "alice@example.com"
BOB = "bob@example.com"
ACCEPTED = ["250 2.1.0", "250 2.1.5", "250 2.0.0"]


def sized(size: int, subject: str = "quota") -> bytes:
    """A message of exactly ``size`` octets as the client sends it (the stored copy gains a trace header)."""
    head = make_message(subject=subject, body="")
    body = (b"x" * 78 + b"\r\n") * ((size - len(head)) // 80)
    return head + body + b"y" * (size - len(head) - len(body) - 2) + b"\r\n"


async def limit(smtp: Smtp, user: str, *, storage: int | None = None, messages: int | None = None) -> None:
    changes = {k: v for k, v in (("storage", storage), ("messages", messages)) if v is not None}
    await accounts.set_quota(smtp.pool, user, changes)


async def fill(smtp: Smtp, user: str, count: int = 1) -> None:
    for i in range(count):
        replies = await run_session(smtp.mx, "carol@remote.example", [user], make_message(subject=f"fill {i}"))
        assert [r.head for r in replies] == ACCEPTED


async def full_since(smtp: Smtp, user: str) -> datetime | None:
    found: datetime | None = await smtp.pool.fetchval("SELECT quota_full_since FROM users WHERE address = $1", user)
    return found


async def test_rcpt_to_a_full_mailbox_is_452_and_other_recipients_still_get_it(
    smtp: Smtp, caplog: pytest.LogCaptureFixture
) -> None:
    """MX: RCPT to a user at his message limit is 452 4.2.2 (one log line); the other recipient gets the message."""
    caplog.set_level(logging.INFO, logger="relate")
    await limit(smtp, BOB, messages=1)
    await fill(smtp, BOB)
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    assert (await client.cmd("MAIL FROM:<carol@remote.example>")).head == "250 2.1.0"
    refused = await client.cmd("RCPT TO:<bobby@example.com>")
    assert refused.head == "452 4.2.2"
    assert (await client.cmd(f"RCPT TO:<{ALICE}>")).head == "250 2.1.5"
    assert (await client.data(make_message(subject="to alice"))).head == "250 2.0.0"
    await client.close()
    assert len(await smtp.inbox(BOB)) == 1
    assert len(await smtp.inbox(ALICE)) == 1
    assert await full_since(smtp, BOB) is not None  # the clock of quota.bounce_after_days runs
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("smtp-quota")]
    assert lines == ["smtp-quota client=127.0.0.1 rcpt=bobby@example.com size=0 refused=later"]
    assert not [r for r in caplog.records if r.exc_info]


async def test_full_for_the_configured_days_is_552_for_good(smtp: Smtp) -> None:
    """After quota.bounce_after_days of a full mailbox, RCPT is 552 5.2.2; made room, mail is taken again."""
    await limit(smtp, BOB, messages=1)
    await fill(smtp, BOB)
    assert (await run_session(smtp.mx, "carol@remote.example", [BOB], make_message()))[1].head == "452 4.2.2"
    days = smtp.cfg.quota.bounce_after_days
    await smtp.pool.execute(
        "UPDATE users SET quota_full_since = $1 WHERE address = $2", datetime.now(UTC) - timedelta(days=days), BOB
    )
    assert (await run_session(smtp.mx, "carol@remote.example", [BOB], make_message()))[1].head == "552 5.2.2"
    await limit(smtp, BOB, messages=2)
    replies = await run_session(smtp.mx, "carol@remote.example", [BOB], make_message())
    assert [r.head for r in replies] == ACCEPTED
    assert len(await smtp.inbox(BOB)) == 2


async def test_declared_size_is_checked_at_rcpt(smtp: Smtp) -> None:
    """MX: with SIZE= too big for the room left, RCPT is 452 4.2.2; larger than the limit itself, 552 5.2.2."""
    await limit(smtp, BOB, storage=20_000)
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    for size, head in ((15_000, "250 2.1.5"), (20_001, "552 5.2.2")):
        assert (await client.cmd(f"MAIL FROM:<carol@remote.example> SIZE={size}")).head == "250 2.1.0"
        assert (await client.cmd(f"RCPT TO:<{BOB}>")).head == head, size
        assert (await client.cmd("RSET")).head == "250 2.0.0"
    replies = await client.mail("carol@remote.example", [BOB], sized(15_000), " SIZE=15000")
    assert [r.head for r in replies] == ACCEPTED
    assert (await client.cmd("MAIL FROM:<carol@remote.example> SIZE=6000")).head == "250 2.1.0"
    assert (await client.cmd(f"RCPT TO:<{BOB}>")).head == "452 4.2.2"
    await client.close()
    assert await full_since(smtp, BOB) is None  # too big for the room left is not full


async def test_message_that_would_cross_the_limit_is_452_at_data(smtp: Smtp) -> None:
    """MX without SIZE=: a message that would take its only recipient past the limit is 452 4.2.2 after DATA."""
    await limit(smtp, BOB, storage=10_000)
    replies = await run_session(smtp.mx, "carol@remote.example", [BOB], sized(8000))
    assert [r.head for r in replies] == ACCEPTED
    replies = await run_session(smtp.mx, "carol@remote.example", [BOB], sized(3000))
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "452 4.2.2"]
    assert len(await smtp.inbox(BOB)) == 1
    await limit(smtp, ALICE, storage=5000)  # a message larger than the limit itself: refused for good
    replies = await run_session(smtp.mx, "carol@remote.example", [ALICE], sized(6000))
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "552 5.2.2"]
    assert await smtp.inbox(ALICE) == []


async def test_concurrent_senders_never_pass_the_limit(smtp: Smtp) -> None:
    """MX: ten sessions at once to a mailbox with room for three: three get 250, seven 452 4.2.2, three stored."""
    await limit(smtp, BOB, storage=3 * 2000 + 2000)  # each copy is 2000 bytes and the trace fields
    clients = []
    for _ in range(10):
        client = await Client.connect(smtp.mx)
        await client.ehlo()
        assert (await client.cmd("MAIL FROM:<carol@remote.example>")).head == "250 2.1.0"
        assert (await client.cmd(f"RCPT TO:<{BOB}>")).head == "250 2.1.5"  # each sees the room there is
        assert (await client.cmd("DATA")).code == 354
        clients.append(client)
    finals = await asyncio.gather(*(c.data_body(sized(2000, f"race {i}")) for i, c in enumerate(clients)))
    assert sorted(r.head for r in finals) == ["250 2.0.0"] * 3 + ["452 4.2.2"] * 7
    assert len(await smtp.inbox(BOB)) == 3


async def test_crossing_for_one_of_several_recipients_delivers_to_all(smtp: Smtp) -> None:
    """MX: when one recipient has room, a message that crosses another's limit goes to both; the next is refused."""
    await limit(smtp, BOB, storage=10_000)
    await run_session(smtp.mx, "carol@remote.example", [BOB], sized(8000))
    replies = await run_session(smtp.mx, "carol@remote.example", [BOB, ALICE], sized(3000, "both"))
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.1.5", "250 2.0.0"]
    assert len(await smtp.inbox(BOB)) == 2
    assert len(await smtp.inbox(ALICE)) == 1
    assert (await run_session(smtp.mx, "carol@remote.example", [BOB], make_message()))[1].head == "452 4.2.2"


async def test_submission_to_a_full_local_user_waits_in_the_queue(smtp: Smtp) -> None:
    """Submission: 250 for all; a full local recipient's copy waits in the queue for the delivery daemon."""
    await limit(smtp, BOB, messages=1)
    await fill(smtp, BOB)
    client = await submission_client(smtp)
    message = make_message(sender=ALICE, to=BOB, subject="to a full mailbox")
    replies = await client.mail(ALICE, [BOB, "friend@remote.example"], message)
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.1.5", "250 2.0.0"]
    await client.close()
    assert len(await smtp.inbox(BOB)) == 1  # not delivered now
    assert {r["address"]: r["status"] for r in await outbound_recipients(smtp)} == {
        BOB: "pending",
        "friend@remote.example": "pending",
    }
    assert len(await smtp.inbox(ALICE, "Sent")) == 1


async def test_sent_copy_over_the_senders_quota_is_skipped_and_said(smtp: Smtp) -> None:
    """Submission by a full user: the message goes out, the Sent copy is not kept, and the 250 says so."""
    await limit(smtp, ALICE, messages=1)
    await fill(smtp, ALICE)

    def send_for_reply() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", smtp.submission, timeout=10) as client:
            client.starttls(context=smtp.client_tls)
            client.login(ALICE, smtp.alice_key)
            client.mail(ALICE)
            client.rcpt(BOB)
            return client.data(make_message(sender=ALICE, to=BOB))

    code, text = await blocking(send_for_reply)
    assert code == 250
    assert b"not saved to Sent: mailbox full" in text
    assert len(await smtp.inbox(BOB)) == 1
    assert await smtp.inbox(ALICE, "Sent") == []
    assert await outbound(smtp) == []
