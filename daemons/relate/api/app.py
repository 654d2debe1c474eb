"""The aiohttp application: one error middleware, the route modules, shared state.

Every route module has ``routes`` (an aiohttp RouteTableDef) and may have
``setup(app)`` to add start-up and clean-up hooks. The middleware is the one
place where errors become responses and log lines.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiohttp import web

from relate.api import security
from relate.api.errors import ApiError, error_response
from relate.auth import Authenticator
from relate.config import Config
from relate.errors import Conflict, Invalid, MailboxGone, NotFound
from relate.store.changes import ChangeFeed
from relate.store.db import DatabaseUnavailable

log = logging.getLogger("relate.api")


@dataclass
class ApiState:
    cfg: Config
    pool: asyncpg.Pool
    authenticator: Authenticator
    limiter: security.RateLimiter
    feed: ChangeFeed
    # Filled in by route modules' setup hooks (the hub, the push sender, ...).
    parts: dict[str, Any] = field(default_factory=dict)


STATE = web.AppKey("relate_state", ApiState)

_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}
_STATUS_CODES |= {409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid", 429: "rate_limited"}


def state(request: web.Request) -> ApiState:
    return request.app[STATE]


@web.middleware
async def errors_middleware(request: web.Request, handler: security.Handler) -> web.StreamResponse:
    st = request.app[STATE]
    try:
        await security.authorize(
            request,
            request.match_info.handler,
            authenticator=st.authenticator,
            limiter=st.limiter,
            cfg=st.cfg.api,
        )
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _STATUS_CODES.get(exc.status, "error")
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return error_response(exc.status, code, exc.reason, headers)
    except (NotFound, MailboxGone) as exc:
        return error_response(404, "not_found", str(exc))
    except Conflict as exc:
        return error_response(409, "conflict", str(exc))
    except Invalid as exc:
        return error_response(422, "invalid", str(exc))
    except DatabaseUnavailable:
        log.warning("api-unavailable method=%s path=%s reason=database", request.method, request.path)
        return error_response(503, "unavailable", "the database is unavailable; try again later")
    except (asyncpg.PostgresConnectionError, ConnectionError, OSError) as exc:
        log.warning("api-unavailable method=%s path=%s error=%s", request.method, request.path, type(exc).__name__)
        return error_response(503, "unavailable", "service temporarily unavailable; try again later")
    except Exception:
        log.exception("api-error method=%s path=%s", request.method, request.path)
        return error_response(500, "internal", "internal error")


def make_app(st: ApiState) -> web.Application:
    from relate.api.routes import ROUTE_MODULES

    app = web.Application(middlewares=[errors_middleware], client_max_size=st.cfg.api.max_body_size)
    app[STATE] = st
    for module in ROUTE_MODULES:
        app.add_routes(module.routes)
        setup = getattr(module, "setup", None)
        if setup is not None:
            setup(app)
    return app


# --- helpers for handlers -------------------------------------------------


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or 400/415."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send application/json")
    try:
        data = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return data


def int_param(request: web.Request, name: str, default: int | None = None, *, minimum: int = 1) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ApiError(400, "bad_request", f"{name} is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_request", f"{name} must be an integer") from None
    if value < minimum:
        raise ApiError(400, "bad_request", f"{name} must be at least {minimum}")
    return value


def path_id(request: web.Request, name: str = "id") -> int:
    try:
        value = int(request.match_info[name])
    except ValueError:
        raise ApiError(404, "not_found", "not found") from None
    if value < 1 or value > 2**63 - 1:
        raise ApiError(404, "not_found", "not found")
    return value


def paging(request: web.Request) -> tuple[int, int]:
    """(page, pageSize) from the query; pageSize at most api.max_page_size."""
    page = int_param(request, "page", 1)
    size = int_param(request, "pageSize", 50)
    limit = state(request).cfg.api.max_page_size
    if size > limit:
        raise ApiError(400, "bad_request", f"pageSize must be at most {limit}")
    if page > 1_000_000:
        raise ApiError(400, "bad_request", "page is too large")
    return page, size


def page_of(items: list[Any], page: int, size: int, total: int) -> dict[str, Any]:
    return {"items": items, "page": page, "pageSize": size, "total": total}
