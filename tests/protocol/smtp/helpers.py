"""Clients and database probes shared by the SMTP protocol tests (real sockets, the real database)."""

from __future__ import annotations

import asyncio
import base64
import functools
import re
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from tests import support
from tests.support import RawClient

if TYPE_CHECKING:
    from .conftest import Smtp

T = TypeVar("T")


_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


@dataclass
class Reply:
    """One (possibly multi-line) SMTP reply as the client read it."""

    lines: list[str]

    @property
    def code(self) -> int:
        return int(self.lines[-1][:3])

    @property
    def text(self) -> str:
        return self.lines[-1]

    @property
    def head(self) -> str:
        """``"250 2.1.5"``: the code and, when present, the enhanced code of the last line."""
        parts = self.lines[-1].split(" ")
        if len(parts) > 1 and _ENHANCED.match(parts[1]):
            return f"{parts[0]} {parts[1]}"
        return parts[0]

    @property
    def keywords(self) -> list[str]:
        """EHLO keywords (the lines after the first)."""
        return [line[4:] for line in self.lines[1:]]


class Client(RawClient):
    """A byte-level SMTP client on a real socket; every reply line read is kept in ``transcript``.

    Every client opened is closed at the end of the test (conftest), even when an assertion failed.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reader, writer)
        self.transcript: list[str] = []
        self.greeting: Reply | None = None

    @classmethod
    async def connect(cls, port: int, *, tls: ssl.SSLContext | None = None, greet: bool = True) -> Client:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=tls, limit=4 * 1024 * 1024), 10
        )
        client = cls(reader, writer)
        if greet:
            client.greeting = await client.reply()
        return client

    async def reply(self, wait: float = 10) -> Reply:
        lines: list[str] = []
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), wait)
            if not raw:
                raise ConnectionError(f"connection closed after {lines!r}")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.transcript.append(line)
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return Reply(lines)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def cmd(self, line: str | bytes) -> Reply:
        data = line.encode() if isinstance(line, str) else line
        await self.write(data + b"\r\n")
        return await self.reply()

    async def ehlo(self, name: str = "client.example.org") -> Reply:
        return await self.cmd(f"EHLO {name}")

    async def starttls(self, context: ssl.SSLContext) -> Reply:
        reply = await self.cmd("STARTTLS")
        assert reply.head == "220", reply.lines
        await self.writer.start_tls(context, server_hostname="mail.example.com")
        return reply

    async def auth_plain(self, login: str, key: str) -> Reply:
        token = base64.b64encode(f"\0{login}\0{key}".encode()).decode()
        return await self.cmd(f"AUTH PLAIN {token}")

    async def data(self, message: bytes) -> Reply:
        """DATA, then the message (dot-stuffed here), then the final reply."""
        go = await self.cmd("DATA")
        if go.code != 354:
            return go
        return await self.data_body(message)

    async def data_body(self, message: bytes) -> Reply:
        """The message (dot-stuffed here) and its terminating dot, after a 354; the final reply."""
        await self.write(dot_stuff(message) + b".\r\n")
        return await self.reply()

    async def mail(self, mail_from: str, rcpts: list[str], message: bytes, options: str = "") -> list[Reply]:
        """One transaction, each command waiting for its reply: [MAIL, RCPT..., DATA-final]."""
        replies = [await self.cmd(f"MAIL FROM:<{mail_from}>{options}")]
        for rcpt in rcpts:
            replies.append(await self.cmd(f"RCPT TO:<{rcpt}>"))
        replies.append(await self.data(message))
        return replies


def dot_stuff(message: bytes) -> bytes:
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    lines = message.split(b"\r\n")
    return b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)


make_message = functools.partial(support.make_message, sender="carol@remote.example", to="bob@example.com")


def split_trace(stored: bytes) -> tuple[list[str], bytes]:
    """(the unfolded header fields a server prepended: Return-Path then Received..., the rest).

    The Authentication-Results field (relate.mailauth) between them is passed over: see :func:`without_results`."""
    fields: list[str] = []
    rest = stored
    while rest.startswith((b"Return-Path:", b"Received:", b"Authentication-Results:")):
        end = rest.index(b"\r\n")
        while rest[end + 2 : end + 3] in (b"\t", b" "):
            end = rest.index(b"\r\n", end + 2)
        if not rest.startswith(b"Authentication-Results:"):
            fields.append(rest[:end].decode("utf-8").replace("\r\n", ""))
        rest = rest[end + 2 :]
    return fields, rest


def without_results(stored: bytes) -> bytes:
    """The stored message without the Authentication-Results field the server put after Return-Path."""
    return re.sub(rb"\r\nAuthentication-Results: [^\r]*\r\n(?:[ \t][^\r]*\r\n)*", b"\r\n", stored, count=1)


async def run_session(port: int, mail_from: str, rcpts: list[str], message: bytes) -> list[Reply]:
    """A full plain-text transaction on a fresh connection to ``port``, QUIT included."""
    client = await Client.connect(port)
    try:
        await client.ehlo()
        replies = await client.mail(mail_from, rcpts, message)
        await client.cmd("QUIT")
        return replies
    finally:
        await client.close()


async def assert_serves(smtp: Smtp) -> None:
    """The daemon still accepts a complete message from a fresh client."""
    message = make_message(subject=f"still alive {uuid.uuid4().hex}")
    before = len(await smtp.inbox("bob@example.com"))
    replies = await run_session(smtp.mx, "carol@remote.example", ["bob@example.com"], message)
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
    stored = await smtp.inbox("bob@example.com")
    assert len(stored) == before + 1
    assert stored[-1].endswith(message)


async def outbound(smtp: Smtp) -> list[dict[str, Any]]:
    rows = await smtp.pool.fetch("SELECT * FROM outbound_emails ORDER BY id")
    return [dict(r) for r in rows]


async def outbound_recipients(smtp: Smtp) -> list[dict[str, Any]]:
    rows = await smtp.pool.fetch("SELECT * FROM outbound_recipients ORDER BY id")
    return [dict(r) for r in rows]


async def message_count(smtp: Smtp) -> int:
    count: int = await smtp.pool.fetchval("SELECT count(*) FROM messages")
    return count


async def flags(smtp: Smtp, address: str, folder: str) -> list[list[str]]:
    rows = await smtp.pool.fetch(
        """SELECT m.flags FROM messages m JOIN mailboxes x ON x.id = m.mailbox_id JOIN users u ON u.id = x.user_id
            WHERE u.address = $1 AND x.name = $2 ORDER BY m.uid""",
        address,
        folder,
    )
    return [list(r["flags"]) for r in rows]


async def blocking(func: Callable[..., T], *args: Any) -> T:
    """Run a blocking client (smtplib) in a thread while the daemon runs on this loop."""
    return await asyncio.to_thread(func, *args)


async def wait_until(condition: Callable[[], bool], wait: float = 3) -> bool:
    """Poll ``condition`` every 20 ms for up to ``wait`` seconds; its last value."""
    for _ in range(int(wait / 0.02)):
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


def insecure_client_context() -> ssl.SSLContext:
    """A client TLS context that accepts the test's self-signed certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
