"""Web push: subscriptions, and delivered mail pushed, once, to a local push service that decrypts and checks it."""

from __future__ import annotations

import asyncio
import base64
import imaplib
import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import http_ece
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from typer.testing import CliRunner

from relate.api.push import PUSH
from relate.api.server import ApiServer
from relate.config import Config
from relate.queue.worker import DeliveryWorker
from relate.services import accounts
from relate.services.setup import new_vapid_keys
from relate.store.changes import APPLICATION_NAME
from relatectl.main import app as relatectl_app
from tests.api.conftest import Api, imap_port, message
from tests.api.test_hub import another_api, hub_client, inbox_id, send_mail, smtp_mx, start_api
from tests.cli.test_queue import cli_env

SUBJECT = "mailto:admin@example.com"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def api_config(api_config: Config) -> Config:
    """The API's settings with VAPID keys, as `relatectl setup` makes them."""
    public, private = new_vapid_keys()
    api_config.push.vapid_public_key = public
    api_config.push.vapid_private_key = private
    api_config.push.vapid_subject = SUBJECT
    api_config.api.push_timeout = 3.0
    api_config.push.allow_http_endpoints = True  # the test's push service is plain http on loopback
    return api_config


@dataclass
class Device:
    """A browser's push subscription: its key pair and auth secret (RFC 8291 §3.2)."""

    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    @property
    def p256dh(self) -> str:
        raw = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return b64url(raw)

    def decrypt(self, body: bytes) -> Any:
        return json.loads(http_ece.decrypt(body, private_key=self.key, auth_secret=self.auth, version="aes128gcm"))


@dataclass
class PushService:
    """A push service on loopback: records each POST and answers with the status set for its path."""

    url: str
    received: asyncio.Queue[tuple[str, Mapping[str, str], bytes]]
    answers: dict[str, int]


@pytest.fixture
async def push_service() -> AsyncIterator[PushService]:
    """A local push service (aiohttp) on 127.0.0.1, an ephemeral port."""
    received: asyncio.Queue[tuple[str, Mapping[str, str], bytes]] = asyncio.Queue()
    answers: dict[str, int] = {}

    async def accept(request: web.Request) -> web.Response:
        await received.put((request.path, request.headers.copy(), await request.read()))
        return web.Response(status=answers.get(request.path, 201))

    app = web.Application()
    app.router.add_post("/push/{token}", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield PushService(f"http://127.0.0.1:{port}", received, answers)
    await runner.cleanup()


def verify_vapid(authorization: str, audience: str, public_key: str) -> dict[str, Any]:
    """Check an RFC 8292 ``vapid t=JWT, k=KEY`` header: the key, the ES256 signature, the claims."""
    scheme, _, params = authorization.partition(" ")
    assert scheme == "vapid"
    fields = dict(p.strip().split("=", 1) for p in params.split(","))
    assert fields["k"] == public_key
    head, payload, signature = fields["t"].split(".")
    raw = unb64url(signature)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(public_key))
    key.verify(der, f"{head}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))  # raises if forged
    claims: dict[str, Any] = json.loads(unb64url(payload))
    assert claims["aud"] == audience
    assert claims["sub"] == SUBJECT
    return claims


async def subscribe(api: Api, endpoint: str, device: Device, key: str | None = None) -> tuple[int, Any]:
    body = {"endpoint": endpoint, "p256dh": device.p256dh, "auth": b64url(device.auth)}
    return await api.call("POST", "/api/push-subscriptions", key, json=body)


async def notify_new_mail(api: Api, subject: str) -> tuple[int, int]:
    """Deliver a message to alice as the MX does (announced by the change feed); returns (id, mailbox id)."""
    (email_id,) = await api.deliver(message(subject), "alice@example.com")
    return email_id, await inbox_id(api)


async def pushed(service: PushService, count: int, wait: float = 10) -> list[tuple[str, bytes]]:
    """The next ``count`` pushes (path, encrypted body), then nothing more for half a second."""
    got = []
    for _ in range(count):
        path, _headers, body = await asyncio.wait_for(service.received.get(), wait)
        got.append((path, body))
    await asyncio.sleep(0.5)
    assert service.received.empty(), "pushed more than expected"
    return got


async def settle(*servers: ApiServer) -> None:
    """Wait until every delivery these API processes have heard is claimed and pushed."""
    await asyncio.sleep(0.2)  # the NOTIFYs reach the feeds
    for server in servers:
        await server.app[PUSH].drain()


async def test_vapid_public_key_is_served(api: Api) -> None:
    """The public key is served without credentials, as configured."""
    async with api.session.get(api.url + "/api/push-subscriptions/vapid-public-key") as resp:
        assert resp.status == 200
        assert await resp.json() == {"publicKey": api.cfg.push.vapid_public_key}


async def test_push_endpoints_without_vapid_keys_are_503(api: Api, tmp_path: Path) -> None:
    """Without VAPID keys the key and subscribing answer 503 push_not_configured, saying which setting."""
    async with another_api(api, tmp_path, push__vapid_private_key=None, push__vapid_public_key=None) as (_, url):
        async with api.session.get(url + "/api/push-subscriptions/vapid-public-key") as resp:
            assert resp.status == 503
            body = await resp.json()
        assert body["error"] == "push_not_configured"
        assert "push.vapid" in body["message"]
        device = Device()
        payload = {"endpoint": "https://push.example.net/x", "p256dh": device.p256dh, "auth": b64url(device.auth)}
        async with api.session.post(url + "/api/push-subscriptions", json=payload, headers=api.auth(api.alice)) as resp:
            assert resp.status == 503


async def test_new_mail_is_pushed_encrypted_to_every_device(api: Api, push_service: PushService) -> None:
    """A delivery pushes title, sender, subject and id, aes128gcm-encrypted, VAPID-signed, to each of the owner's
    devices, and nothing to another user's."""
    phone, laptop = Device(), Device()
    assert (await subscribe(api, push_service.url + "/push/phone", phone))[0] == 201
    assert (await subscribe(api, push_service.url + "/push/laptop", laptop))[0] == 201
    assert (await subscribe(api, push_service.url + "/push/bobs", Device(), api.bob))[0] == 201
    email_id, inbox = await notify_new_mail(api, "Lunch?")
    got = {}
    for _ in range(2):
        path, headers, body = await asyncio.wait_for(push_service.received.get(), 10)
        got[path] = (headers, body)
    assert set(got) == {"/push/phone", "/push/laptop"}
    for path, device in (("/push/phone", phone), ("/push/laptop", laptop)):
        headers, body = got[path]
        assert headers["Content-Encoding"] == "aes128gcm"
        assert int(headers["TTL"]) > 0
        verify_vapid(headers["Authorization"], push_service.url, api.cfg.push.vapid_public_key or "")
        assert device.decrypt(body) == {
            "title": "New email",
            "sender": "sender@remote.example",
            "subject": "Lunch?",
            "emailId": email_id,
            "mailboxId": inbox,
        }
    await asyncio.sleep(0.3)
    assert push_service.received.empty()  # nothing for bob's device


async def test_smtp_delivery_is_one_hub_event_and_one_push(api: Api, push_service: PushService) -> None:
    """Mail taken by relate-smtp reaches the owner's hub as one NewEmail and their device as one push."""
    device = Device()
    assert (await subscribe(api, push_service.url + "/push/phone", device))[0] == 201
    async with smtp_mx(api) as port, hub_client(api) as alice:
        await asyncio.to_thread(send_mail, port, "alice@example.com", "over SMTP")
        event = await alice.next("NewEmail")
        assert event["data"]["subject"] == "over SMTP"
        ((path, body),) = await pushed(push_service, 1)
        assert path == "/push/phone"
        assert device.decrypt(body) == {
            "title": "New email",
            "sender": "sender@remote.example",
            "subject": "over SMTP",
            "emailId": event["data"]["id"],
            "mailboxId": event["data"]["mailboxId"],
        }
        assert [e for e in await alice.during(0.3) if e["type"] == "NewEmail"] == []


async def test_append_is_a_hub_event_and_no_push(api: Api, push_service: PushService) -> None:
    """A message the user stores themselves (IMAP APPEND, as a client saves its Sent copy) reaches the hub as
    NewEmail but is not pushed to their devices."""
    assert (await subscribe(api, push_service.url + "/push/phone", Device()))[0] == 201

    def append(port: int) -> None:
        client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
        try:
            client.login("alice@example.com", api.alice_imap)
            typ, _ = client.append("Sent", "(\\Seen)", None, message("my own copy"))
            assert typ == "OK"
        finally:
            client.logout()

    async with imap_port(api) as port, hub_client(api) as alice:
        await asyncio.to_thread(append, port)
        event = await alice.next("NewEmail")
        assert event["data"]["subject"] == "my own copy"
        await settle(api.server)
        await asyncio.sleep(0.3)
        assert push_service.received.empty()


async def test_sent_copy_of_a_rest_send_is_not_pushed(api: Api, push_service: PushService) -> None:
    """Alice sends to Bob over REST: Bob's device gets one push; Alice's Sent copy is not pushed to her."""
    assert (await subscribe(api, push_service.url + "/push/alices", Device()))[0] == 201
    assert (await subscribe(api, push_service.url + "/push/bobs", Device(), api.bob))[0] == 201
    status, _ = await api.call("POST", "/api/outbound/send", json={"to": ["bob@example.com"], "subject": "Hi"})
    assert status == 201
    assert [path for path, _ in await pushed(push_service, 1)] == ["/push/bobs"]


async def test_two_api_processes_push_each_delivery_once(api: Api, push_service: PushService, tmp_path: Path) -> None:
    """With two relate-api processes on one database, both hear every delivery and each message is pushed once."""
    device = Device()
    assert (await subscribe(api, push_service.url + "/push/phone", device))[0] == 201
    async with another_api(api, tmp_path) as (other, _url):
        ids = [(await notify_new_mail(api, f"twice heard {n}"))[0] for n in range(6)]
        await settle(api.server, other)
        got = await pushed(push_service, len(ids))
    assert sorted(device.decrypt(body)["emailId"] for _, body in got) == sorted(ids)


async def test_a_restart_or_a_feed_reconnect_pushes_nothing_twice(
    api: Api, push_service: PushService, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The same delivery announced again (to a restarted relate-api, or after its feed reconnected) is not pushed
    again, while the hub tells its clients of the gap (Resync) and later mail is pushed as ever."""
    device = Device()
    assert (await subscribe(api, push_service.url + "/push/phone", device))[0] == 201
    ((first, _),) = [await notify_new_mail(api, "before")]
    assert [device.decrypt(b)["emailId"] for _, b in await pushed(push_service, 1)] == [first]
    user = await api.pool.fetchval("SELECT id FROM users WHERE address = 'alice@example.com'")
    box = await inbox_id(api)
    again = json.dumps({"event": "new", "user": user, "mailbox": box, "id": first, "kind": "delivery"})
    # A restart: a new relate-api process on the database hears the announcement again.
    restarted = await start_api(api, tmp_path)
    try:
        await api.pool.execute("SELECT pg_notify('relate_mail', $1)", again)
        await settle(api.server, restarted)
        assert push_service.received.empty()
    finally:
        await restarted.stop()
    # A feed reconnect: the hub says Resync; the message announced again is still not pushed; new mail is.
    async with hub_client(api) as alice:
        with caplog.at_level(logging.INFO, logger="relate.store.changes"):
            await api.pool.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", APPLICATION_NAME
            )
            assert (await alice.next("Resync", wait=10))["data"] == {"reason": "reconnected"}
        await api.pool.execute("SELECT pg_notify('relate_mail', $1)", again)
        (second, _) = await notify_new_mail(api, "after")
        await settle(api.server)
        assert [device.decrypt(b)["emailId"] for _, b in await pushed(push_service, 1)] == [second]


async def test_gone_subscription_is_deleted_other_failures_kept(
    api: Api, push_service: PushService, caplog: pytest.LogCaptureFixture
) -> None:
    """A 410 from the push service deletes that subscription; a 500 is logged and the subscription kept."""
    push_service.answers |= {"/push/gone": 410, "/push/broken": 500}
    assert (await subscribe(api, push_service.url + "/push/gone", Device()))[0] == 201
    _, broken = await subscribe(api, push_service.url + "/push/broken", Device())
    with caplog.at_level(logging.INFO, logger="relate.api.push"):
        await notify_new_mail(api, "anyone there?")
        for _ in range(2):
            await asyncio.wait_for(push_service.received.get(), 10)
        for _ in range(100):
            _, listed = await api.call("GET", "/api/push-subscriptions")
            if [s["id"] for s in listed["items"]] == [broken["id"]]:
                break
            await asyncio.sleep(0.05)
    assert [s["id"] for s in listed["items"]] == [broken["id"]]
    lines = [r.getMessage() for r in caplog.records]
    assert any(f"push-failed subscription={broken['id']}" in line and "status=500" in line for line in lines)
    assert all(push_service.url not in line for line in lines)  # the endpoint URL is never logged


async def test_subscribe_is_idempotent_per_endpoint(api: Api) -> None:
    """Subscribing the same endpoint again is a 200 with the same id (keys refreshed), not a second row."""
    endpoint = "https://push.example.net/send/abc"
    status, first = await subscribe(api, endpoint, Device())
    assert status == 201
    assert first["endpoint"] == endpoint
    device = Device()
    browser_json = {
        "endpoint": endpoint,
        "expirationTime": None,
        "keys": {"p256dh": device.p256dh, "auth": b64url(device.auth)},
    }
    status, again = await api.call("POST", "/api/push-subscriptions", json=browser_json)
    assert (status, again["id"]) == (200, first["id"])
    stored = await api.pool.fetchrow("SELECT p256dh, count(*) OVER () AS n FROM push_subscriptions")
    assert (stored["p256dh"], stored["n"]) == (device.p256dh, 1)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"endpoint": "ftp://push.example.net/x"}, "endpoint"),
        ({"endpoint": "https://user:pw@push.example.net/x"}, "endpoint"),
        ({"endpoint": "https://push.example.net/" + "x" * 3000}, "endpoint"),
        ({"p256dh": b64url(b"\x04" + b"\x01" * 64)}, "p256dh"),
        ({"p256dh": "not base64!"}, "p256dh"),
        ({"auth": b64url(b"short")}, "auth"),
        ({"colour": "blue"}, "unknown"),
    ],
    ids=["scheme", "credentials", "long", "off-curve", "garbage", "auth-length", "unknown-field"],
)
async def test_subscribe_refuses_bad_fields(api: Api, change: dict[str, str], complaint: str) -> None:
    """A bad endpoint, key or secret is a 422 naming the field, and nothing is stored."""
    device = Device()
    body = {"endpoint": "https://push.example.net/x", "p256dh": device.p256dh, "auth": b64url(device.auth)} | change
    status, answer = await api.call("POST", "/api/push-subscriptions", json=body)
    assert (status, answer["error"]) == (422, "invalid")
    assert complaint in answer["message"]
    assert await api.pool.fetchval("SELECT count(*) FROM push_subscriptions") == 0


async def test_delete_only_own_subscription(api: Api) -> None:
    """Bob cannot delete Alice's subscription (404); Alice can, once."""
    _, sub = await subscribe(api, "https://push.example.net/alice", Device())
    path = f"/api/push-subscriptions/{sub['id']}"
    assert (await api.call("DELETE", path, api.bob))[0] == 404
    assert await api.call("DELETE", path) == (200, {"deleted": True, "id": sub["id"]})
    assert (await api.call("DELETE", path))[0] == 404


async def test_subscribing_needs_write_scope(api: Api) -> None:
    """A read-only key may list subscriptions but not add one (403)."""
    status, body = await subscribe(api, "https://push.example.net/r", Device(), api.alice_read)
    assert (status, body["error"]) == (403, "forbidden")
    assert (await api.call("GET", "/api/push-subscriptions", api.alice_read))[0] == 200


async def test_http_endpoints_need_the_setting(api: Api, tmp_path: Path) -> None:
    """By default only https subscription endpoints are accepted (no posting to arbitrary http ports)."""
    async with another_api(api, tmp_path, push__allow_http_endpoints=False) as (_, url):
        device = Device()
        for endpoint, want in (("http://10.0.0.5:6379/x", 422), ("https://push.example.net/y", 201)):
            payload = {"endpoint": endpoint, "p256dh": device.p256dh, "auth": b64url(device.auth)}
            async with api.session.post(
                url + "/api/push-subscriptions", json=payload, headers=api.auth(api.alice)
            ) as resp:
                assert resp.status == want, endpoint


async def test_mail_sent_over_rest_to_a_local_user_is_pushed(api: Api, push_service: PushService) -> None:
    """A message sent over REST to a local user is pushed to their device (announced by the change feed)."""
    device = Device()
    assert (await subscribe(api, push_service.url + "/push/bobs", device, api.bob))[0] == 201
    status, _ = await api.call("POST", "/api/outbound/send", json={"to": ["bob@example.com"], "subject": "Lunch?"})
    assert status == 201
    path, _headers, body = await asyncio.wait_for(push_service.received.get(), 10)
    assert path == "/push/bobs"
    pushed = device.decrypt(body)
    assert (pushed["sender"], pushed["subject"]) == ("alice@example.com", "Lunch?")


async def assert_bounce_pushed(api: Api, service: PushService, device: Device) -> None:
    """One push to the device, of a DSN in alice's INBOX; and the hub heard of it."""
    ((path, body),) = await pushed(service, 1)
    assert path == "/push/phone"
    notice = device.decrypt(body)
    _, bounce = await api.call("GET", f"/api/emails/{notice['emailId']}")
    assert bounce["from"]["email"].lower() == "mailer-daemon@mail.example.com"
    assert notice["subject"] == bounce["subject"]


async def test_a_bounce_made_by_the_delivery_daemon_is_pushed(api: Api, push_service: PushService) -> None:
    """A recipient the queue finds unknown fails, and the DSN in the sender's INBOX reaches hub and device."""
    device = Device()
    assert (await subscribe(api, push_service.url + "/push/phone", device))[0] == 201
    status, sent = await api.call("POST", "/api/outbound/send", json={"to": ["nobody@remote.example"], "subject": "x"})
    assert status == 201
    await accounts.add_domain(api.pool, "remote.example")  # hosted now: the queue delivers locally, to no one
    async with hub_client(api) as alice:
        await DeliveryWorker(api.cfg, api.pool).run_once()
        assert (await alice.next("NewEmail"))["data"]["from"]["email"].lower() == "mailer-daemon@mail.example.com"
        await assert_bounce_pushed(api, push_service, device)
    _, outbound = await api.call("GET", f"/api/outbound/{sent['id']}")
    assert outbound["status"] == "failed"


async def test_a_bounce_made_by_relatectl_queue_fail_is_pushed(api: Api, push_service: PushService, dsn: str) -> None:
    """`relatectl queue fail` (its own process, telling no daemon) bounces, and the DSN reaches hub and device."""
    device = Device()
    assert (await subscribe(api, push_service.url + "/push/phone", device))[0] == 201
    status, sent = await api.call("POST", "/api/outbound/send", json={"to": ["someone@remote.example"], "subject": "x"})
    assert status == 201
    async with hub_client(api) as alice:
        result = await asyncio.to_thread(
            CliRunner().invoke, relatectl_app, ["queue", "fail", str(sent["id"])], env=cli_env(dsn)
        )
        assert result.exit_code == 0, (result.stdout, result.exception)
        assert (await alice.next("NewEmail"))["data"]["from"]["email"].lower() == "mailer-daemon@mail.example.com"
        await assert_bounce_pushed(api, push_service, device)
