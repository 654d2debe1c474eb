"""Bulk actions: up to 1,000 emails by ids or a search, one transaction, one hub event; IMAP sees each change."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.api.conftest import Api, imap_flags, imap_port, message
from tests.api.test_hub import hub_client

BULK = "/api/emails/bulk"


async def _folders(api: Api) -> dict[str, dict[str, Any]]:
    _, body = await api.call("GET", "/api/mailboxes")
    return {b["name"]: b for b in body["items"]}


async def _deliver(api: Api, *subjects: str) -> list[int]:
    return [i for s in subjects for i in await api.deliver(message(s), "alice@example.com")]


async def test_mark_read_across_folders_is_one_hub_event(api: Api) -> None:
    """markRead on ids in two folders changes them all; the hub sends one BulkChanged (no EmailUpdated per email)
    and the unread counts; an IMAP client sees \\Seen on each."""
    ids = await _deliver(api, "a", "b", "c")
    folders = await _folders(api)
    await api.call("PATCH", f"/api/emails/{ids[2]}", json={"mailbox": "Archive"})
    async with hub_client(api) as alice:
        status, body = await api.call("POST", BULK, json={"action": "markRead", "ids": ids})
        assert status == 200
        assert (body["action"], body["count"], body["ids"], body["notFound"]) == ("markRead", 3, sorted(ids), [])
        events = await alice.during(1.0)
    kinds = [e["type"] for e in events]
    assert kinds.count("BulkChanged") == 1
    assert "EmailUpdated" not in kinds
    (summary,) = [e["data"] for e in events if e["type"] == "BulkChanged"]
    assert summary == {
        "action": "markRead",
        "count": 3,
        "mailboxIds": sorted([folders["INBOX"]["id"], folders["Archive"]["id"]]),
    }
    unread = {e["data"]["mailboxId"]: e["data"]["unread"] for e in events if e["type"] == "UnreadCountChanged"}
    assert unread == {folders["INBOX"]["id"]: 0, folders["Archive"]["id"]: 0}

    async with imap_port(api) as port:
        seen = await asyncio.to_thread(imap_flags, api, port)
    assert seen.count(b"\\Seen") == 2


async def test_move_by_search_keeps_ids_and_lists_foreign_ids(api: Api) -> None:
    """move with a query moves what the search finds, keeping ids; with ids, another user's id is in notFound and
    untouched."""
    ids = await _deliver(api, "invoice 1", "invoice 2", "hello")
    (bobs,) = await api.deliver(message("invoice bob", to="bob@example.com"), "bob@example.com")
    folders = await _folders(api)
    status, body = await api.call(
        "POST", BULK, json={"action": "move", "query": {"q": "invoice"}, "mailbox": "Archive"}
    )
    assert status == 200
    assert (body["count"], body["ids"], body["mailboxId"]) == (2, sorted(ids[:2]), folders["Archive"]["id"])
    for email_id in ids[:2]:
        _, detail = await api.call("GET", f"/api/emails/{email_id}")
        assert detail["mailboxName"] == "Archive"
    status, body = await api.call("POST", BULK, json={"action": "flag", "ids": [ids[2], bobs]})
    assert (status, body["ids"], body["notFound"]) == (200, [ids[2]], [bobs])
    _, theirs = await api.call("GET", f"/api/emails/{bobs}", api.bob)
    assert "\\Flagged" not in theirs["flags"]


async def test_delete_moves_to_trash_and_removes_from_trash(api: Api) -> None:
    """delete moves inbox mail to Trash (same ids) and removes what was in Trash already, in one call."""
    ids = await _deliver(api, "keep a while", "gone", "gone too")
    await api.call("DELETE", f"/api/emails/{ids[1]}")  # into Trash
    await api.call("DELETE", f"/api/emails/{ids[2]}")
    status, body = await api.call("POST", BULK, json={"action": "delete", "ids": ids})
    assert status == 200
    assert (body["count"], sorted(body["removed"])) == (3, sorted(ids[1:]))
    trash = (await _folders(api))["Trash"]
    assert body["mailboxId"] == trash["id"]
    _, listing = await api.call("GET", f"/api/emails?mailbox={trash['id']}")
    assert [e["id"] for e in listing["items"]] == [ids[0]]
    for email_id in ids[1:]:
        status, _ = await api.call("GET", f"/api/emails/{email_id}")
        assert status == 404


async def test_bad_requests_change_nothing(api: Api) -> None:
    """Past 1000 ids, ids and query both or neither, a move without a folder or to another user's: 422 or 404, and
    no email changes."""
    (email_id,) = await _deliver(api, "untouched")
    bobs_inbox = (await api.call("GET", "/api/mailboxes", api.bob))[1]["items"][0]["id"]
    for body, status in (
        ({"action": "markRead", "ids": list(range(1, 1002))}, 422),
        ({"action": "markRead", "ids": []}, 422),
        ({"action": "markRead", "ids": [email_id], "query": {}}, 422),
        ({"action": "markRead"}, 422),
        ({"action": "burn", "ids": [email_id]}, 422),
        ({"action": "move", "ids": [email_id]}, 422),
        ({"action": "markRead", "ids": [email_id], "mailbox": "Archive"}, 422),
        ({"action": "markRead", "query": {"isRead": "no"}}, 422),
        ({"action": "move", "ids": [email_id], "mailbox": bobs_inbox}, 404),
    ):
        answer_status, answer = await api.call("POST", BULK, json=body)
        assert answer_status == status, (body, answer)
    status, _ = await api.call("POST", BULK, api.alice_read, json={"action": "markRead", "ids": [email_id]})
    assert status == 403
    _, detail = await api.call("GET", f"/api/emails/{email_id}")
    assert (detail["mailboxName"], detail["flags"]) == ("INBOX", [])
