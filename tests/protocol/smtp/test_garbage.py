"""Garbage at a real session, commands and message text alike, while a well-behaved client sends mail beside it."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from .conftest import Smtp
from .helpers import Client, make_message

TOKENS = [
    "MAIL", "RCPT", "DATA", "EHLO", "HELO", "AUTH", "RSET", "NOOP", "QUIT", "VRFY", "STARTTLS", "FROM:", "TO:",
    "<", ">", "@", ":", ",", ".", '"', "\\", "=", " ", "  ", "SIZE=", "BODY=8BITMIME", "SMTPUTF8", "postmaster",
    "bob@example.com", "<>", "[127.0.0.1]", "é", "\x00", "\x7f", "\xff", "\t", "PLAIN", "LOGIN", "=?utf-8?q?x?=",
]  # fmt: skip


PREFIXES = ["MAIL FROM:", "RCPT TO:", "MAIL FROM:<", "RCPT TO:<", "EHLO ", "AUTH ", "VRFY ", "MAIL ", "RCPT "]


def garbage_line(rng: random.Random) -> bytes:
    """One line of garbage: random bytes, or a verb and the grammar's own tokens in a random order."""
    if rng.random() < 0.3:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300))).replace(b"\n", b" ")
    text = rng.choice(PREFIXES) if rng.random() < 0.7 else ""
    text += "".join(rng.choice(TOKENS) for _ in range(rng.randrange(0, 25)))
    return text.encode("utf-8", "surrogateescape") if rng.random() < 0.8 else text.encode("latin-1", "replace")


def garbage_message(rng: random.Random) -> bytes:
    """Message text with lone dots, bare CRs and LFs, NULs, long and empty lines, 8-bit bytes; CRLF at the end."""
    parts = []
    for _ in range(rng.randrange(1, 60)):
        kind = rng.random()
        if kind < 0.2:
            parts.append(rng.choice([b".", b"..", b". ", b"\r", b"\n", b"\x00", b"\r\r\n", b"From: <"]))
        elif kind < 0.3:
            parts.append(b"x" * rng.randrange(0, 3000))
        else:
            parts.append(bytes(rng.randrange(1, 256) for _ in range(rng.randrange(0, 200))))
        parts.append(b"\r\n" if rng.random() < 0.7 else b"")
    body = b"".join(parts)
    # Never the terminator inside: the sender would have ended the data there.
    return body.replace(b"\r\n.\r\n", b"\r\n..\r\n") + b"\r\n"


async def send_garbage(smtp: Smtp, rng: random.Random, lines: int) -> list[str]:
    """``lines`` garbage commands, and now and then a message of garbage; every reply head seen."""
    heads: list[str] = []
    client = await Client.connect(smtp.mx)
    sent = 0
    while sent < lines:
        try:
            if rng.random() < 0.2:
                # Inside a transaction, so RCPT's garbage reaches RCPT's handler.
                await client.cmd("EHLO garbage.example")
                heads.append((await client.cmd("MAIL FROM:<g@remote.example>")).head)
            elif rng.random() < 0.1:
                await client.cmd("EHLO garbage.example")
                for command in ("MAIL FROM:<g@remote.example>", "RCPT TO:<bob@example.com>", "DATA"):
                    heads.append((await client.cmd(command)).head)
                if heads[-1] == "354":
                    await client.write(garbage_message(rng) + b".\r\n")
                    heads.append((await client.reply()).head)
            else:
                heads.append((await client.cmd(garbage_line(rng))).head)
            sent += 1
        except ConnectionError:
            heads.append("closed")
            await client.close()
            client = await Client.connect(smtp.mx)
    await client.close()
    return heads


async def send_normally(smtp: Smtp, stop: asyncio.Event) -> list[list[str]]:
    """Messages to bob, one transaction after another on one connection, until ``stop``; each one's replies."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    results: list[list[str]] = []
    n = 0
    while not stop.is_set() or n < 3:
        n += 1
        replies = await client.mail("carol@remote.example", ["bob@example.com"], make_message(subject=f"normal {n}"))
        results.append([r.head for r in replies])
    assert (await client.cmd("QUIT")).head == "221 2.0.0"
    await client.close()
    return results


async def test_garbage_beside_a_normal_client(smtp: Smtp, caplog: pytest.LogCaptureFixture) -> None:
    """400 garbage lines and messages get only 2xx/3xx/5xx (or a 421/502 hang-up); the other client never errs."""
    caplog.set_level(logging.INFO, logger="relate")
    smtp.cfg.smtp.max_connections_per_client = 100
    stop = asyncio.Event()
    normal = asyncio.ensure_future(send_normally(smtp, stop))
    try:
        heads = await send_garbage(smtp, random.Random(12), 400)
    finally:
        stop.set()
    results = await normal
    assert results
    assert all(result == ["250 2.1.0", "250 2.1.5", "250 2.0.0"] for result in results), results
    assert len(await smtp.inbox("bob@example.com")) >= len(results)
    temporary = [h for h in heads if h.startswith("4") and h not in ("421 4.7.0",)]
    assert temporary == [], temporary
    assert any(h == "250 2.0.0" for h in heads)  # some garbage messages were taken, as they should be
    assert not [r for r in caplog.records if r.getMessage().startswith(("smtp-error", "smtp-tempfail"))]
    assert not [r for r in caplog.records if r.exc_info]
