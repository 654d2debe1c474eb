"""Parts of a message its HTML refers to: ``cid:`` images (RFC 2392), served from the message itself.

relate.mail.display rewrites ``<img src="cid:logo@x">`` in the HTML that
``GET /api/emails/{id}`` answers to ``/api/emails/{id}/cid/logo%40x``; this
serves that part. It needs ``api:read`` like the rest of the message, so an
app fetches it with its key and shows it from a blob URL (an ``<img>`` cannot
send the key). Served like attachments: never rendered from the API's origin
(nosniff, a sandboxing CSP); images inline, anything else as a download.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from relate.api.app import path_id, state
from relate.api.errors import not_found
from relate.api.security import READ, principal, requires
from relate.mail.mime import part_content
from relate.store import emails as store

routes = web.RouteTableDef()


def _bare(content_id: str) -> str:
    return content_id.strip().removeprefix("<").removesuffix(">").strip()


# RFC 2392 (cid: URLs), RFC 2045 §7 (Content-ID).
@routes.get("/api/emails/{id}/cid/{cid}")
@requires(READ)
async def get_cid(request: web.Request) -> web.Response:
    row = await store.get(state(request).pool, principal(request).user_id, path_id(request))
    if row is None:
        raise not_found("email")
    wanted = _bare(request.match_info["cid"])
    item = next((a for a in row["attachments"] or [] if a.get("contentId") and _bare(a["contentId"]) == wanted), None)
    if item is None or not wanted:
        raise not_found("part")
    data = await asyncio.to_thread(part_content, bytes(row["raw"]), item["part"])
    if data is None:
        raise not_found("part")
    content_type = item.get("contentType") or "application/octet-stream"
    image = content_type.lower().startswith("image/") and "svg" not in content_type.lower()
    return web.Response(
        body=data,
        headers={
            "Content-Type": content_type if image else "application/octet-stream",
            "Content-Disposition": "inline" if image else "attachment",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
            "Cache-Control": "private, max-age=86400",
        },
    )
