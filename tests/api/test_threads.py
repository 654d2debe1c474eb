"""Threads: assigned as mail is stored (MX, APPEND, API send), listed and read over REST, merged when a late
message links two, and told to the hub."""

from __future__ import annotations

import asyncio
import imaplib
from typing import Any

from tests.api.conftest import Api, imap_port
from tests.api.test_hub import hub_client
from tests.support import make_message

ALICE = "Alice <alice@example.com>"


def mail(
    subject: str,
    msgid: str,
    *,
    refs: str = "",
    reply_to: str = "",
    sender: str = "Sender <s@remote.example>",
    body: str = "Hello there.\r\n",
) -> bytes:
    headers = tuple(
        h for h in (f"References: {refs}" if refs else "", f"In-Reply-To: {reply_to}" if reply_to else "") if h
    )
    return make_message(sender=sender, to=ALICE, subject=subject, message_id=msgid, headers=headers, body=body)


async def email(api: Api, email_id: int, key: str | None = None) -> dict[str, Any]:
    status, body = await api.call("GET", f"/api/emails/{email_id}", key)
    assert status == 200, body
    return body


async def thread_of(api: Api, email_id: int) -> int:
    tid = (await email(api, email_id))["threadId"]
    assert isinstance(tid, int)
    return tid


async def test_a_reply_chain_is_one_thread_with_counts_participants_and_snippet(api: Api) -> None:
    """Three messages linked by In-Reply-To and References are one thread: the list shows it once with its
    count, unread count, senders in order and the latest message's text; the thread lists them oldest first."""
    (a,) = await api.deliver(mail("Budget", "<a@x>", sender="Carol <carol@remote.example>"), "alice@example.com")
    (b,) = await api.deliver(
        mail("Re: Budget", "<b@x>", reply_to="<a@x>", sender="Dave <dave@remote.example>"), "alice@example.com"
    )
    (other,) = await api.deliver(mail("Lunch", "<l@x>"), "alice@example.com")
    (c,) = await api.deliver(
        mail(
            "Re: Budget",
            "<c@x>",
            refs="<a@x> <b@x>",
            sender="Carol <carol@remote.example>",
            body="Numbers are fine now.\r\n",
        ),
        "alice@example.com",
    )
    tid = await thread_of(api, a)
    assert await thread_of(api, b) == tid
    assert await thread_of(api, c) == tid
    assert await thread_of(api, other) != tid
    status, _ = await api.call("PATCH", f"/api/emails/{b}", json={"isRead": True})
    assert status == 200

    status, page = await api.call("GET", "/api/threads")
    assert status == 200, page
    assert page["total"] == 2
    first, second = page["items"]
    assert first["id"] == tid  # the latest arrival first
    assert second["subject"] == "Lunch"
    assert first["subject"] == "Budget"
    assert (first["messageCount"], first["unreadCount"]) == (3, 2)
    assert [p["email"] for p in first["participants"]] == ["carol@remote.example", "dave@remote.example"]
    assert first["snippet"] == "Numbers are fine now."
    assert first["latestEmailId"] == c

    status, one = await api.call("GET", f"/api/threads/{tid}")
    assert status == 200, one
    assert [e["id"] for e in one["items"]] == [a, b, c]
    assert one["total"] == 3
    assert all(e["threadId"] == tid for e in one["items"])
    status, paged = await api.call("GET", f"/api/threads/{tid}?pageSize=2&page=2")
    assert [e["id"] for e in paged["items"]] == [c]

    # Bob sees none of it.
    status, _ = await api.call("GET", f"/api/threads/{tid}", api.bob)
    assert status == 404
    assert (await api.call("GET", "/api/threads", api.bob))[1]["total"] == 0
    status, _ = await api.call("GET", "/api/threads/99999999")
    assert status == 404


async def test_replies_before_their_parent_and_a_late_link_merge(api: Api) -> None:
    """A reply stored before its parent is joined by the parent; two threads that a late message links (it
    refers to both) become one, the older, and the hub says ThreadsMerged."""
    (r1,) = await api.deliver(mail("Re: Plans", "<r1@x>", refs="<p@x>"), "alice@example.com")
    (p,) = await api.deliver(mail("Plans", "<p@x>"), "alice@example.com")
    kept = await thread_of(api, r1)
    assert await thread_of(api, p) == kept

    (r2,) = await api.deliver(mail("Something else", "<r2@x>", refs="<q@x>"), "alice@example.com")
    gone = await thread_of(api, r2)
    assert gone != kept
    async with hub_client(api) as hub:
        (q,) = await api.deliver(mail("Re: Plans", "<q@x>", refs="<p@x>"), "alice@example.com")
        event = await hub.next("ThreadsMerged")
    assert event["data"] == {"threadId": kept, "mergedIds": [gone]}
    for eid in (r1, p, r2, q):
        assert await thread_of(api, eid) == kept
    status, _ = await api.call("GET", f"/api/threads/{gone}")
    assert status == 404
    _, page = await api.call("GET", "/api/threads")
    assert [(t["id"], t["messageCount"]) for t in page["items"]] == [(kept, 4)]


def _append(port: int, key: str, items: list[tuple[str, str, bytes]]) -> None:
    """APPEND each (folder, INTERNALDATE, message) as alice."""
    client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    try:
        client.login("alice@example.com", key)
        for folder, when, raw in items:
            status, data = client.append(folder, "", when, raw)
            assert status == "OK", data
    finally:
        client.logout()


async def test_subject_threads_within_the_window_across_folders_and_prefixes(api: Api) -> None:
    """Messages without references join by subject (Re:, AW:, Fwd: and [tags] taken off, any case), across
    folders, while the last one was at most a week before; past that, the subject starts a new thread."""
    items = [
        ("INBOX", '"01-Nov-2026 10:00:00 +0000"', mail("Quarterly plan", "<s1@x>")),
        ("Archive", '"05-Nov-2026 10:00:00 +0000"', mail("Re: quarterly PLAN", "<s2@x>")),
        ("INBOX", '"11-Nov-2026 09:00:00 +0000"', mail("AW: [team] Re: Quarterly plan", "<s3@x>")),
        ("INBOX", '"30-Nov-2026 10:00:00 +0000"', mail("WG: Quarterly plan", "<s4@x>")),
        ("Archive", '"02-Dec-2026 10:00:00 +0000"', mail("Fwd: Quarterly plan", "<s5@x>")),
    ]
    status, _ = await api.call("POST", "/api/mailboxes", json={"name": "Archive"})
    assert status in (201, 409)
    async with imap_port(api) as port:
        await asyncio.to_thread(_append, port, api.alice_imap, items)
    _, page = await api.call("GET", "/api/threads")
    assert page["total"] == 2
    late, early = page["items"]
    assert (early["messageCount"], late["messageCount"]) == (3, 2)
    assert early["subject"] == "Quarterly plan"
    assert late["subject"] == "WG: Quarterly plan"
    assert len(early["mailboxIds"]) == 2  # INBOX and Archive
    _, one = await api.call("GET", f"/api/threads/{early['id']}")
    assert [e["subject"] for e in one["items"]] == [
        "Quarterly plan",
        "Re: quarterly PLAN",
        "AW: [team] Re: Quarterly plan",
    ]


async def test_a_sent_reply_joins_the_thread_and_a_folder_collapses_by_thread(api: Api) -> None:
    """A reply sent over the API is in the thread of what it answers (its Sent copy), and so is the reply that
    comes back; GET /api/emails?collapse=thread lists INBOX one thread at a time with threadCount."""
    raw = mail("Offsite", "<o1@remote.example>")
    (first,) = await api.deliver(raw, "alice@example.com")
    status, reply = await api.call("POST", f"/api/outbound/reply/{first}")
    assert status == 201, reply
    status, sent = await api.call("POST", f"/api/outbound/{reply['id']}/send")
    assert status == 201, sent
    tid = await thread_of(api, first)
    assert await thread_of(api, sent["sentEmailId"]) == tid
    (back,) = await api.deliver(
        mail("Re: Offsite", "<o3@remote.example>", refs=f"<o1@remote.example> {sent['messageId']}"),
        "alice@example.com",
    )
    (lone,) = await api.deliver(mail("Unrelated", "<u@remote.example>"), "alice@example.com")
    assert await thread_of(api, back) == tid
    _, one = await api.call("GET", f"/api/threads/{tid}")
    assert [e["id"] for e in one["items"]] == [first, sent["sentEmailId"], back]
    assert len(one["mailboxIds"]) == 2  # INBOX and Sent

    status, flat = await api.call("GET", "/api/emails")
    assert flat["total"] == 3
    status, collapsed = await api.call("GET", "/api/emails?collapse=thread")
    assert status == 200, collapsed
    assert collapsed["total"] == 2
    assert [(e["id"], e["threadCount"]) for e in collapsed["items"]] == [(lone, 1), (back, 2)]
    status, error = await api.call("GET", "/api/emails?collapse=sender")
    assert (status, error["error"]) == (400, "bad_request")


async def test_a_thread_of_a_thousand_messages_stays_whole_and_pages(api: Api) -> None:
    """A chain of 1,000 replies is one thread: listed once with its count, paged oldest first, and each message
    added only the keys it brought (its own msg-id), not its whole References again."""
    ids = ["<m0@x>"]
    (root,) = await api.deliver(mail("Long one", ids[0]), "alice@example.com")
    for n in range(1, 1000):
        refs = " ".join(ids[-20:])
        msgid = f"<m{n}@x>"
        await api.deliver(mail("Re: Long one", msgid, refs=refs), "alice@example.com")
        ids.append(msgid)
    tid = await thread_of(api, root)
    _, page = await api.call("GET", "/api/threads")
    assert [(t["id"], t["messageCount"], t["unreadCount"]) for t in page["items"]] == [(tid, 1000, 1000)]
    _, last = await api.call("GET", f"/api/threads/{tid}?page=10&pageSize=100")
    assert len(last["items"]) == 100
    assert last["items"][-1]["id"] == page["items"][0]["latestEmailId"]
    async with api.pool.acquire() as conn:
        keys = await conn.fetchval("SELECT count(*) FROM thread_keys WHERE thread_id = $1", tid)
    assert keys == 1000 + 1  # the msg-ids and one subject key


async def test_a_label_goes_on_and_off_a_whole_thread_across_folders(api: Api) -> None:
    """PUT /api/threads/{id}/labels/{labelId} labels every email of the thread, in every folder it spans (one
    BulkChanged on the hub), and nothing outside it; the thread's emails show the label; DELETE takes it off;
    another user's thread, or a label that is not the user's, is 404."""
    (a,) = await api.deliver(mail("Trip", "<t1@x>"), "alice@example.com")
    (b,) = await api.deliver(mail("Re: Trip", "<t2@x>", reply_to="<t1@x>"), "alice@example.com")
    (other,) = await api.deliver(mail("Invoice", "<i@x>"), "alice@example.com")
    status, _ = await api.call("POST", "/api/mailboxes", json={"name": "Travel"})
    assert status == 201
    status, _ = await api.call("PATCH", f"/api/emails/{b}", json={"mailbox": "Travel"})
    assert status == 200
    tid = await thread_of(api, a)
    status, label = await api.call("POST", "/api/labels", json={"name": "Later"})
    assert status == 201, label

    async with hub_client(api) as alice:
        status, body = await api.call("PUT", f"/api/threads/{tid}/labels/{label['id']}")
        assert (status, body) == (200, {"threadId": tid, "count": 2})
        event = await alice.next("BulkChanged")
        assert (event["data"]["action"], event["data"]["count"]) == ("label", 2)
    for email_id in (a, b):
        assert (await email(api, email_id))["labels"] == [label["id"]]
    assert (await email(api, other))["labels"] == []
    _, one = await api.call("GET", f"/api/threads/{tid}")
    assert [e["labels"] for e in one["items"]] == [[label["id"]], [label["id"]]]

    status, body = await api.call("DELETE", f"/api/threads/{tid}/labels/{label['id']}")
    assert (status, body["count"]) == (200, 2)
    assert (await email(api, b))["labels"] == []
    status, _ = await api.call("PUT", f"/api/threads/{tid}/labels/{label['id']}", api.bob)
    assert status == 404  # not bob's label
    status, bobs = await api.call("POST", "/api/labels", api.bob, json={"name": "Mine"})
    assert status == 201, bobs
    status, _ = await api.call("PUT", f"/api/threads/{tid}/labels/{bobs['id']}", api.bob)
    assert status == 404  # not bob's thread
