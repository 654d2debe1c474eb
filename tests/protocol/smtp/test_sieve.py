"""Sieve at delivery: a user's active script files mail arriving over SMTP, as an IMAP client then sees it."""

from __future__ import annotations

import asyncio
import email
import imaplib
import json
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from relate.services import accounts
from relate.sieve import vacation
from relate.store import sieve as scripts
from tests.support import imaps_server

from .conftest import Smtp
from .helpers import make_message, run_session
from .test_submission import submission_client

ACCEPTED = ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
BOB = "bob@example.com"


@pytest.fixture
async def imap_port(smtp: Smtp, dsn: str, tmp_path: Path) -> AsyncIterator[int]:
    """An IMAP daemon (implicit TLS on loopback) on the SMTP daemon's database; yields its port."""
    async with imaps_server(smtp.cfg, dsn) as port:
        yield port


@pytest.fixture
async def bob_key(smtp: Smtp) -> str:
    key, _ = await accounts.create_key(smtp.pool, BOB, "imap", "imap", rounds=4)
    return key


async def activate(pool: asyncpg.Pool, address: str, text: str, name: str = "main") -> None:
    """Store ``text`` as the user's script and make it the active one (what ManageSieve will do)."""
    user_id = await pool.fetchval("SELECT id FROM users WHERE address = $1", address)
    await scripts.put_script(pool, user_id, name, text)
    async with pool.acquire() as conn:
        await scripts.activate(conn, user_id, name)


def _folder(port: int, key: str, folder: str) -> list[tuple[bytes, bytes]]:
    """(FETCH response line with FLAGS, header) of every message in ``folder``, read with imaplib."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context, timeout=10)
    try:
        conn.login(BOB, key)
        typ, exists = conn.select(f'"{folder}"', readonly=True)
        if typ != "OK":
            return []
        if exists == [b"0"]:
            return []
        typ, data = conn.fetch("1:*", "(FLAGS BODY.PEEK[HEADER])")
        assert typ == "OK"
        return [(item[0], item[1]) for item in data if isinstance(item, tuple)]
    finally:
        conn.logout()


async def folder(port: int, key: str, name: str) -> list[tuple[bytes, bytes]]:
    return await asyncio.to_thread(_folder, port, key, name)


async def test_fileinto_with_flags_over_mx(smtp: Smtp, imap_port: int, bob_key: str) -> None:
    """A list message is filed by bob's script into a folder it creates, flagged; other mail stays in INBOX."""
    await activate(
        smtp.pool,
        BOB,
        """require ["fileinto", "mailbox", "imap4flags", "variables"];
        if header :matches "List-Id" "*<*.lists.example>" {
            fileinto :create :flags "\\\\Flagged" "Lists/${2}";
        }""",
    )
    listed = make_message(subject="digest", headers=("List-Id: Acme <acme.lists.example>",))
    assert [r.head for r in await run_session(smtp.mx, "carol@remote.example", [BOB], listed)] == ACCEPTED
    plain = make_message(subject="personal")
    assert [r.head for r in await run_session(smtp.mx, "carol@remote.example", [BOB], plain)] == ACCEPTED
    ((flags, header),) = await folder(imap_port, bob_key, "Lists/acme")
    assert b"\\Flagged" in flags
    assert b"Subject: digest" in header
    ((_, inbox_header),) = await folder(imap_port, bob_key, "INBOX")
    assert b"Subject: personal" in inbox_header


async def test_only_the_recipient_with_a_script_is_filtered(smtp: Smtp, imap_port: int, bob_key: str) -> None:
    """One MX transaction to alice (no script) and bob (discard all): alice gets it, bob does not."""
    await activate(smtp.pool, BOB, "discard;")
    message = make_message(subject="to both")
    replies = await run_session(smtp.mx, "carol@remote.example", ["alice@example.com", BOB], message)
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.1.5", "250 2.0.0"]
    assert len(await smtp.inbox("alice@example.com")) == 1
    assert await folder(imap_port, bob_key, "INBOX") == []


async def test_editheader_changes_what_is_stored(smtp: Smtp, imap_port: int, bob_key: str) -> None:
    """addheader and deleteheader edit bob's stored copy; the Return-Path and trace stay."""
    await activate(
        smtp.pool,
        BOB,
        'require "editheader"; addheader "X-Filtered" "yes"; deleteheader "X-Secret";',
    )
    message = make_message(subject="edit me", headers=("X-Secret: 42",))
    assert [r.head for r in await run_session(smtp.mx, "carol@remote.example", [BOB], message)] == ACCEPTED
    ((_, header),) = await folder(imap_port, bob_key, "INBOX")
    assert header.startswith(b"X-Filtered: yes\r\nReturn-Path: <carol@remote.example>\r\n")
    assert b"X-Secret" not in header
    assert b"Received: from" in header


async def test_a_failing_script_files_into_inbox_with_the_reason(
    smtp: Smtp, imap_port: int, bob_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """fileinto a folder that does not exist (no :create): kept in INBOX, X-Sieve-Error says why, one log line."""
    await activate(smtp.pool, BOB, 'require "fileinto"; fileinto "Nowhere";')
    caplog.set_level(logging.WARNING, logger="relate.sieve")
    message = make_message(subject="lost?")
    assert [r.head for r in await run_session(smtp.mx, "carol@remote.example", [BOB], message)] == ACCEPTED
    ((_, header),) = await folder(imap_port, bob_key, "INBOX")
    assert header.startswith(b'X-Sieve-Error: fileinto: there is no mailbox "Nowhere"')
    assert b"Subject: lost?" in header
    assert any("sieve-error" in r.getMessage() and "Nowhere" in r.getMessage() for r in caplog.records)


async def test_a_script_over_the_step_limit_keeps_the_message(smtp: Smtp, imap_port: int, bob_key: str) -> None:
    """A script past sieve.max_steps stops; the message is in INBOX with the limit named."""
    smtp.cfg.sieve.max_steps = 100
    keys = ", ".join(f'"k{i}"' for i in range(200))
    await activate(smtp.pool, BOB, f'require "fileinto"; if header :contains "subject" [{keys}] {{ fileinto "x"; }}')
    assert [r.head for r in await run_session(smtp.mx, "c@remote.example", [BOB], make_message())] == ACCEPTED
    ((_, header),) = await folder(imap_port, bob_key, "INBOX")
    assert b"X-Sieve-Error:" in header
    assert b"sieve.max_steps" in header


async def test_submission_to_a_local_user_is_filtered(smtp: Smtp, imap_port: int, bob_key: str) -> None:
    """Mail alice submits to bob goes through bob's script; his redirect and vacation are recorded."""
    await activate(
        smtp.pool,
        BOB,
        """require ["fileinto", "vacation", "copy", "mailbox"];
        if address :is "from" "alice@example.com" {
            redirect :copy "bob@elsewhere.example";
            vacation :days 2 :subject "Away" "Back Monday.";
            fileinto :create "From Alice";
        }""",
    )
    client = await submission_client(smtp)
    message = make_message(sender="Alice <alice@example.com>", subject="from alice")
    assert [r.head for r in await client.mail("alice@example.com", [BOB], message)] == ACCEPTED
    await client.close()
    ((_, header),) = await folder(imap_port, bob_key, "From Alice")
    assert b"Subject: from alice" in header
    assert await folder(imap_port, bob_key, "INBOX") == []
    rows = await smtp.pool.fetch("SELECT kind, detail, mail_from, rcpt_to, blob_hash FROM sieve_actions ORDER BY id")
    assert [r["kind"] for r in rows] == ["redirect", "vacation"]
    assert json.loads(rows[0]["detail"]) == {"address": "bob@elsewhere.example", "copy": True}
    assert rows[0]["blob_hash"] is not None
    assert json.loads(rows[1]["detail"])["seconds"] == 2 * 86400
    assert {(r["mail_from"], r["rcpt_to"]) for r in rows} == {("alice@example.com", BOB)}


async def test_duplicate_discards_a_second_copy(smtp: Smtp, imap_port: int, bob_key: str) -> None:
    """With 'if duplicate { discard; }', the same Message-ID delivered twice is filed once (RFC 7352)."""
    await activate(smtp.pool, BOB, 'require "duplicate"; if duplicate { discard; }')
    message = make_message(subject="once", message_id="<same@remote.example>")
    for _ in range(2):
        assert [r.head for r in await run_session(smtp.mx, "c@remote.example", [BOB], message)] == ACCEPTED
    assert len(await folder(imap_port, bob_key, "INBOX")) == 1
    other = make_message(subject="other", message_id="<other@remote.example>")
    assert [r.head for r in await run_session(smtp.mx, "c@remote.example", [BOB], other)] == ACCEPTED
    assert len(await folder(imap_port, bob_key, "INBOX")) == 2


async def test_no_filtering_when_switched_off(smtp: Smtp, imap_port: int, bob_key: str) -> None:
    """With sieve.enabled false, an active script is not run: mail lands in INBOX."""
    smtp.cfg.sieve.enabled = False
    await activate(smtp.pool, BOB, "discard;")
    assert [r.head for r in await run_session(smtp.mx, "c@remote.example", [BOB], make_message())] == ACCEPTED
    assert len(await folder(imap_port, bob_key, "INBOX")) == 1


async def test_concurrent_filtered_deliveries_file_each_copy_once(smtp: Smtp, imap_port: int, bob_key: str) -> None:
    """Twenty MX sessions at once to bob, whose script files into a folder and keeps: every message is in
    both, once (transactions shared by the group commit, and any that deadlock retried alone)."""
    await activate(smtp.pool, BOB, 'require ["fileinto", "copy", "mailbox"]; fileinto :copy :create "Copies";')
    messages = [make_message(subject=f"n{i}") for i in range(20)]
    results = await asyncio.gather(*(run_session(smtp.mx, "c@remote.example", [BOB], m) for m in messages))
    assert all([r.head for r in replies] == ACCEPTED for replies in results)
    for name in ("INBOX", "Copies"):
        subjects = sorted(
            h.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0] for _, h in await folder(imap_port, bob_key, name)
        )
        assert subjects == sorted(f"n{i}".encode() for i in range(20)), name


async def test_vacation_over_mx_queues_one_reply_per_sender(smtp: Smtp) -> None:
    """Mail over port 25 to bob (vacation on): relate-delivery's pass queues one reply to the envelope sender,
    with the null sender; the second message from that sender and a list message get none."""
    await activate(smtp.pool, BOB, 'require "vacation";\nvacation :days 3 "Away this week.";')
    first = make_message(subject="lunch?", message_id="<lunch@remote.example>")
    assert [r.head for r in await run_session(smtp.mx, "carol@remote.example", [BOB], first)] == ACCEPTED
    assert await vacation.send_pending(smtp.pool, smtp.cfg.hostname) == 1
    again = make_message(subject="lunch!!")
    assert [r.head for r in await run_session(smtp.mx, "carol@remote.example", [BOB], again)] == ACCEPTED
    listed = make_message(subject="digest", headers=("List-Id: <acme.lists.example>",))
    assert [r.head for r in await run_session(smtp.mx, "dave@remote.example", [BOB], listed)] == ACCEPTED
    assert await vacation.send_pending(smtp.pool, smtp.cfg.hostname) == 2
    rows = await smtp.pool.fetch(
        """SELECT e.mail_from, e.from_address, r.address, b.data FROM outbound_emails e
             JOIN outbound_recipients r ON r.outbound_email_id = e.id JOIN blobs b ON b.hash = e.blob_hash"""
    )
    assert [(r["mail_from"], r["from_address"], r["address"]) for r in rows] == [("", BOB, "carol@remote.example")]
    reply = email.message_from_bytes(rows[0]["data"])
    assert reply["Subject"] == "Auto: lunch?"
    assert reply["In-Reply-To"] == "<lunch@remote.example>"
    assert reply["Auto-Submitted"] == "auto-replied"
