"""A running IMAP daemon on loopback ephemeral ports (STARTTLS and implicit TLS), against the test's own database."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import imaplib
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from relate.auth import Authenticator
from relate.config import Config, DatabaseConfig, ListenerConfig
from relate.imap.server import ImapServer
from relate.imap.session import ImapSession
from relate.runtime.tls import make_self_signed
from relate.services import accounts
from relate.store import db, messages
from relate.store.messages import StoredMessage
from tests.support import close_all

from .helpers import ImapClient, make_message

T = TypeVar("T")
BOB = "bob@example.com"
ALICE = "alice@example.com"


class _Errors(logging.Handler):
    """Collects what the daemon logs at ERROR (e.g. ``imap-error``: a handler crashed)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


@dataclass
class Imap:
    """The daemon under test, its ports, the accounts it serves, and ways to look behind it."""

    server: ImapServer
    pool: asyncpg.Pool
    cfg: Config
    port: int  # plain, STARTTLS
    tls_port: int  # implicit TLS
    bob_key: str  # bob@example.com, scope imap
    alice_key: str  # alice@example.com, scope imap
    bob_smtp_key: str  # bob@example.com, scope smtp only
    client_tls: ssl.SSLContext
    errors: _Errors = field(default_factory=_Errors)

    def key(self, user: str) -> str:
        return self.alice_key if user.startswith("alice") else self.bob_key

    async def connect(
        self,
        user: str | None = BOB,
        *,
        tls: bool = True,
        select: str | None = None,
        enable: str | None = None,
        port: int | None = None,
    ) -> ImapClient:
        """A raw client on the implicit-TLS port (or the plain one, or ``port``), logged in unless ``user`` is None."""
        port = port or (self.tls_port if tls else self.port)
        client = await ImapClient.connect(port, tls=self.client_tls if tls else None)
        assert client.greeting.startswith(b"* OK"), client.greeting
        if user is not None:
            await client.login(user, self.key(user))
        if enable is not None:
            await client.ok(f"ENABLE {enable}")
        if select is not None:
            await client.ok(f"SELECT {select}")
        return client

    async def mailbox(self, name: str = "INBOX", user: str = BOB) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            """SELECT x.* FROM mailboxes x JOIN users u ON u.id = x.user_id WHERE u.address = $1 AND x.name = $2""",
            user,
            name,
        )
        assert row is not None, f"no mailbox {name} for {user}"
        return dict(row)

    async def bulk(self, count: int, columns: str, values: str, joins: str = "") -> None:
        """Messages 1 to ``count`` straight into INBOX, for mailboxes too large to deliver to one by one:
        ``values`` are SQL over ``n`` (the UID) for ``columns``; every message has one tiny blob."""
        box = await self.mailbox()
        await self.pool.execute("INSERT INTO blobs (hash, size, data) VALUES ('\\x01', 1, 'x') ON CONFLICT DO NOTHING")
        await self.pool.execute(
            f"""INSERT INTO messages (mailbox_id, uid, modseq, blob_hash, {columns})
                SELECT $1, n, 1, '\\x01', {values} FROM generate_series(1, $2) AS n{joins}""",
            box["id"],
            count,
        )
        await self.pool.execute(  # the counts too, as every path that stores mail keeps them
            """UPDATE mailboxes b SET uidnext = $2 + 1, highestmodseq = 2,
                      message_count = (SELECT count(*) FROM messages m WHERE m.mailbox_id = b.id),
                      message_bytes = (SELECT coalesce(sum(m.size), 0) FROM messages m WHERE m.mailbox_id = b.id)
                WHERE id = $1""",
            box["id"],
            count,
        )

    async def deliver(
        self,
        raw: bytes | None = None,
        *,
        user: str = BOB,
        folder: str = "INBOX",
        flags: Sequence[str] = (),
        internal_date: datetime | None = None,
    ) -> StoredMessage:
        """Put a message straight into a user's folder, the way delivery does (NOTIFY included)."""
        box = await self.mailbox(folder, user)
        async with self.pool.acquire() as conn:
            (stored,) = await messages.ingest(
                conn, raw if raw is not None else make_message(), [box["id"]], flags=flags, internal_date=internal_date
            )
        return stored

    async def expunge(self, numbers: str, folder: str = "INBOX") -> None:
        """Another session of bob's marks messages ``numbers`` \\Deleted and CLOSEs ``folder`` (expunging them);
        returns once every session with the folder selected has heard of it."""
        writer = await self.connect(select=folder)
        await writer.ok(f"STORE {numbers} +FLAGS.SILENT (\\Deleted)")
        await writer.ok("CLOSE")
        await writer.ok("LOGOUT")
        await self.heard((await self.mailbox(folder))["id"])

    async def heard(self, mailbox_id: int, wait: float = 5.0) -> None:
        """Until every session with ``mailbox_id`` selected has heard of its change from the change feed (or
        knows the mailbox's modseq already: the session that made the change)."""
        deadline = asyncio.get_running_loop().time() + wait
        highest = await self.pool.fetchval("SELECT highestmodseq FROM mailboxes WHERE id = $1", mailbox_id)
        while any(
            isinstance(s, ImapSession)
            and s.selected is not None
            and s.selected.mailbox_id == mailbox_id
            and not s.selected.changed.is_set()
            and s.selected.known_modseq < highest
            for s in self.server.sessions
        ):
            assert asyncio.get_running_loop().time() < deadline, "the change feed did not tell the sessions"
            await asyncio.sleep(0.01)

    async def index(self) -> None:
        """Put every stored body into the full-text index (what the delivery daemon does in the background)."""
        async with self.pool.acquire() as conn:
            while await messages.index_pending(conn):
                pass

    async def stored(self, folder: str = "INBOX", user: str = BOB) -> list[dict[str, Any]]:
        """uid, flags and raw bytes of every message in a folder, in UID order."""
        rows = await self.pool.fetch(
            """SELECT m.uid, m.flags, b.data AS raw FROM messages m JOIN blobs b ON b.hash = m.blob_hash
                 JOIN mailboxes x ON x.id = m.mailbox_id JOIN users u ON u.id = x.user_id
                WHERE u.address = $1 AND x.name = $2 ORDER BY m.uid""",
            user,
            folder,
        )
        return [{"uid": r["uid"], "flags": list(r["flags"]), "raw": bytes(r["raw"])} for r in rows]

    async def imaplib(self, script: Callable[[imaplib.IMAP4_SSL], T], user: str = BOB) -> T:
        """Run ``script`` with a logged-in imaplib client (in a thread, the daemon runs on this loop)."""

        def run() -> T:
            conn = imaplib.IMAP4_SSL("127.0.0.1", self.tls_port, ssl_context=self.client_tls, timeout=10)
            try:
                conn.login(user, self.key(user))
                return script(conn)
            finally:
                if conn.state != "LOGOUT":
                    try:
                        conn.logout()
                    except (imaplib.IMAP4.error, OSError):
                        conn.shutdown()

        return await asyncio.to_thread(run)

    @contextlib.asynccontextmanager
    async def other_server(self, **imap_settings: Any) -> AsyncIterator[int]:
        """A second daemon on the same database with some ``imap.*`` settings changed; yields its TLS port."""
        cfg = copy.deepcopy(self.cfg)
        for name, value in imap_settings.items():
            setattr(cfg.imap, name, value)
        server = ImapServer(cfg, self.pool, Authenticator(self.pool, cfg.auth))
        await server.start()
        try:
            yield server.addresses("imaps")[0][1]
        finally:
            await server.stop(grace=2)

    async def assert_serves(self) -> None:
        """A fresh client logs in, selects INBOX and fetches; the daemon logged no handler failure."""
        client = await self.connect(select="INBOX")
        result = await client.ok("NOOP")
        assert result.ok
        await client.ok("LOGOUT")
        await client.close()
        assert self.errors.records == []


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for mail.example.com."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_self_signed(cert, key, "mail.example.com")
    return cert, key


@pytest.fixture
def imap_config(dsn: str, tls_files: tuple[Path, Path]) -> Config:
    """Both IMAP roles on 127.0.0.1, ephemeral ports; plaintext login refused (the default)."""
    cfg = Config(hostname="mail.example.com")
    cfg.database.dsn = dsn
    cfg.tls.cert, cfg.tls.key = tls_files
    cfg.auth.bcrypt_rounds = 4
    cfg.auth.max_failures = 1000  # tests fail logins on purpose; the lockout is the store tests' business
    cfg.imap.imap = ListenerConfig(listen=["127.0.0.1:0"])
    cfg.imap.imaps = ListenerConfig(listen=["127.0.0.1:0"])
    return cfg


@pytest.fixture
async def imap_pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool with room for the LISTEN connection, several sessions and the test's own queries."""
    p = await db.create_pool(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=12))
    yield p
    await p.close()


@pytest.fixture
async def imap(imap_pool: asyncpg.Pool, imap_config: Config) -> AsyncIterator[Imap]:
    """The IMAP daemon serving example.com: bob (alias robert@) and alice, each with an imap key."""
    pool = imap_pool
    await accounts.add_domain(pool, "example.com")
    await accounts.add_user(pool, BOB, "Bob")
    await accounts.add_user(pool, ALICE, "Alice")
    await accounts.add_alias(pool, "robert@example.com", BOB)
    bob_key, _ = await accounts.create_key(pool, BOB, "imap", "imap", rounds=4)
    alice_key, _ = await accounts.create_key(pool, ALICE, "imap", "imap", rounds=4)
    bob_smtp_key, _ = await accounts.create_key(pool, BOB, "smtp", "smtp", rounds=4)
    server = ImapServer(imap_config, pool, Authenticator(pool, imap_config.auth))
    await server.start()
    client_tls = ssl.create_default_context()
    client_tls.check_hostname = False
    client_tls.verify_mode = ssl.CERT_NONE
    daemon = Imap(
        server=server,
        pool=pool,
        cfg=imap_config,
        port=server.addresses("imap")[0][1],
        tls_port=server.addresses("imaps")[0][1],
        bob_key=bob_key,
        alice_key=alice_key,
        bob_smtp_key=bob_smtp_key,
        client_tls=client_tls,
    )
    logger = logging.getLogger("relate.imap")
    logger.addHandler(daemon.errors)
    try:
        yield daemon
    finally:
        logger.removeHandler(daemon.errors)
        await close_all()
        await server.stop(grace=2)


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    """Close every raw client a test opened, also when it failed half-way."""
    yield
    await close_all()
