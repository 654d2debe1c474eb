"""A running SMTP daemon on loopback ephemeral ports, against the test's own database."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from relate.auth import Authenticator
from relate.config import Config, ListenerConfig
from relate.runtime.tls import make_self_signed
from relate.services import accounts
from relate.smtp.server import SmtpServer
from relate.testing.dns import DnsServer, Zone
from tests.support import close_all


@dataclass
class Smtp:
    """The daemon under test, its ports, and the accounts it serves."""

    server: SmtpServer
    pool: asyncpg.Pool
    cfg: Config
    mx: int
    submission: int
    submissions: int
    alice_key: str  # alice@example.com, scope smtp
    imap_only_key: str  # alice@example.com, scope imap
    client_tls: ssl.SSLContext

    async def inbox(self, address: str, folder: str = "INBOX") -> list[bytes]:
        """Raw bytes of every message in a user's folder, in UID order."""
        rows = await self.pool.fetch(
            """SELECT b.data FROM messages m JOIN blobs b ON b.hash = m.blob_hash
                 JOIN mailboxes x ON x.id = m.mailbox_id JOIN users u ON u.id = x.user_id
                WHERE u.address = $1 AND x.name = $2 ORDER BY m.uid""",
            address,
            folder,
        )
        return [bytes(r["data"]) for r in rows]


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for mail.example.com."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_self_signed(cert, key, "mail.example.com")
    return cert, key


@dataclass
class Dns:
    """The loopback DNS server the daemon's SPF, DKIM and DMARC checks ask, and its records."""

    zone: Zone
    address: str


@pytest.fixture
async def dns() -> AsyncIterator[Dns]:
    """An empty zone served on loopback: every name is NXDOMAIN until a test adds records."""
    zone = Zone()
    server = DnsServer(zone)
    address = await server.start()
    yield Dns(zone, address)
    server.close()


@pytest.fixture
def smtp_config(dsn: str, tls_files: tuple[Path, Path], dns: Dns) -> Config:
    """Every role on 127.0.0.1, ephemeral ports, the loopback DNS server."""
    cfg = Config(hostname="mail.example.com")
    cfg.delivery.dns_servers = [dns.address]
    cfg.delivery.dns_timeout = 2.0
    cfg.database.dsn = dsn
    cfg.tls.cert, cfg.tls.key = tls_files
    cfg.auth.bcrypt_rounds = 4
    cfg.smtp.mx = ListenerConfig(listen=["127.0.0.1:0"])
    cfg.smtp.submission = ListenerConfig(listen=["127.0.0.1:0"])
    cfg.smtp.submissions = ListenerConfig(listen=["127.0.0.1:0"])
    return cfg


@pytest.fixture
async def smtp(pool: asyncpg.Pool, smtp_config: Config) -> AsyncIterator[Smtp]:
    """The SMTP daemon serving example.com (users alice, bob; alias bobby -> bob)."""
    await accounts.add_domain(pool, "example.com")
    await accounts.add_user(pool, "alice@example.com", "Alice")
    await accounts.add_user(pool, "bob@example.com", "Bob")
    await accounts.add_alias(pool, "bobby@example.com", "bob@example.com")
    await accounts.add_alias(pool, "al@example.com", "alice@example.com")
    alice_key, _ = await accounts.create_key(pool, "alice@example.com", "test", "smtp", rounds=4)
    imap_key, _ = await accounts.create_key(pool, "alice@example.com", "imap", "imap", rounds=4)
    server = SmtpServer(
        smtp_config,
        pool,
        Authenticator(pool, smtp_config.auth),
    )
    await server.start()
    client_tls = ssl.create_default_context()
    client_tls.check_hostname = False
    client_tls.verify_mode = ssl.CERT_NONE
    yield Smtp(
        server=server,
        pool=pool,
        cfg=smtp_config,
        mx=server.addresses("mx")[0][1],
        submission=server.addresses("submission")[0][1],
        submissions=server.addresses("submissions")[0][1],
        alice_key=alice_key,
        imap_only_key=imap_key,
        client_tls=client_tls,
    )
    await server.stop(grace=1)


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    """Close every raw client a test opened, also when it failed half-way."""
    yield
    await close_all()
