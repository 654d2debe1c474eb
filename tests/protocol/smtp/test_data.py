"""The message text of DATA: transparency, the end marker however the client's writes split it, limits, vanishing."""

from __future__ import annotations

import asyncio
import re

from .conftest import Smtp
from .helpers import Client, assert_serves, make_message, message_count, wait_until


async def open_data(smtp: Smtp) -> Client:
    """A client on the MX port that has had its 354 for a message to bob."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    assert (await client.cmd("MAIL FROM:<carol@remote.example>")).head == "250 2.1.0"
    assert (await client.cmd("RCPT TO:<bob@example.com>")).head == "250 2.1.5"
    assert (await client.cmd("DATA")).head == "354"
    return client


async def test_dot_stuffed_lines_are_stored_without_their_extra_dot(smtp: Smtp) -> None:
    """Lines starting with '.', '..' or a lone '.' (sent stuffed) are stored exactly as the sender wrote them."""
    message = make_message(body=".hidden\r\n..two\r\n.\r\nmiddle\r\n...\r\n. \r\nend.\r\n.")
    client = await open_data(smtp)
    assert (await client.data_body(message)).head == "250 2.0.0"
    await client.close()
    (stored,) = await smtp.inbox("bob@example.com")
    assert stored.endswith(message + b"\r\n")


async def test_end_marker_split_across_writes(smtp: Smtp) -> None:
    """The final CRLF . CRLF arriving a byte at a time ends the data; the message is stored whole."""
    message = make_message(body="a body line\r\n" * 3000)
    client = await open_data(smtp)
    await client.write(message[:-2])
    for byte in b"\r\n.\r\n":
        await asyncio.sleep(0.02)
        await client.write(bytes([byte]))
    assert (await client.reply()).head == "250 2.0.0"
    await client.close()
    (stored,) = await smtp.inbox("bob@example.com")
    assert stored.endswith(message)


async def test_message_sent_a_few_bytes_at_a_time(smtp: Smtp) -> None:
    """A dot-stuffed message written in 3-byte pieces is stored byte for byte."""
    message = make_message(body="one\r\n.dot\r\n..\r\ntwo\r\n")
    stuffed = message.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    client = await open_data(smtp)
    for i in range(0, len(stuffed), 3):
        await client.write(stuffed[i : i + 3])
    assert (await client.reply()).head == "250 2.0.0"
    await client.close()
    (stored,) = await smtp.inbox("bob@example.com")
    assert stored.endswith(message)


async def test_bare_lf_dot_does_not_end_the_data(smtp: Smtp) -> None:
    """A '.' between bare LFs (or LF and CRLF) is message text, not the end marker; it is stored as sent."""
    message = make_message(body="before\n.\nafter\r\nagain\n.\r\nlast\r\n")
    client = await open_data(smtp)
    await client.write(message + b".\r\n")
    assert (await client.reply()).head == "250 2.0.0"
    await client.close()
    (stored,) = await smtp.inbox("bob@example.com")
    assert stored.endswith(message)


async def test_lone_dot_at_once_ends_an_empty_message(smtp: Smtp) -> None:
    """A '.' line right after the 354 ends the data at once: an empty message, stored with the trace fields only."""
    client = await open_data(smtp)
    await client.write(b".\r\n")
    assert (await client.reply()).head == "250 2.0.0"
    assert (await client.cmd("NOOP")).head == "250 2.0.0"
    await client.close()
    (stored,) = await smtp.inbox("bob@example.com")
    trace = rb"Return-Path: <carol@remote.example>\r\nAuthentication-Results: [^\r]*;\r\n(\t[^\r]*\r\n)*Received: "
    assert re.match(trace, stored)
    assert stored.endswith(b"\r\n")
    assert b"\r\n\r\n" not in stored


async def test_commands_pipelined_after_the_end_marker_are_answered(smtp: Smtp) -> None:
    """The end marker, a second transaction and QUIT in one write: every reply comes, in order, both stored."""
    first, second = make_message(subject="first"), make_message(subject="second")
    client = await open_data(smtp)
    await client.write(
        first
        + b".\r\nMAIL FROM:<carol@remote.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"
        + second
        + b".\r\nQUIT\r\n"
    )
    heads = [(await client.reply()).head for _ in range(5)]
    assert heads == ["250 2.0.0", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0"]
    assert (await client.reply()).head == "221 2.0.0"
    await client.close()
    stored = await smtp.inbox("bob@example.com")
    assert len(stored) == 2
    assert stored[0].endswith(first)
    assert stored[1].endswith(second)


async def test_oversize_message_in_small_writes_with_split_end_marker(smtp: Smtp) -> None:
    """A 300 KB message over a 100 KB limit, in 4 KB writes with its end marker split, gets 552; the next is stored."""
    smtp.cfg.smtp.max_message_size = 100_000
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    await client.cmd("MAIL FROM:<carol@remote.example>")
    await client.cmd("RCPT TO:<bob@example.com>")
    assert (await client.cmd("DATA")).head == "354"
    big = make_message(body="y" * 998 + "\r\n") + (b"y" * 998 + b"\r\n") * 300
    for i in range(0, len(big), 4096):
        await client.write(big[i : i + 4096])
    await client.write(b".")
    await asyncio.sleep(0.05)
    await client.write(b"\r\n")
    assert (await client.reply()).head == "552 5.3.4"
    assert await message_count(smtp) == 0
    small = make_message(subject="small")
    replies = await client.mail("carol@remote.example", ["bob@example.com"], small)
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
    await client.close()
    (stored,) = await smtp.inbox("bob@example.com")
    assert stored.endswith(small)


async def test_long_line_before_size_limit_gets_500(smtp: Smtp) -> None:
    """A message both over the size limit and with an over-long line early on gets 500 5.5.2 (the first fault)."""
    smtp.cfg.smtp.max_message_size = 50_000
    smtp.cfg.smtp.max_line_length = 2000
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    message = make_message(body="z" * 3000 + "\r\n") + (b"w" * 500 + b"\r\n") * 200
    replies = await client.mail("carol@remote.example", ["bob@example.com"], message)
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "500 5.5.2"]
    assert await message_count(smtp) == 0
    await client.close()
    await assert_serves(smtp)


async def test_client_vanishing_inside_the_end_marker_stores_nothing(smtp: Smtp) -> None:
    """A client that sends a message and half of the end marker ('CRLF .'), then closes, leaves nothing stored."""
    client = await open_data(smtp)
    await client.write(make_message() + b".")
    await client.close()
    await wait_until(lambda: not smtp.server.sessions, 3)
    await asyncio.sleep(0.2)
    assert await message_count(smtp) == 0
    await assert_serves(smtp)
