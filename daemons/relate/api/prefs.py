"""The user's preferences over REST: ``/api/preferences`` (relate.services.preferences has the schema).

Reading needs ``api:read``, changing ``api:write``. PUT replaces the whole
set (omitted preferences return to their defaults), PATCH merges (RFC 7396:
``null`` returns one to its default). Every answer is the full, effective set.
"""

from __future__ import annotations

from aiohttp import web

from relate.api.app import json_body, state
from relate.api.security import READ, WRITE, principal, requires
from relate.services import preferences

routes = web.RouteTableDef()


@routes.get("/api/preferences")
@requires(READ)
async def get_preferences(request: web.Request) -> web.Response:
    return web.json_response(await preferences.get(state(request).pool, principal(request).user_id))


@routes.put("/api/preferences")
@requires(WRITE)
async def put_preferences(request: web.Request) -> web.Response:
    data = await json_body(request)
    return web.json_response(await preferences.replace(state(request).pool, principal(request).user_id, data))


@routes.patch("/api/preferences")
@requires(WRITE)
async def patch_preferences(request: web.Request) -> web.Response:
    data = await json_body(request)
    return web.json_response(await preferences.patch(state(request).pool, principal(request).user_id, data))
