"""Stable ids: an email keeps its id across moves (REST or IMAP), while IMAP sees MOVE's expunge and new UID."""

from __future__ import annotations

import asyncio
import imaplib

from tests.api.conftest import Api, imap_port, message
from tests.api.test_hub import hub_client


async def test_patch_move_keeps_the_id_and_imap_sees_a_move(api: Api) -> None:
    """PATCH {"mailbox": "Archive"} answers the same id, found in Archive; an IMAP session on INBOX hears the
    EXPUNGE, and Archive holds the message under a new UID with its flags."""
    first = await api.deliver(message("keep me"), "alice@example.com")
    (email_id,) = await api.deliver(message("move me"), "alice@example.com")
    status, _ = await api.call("PATCH", f"/api/emails/{email_id}", json={"isRead": True})
    assert status == 200
    async with imap_port(api) as port:
        client = await asyncio.to_thread(imaplib.IMAP4, "127.0.0.1", port, timeout=10)
        try:
            await asyncio.to_thread(client.login, "alice@example.com", api.alice_imap)
            await asyncio.to_thread(client.select, "INBOX")
            status, body = await api.call("PATCH", f"/api/emails/{email_id}", json={"mailbox": "Archive"})
            assert status == 200
            assert body["id"] == email_id
            await asyncio.to_thread(client.noop)
            assert client.response("EXPUNGE") == ("EXPUNGE", [b"2"])
            await asyncio.to_thread(client.select, "Archive")
            _, data = await asyncio.to_thread(client.uid, "FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            fetched = b"".join(part for item in data for part in (item if isinstance(item, tuple) else (item,)))
            assert b"move me" in fetched
            assert b"\\Seen" in fetched
            assert b"UID 1 " in fetched
        finally:
            await asyncio.to_thread(client.logout)
    status, detail = await api.call("GET", f"/api/emails/{email_id}")
    assert status == 200
    assert detail["mailboxName"] == "Archive"
    assert detail["isRead"] is True
    _, inbox = await api.call("GET", "/api/emails")
    assert [e["id"] for e in inbox["items"]] == first


async def test_imap_move_keeps_the_rest_id(api: Api) -> None:
    """A message moved by an IMAP client (UID MOVE) keeps its REST id, and the hub tells of a move."""
    (email_id,) = await api.deliver(message("imap moves me"), "alice@example.com")

    def move() -> None:
        client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
        try:
            client.login("alice@example.com", api.alice_imap)
            client.select("INBOX")
            status, _ = client.uid("MOVE", "1", "Archive")
            assert status == "OK"
        finally:
            client.logout()

    async with imap_port(api) as port, hub_client(api) as alice:
        await asyncio.to_thread(move)
        moved = await alice.next("EmailMoved")
    assert moved["data"]["ids"] == [email_id]
    status, detail = await api.call("GET", f"/api/emails/{email_id}")
    assert status == 200
    assert detail["mailboxName"] == "Archive"


async def test_moves_there_and_back_keep_one_id_and_counts(api: Api) -> None:
    """Moving to Trash (DELETE) and back (PATCH) keeps one id; folder totals and unread counts follow."""
    (email_id,) = await api.deliver(message("round trip"), "alice@example.com")
    status, body = await api.call("DELETE", f"/api/emails/{email_id}")
    assert (status, body["id"], body["deleted"]) == (200, email_id, False)
    _, boxes = await api.call("GET", "/api/mailboxes")
    totals = {b["name"]: (b["total"], b["unread"]) for b in boxes["items"]}
    assert totals["INBOX"] == (0, 0)
    assert totals["Trash"] == (1, 1)
    status, body = await api.call("PATCH", f"/api/emails/{email_id}", json={"mailbox": "INBOX"})
    assert (status, body["id"]) == (200, email_id)
    _, boxes = await api.call("GET", "/api/mailboxes")
    totals = {b["name"]: (b["total"], b["unread"]) for b in boxes["items"]}
    assert totals["INBOX"] == (1, 1)
    assert totals["Trash"] == (0, 0)
