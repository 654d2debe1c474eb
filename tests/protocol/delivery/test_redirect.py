"""Sieve redirect (RFC 5228 §4.2) sent: a script run at delivery redirects, the delivery daemon queues the
filtered message to the loopback MX with an SRS envelope sender; loops and the daily limit keep it instead."""

from __future__ import annotations

import email
import logging

import pytest

from relate.sieve import srs

from .conftest import Harness
from .helpers import BOB
from .test_vacation import REMOTE, activate, arrive, remote

FORWARD = "dave@remote.test"
SCRIPT = f'redirect "{FORWARD}";\n'


async def test_redirect_goes_out_with_srs(h: Harness) -> None:
    sink = await remote(h)
    await activate(h, BOB, SCRIPT)
    await arrive(h, subject="Project plan")
    assert await h.inbox(BOB) == []  # redirect without :copy cancels the implicit keep
    (sent,) = sink.transactions
    assert sent.rcpt_tos == [FORWARD]
    srs_from = sent.mail_from.strip("<>")
    assert srs_from.startswith("SRS0=")
    assert srs_from.endswith("@example.com")  # bob's domain: SPF at the receiver checks ours
    secret = bytes(await h.pool.fetchval("SELECT secret FROM srs_secret"))
    assert srs.reverse(srs_from, secret) == REMOTE  # the hash and the day check out
    assert srs.reverse(srs_from.replace("SRS0=", "SRS0=x", 1), secret) is None
    forwarded = email.message_from_bytes(sent.data)
    assert forwarded["Subject"] == "Project plan"
    assert forwarded["Delivered-To"] == BOB
    assert await h.pool.fetchval("SELECT count(*) FROM sieve_actions WHERE done_at IS NULL") == 0


async def test_copy_keeps_and_a_null_sender_stays_null(h: Harness) -> None:
    sink = await remote(h)
    await activate(h, BOB, f'require "copy";\nredirect :copy "{FORWARD}";\n')
    await arrive(h, mail_from="")
    assert len(await h.inbox(BOB)) == 1
    (sent,) = sink.transactions
    assert sent.mail_from == "<>"


async def test_a_loop_is_kept_not_redirected(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "relate.sieve")
    sink = await remote(h)
    await activate(h, BOB, SCRIPT)
    await arrive(h, headers=[f"Delivered-To: {BOB}"])
    assert sink.transactions == []
    assert len(await h.inbox(BOB)) == 1
    assert any("sieve-redirect" in r.message and "kept" in r.message for r in caplog.records)


async def test_past_the_daily_limit_the_message_is_kept(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "relate.sieve")
    h.cfg.sieve.max_redirects_per_day = 1
    sink = await remote(h)
    await activate(h, BOB, SCRIPT)
    await arrive(h)
    await arrive(h, message_id="<orig-2@remote.test>")
    assert len(sink.transactions) == 1
    assert len(await h.inbox(BOB)) == 1
    assert any("max_redirects_per_day" in r.message for r in caplog.records)
