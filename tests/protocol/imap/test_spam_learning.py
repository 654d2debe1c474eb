"""IMAP MOVE and COPY into and out of Junk teach a real rspamd (tests/rspamd.py) through the SMTP daemon's learner."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from relate.spam.learner import Learner
from relate.spam.rspamd import Rspamd
from tests.daemons import free_port
from tests.rspamd import RspamdServer

from .conftest import Imap
from .helpers import make_message


@pytest.fixture
async def learner(imap: Imap, rspamd_server: RspamdServer) -> AsyncIterator[Learner]:
    """The learner the SMTP daemon runs, against the test's rspamd controller, looking every 0.1 s."""
    cfg = imap.cfg.smtp.rspamd
    cfg.url, cfg.controller_url = rspamd_server.url, rspamd_server.controller_url
    cfg.learn_interval = 0.1
    cfg.timeout = 30  # a shared machine may keep rspamd's answer waiting for seconds
    client = Rspamd(cfg)
    running = Learner(imap.pool, client, cfg)
    running.start()
    yield running
    await running.stop()
    await client.close()


def wordy(subject: str) -> bytes:
    """A message with enough words of its own for rspamd's Bayes to learn from (never seen before)."""
    words = " ".join(uuid.uuid4().hex[:8] for _ in range(60))
    return make_message(subject=subject, body=f"Dear friend,\r\n{words}\r\n")


async def learns_reach(rspamd_server: RspamdServer, count: int, wait: float = 45.0) -> int:
    """Wait until rspamd's /stat counts ``count`` lessons; the count it reached."""
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        found = await asyncio.to_thread(rspamd_server.learns)
        if found >= count or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.1)


async def pending(imap: Imap, expected: list[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
    """(wanted, learnt) of each queued lesson, once they are ``expected`` or after 10 s (rspamd counts a lesson
    a moment before the learner records it)."""
    found: list[tuple[str, str | None]] = []
    for _ in range(100):
        rows = await imap.pool.fetch("SELECT wanted, learnt FROM spam_learning ORDER BY updated_at")
        found = [(r["wanted"], r["learnt"]) for r in rows]
        if found == expected:
            break
        await asyncio.sleep(0.1)
    return found


async def test_move_into_junk_learns_spam_then_out_learns_ham(
    imap: Imap, rspamd_server: RspamdServer, learner: Learner
) -> None:
    """MOVE to Junk: rspamd learns it as spam (its /stat counts one more); MOVE back to INBOX: learnt as ham."""
    before = await asyncio.to_thread(rspamd_server.learns)
    await imap.deliver(wordy("win a prize"))
    client = await imap.connect(select="INBOX")
    await client.ok("MOVE 1 Junk")
    assert await learns_reach(rspamd_server, before + 1) == before + 1
    assert await pending(imap, [("spam", "spam")]) == [("spam", "spam")]
    client = await imap.connect(select="Junk")
    await client.ok("MOVE 1 INBOX")
    assert await learns_reach(rspamd_server, before + 2) == before + 2
    assert await pending(imap, [("ham", "ham")]) == [("ham", "ham")]


async def test_copies_into_junk_learn_once(imap: Imap, rspamd_server: RspamdServer, learner: Learner) -> None:
    """COPY to Junk twice, and MOVE to Trash from Junk: one lesson, spam; deleting spam teaches nothing."""
    before = await asyncio.to_thread(rspamd_server.learns)
    await imap.deliver(wordy("cheap watches"))
    client = await imap.connect(select="INBOX")
    await client.ok("COPY 1 Junk")
    assert await learns_reach(rspamd_server, before + 1) == before + 1
    await client.ok("COPY 1 Junk")
    junk = await imap.connect(select="Junk")
    await junk.ok("MOVE 1:* Trash")
    await asyncio.sleep(0.5)  # five rounds of the learner
    assert await asyncio.to_thread(rspamd_server.learns) == before + 1
    assert await pending(imap, [("spam", "spam")]) == [("spam", "spam")]


async def test_rspamd_down_retries_then_gives_up(imap: Imap, learner: Learner) -> None:
    """Controller out of reach: the lesson is tried learn_attempts times, then given up (due cleared)."""
    learner.cfg.controller_url = f"http://127.0.0.1:{free_port()}"
    learner.cfg.learn_attempts = 2
    await imap.deliver(wordy("never learnt"))
    client = await imap.connect(select="INBOX")
    await client.ok("MOVE 1 Junk")
    row = await attempted(imap, 1)
    assert row["attempts"] == 1
    assert row["last_error"]
    # The retry waits RETRY_STEP seconds; make it due now, as if that time had passed.
    await imap.pool.execute("UPDATE spam_learning SET due = now()")
    row = await attempted(imap, 2)
    assert row["attempts"] == 2
    assert row["due"] is None


async def attempted(imap: Imap, attempts: int) -> dict[str, Any]:
    """The one learning row, once it counts ``attempts`` failed calls (or after 10 s)."""
    row = None
    for _ in range(100):
        row = await imap.pool.fetchrow("SELECT attempts, due, last_error FROM spam_learning")
        if row is not None and row["attempts"] >= attempts:
            break
        await asyncio.sleep(0.1)
    assert row is not None
    return dict(row)


async def test_a_message_over_max_size_is_not_sent(imap: Imap, rspamd_server: RspamdServer, learner: Learner) -> None:
    """A message larger than smtp.rspamd.max_size moved to Junk is dropped from the queue, never sent."""
    learner.cfg.max_size = 1024
    before = await asyncio.to_thread(rspamd_server.learns)
    await imap.deliver(wordy("too long to learn") + b"z" * 2048 + b"\r\n")
    client = await imap.connect(select="INBOX")
    await client.ok("MOVE 1 Junk")
    row = None
    for _ in range(100):
        row = await imap.pool.fetchrow("SELECT due, last_error FROM spam_learning")
        if row is not None and row["due"] is None:
            break
        await asyncio.sleep(0.1)
    assert row is not None
    assert row["due"] is None
    assert "max_size" in row["last_error"]
    assert await asyncio.to_thread(rspamd_server.learns) == before
