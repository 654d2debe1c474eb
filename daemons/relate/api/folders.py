"""Folders over REST: list, create, rename, delete.

Listing needs ``api:read``, changes ``api:write``. The rules are IMAP's
(services/folders.py says them: INBOX, folders below, special use), and every
change is announced like IMAP's CREATE, RENAME and DELETE: the hub sends
``MailboxChanged`` to the user's apps whichever protocol made it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relate.api.app import json_body, mailbox_ref, path_id, state
from relate.api.errors import invalid, not_found
from relate.api.security import READ, WRITE, principal, requires
from relate.api.shapes import mailbox
from relate.services import folders
from relate.store import emails as store

routes = web.RouteTableDef()


async def _answer(request: web.Request, mailbox_id: int, status: int = 200) -> web.Response:
    rows = await store.mailboxes(state(request).pool, principal(request).user_id, mailbox_id)
    if not rows:
        raise not_found("mailbox")  # deleted meanwhile
    return web.json_response(mailbox(rows[0]), status=status)


def _name(data: dict[str, Any]) -> str:
    value = data.get("name")
    if not isinstance(value, str):
        raise invalid("name is required: the folder's full name, levels joined by '/'")
    return value


# RFC 9051 §6.3.9 (LIST), as folders for apps.
@routes.get("/api/mailboxes")
@requires(READ)
async def list_mailboxes(request: web.Request) -> web.Response:
    rows = await store.mailboxes(state(request).pool, principal(request).user_id)
    return web.json_response({"items": [mailbox(r) for r in rows], "total": len(rows)})


# RFC 9051 §6.3.4 (CREATE), RFC 6154 §5.2 (CREATE-SPECIAL-USE)
@routes.post("/api/mailboxes")
@requires(WRITE)
async def create_mailbox(request: web.Request) -> web.Response:
    data = await json_body(request)
    unknown = set(data) - {"name", "specialUse"}
    if unknown:
        raise invalid(f"unknown fields: {', '.join(sorted(unknown))}")
    special = data.get("specialUse")
    if special is not None and not isinstance(special, str):
        raise invalid("specialUse must be a string or null")
    st = state(request)
    made = await folders.create(st.pool, principal(request).user_id, _name(data), special, limit=st.cfg.quota.mailboxes)
    return await _answer(request, made, 201)


# RFC 9051 §6.3.6 (RENAME)
@routes.patch("/api/mailboxes/{id}")
@requires(WRITE)
async def rename_mailbox(request: web.Request) -> web.Response:
    data = await json_body(request)
    unknown = set(data) - {"name"}
    if unknown:
        raise invalid(f"unknown fields: {', '.join(sorted(unknown))}")
    box = await mailbox_ref(request, str(path_id(request)))
    renamed = await folders.rename(state(request).pool, principal(request).user_id, box, _name(data))
    return await _answer(request, renamed)


# RFC 9051 §6.3.5 (DELETE)
@routes.delete("/api/mailboxes/{id}")
@requires(WRITE)
async def delete_mailbox(request: web.Request) -> web.Response:
    box = await mailbox_ref(request, str(path_id(request)))
    await folders.delete(state(request).pool, principal(request).user_id, box)
    return web.json_response({"deleted": True, "id": box["id"]})
