"""Web push (RFC 8030 delivery, RFC 8291 encryption, RFC 8292 VAPID): subscriptions and sending.

Policy:

- ``GET /api/push-subscriptions/vapid-public-key`` is public (it is a public
  key; a page may need it before it holds an API key). Without VAPID keys
  (``push.vapid_private_key``, made by ``relatectl setup``) push is off and
  the push endpoints answer 503 ``push_not_configured``.
- ``POST /api/push-subscriptions`` takes ``endpoint, p256dh, auth`` (or a
  browser's ``PushSubscription.toJSON()``: ``endpoint, keys{p256dh, auth}``)
  and is idempotent on the endpoint: 201 when new to the user, 200 when it
  was theirs already (keys refreshed). ``DELETE /api/push-subscriptions/{id}``
  deletes one of the caller's own. Storage rules: store/push.py.
- What is pushed: every message delivered to a user (SMTP, the queue's
  local deliveries, bounces, including ``relatectl queue fail``'s; the
  change feed's ``new`` with ``"kind": "delivery"``, store/changes.py), never
  one the user stored (APPEND, the Sent copy), to every subscription of its
  owner, as JSON ``{title, sender, subject, emailId, mailboxId}`` (sender:
  the first From address), aes128gcm-encrypted.
- Exactly once, however many relate-api processes share the database: every
  process hears the feed, and each message is claimed in the database
  (store/push.py ``claim_new``, ``INSERT ... ON CONFLICT DO NOTHING``) by one
  of them, which alone pushes it. A restart or a feed reconnect pushes
  nothing twice: a NOTIFY is heard once per connection and never replayed,
  and a claimed message is never claimed again. Mail delivered while this
  process's feed was down is not pushed (the hub sends its clients
  ``Resync``), nor is one whose process died between its claim and its
  push: at most once, never twice. Deliveries heard together (one group commit) are claimed in
  one statement, at most ``_CLAIM_BATCH`` at a time, one claim in flight;
  past ``_CLAIM_PENDING`` waiting (a database that hangs while mail pours
  in) the oldest are dropped, logged. Claims older than ``_CLAIM_KEEP`` are
  deleted every ``_PRUNE_EVERY``. pywebpush is
  blocking (requests), so each send runs in a worker thread, at most
  ``_CONCURRENCY`` at once, each bounded by ``api.push_timeout``. A push
  service answering 404 or 410 means the subscription is gone: it is
  deleted. Any other failure is one log line naming the subscription id and
  the push service's host (the endpoint URL itself is a capability, never
  logged). Delivery never waits on push.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid
from pywebpush import WebPushException, webpush

from relate.api.app import STATE, json_body, path_id, state
from relate.api.errors import ApiError, invalid, not_found
from relate.api.security import READ, WRITE, principal, requires
from relate.config import Config
from relate.store import db
from relate.store import push as store
from relate.store.changes import MAIL_CHANNEL, ChangeFeed, MailChange

log = logging.getLogger("relate.api.push")

routes = web.RouteTableDef()

_CONCURRENCY = 8
_MAX_ENDPOINT = 2048
_TEXT_LIMIT = 200  # sender and subject in a push payload (a push message carries at most ~4 kB)
_TTL = 24 * 3600  # seconds a push service keeps an undelivered message
_CLAIM_BATCH = 500  # delivered messages claimed in one statement
_CLAIM_PENDING = 10_000  # delivered messages waiting for their claim; past that the oldest are dropped
_CLAIM_KEEP = 24 * 3600.0  # seconds a claim is kept (a NOTIFY is heard within seconds, or never)
_PRUNE_EVERY = 3600.0  # seconds between deletions of old claims


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class PushSender:
    """VAPID identity, and the background sends in flight."""

    def __init__(self, pool: asyncpg.Pool, cfg: Config) -> None:
        self.pool = pool
        self.timeout = cfg.api.push_timeout
        self.subject = cfg.push.vapid_subject or f"mailto:postmaster@{cfg.hostname}"
        self.vapid: Vapid | None = None
        self.public_key: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._limit = asyncio.Semaphore(_CONCURRENCY)
        self._waiting: list[int] = []  # delivered messages heard, not yet claimed
        self._claimer: asyncio.Task[None] | None = None
        self._next_prune = 0.0  # monotonic time of the next pruning of old claims
        self._last_warning = 0.0
        private = cfg.push.vapid_private_key
        if not private:
            return
        try:
            vapid = Vapid.from_string(private)
            public = vapid.public_key.public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        except (ValueError, TypeError, binascii.Error):
            log.error("push-disabled reason=push.vapid_private_key is not a valid P-256 private key")
            return
        self.vapid = vapid
        self.public_key = _b64url(public)
        if cfg.push.vapid_public_key and cfg.push.vapid_public_key.rstrip("=") != self.public_key:
            log.warning("push-key-mismatch push.vapid_public_key does not match the private key; serving the match")

    @property
    def configured(self) -> bool:
        return self.vapid is not None

    # -- from the change feed: claim, then push --------------------------------------

    def listen(self, feed: ChangeFeed) -> None:
        """Push the deliveries the change feed tells of (when VAPID keys are configured)."""
        if self.vapid is not None:
            feed.subscribe(MAIL_CHANNEL, self._on_mail)

    def _on_mail(self, change: MailChange) -> None:
        if change.event != "new" or not change.delivered or change.id is None:
            return
        self._waiting.append(change.id)
        if len(self._waiting) > _CLAIM_PENDING:
            dropped = len(self._waiting) - _CLAIM_PENDING
            del self._waiting[:dropped]
            self._warn(f"push-dropped messages={dropped} (too many waiting for their claim)")
        if self._claimer is None:
            self._claimer = asyncio.get_running_loop().create_task(self._claim_waiting())

    async def drain(self) -> None:
        """Wait until every delivery heard so far is claimed and its pushes are sent (tests, shutdown)."""
        while self._claimer is not None:
            await asyncio.gather(self._claimer, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.timeout + 5)

    async def _claim_waiting(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[:_CLAIM_BATCH]
                del self._waiting[:_CLAIM_BATCH]
                try:
                    claimed = await store.claim_new(self.pool, batch)
                except db.ERRORS as exc:
                    self._warn(f"push-claim-failed messages={len(batch)} error={type(exc).__name__}")
                    continue
                for message in claimed:
                    self._push(message)
            now = time.monotonic()
            if now >= self._next_prune:
                self._next_prune = now + _PRUNE_EVERY
                try:
                    await store.prune_claims(self.pool, _CLAIM_KEEP)
                except db.ERRORS as exc:
                    self._warn(f"push-prune-failed error={type(exc).__name__}")
        finally:
            self._claimer = None

    def _warn(self, text: str) -> None:
        now = time.monotonic()
        if now - self._last_warning > 60:
            self._last_warning = now
            log.warning(text)

    def _push(self, message: store.Claimed) -> None:
        """Push one new-mail message to its owner's devices, in the background."""
        payload = {
            "title": "New email",
            "sender": (message.sender or "")[:_TEXT_LIMIT],
            "subject": (message.subject or "")[:_TEXT_LIMIT],
            "emailId": message.id,
            "mailboxId": message.mailbox_id,
        }
        task = asyncio.get_running_loop().create_task(self._send_all(list(message.subscriptions), json.dumps(payload)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_all(self, subscriptions: list[dict[str, Any]], data: str) -> None:
        results = await asyncio.gather(*(self._send_one(s, data) for s in subscriptions))
        with contextlib.suppress(asyncpg.PostgresError, OSError, TimeoutError):
            await store.touch(self.pool, [s["id"] for s, ok in zip(subscriptions, results, strict=True) if ok])

    async def _send_one(self, sub: dict[str, Any], data: str) -> bool:
        host = urlsplit(sub["endpoint"]).hostname
        async with self._limit:
            try:
                # The thread is bounded by requests' own timeout; the outer one is a backstop.
                await asyncio.wait_for(asyncio.to_thread(self._post, sub, data), self.timeout + 5)
                return True
            except WebPushException as exc:
                status = getattr(exc.response, "status_code", None)
                if status in (404, 410):
                    log.info("push-gone subscription=%d host=%s status=%d", sub["id"], host, status)
                    with contextlib.suppress(asyncpg.PostgresError, OSError, TimeoutError):
                        await store.forget(self.pool, sub["id"], sub["endpoint"])
                else:
                    log.warning("push-failed subscription=%d host=%s status=%s", sub["id"], host, status)
            except Exception as exc:  # noqa: BLE001 - a bad subscription or service must not stop the others
                log.warning("push-failed subscription=%d host=%s error=%s", sub["id"], host, type(exc).__name__)
        return False

    def _post(self, sub: dict[str, Any], data: str) -> None:
        webpush(
            {"endpoint": sub["endpoint"], "keys": {"p256dh": sub["p256dh"], "auth": sub["auth"]}},
            data=data,
            vapid_private_key=self.vapid,
            vapid_claims={"sub": self.subject},  # a fresh dict: webpush() adds aud and exp to it
            content_encoding="aes128gcm",
            timeout=self.timeout,
            ttl=_TTL,
            headers={"Urgency": "high"},
        )

    async def close(self) -> None:
        """Let claims and sends in flight finish (each send is bounded by the push timeout)."""
        await self.drain()


PUSH = web.AppKey("relate_push", PushSender)


def sender_of(request: web.Request) -> PushSender:
    sender = request.app[PUSH]
    if not sender.configured:
        raise ApiError(503, "push_not_configured", "web push is not configured on this server (push.vapid_*)")
    return sender


def _endpoint(value: Any, allow_http: bool) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_ENDPOINT:
        raise invalid(f"endpoint must be a URL of at most {_MAX_ENDPOINT} characters")
    url = urlsplit(value)
    # https only (every browser's push service is https), unless push.allow_http_endpoints says a
    # self-hosted relay speaks http: an http endpoint would let any user make the API post to any port.
    schemes = ("https", "http") if allow_http else ("https",)
    if url.scheme not in schemes or not url.hostname or url.username or url.password:
        raise invalid(f"endpoint must be an {'http(s)' if allow_http else 'https'} URL without credentials")
    return value


def _key(value: Any, name: str, check: Any) -> str:
    if not isinstance(value, str) or len(value) > 200:
        raise invalid(f"{name} must be a base64url string")
    try:
        raw = _b64url_decode(value.strip())
        check(raw)
    except (ValueError, binascii.Error):
        raise invalid(f"{name} is not a valid {'P-256 public key' if name == 'p256dh' else '16-byte secret'}") from None
    return _b64url(raw)


def _p256(raw: bytes) -> None:
    # RFC 8291 §3.2: the user agent's key is an uncompressed P-256 point (65 octets).
    if len(raw) != 65:
        raise ValueError("not an uncompressed point")
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)


def _auth_secret(raw: bytes) -> None:
    # RFC 8291 §3.2: the authentication secret is 16 octets.
    if len(raw) != 16:
        raise ValueError("not 16 octets")


def _subscription(row: dict[str, Any]) -> dict[str, Any]:
    last = row.get("last_used_at")
    return {
        "id": row["id"],
        "endpoint": row["endpoint"],
        "createdAt": row["created_at"].isoformat(),
        "lastUsedAt": last.isoformat() if last else None,
    }


@routes.get("/api/push-subscriptions/vapid-public-key")
async def vapid_public_key(request: web.Request) -> web.Response:
    return web.json_response({"publicKey": sender_of(request).public_key})


@routes.get("/api/push-subscriptions")
@requires(READ)
async def list_subscriptions(request: web.Request) -> web.Response:
    rows = await store.for_user(state(request).pool, principal(request).user_id)
    return web.json_response({"items": [_subscription(r) for r in rows], "total": len(rows)})


@routes.post("/api/push-subscriptions")
@requires(WRITE)
async def subscribe(request: web.Request) -> web.Response:
    sender_of(request)
    data = await json_body(request)
    unknown = set(data) - {"endpoint", "p256dh", "auth", "keys", "expirationTime"}
    if unknown:
        raise invalid(f"unknown fields: {', '.join(sorted(unknown))[:200]}")
    keys = data.get("keys")
    if keys is not None:
        if not isinstance(keys, dict):
            raise invalid("keys must be an object with p256dh and auth")
        data = {**keys, **{k: v for k, v in data.items() if k in ("p256dh", "auth", "endpoint")}}
    endpoint = _endpoint(data.get("endpoint"), state(request).cfg.push.allow_http_endpoints)
    p256dh = _key(data.get("p256dh"), "p256dh", _p256)
    auth = _key(data.get("auth"), "auth", _auth_secret)
    row, new = await store.subscribe(state(request).pool, principal(request).user_id, endpoint, p256dh, auth)
    return web.json_response(_subscription(row), status=201 if new else 200)


@routes.delete("/api/push-subscriptions/{id}")
@requires(WRITE)
async def unsubscribe(request: web.Request) -> web.Response:
    subscription_id = path_id(request)
    if not await store.delete(state(request).pool, principal(request).user_id, subscription_id):
        raise not_found("push subscription")
    return web.json_response({"deleted": True, "id": subscription_id})


def setup(app: web.Application) -> None:
    st = app[STATE]
    sender = PushSender(st.pool, st.cfg)
    app[PUSH] = sender
    sender.listen(st.feed)

    async def cleanup(_app: web.Application) -> None:
        await sender.close()

    app.on_cleanup.append(cleanup)
