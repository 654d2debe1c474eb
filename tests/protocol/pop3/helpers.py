"""A POP3 daemon on loopback ephemeral ports, a byte-level client, and store probes for the POP3 tests.

``start_world`` is shared with ``tests/integration/test_fetchmail.py``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from relate.auth import Authenticator
from relate.config import Config, ListenerConfig
from relate.pop3.server import Pop3Server
from relate.runtime.tls import make_self_signed
from relate.services import accounts
from relate.store import accounts as account_store
from relate.store import imap_messages, mailboxes, messages
from tests import support
from tests.support import RawClient

T = TypeVar("T")

ALICE = "alice@example.com"
BOB = "bob@example.com"


# -- the daemon and its world -----------------------------------------------------------


def pop3_config(dsn: str, tmp: Path) -> Config:
    """pop3 (STLS) and pop3s (implicit TLS) on 127.0.0.1, ephemeral ports, a self-signed certificate."""
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    make_self_signed(cert, key, "mail.example.com")
    cfg = Config(hostname="mail.example.com")
    cfg.database.dsn = dsn
    cfg.tls.cert, cfg.tls.key = cert, key
    cfg.auth.bcrypt_rounds = 4
    cfg.pop3.pop3 = ListenerConfig(listen=["127.0.0.1:0"])
    cfg.pop3.pop3s = ListenerConfig(listen=["127.0.0.1:0"])
    return cfg


def insecure_client_context() -> ssl.SSLContext:
    """A client TLS context that accepts the test's self-signed certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class Pop3:
    """The daemon under test, its ports, the accounts it serves, and probes into its store."""

    server: Pop3Server
    pool: asyncpg.Pool
    cfg: Config
    pop3: int  # STLS port
    pop3s: int  # implicit TLS port
    alice_key: str  # alice@example.com, scope pop3
    imap_only_key: str  # alice@example.com, scope imap only
    bob_key: str  # bob@example.com, scope pop3
    client_tls: ssl.SSLContext
    inbox_ids: dict[str, int] = field(default_factory=dict)

    async def deliver(self, address: str, raw: bytes, flags: Sequence[str] = ()) -> int:
        """Put ``raw`` into the user's INBOX the way every delivery path does (ingest); returns its UID."""
        async with self.pool.acquire() as conn:
            stored = await messages.ingest(conn, raw, [self.inbox_ids[address]], flags=flags)
        return stored[0].uid

    async def stored(self, address: str) -> list[dict[str, Any]]:
        """uid, flags, raw bytes and stored sizes of every message in the user's INBOX, in UID order (IMAP's view)."""
        inbox = self.inbox_ids[address]
        async with self.pool.acquire() as conn:
            uids = await imap_messages.uids(conn, inbox)
            rows = await imap_messages.fetch(conn, inbox, uids, with_raw=True)
        return [{"uid": r["uid"], "flags": list(r["flags"]), "raw": bytes(r["raw"]), "size": r["size"]} for r in rows]

    async def uids(self, address: str) -> list[int]:
        async with self.pool.acquire() as conn:
            return await imap_messages.uids(conn, self.inbox_ids[address])

    async def uidvalidity(self, address: str) -> int:
        async with self.pool.acquire() as conn:
            box = await mailboxes.by_id(conn, self.inbox_ids[address])
        assert box is not None
        return int(box["uidvalidity"])


async def start_world(pool: asyncpg.Pool, cfg: Config) -> Pop3:
    """Domain example.com with alice and bob (alias al@ -> alice), their keys, and a started Pop3Server."""
    await accounts.add_domain(pool, "example.com")
    inbox_ids: dict[str, int] = {}
    for address, name in ((ALICE, "Alice"), (BOB, "Bob")):
        user = await accounts.add_user(pool, address, name)
        async with pool.acquire() as conn:
            inbox = await account_store.inbox_id(conn, user["id"])
        assert inbox is not None
        inbox_ids[address] = inbox
    await accounts.add_alias(pool, "al@example.com", ALICE)
    alice_key, _ = await accounts.create_key(pool, ALICE, "pop3", "pop3", rounds=4)
    imap_key, _ = await accounts.create_key(pool, ALICE, "imap", "imap", rounds=4)
    bob_key, _ = await accounts.create_key(pool, BOB, "pop3", "pop3", rounds=4)
    server = Pop3Server(cfg, pool, Authenticator(pool, cfg.auth))
    await server.start()
    return Pop3(
        server=server,
        pool=pool,
        cfg=cfg,
        pop3=server.addresses("pop3")[0][1],
        pop3s=server.addresses("pop3s")[0][1],
        alice_key=alice_key,
        imap_only_key=imap_key,
        bob_key=bob_key,
        client_tls=insecure_client_context(),
        inbox_ids=inbox_ids,
    )


# -- messages ---------------------------------------------------------------------------


make_message = functools.partial(
    support.make_message,
    sender="Carol <carol@remote.example>",
    to=ALICE,
    body="Hello Alice,\r\nthis is a test.\r\n",
)


def crlf(raw: bytes) -> bytes:
    """``raw`` as POP3 sends it, before dot-stuffing: CRLF line ends and a final CRLF."""
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)


def unstuff(wire: bytes) -> bytes:
    """Undo dot-stuffing of a multi-line response body (without its terminating ``.`` line)."""
    lines = wire.split(b"\r\n")
    assert lines[-1] == b"", "a multi-line body ends with CRLF"
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines[:-1])


# -- a raw client -------------------------------------------------------------------------


class Client(RawClient):
    """A byte-level POP3 client on a real socket; every line read is kept in ``transcript``.

    Every client opened is closed at the end of the test (conftest), even when an assertion failed.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reader, writer)
        self.transcript: list[bytes] = []
        self.greeting = ""

    @classmethod
    async def connect(cls, port: int, *, tls: ssl.SSLContext | None = None, greet: bool = True) -> Client:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=tls, limit=16 * 1024 * 1024), 10
        )
        client = cls(reader, writer)
        if greet:
            client.greeting = await client.status()
        return client

    async def line(self, wait: float = 10) -> bytes:
        """One line as sent, CRLF included; ConnectionError at EOF."""
        raw = await asyncio.wait_for(self.reader.readline(), wait)
        if not raw:
            raise ConnectionError(f"connection closed; transcript so far {self.transcript[-5:]!r}")
        self.transcript.append(raw)
        return raw

    async def status(self, wait: float = 10) -> str:
        """A status line (``+OK …`` / ``-ERR …`` / ``+ …``), decoded, without CRLF."""
        raw = await self.line(wait)
        assert raw.endswith(b"\r\n"), f"status line without CRLF: {raw!r}"
        return raw[:-2].decode("utf-8")

    async def body(self, wait: float = 10) -> bytes:
        """The rest of a multi-line response exactly as sent (dot-stuffed), without the final ``.\\r\\n``."""
        parts: list[bytes] = []
        while True:
            raw = await self.line(wait)
            if raw == b".\r\n":
                return b"".join(parts)
            parts.append(raw)

    async def lines(self, wait: float = 10) -> list[str]:
        """The rest of a multi-line response as text lines (CAPA, LIST, UIDL)."""
        return (await self.body(wait)).decode("utf-8").split("\r\n")[:-1]

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def cmd(self, line: str | bytes) -> str:
        await self.write((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return await self.status()

    async def multi(self, line: str) -> tuple[str, bytes]:
        """A command with a multi-line answer: (status, body as sent) — body empty after ``-ERR``."""
        status = await self.cmd(line)
        return status, (await self.body() if status.startswith("+OK") else b"")

    async def capa(self) -> list[str]:
        status, body = await self.multi("CAPA")
        assert status.startswith("+OK"), status
        return body.decode().split("\r\n")[:-1]

    async def login(self, user: str, key: str) -> str:
        """USER + PASS; the PASS reply."""
        reply = await self.cmd(f"USER {user}")
        if not reply.startswith("+OK"):
            return reply
        return await self.cmd(f"PASS {key}")

    async def auth_plain(self, login: str, key: str, authzid: str = "") -> str:
        token = base64.b64encode(f"{authzid}\0{login}\0{key}".encode()).decode()
        return await self.cmd(f"AUTH PLAIN {token}")

    async def stls(self, context: ssl.SSLContext) -> str:
        reply = await self.cmd("STLS")
        assert reply.startswith("+OK"), reply
        await self.writer.start_tls(context, server_hostname="mail.example.com")
        return reply

    def drop(self) -> None:
        """Cut the connection without QUIT (an RST, like a client that crashed)."""
        self.writer.transport.abort()


async def logged_in(pop3: Pop3, user: str = ALICE, key: str | None = None) -> Client:
    """A client on pop3s, logged in with USER/PASS."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    reply = await client.login(user, key or (pop3.alice_key if user == ALICE else pop3.bob_key))
    assert reply.startswith("+OK"), reply
    return client


async def blocking(func: Callable[..., T], *args: Any) -> T:
    """Run a blocking client (poplib) in a thread while the daemon runs on this loop."""
    return await asyncio.to_thread(func, *args)


async def wait_until(condition: Callable[[], Any], wait: float = 5) -> bool:
    """Await ``condition()`` (a coroutine function) every 20 ms for up to ``wait`` seconds; its last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        if await condition():
            return True
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
