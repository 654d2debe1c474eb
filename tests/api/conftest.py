"""A running API daemon on a loopback ephemeral port (and its Unix socket), against the test's own database."""

from __future__ import annotations

import contextlib
import copy
import imaplib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from relate.api.server import ApiServer
from relate.auth import Authenticator
from relate.config import Config, ListenerConfig
from relate.delivery import Delivery, classify
from relate.imap.server import ImapServer
from relate.runtime.daemon import Context
from relate.services import accounts
from tests.support import make_message

INTERNAL_KEY = "relate-internal-test-key-0123456789abcdef"


@dataclass
class Api:
    """The daemon under test, where it listens, and keys for its users."""

    server: ApiServer
    pool: asyncpg.Pool
    cfg: Config
    url: str  # http://127.0.0.1:PORT
    socket: Path  # the internal Unix socket
    alice: str  # alice@example.com, scope app
    alice_read: str  # api:read only
    alice_write: str  # api:write only
    alice_imap: str  # imap only (no API scope)
    bob: str  # bob@example.com, scope app
    session: aiohttp.ClientSession

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    async def call(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> tuple[int, Any]:
        """(status, JSON body) of one request, authenticated with ``key`` (alice's app key by default)."""
        headers = self.auth(key or self.alice) | kwargs.pop("headers", {})  # a test may override the key
        async with self.session.request(method, self.url + path, headers=headers, **kwargs) as resp:
            body = await resp.json() if resp.content_type == "application/json" else await resp.read()
            return resp.status, body

    async def deliver(self, raw: bytes, *recipients: str, mail_from: str = "sender@remote.example") -> list[int]:
        """Deliver ``raw`` to local recipients the way the MX does; returns the new message ids."""
        delivery = Delivery(self.pool, mail_from)
        for rcpt in recipients:
            delivery.add(await classify(self.pool, rcpt))
        committed = await delivery.commit(raw)
        return [m.id for m in committed.local]


@dataclass(frozen=True)
class Operation:
    """One operation of the OpenAPI document, its parameters resolved."""

    method: str  # upper case
    path: str  # with {placeholders}
    parameters: list[dict[str, Any]]
    body: dict[str, Any] | None  # the JSON request body's schema, if it takes one
    scope: str | None  # None: public


def operations(doc: dict[str, Any]) -> list[Operation]:
    """Every operation of GET /api/openapi.json, parameter references resolved."""
    found = []
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method not in ("get", "put", "post", "delete", "patch"):
                continue
            params = [
                doc["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p
                for p in [*item.get("parameters", []), *operation.get("parameters", [])]
            ]
            content = operation.get("requestBody", {}).get("content", {})
            security = operation.get("security") or [{}]
            scopes = [s for requirement in security for s in requirement.get("bearer", [])]
            found.append(
                Operation(
                    method.upper(),
                    path,
                    params,
                    content.get("application/json", {}).get("schema"),
                    scopes[0] if scopes else None,
                )
            )
    return found


def message(subject: str = "Hello", body: str = "Hi there.\r\n", *, to: str = "alice@example.com") -> bytes:
    return make_message(
        sender="Sender <sender@remote.example>",
        to=to,
        subject=subject,
        body=body,
        date="Sat, 21 Nov 2026 10:00:00 +0000",
    )


@pytest.fixture
def api_config(dsn: str, tmp_path: Path) -> Config:
    return make_api_config(dsn, tmp_path)


def make_api_config(dsn: str, tmp_path: Path) -> Config:
    """The test API's configuration: loopback port 0, a Unix socket in ``tmp_path``, the cheapest bcrypt."""
    cfg = Config(hostname="mail.example.com")
    cfg.database.dsn = dsn
    cfg.auth.bcrypt_rounds = 4
    cfg.api.listen = ["127.0.0.1:0"]
    cfg.internal.api_key = INTERNAL_KEY
    cfg.internal.api_socket = tmp_path / "api.sock"
    return cfg


@pytest.fixture
async def api(pool: asyncpg.Pool, api_config: Config) -> AsyncIterator[Api]:
    """The API daemon serving example.com (users alice, bob), with an HTTP client session."""
    await accounts.add_domain(pool, "example.com")
    await accounts.add_user(pool, "alice@example.com", "Alice")
    await accounts.add_user(pool, "bob@example.com", "Bob")

    async def key(user: str, scope: str) -> str:
        made, _ = await accounts.create_key(pool, user, f"test {scope}", scope, rounds=4)
        return made

    ctx = Context(
        cfg=api_config,
        pool=pool,
        authenticator=Authenticator(pool, api_config.auth, internal_key=api_config.internal.api_key),
    )
    server = ApiServer(ctx)
    await server.start()
    async with aiohttp.ClientSession() as session:
        yield Api(
            server=server,
            pool=pool,
            cfg=api_config,
            url=f"http://127.0.0.1:{server.addresses()[0][1]}",
            socket=api_config.internal.api_socket,
            alice=await key("alice@example.com", "app"),
            alice_read=await key("alice@example.com", "api:read"),
            alice_write=await key("alice@example.com", "api:write"),
            alice_imap=await key("alice@example.com", "imap"),
            bob=await key("bob@example.com", "app"),
            session=session,
        )
    await server.stop()


@contextlib.asynccontextmanager
async def imap_port(api: Api) -> AsyncIterator[int]:
    """The IMAP daemon on loopback (plain text logins allowed, for the test), on the API's database."""
    cfg = copy.deepcopy(api.cfg)
    cfg.imap.imap = ListenerConfig(listen=["127.0.0.1:0"])
    cfg.imap.imaps = ListenerConfig(listen=[])
    cfg.imap.allow_plaintext_auth = True
    server = ImapServer(cfg, api.pool, Authenticator(api.pool, cfg.auth))
    await server.start()
    try:
        yield server.addresses("imap")[0][1]
    finally:
        await server.stop(grace=1)


def imap_flags(api: Api, port: int, messages: str = "1:*") -> bytes:
    """Alice's INBOX as an IMAP client sees it: the FETCH FLAGS lines of ``messages``, joined (blocking: run it
    in a thread)."""
    client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    try:
        client.login("alice@example.com", api.alice_imap)
        client.select("INBOX", readonly=True)
        _, data = client.fetch(messages, "(FLAGS)")
        return b" ".join(d for d in data if isinstance(d, bytes))
    finally:
        client.logout()
