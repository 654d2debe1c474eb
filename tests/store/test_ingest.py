"""The one ingest path: bytes stored exactly once, columns parsed once, UIDs and modseqs, NOTIFY on commit."""

from __future__ import annotations

import asyncio
import json
import random
import time
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from relate.config import Config
from relate.mail.mime import parse_message
from relate.queue.worker import DeliveryWorker
from relate.services import accounts
from relate.store import emails, imap_messages, mailboxes, messages
from relate.store.messages import CHANNEL


def crlf(*lines: str) -> bytes:
    return "\r\n".join(lines).encode("utf-8")


REAL_WORLD = crlf(
    "Return-Path: <alice@example.org>",
    "From: =?UTF-8?Q?Al=C3=AFce_Dupont?= <alice@example.org>",
    "To: Bob <bob@example.com>, carol@example.com",
    "Cc: =?ISO-8859-1?Q?J=F6rg?= <jorg@example.net>",
    "Subject: =?UTF-8?B?UXVhcnRlcmx5IHJlcG9ydCDigJQgZmluYWw=?=",
    "Date: Tue, 03 Nov 2026 09:15:00 +0100",
    "Message-ID: <report-7@example.org>",
    "In-Reply-To: <draft-6@example.org>",
    "References: <thread-1@example.org> <draft-6@example.org>",
    "MIME-Version: 1.0",
    'Content-Type: multipart/mixed; boundary="outer"',
    "",
    "This is a multi-part message in MIME format.",
    "--outer",
    'Content-Type: multipart/alternative; boundary="alt"',
    "",
    "--alt",
    "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: quoted-printable",
    "",
    "The figures are in the attached spreadsheet. Caf=C3=A9 budget unchanged.",
    "--alt",
    "Content-Type: text/html; charset=utf-8",
    "",
    "<p>The figures are in the attached <b>spreadsheet</b>.</p>",
    "--alt--",
    "--outer",
    'Content-Type: application/vnd.ms-excel; name="q3.xls"',
    'Content-Disposition: attachment; filename="q3.xls"',
    "Content-Transfer-Encoding: base64",
    "",
    "UTFfc2hlZXRfZGF0YQ==",
    "--outer--",
    "",
)

BROKEN = (
    crlf(
        "From: broken@example.org",
        "To: bob@example.com",
        "Subject: broken boundaries",
        'Content-Type: multipart/mixed; boundary="never-used"',
        "",
        "--wrong-boundary",
        "Content-Type: text/plain",
        "",
        "zebra body text survives",
        "--also-wrong--",
    )
    + b"\r\n\xff\xfe 8-bit junk \x00 with a NUL\r\n"
)


@pytest.fixture
async def inbox(pool: asyncpg.Pool) -> dict[str, Any]:
    """bob@example.com's INBOX (and the user row)."""
    await accounts.add_domain(pool, "example.com")
    user = await accounts.add_user(pool, "bob@example.com")
    row = await pool.fetchrow("SELECT * FROM mailboxes WHERE user_id = $1 AND name = 'INBOX'", user["id"])
    return dict(row)


async def search(pool: asyncpg.Pool, user_id: int, word: str) -> tuple[list[dict[str, Any]], int]:
    """The first page and the total of what the REST search finds for ``word`` in the user's mail."""
    rows, total, _ = await emails.search(
        pool,
        user_id,
        query=word,
        mailbox_id=None,
        sender=None,
        recipient=None,
        after=None,
        before=None,
        has_attachments=None,
        is_read=None,
        offset=0,
        limit=10,
    )
    return rows, total


async def deliver(pool: asyncpg.Pool, raw: bytes, *mailbox_ids: int) -> list[messages.StoredMessage]:
    async with pool.acquire() as conn:
        return await messages.ingest(conn, raw, mailbox_ids)


async def test_real_world_message_fills_columns(pool: asyncpg.Pool, inbox: dict[str, Any]) -> None:
    """A nested multipart with encoded headers and an attachment gets every column IMAP and the API read."""
    (stored,) = await deliver(pool, REAL_WORLD, inbox["id"])
    row = await pool.fetchrow("SELECT * FROM messages WHERE id = $1", stored.id)
    assert row["subject"] == "Quarterly report — final"
    assert row["from_addr"] == [{"name": "Alïce Dupont", "email": "alice@example.org"}]
    assert [a["email"] for a in row["to_addr"]] == ["bob@example.com", "carol@example.com"]
    assert row["cc_addr"] == [{"name": "Jörg", "email": "jorg@example.net"}]
    assert row["message_id"] == "<report-7@example.org>"
    assert row["in_reply_to"] == "<draft-6@example.org>"
    assert row["references"] == ["<thread-1@example.org>", "<draft-6@example.org>"]
    assert row["date_header"].isoformat() == "2026-11-03T08:15:00+00:00"
    assert row["size"] == len(REAL_WORLD)
    assert row["attachment_count"] == 1
    assert row["attachments"][0]["filename"] == "q3.xls"
    assert row["attachments"][0]["size"] == len(b"Q1_sheet_data")
    parsed = parse_message(REAL_WORLD)
    assert row["envelope"] == json.loads(json.dumps(parsed.envelope))
    assert row["bodystructure"] == json.loads(json.dumps(parsed.bodystructure))
    assert row["envelope"]["subject"] == "=?UTF-8?B?UXVhcnRlcmx5IHJlcG9ydCDigJQgZmluYWw=?="
    async with pool.acquire() as conn:
        assert await messages.index_pending(conn) == 1
    for word in ["quarterly", "spreadsheet", "café", "dupont"]:
        hit = await pool.fetchval(
            "SELECT count(*) FROM message_words WHERE words @@ plainto_tsquery('simple', $1)", word
        )
        assert hit == 1, word
    assert await messages.raw_bytes(pool, stored.id) == REAL_WORLD


async def test_broken_mime_is_stored_byte_for_byte(pool: asyncpg.Pool, inbox: dict[str, Any]) -> None:
    """A message with broken boundaries, 8-bit junk and a NUL ingests, and its bytes come back unchanged."""
    (stored,) = await deliver(pool, BROKEN, inbox["id"])
    assert await messages.raw_bytes(pool, stored.id) == BROKEN
    row = await pool.fetchrow("SELECT subject, size FROM messages WHERE id = $1", stored.id)
    assert row["subject"] == "broken boundaries"
    assert row["size"] == len(BROKEN)
    async with pool.acquire() as conn:
        await messages.index_pending(conn)
    hit = await pool.fetchval("SELECT count(*) FROM message_words WHERE words @@ plainto_tsquery('simple', 'zebra')")
    assert hit == 1


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"no headers at all, just text",
        b"Subject: only a header",
        b"Subject: bare LF\n\nbody\n",
        b"From: \x00\x00@\x00\r\nSubject: nul \x00 in header\r\n\r\n\x00",
        bytes(random.Random(7).randrange(256) for _ in range(20_000)),
    ],
    ids=["empty", "no-headers", "header-only", "bare-lf", "nul", "binary"],
)
async def test_anything_ingests(pool: asyncpg.Pool, inbox: dict[str, Any], raw: bytes) -> None:
    """Whatever the bytes, ingest stores them and they read back identical."""
    (stored,) = await deliver(pool, raw, inbox["id"])
    assert await messages.raw_bytes(pool, stored.id) == raw


async def test_one_blob_for_many_mailboxes(pool: asyncpg.Pool, inbox: dict[str, Any]) -> None:
    """One message to two users is stored once and appears in both INBOXes as UID 1."""
    carol = await accounts.add_user(pool, "carol@example.com")
    carol_inbox = await pool.fetchval("SELECT id FROM mailboxes WHERE user_id = $1 AND name = 'INBOX'", carol["id"])
    stored = await deliver(pool, REAL_WORLD, inbox["id"], carol_inbox)
    assert sorted(s.mailbox_id for s in stored) == sorted([inbox["id"], carol_inbox])
    assert {s.uid for s in stored} == {1}
    assert await pool.fetchval("SELECT count(*) FROM blobs") == 1
    await deliver(pool, REAL_WORLD, inbox["id"])  # the same bytes again: still one blob
    assert await pool.fetchval("SELECT count(*) FROM blobs") == 1


async def test_uids_and_modseqs_ascend(pool: asyncpg.Pool, inbox: dict[str, Any]) -> None:
    """Each delivery takes the mailbox's UIDNEXT and a new modseq, and the mailbox row moves on."""
    uids = []
    for i in range(3):
        (stored,) = await deliver(pool, f"Subject: {i}\r\n\r\nbody {i}\r\n".encode(), inbox["id"])
        uids.append((stored.uid, stored.modseq))
    assert uids == [(1, 2), (2, 3), (3, 4)]
    box = await pool.fetchrow("SELECT uidnext, highestmodseq, uidvalidity FROM mailboxes WHERE id = $1", inbox["id"])
    assert (box["uidnext"], box["highestmodseq"]) == (4, 4)
    assert box["uidvalidity"] == inbox["uidvalidity"]


async def test_concurrent_deliveries_commit_in_uid_order(pool: asyncpg.Pool, dsn: str, inbox: dict[str, Any]) -> None:
    """Twenty concurrent deliveries get distinct UIDs, and listeners hear of them in UID order."""
    listener = await asyncpg.connect(dsn)
    heard: list[int] = []
    await listener.add_listener(CHANNEL, lambda *args: heard.append(json.loads(args[3])["uid"]))
    try:
        results = await asyncio.gather(
            *(deliver(pool, f"Subject: n{i}\r\n\r\n{'x' * i}\r\n".encode(), inbox["id"]) for i in range(20))
        )
        uids = sorted(r[0].uid for r in results)
        assert uids == list(range(1, 21))
        for _ in range(50):
            if len(heard) == 20:
                break
            await asyncio.sleep(0.02)
        assert heard == list(range(1, 21))
    finally:
        await listener.close()


async def test_rolled_back_delivery_leaves_nothing(pool: asyncpg.Pool, dsn: str, inbox: dict[str, Any]) -> None:
    """A delivery inside a transaction that rolls back stores nothing, uses no UID and notifies no one."""
    listener = await asyncpg.connect(dsn)
    heard: list[str] = []
    await listener.add_listener(CHANNEL, lambda *args: heard.append(args[3]))
    try:
        async with pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            await messages.ingest(conn, REAL_WORLD, [inbox["id"]])
            await tx.rollback()
        await asyncio.sleep(0.2)
        assert heard == []
        assert await pool.fetchval("SELECT count(*) FROM messages") == 0
        assert await pool.fetchval("SELECT count(*) FROM blobs") == 0
        assert await pool.fetchval("SELECT uidnext FROM mailboxes WHERE id = $1", inbox["id"]) == 1
        (stored,) = await deliver(pool, REAL_WORLD, inbox["id"])
        assert stored.uid == 1
        for _ in range(50):
            if heard:
                break
            await asyncio.sleep(0.02)
        (payload,) = heard
        data = json.loads(payload)
        assert abs(data.pop("at") - time.time()) < 60  # when it was stored, for the notification lag metric
        assert data == {
            "event": "new",
            "user": inbox["user_id"],
            "mailbox": inbox["id"],
            "id": stored.id,
            "uid": 1,
            "modseq": stored.modseq,
        }
    finally:
        await listener.close()


async def test_unknown_mailbox_fails_whole_delivery(pool: asyncpg.Pool, inbox: dict[str, Any]) -> None:
    """A delivery naming a mailbox that is gone fails as a whole: no partial copies."""
    with pytest.raises(LookupError):
        await deliver(pool, REAL_WORLD, inbox["id"], 999_999)
    assert await pool.fetchval("SELECT count(*) FROM messages") == 0


async def test_delivery_to_a_gone_mailbox_leaves_its_blob_to_the_sweep(pool: asyncpg.Pool) -> None:
    """A one-mailbox delivery (one statement, no transaction of its own) to a mailbox that is gone stores no
    message, and the blob it wrote is noted for the sweep rather than kept for ever."""
    with pytest.raises(LookupError):
        await deliver(pool, REAL_WORLD, 999_999)
    assert await pool.fetchval("SELECT count(*) FROM messages") == 0
    async with pool.acquire() as conn:
        await mailboxes.sweep_blobs(conn, timedelta(0))
    assert await pool.fetchval("SELECT count(*) FROM blobs") == 0


async def test_large_message(pool: asyncpg.Pool, inbox: dict[str, Any]) -> None:
    """A 20 MB message with a big base64 attachment ingests and reads back exactly."""
    body = (b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=" * 2 + b"\r\n") * 280_000
    raw = (
        crlf(
            "Subject: big",
            'Content-Type: multipart/mixed; boundary="b"',
            "",
            "--b",
            "Content-Type: text/plain",
            "",
            "see attachment",
            "--b",
            'Content-Type: application/octet-stream; name="big.bin"',
            "Content-Transfer-Encoding: base64",
            "",
            "",
        )
        + body
        + b"--b--\r\n"
    )
    (stored,) = await deliver(pool, raw, inbox["id"])
    assert await messages.raw_bytes(pool, stored.id) == raw
    assert await pool.fetchval("SELECT attachment_count FROM messages WHERE id = $1", stored.id) == 1


async def test_body_text_is_indexed_after_delivery(pool: asyncpg.Pool, inbox: dict[str, Any]) -> None:
    """Subject and addresses are found by search at once; body words once the indexer has run, for every copy."""
    carol = await accounts.add_user(pool, "carol@example.com")
    carol_inbox = await pool.fetchval("SELECT id FROM mailboxes WHERE user_id = $1 AND name = 'INBOX'", carol["id"])
    await deliver(pool, REAL_WORLD, inbox["id"], carol_inbox)

    async def hits(word: str) -> int:
        """Messages of bob's and carol's that the REST search finds by ``word``."""
        count = 0
        for user_id in (inbox["user_id"], carol["id"]):
            _, total = await search(pool, user_id, word)
            count += total
        return count

    assert await hits("quarterly") == 2
    assert await hits("spreadsheet") == 0
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE NOT text_indexed") == 2
    async with pool.acquire() as conn:
        assert await messages.index_pending(conn) == 2
        assert await messages.index_pending(conn) == 0
    assert await hits("spreadsheet") == 2
    assert await hits("quarterly") == 2


async def test_one_batch_gives_each_message_its_own_text(pool: asyncpg.Pool, inbox: dict[str, Any]) -> None:
    """Indexed in one batch, every message (copies, broken MIME, a NUL) gets exactly the text of its own bytes."""
    carol = await accounts.add_user(pool, "carol@example.com")
    carol_inbox = await pool.fetchval("SELECT id FROM mailboxes WHERE user_id = $1 AND name = 'INBOX'", carol["id"])
    nul = b"Subject: nul \x00 here\r\n\r\nbody with a \x00 and aardvark\r\n"
    raws = [REAL_WORLD, BROKEN, nul, b"Subject: only a header"]
    await deliver(pool, REAL_WORLD, inbox["id"], carol_inbox)
    for raw in raws[1:]:
        await deliver(pool, raw, inbox["id"])
    async with pool.acquire() as conn:
        assert await messages.index_pending(conn, limit=100) == 5
    rows = await pool.fetch(
        "SELECT b.data, t.head AS search_head, t.body AS search_body, m.text_indexed FROM messages m"
        " JOIN blobs b ON b.hash = m.blob_hash JOIN message_texts t ON t.message_id = m.id ORDER BY m.id"
    )
    assert len(rows) == 5
    for row in rows:
        raw = bytes(row["data"])
        head, body = messages.search_texts(raw, parse_message(raw))
        assert (row["search_head"], row["search_body"]) == (head.replace("\x00", ""), body.replace("\x00", ""))
        assert row["text_indexed"]
    aardvark = "SELECT count(*) FROM message_words WHERE words @@ plainto_tsquery('simple', 'aardvark')"
    assert await pool.fetchval(aardvark) == 1


async def test_concurrent_indexers_share_the_work(pool: asyncpg.Pool, inbox: dict[str, Any]) -> None:
    """Two indexers at once index every message exactly once between them."""
    for n in range(40):
        await deliver(pool, crlf(f"Subject: note {n}", "", f"word{n} zebra"), inbox["id"])

    async def drain() -> int:
        total = 0
        async with pool.acquire() as conn:
            while n := await messages.index_pending(conn, limit=7):
                total += n
        return total

    assert sum(await asyncio.gather(drain(), drain())) == 40
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE NOT text_indexed") == 0
    zebra = "SELECT count(*) FROM message_words WHERE words @@ plainto_tsquery('simple', 'zebra')"
    assert await pool.fetchval(zebra) == 40
    assert await pool.fetchval("SELECT count(*) FROM message_texts WHERE body LIKE '%word39 zebra%'") == 1


async def test_delivery_daemon_indexes_a_backlog_by_itself(pool: asyncpg.Pool, inbox: dict[str, Any]) -> None:
    """The delivery daemon's loop indexes a backlog larger than one batch, and each body word becomes searchable."""
    for n in range(130):
        await deliver(pool, crlf(f"Subject: backlog {n}", "", f"backlogword{n} okapi"), inbox["id"])
    worker = DeliveryWorker(Config(hostname="mail.example.com"), pool)
    await worker.start()
    try:
        for _ in range(200):
            if not await pool.fetchval("SELECT count(*) FROM messages WHERE NOT text_indexed"):
                break
            await asyncio.sleep(0.05)
    finally:
        await worker.stop()
    okapi = "SELECT count(*) FROM message_words WHERE words @@ plainto_tsquery('simple', 'okapi')"
    assert await pool.fetchval(okapi) == 130
    assert await pool.fetchval("SELECT count(*) FROM message_texts WHERE body = 'backlogword129 okapi'") == 1


async def test_moved_message_keeps_its_words(pool: asyncpg.Pool, inbox: dict[str, Any]) -> None:
    """An indexed message moved to another folder (a new row there) is found by its body words in its new folder,
    with nothing left for the indexer to do again."""
    archive = await mailboxes.create(pool, inbox["user_id"], "Projects")
    await deliver(pool, crlf("Subject: moving", "", "pangolin in the body"), inbox["id"])
    async with pool.acquire() as conn:
        assert await messages.index_pending(conn) == 1
        await imap_messages.copy(conn, inbox["id"], [1], archive["id"], move=True)
        assert await messages.index_pending(conn) == 0
    rows, total = await search(pool, inbox["user_id"], "pangolin")
    assert total == 1
    assert [r["mailbox_id"] for r in rows] == [archive["id"]]
