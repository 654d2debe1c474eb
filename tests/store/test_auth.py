"""The one authenticator: keys, scopes, aliases, expiry, revocation, cache and lockout."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import asyncpg
import pytest

from relate.auth import Authenticator, AuthRefused, parse_scopes
from relate.config import AuthConfig, DatabaseConfig
from relate.errors import Invalid
from relate.services import accounts
from relate.store import db
from relate.store import keys as key_store


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def bob(pool: asyncpg.Pool) -> str:
    """User bob@example.com with alias robert@example.com."""
    await accounts.add_domain(pool, "example.com")
    await accounts.add_user(pool, "bob@example.com", "Bob")
    await accounts.add_alias(pool, "robert@example.com", "bob@example.com")
    return "bob@example.com"


async def new_key(pool: asyncpg.Pool, user: str, scopes: str, **kw: object) -> tuple[str, int]:
    key, row = await accounts.create_key(pool, user, "test", scopes, rounds=4, **kw)  # type: ignore[arg-type]
    return key, row["id"]


async def refused(auth: Authenticator, login: str, key: str, scope: str, client: str = "192.0.2.1") -> str:
    with pytest.raises(AuthRefused) as info:
        await auth.authenticate(login, key, scope, client=client, service="imap")
    assert str(info.value) == "authentication failed"  # the client never learns why
    return info.value.reason


async def test_key_with_scope_authenticates_by_address_and_alias(
    pool: asyncpg.Pool, bob: str, auth_config: AuthConfig
) -> None:
    """A key logs its user in under the primary address or any alias, in any case."""
    key, key_id = await new_key(pool, bob, "imap,smtp")
    auth = Authenticator(pool, auth_config)
    for login in ["bob@example.com", "Robert@Example.com"]:
        principal = await auth.authenticate(login, key, "imap", client="192.0.2.1", service="imap")
        assert principal.address == "bob@example.com"
        assert principal.key_id == key_id
    last_used = await pool.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key_id)
    assert last_used is not None


async def test_missing_scope_is_refused_like_a_bad_password(
    pool: asyncpg.Pool, bob: str, auth_config: AuthConfig
) -> None:
    """A key without the protocol's scope is refused; `app` implies both API scopes."""
    key, _ = await new_key(pool, bob, "imap")
    auth = Authenticator(pool, auth_config)
    assert await refused(auth, bob, key, "smtp") == "missing-scope:smtp"
    app_key, _ = await new_key(pool, bob, "app")
    for scope in ["api:read", "api:write", "app"]:
        await auth.authenticate(bob, app_key, scope, client="192.0.2.2", service="api")
    assert await refused(auth, bob, app_key, "imap", client="192.0.2.2") == "missing-scope:imap"


async def test_wrong_secret_wrong_user_and_garbage(pool: asyncpg.Pool, bob: str, auth_config: AuthConfig) -> None:
    """A tampered secret, another user's login, an unknown prefix or junk are all refused."""
    await accounts.add_user(pool, "eve@example.com")
    key, _ = await new_key(pool, bob, "imap")
    auth = Authenticator(pool, auth_config)
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert await refused(auth, bob, tampered, "imap", client="a") == "bad-secret"
    assert await refused(auth, "eve@example.com", key, "imap", client="b") == "wrong-user"
    assert await refused(auth, "nobody@example.com", key, "imap", client="c") == "wrong-user"
    unknown = "relate_000000000000_" + "x" * 32
    assert await refused(auth, bob, unknown, "imap", client="d") == "unknown-key"
    for junk in ["", "hunter2", "relate_", "\x00" * 40, "ü" * 500]:
        assert await refused(auth, bob, junk, "imap", client="e" + junk[:1]) == "malformed-key"


async def test_logins_the_database_cannot_store_are_refused_not_errors(
    pool: asyncpg.Pool, bob: str, auth_config: AuthConfig
) -> None:
    """A login with NUL, a lone surrogate or 10,000 characters is a wrong user (and counted), not a database error."""
    key, _ = await new_key(pool, bob, "imap")
    auth = Authenticator(pool, auth_config)
    for login in ["bob\x00@example.com", "bob\udcff@example.com", "b" * 10_000 + "@example.com"]:
        assert await refused(auth, login, key, "imap", client="192.0.2.44") == "wrong-user"
        assert await refused(auth, login, "hunter2", "imap", client="192.0.2.45") == "malformed-key"
    assert await pool.fetchval("SELECT sum(cardinality(failures)) FROM auth_failures WHERE login <> ''") == 6


async def test_revoked_key_stops_within_cache_window(pool: asyncpg.Pool, bob: str, auth_config: AuthConfig) -> None:
    """A revoked key keeps working from cache at most cache_seconds, then is refused."""
    key, key_id = await new_key(pool, bob, "imap")
    clock = Clock()
    auth = Authenticator(pool, auth_config, clock=clock)
    await auth.authenticate(bob, key, "imap", client="192.0.2.1", service="imap")
    assert await accounts.revoke_key(pool, key_id)
    clock.now += auth_config.cache_seconds - 1
    await auth.authenticate(bob, key, "imap", client="192.0.2.1", service="imap")  # still cached
    clock.now += 2
    assert await refused(auth, bob, key, "imap") == "revoked"


async def test_cache_avoids_the_database(pool: asyncpg.Pool, bob: str, auth_config: AuthConfig) -> None:
    """A cached verification answers even when the key row is gone, and only within the window."""
    key, key_id = await new_key(pool, bob, "imap")
    clock = Clock()
    auth = Authenticator(pool, auth_config, clock=clock)
    await auth.authenticate(bob, key, "imap", client="192.0.2.1", service="imap")
    await pool.execute("DELETE FROM api_keys WHERE id = $1", key_id)
    await auth.authenticate(bob, key, "imap", client="192.0.2.1", service="imap")
    clock.now += auth_config.cache_seconds + 1
    assert await refused(auth, bob, key, "imap") == "unknown-key"


async def test_expired_key_is_refused(pool: asyncpg.Pool, bob: str, auth_config: AuthConfig) -> None:
    """A key past its expiry is refused, cached or not."""
    key, key_id = await new_key(pool, bob, "imap", expires_at=datetime.now(UTC) + timedelta(hours=1))
    auth = Authenticator(pool, auth_config)
    await auth.authenticate(bob, key, "imap", client="192.0.2.1", service="imap")
    await pool.execute("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1", key_id)
    fresh = Authenticator(pool, auth_config)
    assert await refused(fresh, bob, key, "imap") == "expired"


async def test_disabled_user_is_refused(pool: asyncpg.Pool, bob: str, auth_config: AuthConfig) -> None:
    """A disabled user's keys stop working."""
    key, _ = await new_key(pool, bob, "imap")
    await pool.execute("UPDATE users SET disabled = true WHERE address = $1", bob)
    assert await refused(Authenticator(pool, auth_config), bob, key, "imap") == "disabled-user"


BAD = "relate_000000000000_" + "y" * 32  # well-formed, unknown


async def age(pool: asyncpg.Pool, seconds: float) -> None:
    """Move every failure count ``seconds`` into the past (the counts use the database's own clock)."""
    await pool.execute(
        """UPDATE auth_failures
              SET failures = ARRAY(SELECT t - make_interval(secs => $1) FROM unnest(failures) t),
                  locked_until = locked_until - make_interval(secs => $1),
                  expires_at = expires_at - make_interval(secs => $1)""",
        float(seconds),
    )


async def test_lockout_after_five_failures_of_one_login_from_one_address(
    pool: asyncpg.Pool, bob: str, auth_config: AuthConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """Five failures of bob from one address lock bob (and his aliases) out there, right key or not; nobody else."""
    key, _ = await new_key(pool, bob, "imap")
    await accounts.add_user(pool, "eve@example.com")
    eve_key, _ = await new_key(pool, "eve@example.com", "imap")
    auth = Authenticator(pool, auth_config)
    caplog.set_level(logging.WARNING, logger="relate.auth")
    for _ in range(5):
        await refused(auth, bob, BAD, "imap", client="198.51.100.7")
    assert await refused(auth, bob, key, "imap", client="198.51.100.7") == "locked-out"
    assert await refused(auth, "Robert@example.com", key, "imap", client="198.51.100.7") == "locked-out"
    # Another user from the same address, and bob from another address, are not affected.
    await auth.authenticate("eve@example.com", eve_key, "imap", client="198.51.100.7", service="imap")
    await auth.authenticate(bob, key, "imap", client="198.51.100.8", service="imap")
    await age(pool, auth_config.lockout_seconds + 1)
    auth.forget()
    await auth.authenticate(bob, key, "imap", client="198.51.100.7", service="imap")
    lines = [r.getMessage() for r in caplog.records]
    pattern = re.compile(r'^auth-failure service=imap client=198\.51\.100\.7 user="bob@example\.com" reason=[\w:-]+$')
    assert len([line for line in lines if pattern.match(line)]) == 6
    assert lines.count('auth-lockout client=198.51.100.7 user="bob@example.com" seconds=900') == 1


async def test_an_alias_counts_for_its_user(pool: asyncpg.Pool, bob: str, auth_config: AuthConfig) -> None:
    """Failures under the primary address and an alias add up: aliases give a guesser no extra tries."""
    key, _ = await new_key(pool, bob, "imap")
    auth = Authenticator(pool, auth_config)
    for login in [bob, "robert@example.com", bob, "ROBERT@example.com", bob]:
        await refused(auth, login, BAD, "imap", client="198.51.100.7")
    assert await refused(auth, bob, key, "imap", client="198.51.100.7") == "locked-out"


async def test_failures_spread_over_the_window_do_not_lock(
    pool: asyncpg.Pool, bob: str, auth_config: AuthConfig
) -> None:
    """Failures older than the window are forgotten: four a quarter-window apart never lock."""
    key, _ = await new_key(pool, bob, "imap")
    auth = Authenticator(pool, auth_config)
    for _ in range(8):
        await refused(auth, bob, "bad", "imap", client="203.0.113.5")
        await age(pool, auth_config.failure_window_seconds / 4 + 1)
    await auth.authenticate(bob, key, "imap", client="203.0.113.5", service="imap")


async def test_address_cap_locks_every_login_from_that_address(
    pool: asyncpg.Pool, bob: str, auth_config: AuthConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """Failures spread over many logins (four each) reach auth.max_failures_per_address: the address is shut."""
    key, _ = await new_key(pool, bob, "imap")
    auth = Authenticator(pool, auth_config)
    caplog.set_level(logging.WARNING, logger="relate.auth")
    for i in range(auth_config.max_failures_per_address):
        await refused(auth, f"guess{i // 4}@example.com", BAD, "imap", client="192.0.2.66")
    assert await refused(auth, bob, key, "imap", client="192.0.2.66") == "locked-out"
    await auth.authenticate(bob, key, "imap", client="192.0.2.67", service="imap")
    assert "auth-lockout client=192.0.2.66 user=* seconds=900" in [r.getMessage() for r in caplog.records]


@pytest.fixture
async def two_hosts(dsn: str) -> AsyncIterator[list[asyncpg.Pool]]:
    """Two pools of their own on the test's database: what two hosts running a daemon would hold."""
    pools = [await db.create_pool(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=5)) for _ in range(2)]
    yield pools
    for p in pools:
        await p.close()


async def test_two_hosts_share_one_budget(
    pool: asyncpg.Pool, two_hosts: list[asyncpg.Pool], bob: str, auth_config: AuthConfig
) -> None:
    """Two authenticators on two hosts' pools, one database: 3 + 2 failures lock both out."""
    key, _ = await new_key(pool, bob, "imap")
    one, two = (Authenticator(p, auth_config) for p in two_hosts)
    for _ in range(3):
        await refused(one, bob, BAD, "imap", client="198.51.100.20")
    for _ in range(2):
        await refused(two, bob, BAD, "imap", client="198.51.100.20")
    assert await refused(one, bob, key, "imap", client="198.51.100.20") == "locked-out"
    assert await refused(two, bob, key, "imap", client="198.51.100.20") == "locked-out"


async def test_concurrent_failures_on_two_hosts_are_all_counted(
    two_hosts: list[asyncpg.Pool], auth_config: AuthConfig
) -> None:
    """Twenty failures at once, half on each host, leave twenty in the address's count (no lost update)."""
    auth_config.max_failures = auth_config.max_failures_per_address = 1000
    hosts = [Authenticator(p, auth_config) for p in two_hosts]
    await asyncio.gather(
        *(refused(hosts[i % 2], f"u{i}@example.com", "junk", "imap", client="198.51.100.30") for i in range(20))
    )
    counts = await two_hosts[0].fetchval(
        "SELECT cardinality(failures) FROM auth_failures WHERE client = '198.51.100.30' AND login = ''"
    )
    assert counts == 20


async def test_a_success_clears_the_login_count_cached_or_not(
    pool: asyncpg.Pool, bob: str, auth_config: AuthConfig
) -> None:
    """Four failures then a success, three times over (the later successes cached): never locked."""
    key, _ = await new_key(pool, bob, "imap")
    auth = Authenticator(pool, auth_config)
    for _ in range(3):
        for _ in range(4):
            await refused(auth, bob, BAD, "imap", client="203.0.113.40")
        await auth.authenticate(bob, key, "imap", client="203.0.113.40", service="imap")
    rows = await pool.fetch("SELECT login, cardinality(failures) AS n FROM auth_failures ORDER BY login")
    # The address keeps its count (the per-address cap is not reset by one user's success).
    assert [(r["login"], r["n"]) for r in rows] == [("", 12)]


async def test_a_database_down_while_counting_still_refuses(
    pool: asyncpg.Pool, dsn: str, pg_server: str, bob: str, auth_config: AuthConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """With PostgreSQL unreachable a malformed key is still refused (count lost, one line); a real key is an error."""
    key, _ = await new_key(pool, bob, "imap")
    auth = Authenticator(pool, auth_config)
    await auth.authenticate(bob, key, "imap", client="192.0.2.9", service="imap")  # cached from here on
    caplog.set_level(logging.WARNING, logger="relate.auth")
    name = urlsplit(dsn).path.lstrip("/")
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        assert await refused(auth, bob, "hunter2", "imap", client="192.0.2.9") == "malformed-key"
        # What every protocol answers as "temporarily unavailable".
        with pytest.raises((asyncpg.PostgresError, OSError)):
            await auth.authenticate(bob, BAD, "imap", client="192.0.2.9", service="imap")
        # A key verified a moment ago still works from the cache: nothing to ask the database.
        assert (await auth.authenticate(bob, key, "imap", client="192.0.2.9", service="imap")).address == bob
    finally:
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        await admin.close()
    lines = [r.getMessage() for r in caplog.records]
    assert 'auth-failure service=imap client=192.0.2.9 user="bob@example.com" reason=malformed-key' in lines
    assert any(line.startswith("auth-count-failed client=192.0.2.9 error=") for line in lines)


async def test_expired_counts_are_pruned_as_failures_come(pool: asyncpg.Pool, auth_config: AuthConfig) -> None:
    """Counts whose window and lockout are over are deleted by later failures: the table keeps live ones only."""
    auth = Authenticator(pool, auth_config)
    for i in range(30):
        await refused(auth, "x@example.com", "junk", "imap", client=f"192.0.2.{i}")
    await age(pool, auth_config.failure_window_seconds + 1)
    assert await pool.fetchval("SELECT count(*) FROM auth_failures") == 60
    for _ in range(3):
        await refused(auth, "x@example.com", "junk", "imap", client="198.51.100.99")
    assert await pool.fetchval("SELECT count(*) FROM auth_failures WHERE expires_at < now()") == 0
    assert await pool.fetchval("SELECT count(*) FROM auth_failures") == 2


async def test_log_line_cannot_be_forged(
    pool: asyncpg.Pool, bob: str, auth_config: AuthConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """A login name with newlines and quotes stays inside one quoted field of one line."""
    caplog.set_level(logging.WARNING, logger="relate.auth")
    auth = Authenticator(pool, auth_config)
    evil = 'x"\nauth-failure service=imap client=10.0.0.1 user="victim" reason=bad-secret'
    await refused(auth, evil, "bad", "imap", client="203.0.113.9")
    (line,) = [r.getMessage() for r in caplog.records if "203.0.113.9" in r.getMessage()]
    assert "\n" not in line
    assert line.startswith('auth-failure service=imap client=203.0.113.9 user="x\\"\\nauth-failure')


async def test_internal_key(pool: asyncpg.Pool, auth_config: AuthConfig) -> None:
    """Only the configured internal key passes the internal check; none configured means none passes."""
    auth = Authenticator(pool, auth_config, internal_key="relate_internal_abc")
    assert auth.check_internal("relate_internal_abc", client="local")
    assert not auth.check_internal("relate_internal_abd", client="local")
    assert not auth.check_internal("relate_internal_\udcff", client="local")  # undecodable header bytes
    assert not Authenticator(pool, auth_config).check_internal("", client="local")


def test_scope_parsing() -> None:
    """Scopes are a comma list of user scopes; internal and unknown ones are refused."""
    assert parse_scopes("imap, SMTP,imap") == ["imap", "smtp"]
    for bad in ["", "internal", "imap,admin"]:
        with pytest.raises(Invalid):
            parse_scopes(bad)


async def test_secret_is_not_stored(pool: asyncpg.Pool, bob: str) -> None:
    """The database holds a prefix and a bcrypt hash, never the key or its secret."""
    key, key_id = await new_key(pool, bob, "imap")
    row = await pool.fetchrow("SELECT * FROM api_keys WHERE id = $1", key_id)
    assert row is not None
    secret = key[len("relate_") + 13 :]  # after the prefix; the secret itself may contain "_"
    assert all(secret not in str(v) for v in row.values())
    assert row["hash"].startswith("$2b$")


async def test_keys_follow_a_changed_work_factor(pool: asyncpg.Pool, bob: str, auth_config: AuthConfig) -> None:
    """A key hashed with another bcrypt factor is re-hashed with auth.bcrypt_rounds at its next login."""
    key, key_id = await new_key(pool, bob, "imap")  # factor 4
    auth_config.bcrypt_rounds = 5
    auth = Authenticator(pool, auth_config)
    await auth.authenticate(bob, key, "imap", client="192.0.2.1", service="imap")
    stored = await pool.fetchval("SELECT hash FROM api_keys WHERE id = $1", key_id)
    assert stored.startswith("$2b$05$")
    auth.forget()
    assert (await auth.authenticate(bob, key, "imap", client="192.0.2.1", service="imap")).key_id == key_id


async def test_rehash_never_undoes_a_rotation(pool: asyncpg.Pool, bob: str) -> None:
    """The re-hash is swapped in only if the hash is still the one verified (a rotation in between wins)."""
    _, key_id = await new_key(pool, bob, "imap")
    verified = await pool.fetchval("SELECT hash FROM api_keys WHERE id = $1", key_id)
    await pool.execute("UPDATE api_keys SET hash = 'rotated' WHERE id = $1", key_id)
    await key_store.touch(pool, key_id, rehash=(verified, "stale-rehash"))
    assert await pool.fetchval("SELECT hash FROM api_keys WHERE id = $1", key_id) == "rotated"


async def test_login_names_an_idna_domain_in_either_form(pool: asyncpg.Pool, auth_config: AuthConfig) -> None:
    """A user of münchen.de logs in as info@münchen.de, INFO@München.DE or info@xn--mnchen-3ya.de; not köln.de."""
    await accounts.add_domain(pool, "münchen.de")
    await accounts.add_user(pool, "info@münchen.de")
    key, _ = await new_key(pool, "info@xn--mnchen-3ya.de", "imap")
    auth = Authenticator(pool, auth_config)
    for login in ["info@münchen.de", "INFO@München.DE", "info@xn--mnchen-3ya.de"]:
        principal = await auth.authenticate(login, key, "imap", client="192.0.2.1", service="imap")
        assert principal.address == "info@xn--mnchen-3ya.de"
    assert await refused(auth, "info@köln.de", key, "imap") == "wrong-user"
