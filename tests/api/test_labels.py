"""Labels: CRUD, on emails one by one and in bulk, filters, hub events; an IMAP keyword is the label."""

from __future__ import annotations

import asyncio
import imaplib

from relate.services.labels import derived_keyword
from tests.api.conftest import Api, imap_flags, imap_port, message
from tests.api.test_hub import hub_client

BULK = "/api/emails/bulk"


async def _label(api: Api, name: str, **more: str) -> dict[str, object]:
    status, body = await api.call("POST", "/api/labels", json={"name": name, **more})
    assert status == 201, body
    return dict(body)


def test_keywords_follow_thunderbird() -> None:
    """Thunderbird's default tags are $label1..$label5; other names become the key Thunderbird derives."""
    assert derived_keyword("Important") == "$label1"
    assert derived_keyword("to do") == "$label4"
    assert derived_keyword("Project X (2026)") == "project_x__2026_"
    assert derived_keyword("Überweisung") == "&anw-berweisung"
    assert derived_keyword("a]b,c") == "a_b_c"
    assert derived_keyword("$Junk") == "$junk_"


async def test_label_crud_and_hub_events(api: Api) -> None:
    """Create, rename, recolour, list and delete labels; the keyword never changes; the hub hears each change."""
    async with hub_client(api) as alice:
        work = await _label(api, "Work")
        assert (work["keyword"], work["color"]) == ("$label2", "#FF9900")
        made = await alice.next("LabelChanged")
        assert made["data"] == {"change": "created", **work}
        custom = await _label(api, "Project X", color="#12ab34")
        assert (custom["keyword"], custom["color"]) == ("project_x", "#12AB34")
        assert (await alice.next("LabelChanged"))["data"]["id"] == custom["id"]
        status, renamed = await api.call("PATCH", f"/api/labels/{custom['id']}", json={"name": "Project Y"})
        assert status == 200
        assert (renamed["name"], renamed["keyword"]) == ("Project Y", "project_x")
        updated = await alice.next("LabelChanged")
        assert updated["data"]["change"] == "updated"
        assert updated["data"]["name"] == "Project Y"
        # A new label named like the old one gets another keyword: the first still holds it.
        again = await _label(api, "Project X")
        assert again["keyword"] == "project_x_2"
        status, body = await api.call("POST", "/api/labels", json={"name": "project y"})
        assert (status, body["error"]) == (409, "conflict")
        status, body = await api.call("PATCH", f"/api/labels/{work['id']}", json={"keyword": "x"})
        assert status == 422
        for bad in ({"name": ""}, {"name": "x", "color": "red"}, {"name": "x", "keyword": "\\Seen"}):
            status, body = await api.call("POST", "/api/labels", json=bad)
            assert (status, body["error"]) == (422, "invalid"), bad
        _, listed = await api.call("GET", "/api/labels")
        assert [label["name"] for label in listed["items"]] == ["Project X", "Project Y", "Work"]
        _, bobs = await api.call("GET", "/api/labels", api.bob)
        assert bobs == {"items": [], "total": 0}
        status, _ = await api.call("DELETE", f"/api/labels/{work['id']}", api.bob)
        assert status == 404
        status, body = await api.call("DELETE", f"/api/labels/{work['id']}")
        assert (status, body) == (200, {"deleted": True, "id": work["id"], "unlabelled": 0})
        assert (await alice.next("LabelChanged"))["data"]["id"] == again["id"]
        gone = await alice.next("LabelChanged")
        assert gone["data"]["change"] == "deleted"
        assert gone["data"]["id"] == work["id"]
    status, _ = await api.call("PATCH", f"/api/labels/{work['id']}", json={"name": "Again"})
    assert status == 404


async def test_label_on_email_filters_and_imap_sees_the_keyword(api: Api) -> None:
    """A label put on over REST is the keyword to an IMAP client; a keyword an IMAP client sets is the label over
    REST; lists and search filter by label; taking it off works both ways too."""
    ids = [i for s in ("one", "two", "three") for i in await api.deliver(message(s), "alice@example.com")]
    later = await _label(api, "Later")
    proj = await _label(api, "Projekt Ü")
    async with hub_client(api) as alice:
        status, body = await api.call("PUT", f"/api/emails/{ids[0]}/labels/{later['id']}")
        assert status == 200
        assert body["labels"] == [later["id"]]
        assert "$label5" in body["flags"]
        event = await alice.next("EmailUpdated")
        assert event["data"]["id"] == ids[0]
        assert "$label5" in event["data"]["flags"]

    def imap(port: int) -> tuple[bytes, bytes]:
        client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
        try:
            client.login("alice@example.com", api.alice_imap)
            client.select("INBOX")
            _, first = client.fetch("1", "(FLAGS)")
            client.store("2", "+FLAGS", f"({proj['keyword']})")
            _, found = client.search(None, "KEYWORD", "$label5")
            return b" ".join(d for d in first if isinstance(d, bytes)), found[0]
        finally:
            client.logout()

    async with imap_port(api) as port:
        first, found = await asyncio.to_thread(imap, port)
    assert b"$label5" in first
    assert found == b"1"
    _, detail = await api.call("GET", f"/api/emails/{ids[1]}")
    assert detail["labels"] == [proj["id"]]
    _, listed = await api.call("GET", f"/api/emails?label={proj['id']}")
    assert [e["id"] for e in listed["items"]] == [ids[1]]
    assert listed["total"] == 1
    _, found_later = await api.call("GET", f"/api/emails/search?label={later['id']}")
    assert [e["id"] for e in found_later["items"]] == [ids[0]]
    _, everything = await api.call("GET", "/api/emails")
    assert {e["id"]: e["labels"] for e in everything["items"]} == {
        ids[0]: [later["id"]],
        ids[1]: [proj["id"]],
        ids[2]: [],
    }
    status, _ = await api.call("GET", "/api/emails?label=999999")
    assert status == 404
    status, body = await api.call("DELETE", f"/api/emails/{ids[0]}/labels/{later['id']}")
    assert (status, body["labels"]) == (200, [])
    status, _ = await api.call("PUT", f"/api/emails/{ids[0]}/labels/{later['id']}", api.bob)
    assert status == 404  # bob has no such label
    bob_label = await _label_for(api, api.bob, "Mine")
    status, _ = await api.call("PUT", f"/api/emails/{ids[0]}/labels/{bob_label}", api.bob)
    assert status == 404  # and alice's email is not bob's

    async with imap_port(api) as port:
        assert b"$label5" not in await asyncio.to_thread(imap_flags, api, port, "1")


async def _label_for(api: Api, key: str, name: str) -> int:
    status, body = await api.call("POST", "/api/labels", key, json={"name": name})
    assert status == 201
    return int(body["id"])


async def test_bulk_label_by_query_and_delete_takes_it_off(api: Api) -> None:
    """Bulk label by ids and unlabel by a label query are one hub event each; deleting a label takes its keyword off
    every email (one BulkChanged unlabel)."""
    ids = [i for s in ("a", "b", "c") for i in await api.deliver(message(s), "alice@example.com")]
    red = await _label(api, "Red")
    async with hub_client(api) as alice:
        status, body = await api.call("POST", BULK, json={"action": "label", "label": red["id"], "ids": ids})
        assert (status, body["count"]) == (200, 3)
        events = await alice.during(1.0)
    kinds = [e["type"] for e in events]
    assert kinds.count("BulkChanged") == 1
    assert "EmailUpdated" not in kinds
    status, body = await api.call(
        "POST", BULK, json={"action": "unlabel", "label": red["id"], "query": {"label": red["id"], "q": "b"}}
    )
    assert (status, body["ids"]) == (200, [ids[1]])
    status, body = await api.call("POST", BULK, json={"action": "label", "ids": ids})
    assert status == 422
    status, body = await api.call("POST", BULK, json={"action": "flag", "label": red["id"], "ids": ids})
    assert status == 422
    status, body = await api.call("POST", BULK, json={"action": "label", "label": 10**12, "ids": ids})
    assert status == 404
    async with hub_client(api) as alice:
        status, body = await api.call("DELETE", f"/api/labels/{red['id']}")
        assert (status, body["unlabelled"]) == (200, 2)
        events = await alice.during(1.0)
    assert next(e["data"] for e in events if e["type"] == "BulkChanged")["action"] == "unlabel"
    assert [e["data"]["change"] for e in events if e["type"] == "LabelChanged"] == ["deleted"]
    _, listed = await api.call("GET", "/api/emails")
    assert all(red["keyword"] not in e["flags"] and e["labels"] == [] for e in listed["items"])
