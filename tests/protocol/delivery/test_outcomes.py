"""Per-recipient outcomes of one SMTP transaction, the message status they add up to, and failure DSNs."""

from __future__ import annotations

from .conftest import Harness
from .helpers import ALICE

MX1 = "mx1.remote.test"


async def remote(h: Harness) -> None:
    """remote.test's one MX host on 127.0.0.2."""
    await h.net.mta("127.0.0.2")
    h.net.mx("remote.test", (10, MX1, "127.0.0.2"))


async def test_mixed_rcpt_replies_are_recorded_per_recipient(h: Harness) -> None:
    """250/451/550 at RCPT in one message: sent, deferred and failed, each with the reply, code and remote MTA."""
    await remote(h)
    sink = h.net.sinks["127.0.0.2"]
    sink.rcpt_replies["later@remote.test"] = "451 4.2.1 mailbox busy, try later"
    sink.rcpt_replies["bad@remote.test"] = "550 5.1.1 no such user here"
    eid = await h.queue(["ok@remote.test", "later@remote.test", "bad@remote.test"])

    assert await h.run() is True

    rcpts = await h.recipients(eid)
    ok, later, bad = rcpts["ok@remote.test"], rcpts["later@remote.test"], rcpts["bad@remote.test"]
    assert (ok["status"], ok["status_code"], ok["remote_mta"], ok["attempts"]) == ("sent", "2.0.0", MX1, 1)
    assert ok["remote_reply"].startswith("250 2.0.0 Ok: queued as ")
    assert ok["next_attempt_at"] is None
    assert ok["last_error"] is None
    assert (later["status"], later["status_code"], later["remote_mta"]) == ("deferred", "4.2.1", MX1)
    assert later["remote_reply"] == "451 4.2.1 mailbox busy, try later"
    assert later["next_attempt_at"] is not None
    assert (bad["status"], bad["status_code"], bad["remote_mta"]) == ("failed", "5.1.1", MX1)
    assert bad["remote_reply"] == "550 5.1.1 no such user here"
    assert bad["next_attempt_at"] is None

    # The accepted recipient alone got the message, in one transaction.
    assert [t.rcpt_tos for t in sink.transactions] == [["ok@remote.test"]]
    assert sink.transactions[0].mail_from == ALICE
    # Queued while anyone is still waiting.
    assert await h.status(eid) == "queued"

    # The waiting one gets through later: some sent, some failed.
    sink.rcpt_replies.pop("later@remote.test")
    h.clock.advance(3600)
    assert await h.run() is True
    assert (await h.recipients(eid))["later@remote.test"]["status"] == "sent"
    assert await h.status(eid) == "partial_failure"
    assert (await h.email(eid))["sent_at"] is not None


async def test_data_replies_fail_or_defer_the_accepted_recipients(h: Harness) -> None:
    """A 550 after DATA fails the recipients RCPT accepted, a 451 defers them; a refused RCPT keeps its own outcome."""
    await remote(h)
    sink = h.net.sinks["127.0.0.2"]
    sink.data_replies["spam@remote.test"] = "550 5.7.1 message content rejected"
    sink.data_replies["grey@remote.test"] = "451 4.7.1 greylisted, come back later"
    sink.rcpt_replies["gone@remote.test"] = "550 5.1.1 gone"
    rejected = await h.queue(["spam@remote.test"])
    greylisted = await h.queue(["grey@remote.test", "gone@remote.test"])
    fine = await h.queue(["fine@remote.test"])

    await h.run()

    spam = (await h.recipients(rejected))["spam@remote.test"]
    assert (spam["status"], spam["status_code"], spam["remote_reply"], spam["remote_mta"]) == (
        "failed",
        "5.7.1",
        "550 5.7.1 message content rejected",
        MX1,
    )
    assert await h.status(rejected) == "failed"

    grey = await h.recipients(greylisted)
    assert (grey["grey@remote.test"]["status"], grey["grey@remote.test"]["status_code"]) == ("deferred", "4.7.1")
    assert grey["grey@remote.test"]["remote_reply"] == "451 4.7.1 greylisted, come back later"
    assert (grey["gone@remote.test"]["status"], grey["gone@remote.test"]["status_code"]) == ("failed", "5.1.1")
    assert await h.status(greylisted) == "queued"

    # The connection went on after the failed transactions (RSET), and the next message got through.
    assert (await h.recipients(fine))["fine@remote.test"]["status"] == "sent"
    assert await h.status(fine) == "sent"
    assert [t.rcpt_tos for t in sink.transactions] == [["fine@remote.test"]]
    assert sink.connections == 1


async def test_every_recipient_sent_makes_the_message_sent_without_dsn(h: Harness) -> None:
    """All recipients accepted: the message is sent (with sent_at), nothing waits, the sender gets no DSN."""
    await remote(h)
    eid = await h.queue(["a@remote.test", "b@remote.test"])
    await h.run()
    assert {r["status"] for r in (await h.recipients(eid)).values()} == {"sent"}
    msg = await h.email(eid)
    assert msg["status"] == "sent"
    assert msg["sent_at"] is not None
    assert msg["next_retry_at"] is None
    assert [t.rcpt_tos for t in h.net.sinks["127.0.0.2"].transactions] == [["a@remote.test", "b@remote.test"]]
    assert await h.inbox(ALICE) == []
    assert await h.run() is False  # nothing left to do


async def test_all_recipients_failed_makes_the_message_failed(h: Harness) -> None:
    """Every recipient refused with 5xx: the message is failed and nothing was transferred."""
    await remote(h)
    sink = h.net.sinks["127.0.0.2"]
    sink.rcpt_replies["x@remote.test"] = "550 5.1.1 unknown"
    sink.rcpt_replies["y@remote.test"] = "553 5.1.3 bad address"
    eid = await h.queue(["x@remote.test", "y@remote.test"])
    await h.run()
    assert await h.status(eid) == "failed"
    assert sink.transactions == []
    codes = {a: (r["status"], r["status_code"]) for a, r in (await h.recipients(eid)).items()}
    assert codes == {"x@remote.test": ("failed", "5.1.1"), "y@remote.test": ("failed", "5.1.3")}


async def test_5xx_failure_sends_one_dsn_listing_the_failed_recipients(h: Harness) -> None:
    """Failures at two domains in one pass make one DSN, each recipient with the remote reply and Remote-MTA."""
    await remote(h)
    other = await h.net.mta("127.0.0.3")
    h.net.mx("other.test", (10, "mx.other.test", "127.0.0.3"))
    h.net.sinks["127.0.0.2"].rcpt_replies["bad@remote.test"] = "550 5.1.1 <bad@remote.test>: no such user"
    other.data_replies["worse@other.test"] = "554 5.7.1 rejected by policy"
    eid = await h.queue(
        ["bad@remote.test", "ok@remote.test", "worse@other.test"], subject="Quarterly report", message_id="<q4@x>"
    )

    await h.run()

    dsns = await h.dsns(ALICE)
    assert len(dsns) == 1
    dsn = dsns[0]
    assert dsn.message["To"] == f"<{ALICE}>"
    assert dsn.message["From"].startswith("Mail Delivery System <MAILER-DAEMON@mail.example.com>")
    assert dsn.message["Auto-Submitted"] == "auto-replied"
    assert dsn.per_message["Reporting-MTA"] == "dns; mail.example.com"
    assert dsn.per_message["Arrival-Date"]
    assert sorted(r["Final-Recipient"] for r in dsn.recipients) == [
        "rfc822; bad@remote.test",
        "rfc822; worse@other.test",
    ]
    bad = dsn.recipient("bad@remote.test")
    assert (bad["Action"], bad["Status"]) == ("failed", "5.1.1")
    assert bad["Remote-MTA"] == f"dns; {MX1}"
    assert bad["Diagnostic-Code"] == "smtp; 550 5.1.1 <bad@remote.test>: no such user"
    worse = dsn.recipient("worse@other.test")
    assert (worse["Action"], worse["Status"]) == ("failed", "5.7.1")
    assert worse["Remote-MTA"] == "dns; mx.other.test"
    assert worse["Diagnostic-Code"] == "smtp; 554 5.7.1 rejected by policy"
    # The original headers, not the body.
    assert dsn.original["Subject"] == "Quarterly report"
    assert dsn.original["Message-Id"] == "<q4@x>"
    assert "bad@remote.test" in dsn.human
    assert await h.status(eid) == "partial_failure"


async def test_null_sender_never_gets_a_dsn(h: Harness) -> None:
    """A message with the null sender (MAIL FROM:<>) that fails is failed silently: no bounce of a bounce."""
    await remote(h)
    sink = h.net.sinks["127.0.0.2"]
    sink.rcpt_replies["bad@remote.test"] = "550 5.1.1 no such user"
    eid = await h.queue(["bad@remote.test", "ok@remote.test"], mail_from="")
    await h.run()
    rcpts = await h.recipients(eid)
    assert rcpts["bad@remote.test"]["status"] == "failed"
    assert rcpts["ok@remote.test"]["status"] == "sent"
    assert sink.transactions[0].mail_from == "<>"  # MAIL FROM:<>
    assert await h.inbox(ALICE) == []
