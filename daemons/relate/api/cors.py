"""Cross-origin requests (the Fetch standard's CORS protocol) for web and desktop apps on other origins.

Policy:

- ``api.cors_origins`` lists the origins allowed (``https://mail.example.com``,
  ``http://localhost:5173``), or ``*`` for any. Empty (the default): no CORS
  header is ever sent and a browser keeps other origins' pages out, as before.
- A listed origin is answered with itself in ``Access-Control-Allow-Origin``
  (with ``Vary: Origin``) and ``Access-Control-Allow-Credentials: true``. The
  wildcard is answered with ``*`` and never with credentials: a browser
  refuses that pairing, and echoing any origin with credentials would hand
  every web page the user's session.
- A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from an
  allowed origin for a path the API serves is answered here, 204, before any
  authentication (browsers send no credentials in a preflight): the methods
  the API uses, the request headers asked for among those it reads, and a
  10-minute cache. Any other ``OPTIONS`` is the API's 405, as before.
- Headers an app needs to read are exposed: ``Retry-After`` (429 and 503),
  ``WWW-Authenticate`` and ``Content-Disposition`` (downloads).
- The WebSocket hub is not CORS: a browser opens it from any page, with the
  key in the query (``access_token``), which no other page has.
"""

from __future__ import annotations

from aiohttp import web

from relate.config import ApiConfig

METHODS = "GET, POST, PUT, PATCH, DELETE"
# Request headers a client may send cross-origin (beyond the CORS-safelisted ones).
HEADERS = frozenset({"authorization", "content-type", "accept", "accept-language", "content-language"})
EXPOSED = "Retry-After, WWW-Authenticate, Content-Disposition"
MAX_AGE = "600"


def normalized(origin: str) -> str:
    """An origin as browsers serialize it: scheme and host lower case, no trailing slash."""
    return origin.strip().rstrip("/").lower()


class Cors:
    def __init__(self, cfg: ApiConfig) -> None:
        origins = [normalized(o) for o in cfg.cors_origins]
        self.any = "*" in origins
        self.origins = frozenset(o for o in origins if o != "*")

    @property
    def enabled(self) -> bool:
        return self.any or bool(self.origins)

    def allowed(self, origin: str | None) -> bool:
        return origin is not None and (self.any or normalized(origin) in self.origins)

    def headers(self, origin: str) -> dict[str, str]:
        """The headers answering a request from an allowed ``origin``."""
        if normalized(origin) in self.origins:
            return {
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Credentials": "true",
                "Vary": "Origin",
            }
        return {"Access-Control-Allow-Origin": "*"}  # the wildcard: never with credentials

    def preflight(self, request: web.Request) -> web.Response | None:
        """The answer to a preflight from an allowed origin, or None (the request goes on as it is)."""
        origin = request.headers.get("Origin")
        wanted = request.headers.get("Access-Control-Request-Method")
        if request.method != "OPTIONS" or wanted is None or not self.allowed(origin):
            return None
        if isinstance(request.match_info.http_exception, web.HTTPNotFound):
            return None  # no such path: the API's 404
        assert origin is not None
        asked = [h.strip().lower() for h in request.headers.get("Access-Control-Request-Headers", "").split(",")]
        headers = self.headers(origin) | {
            "Access-Control-Allow-Methods": METHODS,
            "Access-Control-Max-Age": MAX_AGE,
        }
        allowed_headers = [h for h in asked if h in HEADERS]
        if allowed_headers:
            headers["Access-Control-Allow-Headers"] = ", ".join(allowed_headers)
        if "Vary" in headers:
            headers["Vary"] = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
        return web.Response(status=204, headers=headers)

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """Every answer to an allowed origin carries its CORS headers (errors and streams included)."""
        origin = request.headers.get("Origin")
        if not self.allowed(origin) or "Access-Control-Allow-Origin" in response.headers:
            return
        assert origin is not None
        response.headers.update(self.headers(origin))
        response.headers["Access-Control-Expose-Headers"] = EXPOSED
