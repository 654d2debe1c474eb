"""Receiving MTAs, DNS and a queue on loopback, for the delivery daemon's tests.

Every "MX host" is an aiosmtpd ``SMTP`` server on its own loopback address
(127.0.0.2, 127.0.0.3, ...), all on one port, because the delivery daemon
connects to ``delivery.port`` whatever the address. A loopback DNS server
answers the MX and A lookups. Replies are scripted per recipient (at RCPT and
at DATA), and every sink records what it saw: connections, MAIL, RCPT,
completed transactions, TLS, AUTH. Time is an injectable clock the tests
advance; the worker's ``run_once()`` does one pass.
"""

from __future__ import annotations

import asyncio
import email
import ssl
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from relate.config import Config
from relate.queue.worker import DeliveryWorker
from relate.runtime.tls import make_self_signed, server_context
from relate.services import accounts
from relate.testing.dns import DnsServer, Zone

from .helpers import ALICE, BOB, Dsn, parse_dsn, queue_mail

# --- time -------------------------------------------------------------------


class Clock:
    """A clock the test moves by hand; starts a few seconds ahead so all mail queued by the test is due."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC) + timedelta(seconds=5)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


# --- receiving MTAs -----------------------------------------------------------


@dataclass
class Transaction:
    """One message an MTA accepted (or was fed before it dropped the connection)."""

    host: str  # the loopback address it came in on
    helo: str | None
    mail_from: str
    mail_options: list[str]
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    login: str | None

    @property
    def message_id(self) -> str | None:
        return email.message_from_bytes(self.data).get("Message-Id")


class Sink:
    """The handler of one receiving MTA, with scripted replies and a record of everything it saw."""

    def __init__(self, address: str, *, drop_data: bool = False, credentials: tuple[str, str] | None = None) -> None:
        self.address = address
        # Scripted replies; anything not named gets 250.
        self.rcpt_replies: dict[str, str] = {}
        self.data_replies: dict[str, str] = {}  # by recipient: the DATA reply of a transaction naming it
        self.drop_data = drop_data  # close the connection after the data, before replying
        self.drop_rcpts: set[str] = set()  # ... only for transactions naming one of these
        self.credentials = credentials  # AUTH required, and only these work
        self.refuse_after: int | None = None  # stop listening after this many connections
        self.busy_after: int | None = None  # answer EHLO with 421 on connections after this many
        self.data_delay = 0.0  # seconds before the reply to each message's data
        self.server: asyncio.Server | None = None
        self.connections = 0
        self.mail_commands = 0
        self.rcpts: list[str] = []  # every RCPT TO seen, accepted or not
        self.transactions: list[Transaction] = []  # completed with 250
        self.dropped: list[Transaction] = []  # the connection was dropped before the reply
        self.logins: list[tuple[str, str]] = []
        self.protocols: list[SinkSMTP] = []

    # aiosmtpd hooks

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.busy_after is not None and self.connections > self.busy_after:
            return ["421 4.7.0 too busy, try again later"]
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.mail_commands += 1
        if self.credentials is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.rcpts.append(address)
        reply = self.rcpt_replies.get(address, "250 2.1.5 OK")
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        auth = session.auth_data
        seen = Transaction(
            host=self.address,
            helo=session.host_name,
            mail_from=envelope.mail_from or "",
            mail_options=list(envelope.mail_options),
            rcpt_tos=list(envelope.rcpt_tos),
            data=bytes(envelope.content or b""),  # type: ignore[arg-type]
            tls=session.ssl is not None,
            login=auth.login.decode() if isinstance(auth, LoginPassword) else None,
        )
        if self.drop_data or self.drop_rcpts.intersection(envelope.rcpt_tos):
            self.dropped.append(seen)
            assert server.transport is not None
            server.transport.abort()
            await asyncio.sleep(30)  # cancelled at once by connection_lost
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        for rcpt in envelope.rcpt_tos:
            if rcpt in self.data_replies:
                return self.data_replies[rcpt]
        self.transactions.append(seen)
        return "250 2.0.0 Ok: queued as " + uuid.uuid4().hex[:10].upper()

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        given = (auth_data.login.decode(), auth_data.password.decode())
        self.logins.append(given)
        return AuthResult(success=given == self.credentials, handled=False, auth_data=auth_data)

    # what the tests read

    def received_by(self, rcpt: str) -> list[Transaction]:
        return [t for t in self.transactions if rcpt in t.rcpt_tos]


class SinkSMTP(SMTP):  # type: ignore[misc]
    """aiosmtpd's SMTP, counting TCP connections (not the restart after STARTTLS)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sink: Sink = self.event_handler
        if self._original_transport is None:
            sink.connections += 1
            sink.protocols.append(self)
            if sink.refuse_after is not None and sink.connections >= sink.refuse_after and sink.server is not None:
                sink.server.close()  # later connections are refused; this one goes on
        super().connection_made(transport)


class Net:
    """Loopback DNS plus receiving MTAs on 127.0.0.x, all sharing one port (``cfg.delivery.port``)."""

    def __init__(self, cfg: Config, zone: Zone, dns: DnsServer, tls: ssl.SSLContext) -> None:
        self.cfg = cfg
        self.zone = zone
        self.dns = dns
        self.tls = tls
        self.port: int | None = None
        self.sinks: dict[str, Sink] = {}
        self._servers: list[asyncio.Server] = []

    async def mta(
        self,
        address: str,
        *,
        starttls: bool = False,
        drop_data: bool = False,
        credentials: tuple[str, str] | None = None,
        smtputf8: bool = False,
        hostname: str | None = None,
    ) -> Sink:
        """Start a receiving MTA on ``address``; the first one picks the port, the others reuse it."""
        sink = Sink(address, drop_data=drop_data, credentials=credentials)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SinkSMTP(
                sink,
                hostname=hostname or f"sink-{address}",
                tls_context=self.tls if starttls else None,
                enable_SMTPUTF8=smtputf8,
                auth_require_tls=False,
                authenticator=sink.authenticate if credentials else None,
                loop=loop,
            ),
            address,
            self.port or 0,
        )
        if self.port is None:
            self.port = server.sockets[0].getsockname()[1]
            self.cfg.delivery.port = self.port
        self._servers.append(server)
        sink.server = server
        self.sinks[address] = sink
        return sink

    def mx(self, domain: str, *hosts: tuple[int, str, str]) -> None:
        """Publish MX records for ``domain``: (preference, host name, its A address) each."""
        for preference, name, address in hosts:
            self.zone.add(domain, "MX", f"{preference} {name}.")
            self.zone.add(name, "A", address)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for sink in self.sinks.values():
            for protocol in sink.protocols:
                if protocol.transport is not None:
                    protocol.transport.abort()
        for server in self._servers:
            await server.wait_closed()
        await asyncio.sleep(0)
        self.dns.close()


# --- the queue ----------------------------------------------------------------


@dataclass
class Harness:
    """The queue of the test's database, a worker on it, the loopback network, and probes."""

    pool: asyncpg.Pool
    dsn: str
    cfg: Config
    net: Net
    clock: Clock
    workers: list[DeliveryWorker] = field(default_factory=list)
    _worker: DeliveryWorker | None = None

    @property
    def worker(self) -> DeliveryWorker:
        if self._worker is None:
            self._worker = DeliveryWorker(self.cfg, self.pool, clock=self.clock)
        return self._worker

    async def run(self) -> bool:
        """One pass of the delivery loop."""
        return await self.worker.run_once()

    async def queue(self, to: Sequence[str], **kwargs: Any) -> int:
        return await queue_mail(self.pool, to, **kwargs)

    async def recipients(self, email_id: int) -> dict[str, dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT * FROM outbound_recipients WHERE outbound_email_id = $1 ORDER BY id", email_id
        )
        return {r["address"]: dict(r) for r in rows}

    async def email(self, email_id: int) -> dict[str, Any]:
        row = await self.pool.fetchrow("SELECT * FROM outbound_emails WHERE id = $1", email_id)
        assert row is not None
        return dict(row)

    async def status(self, email_id: int) -> str:
        return str((await self.email(email_id))["status"])

    async def inbox(self, address: str) -> list[bytes]:
        """Raw bytes of every message in the user's INBOX, in UID order."""
        rows = await self.pool.fetch(
            """SELECT b.data FROM messages m JOIN blobs b ON b.hash = m.blob_hash
                 JOIN mailboxes x ON x.id = m.mailbox_id JOIN users u ON u.id = x.user_id
                WHERE u.address = $1 AND upper(x.name) = 'INBOX' ORDER BY m.uid""",
            address,
        )
        return [bytes(r["data"]) for r in rows]

    async def dsns(self, address: str = ALICE) -> list[Dsn]:
        return [parse_dsn(raw) for raw in await self.inbox(address)]


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for the receiving MTAs."""
    base = tmp_path_factory.mktemp("delivery-tls")
    cert, key = base / "cert.pem", base / "key.pem"
    make_self_signed(cert, key, "mx.remote.test")
    return cert, key


@pytest.fixture
def delivery_config(dsn: str) -> Config:
    """mail.example.com on the test's database, short timeouts, the loopback DNS server (filled in by ``net``)."""
    cfg = Config(hostname="mail.example.com")
    cfg.database.dsn = dsn
    d = cfg.delivery
    d.dns_timeout = 2.0
    d.connect_timeout = 2.0
    d.command_timeout = 5.0
    d.poll_seconds = 60.0
    return cfg


@pytest.fixture
async def net(delivery_config: Config, tls_files: tuple[Path, Path]) -> AsyncIterator[Net]:
    """A loopback DNS server (an empty zone to start with) and a place to start receiving MTAs."""
    zone = Zone()
    dns = DnsServer(zone)
    delivery_config.delivery.dns_servers = [await dns.start()]
    network = Net(delivery_config, zone, dns, server_context(*tls_files))
    yield network
    await network.close()


@pytest.fixture
async def h(pool: asyncpg.Pool, dsn: str, delivery_config: Config, net: Net) -> AsyncIterator[Harness]:
    """example.com hosted with users alice and bob; a worker with a hand-driven clock."""
    await accounts.add_domain(pool, "example.com")
    await accounts.add_user(pool, ALICE, "Alice")
    await accounts.add_user(pool, BOB, "Bob")
    harness = Harness(pool, dsn, delivery_config, net, Clock())
    yield harness
    for worker in harness.workers:
        await worker.stop(grace=5)
