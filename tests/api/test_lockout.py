"""Failed API keys behind a reverse proxy: who is locked out, by which address, and what a database outage does."""

from __future__ import annotations

import logging
import secrets
from urllib.parse import urlsplit

import asyncpg
import pytest

from relate.config import Config
from tests.api.conftest import Api


@pytest.fixture
def trusted(request: pytest.FixtureRequest) -> list[str]:
    """api.trusted_proxies for the test (the test client, 127.0.0.1, plays the proxy by default)."""
    return list(getattr(request, "param", ["127.0.0.1"]))


@pytest.fixture
def api_config(api_config: Config, trusted: list[str]) -> Config:
    api_config.api.trusted_proxies = trusted
    return api_config


def wrong_secret(key: str) -> str:
    """The key with its last character changed: its prefix, a wrong secret."""
    return key[:-1] + ("A" if key[-1] != "A" else "B")


async def status(api: Api, key: str, forwarded_for: str | None = None, **headers: str) -> int:
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    code, _ = await api.call("GET", "/api/profile", key, headers=headers)
    return code


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


async def test_behind_a_trusted_proxy_one_users_bad_keys_lock_out_no_one_else(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Alice's five wrong keys from one address lock her key out there only: Bob there and Alice elsewhere pass."""
    caplog.set_level(logging.WARNING, logger="relate.auth")
    for _ in range(5):
        assert await status(api, wrong_secret(api.alice), "6.6.6.6, 198.51.100.7") == 401
    assert await status(api, api.alice, "198.51.100.7") == 401
    assert await status(api, api.bob, "198.51.100.7") == 200
    assert await status(api, api.alice, "198.51.100.8") == 200
    assert await status(api, api.alice) == 200  # the proxy's own address: not locked either
    lines = messages(caplog)
    assert lines.count('auth-failure service=api client=198.51.100.7 user="-" reason=bad-secret') == 5
    assert 'auth-failure service=api client=198.51.100.7 user="-" reason=locked-out' in lines
    prefix = api.alice.split("_")[1]
    assert f'auth-lockout client=198.51.100.7 user="{prefix}" seconds=900' in lines


async def test_a_guesser_behind_the_proxy_reaches_its_address_cap_not_the_users(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Fifty random keys from one client behind the proxy shut that client out; every user elsewhere still passes."""
    caplog.set_level(logging.WARNING, logger="relate.auth")
    for _ in range(api.cfg.auth.max_failures_per_address):
        guess = f"relate_{secrets.token_hex(6)}_{secrets.token_urlsafe(24)}"
        assert await status(api, guess, "203.0.113.66") == 401
    assert await status(api, api.bob, "203.0.113.66") == 401
    assert "auth-lockout client=203.0.113.66 user=* seconds=900" in messages(caplog)
    for client in ["198.51.100.7", "198.51.100.8"]:
        assert await status(api, api.alice, client) == 200
        assert await status(api, api.bob, client) == 200


@pytest.mark.parametrize("trusted", [[], ["192.0.2.1"]], indirect=True)
async def test_an_untrusted_peers_forwarded_for_is_ignored(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    """From a peer not in api.trusted_proxies, X-Forwarded-For changes neither the log nor the lockout."""
    caplog.set_level(logging.WARNING, logger="relate.auth")
    for i in range(5):
        assert await status(api, "not-a-key", f"198.51.100.{i}") == 401
    assert await status(api, "not-a-key", "198.51.100.99") == 401
    lines = [m for m in messages(caplog) if m.startswith("auth-failure")]
    assert lines == ['auth-failure service=api client=127.0.0.1 user="-" reason=malformed-key'] * 5 + [
        'auth-failure service=api client=127.0.0.1 user="-" reason=locked-out'
    ]


async def test_forwarded_header_when_configured(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    """With api.proxy_header: Forwarded, the client comes from RFC 7239 for=, and X-Forwarded-For is ignored."""
    api.cfg.api.proxy_header = "Forwarded"  # read per request
    caplog.set_level(logging.WARNING, logger="relate.auth")
    headers = {"Forwarded": 'for="[2001:db8::7]:4711";proto=https', "X-Forwarded-For": "198.51.100.1"}
    assert await status(api, "not-a-key", **headers) == 401
    assert 'auth-failure service=api client=2001:db8::7 user="-" reason=malformed-key' in messages(caplog)


async def test_database_down_a_bad_key_is_still_401_a_good_one_503(
    api: Api, dsn: str, pg_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With PostgreSQL unreachable: a malformed key is refused (401), a well-formed one is 503; never a 500."""
    caplog.set_level(logging.WARNING)
    name = urlsplit(dsn).path.lstrip("/")
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        assert await status(api, "not-a-key", "198.51.100.7") == 401
        assert await status(api, api.alice, "198.51.100.7") == 503
    finally:
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        await admin.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(m.startswith("auth-count-failed client=198.51.100.7") for m in messages(caplog))
