"""Hostile message headers: stored as they are on port 25, refused cleanly on submission, and nobody else waits."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from .conftest import Smtp
from .helpers import Client, make_message, message_count

# 13,000 encoded words folded into one Subject (240 KiB): the header parser once took seconds over it, on the loop.
HOSTILE_SUBJECT = b"Subject: " + b"\r\n ".join([b"=?utf-8?b?w6k=?="] * 13000) + b"\r\n"
# A From with an unclosed angle address and 500 nested comments: RecursionError in the email package, once 451.
NESTED_FROM = b"From: a <b" + b"(" * 500


def hostile(*fields: bytes) -> bytes:
    """A message with these header fields, then To and a short body."""
    return b"\r\n".join([*fields, b"To: bob@example.com", b"", b"body", b""])


async def test_hostile_subject_does_not_stall_other_clients(smtp: Smtp) -> None:
    """While a 240 KiB Subject of 13,000 encoded words is stored, another client's NOOPs are answered within 0.5 s."""
    message = b"From: carol@remote.example\r\nTo: bob@example.com\r\n" + HOSTILE_SUBJECT + b"\r\nbody\r\n"
    other = await Client.connect(smtp.mx)
    await other.ehlo()
    sender = await Client.connect(smtp.mx)
    await sender.ehlo()
    assert (await sender.cmd("MAIL FROM:<carol@remote.example>")).head == "250 2.1.0"
    assert (await sender.cmd("RCPT TO:<bob@example.com>")).head == "250 2.1.5"
    assert (await sender.cmd("DATA")).head == "354"
    await sender.write(message + b".\r\n")
    final = asyncio.ensure_future(sender.reply(wait=60))
    slowest = 0.0
    noops = 0
    while not final.done() or noops < 5:
        started = time.monotonic()
        assert (await other.cmd("NOOP")).head == "250 2.0.0"
        slowest = max(slowest, time.monotonic() - started)
        noops += 1
        await asyncio.sleep(0.01)
    assert (await final).head == "250 2.0.0"
    assert slowest < 0.5, f"a NOOP waited {slowest:.2f} s"
    (stored,) = await smtp.inbox("bob@example.com")
    assert stored.endswith(message)


async def test_nested_comment_from_is_stored_on_mx(smtp: Smtp, caplog: pytest.LogCaptureFixture) -> None:
    """'From: a <b' and 500 '(' over port 25 gets 250 and is stored byte for byte (not 451 on every retry)."""
    caplog.set_level(logging.INFO, logger="relate")
    message = hostile(NESTED_FROM)
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    replies = await client.mail("carol@remote.example", ["bob@example.com"], message)
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
    await client.close()
    (stored,) = await smtp.inbox("bob@example.com")
    assert stored.endswith(message)
    assert not [r for r in caplog.records if r.getMessage().startswith(("smtp-error", "smtp-tempfail"))]


async def test_nested_comment_from_or_sender_is_refused_on_submission(smtp: Smtp) -> None:
    """On submission the same From, such a Sender, or headers the email package chokes on get 550 5.7.1, not 451."""
    client = await Client.connect(smtp.submissions, tls=smtp.client_tls)
    await client.ehlo()
    assert (await client.auth_plain("alice@example.com", smtp.alice_key)).head == "235 2.7.0"
    own = b"From: alice@example.com"
    for message in [
        hostile(NESTED_FROM),
        hostile(own, b"Sender: a <b" + b"(" * 500),
        hostile(b"From: " + b"(" * 60 + b"x" + b")" * 60 + b" alice@example.com"),
        hostile(own, b"Sender: alice@example.com" + b",\r\n alice@example.com" * 2000),
        hostile(b"From: alice@example.com", b"From:From:;From:"),  # AttributeError in the email package
    ]:
        replies = await client.mail("alice@example.com", ["bob@example.com"], message)
        assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "550 5.7.1"], message[:80]
    replies = await client.mail("alice@example.com", ["bob@example.com"], make_message(sender="alice@example.com"))
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
    await client.close()
    assert await message_count(smtp) == 2  # bob's INBOX and alice's Sent: the good message only
