"""Migration 0030: hosted domains, users, aliases and sender entries stored as U-labels become A-labels."""

from __future__ import annotations

import asyncpg
import idna
import pytest

from relate.config import DatabaseConfig
from relate.mail.address import normalize_domain
from relate.store import db
from tests.store import premigration

# Names as relatectl stored them before 0030 (typed, lower-cased); each label's A-label is checked against
# Python's idna, the encoder every other path uses. Scripts, lengths and Punycode's delta/bias paths vary.
NAMES = [
    "münchen.de",
    "bücher.example.com",
    "straße.de",
    "日本語.jp",
    "παράδειγμα.δοκιμή",
    "пример.рф",
    "ü.example",
    "añoñaño-ñ.es",
    "mail.xn--mnchen-3ya.de",  # ASCII already: untouched
    "한국어도메인.kr",
    "ドメイン名例.jp",
    "العربية.example",
]


async def _conn(dsn: str) -> asyncpg.Connection:
    return await db.connect(DatabaseConfig(dsn=dsn))


async def test_u_label_rows_become_a_labels(empty_dsn: str) -> None:
    """Every domain, user, alias and sender entry typed with U-labels before 0030 holds the A-label after it,
    as Python's idna writes it; ASCII rows are untouched and the local parts keep their UTF-8."""
    conn = await _conn(empty_dsn)
    try:
        await premigration.before(conn, 30)
        for name in NAMES:
            domain_id = await conn.fetchval("INSERT INTO domains (name) VALUES ($1) RETURNING id", name)
            user_id = await conn.fetchval(
                "INSERT INTO users (domain_id, address) VALUES ($1, $2) RETURNING id", domain_id, f"jörg@{name}"
            )
            await conn.execute(
                """INSERT INTO addresses (address, domain_id, user_id, is_primary)
                   VALUES ($1, $3, $4, true), ($2, $3, $4, false)""",
                f"jörg@{name}",
                f"info@{name}",
                domain_id,
                user_id,
            )
            await conn.execute(
                "INSERT INTO sender_rules (user_id, pattern, kind) VALUES ($1, $2, 'allow'), ($1, $3, 'block')",
                user_id,
                name,
                f"spam@{name}",
            )
        async with conn.transaction():
            await premigration.apply(conn, 30)

        expected = {name: idna.encode(name, uts46=True).decode() for name in NAMES}
        assert expected["münchen.de"] == "xn--mnchen-3ya.de"
        domains = {r["name"] for r in await conn.fetch("SELECT name FROM domains")}
        assert domains == {"example.com", *expected.values()}
        users = {r["address"] for r in await conn.fetch("SELECT address FROM users")}
        assert users == {"bob@example.com", *(f"jörg@{a}" for a in expected.values())}
        addresses = {r["address"] for r in await conn.fetch("SELECT address FROM addresses")}
        assert addresses == {*(f"jörg@{a}" for a in expected.values()), *(f"info@{a}" for a in expected.values())}
        patterns = {r["pattern"] for r in await conn.fetch("SELECT pattern FROM sender_rules")}
        assert patterns == {*expected.values(), *(f"spam@{a}" for a in expected.values())}
        # What the code looks up for either form typed now is what the migration stored.
        for name in NAMES:
            assert normalize_domain(name) in domains
            assert normalize_domain(expected[name]) in domains
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("INSERT INTO domains (name) VALUES ('köln.de')")
        functions = await conn.fetch("SELECT proname FROM pg_proc WHERE proname LIKE 'relate_0030%'")
        assert functions == []
    finally:
        await conn.close()


async def test_both_forms_hosted_stop_the_migration_with_their_names(empty_dsn: str) -> None:
    """münchen.de and xn--mnchen-3ya.de both hosted: 0030 refuses, naming the pair and what to do; nothing changes."""
    conn = await _conn(empty_dsn)
    try:
        await premigration.before(conn, 30)
        await conn.execute("INSERT INTO domains (name) VALUES ('münchen.de'), ('xn--mnchen-3ya.de')")
        with pytest.raises(asyncpg.RaiseError) as refused:
            async with conn.transaction():
                await premigration.apply(conn, 30)
        assert "münchen.de and xn--mnchen-3ya.de" in str(refused.value)
        assert "relatectl domain remove" in str(refused.value)
        names = {r["name"] for r in await conn.fetch("SELECT name FROM domains")}
        assert names == {"example.com", "münchen.de", "xn--mnchen-3ya.de"}
    finally:
        await conn.close()
