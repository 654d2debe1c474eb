"""What the protocol test suites share: a raw loopback client that is always closed after its test."""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import re
import ssl
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from relate.auth import Authenticator
from relate.config import Config, DatabaseConfig, ListenerConfig
from relate.imap.server import ImapServer  # imported here, not in a test's loop (it takes 0.1 s)
from relate.store import db


class RawClient:
    """A client on real sockets for byte-level tests; each protocol's client adds its own commands."""

    opened: ClassVar[list[RawClient]] = []

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        RawClient.opened.append(self)

    async def closed(self, wait: float = 5) -> bool:
        """Whether the server closes the connection (EOF) within ``wait`` seconds; unread data is skipped."""
        try:
            while True:
                chunk = await asyncio.wait_for(self.reader.read(65536), wait)
                if not chunk:
                    return True
        except TimeoutError:
            return False
        except (ConnectionError, ssl.SSLError):
            return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError, OSError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 5)


async def close_all() -> None:
    """Close every raw client the test opened, also when it failed half-way."""
    while RawClient.opened:
        await RawClient.opened.pop().close()


def make_message(
    *,
    sender: str = "Carol Sender <carol@remote.example>",
    to: str = "Bob <bob@example.com>",
    subject: str = "Hello",
    body: str | bytes = "Hello Bob,\r\nthis is a test.\r\n",
    date: str = "Tue, 03 Nov 2026 09:15:00 +0100",
    message_id: str | None = None,
    headers: tuple[str, ...] = (),
) -> bytes:
    """An RFC 5322 message with CRLF line ends and a unique Message-ID (unless given)."""
    lines = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
        f"Date: {date}",
        f"Message-ID: {message_id or f'<{uuid.uuid4().hex}@remote.example>'}",
        *headers,
        "",
    ]
    head = ("\r\n".join(lines) + "\r\n").encode("utf-8")
    return head + (body.encode("utf-8") if isinstance(body, str) else body)


_FETCHED = re.compile(rb"UID (\d+) FLAGS \(([^)]*)\) INTERNALDATE \"([^\"]+)\"")


def imap_folders(conn: imaplib.IMAP4) -> dict[str, dict[str, Any]]:
    """Every selectable folder of a logged-in imaplib client: its UIDVALIDITY and each message as (UID, sorted
    flags, INTERNALDATE, BODY[] octets), in UID order."""
    folders: dict[str, dict[str, Any]] = {}
    _, listed = conn.list()
    for line in listed:
        assert isinstance(line, bytes)
        if b"\\Noselect" in line or b"\\NonExistent" in line:
            continue  # a parent that exists only as part of its children's names
        name = line.rsplit(b' "/" ', 1)[1].decode().strip('"')
        typ, data = conn.select(f'"{name}"', readonly=True)
        assert typ == "OK", (name, data)
        rows = []
        if int(data[0] or 0):
            _, fetched = conn.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE BODY.PEEK[])")
            for item in fetched:
                if isinstance(item, tuple):
                    m = _FETCHED.search(item[0])
                    assert m is not None, item[0]
                    rows.append((int(m[1]), sorted(f.decode() for f in m[2].split()), m[3].decode(), item[1]))
        folders[name] = {"uidvalidity": conn.response("UIDVALIDITY")[1], "messages": rows}
    return folders


@contextlib.asynccontextmanager
async def imaps_server(cfg: Config, dsn: str) -> AsyncIterator[int]:
    """An IMAP daemon with implicit TLS on loopback (``cfg``'s certificate) on ``dsn``'s database; its port."""
    cfg.imap.imap = ListenerConfig(listen=[])
    cfg.imap.imaps = ListenerConfig(listen=["127.0.0.1:0"])
    pool = await db.create_pool(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=4))
    server = ImapServer(cfg, pool, Authenticator(pool, cfg.auth))
    await server.start()
    try:
        yield server.addresses("imaps")[0][1]
    finally:
        await server.stop(grace=2)
        await pool.close()
