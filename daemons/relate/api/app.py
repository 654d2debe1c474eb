"""The aiohttp application: one error middleware, the route modules, shared state.

Every route module has ``routes`` (an aiohttp RouteTableDef) and may have
``setup(app)`` to add start-up and clean-up hooks. The middleware is the one
place where errors become responses and log lines.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import asyncpg
from aiohttp import web

from relate.api import forwarded, jsonbody, oidc, security
from relate.api.cors import Cors
from relate.api.errors import ApiError, error_response, not_found
from relate.auth import Authenticator
from relate.config import Config
from relate.errors import Conflict, Invalid, MailboxGone, NotFound, TooMany
from relate.runtime import metrics
from relate.store import db, emails
from relate.store.changes import ChangeFeed
from relate.store.db import DatabaseUnavailable

log = logging.getLogger("relate.api")


@dataclass
class ApiState:
    cfg: Config
    pool: asyncpg.Pool
    authenticator: Authenticator
    limiter: security.RateLimiter
    # The process's change feed: the hub and web push hear every change to mail from it (api/hub.py, api/push.py).
    feed: ChangeFeed
    # api.trusted_proxies, parsed once (the config has checked them).
    proxies: list[forwarded.Network] = field(init=False)
    # api.cors_origins (api/cors.py).
    cors: Cors = field(init=False)

    def __post_init__(self) -> None:
        self.proxies = forwarded.parse_networks(self.cfg.api.trusted_proxies)
        self.cors = Cors(self.cfg.api)


STATE = web.AppKey("relate_state", ApiState)
# OIDC bearer tokens' verifier (api/oidc.py), when an issuer is configured.
VERIFIER = web.AppKey("relate_oidc", oidc.Verifier)

# The largest id a row can have (bigint).
_MAX_ID = 2**63 - 1
# JSON bodies larger than this are parsed in a worker thread.
_THREADED_JSON = 64 * 1024

_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}
_STATUS_CODES |= {409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid", 429: "rate_limited"}


def state(request: web.Request) -> ApiState:
    return request.app[STATE]


@web.middleware
async def metrics_middleware(request: web.Request, handler: security.Handler) -> web.StreamResponse:
    """Each request counted by its route (the pattern, never the path) and its answer's status class."""
    resource = request.match_info.route.resource
    route = f"{request.method} {resource.canonical}" if resource is not None else "unmatched"
    metrics.command("api", route if len(route) <= 120 else "unmatched")
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        metrics.reply("api", f"{exc.status // 100}xx")
        raise
    metrics.reply("api", f"{response.status // 100}xx")
    return response


@web.middleware
async def cors_middleware(request: web.Request, handler: security.Handler) -> web.StreamResponse:
    """A CORS preflight from an allowed origin is answered before authentication (api/cors.py)."""
    answer = request.app[STATE].cors.preflight(request)
    return answer if answer is not None else await handler(request)


@web.middleware
async def errors_middleware(request: web.Request, handler: security.Handler) -> web.StreamResponse:
    st = request.app[STATE]
    client = request[security.CLIENT] = forwarded.client_address(
        request.remote,
        request.headers.getall(st.cfg.api.proxy_header, []),
        header=st.cfg.api.proxy_header.lower(),
        trusted=st.proxies,
    )
    try:
        await security.authorize(
            request,
            request.match_info.handler,
            authenticator=st.authenticator,
            limiter=st.limiter,
            cfg=st.cfg.api,
            verifier=request.app.get(VERIFIER),
        )
        _check_parameters(request)
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
    except (Conflict, TooMany) as exc:
        return error_response(409, "conflict", str(exc))
    except Invalid as exc:
        return error_response(422, "invalid", str(exc))
    except DatabaseUnavailable:
        log.warning("api-unavailable client=%s method=%s path=%s reason=database", client, request.method, request.path)
        return error_response(503, "unavailable", "the database is unavailable; try again later")
    except Exception as exc:
        if not db.unavailable(exc):
            log.exception("api-error client=%s method=%s path=%s", client, request.method, request.path)
            return error_response(500, "internal", "internal error")
        log.warning(
            "api-unavailable client=%s method=%s path=%s error=%s",
            client,
            request.method,
            request.path,
            type(exc).__name__,
        )
        return error_response(503, "unavailable", "service temporarily unavailable; try again later")


def _check_parameters(request: web.Request) -> None:
    """400 for a query or path parameter holding NUL or a lone surrogate: no handler can use one."""
    for name, value in (*request.query.items(), *request.match_info.items()):
        if jsonbody.unstorable(name) or jsonbody.unstorable(value):
            shown = name[:40].encode("ascii", "backslashreplace").decode()
            raise ApiError(400, "bad_request", f"parameter {shown} must not contain NUL characters or lone surrogates")


def make_app(st: ApiState, route_modules: Sequence[ModuleType]) -> web.Application:
    """The application serving ``route_modules`` (relate.api.routes.ROUTE_MODULES, which import this module)."""
    middlewares = [metrics_middleware, errors_middleware]
    if st.cors.enabled:
        middlewares.insert(1, cors_middleware)
    app = web.Application(middlewares=middlewares, client_max_size=st.cfg.api.max_body_size)
    app[STATE] = st
    if st.cfg.api.oidc.issuer:  # passed to security.authorize
        verifier = app[VERIFIER] = oidc.Verifier(st.cfg.api.oidc, st.pool)

        async def close_verifier(_: web.Application) -> None:
            await verifier.close()

        app.on_cleanup.append(close_verifier)
    if st.cors.enabled:
        app.on_response_prepare.append(st.cors.on_prepare)
    for module in route_modules:
        app.add_routes(module.routes)
        setup = getattr(module, "setup", None)
        if setup is not None:
            setup(app)
    return app


# --- helpers for handlers -------------------------------------------------


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or 400/413/415 (api/jsonbody.py has the bounds)."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send application/json")
    data = await request.read()
    cfg = state(request).cfg.api
    parse = functools.partial(jsonbody.parse, max_depth=cfg.max_json_depth, max_items=cfg.max_json_items)
    try:
        # About 1 ms per 64 KiB: bodies with attachments are parsed off the event loop.
        return parse(data) if len(data) <= _THREADED_JSON else await asyncio.to_thread(parse, data)
    except jsonbody.BodyError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None


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


def utc_datetime(raw: str) -> datetime:
    """An ISO 8601 date or date-time (UTC unless it says otherwise), in UTC; ValueError or OverflowError."""
    value = datetime.fromisoformat(raw)
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    # PostgreSQL is given UTC: year 1 at +14:00, or 9999-12-31 at -14:00, is out of range there.
    return value.astimezone(UTC)


def date_param(request: web.Request, name: str) -> datetime | None:
    """An optional ISO 8601 date or date-time query parameter, in UTC; else 400."""
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        return utc_datetime(raw)
    except (ValueError, OverflowError):
        raise ApiError(
            400, "bad_request", f"{name} must be an ISO 8601 date or date-time from year 1 to 9999"
        ) from None


def path_id(request: web.Request, name: str = "id") -> int:
    """A positive bigint id from the path; else 404 (int() alone would take "+1", "1_0" or Arabic digits)."""
    text = request.match_info[name]
    if not (text.isascii() and text.isdigit() and len(text) <= 19) or not 1 <= int(text) <= _MAX_ID:
        raise ApiError(404, "not_found", "not found")
    return int(text)


async def mailbox_ref(request: web.Request, ref: str) -> dict[str, Any]:
    """A mailbox of the caller's by id or name (``id, name, special_use``); 404 when there is none."""
    if ref.isdigit() and not (ref.isascii() and len(ref) <= 19 and int(ref) <= _MAX_ID):
        # The store reads any digits as an id: "²" or 20 digits would fail in int() or PostgreSQL.
        raise not_found("mailbox")
    box = await emails.find_mailbox(state(request).pool, security.principal(request).user_id, ref)
    if box is None:
        raise not_found("mailbox")
    return box


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
