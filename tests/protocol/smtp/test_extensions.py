"""ESMTP extensions: 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531) and PIPELINING (RFC 2920)."""

from __future__ import annotations

import re

from relate.services import accounts

from .conftest import Smtp
from .helpers import Client, split_trace, without_results

UTF8_BODY = "Grüße aus Köln, ça va? 日本語のテキスト — ✓\r\n".encode()


async def test_8bitmime_body_is_stored_byte_for_byte(smtp: Smtp) -> None:
    """A UTF-8 body sent with BODY=8BITMIME is accepted and stored exactly, after the trace headers."""
    message = (
        b"From: carol@remote.example\r\nTo: bob@example.com\r\nSubject: 8bit\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        b"\r\n" + UTF8_BODY + b"\xff\xfe raw bytes that are not UTF-8\r\n"
    )
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    replies = await client.mail("carol@remote.example", ["bob@example.com"], message, " BODY=8BITMIME")
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
    await client.close()
    (stored,) = await smtp.inbox("bob@example.com")
    trace, rest = split_trace(stored)
    assert rest == message
    assert re.search(r"\bwith ESMTP id ", trace[1])


async def test_bad_body_parameter_is_refused(smtp: Smtp) -> None:
    """MAIL FROM with BODY=BINARYMIME (not offered) gets 501 5.5.4."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    assert (await client.cmd("MAIL FROM:<carol@remote.example> BODY=BINARYMIME")).head == "501 5.5.4"
    assert (await client.cmd("MAIL FROM:<carol@remote.example> SMTPUTF8=yes")).head == "501 5.5.4"
    assert (await client.cmd("MAIL FROM:<carol@remote.example> BODY=8BITMIME")).head == "250 2.1.0"
    await client.close()


async def test_smtputf8_address_and_headers_are_delivered(smtp: Smtp) -> None:
    """With SMTPUTF8, a UTF-8 sender and local part are accepted, stored exactly, and traced 'with UTF8SMTP'."""
    await accounts.add_user(smtp.pool, "jörg@example.com", "Jörg")
    message = (
        "From: Müller <müller@bücher.example>\r\n"
        "To: Jörg <jörg@example.com>\r\n"
        "Subject: Grüße\r\n"
        "Message-ID: <grüße-1@bücher.example>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "Hallo Jörg!\r\n"
    ).encode()
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    replies = await client.mail("müller@bücher.example", ["jörg@example.com"], message, " SMTPUTF8 BODY=8BITMIME")
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
    await client.close()
    (stored,) = await smtp.inbox("jörg@example.com")
    assert without_results(stored).startswith("Return-Path: <müller@bücher.example>\r\nReceived: ".encode())
    trace, rest = split_trace(stored)
    assert rest == message
    assert re.search(r"\bwith UTF8SMTP id ", trace[1])
    assert "for <jörg@example.com>;" in trace[1]


async def test_smtputf8_over_tls_is_traced_utf8smtps(smtp: Smtp) -> None:
    """SMTPUTF8 after STARTTLS is traced 'with UTF8SMTPS' (RFC 6531 §3.7.3)."""
    await accounts.add_user(smtp.pool, "jörg@example.com", "Jörg")
    message = "From: zoë@remote.example\r\nTo: jörg@example.com\r\nSubject: ü\r\n\r\nü\r\n".encode()
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    await client.starttls(smtp.client_tls)
    await client.ehlo()
    replies = await client.mail("zoë@remote.example", ["jörg@example.com"], message, " SMTPUTF8")
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
    await client.close()
    (stored,) = await smtp.inbox("jörg@example.com")
    trace, rest = split_trace(stored)
    assert rest == message
    assert re.search(r"\bwith UTF8SMTPS id ", trace[1])


async def test_pipelined_commands_are_answered_in_order(smtp: Smtp) -> None:
    """MAIL, RCPT, RCPT, RCPT, DATA written in one packet get their replies in order, then the message is taken."""
    message = b"From: carol@remote.example\r\nTo: bob@example.com\r\nSubject: piped\r\n\r\nOne packet.\r\n"
    client = await Client.connect(smtp.mx)
    assert "PIPELINING" in (await client.ehlo()).keywords
    await client.write(
        b"MAIL FROM:<carol@remote.example>\r\n"
        b"RCPT TO:<bob@example.com>\r\n"
        b"RCPT TO:<nobody@example.com>\r\n"
        b"RCPT TO:<alice@example.com>\r\n"
        b"DATA\r\n"
    )
    heads = [(await client.reply()).head for _ in range(5)]
    assert heads == ["250 2.1.0", "250 2.1.5", "550 5.1.1", "250 2.1.5", "354"]
    # The end of the data and a whole second transaction in one more packet.
    await client.write(message + b".\r\nMAIL FROM:<dave@remote.example>\r\nRCPT TO:<bobby@example.com>\r\nDATA\r\n")
    heads = [(await client.reply()).head for _ in range(4)]
    assert heads == ["250 2.0.0", "250 2.1.0", "250 2.1.5", "354"]
    assert (await client.data_body(message)).head == "250 2.0.0"
    assert (await client.cmd("QUIT")).head == "221 2.0.0"
    await client.close()
    bob = await smtp.inbox("bob@example.com")
    alice = await smtp.inbox("alice@example.com")
    assert len(bob) == 2
    assert len(alice) == 1
    assert all(copy.endswith(message) for copy in [*bob, *alice])
    assert bob[1].startswith(b"Return-Path: <dave@remote.example>\r\n")
