"""Bounces to SRS addresses (relate/sieve/srs.py) on port 25: a bounce of a redirected message comes back to an
SRS0 address at a hosted domain; the MX takes it only when the hash and the day check out, and sends it on to
the original sender (queued when remote, delivered when local); a forged or expired one is refused at RCPT."""

from __future__ import annotations

import time

from relate.sieve import redirect, srs
from relate.store import sieve as scripts

from .conftest import Smtp
from .helpers import make_message, run_session

ACCEPTED = ["250 2.1.0", "250 2.1.5", "250 2.0.0"]


async def test_a_bounce_to_a_remote_sender_is_queued_to_them(smtp: Smtp) -> None:
    secret = await srs.secret(smtp.pool)
    address = srs.forward("carol@remote.example", "example.com", secret)
    replies = await run_session(smtp.mx, "", [address], make_message(subject="Undelivered Mail"))
    assert [r.head for r in replies] == ACCEPTED
    row = await smtp.pool.fetchrow(
        """SELECT e.mail_from, r.address FROM outbound_emails e
             JOIN outbound_recipients r ON r.outbound_email_id = e.id"""
    )
    assert row is not None
    assert row["address"] == "carol@remote.example"
    assert row["mail_from"] == ""  # a bounce stays a bounce


async def test_a_bounce_to_a_local_sender_is_delivered(smtp: Smtp) -> None:
    secret = await srs.secret(smtp.pool)
    address = srs.forward("alice@example.com", "example.com", secret)
    replies = await run_session(smtp.mx, "", [address.upper()], make_message(subject="Undelivered Mail"))
    assert [r.head for r in replies] == ACCEPTED  # receivers may change the case: the hash still checks out
    (got,) = await smtp.inbox("alice@example.com")
    assert b"Undelivered Mail" in got


async def test_forged_or_expired_srs_is_refused(smtp: Smtp) -> None:
    secret = await srs.secret(smtp.pool)
    good = srs.forward("carol@remote.example", "example.com", secret)
    forged = "SRS0=AAAA=" + good.split("=", 2)[2]
    old = srs.forward("carol@remote.example", "example.com", secret, now=time.time() - 22 * 86400)
    other_secret = srs.forward("carol@remote.example", "example.com", b"not ours")
    for address in (forged, old, other_secret, "SRS0=bad@example.com"):
        replies = await run_session(smtp.mx, "", [address], make_message())
        assert replies[1].head.startswith("550"), address
    assert await smtp.pool.fetchval("SELECT count(*) FROM outbound_emails") == 0


async def test_a_redirect_and_its_bounce_back_to_the_original_sender(smtp: Smtp) -> None:
    """carol writes to bob over port 25, bob's script redirects to dave@far.example (queued with an SRS
    sender by the delivery daemon's pass); dave's MX bounces to that SRS address, and the bounce is queued
    back to carol."""
    user_id = await smtp.pool.fetchval("SELECT id FROM users WHERE address = 'bob@example.com'")
    await scripts.put_script(smtp.pool, user_id, "main", 'redirect "dave@far.example";\n')
    async with smtp.pool.acquire() as conn:
        await scripts.activate(conn, user_id, "main")
    replies = await run_session(smtp.mx, "carol@remote.example", ["bob@example.com"], make_message())
    assert [r.head for r in replies] == ACCEPTED
    assert await redirect.send_pending(smtp.pool, "mail.example.com") == 1
    sent = await smtp.pool.fetchrow(
        """SELECT e.mail_from, r.address FROM outbound_emails e
             JOIN outbound_recipients r ON r.outbound_email_id = e.id"""
    )
    assert sent is not None
    assert sent["address"] == "dave@far.example"
    assert sent["mail_from"].startswith("SRS0=")
    replies = await run_session(smtp.mx, "", [sent["mail_from"]], make_message(subject="Undelivered Mail"))
    assert [r.head for r in replies] == ACCEPTED
    back = await smtp.pool.fetchval(
        """SELECT r.address FROM outbound_emails e JOIN outbound_recipients r ON r.outbound_email_id = e.id
            WHERE e.mail_from = ''"""
    )
    assert back == "carol@remote.example"
