"""The ENVELOPE wire form stored at ingest, and migration 0009's SQL backfill of older rows, byte for byte."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from relate.mail.imapwire import envelope
from relate.services import accounts
from relate.store import imap_messages, messages, migrate


def crlf(*lines: str | bytes) -> bytes:
    return b"\r\n".join(line.encode("utf-8") if isinstance(line, str) else line for line in lines)


# Headers that exercise every branch of the rendering: quoted, escaped, literal (8-bit, CR, long), NIL, groups.
TRICKY = [
    crlf("From: Alice <alice@example.org>", "To: bob@example.com", "Subject: plain", "", "body"),
    crlf('From: "Quote \\" and \\\\ back" <q@example.org>', 'Subject: a "quoted" \\ word', "", "b"),
    crlf("From: J\u00f6rg <jorg@example.net>", "Subject: Gr\u00fc\u00dfe aus K\u00f6ln", "", "b"),
    crlf(b"From: latin \xe9t\xe9 <l@example.org>", b"Subject: caf\xe9", b"", b"b"),
    crlf("From: a@example.org", "Subject: " + "x" * 1000, "", "b"),
    crlf("From: a@example.org", "Subject: " + "y" * 1001, "", "b"),
    crlf("From: a@example.org", "Subject: " + "\u00e9" * 500, "", "b"),
    crlf("From: a@example.org", "Subject: " + "\u00e9" * 501, "", "b"),
    crlf(b"From: a@example.org", b"Subject: with\rbare CR", b"", b"b"),
    crlf(b"From: a@example.org", b"Subject: NUL\x00inside", b"", b"b"),
    crlf("From: a@example.org", "Subject: tab\tand \x01 control", "", "b"),
    crlf("From: a@example.org", "Subject: =?UTF-8?B?w6l0w6k=?= encoded", "", "b"),
    crlf("To: undisclosed-recipients:;", "Subject: empty group", "", "b"),
    crlf("From: a@example.org", 'To: Team: x@example.org, "Y" <y@example.org>; z@example.org', "", "b"),
    crlf("From: \u00fcser@b\u00fccher.example", "Cc: no-at-sign", "Bcc: <>", "", "b"),
    crlf(
        "From: a@example.org",
        "Sender: s@example.org",
        "Reply-To: r@example.org",
        "Date: Tue, 03 Nov 2026 09:15:00 +0100",
        "Message-ID: <m1@example.org>",
        "In-Reply-To: <m0@example.org>",
        "Subject: folded",
        " across lines",
        "",
        "b",
    ),
    b"no header at all",
    b"",
]


@pytest.fixture
async def inbox(pool: asyncpg.Pool) -> int:
    """bob@example.com's INBOX id."""
    await accounts.add_domain(pool, "example.com")
    user = await accounts.add_user(pool, "bob@example.com")
    box: int = await pool.fetchval("SELECT id FROM mailboxes WHERE user_id = $1 AND name = 'INBOX'", user["id"])
    return box


async def _wire(pool: asyncpg.Pool, inbox: int) -> list[tuple[Any, ...]]:
    rows = await pool.fetch(
        "SELECT envelope, envelope_wire, envelope_wire_utf8 FROM messages WHERE mailbox_id = $1 ORDER BY uid", inbox
    )
    return [(r["envelope"], r["envelope_wire"], r["envelope_wire_utf8"]) for r in rows]


async def test_ingest_stores_the_rendered_envelope_in_both_modes(pool: asyncpg.Pool, inbox: int) -> None:
    """Ingest stores exactly what FETCH ENVELOPE would render, and a UTF-8 form only where it differs."""
    async with pool.acquire() as conn:
        for raw in TRICKY:
            await messages.ingest(conn, raw, [inbox])
    stored = await _wire(pool, inbox)
    assert len(stored) == len(TRICKY)
    differing = 0
    for env, wire, wire_utf8 in stored:
        assert wire == envelope(env, utf8=False)
        wide = envelope(env, utf8=True)
        assert wire_utf8 == (None if wide == wire else wide)
        differing += wire_utf8 is not None
    assert differing >= 3  # the 8-bit subjects and names


async def test_migration_backfill_matches_ingest(pool: asyncpg.Pool, inbox: int) -> None:
    """Rows without a wire form get, from migration 0009's SQL, the very bytes ingest stores."""
    async with pool.acquire() as conn:
        for raw in TRICKY:
            await messages.ingest(conn, raw, [inbox])
    expected = await _wire(pool, inbox)
    await pool.execute("UPDATE messages SET envelope_wire = NULL, envelope_wire_utf8 = NULL")
    (sql,) = [m.sql for m in migrate.available() if m.version == 9]
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(sql)
    assert await _wire(pool, inbox) == expected


async def test_fetch_reads_the_right_form_and_renders_rows_without_one(pool: asyncpg.Pool, inbox: int) -> None:
    """The store hands FETCH the form for the session's mode, and the jsonb envelope only where no form is stored."""
    async with pool.acquire() as conn:
        for raw in TRICKY:
            await messages.ingest(conn, raw, [inbox])
        await conn.execute("UPDATE messages SET envelope_wire = NULL, envelope_wire_utf8 = NULL WHERE uid = 3")
        uids = list(range(1, len(TRICKY) + 1))
        for utf8 in (False, True):
            rows = await imap_messages.fetch(
                conn, inbox, uids, with_raw=False, columns=frozenset({"envelope"}), utf8=utf8
            )
            for row in rows:
                if row["uid"] == 3:
                    assert row["envelope_wire"] is None
                    assert row["envelope"]["subject"] == "Gr\u00fc\u00dfe aus K\u00f6ln"
                else:
                    assert row["envelope"] is None
                    full = await conn.fetchval("SELECT envelope FROM messages WHERE id = $1", row["id"])
                    assert row["envelope_wire"] == envelope(full, utf8=utf8)
