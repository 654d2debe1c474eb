"""Folders and mail over REST: listing, search, reading, raw, attachments, flags, moves, deletes."""

from __future__ import annotations

import asyncio

from relate.store import mailboxes, messages
from tests.api.conftest import Api, message


async def test_mailboxes_list_counts(api: Api) -> None:
    """GET /api/mailboxes lists the user's folders with totals and unread counts."""
    await api.deliver(message("one"), "alice@example.com")
    await api.deliver(message("two"), "alice@example.com")
    status, body = await api.call("GET", "/api/mailboxes")
    assert status == 200
    names = [b["name"] for b in body["items"]]
    assert names[0] == "INBOX"
    inbox = body["items"][0]
    assert (inbox["total"], inbox["unread"]) == (2, 2)
    assert {b["specialUse"] for b in body["items"]} >= {"\\Sent", "\\Trash", "\\Drafts"}


async def test_mailboxes_subscribed_follows_imap_subscriptions(api: Api) -> None:
    """A folder's subscribed is whether its name is subscribed: defaults yes, a new folder not until subscribed."""
    user_id = await api.pool.fetchval("SELECT id FROM users WHERE address = 'alice@example.com'")
    await mailboxes.create(api.pool, user_id, "Projects/2026")
    _, body = await api.call("GET", "/api/mailboxes")
    subscribed = {b["name"]: b["subscribed"] for b in body["items"]}
    assert (subscribed["INBOX"], subscribed["Sent"], subscribed["Drafts"]) == (True, True, True)
    assert (subscribed["Projects"], subscribed["Projects/2026"]) == (False, False)
    await mailboxes.subscribe(api.pool, user_id, ["Projects/2026"])
    _, body = await api.call("GET", "/api/mailboxes")
    assert {b["name"]: b["subscribed"] for b in body["items"]}["Projects/2026"] is True


async def test_list_emails_newest_first_and_paginated(api: Api) -> None:
    """GET /api/emails pages through the inbox newest first with a total."""
    for i in range(5):
        await api.deliver(message(f"msg {i}"), "alice@example.com")
    status, body = await api.call("GET", "/api/emails?page=1&pageSize=2")
    assert status == 200
    assert body["total"] == 5
    assert body["pageSize"] == 2
    assert [e["subject"] for e in body["items"]] == ["msg 4", "msg 3"]
    first = body["items"][0]
    assert first["from"] == {"name": "Sender", "email": "sender@remote.example"}
    assert first["isRead"] is False
    assert first["attachmentCount"] == 0
    status, body = await api.call("GET", "/api/emails?page=3&pageSize=2")
    assert [e["subject"] for e in body["items"]] == ["msg 0"]


async def test_page_size_over_limit_is_refused(api: Api) -> None:
    """pageSize above 100 is a 400 with a JSON error."""
    status, body = await api.call("GET", "/api/emails?pageSize=101")
    assert status == 400
    assert body["error"] == "bad_request"


async def test_other_users_mail_is_invisible(api: Api) -> None:
    """Bob cannot read, change or delete Alice's message: 404, as if it did not exist."""
    (email_id,) = await api.deliver(message("private"), "alice@example.com")
    for method in ("GET", "DELETE"):
        status, body = await api.call(method, f"/api/emails/{email_id}", api.bob)
        assert status == 404, method
    status, _ = await api.call("PATCH", f"/api/emails/{email_id}", api.bob, json={"isRead": True})
    assert status == 404
    status, body = await api.call("GET", "/api/emails", api.bob)
    assert body["total"] == 0


async def test_get_email_detail_and_raw(api: Api) -> None:
    """The detail view decodes headers and bodies; /raw returns the stored bytes exactly."""
    raw = (
        b"From: =?utf-8?q?J=C3=BCrgen?= <j@remote.example>\r\nTo: alice@example.com\r\n"
        b"Bcc: hidden@example.com\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain text\r\n"
        b'--b\r\nContent-Type: text/html\r\n\r\n<p onclick="x()">html<script>alert(1)</script>'
        b'<a href="javascript:evil()">l</a></p>\r\n--b--\r\n'
    )
    (email_id,) = await api.deliver(raw, "alice@example.com")
    status, body = await api.call("GET", f"/api/emails/{email_id}")
    assert status == 200
    assert body["subject"] == "Grüße"
    assert body["from"]["name"] == "Jürgen"
    assert body["textBody"].strip() == "plain text"
    assert "html" in body["htmlBody"]
    for bad in ("script", "onclick", "javascript:"):
        assert bad not in body["htmlBody"]
    # A Bcc header in received mail is not shown to the recipient.
    assert body["bcc"] == []
    assert all(h["name"].lower() != "bcc" for h in body["headers"])
    async with api.session.get(f"{api.url}/api/emails/{email_id}/raw", headers=api.auth(api.alice)) as resp:
        assert resp.status == 200
        assert resp.content_type == "message/rfc822"
        stored = await resp.read()
    assert stored.endswith(raw)
    assert stored.startswith(b"Return-Path: <sender@remote.example>\r\n")


async def test_attachment_download(api: Api) -> None:
    """GET /attachments/{n} returns the decoded attachment with its type and a download disposition."""
    raw = (
        b"From: a@remote.example\r\nTo: alice@example.com\r\nSubject: file\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b'--b\r\nContent-Type: application/pdf; name="r\xc3\xa9sum\xc3\xa9.pdf"\r\n'
        b"Content-Disposition: attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcfs\r\n--b--\r\n"
    )
    (email_id,) = await api.deliver(raw, "alice@example.com")
    status, body = await api.call("GET", f"/api/emails/{email_id}")
    assert body["attachmentCount"] == 1
    (att,) = body["attachments"]
    assert att["filename"] == "résumé.pdf"
    assert att["contentType"] == "application/pdf"
    async with api.session.get(f"{api.url}/api/emails/{email_id}/attachments/0", headers=api.auth(api.alice)) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/pdf"
        assert resp.headers["Content-Disposition"].startswith("attachment;")
        assert "r%C3%A9sum%C3%A9.pdf" in resp.headers["Content-Disposition"]
        assert await resp.read() == b"%PDF-1.4\n%\xc7\xec"
    status, body = await api.call("GET", f"/api/emails/{email_id}/attachments/1")
    assert status == 404
    assert body["error"] == "not_found"


async def test_patch_flags_and_read_state(api: Api) -> None:
    """PATCH sets isRead and keywords; the unread count follows and IMAP sees the flags."""
    (email_id,) = await api.deliver(message("flag me"), "alice@example.com")
    status, body = await api.call(
        "PATCH", f"/api/emails/{email_id}", json={"isRead": True, "flags": ["\\flagged", "$Work"]}
    )
    assert status == 200
    assert body["isRead"] is True
    assert set(body["flags"]) == {"\\Seen", "\\Flagged", "$Work"}
    flags = await api.pool.fetchval("SELECT flags FROM messages WHERE id = $1", email_id)
    assert set(flags) == {"\\Seen", "\\Flagged", "$Work"}
    _, boxes = await api.call("GET", "/api/mailboxes")
    assert boxes["items"][0]["unread"] == 0
    status, body = await api.call("PATCH", f"/api/emails/{email_id}", json={"flags": ["bad flag"]})
    assert status == 422
    assert body["error"] == "invalid"
    status, body = await api.call("PATCH", f"/api/emails/{email_id}", json={"isRead": "yes"})
    assert status == 422


async def test_patch_moves_between_folders(api: Api) -> None:
    """PATCH with mailbox moves the message; it leaves the inbox and appears in the target."""
    (email_id,) = await api.deliver(message("move me"), "alice@example.com")
    status, body = await api.call("PATCH", f"/api/emails/{email_id}", json={"mailbox": "No Such Folder"})
    assert status == 404
    status, boxes = await api.call("GET", "/api/mailboxes")
    sent = next(b for b in boxes["items"] if b["specialUse"] == "\\Sent")
    status, body = await api.call("PATCH", f"/api/emails/{email_id}", json={"mailbox": sent["id"]})
    assert status == 200
    assert body["mailboxId"] == sent["id"]
    _, inbox = await api.call("GET", "/api/emails")
    assert inbox["total"] == 0
    _, listing = await api.call("GET", f"/api/emails?mailbox={sent['id']}")
    assert [e["subject"] for e in listing["items"]] == ["move me"]


async def test_delete_moves_to_trash_then_expunges(api: Api) -> None:
    """DELETE moves to Trash; DELETE from Trash removes it for good (other users' copies stay)."""
    ids = await api.deliver(message("shared"), "alice@example.com", "bob@example.com")
    alice_id = ids[0]
    status, body = await api.call("DELETE", f"/api/emails/{alice_id}")
    assert status == 200
    assert body["deleted"] is False
    trash_id = body["id"]
    status, detail = await api.call("GET", f"/api/emails/{trash_id}")
    assert detail["mailboxName"] == "Trash"
    status, body = await api.call("DELETE", f"/api/emails/{trash_id}")
    assert status == 200
    assert body["deleted"] is True
    status, _ = await api.call("GET", f"/api/emails/{trash_id}")
    assert status == 404
    _, bobs = await api.call("GET", "/api/emails", api.bob)
    assert [e["subject"] for e in bobs["items"]] == ["shared"]


async def _indexed(api: Api) -> None:
    async with api.pool.acquire() as conn:
        while await messages.index_pending(conn):
            pass


async def test_search_full_text_and_filters(api: Api) -> None:
    """Search finds words in bodies and subjects, newest first, and filters by read state."""
    await api.deliver(message("Quarterly report", "The numbers for the quarter.\r\n"), "alice@example.com")
    await api.deliver(message("Lunch", "Shall we meet for lunch?\r\n"), "alice@example.com")
    await api.deliver(message("Other", "quarterly mention in the body only\r\n"), "alice@example.com")
    await _indexed(api)
    status, body = await api.call("GET", "/api/emails/search?q=quarterly")
    assert status == 200
    assert [e["subject"] for e in body["items"]] == ["Other", "Quarterly report"]
    assert body["total"] == 2
    assert body["totalExact"] is True
    status, body = await api.call("GET", "/api/emails/search?q=lunch")
    assert [e["subject"] for e in body["items"]] == ["Lunch"]
    lunch_id = body["items"][0]["id"]
    await api.call("PATCH", f"/api/emails/{lunch_id}", json={"isRead": True})
    status, body = await api.call("GET", "/api/emails/search?isRead=false")
    assert {e["subject"] for e in body["items"]} == {"Quarterly report", "Other"}
    status, body = await api.call("GET", "/api/emails/search?from=remote.example&hasAttachments=false")
    assert body["total"] == 3
    status, body = await api.call("GET", "/api/emails/search?after=not-a-date")
    assert status == 400


async def test_auth_errors(api: Api) -> None:
    """No key: 401; bad key: 401; a key without the scope: 403; each a JSON error."""
    async with api.session.get(f"{api.url}/api/emails") as resp:
        assert resp.status == 401
        assert (await resp.json())["error"] == "unauthorized"
        assert resp.headers["WWW-Authenticate"] == "Bearer"
    status, body = await api.call("GET", "/api/emails", "relate_000000000000_" + "x" * 32)
    assert status == 401
    status, body = await api.call("GET", "/api/emails", api.alice_imap)
    assert status == 403
    assert body["error"] == "forbidden"
    status, _ = await api.call("GET", "/api/emails", api.alice_read)
    assert status == 200
    status, body = await api.call("DELETE", "/api/emails/1", api.alice_read)
    assert status == 403
    status, _ = await api.call("GET", "/api/emails", api.alice_write)
    assert status == 403
    async with api.session.get(f"{api.url}/api/emails", headers={"Authorization": f"ApiKey {api.alice}"}) as resp:
        assert resp.status == 200


async def test_unknown_route_and_bad_json(api: Api) -> None:
    """Unknown paths and malformed bodies get JSON errors, not HTML."""
    status, body = await api.call("GET", "/api/nothing-here")
    assert status == 404
    assert body["error"] == "not_found"
    (email_id,) = await api.deliver(message("x"), "alice@example.com")
    status, body = await api.call(
        "PATCH", f"/api/emails/{email_id}", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert status == 400
    assert body["error"] == "bad_request"
    status, body = await api.call("GET", "/api/emails/abc")
    assert status == 404


async def test_rate_limit_answers_429_with_retry_after(api: Api) -> None:
    """Past api.writes_per_minute a key gets 429 with Retry-After; reads still pass until their own limit."""
    api.server.state.limiter._limits["writes"] = 3
    (email_id,) = await api.deliver(message("x"), "alice@example.com")
    statuses = []
    for _ in range(4):
        status, _body = await api.call("PATCH", f"/api/emails/{email_id}", json={"isRead": True})
        statuses.append(status)
    assert statuses == [200, 200, 200, 429]
    async with api.session.patch(
        f"{api.url}/api/emails/{email_id}", headers=api.auth(api.alice), json={"isRead": True}
    ) as resp:
        assert resp.status == 429
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
    status, _ = await api.call("GET", "/api/emails")
    assert status == 200
    # Another key has its own budget.
    status, _ = await api.call("PATCH", f"/api/emails/{email_id}", api.alice_write, json={"isRead": False})
    assert status == 200


async def test_concurrent_requests(api: Api) -> None:
    """Fifty listings at once all succeed."""
    await api.deliver(message("x"), "alice@example.com")
    api.server.state.limiter._limits["requests"] = 1000
    results = await asyncio.gather(*(api.call("GET", "/api/emails") for _ in range(50)))
    assert all(status == 200 and body["total"] == 1 for status, body in results)


async def test_open_connections_counts_clients(api: Api) -> None:
    """The server reports its open HTTP connections (the heartbeat and systemd STATUS= show it)."""
    await api.call("GET", "/api/mailboxes")  # the session keeps this connection alive
    assert api.server.open_connections() >= 1


async def test_search_spans_folders_newest_first_and_caps_paging(api: Api) -> None:
    """Account-wide search merges every folder newest first; pages past the 1000th match are refused."""
    (first,) = await api.deliver(message("Alpha one", "needle here\r\n"), "alice@example.com")
    await api.deliver(message("Alpha two", "no match\r\n"), "alice@example.com")
    _, boxes = await api.call("GET", "/api/mailboxes")
    archive = next(b for b in boxes["items"] if b["specialUse"] == "\\Archive")
    await api.call("PATCH", f"/api/emails/{first}", json={"mailbox": archive["id"]})
    await api.deliver(message("Alpha three", "another needle\r\n"), "alice@example.com")
    await _indexed(api)
    status, body = await api.call("GET", "/api/emails/search?q=needle")
    assert status == 200
    assert [(e["subject"], e["mailboxId"] == archive["id"]) for e in body["items"]] == [
        ("Alpha three", False),
        ("Alpha one", True),
    ]
    status, body = await api.call("GET", f"/api/emails/search?q=needle&mailbox={archive['id']}")
    assert [e["subject"] for e in body["items"]] == ["Alpha one"]
    status, body = await api.call("GET", "/api/emails/search?q=needle&page=11&pageSize=100")
    assert status == 400
    assert "1000" in body["message"]


async def test_detail_has_the_authentication_block(api: Api) -> None:
    """Our Authentication-Results field becomes the detail's authentication block (ARC's result too); another
    host's is ignored."""
    raw = (
        b"Authentication-Results: mail.example.com;\r\n\tspf=pass smtp.mailfrom=carol@remote.example;\r\n"
        b'\tspf=none smtp.helo=mx.remote.example;\r\n\tdkim=fail reason="body hash" header.d=remote.example;\r\n'
        b"\tdkim=pass header.d=remote.example header.s=ed header.a=ed25519-sha256;\r\n"
        b"\tarc=pass (i=1 as.d=lists.example) header.oldest-pass=0 smtp.remote-ip=192.0.2.7;\r\n"
        b"\tdmarc=pass (p=reject dis=none) header.from=remote.example\r\n"
        b"Authentication-Results: mx.elsewhere.example; dmarc=fail\r\n" + message("signed")
    )
    (email_id,) = await api.deliver(raw, "alice@example.com")
    (plain_id,) = await api.deliver(message("no checks"), "alice@example.com")
    status, body = await api.call("GET", f"/api/emails/{email_id}")
    assert status == 200
    block = body["authentication"]
    assert (block["authservId"], block["spf"], block["dkim"], block["dmarc"]) == (
        "mail.example.com",
        "pass",
        "pass",
        "pass",
    )
    assert block["results"][0] == {
        "method": "spf",
        "result": "pass",
        "reason": None,
        "properties": {"smtp.mailfrom": "carol@remote.example"},
    }
    assert block["results"][2]["reason"] == "body hash"
    assert block["arc"] == "pass"
    assert block["results"][4]["properties"] == {"header.oldest-pass": "0", "smtp.remote-ip": "192.0.2.7"}
    status, body = await api.call("GET", f"/api/emails/{plain_id}")
    assert body["authentication"] is None
