"""New mail is announced by the change feed at commit, as a delivery or as the sender's own copy; no HTTP call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from relate.store import changes

from .conftest import Smtp
from .helpers import Client, make_message, run_session


class Heard:
    """A LISTEN on the mail channel, as every relate-api and IMAP process holds one."""

    def __init__(self) -> None:
        self.changes: asyncio.Queue[changes.MailChange] = asyncio.Queue()

    def on(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        change = changes.parse_mail(payload)
        if change is not None and change.event == "new":
            self.changes.put_nowait(change)

    async def new(self, count: int) -> list[changes.MailChange]:
        """The next ``count`` "new" changes, then nothing more for a moment."""
        got = [await asyncio.wait_for(self.changes.get(), 5) for _ in range(count)]
        await asyncio.sleep(0.2)
        assert self.changes.empty()
        return got


@pytest.fixture
async def heard(smtp: Smtp) -> AsyncIterator[Heard]:
    listener = Heard()
    conn: asyncpg.Connection = await smtp.pool.acquire()
    await conn.add_listener(changes.MAIL, listener.on)
    yield listener
    await conn.remove_listener(changes.MAIL, listener.on)
    await smtp.pool.release(conn)


async def stored_ids(smtp: Smtp, address: str, folder: str = "INBOX") -> list[tuple[int, int]]:
    """(mailbox id, message id) of each message in the user's folder."""
    rows = await smtp.pool.fetch(
        """SELECT m.mailbox_id, m.id FROM messages m JOIN mailboxes x ON x.id = m.mailbox_id
             JOIN users u ON u.id = x.user_id WHERE u.address = $1 AND x.name = $2 ORDER BY m.uid""",
        address,
        folder,
    )
    return [(r["mailbox_id"], r["id"]) for r in rows]


async def test_mx_delivery_is_announced_once_per_mailbox_as_a_delivery(smtp: Smtp, heard: Heard) -> None:
    """One message to bob (two of his addresses) and alice: one "new" change per INBOX, each marked a delivery."""
    message = make_message(subject="for both")
    rcpts = ["bob@example.com", "bobby@example.com", "alice@example.com"]
    replies = await run_session(smtp.mx, "carol@remote.example", rcpts, message)
    assert replies[-1].head == "250 2.0.0"
    got = await heard.new(2)
    expected = [*await stored_ids(smtp, "bob@example.com"), *await stored_ids(smtp, "alice@example.com")]
    assert sorted((c.mailbox, c.id) for c in got) == sorted(expected)
    assert all(c.delivered for c in got)


async def test_messages_committed_together_are_each_announced(smtp: Smtp, heard: Heard) -> None:
    """Ten sessions delivering at once (one group commit): every message is announced exactly once."""
    sessions = [
        run_session(smtp.mx, "carol@remote.example", ["bob@example.com"], make_message(subject=f"together {n}"))
        for n in range(10)
    ]
    assert [r[-1].head for r in await asyncio.gather(*sessions)] == ["250 2.0.0"] * 10
    got = await heard.new(10)
    assert sorted((c.mailbox, c.id) for c in got) == sorted(await stored_ids(smtp, "bob@example.com"))
    assert all(c.delivered for c in got)


async def test_submission_delivers_to_bob_and_files_alices_own_copy(smtp: Smtp, heard: Heard) -> None:
    """Alice submits to bob: bob's copy is announced as a delivery, her Sent copy as her own (no push for it)."""
    client = await Client.connect(smtp.submissions, tls=smtp.client_tls)
    await client.ehlo()
    assert (await client.auth_plain("alice@example.com", smtp.alice_key)).head == "235 2.7.0"
    message = make_message(sender="alice@example.com", subject="hi bob")
    replies = await client.mail("alice@example.com", ["bob@example.com"], message)
    assert replies[-1].head == "250 2.0.0"
    got = {(c.mailbox, c.id): c for c in await heard.new(2)}
    (bobs,) = await stored_ids(smtp, "bob@example.com")
    (sent,) = await stored_ids(smtp, "alice@example.com", "Sent")
    assert set(got) == {bobs, sent}
    assert got[bobs].delivered
    assert not got[sent].delivered
