"""Quota through the REST API: the profile shows usage and limits; sending respects the recipients' and own quota."""

from __future__ import annotations

from relate.services import accounts

from .conftest import Api, message

ALICE = "alice@example.com"
BOB = "bob@example.com"


async def test_profile_shows_usage_and_limits(api: Api) -> None:
    """GET /api/profile has quota: bytes and messages used (every folder) and the limits in force, null for none."""
    await api.deliver(message("one"), ALICE)
    await api.deliver(message("two"), ALICE)
    status, body = await api.call("GET", "/api/profile", api.alice_read)
    assert status == 200
    used = await api.pool.fetchval(
        "SELECT sum(m.size) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id JOIN users u ON u.id = b.user_id"
        " WHERE u.address = $1",
        ALICE,
    )
    assert body["quota"] == {
        "storage": {"used": used, "limit": None},
        "messages": {"used": 2, "limit": None},
        "full": False,
        "fullSince": None,
    }
    await accounts.set_quota(api.pool, ALICE, {"storage": 1024**3, "messages": 2})
    body = (await api.call("GET", "/api/profile", api.alice_read))[1]
    assert body["quota"]["storage"] == {"used": used, "limit": 1024**3}
    assert body["quota"]["messages"] == {"used": 2, "limit": 2}
    assert body["quota"]["full"] is True


async def test_sending_to_a_full_local_user_queues_that_copy(api: Api) -> None:
    """POST /api/outbound/send to a full local user: 201, that recipient pending (queued), the others delivered."""
    await accounts.add_user(api.pool, "carol@example.com", "Carol")
    await accounts.set_quota(api.pool, BOB, {"messages": 1})
    await api.deliver(message("fills bob", to=BOB), BOB)
    status, sent = await api.call(
        "POST", "/api/outbound/send", json={"to": [BOB, "carol@example.com"], "subject": "Hi", "textBody": "hello\n"}
    )
    assert status == 201, sent
    assert {r["address"]: r["status"] for r in sent["recipients"]} == {BOB: "pending", "carol@example.com": "sent"}
    assert sent["status"] == "queued"
    assert len((await api.call("GET", "/api/emails", api.bob))[1]["items"]) == 1
    assert sent["sentEmailId"] is not None


async def test_sending_when_the_own_mailbox_is_full_keeps_no_sent_copy(api: Api) -> None:
    """A full sender's message still goes out; its Sent copy is not kept (sentEmailId null)."""
    await accounts.set_quota(api.pool, ALICE, {"messages": 1})
    await api.deliver(message("fills alice"), ALICE)
    status, sent = await api.call("POST", "/api/outbound/send", json={"to": [BOB], "subject": "Hi", "textBody": "x\n"})
    assert status == 201, sent
    assert sent["sentEmailId"] is None
    assert {r["address"]: r["status"] for r in sent["recipients"]} == {BOB: "sent"}
    assert len((await api.call("GET", "/api/emails", api.bob))[1]["items"]) == 1
