"""Queued recipients at hosted domains: straight into their INBOX, without SMTP."""

from __future__ import annotations

import email

from relate.services import accounts
from relate.store import sieve

from .conftest import Harness
from .helpers import ALICE, BOB


async def hosted_mx(h: Harness) -> None:
    """example.com's MX points at a sink, so any SMTP delivery to the hosted domain would show there."""
    await h.net.mta("127.0.0.2")
    h.net.mx("example.com", (10, "mail.example.com", "127.0.0.2"))


async def test_local_recipient_delivered_to_inbox_without_smtp(h: Harness) -> None:
    """A queued recipient at a hosted domain lands in that user's INBOX with a Return-Path; no SMTP connection."""
    await hosted_mx(h)
    eid = await h.queue([BOB], subject="Lunch?", message_id="<lunch@example.com>")
    await h.run()
    r = (await h.recipients(eid))[BOB]
    assert (r["status"], r["status_code"], r["remote_mta"]) == ("sent", "2.0.0", "mail.example.com")
    assert await h.status(eid) == "sent"
    (raw,) = await h.inbox(BOB)
    assert raw.startswith(f"Return-Path: <{ALICE}>\r\n".encode())
    msg = email.message_from_bytes(raw)
    assert (msg["Subject"], msg["Message-Id"]) == ("Lunch?", "<lunch@example.com>")
    assert h.net.sinks["127.0.0.2"].connections == 0


async def test_unknown_user_at_hosted_domain_fails_5_1_1(h: Harness) -> None:
    """A queued recipient at a hosted domain that nobody has fails with 5.1.1, and the sender gets a DSN."""
    await hosted_mx(h)
    eid = await h.queue(["nobody@example.com", BOB])
    await h.run()
    rcpts = await h.recipients(eid)
    assert (rcpts["nobody@example.com"]["status"], rcpts["nobody@example.com"]["status_code"]) == ("failed", "5.1.1")
    assert rcpts[BOB]["status"] == "sent"
    assert await h.status(eid) == "partial_failure"
    (dsn,) = await h.dsns(ALICE)
    block = dsn.recipient("nobody@example.com")
    assert (block["Action"], block["Status"]) == ("failed", "5.1.1")
    assert [r["Final-Recipient"] for r in dsn.recipients] == ["rfc822; nobody@example.com"]
    assert h.net.sinks["127.0.0.2"].connections == 0


async def test_alias_recipient_delivered_to_its_user(h: Harness) -> None:
    """A queued recipient that is an alias lands in the INBOX of the user it belongs to."""
    await hosted_mx(h)
    await accounts.add_alias(h.pool, "robert@example.com", BOB)
    eid = await h.queue(["robert@example.com"])
    await h.run()
    assert (await h.recipients(eid))["robert@example.com"]["status"] == "sent"
    assert len(await h.inbox(BOB)) == 1


async def test_local_and_remote_recipients_of_one_message(h: Harness) -> None:
    """One message to a local user and a remote address: the local copy goes to the INBOX, the other over SMTP."""
    await hosted_mx(h)
    remote = await h.net.mta("127.0.0.3")
    h.net.mx("remote.test", (10, "mx1.remote.test", "127.0.0.3"))
    eid = await h.queue([BOB, "friend@remote.test"])
    await h.run()
    assert {a: r["status"] for a, r in (await h.recipients(eid)).items()} == {
        BOB: "sent",
        "friend@remote.test": "sent",
    }
    assert len(await h.inbox(BOB)) == 1
    assert [t.rcpt_tos for t in remote.transactions] == [["friend@remote.test"]]
    assert h.net.sinks["127.0.0.2"].connections == 0


async def test_queued_local_copy_goes_through_the_recipients_sieve_script(h: Harness) -> None:
    """A queued copy for a local user is filed by that user's active Sieve script, like any other delivery."""
    await hosted_mx(h)
    user_id = await h.pool.fetchval("SELECT id FROM users WHERE address = $1", BOB)
    await sieve.put_script(h.pool, user_id, "main", 'require ["fileinto", "mailbox"]; fileinto :create "Queued";')
    async with h.pool.acquire() as conn:
        await sieve.activate(conn, user_id, "main")
    eid = await h.queue([BOB], subject="Via the queue")
    await h.run()
    assert (await h.recipients(eid))[BOB]["status"] == "sent"
    assert await h.inbox(BOB) == []
    (raw,) = await h.pool.fetch(
        """SELECT b.data FROM messages m JOIN blobs b ON b.hash = m.blob_hash
             JOIN mailboxes x ON x.id = m.mailbox_id WHERE x.user_id = $1 AND x.name = 'Queued'""",
        user_id,
    )
    assert b"Subject: Via the queue" in bytes(raw["data"])
