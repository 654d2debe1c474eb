"""The user's sender lists over REST: ``/api/sender-rules`` (relate.services.senders; applied by relate.spam)."""

from __future__ import annotations

from aiohttp import web

from relate.api.app import json_body, path_id, state
from relate.api.errors import invalid, not_found
from relate.api.security import READ, WRITE, principal, requires
from relate.errors import Invalid
from relate.services import senders
from relate.store import spam

routes = web.RouteTableDef()


@routes.get("/api/sender-rules")
@requires(READ)
async def list_rules(request: web.Request) -> web.Response:
    items = await senders.list_for(state(request).pool, principal(request).user_id)
    return web.json_response({"items": [_json(i) for i in items], "total": len(items)})


@routes.post("/api/sender-rules")
@requires(WRITE)
async def put_rule(request: web.Request) -> web.Response:
    data = await json_body(request)
    unknown = set(data) - {"pattern", "kind"}
    if unknown:
        raise invalid(f"unknown fields: {', '.join(sorted(unknown))[:200]}")
    pattern, kind = data.get("pattern"), data.get("kind")
    if not isinstance(pattern, str) or not isinstance(kind, str):
        raise invalid("pattern (an address or a domain) and kind (allow or block) are required strings")
    try:
        rule = await senders.put(state(request).pool, principal(request).user_id, pattern, kind)
    except Invalid as exc:
        raise invalid(str(exc)) from None
    return web.json_response(_json(rule), status=201)


@routes.delete("/api/sender-rules/{id}")
@requires(WRITE)
async def delete_rule(request: web.Request) -> web.Response:
    rule_id = path_id(request)
    if not await spam.delete_rule(state(request).pool, principal(request).user_id, rule_id=rule_id):
        raise not_found("sender rule")
    return web.json_response({"deleted": True, "id": rule_id})


def _json(rule: dict[str, object]) -> dict[str, object]:
    created = rule["createdAt"]
    return {**rule, "createdAt": created.isoformat() if hasattr(created, "isoformat") else created}
