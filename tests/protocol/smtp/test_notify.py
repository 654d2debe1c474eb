"""New-mail notifications to the API's Unix socket: what is posted, and that mail never waits for it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import Smtp
from .helpers import Client, make_message, run_session

KEY = "relate_internal_test"


@dataclass
class Request:
    line: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeApi:
    """A tiny HTTP/1.1 server on a Unix socket that records each request; ``hang`` makes it never answer."""

    path: Path
    requests: asyncio.Queue[Request] = field(default_factory=asyncio.Queue)
    hang: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *rest = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in rest if h)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            await self.requests.put(Request(line, headers, body))
            if self.hang:
                await self.release.wait()
            writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def next(self, wait: float = 5) -> Request:
        return await asyncio.wait_for(self.requests.get(), wait)


@pytest.fixture
async def api(smtp: Smtp, tmp_path: Path) -> AsyncIterator[FakeApi]:
    """The fake API listening, and the daemon's live config pointing at it with the internal key."""
    fake = FakeApi(tmp_path / "api.sock")
    server = await asyncio.start_unix_server(fake.handle, path=str(fake.path))
    smtp.cfg.internal.api_socket = fake.path
    smtp.cfg.internal.api_key = KEY
    yield fake
    await smtp.server.notifier.drain()
    fake.release.set()
    await asyncio.sleep(0.05)
    server.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.wait_closed(), 1)


async def stored_ids(smtp: Smtp, address: str) -> list[tuple[int, int]]:
    """(mailbox id, message id) of each message in the user's INBOX."""
    rows = await smtp.pool.fetch(
        """SELECT m.mailbox_id, m.id FROM messages m JOIN mailboxes x ON x.id = m.mailbox_id
             JOIN users u ON u.id = x.user_id WHERE u.address = $1 AND x.name = 'INBOX' ORDER BY m.uid""",
        address,
    )
    return [(r["mailbox_id"], r["id"]) for r in rows]


async def test_new_mail_is_posted_to_the_api(smtp: Smtp, api: FakeApi) -> None:
    """A delivery posts {mailboxId, emailId, from, subject} to /api/internal-notifications with the internal key."""
    message = make_message(sender="Carol <carol@remote.example>", subject="Grüße vom Rhein")
    replies = await run_session(smtp.mx, "bounces@remote.example", ["bob@example.com"], message)
    assert replies[-1].head == "250 2.0.0"
    request = await api.next()
    assert request.line == "POST /api/internal-notifications HTTP/1.1"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    ((mailbox_id, email_id),) = await stored_ids(smtp, "bob@example.com")
    assert json.loads(request.body) == {
        "mailboxId": mailbox_id,
        "emailId": email_id,
        "from": "carol@remote.example",
        "subject": "Grüße vom Rhein",
    }


async def test_one_notification_per_recipient_mailbox(smtp: Smtp, api: FakeApi) -> None:
    """One message to bob and alice is announced once for each INBOX, in one post; bob's two addresses once."""
    message = make_message(subject="for both")
    rcpts = ["bob@example.com", "bobby@example.com", "alice@example.com"]
    replies = await run_session(smtp.mx, "carol@remote.example", rcpts, message)
    assert replies[-1].head == "250 2.0.0"
    bodies = json.loads((await api.next()).body)["notifications"]
    expected = [*await stored_ids(smtp, "bob@example.com"), *await stored_ids(smtp, "alice@example.com")]
    assert sorted((b["mailboxId"], b["emailId"]) for b in bodies) == sorted(expected)
    assert all(b["subject"] == "for both" for b in bodies)
    await asyncio.sleep(0.2)
    assert api.requests.empty()


async def test_messages_committed_together_are_posted_together(smtp: Smtp, api: FakeApi) -> None:
    """Ten sessions delivering at once: every message is announced exactly once, in fewer than ten posts."""
    sessions = [
        run_session(smtp.mx, "carol@remote.example", ["bob@example.com"], make_message(subject=f"together {n}"))
        for n in range(10)
    ]
    assert [r[-1].head for r in await asyncio.gather(*sessions)] == ["250 2.0.0"] * 10
    await smtp.server.notifier.drain()
    posts = []
    while not api.requests.empty():
        posts.append(json.loads((await api.next()).body))
    announced = [n for p in posts for n in p.get("notifications", [p])]
    assert sorted((n["mailboxId"], n["emailId"]) for n in announced) == sorted(
        await stored_ids(smtp, "bob@example.com")
    )
    assert len(posts) < 10


async def test_submission_to_a_local_user_is_posted(smtp: Smtp, api: FakeApi) -> None:
    """A message alice submits to bob is posted for bob's INBOX, with alice as sender."""
    client = await Client.connect(smtp.submissions, tls=smtp.client_tls)
    await client.ehlo()
    assert (await client.auth_plain("alice@example.com", smtp.alice_key)).head == "235 2.7.0"
    message = make_message(sender="alice@example.com", subject="hi bob")
    replies = await client.mail("alice@example.com", ["bob@example.com"], message)
    assert replies[-1].head == "250 2.0.0"
    body = json.loads((await api.next()).body)
    ((mailbox_id, email_id),) = await stored_ids(smtp, "bob@example.com")
    assert body == {"mailboxId": mailbox_id, "emailId": email_id, "from": "alice@example.com", "subject": "hi bob"}


async def test_mail_is_accepted_promptly_without_an_api(
    smtp: Smtp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With nothing listening on the API socket, mail is still accepted within a second, and the failure is logged."""
    caplog.set_level(logging.WARNING, logger="relate.notify")
    smtp.cfg.internal.api_socket = tmp_path / "nobody-listens.sock"
    smtp.cfg.internal.api_key = KEY
    started = time.monotonic()
    for n in range(3):
        message = make_message(subject=f"no api {n}")
        replies = await run_session(smtp.mx, "carol@remote.example", ["bob@example.com"], message)
        assert replies[-1].head == "250 2.0.0"
    assert time.monotonic() - started < 1
    assert len(await smtp.inbox("bob@example.com")) == 3
    await smtp.server.notifier.drain()
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("notify-failed")]
    assert len(warnings) == 1  # at most once a minute


async def test_mail_is_accepted_promptly_when_the_api_hangs(smtp: Smtp, api: FakeApi) -> None:
    """An API that accepts the post and never answers does not hold up the 250 (notify_timeout bounds the post)."""
    api.hang = True
    smtp.cfg.internal.notify_timeout = 0.5
    started = time.monotonic()
    replies = await run_session(smtp.mx, "carol@remote.example", ["bob@example.com"], make_message())
    assert replies[-1].head == "250 2.0.0"
    assert time.monotonic() - started < 1
    await api.next()
    drained = time.monotonic()
    await smtp.server.notifier.drain()
    assert time.monotonic() - drained < 1


async def test_no_internal_key_no_post(smtp: Smtp, api: FakeApi) -> None:
    """Without an internal key configured, nothing is posted, and mail is delivered as usual."""
    smtp.cfg.internal.api_key = None
    replies = await run_session(smtp.mx, "carol@remote.example", ["bob@example.com"], make_message())
    assert replies[-1].head == "250 2.0.0"
    await asyncio.sleep(0.2)
    assert api.requests.empty()
    assert len(await smtp.inbox("bob@example.com")) == 1
