"""The WebSocket hub: who hears what, from which change, on which instance."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import imaplib
import itertools
import json
import logging
import os
import smtplib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relate.api.hub import CLIENT_QUEUE, HUB, Hub
from relate.api.server import ApiServer
from relate.auth import Authenticator
from relate.config import ListenerConfig
from relate.runtime.daemon import Context
from relate.smtp.server import SmtpServer
from relate.store.changes import APPLICATION_NAME
from tests.api.conftest import Api, imap_port, message

Event = dict[str, Any]
_instances = itertools.count(2)


async def start_api(api: Api, tmp_path: Path, **changes: Any) -> ApiServer:
    """Start a second API daemon on the same database, with its own socket.

    ``changes`` are ``section__key=value`` settings, e.g. ``api__websocket_heartbeat=1.0``.
    """
    cfg = copy.deepcopy(api.cfg)
    cfg.internal.api_socket = tmp_path / f"api-{next(_instances)}.sock"
    for name, value in changes.items():
        section, key = name.split("__")
        setattr(getattr(cfg, section), key, value)
    ctx = Context(
        cfg=cfg,
        pool=api.pool,
        authenticator=Authenticator(api.pool, cfg.auth, internal_key=cfg.internal.api_key),
    )
    server = ApiServer(ctx)
    await server.start()
    return server


@contextlib.asynccontextmanager
async def another_api(api: Api, tmp_path: Path, **changes: Any) -> AsyncIterator[tuple[ApiServer, str]]:
    """A second API daemon on the same database (see :func:`start_api`); yields it and its base URL."""
    server = await start_api(api, tmp_path, **changes)
    try:
        yield server, f"http://127.0.0.1:{server.addresses()[0][1]}"
    finally:
        await server.stop()


def hub_of(server: ApiServer) -> Hub:
    return server.app[HUB]


@contextlib.asynccontextmanager
async def hub_client(api: Api, key: str | None = None, url: str | None = None) -> AsyncIterator[Events]:
    """A WebSocket client on /hubs/email, authenticated with ``key`` (alice's app key by default)."""
    async with api.session.ws_connect((url or api.url) + "/hubs/email", headers=api.auth(key or api.alice)) as ws:
        yield Events(ws)


class Events:
    """The events one hub connection receives, in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def next(self, kind: str | None = None, wait: float = 3.0) -> Event:
        """The next event (of ``kind``, skipping others); fails after ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while True:
            msg = await self.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            event: Event = json.loads(msg.data)
            if kind is None or event["type"] == kind:
                return event

    async def during(self, seconds: float) -> list[Event]:
        """Every event received in the next ``seconds``."""
        found = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await self.ws.receive(timeout=left)
            except TimeoutError:
                break
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            found.append(json.loads(msg.data))
        return found


@contextlib.asynccontextmanager
async def smtp_mx(api: Api) -> AsyncIterator[int]:
    """The SMTP daemon's MX role on loopback, on the API's database; yields the port."""
    cfg = copy.deepcopy(api.cfg)
    cfg.smtp.mx = ListenerConfig(listen=["127.0.0.1:0"])
    cfg.smtp.submission = ListenerConfig(listen=[])
    cfg.smtp.submissions = ListenerConfig(listen=[])
    server = SmtpServer(
        cfg,
        api.pool,
        Authenticator(api.pool, cfg.auth),
    )
    await server.start()
    try:
        yield server.addresses("mx")[0][1]
    finally:
        await server.stop(grace=1)


def send_mail(port: int, rcpt: str, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("sender@remote.example", [rcpt], message(subject, to=rcpt))


async def inbox_id(api: Api, key: str | None = None) -> int:
    status, body = await api.call("GET", "/api/mailboxes", key)
    assert status == 200
    return int(body["items"][0]["id"])


async def test_smtp_delivery_reaches_the_owner_once_within_200ms(api: Api) -> None:
    """Mail taken by SMTP is a NewEmail to its owner's socket within 200 ms, once, and nothing to others."""
    async with smtp_mx(api) as port, hub_client(api) as alice, hub_client(api, api.bob) as bob:
        await asyncio.to_thread(send_mail, port, "bob@example.com", "for bob")
        await asyncio.to_thread(send_mail, port, "alice@example.com", "for alice")
        sent = time.monotonic()
        event = await alice.next("NewEmail")
        latency = time.monotonic() - sent
        assert event["data"]["subject"] == "for alice"
        assert event["data"]["from"] == {"name": "Sender", "email": "sender@remote.example"}
        assert event["data"]["isRead"] is False
        assert latency < 0.2, f"NewEmail took {latency * 1000:.0f} ms"
        # One NewEmail, nothing more of it later.
        later = await alice.during(0.5)
        assert [e for e in later if e["type"] == "NewEmail"] == []
        counts = [e["data"] for e in later if e["type"] == "UnreadCountChanged"]
        assert {"mailboxId": event["data"]["mailboxId"], "unread": 1} in counts
        bob_events = await bob.during(0.3)
        assert [e["data"]["subject"] for e in bob_events if e["type"] == "NewEmail"] == ["for bob"]


async def test_rest_patch_sends_email_updated_and_unread_count(api: Api) -> None:
    """Marking a message read over REST tells the socket its new flags and the inbox's unread count."""
    (email_id,) = await api.deliver(message("read me"), "alice@example.com")
    await api.deliver(message("still unread"), "alice@example.com")
    inbox = await inbox_id(api)
    async with hub_client(api) as alice:
        status, _ = await api.call("PATCH", f"/api/emails/{email_id}", json={"isRead": True})
        assert status == 200
        updated = await alice.next("EmailUpdated")
        assert updated["data"] == {"id": email_id, "mailboxId": inbox, "flags": ["\\Seen"], "isRead": True}
        count = await alice.next("UnreadCountChanged")
        assert count["data"] == {"mailboxId": inbox, "unread": 1}


async def test_imap_store_sends_email_updated(api: Api) -> None:
    """A flag set by an IMAP client (STORE) reaches the socket as EmailUpdated with the unread count."""
    (email_id,) = await api.deliver(message("flag me"), "alice@example.com")

    def store() -> None:
        client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
        try:
            client.login("alice@example.com", api.alice_imap)
            client.select("INBOX")
            client.store("1", "+FLAGS", "(\\Seen \\Flagged)")
        finally:
            client.logout()

    async with imap_port(api) as port, hub_client(api) as alice:
        await asyncio.to_thread(store)
        updated = await alice.next("EmailUpdated")
        assert updated["data"]["id"] == email_id
        assert sorted(updated["data"]["flags"]) == ["\\Flagged", "\\Seen"]
        assert updated["data"]["isRead"] is True
        assert (await alice.next("UnreadCountChanged"))["data"]["unread"] == 0


async def test_delete_sends_email_moved_to_trash_then_email_deleted(api: Api) -> None:
    """Deleting over REST moves to Trash under the same id (EmailMoved, both unread counts); deleting from Trash
    expunges (EmailDeleted)."""
    (email_id,) = await api.deliver(message("bye"), "alice@example.com")
    inbox = await inbox_id(api)
    async with hub_client(api) as alice:
        status, body = await api.call("DELETE", f"/api/emails/{email_id}")
        assert status == 200
        assert body["id"] == email_id
        trash = body["mailboxId"]
        events = [await alice.next() for _ in range(3)]
        moved = [e["data"] for e in events if e["type"] == "EmailMoved"]
        assert moved == [{"ids": [email_id], "mailboxId": trash, "fromMailboxId": inbox}]
        counts = {e["data"]["mailboxId"]: e["data"]["unread"] for e in events if e["type"] == "UnreadCountChanged"}
        assert counts == {inbox: 0, trash: 1}
        status, _ = await api.call("DELETE", f"/api/emails/{email_id}")
        assert status == 200
        gone = await alice.next("EmailDeleted")
        assert gone["data"] == {"ids": [email_id], "mailboxId": trash}


async def test_delivery_status_changed_from_notify(api: Api) -> None:
    """A NOTIFY on relate_delivery reaches the owner's socket as DeliveryStatusChanged, and no one else's."""
    alice_id = await api.pool.fetchval("SELECT id FROM users WHERE address = 'alice@example.com'")
    async with hub_client(api) as alice, hub_client(api, api.bob) as bob:
        payload = json.dumps({"user": alice_id, "id": 42, "status": "sent"})
        await api.pool.execute("SELECT pg_notify('relate_delivery', $1)", payload)
        event = await alice.next("DeliveryStatusChanged")
        assert event["data"] == {"id": 42, "status": "sent"}
        assert await bob.during(0.3) == []


async def test_two_instances_hear_each_others_changes(api: Api, tmp_path: Path) -> None:
    """A client of one API instance hears a change made through another, and mail delivered meanwhile."""
    (email_id,) = await api.deliver(message("shared"), "alice@example.com")
    async with (
        another_api(api, tmp_path) as (_, other_url),
        hub_client(api, url=other_url) as on_other,
        hub_client(api) as on_first,
    ):
        status, _ = await api.call("PATCH", f"/api/emails/{email_id}", json={"flags": ["\\Flagged"]})
        assert status == 200
        for client in (on_other, on_first):
            event = await client.next("EmailUpdated")
            assert event["data"]["flags"] == ["\\Flagged"]
        (new_id,) = await api.deliver(message("new one"), "alice@example.com")
        for client in (on_other, on_first):
            assert (await client.next("NewEmail"))["data"]["id"] == new_id


async def test_access_token_query_authenticates(api: Api) -> None:
    """A browser passes its key as access_token in the query and gets its own events."""
    async with api.session.ws_connect(api.url + "/hubs/email", params={"access_token": api.alice_read}) as ws:
        (email_id,) = await api.deliver(message("via query"), "alice@example.com")
        assert (await Events(ws).next("NewEmail"))["data"]["id"] == email_id


@pytest.mark.parametrize(
    ("key", "status"), [(None, 401), ("relate_wrong_key", 401), ("imap", 403)], ids=["none", "wrong", "no-scope"]
)
async def test_hub_refuses_bad_credentials(api: Api, key: str | None, status: int) -> None:
    """No key or a wrong one is a 401 before the upgrade; a key without api:read a 403."""
    headers = {} if key is None else api.auth(api.alice_imap if key == "imap" else key)
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        async with api.session.ws_connect(api.url + "/hubs/email", headers=headers):
            pass
    assert caught.value.status == status


async def test_hub_without_upgrade_is_a_json_400(api: Api) -> None:
    """A plain GET of the hub is refused with a JSON error saying it is a WebSocket endpoint."""
    status, body = await api.call("GET", "/hubs/email")
    assert status == 400
    assert "WebSocket" in body["message"]


async def test_listen_drop_is_survived_and_clients_resync(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    """When the change feed's connection dies, clients get Resync once it is back, and events flow again."""
    async with hub_client(api) as alice:
        with caplog.at_level(logging.INFO, logger="relate.store.changes"):
            killed = await api.pool.fetchval(
                """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                    WHERE datname = current_database() AND application_name = $1""",
                APPLICATION_NAME,
            )
            assert killed == 1
            resync = await alice.next("Resync", wait=10)
        assert resync["data"] == {"reason": "reconnected"}
        assert [r.getMessage() for r in caplog.records if "change-feed-lost" in r.getMessage()]
        assert [r.getMessage() for r in caplog.records if "change-feed-restored" in r.getMessage()]
        (email_id,) = await api.deliver(message("after the drop"), "alice@example.com")
        assert (await alice.next("NewEmail"))["data"]["id"] == email_id


def _raw_hub_socket(port: int, key: str) -> socket.socket:
    """A WebSocket connection that completes the handshake and then never reads (a tiny receive buffer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    nonce = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /hubs/email HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {key}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def test_slow_client_is_dropped_without_stalling_others(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    """A client that stops reading is disconnected when its queue overflows; another keeps getting every event."""
    hub = hub_of(api.server)
    alice_id = await api.pool.fetchval("SELECT id FROM users WHERE address = 'alice@example.com'")
    port = api.server.addresses()[0][1]
    slow = await asyncio.to_thread(_raw_hub_socket, port, api.alice)
    try:
        async with hub_client(api) as fast:
            for _ in range(100):
                if hub.client_count() == 2:
                    break
                await asyncio.sleep(0.02)
            received: list[Event] = []

            async def read() -> None:
                while True:
                    received.append(await fast.next(wait=10))

            reader = asyncio.get_running_loop().create_task(read())
            padding = "x" * 8000
            sent = 0
            with caplog.at_level(logging.WARNING, logger="relate.api.hub"):
                for i in range(CLIENT_QUEUE * 3):
                    hub.publish(alice_id, "Test", {"n": i, "padding": padding})
                    sent += 1
                    await asyncio.sleep(0)
                    if i % 50 == 0:
                        await asyncio.sleep(0.01)
                    if hub.client_count() == 1:
                        break
                for _ in range(300):
                    if hub.client_count() == 1 and len(received) == sent:
                        break
                    await asyncio.sleep(0.02)
            reader.cancel()
            assert hub.client_count() == 1
            assert [e["data"]["n"] for e in received] == list(range(sent))
            assert any("hub-client-dropped" in r.getMessage() for r in caplog.records)
    finally:
        slow.close()


async def test_shutdown_closes_hub_connections_cleanly(api: Api, tmp_path: Path) -> None:
    """Stopping the daemon closes every hub connection with 1001 Going Away."""
    server = await start_api(api, tmp_path)
    url = f"http://127.0.0.1:{server.addresses()[0][1]}"
    async with api.session.ws_connect(url + "/hubs/email", headers=api.auth(api.alice)) as ws:
        stopping = asyncio.get_running_loop().create_task(server.stop())
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert msg.data == aiohttp.WSCloseCode.GOING_AWAY
        await asyncio.wait_for(stopping, 10)
