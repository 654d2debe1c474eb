"""Who is calling, what they may do, and how often.

Policy:

- Users present an API key as ``Authorization: Bearer KEY`` (or ``ApiKey
  KEY``); browsers opening the WebSocket hub may pass it as the
  ``access_token`` query parameter instead. The foundation's authenticator
  verifies it (cached, with the failed-login lockout per client address and
  key prefix; the client address is the peer's, or what a proxy listed in
  ``api.trusted_proxies`` says: api/forwarded.py). No key or a bad key:
  401. A valid key without the route's scope: 403 (not a failed login).
  ``app`` implies ``api:read`` and ``api:write``.
- Internal calls (``POST /api/internal-notifications``) carry the internal
  key and are accepted on the Unix socket, and over HTTP only when
  ``api.internal_over_http`` is set.
- Rate limits per key, over a sliding minute: every request counts against
  ``api.requests_per_minute`` (100), every write (POST, PUT, PATCH, DELETE)
  also against ``api.writes_per_minute`` (30), key management also against
  ``api.key_calls_per_minute`` (10). Over a limit: 429 with ``Retry-After``
  (whole seconds until a slot frees). Counts are per API process.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from relate.api import oidc
from relate.api.errors import ApiError
from relate.auth import Authenticator, AuthRefused, Principal
from relate.config import ApiConfig

log = logging.getLogger("relate.api")

READ = "api:read"
WRITE = "api:write"
INTERNAL = "internal"

PRINCIPAL = web.RequestKey("relate_principal", Principal)
# The client's address (api/forwarded.py), set by the error middleware for every request.
CLIENT = web.RequestKey("relate_client", str)

_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_MAX_TRACKED_KEYS = 100_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)


def requires(scope: str, *, key_management: bool = False) -> Callable[[H], H]:
    """Mark a route handler with the scope it needs (routes without a mark are public)."""

    def mark(handler: H) -> H:
        handler._relate_scope = scope  # type: ignore[attr-defined]
        handler._relate_keys = key_management  # type: ignore[attr-defined]
        return handler

    return mark


def scope_of(handler: Any) -> tuple[str | None, bool]:
    return getattr(handler, "_relate_scope", None), getattr(handler, "_relate_keys", False)


def presented_key(request: web.Request, *, allow_query: bool) -> str | None:
    header = request.headers.get("Authorization", "")
    kind, _, value = header.partition(" ")
    if kind.lower() in ("bearer", "apikey") and value.strip():
        return value.strip()
    if allow_query:
        return request.query.get("access_token") or None
    return None


def via_unix_socket(request: web.Request) -> bool:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return isinstance(sockname, str)


def client_address(request: web.Request) -> str:
    """The client's address: the peer's, or what a trusted proxy says (api/forwarded.py)."""
    return request.get(CLIENT) or request.remote or "local"


class RateLimiter:
    def __init__(self, cfg: ApiConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = {
            "requests": cfg.requests_per_minute,
            "writes": cfg.writes_per_minute,
            "keys": cfg.key_calls_per_minute,
        }
        self._clock = clock
        self._windows: dict[tuple[int, str], deque[float]] = {}

    def check(self, key_id: int, method: str, key_management: bool) -> None:
        """Count one request, or raise 429 (counting nothing) if any of its limits is spent."""
        kinds = ["requests"]
        if method in _WRITES:
            kinds.append("writes")
        if key_management:
            kinds.append("keys")
        now = self._clock()
        windows = []
        wait = 0.0
        for kind in kinds:
            window = self._windows.get((key_id, kind))
            if window is None:
                if len(self._windows) > _MAX_TRACKED_KEYS:
                    self._prune(now)
                window = self._windows[(key_id, kind)] = deque()
            while window and window[0] <= now - 60.0:
                window.popleft()
            if len(window) >= self._limits[kind]:
                wait = max(wait, window[0] + 60.0 - now)
            windows.append(window)
        if wait > 0:
            raise ApiError(
                429,
                "rate_limited",
                "too many requests; try again later",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        for window in windows:
            window.append(now)

    def _prune(self, now: float) -> None:
        for key in [k for k, w in self._windows.items() if not w or w[-1] <= now - 60.0]:
            del self._windows[key]


async def authorize(
    request: web.Request,
    handler: Any,
    *,
    authenticator: Authenticator,
    limiter: RateLimiter,
    cfg: ApiConfig,
    verifier: oidc.Verifier | None = None,
) -> None:
    """Check the caller against the route's scope; sets the request's principal for user routes."""
    scope, key_management = scope_of(handler)
    if scope is None:
        return
    client = client_address(request)
    if scope == INTERNAL:
        if not (via_unix_socket(request) or cfg.internal_over_http):
            raise ApiError(404, "not_found", "not found")
        key = presented_key(request, allow_query=False)
        if not key or not authenticator.check_internal(key, client=client):
            raise ApiError(401, "unauthorized", "a valid internal key is required")
        return
    key = presented_key(request, allow_query=request.path.startswith("/hubs/"))
    if not key:
        raise ApiError(401, "unauthorized", "an API key is required", headers={"WWW-Authenticate": "Bearer"})
    if verifier is not None and oidc.looks_like_jwt(key):
        principal = await _token_principal(verifier, key, client)
    else:
        try:
            principal = await authenticator.authenticate(None, key, None, client=client, service="api", use_scope=scope)
        except AuthRefused:
            raise ApiError(401, "unauthorized", "invalid API key", headers={"WWW-Authenticate": "Bearer"}) from None
    if not principal.has(scope):
        raise ApiError(403, "forbidden", f"this key lacks the {scope} scope")
    limiter.check(principal.key_id, request.method, key_management)
    request[PRINCIPAL] = principal


async def _token_principal(verifier: oidc.Verifier, token: str, client: str) -> Principal:
    """The principal of an OIDC token (api/oidc.py), or 401 (503 when the provider cannot be reached)."""
    try:
        return await verifier.principal(token)
    except oidc.TokenRefused as exc:
        log.warning("api-oidc-refused client=%s reason=%s", client, exc.reason)
        raise ApiError(401, "unauthorized", "invalid token", headers={"WWW-Authenticate": "Bearer"}) from None
    except oidc.ProviderUnavailable as exc:
        log.warning("api-oidc-unavailable client=%s reason=%s", client, exc)
        raise ApiError(503, "unavailable", "the identity provider cannot be reached; try again later") from None


def principal(request: web.Request) -> Principal:
    """The caller of a user route (set by :func:`authorize`)."""
    return request[PRINCIPAL]
