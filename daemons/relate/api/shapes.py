"""The JSON shapes the API answers with for mail and folders, shared by the route modules and the hub.

Route modules import these (and api/app.py's request helpers), never each
other: a shape used by two routes lives here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from relate.store import mailboxes as mailbox_store


def person(item: dict[str, Any]) -> dict[str, Any]:
    return {"name": item.get("name"), "email": item.get("email")}


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def summary(row: dict[str, Any], labels: dict[str, int] | None = None) -> dict[str, Any]:
    """The listing shape of a message (also the ``data`` of NewEmail events); with the user's label ids by
    keyword (services/labels.py by_keyword), ``labels`` too: the labels among its flags."""
    from_addr = row.get("from_addr") or []
    shape = {
        "id": row["id"],
        "mailboxId": row["mailbox_id"],
        "from": person(from_addr[0]) if from_addr else None,
        "to": [person(a) for a in row.get("to_addr") or []],
        "subject": row.get("subject"),
        "received": iso(row["internal_date"]),
        "date": iso(row.get("date_header")),
        "size": row["size"],
        "isRead": "\\Seen" in row["flags"],
        "flags": list(row["flags"]),
        "attachmentCount": row["attachment_count"],
        "threadId": row.get("thread_id"),
    }
    if labels is not None:
        shape["labels"] = sorted(labels[f] for f in row["flags"] if f in labels)
    return shape


def mailbox_name(name: str) -> str:
    """A folder's name as apps see it: INBOX spelt so, whatever its stored case."""
    return "INBOX" if mailbox_store.is_inbox(name) else name


def mailbox(row: dict[str, Any]) -> dict[str, Any]:
    """The shape of a folder (GET /api/mailboxes, and the answers that create or rename one)."""
    return {
        "id": row["id"],
        "name": mailbox_name(row["name"]),
        "specialUse": row["special_use"],
        "subscribed": row["subscribed"],
        "total": row["total"],
        "unread": row["unread"],
    }


def cid_path(email_id: int, content_id: str) -> str:
    """Where the API serves the part of ``email_id`` whose Content-ID is ``content_id`` (no angle brackets)."""
    return f"/api/emails/{email_id}/cid/{quote(content_id, safe='')}"
