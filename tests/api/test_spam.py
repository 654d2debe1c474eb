"""The spam filter over REST: the detail's spam block, the user's sender lists, and a move into Junk queued for
learning."""

from __future__ import annotations

from .conftest import Api, message

STATUS = (
    b"X-Spam-Status: Yes, score=8.00 required=15.00 action=add_header\r\n"
    b"X-Spam-Score: 8.00\r\n"
    b"X-Spam-Symbols: BAYES_SPAM(5.10), RELATE_TEST_SPAMMY(2.90)\r\n"
)


async def test_detail_has_the_spam_block(api: Api) -> None:
    """The X-Spam-* fields written on arrival become the detail's spam block; mail without them has none."""
    (spam_id,) = await api.deliver(STATUS + message("spam"), "alice@example.com")
    (plain_id,) = await api.deliver(message("plain"), "alice@example.com")
    status, body = await api.call("GET", f"/api/emails/{spam_id}")
    assert status == 200
    assert body["spam"] == {
        "spam": True,
        "score": 8.0,
        "required": 15.0,
        "action": "add header",
        "skipped": None,
        "symbols": [{"name": "BAYES_SPAM", "score": 5.1}, {"name": "RELATE_TEST_SPAMMY", "score": 2.9}],
    }
    status, body = await api.call("GET", f"/api/emails/{plain_id}")
    assert body["spam"] is None


async def test_sender_rules_crud(api: Api) -> None:
    """Allow a domain, block an address, move one to the other list, delete; bob never sees alice's entries."""
    status, allowed = await api.call("POST", "/api/sender-rules", json={"pattern": "News.Example", "kind": "allow"})
    assert status == 201
    assert (allowed["pattern"], allowed["kind"]) == ("news.example", "allow")
    status, blocked = await api.call("POST", "/api/sender-rules", json={"pattern": "x@spam.example", "kind": "block"})
    assert status == 201
    status, moved = await api.call("POST", "/api/sender-rules", json={"pattern": "news.example", "kind": "block"})
    assert (moved["id"], moved["kind"]) == (allowed["id"], "block")
    status, listed = await api.call("GET", "/api/sender-rules")
    assert [(i["pattern"], i["kind"]) for i in listed["items"]] == [
        ("news.example", "block"),
        ("x@spam.example", "block"),
    ]
    status, theirs = await api.call("GET", "/api/sender-rules", api.bob)
    assert theirs == {"items": [], "total": 0}
    assert (await api.call("DELETE", f"/api/sender-rules/{blocked['id']}", api.bob))[0] == 404
    status, gone = await api.call("DELETE", f"/api/sender-rules/{blocked['id']}")
    assert (status, gone) == (200, {"deleted": True, "id": blocked["id"]})
    assert (await api.call("POST", "/api/sender-rules", json={"pattern": "not a domain", "kind": "allow"}))[0] == 422
    assert (await api.call("POST", "/api/sender-rules", json={"pattern": "a.example", "kind": "maybe"}))[0] == 422


async def test_rest_move_into_junk_and_out_queues_learning(api: Api) -> None:
    """PATCH mailbox=Junk queues the message to be learnt as spam; back to INBOX as ham; to Trash from Junk: nothing."""
    (email_id,) = await api.deliver(message("learn me"), "alice@example.com")
    status, moved = await api.call("PATCH", f"/api/emails/{email_id}", json={"mailbox": "Junk"})
    assert status == 200
    wanted = "SELECT wanted, learnt, due IS NOT NULL AS due FROM spam_learning"
    assert [tuple(r) for r in await api.pool.fetch(wanted)] == [("spam", None, True)]
    status, back = await api.call("PATCH", f"/api/emails/{moved['id']}", json={"mailbox": "INBOX"})
    assert [tuple(r) for r in await api.pool.fetch(wanted)] == [("ham", None, True)]
    await api.pool.execute("UPDATE spam_learning SET learnt = wanted, due = NULL")  # as the learner would
    status, again = await api.call("PATCH", f"/api/emails/{back['id']}", json={"mailbox": "Junk"})
    await api.call("DELETE", f"/api/emails/{again['id']}")
    assert [tuple(r) for r in await api.pool.fetch(wanted)] == [("spam", "ham", True)]
