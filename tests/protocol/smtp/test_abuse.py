"""Hostile and broken clients: each is answered or dropped cleanly, and the next client is served normally."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import ssl
import time

import asyncpg
import pytest

from relate.auth import Authenticator
from relate.config import Config
from relate.smtp.server import SmtpServer

from .conftest import Smtp
from .helpers import Client, assert_serves, make_message, message_count, wait_until

REPLY_LINE = re.compile(r"^\d{3}[ -]")


async def read_all(client: Client, wait: float = 5) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    deadline = time.monotonic() + wait
    with pytest.raises((ConnectionError, EOFError, ssl.SSLError, StopAsyncIteration)):  # noqa: PT012
        while True:
            chunk = await asyncio.wait_for(client.reader.read(65536), max(0.01, deadline - time.monotonic()))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
    return b"".join(chunks)


async def wait_for_no_sessions(smtp: Smtp, wait: float = 3) -> None:
    """The daemon has let go of every connection (its per-client counts are back to zero)."""
    await wait_until(lambda: not smtp.server.sessions, wait)
    assert not smtp.server.sessions


async def test_binary_junk_commands(smtp: Smtp) -> None:
    """Random bytes with NULs as commands get 5xx replies that echo nothing; then the daemon serves a new client."""
    rng = random.Random(2034)
    junk = bytes(rng.randrange(256) for _ in range(8192)).replace(b"\n", b"\0")
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    for start in range(0, len(junk), 512):
        await client.write(junk[start : start + 512] + b"\r\n")
    await client.write(b"\x00\x00\x00\r\n\xff\xfe\r\nQUIT\r\n")
    output = await read_all(client)
    lines = output.decode("ascii").split("\r\n")
    assert lines[-1] == ""
    assert lines[:-1]
    for line in lines[:-1]:
        assert REPLY_LINE.match(line), line
        assert line.startswith(("500 5.5.2 ", "502 5.5.1 ", "221 2.0.0 ")), line
    await client.close()
    await assert_serves(smtp)


async def test_megabyte_line_without_crlf(smtp: Smtp) -> None:
    """A 1 MB command line gets 500 5.5.2 once its CRLF comes, and the same session then delivers a message."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    await client.write(b"MAIL FROM:<" + b"a" * (1 << 20))
    await asyncio.sleep(0.1)
    assert (await client.cmd(b">")).head == "500 5.5.2"
    assert (await client.cmd("NOOP")).head == "250 2.0.0"
    replies = await client.mail("carol@remote.example", ["bob@example.com"], make_message())
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
    await client.close()
    assert len(await smtp.inbox("bob@example.com")) == 1


async def test_unknown_commands_are_refused_without_echo(smtp: Smtp) -> None:
    """Unknown commands (an HTTP request too) get 500 5.5.2 without echoing them; the session goes on."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    for line in ["XYZZY", "GET / HTTP/1.1", "Host: mail.example.com", "<script>alert(1)</script>"]:
        reply = await client.cmd(line)
        assert reply.head == "500 5.5.2", line
        assert "XYZZY" not in reply.text
        assert "script" not in reply.text
        assert "GET" not in reply.text
    replies = await client.mail("carol@remote.example", ["bob@example.com"], make_message())
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
    await client.close()


async def test_too_many_unknown_commands_end_the_session(smtp: Smtp) -> None:
    """The fifth unknown command in a session gets 502 5.5.1 and the connection is closed; others are served."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    for n in range(4):
        assert (await client.cmd(f"BOGUS{n}")).head == "500 5.5.2"
    assert (await client.cmd("BOGUS4")).head == "502 5.5.1"
    assert await client.closed()
    await client.close()
    await assert_serves(smtp)


async def test_client_vanishing_mid_data_stores_nothing(smtp: Smtp) -> None:
    """A client that sends DATA and half a message, then closes, leaves nothing stored."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    assert (await client.cmd("MAIL FROM:<carol@remote.example>")).head == "250 2.1.0"
    assert (await client.cmd("RCPT TO:<bob@example.com>")).head == "250 2.1.5"
    assert (await client.cmd("DATA")).head == "354"
    await client.write(make_message()[:60])
    await client.close()
    await wait_for_no_sessions(smtp)
    await asyncio.sleep(0.2)
    assert await message_count(smtp) == 0
    await assert_serves(smtp)
    assert len(await smtp.inbox("bob@example.com")) == 1


async def test_client_reset_mid_data_stores_nothing(smtp: Smtp) -> None:
    """A client that resets the connection (RST) in the middle of the data leaves nothing stored."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    await client.cmd("MAIL FROM:<carol@remote.example>")
    await client.cmd("RCPT TO:<bob@example.com>")
    assert (await client.cmd("DATA")).head == "354"
    await client.write(make_message() + b"more...\r\n")
    client.writer.transport.abort()
    await wait_for_no_sessions(smtp)
    assert await message_count(smtp) == 0
    await assert_serves(smtp)


async def test_idle_clients_are_disconnected(smtp: Smtp) -> None:
    """With command_timeout 0.5 s, a silent client, one that stops mid-transaction or mid-data is disconnected."""
    smtp.cfg.smtp.command_timeout = 0.5
    smtp.cfg.smtp.data_timeout = 0.5
    silent = await Client.connect(smtp.mx)
    mid_transaction = await Client.connect(smtp.submission)
    await mid_transaction.ehlo()
    mid_data = await Client.connect(smtp.mx)
    await mid_data.ehlo()
    await mid_data.cmd("MAIL FROM:<carol@remote.example>")
    await mid_data.cmd("RCPT TO:<bob@example.com>")
    assert (await mid_data.cmd("DATA")).head == "354"
    await mid_data.write(make_message()[:40])
    started = time.monotonic()
    results = await asyncio.gather(*(c.closed(wait=3) for c in (silent, mid_transaction, mid_data)))
    assert results == [True, True, True]
    assert time.monotonic() - started < 2.5
    await wait_for_no_sessions(smtp)
    assert await message_count(smtp) == 0
    smtp.cfg.smtp.command_timeout = 300
    await assert_serves(smtp)


async def test_idle_after_starttls_go_ahead_is_disconnected(smtp: Smtp) -> None:
    """A client that sends STARTTLS and then never starts the handshake is disconnected after command_timeout."""
    smtp.cfg.smtp.command_timeout = 0.5
    client = await Client.connect(smtp.submission)
    await client.ehlo()
    assert (await client.cmd("STARTTLS")).head == "220"
    started = time.monotonic()
    assert await client.closed(wait=3)
    assert time.monotonic() - started < 2


async def test_starttls_timeout_releases_the_connection_slot(smtp: Smtp) -> None:
    """After two clients time out mid-STARTTLS (limit 2 per client), a third client from that address is served."""
    smtp.cfg.smtp.command_timeout = 0.5
    smtp.cfg.smtp.max_connections_per_client = 2
    stuck = [await Client.connect(smtp.submission) for _ in range(2)]
    for client in stuck:
        await client.ehlo()
        assert (await client.cmd("STARTTLS")).head == "220"
    assert await asyncio.gather(*(c.closed(wait=3) for c in stuck)) == [True, True]
    await asyncio.sleep(0.3)
    fresh = await Client.connect(smtp.mx)
    assert fresh.greeting is not None
    assert fresh.greeting.head == "220"


async def test_idle_before_implicit_tls_handshake_is_disconnected(pool: asyncpg.Pool, smtp_config: Config) -> None:
    """A client that connects to 465 and never sends a ClientHello is disconnected after command_timeout."""
    smtp_config.smtp.command_timeout = 0.5
    server = SmtpServer(smtp_config, pool, Authenticator(pool, smtp_config.auth))
    await server.start()
    try:
        client = await Client.connect(server.addresses("submissions")[0][1], greet=False)
        assert await client.closed(wait=1.5)
    finally:
        await server.stop(grace=1)


async def test_two_hundred_concurrent_sessions(smtp: Smtp) -> None:
    """200 connections open at once from one address (limit raised to 300) are all greeted, EHLO'd and QUIT."""
    smtp.cfg.smtp.max_connections_per_client = 300
    clients: list[Client] = []
    for _ in range(4):
        clients += await asyncio.gather(*(Client.connect(smtp.mx) for _ in range(50)))
    assert all(c.greeting is not None and c.greeting.head == "220" for c in clients)
    assert len(smtp.server.sessions) == 200

    async def ehlo_quit(client: Client) -> tuple[int, str]:
        ehlo = await client.ehlo()
        bye = await client.cmd("QUIT")
        return ehlo.code, bye.head

    results = await asyncio.gather(*(ehlo_quit(c) for c in clients))
    assert results == [(250, "221 2.0.0")] * 200
    for client in clients:
        await client.close()
    await wait_for_no_sessions(smtp)
    await assert_serves(smtp)


async def test_per_client_connection_limit(smtp: Smtp, caplog: pytest.LogCaptureFixture) -> None:
    """With 3 connections per client the 4th (any port) gets 421 4.7.0 and is closed; after one ends, one more fits."""
    caplog.set_level(logging.WARNING, logger="relate.smtp")
    smtp.cfg.smtp.max_connections_per_client = 3
    first = [await Client.connect(port) for port in (smtp.mx, smtp.mx, smtp.submission)]
    assert all(c.greeting is not None and c.greeting.head == "220" for c in first)
    for port in (smtp.mx, smtp.submission):
        extra = await Client.connect(port)
        assert extra.greeting is not None
        assert extra.greeting.head == "421 4.7.0"
        assert await extra.closed()
        await extra.close()
    refused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("smtp-refused")]
    assert [line.split()[1:3] for line in refused] == [
        ["client=127.0.0.1", "role=mx"],
        ["client=127.0.0.1", "role=submission"],
    ]
    # The ones admitted still work.
    assert (await first[0].ehlo()).code == 250
    assert (await first[0].cmd("QUIT")).head == "221 2.0.0"
    await first[0].close()
    await wait_until(lambda: len(smtp.server.sessions) == 2)
    again = await Client.connect(smtp.mx)
    assert again.greeting is not None
    assert again.greeting.head == "220"
    await again.ehlo()
    replies = await again.mail("carol@remote.example", ["bob@example.com"], make_message())
    assert [r.head for r in replies][1:] == ["250 2.1.5", "250 2.0.0"]


async def test_tls_handshake_failures(smtp: Smtp) -> None:
    """Plain text on 465, and garbage instead of a ClientHello after STARTTLS, are dropped; nothing leaks."""
    smtp.cfg.smtp.max_connections_per_client = 2
    for _ in range(3):
        plain = await Client.connect(smtp.submissions, greet=False)
        await plain.write(b"EHLO client.example.org\r\nMAIL FROM:<alice@example.com>\r\n")
        assert await plain.closed()
        await plain.close()

        client = await Client.connect(smtp.submission)
        await client.ehlo()
        assert (await client.cmd("STARTTLS")).head == "220"
        await client.write(b"\x16\x03\x01\x00\x05hello" + bytes(range(256)) * 4 + b"\r\nEHLO x\r\n")
        output = await read_all(client)
        assert b"250" not in output
        await client.close()

        mx = await Client.connect(smtp.mx)
        await mx.ehlo()
        assert (await mx.cmd("STARTTLS")).head == "220"
        await mx.write(b"EHLO plain-after-starttls\r\n")
        assert b"250" not in await read_all(mx)
        await mx.close()
    # Every failed session was released: the per-client limit of 2 still admits new clients.
    await wait_for_no_sessions(smtp)
    await assert_serves(smtp)
    tls = await Client.connect(smtp.submissions, tls=smtp.client_tls)
    assert (await tls.ehlo()).code == 250
    assert (await tls.auth_plain("alice@example.com", smtp.alice_key)).head == "235 2.7.0"
    starttls = await Client.connect(smtp.submission)
    await starttls.ehlo()
    await starttls.starttls(smtp.client_tls)
    assert (await starttls.ehlo()).code == 250
