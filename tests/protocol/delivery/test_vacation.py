"""Vacation (RFC 5230, RFC 3834): a Sieve run at delivery asks for a reply, the delivery daemon sends it once
per sender and :days, from the address the mail came to, with the null sender, to the loopback MX."""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import time

import dkim
import pytest

from relate.queue.worker import DeliveryWorker
from relate.services import dns as dns_service
from relate.sieve import filing
from relate.store import accounts
from relate.store import sieve as scripts

from .conftest import Harness, Sink
from .helpers import ALICE, BOB, compose, parse_dsn
from .test_daemons import wait_for
from .test_dkim import dns_for

REMOTE = "carol@remote.test"
SCRIPT = 'require "vacation";\nvacation :days 7 "I am away until Monday.";\n'


async def activate(h: Harness, address: str, text: str) -> None:
    user_id = await h.pool.fetchval("SELECT id FROM users WHERE address = $1", address)
    await scripts.put_script(h.pool, user_id, "main", text)
    async with h.pool.acquire() as conn:
        await scripts.activate(conn, user_id, "main")


async def remote(h: Harness) -> Sink:
    sink = await h.net.mta("127.0.0.2")
    h.net.mx("remote.test", (10, "mx1.remote.test", "127.0.0.2"))
    return sink


async def arrive(h: Harness, *, mail_from: str = REMOTE, **compose: object) -> None:
    """A message from carol@remote.test to bob (alice's account sends it, with carol's envelope and From),
    delivered locally by the queue, which runs bob's script; then the daemon's passes that reply."""
    compose.setdefault("from_header", REMOTE)
    compose.setdefault("message_id", "<orig-1@remote.test>")
    await h.queue([BOB], sender=ALICE, mail_from=mail_from, **compose)  # type: ignore[arg-type]
    for _ in range(3):
        await h.run()


async def test_a_reply_goes_to_the_sender_once_per_days(h: Harness) -> None:
    sink = await remote(h)
    await activate(h, BOB, SCRIPT)
    await arrive(h, subject="Project plan")
    assert len(sink.transactions) == 1
    sent = sink.transactions[0]
    assert sent.mail_from == "<>"  # MAIL FROM:<> (RFC 3834 §3.2): a bounce of the reply goes nowhere
    assert sent.rcpt_tos == [REMOTE]
    reply = email.message_from_bytes(sent.data, policy=email.policy.default)
    assert reply["From"] == BOB
    assert reply["To"] == REMOTE
    assert reply["Subject"] == "Auto: Project plan"
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["In-Reply-To"] == "<orig-1@remote.test>"
    assert "<orig-1@remote.test>" in reply["References"]
    assert reply.get_content().strip() == "I am away until Monday."

    await arrive(h, subject="Project plan, again", message_id="<orig-2@remote.test>")
    assert len(sink.transactions) == 1  # within :days: no second reply
    assert await h.pool.fetchval("SELECT count(*) FROM sieve_actions WHERE done_at IS NULL") == 0

    await h.pool.execute("UPDATE sieve_vacation_replies SET expires_at = now() - interval '1 second'")  # 7 days on
    await arrive(h, subject="Back yet?", message_id="<orig-3@remote.test>")
    assert len(sink.transactions) == 2
    assert email.message_from_bytes(sink.transactions[1].data)["Subject"] == "Auto: Back yet?"


async def test_subject_from_and_a_changed_handle(h: Harness) -> None:
    sink = await remote(h)
    await activate(
        h, BOB, 'require "vacation";\nvacation :subject "Out of office" :from "Bob <bob@example.com>" "Away.";\n'
    )
    await arrive(h)
    assert email.message_from_bytes(sink.transactions[0].data)["Subject"] == "Out of office"
    # A new reason is a new default handle (RFC 5230 §4.2): the sender hears the new text.
    await activate(h, BOB, 'require "vacation";\nvacation "Back on the 5th.";\n')
    await arrive(h, message_id="<orig-2@remote.test>")
    assert len(sink.transactions) == 2


@pytest.mark.parametrize(
    ("envelope", "extra", "to", "why"),
    [
        ("", {}, BOB, "empty sender"),
        ("mailer-daemon@remote.test", {}, BOB, "automatic"),
        ("owner-list@remote.test", {}, BOB, "automatic"),
        ("list-request@remote.test", {}, BOB, "automatic"),
        (REMOTE, {"headers": ["Auto-Submitted: auto-generated"]}, BOB, "Auto-Submitted"),
        (REMOTE, {"headers": ["List-Id: <team.remote.test>"]}, BOB, "list"),
        (REMOTE, {"headers": ["List-Unsubscribe: <mailto:u@remote.test>"]}, BOB, "list"),
        (REMOTE, {"headers": ["Precedence: bulk"]}, BOB, "Precedence: bulk"),
        (REMOTE, {}, "someone-else@remote.test", "To or Cc"),  # bob only in Bcc (RFC 5230 §4.5)
        (BOB, {}, BOB, "the sender is the user"),
    ],
)
async def test_never_replies_to(
    h: Harness, caplog: pytest.LogCaptureFixture, envelope: str, extra: dict[str, list[str]], to: str, why: str
) -> None:
    caplog.set_level(logging.INFO, "relate.sieve")
    sink = await remote(h)
    await activate(h, BOB, SCRIPT)
    await arrive(h, mail_from=envelope, to_header=to, **extra)
    assert sink.transactions == []
    bobs = "SELECT count(*) FROM outbound_emails WHERE user_id = (SELECT id FROM users WHERE address = $1)"
    assert await h.pool.fetchval(bobs, BOB) == 0  # no reply queued
    assert await h.pool.fetchval("SELECT count(*) FROM sieve_actions WHERE done_at IS NOT NULL") == 1
    assert any("sieve-vacation" in r.message and "skipped" in r.message and why in r.message for r in caplog.records)


async def test_auto_submitted_no_is_answered(h: Harness) -> None:
    sink = await remote(h)
    await activate(h, BOB, SCRIPT)
    await arrive(h, headers=["Auto-Submitted: no"])
    assert len(sink.transactions) == 1


async def test_the_reply_is_dkim_signed(h: Harness) -> None:
    sink = await remote(h)
    key, _ = await dns_service.dkim_keygen(h.pool, "example.com", kind="ed25519", selector="v1")
    await activate(h, BOB, SCRIPT)
    await arrive(h)
    data = sink.transactions[0].data
    assert data.startswith(b"DKIM-Signature:")
    assert dkim.verify(data, dnsfunc=dns_for({"v1._domainkey.example.com": key.txt_record()})) is True


@pytest.mark.parametrize("command", ["reject", "ereject"])
async def test_reject_sends_a_dsn_to_the_sender(h: Harness, command: str) -> None:
    """RFC 5429 §2.1 for mail accepted already: a DSN (5.7.1, the script's reason) to the envelope sender,
    from MAILER-DAEMON with the null sender; bob gets nothing."""
    sink = await remote(h)
    await activate(h, BOB, f'require "{command}";\n{command} "No mail about plans, please.";\n')
    await arrive(h, subject="Project plan")
    assert await h.inbox(BOB) == []
    (sent,) = sink.transactions
    assert sent.mail_from == "<>"
    assert sent.rcpt_tos == [REMOTE]
    dsn = parse_dsn(sent.data)
    assert dsn.message["From"].startswith("Mail Delivery System <MAILER-DAEMON@")
    (recipient,) = dsn.recipients
    assert recipient["Final-Recipient"] == f"rfc822; {BOB}"
    assert recipient["Action"] == "failed"
    assert recipient["Status"] == "5.7.1"
    assert "No mail about plans, please." in dsn.human
    assert dsn.original["Subject"] == "Project plan"


async def test_reject_never_answers_the_null_sender(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "relate.sieve")
    sink = await remote(h)
    await activate(h, BOB, 'require "reject";\nreject "No.";\n')
    await arrive(h, mail_from="")
    assert sink.transactions == []
    assert await h.pool.fetchval("SELECT count(*) FROM sieve_actions WHERE done_at IS NULL") == 0
    assert any("sieve-reject" in r.message and "empty sender" in r.message for r in caplog.records)


async def test_a_running_daemon_is_woken_by_the_delivery_that_asks(h: Harness) -> None:
    """With a 60 s poll interval, a vacation recorded by another process's delivery (the SMTP daemon's filing,
    here called directly) is answered within a few seconds: the delivery's NOTIFY relate_queue wakes it."""
    sink = await remote(h)
    await activate(h, BOB, SCRIPT)
    h.cfg.delivery.poll_seconds = 60
    worker = DeliveryWorker(h.cfg, h.pool)  # the real clock
    h.workers.append(worker)
    await worker.start()
    await asyncio.sleep(0.3)  # its first pass found nothing; it is asleep now
    raw, _ = compose(REMOTE, [BOB], subject="Are you there?")
    started = time.monotonic()
    async with h.pool.acquire() as conn, conn.transaction():
        user_id = await conn.fetchval("SELECT id FROM users WHERE address = $1", BOB)
        inbox = await accounts.inbox_id(conn, user_id)
        assert inbox is not None
        await filing.file_one(
            conn, h.cfg.sieve, raw, user_id=user_id, inbox_id=inbox, rcpt=BOB, mail_from=REMOTE, quota=None
        )

    async def replied() -> bool:
        return bool(sink.transactions)

    await wait_for(replied, 10)
    assert [t.rcpt_tos for t in sink.transactions] == [[REMOTE]]
    assert time.monotonic() - started < 5.0
    await worker.stop(grace=5)
    h.workers.clear()


async def test_mime_reason_is_the_body_part(h: Harness) -> None:
    """RFC 5230 §5.8: with :mime the reason is a MIME entity, its own header first."""
    sink = await remote(h)
    script = (
        'require "vacation";\nvacation :mime text:\n'
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nWeg bis Montag, grüße.\n.\n;\n"
    )
    await activate(h, BOB, script)
    await arrive(h)
    reply = email.message_from_bytes(sink.transactions[0].data, policy=email.policy.default)
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply.get_content_type() == "text/plain"
    assert reply.get_content().strip() == "Weg bis Montag, grüße."
