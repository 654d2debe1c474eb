"""An outbound row's links to its Drafts and Sent copies become NULL when the copy goes, however it goes
(one removal, a bulk removal, a deleted folder), and links to copies that stay are left alone."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from relate.services import accounts
from relate.store import imap_messages, mailboxes, messages


def message(n: int) -> bytes:
    return (
        f"From: carol@example.com\r\nTo: dave@example.org\r\nSubject: link {n}\r\n"
        f"Message-ID: <link-{n}@example.com>\r\n\r\nbody {n}\r\n"
    ).encode()


@pytest.fixture
async def carol(pool: asyncpg.Pool) -> dict[str, Any]:
    """carol@example.com with a Scratch folder holding four messages (UIDs 1-4)."""
    await accounts.add_domain(pool, "example.com")
    user = await accounts.add_user(pool, "carol@example.com")
    async with pool.acquire() as conn:
        box = await mailboxes.create(conn, user["id"], "Scratch")
        stored = [(await messages.ingest(conn, message(n), [box["id"]]))[0] for n in range(4)]
    return {"id": user["id"], "box": box["id"], "ids": [s.id for s in stored]}


async def outbound_row(pool: asyncpg.Pool, user_id: int, *, draft: int | None, sent: int | None) -> int:
    row_id: int = await pool.fetchval(
        """INSERT INTO outbound_emails (user_id, status, from_address, draft_message_id, sent_message_id)
           VALUES ($1, 'sent', 'carol@example.com', $2, $3) RETURNING id""",
        user_id,
        draft,
        sent,
    )
    return row_id


async def links(pool: asyncpg.Pool, row_id: int) -> tuple[int | None, int | None]:
    row = await pool.fetchrow("SELECT draft_message_id, sent_message_id FROM outbound_emails WHERE id = $1", row_id)
    return row["draft_message_id"], row["sent_message_id"]


async def test_removing_copies_unlinks_only_them(pool: asyncpg.Pool, carol: dict[str, Any]) -> None:
    """Removing a draft copy and a sent copy in one go clears those links; links to kept messages stay."""
    ids = carol["ids"]
    gone_draft = await outbound_row(pool, carol["id"], draft=ids[0], sent=ids[2])
    gone_sent = await outbound_row(pool, carol["id"], draft=None, sent=ids[1])
    kept = await outbound_row(pool, carol["id"], draft=ids[3], sent=ids[2])
    async with pool.acquire() as conn:
        assert await imap_messages.remove(conn, carol["box"], [1, 2]) == [1, 2]
    assert await links(pool, gone_draft) == (None, ids[2])
    assert await links(pool, gone_sent) == (None, None)
    assert await links(pool, kept) == (ids[3], ids[2])


async def test_deleting_the_folder_unlinks_its_copies(pool: asyncpg.Pool, carol: dict[str, Any]) -> None:
    """Deleting a folder clears the links to the copies that were in it."""
    ids = carol["ids"]
    row = await outbound_row(pool, carol["id"], draft=ids[0], sent=ids[3])
    async with pool.acquire() as conn:
        await mailboxes.delete(conn, carol["id"], "Scratch")
    assert await links(pool, row) == (None, None)
