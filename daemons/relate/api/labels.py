"""Labels: ``/api/labels`` (list, create, rename or recolour, delete); services/labels.py has the rules.

Reads need ``api:read``, changes ``api:write``. Putting labels on emails is in
api/mail.py (``PUT``/``DELETE /api/emails/{id}/labels/{labelId}`` and the bulk
actions ``label``/``unlabel``): a label on an email is an IMAP keyword.
"""

from __future__ import annotations

from aiohttp import web

from relate.api.app import json_body, path_id, state
from relate.api.security import READ, WRITE, principal, requires
from relate.services import labels
from relate.store import labels as store

routes = web.RouteTableDef()


@routes.get("/api/labels")
@requires(READ)
async def list_labels(request: web.Request) -> web.Response:
    found = await store.list_all(state(request).pool, principal(request).user_id)
    return web.json_response({"items": [label.as_dict() for label in found], "total": len(found)})


@routes.post("/api/labels")
@requires(WRITE)
async def create_label(request: web.Request) -> web.Response:
    data = await json_body(request)
    made = await labels.create(state(request).pool, principal(request).user_id, data)
    return web.json_response(made.as_dict(), status=201)


@routes.patch("/api/labels/{id}")
@requires(WRITE)
async def update_label(request: web.Request) -> web.Response:
    label_id = path_id(request)
    data = await json_body(request)
    changed = await labels.update(state(request).pool, principal(request).user_id, label_id, data)
    return web.json_response(changed.as_dict())


@routes.delete("/api/labels/{id}")
@requires(WRITE)
async def delete_label(request: web.Request) -> web.Response:
    label_id = path_id(request)
    gone, count = await labels.delete(state(request).pool, principal(request).user_id, label_id)
    return web.json_response({"deleted": True, "id": gone.id, "unlabelled": count})
