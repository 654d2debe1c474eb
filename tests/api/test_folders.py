"""Folders over REST: create, rename, delete with IMAP's rules; IMAP sees them, and the hub tells of every change."""

from __future__ import annotations

import asyncio
import imaplib
from typing import Any

from tests.api.conftest import Api, imap_port, message
from tests.api.test_hub import hub_client


async def _folders(api: Api) -> dict[str, dict[str, Any]]:
    status, body = await api.call("GET", "/api/mailboxes")
    assert status == 200
    return {b["name"]: b for b in body["items"]}


async def _imap_list(port: int, key: str) -> list[str]:
    """The folder names an IMAP client lists (LIST "" *)."""

    def run() -> list[str]:
        client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
        try:
            client.login("alice@example.com", key)
            _, lines = client.list()
            return sorted(line.decode().rsplit(' "/" ', 1)[1].strip('"') for line in lines if isinstance(line, bytes))
        finally:
            client.logout()

    return await asyncio.to_thread(run)


async def test_create_makes_parents_and_imap_lists_them(api: Api) -> None:
    """POST /api/mailboxes makes the folder (and its parents), answered 201 with its shape; IMAP lists both; the hub
    sends MailboxChanged for each."""
    async with hub_client(api) as alice:
        status, body = await api.call("POST", "/api/mailboxes", json={"name": "Projects/2026/"})
        assert status == 201
        assert {k: body[k] for k in ("name", "specialUse", "total", "unread")} == {
            "name": "Projects/2026",
            "specialUse": None,
            "total": 0,
            "unread": 0,
        }
        made = {(await alice.next("MailboxChanged"))["data"]["name"] for _ in range(2)}
    assert made == {"Projects", "Projects/2026"}
    assert {"Projects", "Projects/2026"} <= set(await _folders(api))
    async with imap_port(api) as port:
        assert {"Projects", "Projects/2026"} <= set(await _imap_list(port, api.alice_imap))


async def test_create_refuses_what_imap_would(api: Api) -> None:
    """A folder that exists, INBOX, a taken special use: 409; an empty level, a control character or a bad special
    use: 422; nothing is made."""
    before = set(await _folders(api))
    for body in ({"name": "Archive"}, {"name": "inbox"}, {"name": "Bin", "specialUse": "\\Trash"}):
        status, answer = await api.call("POST", "/api/mailboxes", json=body)
        assert (status, answer["error"]) == (409, "conflict"), body
    for body in (
        {"name": "a//b"},
        {"name": "/a"},
        {"name": "a\x01b"},
        {"name": ""},
        {"name": "X", "specialUse": "\\Y"},
    ):
        status, answer = await api.call("POST", "/api/mailboxes", json=body)
        assert (status, answer["error"]) == (422, "invalid"), body
    status, _ = await api.call("POST", "/api/mailboxes", api.alice_read, json={"name": "Nope"})
    assert status == 403
    assert set(await _folders(api)) == before


async def test_rename_takes_children_and_mail_along(api: Api) -> None:
    """PATCH renames a folder and those below it; its mail keeps its ids; IMAP lists the new names; the hub sends
    MailboxChanged renamed; renaming onto an existing name is 409, below itself 422."""
    status, projects = await api.call("POST", "/api/mailboxes", json={"name": "Projects/2026"})
    parent = (await _folders(api))["Projects"]
    (email_id,) = await api.deliver(message("plans"), "alice@example.com")
    status, _ = await api.call("PATCH", f"/api/emails/{email_id}", json={"mailbox": projects["id"]})
    assert status == 200
    async with hub_client(api) as alice:
        status, body = await api.call("PATCH", f"/api/mailboxes/{parent['id']}", json={"name": "Work"})
        assert (status, body["id"], body["name"]) == (200, parent["id"], "Work")
        changed = await alice.next("MailboxChanged")
        assert changed["data"] == {"change": "renamed", "id": parent["id"], "name": "Work", "specialUse": None}
    folders = await _folders(api)
    assert "Work/2026" in folders
    assert "Projects" not in folders
    status, detail = await api.call("GET", f"/api/emails/{email_id}")
    assert (status, detail["mailboxName"]) == (200, "Work/2026")
    async with imap_port(api) as port:
        names = await _imap_list(port, api.alice_imap)
    assert "Work/2026" in names
    assert "Projects/2026" not in names
    status, body = await api.call("PATCH", f"/api/mailboxes/{parent['id']}", json={"name": "Archive"})
    assert (status, body["error"]) == (409, "conflict")
    status, body = await api.call("PATCH", f"/api/mailboxes/{parent['id']}", json={"name": "Work/2026/Work"})
    assert (status, body["error"]) == (422, "invalid")


async def test_renaming_inbox_moves_its_mail_to_a_new_folder(api: Api) -> None:
    """Renaming INBOX (RFC 9051 §6.3.6) answers a new folder holding INBOX's mail under the same ids; INBOX stays,
    empty."""
    ids = [
        *await api.deliver(message("one"), "alice@example.com"),
        *await api.deliver(message("two"), "alice@example.com"),
    ]
    inbox = (await _folders(api))["INBOX"]
    status, body = await api.call("PATCH", f"/api/mailboxes/{inbox['id']}", json={"name": "Old mail"})
    assert status == 200
    assert body["id"] != inbox["id"]
    assert (body["name"], body["total"]) == ("Old mail", 2)
    folders = await _folders(api)
    assert folders["INBOX"]["total"] == 0
    for email_id in ids:
        status, detail = await api.call("GET", f"/api/emails/{email_id}")
        assert (status, detail["mailboxName"]) == (200, "Old mail")


async def test_delete_follows_imap_rules(api: Api) -> None:
    """DELETE removes a folder and its mail for good; INBOX, a special-use folder and one with folders below it are
    409 and stay; the hub sends MailboxChanged deleted."""
    status, child = await api.call("POST", "/api/mailboxes", json={"name": "Old/Stuff"})
    folders = await _folders(api)
    (email_id,) = await api.deliver(message("old"), "alice@example.com")
    await api.call("PATCH", f"/api/emails/{email_id}", json={"mailbox": child["id"]})
    for name in ("INBOX", "Sent", "Old"):
        status, body = await api.call("DELETE", f"/api/mailboxes/{folders[name]['id']}")
        assert (status, body["error"]) == (409, "conflict"), name
    async with hub_client(api) as alice:
        status, body = await api.call("DELETE", f"/api/mailboxes/{child['id']}")
        assert (status, body) == (200, {"deleted": True, "id": child["id"]})
        assert (await alice.next("MailboxChanged"))["data"] == {"change": "deleted", "id": child["id"]}
    status, _ = await api.call("GET", f"/api/emails/{email_id}")
    assert status == 404
    status, _ = await api.call("DELETE", f"/api/mailboxes/{folders['Old']['id']}")
    assert status == 200
    assert {"INBOX", "Sent"} <= set(await _folders(api))
    status, _ = await api.call("DELETE", f"/api/mailboxes/{folders['Old']['id']}")
    assert status == 404
    status, _ = await api.call("DELETE", f"/api/mailboxes/{folders['INBOX']['id']}", api.bob)
    assert status == 404  # another user's folder is no folder


async def test_imap_folder_changes_reach_the_hub(api: Api) -> None:
    """CREATE, RENAME and DELETE by an IMAP client reach the owner's hub as MailboxChanged, in order."""

    def script() -> None:
        client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
        try:
            client.login("alice@example.com", api.alice_imap)
            assert client.create("Receipts")[0] == "OK"
            assert client.rename("Receipts", "Bills")[0] == "OK"
            assert client.delete("Bills")[0] == "OK"
        finally:
            client.logout()

    async with imap_port(api) as port, hub_client(api) as alice:
        await asyncio.to_thread(script)
        changes = [(await alice.next("MailboxChanged"))["data"] for _ in range(3)]
    assert [c["change"] for c in changes] == ["created", "renamed", "deleted"]
    assert len({c["id"] for c in changes}) == 1
