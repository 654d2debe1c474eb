"""Remote content over REST: blocked by default in htmlBody, kept on request, cid: images served from the message."""

from __future__ import annotations

import email.policy
from email.message import EmailMessage

from tests.api.conftest import Api
from tests.api.test_openapi import _call, _document

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def newsletter() -> bytes:
    """An HTML newsletter: a tracking pixel, a remote background, and a logo as a related cid: part."""
    msg = EmailMessage()
    msg["From"] = "News <news@remote.example>"
    msg["To"] = "alice@example.com"
    msg["Subject"] = "This week"
    msg["Date"] = "Sat, 21 Nov 2026 10:00:00 +0000"
    msg.set_content("This week's news.\n")
    msg.add_alternative(
        '<html><body><img src="cid:logo@news.example" alt="News">'
        '<p style="color: navy; background: url(https://track.example/bg.png)">This week.</p>'
        '<img src="https://track.example/open.gif?u=alice" width="1" height="1"></body></html>',
        subtype="html",
    )
    msg.get_payload()[1].add_related(PNG, "image", "png", cid="<logo@news.example>")
    return msg.as_bytes(policy=email.policy.SMTP)


async def test_remote_content_is_blocked_by_default_and_kept_on_request(api: Api) -> None:
    """htmlBody fetches nothing remote unless remoteContent=allow; the count of what was blocked is given."""
    (email_id,) = await api.deliver(newsletter(), "alice@example.com")
    status, body = await api.call("GET", f"/api/emails/{email_id}")
    assert status == 200
    html = body["htmlBody"]
    assert ' src="https://track.example' not in html
    assert "bg.png" not in html
    assert 'data-remote-src="https://track.example/open.gif?u=alice"' in html
    assert "color:navy" in html.replace(" ", "")
    assert body["remoteContentBlocked"] == 2
    status, body = await api.call("GET", f"/api/emails/{email_id}?remoteContent=allow")
    assert 'src="https://track.example/open.gif?u=alice"' in body["htmlBody"]
    assert body["remoteContentBlocked"] == 0
    status, body = await api.call("GET", f"/api/emails/{email_id}?remoteContent=sometimes")
    assert (status, body["error"]) == (400, "bad_request")


async def test_cid_images_are_served_from_the_message(api: Api) -> None:
    """The logo's cid: src points at /api/emails/{id}/cid/...; that URL answers the part's bytes, to its owner only."""
    (email_id,) = await api.deliver(newsletter(), "alice@example.com")
    _, body = await api.call("GET", f"/api/emails/{email_id}")
    path = f"/api/emails/{email_id}/cid/logo%40news.example"
    assert f'src="{path}"' in body["htmlBody"]
    async with api.session.get(api.url + path, headers=api.auth(api.alice)) as resp:
        assert resp.status == 200
        assert resp.content_type == "image/png"
        assert resp.headers["Content-Security-Policy"] == "sandbox"
        assert await resp.read() == PNG
    assert (await api.call("GET", path, api.bob))[0] == 404
    assert (await api.call("GET", f"/api/emails/{email_id}/cid/nothing%40here"))[0] == 404
    doc = await _document(api)
    await _call(api, doc, "GET", f"/api/emails/{email_id}", "/api/emails/{id}", 200)
    await _call(api, doc, "GET", f"/api/emails/{email_id}/cid/nothing", "/api/emails/{id}/cid/{cid}", 404)
