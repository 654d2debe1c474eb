"""Memory per message in flight: DATA spools to an unlinked file, nothing kept past the limit, a full budget is 452."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

from .conftest import Smtp
from .helpers import Client, dot_stuff, make_message, message_count, wait_until


def spool_files() -> list[str]:
    """Unlinked temporary files this process (the daemon under test) has open."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.endswith("(deleted)"):
            found.append(target)
    return found


async def start_data(smtp: Smtp, options: str = "") -> Client:
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    assert (await client.cmd(f"MAIL FROM:<carol@remote.example>{options}")).head == "250 2.1.0"
    assert (await client.cmd("RCPT TO:<bob@example.com>")).head == "250 2.1.5"
    assert (await client.cmd("DATA")).head == "354"
    return client


async def test_large_message_goes_through_an_unlinked_spool_file(smtp: Smtp) -> None:
    """A 6 MB message is in an unlinked temporary file while it arrives, stored byte for byte, and the file is gone."""
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.." + b"\r\n"
    message = make_message(body=(line * 80_000).decode())
    stuffed = dot_stuff(message)
    before = spool_files()
    client = await start_data(smtp)
    half = len(stuffed) // 2
    await client.write(stuffed[:half])
    assert await wait_until(lambda: len(spool_files()) > len(before))
    await client.write(stuffed[half:] + b".\r\n")
    assert (await client.reply(wait=60)).head == "250 2.0.0"
    await client.close()
    (stored,) = await smtp.inbox("bob@example.com")
    assert stored.endswith(message)
    assert await wait_until(lambda: spool_files() == before)


async def test_nothing_is_kept_past_the_size_limit(smtp: Smtp) -> None:
    """Past max_message_size (no SIZE= given) the spool is let go at once; the end of the data gets 552."""
    smtp.cfg.smtp.max_message_size = 1_000_000
    before = spool_files()
    client = await start_data(smtp)
    chunk = b"y" * 998 + b"\r\n"
    await client.write(chunk * 500)  # 0.5 MB: spooled to a file already
    assert await wait_until(lambda: len(spool_files()) > len(before))
    await client.write(chunk * 1500)  # 2 MB in all: over the limit
    assert await wait_until(lambda: spool_files() == before)
    await client.write(chunk * 1000 + b".\r\n")
    assert (await client.reply()).head == "552 5.3.4"
    replies = await client.mail("carol@remote.example", ["bob@example.com"], make_message())
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
    await client.close()
    assert await message_count(smtp) == 1


async def test_full_memory_budget_is_452_and_then_mail_flows(smtp: Smtp, caplog: pytest.LogCaptureFixture) -> None:
    """With the memory budget taken, a message gets 452 4.3.1 after memory_wait, nothing stored; then 250 again."""
    caplog.set_level(logging.INFO, logger="relate.smtp")
    smtp.cfg.smtp.memory_wait = 0.3
    budget = smtp.server.budget
    held = await budget.acquire(budget.limit, wait=1)
    try:
        client = await start_data(smtp)
        started = asyncio.get_running_loop().time()
        assert (await client.data_body(make_message())).head == "452 4.3.1"
        assert asyncio.get_running_loop().time() - started >= 0.3
        assert await message_count(smtp) == 0
    finally:
        budget.release(held)
    replies = await client.mail("carol@remote.example", ["bob@example.com"], make_message(subject="later"))
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
    await client.close()
    assert await message_count(smtp) == 1
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("smtp-tempfail")]
    assert "stage=data error=memory-budget" in line
    assert budget.in_use == 0
