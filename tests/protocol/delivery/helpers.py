"""Helpers shared by the delivery tests and the `relatectl queue` tests: composing and queueing mail, reading DSNs."""

from __future__ import annotations

import email
import email.message
import email.parser
import email.utils
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from relate.services import accounts
from relate.store import messages, outbound

ALICE = "alice@example.com"
BOB = "bob@example.com"


def compose(
    sender: str,
    to: Sequence[str],
    *,
    subject: str = "Hello",
    body: str = "Hello there.\r\nSee you soon.\r\n",
    message_id: str | None = None,
    from_header: str | None = None,
    to_header: str | None = None,
    headers: Sequence[str] = (),
) -> tuple[bytes, str]:
    """A small RFC 5322 message with CRLF line ends; (bytes, its Message-Id)."""
    message_id = message_id or f"<{uuid.uuid4().hex}@example.com>"
    head = [
        f"From: Alice <{from_header or sender}>",
        f"To: {to_header or ', '.join(to)}",
        f"Subject: {subject}",
        *headers,
        f"Date: {email.utils.format_datetime(datetime.now(UTC))}",
        f"Message-Id: {message_id}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    return ("\r\n".join(head) + "\r\n\r\n" + body).encode(), message_id


async def queue_mail(
    pool: asyncpg.Pool,
    to: Sequence[str],
    *,
    sender: str = ALICE,
    mail_from: str | None = None,
    **compose_args: Any,
) -> int:
    """Queue a message from ``sender`` (a local user) the way the submission path does; returns its id."""
    user = await accounts.get_user(pool, sender)
    raw, message_id = compose(sender, to, **compose_args)
    async with pool.acquire() as conn, conn.transaction():
        blob = await messages.put_blob(conn, raw)
        return await outbound.queue_message(
            conn,
            user_id=user["id"],
            from_address=sender,
            mail_from=sender if mail_from is None else mail_from,
            subject=compose_args.get("subject", "Hello"),
            message_id=message_id,
            blob_hash=blob,
            recipients=list(to),
        )


@dataclass
class Dsn:
    """A delivery status notification, as the stdlib email package reads it."""

    message: email.message.Message
    human: str
    per_message: email.message.Message
    recipients: list[email.message.Message]
    original: email.message.Message  # the text/rfc822-headers part

    def recipient(self, address: str) -> email.message.Message:
        found = [r for r in self.recipients if r["Final-Recipient"] == f"rfc822; {address}"]
        assert len(found) == 1, [r["Final-Recipient"] for r in self.recipients]
        return found[0]


def parse_dsn(raw: bytes) -> Dsn:
    """Parse and check the RFC 3464 structure: multipart/report with the three parts."""
    msg = email.message_from_bytes(raw)
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    assert isinstance(parts, list)
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    human, status, headers = parts
    blocks = status.get_payload()
    assert isinstance(blocks, list)
    assert len(blocks) >= 2, blocks
    original = email.parser.HeaderParser().parsestr(headers.get_payload())
    return Dsn(msg, human.get_payload(decode=True).decode(), blocks[0], blocks[1:], original)
