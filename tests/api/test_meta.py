"""Profile, discovery, the health check, and Thunderbird autoconfiguration."""

from __future__ import annotations

import asyncio
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

import relate
from relate.api.server import ApiServer
from relate.auth import Authenticator
from relate.config import Config
from relate.delivery import Delivery, Sender, classify
from relate.mail.mtasts import parse_policy
from relate.runtime.daemon import Context
from relate.services import accounts
from tests.api.conftest import Api, message


async def test_profile_lists_addresses_and_name(api: Api) -> None:
    """GET /api/profile gives the primary address, the aliases, the display name and the key's scopes."""
    await accounts.add_alias(api.pool, "ally@example.com", "alice@example.com")
    await accounts.add_alias(api.pool, "a.smith@example.com", "alice@example.com")
    status, body = await api.call("GET", "/api/profile", api.alice_read)
    assert status == 200
    assert body["address"] == "alice@example.com"
    assert body["displayName"] == "Alice"
    assert body["aliases"] == ["a.smith@example.com", "ally@example.com"]
    assert body["addresses"] == ["alice@example.com", "a.smith@example.com", "ally@example.com"]
    assert body["key"]["scopes"] == ["api:read"]
    status, body = await api.call("GET", "/api/profile", api.bob)
    assert body["address"] == "bob@example.com"
    assert body["aliases"] == []


async def test_profile_needs_an_api_key(api: Api) -> None:
    """Without a key the profile is 401; with an imap-only key, 403."""
    async with api.session.get(api.url + "/api/profile") as resp:
        assert resp.status == 401
    status, body = await api.call("GET", "/api/profile", api.alice_imap)
    assert status == 403
    assert body["error"] == "forbidden"


async def test_discovery_is_public_and_follows_the_config(api: Api) -> None:
    """GET /api/discovery without a key: version, the client ports from the config, and features."""
    async with api.session.get(api.url + "/api/discovery") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["version"] == relate.__version__
    assert body["hostname"] == "mail.example.com"
    assert body["protocols"]["imap"] == {
        "enabled": True,
        "ports": [{"port": 993, "security": "tls"}, {"port": 143, "security": "starttls"}],
    }
    assert body["protocols"]["smtp"]["ports"][0] == {"port": 465, "security": "tls"}
    assert body["features"]["search"] is True
    assert body["features"]["push"] is False  # no VAPID keys in this config
    # Turning POP3 off and moving IMAP shows at once.
    api.cfg.pop3.pop3.listen = []
    api.cfg.pop3.pop3s.listen = []
    api.cfg.imap.imap.listen = ["[::]:1143", "0.0.0.0:1143"]
    api.cfg.api.public_hostname = "mx.example.net"
    async with api.session.get(api.url + "/api/discovery") as resp:
        body = await resp.json()
    assert body["protocols"]["pop3"] == {"enabled": False, "ports": []}
    assert {"port": 1143, "security": "starttls"} in body["protocols"]["imap"]["ports"]
    assert body["hostname"] == "mx.example.net"
    # Switched off by their enabled keys: SMTP as a whole, and one IMAP listener.
    api.cfg.smtp.enabled = False
    api.cfg.imap.imaps.enabled = False
    async with api.session.get(api.url + "/api/discovery") as resp:
        body = await resp.json()
    assert body["protocols"]["smtp"] == {"enabled": False, "ports": []}
    assert body["protocols"]["imap"]["ports"] == [{"port": 1143, "security": "starttls"}]


async def test_healthz_reports_database_and_queue(api: Api) -> None:
    """GET /healthz is public: database reachable and the number of outbound messages waiting."""
    async with api.session.get(api.url + "/healthz") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["status"] == "ok"
    assert body["database"] == "reachable"
    assert body["queue"]["depth"] == 0
    # Two messages submitted to a remote address wait in the queue.
    user = await accounts.get_user(api.pool, "alice@example.com")
    for subject in ("one", "two"):
        delivery = Delivery(api.pool, "alice@example.com", sender=Sender(user["id"], user["address"]))
        delivery.add(await classify(api.pool, "friend@remote.example"))
        await delivery.commit(message(subject, to="friend@remote.example"))
    async with api.session.get(api.url + "/healthz") as resp:
        body = await resp.json()
    assert body["queue"]["depth"] == 2
    assert body["queue"]["queued"] == 2


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A loopback port that refuses connections (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_healthz_is_503_when_the_database_is_down(api_config: Config, dead_port: int, tmp_path: Path) -> None:
    """With the database unreachable, /healthz answers 503 quickly, without error details."""
    pool = await asyncpg.create_pool(f"postgresql://relate@127.0.0.1:{dead_port}/relate", min_size=0, timeout=2)
    api_config.internal.api_socket = tmp_path / "down.sock"
    ctx = Context(
        cfg=api_config,
        pool=pool,
        authenticator=Authenticator(pool, api_config.auth),
    )
    server = ApiServer(ctx)
    await server.start()
    try:
        url = f"http://127.0.0.1:{server.addresses()[0][1]}"
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            async with session.get(url + "/healthz") as resp:
                assert resp.status == 503
                body = await resp.json()
            assert time.monotonic() - started < 5
            assert body["status"] == "unavailable"
            assert body["database"] == "unreachable"
            assert str(dead_port) not in str(body)
            # Discovery needs no database and still answers.
            async with session.get(url + "/api/discovery") as resp:
                assert resp.status == 200
    finally:
        await server.stop()
        await asyncio.wait_for(pool.close(), 5)


def _servers(doc: ET.Element, tag: str, kind: str) -> list[tuple[str, str, str, str, str]]:
    return [
        (
            s.findtext("hostname") or "",
            s.findtext("port") or "",
            s.findtext("socketType") or "",
            s.findtext("username") or "",
            s.findtext("authentication") or "",
        )
        for s in doc.iter(tag)
        if s.get("type") == kind
    ]


@pytest.mark.parametrize("path", ["/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml"])
async def test_autoconfig_describes_the_servers(api: Api, path: str) -> None:
    """Thunderbird's autoconfig lists IMAP, POP3 and SMTP with TLS first, the address as username."""
    async with api.session.get(api.url + path, params={"emailaddress": "alice@example.com"}) as resp:
        assert resp.status == 200
        assert resp.content_type in ("application/xml", "text/xml")
        text = await resp.read()
    assert text.startswith(b"<?xml")
    doc = ET.fromstring(text)  # noqa: S314 - our own server's answer
    assert doc.tag == "clientConfig"
    assert doc.get("version") == "1.1"
    provider = doc.find("emailProvider")
    assert provider is not None
    assert provider.findtext("domain") == "example.com"
    host, login, auth = "mail.example.com", "%EMAILADDRESS%", "password-cleartext"
    assert _servers(doc, "incomingServer", "imap") == [
        (host, "993", "SSL", login, auth),
        (host, "143", "STARTTLS", login, auth),
    ]
    assert _servers(doc, "incomingServer", "pop3") == [
        (host, "995", "SSL", login, auth),
        (host, "110", "STARTTLS", login, auth),
    ]
    assert _servers(doc, "outgoingServer", "smtp") == [
        (host, "465", "SSL", login, auth),
        (host, "587", "STARTTLS", login, auth),
    ]


async def test_autoconfig_only_for_hosted_domains(api: Api) -> None:
    """Autoconfig: 404 for a domain not hosted here, 400 without a valid address, any user of a hosted domain works."""
    url = api.url + "/mail/config-v1.1.xml"
    async with api.session.get(url, params={"emailaddress": "someone@elsewhere.example"}) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"] == "not_found"
    for bad in ("", "no-at-sign", "<script>@example.com>", "a@" + "x" * 400):
        async with api.session.get(url, params={"emailaddress": bad}) as resp:
            assert resp.status == 400, bad
            assert "<script>" not in await resp.text()
    # An unknown local part of a hosted domain answers like a real one (no user enumeration).
    async with api.session.get(url, params={"emailaddress": "Nobody@EXAMPLE.com"}) as resp:
        assert resp.status == 200


async def test_autoconfig_for_an_idna_domain_in_either_form(api: Api) -> None:
    """münchen.de hosted (stored as xn--mnchen-3ya.de): autoconfig answers for jörg@münchen.de and for the A-label
    form, naming the domain by its A-label; köln.de, not hosted, is 404."""
    await accounts.add_domain(api.pool, "münchen.de")
    url = api.url + "/mail/config-v1.1.xml"
    for address in ("jörg@münchen.de", "info@XN--MNCHEN-3YA.DE"):
        async with api.session.get(url, params={"emailaddress": address}) as resp:
            assert resp.status == 200, address
            doc = ET.fromstring(await resp.read())  # noqa: S314 - our own server's answer
        provider = doc.find("emailProvider")
        assert provider is not None
        assert provider.findtext("domain") == "xn--mnchen-3ya.de"
    async with api.session.get(url, params={"emailaddress": "info@köln.de"}) as resp:
        assert resp.status == 404


async def test_autoconfig_escapes_configured_values(api: Api) -> None:
    """Values from the configuration are XML-escaped: the document stays well-formed and says what was set."""
    api.cfg.api.public_hostname = "mail&co<1>.example.com"
    async with api.session.get(api.url + "/mail/config-v1.1.xml", params={"emailaddress": "bob@example.com"}) as resp:
        assert resp.status == 200
        text = await resp.read()
    assert b"mail&amp;co&lt;1&gt;.example.com" in text
    doc = ET.fromstring(text)  # noqa: S314 - our own server's answer
    assert {s.findtext("hostname") for s in doc.iter("incomingServer")} == {"mail&co<1>.example.com"}


async def test_mta_sts_policy_is_served_for_hosted_domains_by_host(api: Api) -> None:
    """GET /.well-known/mta-sts.txt with Host mta-sts.example.com: the configured policy as text/plain (mx defaults to
    the host name); 404 for another Host, a domain not hosted here, or mode none."""
    url = api.url + "/.well-known/mta-sts.txt"
    async with api.session.get(url, headers={"Host": "mta-sts.example.com"}) as resp:
        assert resp.status == 404  # mode none: nothing served
    api.cfg.mta_sts.mode = "enforce"
    api.cfg.mta_sts.max_age = 86400
    async with api.session.get(url, headers={"Host": "mta-sts.example.com"}) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        body = await resp.text()
    expected = f"version: STSv1\r\nmode: enforce\r\nmx: {api.cfg.hostname.lower()}\r\nmax_age: 86400\r\n"
    assert body == expected
    assert parse_policy(body.encode()).matches(api.cfg.hostname)
    api.cfg.mta_sts.mx = ["mx1.example.com", "*.backup.example.net"]
    async with api.session.get(url, headers={"Host": "MTA-STS.Example.COM:443"}) as resp:
        assert "mx: mx1.example.com\r\nmx: *.backup.example.net\r\n" in await resp.text()
    for host in ("mta-sts.elsewhere.example", "example.com", "mail.example.com"):
        async with api.session.get(url, headers={"Host": host}) as resp:
            assert resp.status == 404, host
