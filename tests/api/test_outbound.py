"""Outbound mail over REST: drafts (and their Drafts-folder copy), send, reply, forward, outbox and sent."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import imaplib
import json
import logging
import ssl
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from relate.queue.worker import DeliveryWorker
from relate.runtime.tls import make_self_signed, server_context
from relate.services import accounts
from relate.services import queue as queue_service
from relate.testing.dns import DnsServer, Zone
from tests.api.conftest import Api
from tests.protocol.delivery.conftest import Net, Sink
from tests.support import imaps_server

BOB = "bob@example.com"


async def draft(api: Api, key: str | None = None, **fields: Any) -> dict[str, Any]:
    """Create a draft; asserts 201 and returns its detail."""
    status, body = await api.call("POST", "/api/outbound", key, json=fields)
    assert status == 201, body
    return body


async def folder(api: Api, name: str, key: str | None = None) -> list[dict[str, Any]]:
    """The listing of one of the caller's folders, by special use name (Drafts, Sent, INBOX)."""
    status, boxes = await api.call("GET", "/api/mailboxes", key)
    assert status == 200
    box = next(b for b in boxes["items"] if b["name"] == name or b["specialUse"] == f"\\{name}")
    status, listing = await api.call("GET", f"/api/emails?mailbox={box['id']}", key)
    assert status == 200
    return list(listing["items"])


async def raw_of(api: Api, email_id: int, key: str | None = None) -> EmailMessage:
    async with api.session.get(f"{api.url}/api/emails/{email_id}/raw", headers=api.auth(key or api.alice)) as resp:
        assert resp.status == 200
        data = await resp.read()
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


# --- drafts ---------------------------------------------------------------------------------


async def test_create_draft_fills_sender_and_lands_in_drafts(api: Api) -> None:
    """POST /api/outbound makes a draft from the user's primary address and a \\Draft copy in Drafts."""
    body = await draft(api, to=["Bob <bob@example.com>"], subject="Plans", textBody="Let us meet.")
    assert body["status"] == "draft"
    assert body["from"] == {"name": "Alice", "email": "alice@example.com"}
    assert (body["to"][0]["email"], body["to"][0]["name"]) == (BOB, "Bob")
    assert body["recipients"][0]["status"] is None
    (copy,) = await folder(api, "Drafts")
    assert copy["id"] == body["draftEmailId"]
    assert copy["subject"] == "Plans"
    assert set(copy["flags"]) == {"\\Draft", "\\Seen"}
    status, listing = await api.call("GET", "/api/outbound/drafts")
    assert status == 200
    assert listing["total"] == 1
    assert listing["items"][0]["id"] == body["id"]
    assert listing["items"][0]["recipients"] == [{"address": BOB, "kind": "to", "name": "Bob", "status": None}]


async def test_autosave_replaces_fields_named_and_the_drafts_copy(api: Api) -> None:
    """PUT changes only the fields it names; the Drafts folder holds one copy, the new one."""
    body = await draft(api, to=[BOB], subject="v1", textBody="keep me", bcc=["hidden@remote.test"])
    status, saved = await api.call(
        "PUT", f"/api/outbound/{body['id']}", json={"subject": "v2", "cc": ["c@remote.test"]}
    )
    assert status == 200, saved
    assert (saved["subject"], saved["textBody"]) == ("v2", "keep me")
    assert [r["email"] for r in saved["cc"]] == ["c@remote.test"]
    assert [r["email"] for r in saved["bcc"]] == ["hidden@remote.test"]
    (copy,) = await folder(api, "Drafts")
    assert copy["subject"] == "v2"
    assert copy["id"] == saved["draftEmailId"] != body["draftEmailId"]
    stored = await raw_of(api, copy["id"])
    assert stored["Bcc"] == "hidden@remote.test"  # the user's own copy names the Bcc recipients
    status, _ = await api.call("GET", f"/api/emails/{body['draftEmailId']}")
    assert status == 404


async def test_a_drafts_copy_moved_away_is_left_where_the_user_put_it(api: Api) -> None:
    """A Drafts copy moved to Trash (keeping its id) stops being the draft's copy: the next save writes a new
    one in Drafts and the moved one stays in Trash."""
    body = await draft(api, to=[BOB], subject="v1")
    status, moved = await api.call("DELETE", f"/api/emails/{body['draftEmailId']}")
    assert (status, moved["id"], moved["deleted"]) == (200, body["draftEmailId"], False)
    status, saved = await api.call("PUT", f"/api/outbound/{body['id']}", json={"subject": "v2"})
    assert status == 200
    (copy,) = await folder(api, "Drafts")
    assert (copy["subject"], copy["id"]) == ("v2", saved["draftEmailId"])
    status, kept = await api.call("GET", f"/api/emails/{body['draftEmailId']}")
    assert (status, kept["mailboxName"], kept["subject"]) == (200, "Trash", "v1")


async def test_discard_draft_removes_it_and_its_copy(api: Api) -> None:
    """DELETE discards the draft and its Drafts copy; a second DELETE is 404."""
    body = await draft(api, subject="scrap")
    status, answer = await api.call("DELETE", f"/api/outbound/{body['id']}")
    assert status == 200
    assert answer == {"deleted": True, "id": body["id"]}
    assert await folder(api, "Drafts") == []
    status, _ = await api.call("GET", f"/api/outbound/{body['id']}")
    assert status == 404
    status, error = await api.call("DELETE", f"/api/outbound/{body['id']}")
    assert status == 404
    assert error["error"] == "not_found"


async def test_bad_draft_input_is_refused(api: Api) -> None:
    """Malformed addresses, header injection, unknown fields and bad message ids are 422 and store nothing."""
    for fields in (
        {"to": ["not an address"]},
        {"to": ["a@b@c.test"]},
        {"subject": "line\r\nBcc: victim@remote.test"},
        {"cc": "bob@example.com"},
        {"colour": "blue"},
        {"inReplyTo": "no-brackets"},
        {"to": [{"email": "x@remote.test", "nick": "x"}]},
    ):
        status, body = await api.call("POST", "/api/outbound", json=fields)
        assert status == 422, fields
        assert body["error"] == "invalid"
    status, listing = await api.call("GET", "/api/outbound/drafts")
    assert listing["total"] == 0
    assert await folder(api, "Drafts") == []


async def test_from_must_be_one_of_the_users_addresses(api: Api) -> None:
    """From another user's or a foreign address is 422; an alias with a display name is accepted."""
    status, body = await api.call("POST", "/api/outbound", json={"from": BOB, "to": [BOB]})
    assert status == 422
    assert "from" in body["message"]
    status, _ = await api.call("POST", "/api/outbound/send", json={"from": "ceo@bank.test", "to": [BOB]})
    assert status == 422
    await accounts.add_alias(api.pool, "ally@example.com", "alice@example.com")
    body = await draft(api, **{"from": "Ally Alias <ally@example.com>", "to": [BOB]})
    assert body["from"] == {"name": "Ally Alias", "email": "ally@example.com"}
    _, inbox = await api.call("GET", "/api/emails", api.bob)
    assert inbox["total"] == 0


async def test_attachment_size_cap_and_base64(api: Api) -> None:
    """Attachments over api.max_attachment_size are 413 too_large; bad base64 is 422; kept ones survive a save."""
    api.cfg.api.max_attachment_size = 1000
    small = base64.b64encode(b"x" * 600).decode()
    body = await draft(api, attachments=[{"filename": "a.txt", "contentType": "text/plain", "content": small}])
    (att,) = body["attachments"]
    assert (att["filename"], att["size"]) == ("a.txt", 600)
    status, error = await api.call(
        "PUT",
        f"/api/outbound/{body['id']}",
        json={"attachments": [{"id": att["id"]}, {"filename": "b.bin", "content": small}]},
    )
    assert status == 413
    assert error["error"] == "too_large"
    status, error = await api.call(
        "POST", "/api/outbound", json={"attachments": [{"filename": "c.bin", "content": "***not base64***"}]}
    )
    assert status == 422
    status, saved = await api.call("PUT", f"/api/outbound/{body['id']}", json={"subject": "still here"})
    assert [a["filename"] for a in saved["attachments"]] == ["a.txt"]
    for bad in ({"id": [att["id"]]}, {"id": att["id"] + 1000}, {"id": True}):
        status, error = await api.call("PUT", f"/api/outbound/{body['id']}", json={"attachments": [bad]})
        assert (status, error["error"]) == (422, "invalid"), bad
    status, saved = await api.call("PUT", f"/api/outbound/{body['id']}", json={"attachments": []})
    assert saved["attachments"] == []


# --- sending ---------------------------------------------------------------------------------------


async def test_send_draft_to_local_recipient(api: Api) -> None:
    """Sending a draft to a local user: in their INBOX at once, a copy in Sent, the draft gone, the same id sent."""
    body = await draft(api, to=[BOB], subject="Lunch", textBody="At noon?", htmlBody="<p>At <b>noon</b>?</p>")
    status, sent = await api.call("POST", f"/api/outbound/{body['id']}/send")
    assert status == 201, sent
    assert sent["id"] == body["id"]
    assert sent["status"] == "sent"
    assert sent["recipients"][0]["status"] == "sent"
    assert sent["messageId"].endswith("@example.com>")
    assert sent["draftEmailId"] is None
    assert await folder(api, "Drafts") == []
    (received,) = (await api.call("GET", "/api/emails", api.bob))[1]["items"]
    assert received["subject"] == "Lunch"
    msg = await raw_of(api, received["id"], api.bob)
    assert msg["Message-ID"] == sent["messageId"]
    assert msg["Date"] is not None
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    (copy,) = await folder(api, "Sent")
    assert copy["id"] == sent["sentEmailId"]
    status, again = await api.call("GET", f"/api/outbound/{body['id']}")
    assert (status, again["status"]) == (200, "sent")
    status, listing = await api.call("GET", "/api/outbound/sent")
    assert [i["id"] for i in listing["items"]] == [body["id"]]
    assert (await api.call("GET", "/api/outbound/drafts"))[1]["total"] == 0
    status, error = await api.call("POST", f"/api/outbound/{body['id']}/send")
    assert status == 409
    assert error["error"] == "conflict"
    status, _ = await api.call("PUT", f"/api/outbound/{body['id']}", json={"subject": "too late"})
    assert status == 409
    status, _ = await api.call("DELETE", f"/api/outbound/{body['id']}")
    assert status == 409


async def test_send_now_with_utf8_headers_and_bcc(api: Api) -> None:
    """POST /api/outbound/send: encoded-word headers; Bcc recipients get it without a Bcc header; Sent keeps it."""
    await accounts.add_user(api.pool, "carol@example.com", "Carol")
    status, sent = await api.call(
        "POST",
        "/api/outbound/send",
        json={
            "from": {"email": "alice@example.com", "name": "Alice Müller"},
            "to": [BOB],
            "bcc": ["carol@example.com"],
            "subject": "Grüße aus Köln",
            "textBody": "Schöne Grüße\n",
        },
    )
    assert status == 201, sent
    assert {r["address"]: r["status"] for r in sent["recipients"]} == {BOB: "sent", "carol@example.com": "sent"}
    (received,) = (await api.call("GET", "/api/emails", api.bob))[1]["items"]
    msg = await raw_of(api, received["id"], api.bob)
    assert msg["Subject"] == "Grüße aus Köln"
    assert msg["From"].addresses[0].display_name == "Alice Müller"
    assert "Bcc" not in msg
    head = (await raw_of(api, received["id"], api.bob)).as_bytes().split(b"\n\n")[0]
    assert head.isascii()  # RFC 2047 encoded words, not raw UTF-8
    assert msg.get_content().strip() == "Schöne Grüße"
    status, copy = await api.call("GET", f"/api/emails/{sent['sentEmailId']}")
    assert [p["email"] for p in copy["bcc"]] == ["carol@example.com"]


async def test_recipient_count_and_existence_checked_on_send(api: Api) -> None:
    """No recipients, 101 recipients, and unknown local users are 422; nothing is delivered or queued."""
    body = await draft(api, subject="nobody")
    status, error = await api.call("POST", f"/api/outbound/{body['id']}/send")
    assert status == 422
    assert "recipient" in error["message"]
    many = {"to": [f"r{i}@remote.test" for i in range(60)], "cc": [f"c{i}@remote.test" for i in range(41)]}
    status, error = await api.call("POST", "/api/outbound/send", json=many)
    assert status == 422
    assert "100" in error["message"]
    status, error = await api.call("POST", "/api/outbound/send", json={"to": ["ghost@example.com"]})
    assert status == 422
    assert "ghost@example.com" in error["message"]
    status, error = await api.call("POST", "/api/outbound/send", json={"to": [f"r{i}@remote.test" for i in range(101)]})
    assert status == 422
    assert await api.pool.fetchval("SELECT count(*) FROM outbound_emails WHERE status <> 'draft'") == 0
    assert (await api.call("GET", "/api/outbound/drafts"))[1]["total"] == 1


async def test_sending_one_draft_twice_at_once_delivers_once(api: Api) -> None:
    """Two concurrent sends of one draft: one 201, one 409, and the recipient has one copy."""
    body = await draft(api, to=[BOB], subject="once")
    results = await asyncio.gather(
        api.call("POST", f"/api/outbound/{body['id']}/send"), api.call("POST", f"/api/outbound/{body['id']}/send")
    )
    assert sorted(status for status, _ in results) == [201, 409]
    assert (await api.call("GET", "/api/emails", api.bob))[1]["total"] == 1


# --- reply and forward -------------------------------------------------------------------------------


async def test_reply_threads_and_quotes(api: Api) -> None:
    """A reply is a draft to the sender with Re:, the text quoted, In-Reply-To and References set; sent with them."""
    raw = (
        b"From: Sender <sender@remote.example>\r\nTo: alice@example.com\r\nCc: other@remote.example\r\n"
        b"Subject: Budget\r\nMessage-ID: <orig@remote.example>\r\nReferences: <root@remote.example>\r\n"
        b"Date: Sat, 21 Nov 2026 10:00:00 +0000\r\n\r\nCan you check the numbers?\r\n"
    )
    (email_id,) = await api.deliver(raw, "alice@example.com")
    status, body = await api.call("POST", f"/api/outbound/reply/{email_id}")
    assert status == 201, body
    assert body["subject"] == "Re: Budget"
    assert [r["email"] for r in body["to"]] == ["sender@remote.example"]
    assert body["cc"] == []
    assert body["inReplyTo"] == "<orig@remote.example>"
    assert body["references"] == ["<root@remote.example>", "<orig@remote.example>"]
    assert "> Can you check the numbers?" in body["textBody"]
    assert "Sender <sender@remote.example> wrote:" in body["textBody"]
    status, everyone = await api.call("POST", f"/api/outbound/reply/{email_id}?all=true")
    assert [r["email"] for r in everyone["cc"]] == ["other@remote.example"]
    status, sent = await api.call("POST", f"/api/outbound/{body['id']}/send")
    assert status == 201
    assert sent["status"] == "queued"
    msg = await raw_of(api, sent["sentEmailId"])
    assert msg["In-Reply-To"] == "<orig@remote.example>"
    assert msg["References"] == "<root@remote.example> <orig@remote.example>"
    status, _ = await api.call("POST", f"/api/outbound/reply/{email_id}", api.bob)
    assert status == 404


async def test_forward_keeps_attachments(api: Api) -> None:
    """A forward carries the original's attachments, byte for byte, to the new recipient."""
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 4
    original = EmailMessage()
    original["From"] = "sender@remote.example"
    original["To"] = "alice@example.com"
    original["Subject"] = "Report"
    original["Message-ID"] = "<report@remote.example>"
    original.set_content("The report is attached.\n")
    original.add_attachment(pdf, "application", "pdf", filename="report.pdf")
    (email_id,) = await api.deliver(original.as_bytes(policy=email.policy.SMTP), "alice@example.com")
    note = {"filename": "note.txt", "contentType": "text/plain", "content": base64.b64encode(b"FYI").decode()}
    status, body = await api.call(
        "POST", f"/api/outbound/forward/{email_id}", json={"to": [BOB], "attachments": [note]}
    )
    assert status == 201, body
    assert body["subject"] == "Fwd: Report"
    assert [(a["filename"], a["contentType"], a["size"]) for a in body["attachments"]] == [
        ("report.pdf", "application/pdf", len(pdf)),
        ("note.txt", "text/plain", 3),
    ]
    assert "The report is attached." in body["textBody"]
    assert "Forwarded message" in body["textBody"]
    status, _ = await api.call("POST", f"/api/outbound/{body['id']}/send")
    assert status == 201
    (received,) = (await api.call("GET", "/api/emails", api.bob))[1]["items"]
    assert received["attachmentCount"] == 2
    async with api.session.get(
        f"{api.url}/api/emails/{received['id']}/attachments/0", headers=api.auth(api.bob)
    ) as resp:
        assert resp.status == 200
        assert await resp.read() == pdf


async def test_reply_to_html_only_mail_quotes_safely(api: Api) -> None:
    """Replying to HTML-only mail quotes its text in the text part and its sanitised HTML in a cite blockquote."""
    raw = (
        b"From: web@remote.example\r\nTo: alice@example.com\r\nSubject: News\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>Big <b>news</b></p><script>steal()</script>\r\n"
    )
    (email_id,) = await api.deliver(raw, "alice@example.com")
    status, body = await api.call("POST", f"/api/outbound/reply/{email_id}")
    assert status == 201
    assert "> Big news" in body["textBody"]
    assert '<blockquote type="cite"><p>Big <b>news</b></p>' in body["htmlBody"]
    assert "script" not in body["htmlBody"]


async def test_reply_all_sent_at_once(api: Api) -> None:
    """replyAll and send in the body: the reply goes at once to the sender and the other recipients, not to the user."""
    raw = (
        b"From: Sender <sender@remote.example>\r\nTo: alice@example.com, bob@example.com\r\n"
        b"Subject: Re: Offsite\r\nMessage-ID: <offsite@remote.example>\r\n\r\nWho is coming?\r\n"
    )
    ids = await api.deliver(raw, "alice@example.com", "bob@example.com")
    status, sent = await api.call(
        "POST", f"/api/outbound/reply/{ids[0]}", json={"replyAll": True, "send": True, "textBody": "Me!"}
    )
    assert status == 201, sent
    assert sent["subject"] == "Re: Offsite"
    assert sent["status"] == "queued"
    assert {r["address"]: r["status"] for r in sent["recipients"]} == {"sender@remote.example": "pending", BOB: "sent"}
    _, bobs = await api.call("GET", "/api/emails", api.bob)
    reply_id = next(e["id"] for e in bobs["items"] if e["from"]["email"] == "alice@example.com")
    msg = await raw_of(api, reply_id, api.bob)
    assert msg["In-Reply-To"] == "<offsite@remote.example>"
    assert msg.get_content().strip() == "Me!"
    assert (await api.call("GET", "/api/outbound/drafts"))[1]["total"] == 0
    status, error = await api.call("POST", f"/api/outbound/reply/{ids[0]}", json={"send": "yes"})
    assert (status, error["error"]) == (422, "invalid")


# --- reads and scopes ----------------------------------------------------------------------------------


async def test_scopes_and_other_users(api: Api) -> None:
    """Writes need api:write, reads api:read; another user's outbound mail is 404 everywhere."""
    status, _ = await api.call("POST", "/api/outbound", api.alice_read, json={})
    assert status == 403
    status, _ = await api.call("GET", "/api/outbound/drafts", api.alice_write)
    assert status == 403
    status, _ = await api.call("GET", "/api/outbound/outbox", api.alice_imap)
    assert status == 403
    async with api.session.get(f"{api.url}/api/outbound/sent") as resp:
        assert resp.status == 401
    body = await draft(api, api.alice_write, to=[BOB], subject="mine")
    status, _ = await api.call("GET", f"/api/outbound/{body['id']}", api.alice_read)
    assert status == 200
    for method, path in (
        ("GET", f"/api/outbound/{body['id']}"),
        ("PUT", f"/api/outbound/{body['id']}"),
        ("DELETE", f"/api/outbound/{body['id']}"),
        ("POST", f"/api/outbound/{body['id']}/send"),
    ):
        status, _ = await api.call(method, path, api.bob, json={})
        assert status == 404, (method, path)
    assert (await api.call("GET", "/api/outbound/drafts", api.bob))[1]["total"] == 0
    status, _ = await api.call("GET", "/api/outbound/notanid")
    assert status == 404


async def test_lists_page_newest_first(api: Api) -> None:
    """The drafts list pages newest first with a total; pageSize over the maximum is 400."""
    ids = [(await draft(api, subject=f"d{i}"))["id"] for i in range(3)]
    status, page = await api.call("GET", "/api/outbound/drafts?page=1&pageSize=2")
    assert status == 200
    assert (page["total"], [i["id"] for i in page["items"]]) == (3, ids[:0:-1])
    status, page = await api.call("GET", "/api/outbound/drafts?page=2&pageSize=2")
    assert [i["id"] for i in page["items"]] == [ids[0]]
    status, _ = await api.call("GET", "/api/outbound/outbox?pageSize=1000")
    assert status == 400


# --- with the delivery daemon and an IMAP client ---------------------------------------------------------


@pytest.fixture
async def net(api: Api, tmp_path: Path) -> AsyncIterator[Net]:
    """Loopback DNS and receiving MTAs for the delivery daemon, configured into the API's config."""
    cert, key = tmp_path / "mx.pem", tmp_path / "mx.key"
    make_self_signed(cert, key, "mx.remote.test")
    zone = Zone()
    dns = DnsServer(zone)
    cfg = api.cfg
    cfg.delivery.dns_servers = [await dns.start()]
    cfg.delivery.dns_timeout = cfg.delivery.connect_timeout = 2.0
    cfg.delivery.command_timeout = 5.0
    network = Net(cfg, zone, dns, server_context(cert, key))
    yield network
    await network.close()


async def test_draft_to_sent_through_the_delivery_daemon(api: Api, net: Net, dsn: str) -> None:
    """Draft -> send (queued) -> the delivery daemon delivers to the remote MTA -> sent, each step announced."""
    sink: Sink = await net.mta("127.0.0.2")
    net.mx("remote.test", (10, "mx.remote.test", "127.0.0.2"))
    events: list[dict[str, Any]] = []
    listener = await asyncpg.connect(dsn)
    await listener.add_listener("relate_delivery", lambda *args: events.append(json.loads(args[3])))
    try:
        body = await draft(
            api, to=["friend@remote.test", BOB], bcc=["secret@remote.test"], subject="Hello", textBody="Hi!"
        )
        status, queued = await api.call("POST", f"/api/outbound/{body['id']}/send")
        assert status == 201, queued
        assert queued["status"] == "queued"
        assert {r["address"]: r["status"] for r in queued["recipients"]} == {
            "friend@remote.test": "pending",
            BOB: "sent",
            "secret@remote.test": "pending",
        }
        assert (await api.call("GET", "/api/emails", api.bob))[1]["total"] == 1  # local: at once
        status, outbox = await api.call("GET", "/api/outbound/outbox")
        assert [i["id"] for i in outbox["items"]] == [body["id"]]
        worker = DeliveryWorker(api.cfg, api.pool)
        assert await worker.run_once()
        (seen,) = sink.transactions
        assert sorted(seen.rcpt_tos) == ["friend@remote.test", "secret@remote.test"]
        assert seen.mail_from == "alice@example.com"
        delivered = email.message_from_bytes(seen.data)
        assert delivered["Message-Id"] == queued["messageId"]
        assert delivered["Bcc"] is None
        assert b"secret@remote.test" not in seen.data
        status, done = await api.call("GET", f"/api/outbound/{body['id']}")
        assert done["status"] == "sent"
        assert all(r["status"] == "sent" and r["statusCode"] == "2.0.0" for r in done["recipients"])
        assert (await api.call("GET", "/api/outbound/outbox"))[1]["total"] == 0
        assert [i["id"] for i in (await api.call("GET", "/api/outbound/sent"))[1]["items"]] == [body["id"]]
        (copy,) = await folder(api, "Sent")
        assert copy["subject"] == "Hello"
        await asyncio.sleep(0.1)
        mine = [e for e in events if e["id"] == body["id"]]
        assert {"user", "id", "status"} == set(mine[0])
        assert [e["status"] for e in mine] == ["queued", "sending", "sent"]
    finally:
        await listener.close()


async def test_failed_remote_recipient_shows_its_error(api: Api, net: Net) -> None:
    """A recipient the remote MTA refuses is failed with its reply as lastError; the message is partial_failure."""
    sink = await net.mta("127.0.0.2")
    net.mx("remote.test", (10, "mx.remote.test", "127.0.0.2"))
    sink.rcpt_replies["nobody@remote.test"] = "550 5.1.1 no such mailbox"
    status, sent = await api.call(
        "POST", "/api/outbound/send", json={"to": ["friend@remote.test", "nobody@remote.test"], "subject": "hi"}
    )
    assert status == 201
    await DeliveryWorker(api.cfg, api.pool).run_once()
    status, done = await api.call("GET", f"/api/outbound/{sent['id']}")
    assert done["status"] == "partial_failure"
    failed = next(r for r in done["recipients"] if r["address"] == "nobody@remote.test")
    assert failed["status"] == "failed"
    assert "no such mailbox" in failed["lastError"]
    assert [i["status"] for i in (await api.call("GET", "/api/outbound/sent"))[1]["items"]] == ["partial_failure"]


async def test_hold_and_release_are_announced(api: Api, dsn: str) -> None:
    """An administrator's hold and release of a queued email each send DeliveryStatusChanged's payload."""
    status, sent = await api.call("POST", "/api/outbound/send", json={"to": ["far@remote.test"], "subject": "later"})
    assert status == 201
    events: list[dict[str, Any]] = []
    listener = await asyncpg.connect(dsn)
    await listener.add_listener("relate_delivery", lambda *args: events.append(json.loads(args[3])))
    try:
        assert (await queue_service.hold(api.pool, [sent["id"]])).done == [sent["id"]]
        assert (await queue_service.release(api.pool, [sent["id"]])).done == [sent["id"]]
        await asyncio.sleep(0.1)
    finally:
        await listener.close()
    user_id = await api.pool.fetchval("SELECT id FROM users WHERE address = 'alice@example.com'")
    assert events == [
        {"user": user_id, "id": sent["id"], "status": "held"},
        {"user": user_id, "id": sent["id"], "status": "queued"},
    ]
    assert (await api.call("GET", f"/api/outbound/{sent['id']}"))[1]["status"] == "queued"


@pytest.fixture
async def imap_port(api: Api, dsn: str, tmp_path: Path) -> AsyncIterator[int]:
    """An IMAP daemon (implicit TLS on loopback) on the API's database; yields its port."""
    cfg = api.cfg
    cfg.tls.cert, cfg.tls.key = tmp_path / "imap.pem", tmp_path / "imap.key"
    make_self_signed(cfg.tls.cert, cfg.tls.key, "mail.example.com")
    async with imaps_server(cfg, dsn) as port:
        yield port


def _imap_drafts(port: int, key: str) -> list[tuple[bytes, bytes]]:
    """(flags, header) of every message in Drafts, read with imaplib."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context, timeout=10)
    try:
        conn.login("alice@example.com", key)
        typ, exists = conn.select("Drafts", readonly=True)
        assert typ == "OK"
        if exists == [b"0"]:
            return []
        typ, data = conn.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT TO)])")
        assert typ == "OK"
        return [(item[0], item[1]) for item in data if isinstance(item, tuple)]
    finally:
        conn.logout()


async def test_draft_visible_over_imap_until_sent(api: Api, imap_port: int) -> None:
    """An IMAP client sees the draft (\\Draft) in Drafts, the saved version only, and nothing once it is sent."""
    key, _ = await accounts.create_key(api.pool, "alice@example.com", "mail app", "imap", rounds=4)
    body = await draft(api, to=[BOB], subject="First words")
    await api.call("PUT", f"/api/outbound/{body['id']}", json={"subject": "Better words"})
    ((flags, header),) = await asyncio.to_thread(_imap_drafts, imap_port, key)
    assert b"\\Draft" in flags
    assert b"Subject: Better words" in header
    assert b"bob@example.com" in header
    status, _ = await api.call("POST", f"/api/outbound/{body['id']}/send")
    assert status == 201
    assert await asyncio.to_thread(_imap_drafts, imap_port, key) == []


async def test_local_mail_only_keeps_message_out_of_the_queue(api: Api) -> None:
    """Mail only to local users is never queued for the delivery daemon."""
    status, sent = await api.call("POST", "/api/outbound/send", json={"to": [BOB], "subject": "local"})
    assert status == 201
    assert sent["status"] == "sent"
    row = await api.pool.fetchrow("SELECT blob_hash, next_retry_at FROM outbound_emails WHERE id = $1", sent["id"])
    assert (row["blob_hash"], row["next_retry_at"]) == (None, None)
    assert (await api.call("GET", "/api/outbound/outbox"))[1]["total"] == 0


async def test_rest_send_to_local_user_is_marked_authenticated(api: Api) -> None:
    """Mail Alice sends over REST reaches Bob marked auth=pass smtp.auth=alice@example.com (in the stored
    header and the detail's authentication block); her Sent copy carries no such field."""
    status, sent = await api.call("POST", "/api/outbound/send", json={"to": [BOB], "subject": "signed in"})
    assert status == 201, sent
    (received,) = (await api.call("GET", "/api/emails", api.bob))[1]["items"]
    msg = await raw_of(api, received["id"], api.bob)
    assert (
        " ".join(str(msg["Authentication-Results"]).split())
        == "mail.example.com; auth=pass smtp.auth=alice@example.com"
    )
    status, detail = await api.call("GET", f"/api/emails/{received['id']}", api.bob)
    assert (detail["authentication"]["auth"], detail["authentication"]["spf"]) == ("pass", None)
    (copy,) = await folder(api, "Sent")
    status, mine = await api.call("GET", f"/api/emails/{copy['id']}")
    assert mine["authentication"] is None


async def test_send_over_the_daily_sending_limit_is_429_and_logged_once(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Past submission.limits.messages_per_day sending is 429 sending_limit (Retry-After), nothing sent, one log."""
    caplog.set_level(logging.INFO, logger="relate")
    api.cfg.submission.limits.messages_per_day = 2
    for i in range(2):
        status, body = await api.call("POST", "/api/outbound/send", json={"to": [BOB], "subject": f"n{i}"})
        assert status == 201, body
    body = await draft(api, to=[BOB], subject="third")
    for _ in range(2):
        async with api.session.post(f"{api.url}/api/outbound/{body['id']}/send", headers=api.auth(api.alice)) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "3600"
            error = await resp.json()
        assert error["error"] == "sending_limit"
        assert "4.7.0" in error["message"]
    assert len((await api.call("GET", "/api/emails", api.bob))[1]["items"]) == 2
    assert (await api.call("GET", "/api/outbound/drafts"))[1]["total"] == 1  # still a draft
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("api-sending-limit")]
    (line,) = lines
    assert "user=alice@example.com limit=messages used=2/2" in line
    # Writing from another user's key still works: the budget is alice's.
    status, body = await api.call("POST", "/api/outbound/send", api.bob, json={"to": ["alice@example.com"]})
    assert status == 201, body
