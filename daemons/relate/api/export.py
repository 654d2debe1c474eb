"""Mail out of the account: one message as an .eml file, and MBOX exports of a folder, a search or all.

Both need ``api:read``. The MBOX answer is streamed (chunked; relate.services.export writes mboxrd from a
server-side cursor), so its size does not matter to the API's memory.

Policy (rates): an export is long and holds a database connection while it
streams, so besides the per-key request limits each user may start
``api.exports_per_hour`` exports per hour and run one at a time, and a
process runs at most a quarter of ``database.pool_max`` at once (the rest of
the pool stays for everything else). Over any of these: 429 with
Retry-After. Counts are per API process, like the other limits. An export
that fails after its first bytes were sent is cut off (no final chunk), so
the client sees it incomplete rather than short.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable

from aiohttp import web

from relate.api.app import date_param, path_id, state
from relate.api.errors import ApiError, bad_request, not_found
from relate.api.security import READ, principal, requires
from relate.services import export
from relate.store import emails as store

log = logging.getLogger("relate.api")
routes = web.RouteTableDef()


class ExportLimiter:
    """Exports started per user in the last hour, the ones running, and the process-wide cap."""

    def __init__(self, per_hour: int, at_once: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_hour = per_hour
        self._at_once = at_once
        self._clock = clock
        self._started: dict[int, deque[float]] = {}
        self.running: set[int] = set()

    def start(self, user_id: int) -> None:
        """Count one export of ``user_id`` as started, or raise 429."""
        now = self._clock()
        window = self._started.setdefault(user_id, deque())
        while window and window[0] <= now - 3600:
            window.popleft()
        if len(window) >= self._per_hour:
            raise _busy(f"at most {self._per_hour} exports an hour", window[0] + 3600 - now)
        if user_id in self.running:
            raise _busy("an export of this account is running", 10)
        if len(self.running) >= self._at_once:
            raise _busy("the server is busy with other exports", 10)
        window.append(now)
        self.running.add(user_id)
        if len(self._started) > 10_000:
            for uid in [u for u, w in self._started.items() if not w or w[-1] <= now - 3600]:
                del self._started[uid]


def _busy(message: str, wait: float) -> ApiError:
    return ApiError(
        429, "rate_limited", f"{message}; try again later", headers={"Retry-After": str(max(1, math.ceil(wait)))}
    )


LIMITER = web.AppKey("relate_export_limiter", ExportLimiter)


def setup(app: web.Application) -> None:
    from relate.api.app import STATE

    cfg = app[STATE].cfg
    app[LIMITER] = ExportLimiter(cfg.api.exports_per_hour, max(1, cfg.database.pool_max // 4))


# RFC 5322 message as a file (RFC 2046 §5.2.1 message/rfc822).
@routes.get("/api/emails/{id}/eml")
@requires(READ)
async def get_eml(request: web.Request) -> web.Response:
    email_id = path_id(request)
    data = await store.raw(state(request).pool, principal(request).user_id, email_id)
    if data is None:
        raise not_found("email")
    disposition = f'attachment; filename="email-{email_id}.eml"'
    return web.Response(body=data, content_type="message/rfc822", headers={"Content-Disposition": disposition})


_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@routes.get("/api/export/mbox")
@requires(READ)
async def export_mbox(request: web.Request) -> web.StreamResponse:
    st, user = state(request), principal(request)
    q = request.query.get("q", "").strip()
    if len(q) > 1000:
        raise bad_request("q is too long (1000 characters at most)")
    sender = request.query.get("from") or None
    if sender is not None and len(sender) > 1000:
        raise bad_request("from is too long (1000 characters at most)")
    box = None
    if ref := request.query.get("mailbox"):
        if ref.isdigit() and not (ref.isascii() and len(ref) <= 19 and int(ref) <= 2**63 - 1):
            raise not_found("mailbox")
        box = await store.find_mailbox(st.pool, user.user_id, ref)
        if box is None:
            raise not_found("mailbox")
    selection = export.Selection(
        mailbox_id=box["id"] if box else None,
        query=q or None,
        sender=sender,
        after=date_param(request, "after"),
        before=date_param(request, "before"),
    )
    what = box["name"] if box else ("search" if q or sender or selection.after or selection.before else "all")
    limiter = request.app[LIMITER]
    limiter.start(user.user_id)
    try:
        return await _stream(request, selection, f"{user.address}-{what}")
    finally:
        limiter.running.discard(user.user_id)


async def _stream(request: web.Request, selection: export.Selection, name: str) -> web.StreamResponse:
    filename = _FILENAME_UNSAFE.sub("_", name)[:100] + ".mbox"
    response = web.StreamResponse(
        headers={"Content-Type": "application/mbox", "Content-Disposition": f'attachment; filename="{filename}"'}
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    user = principal(request)
    count = 0
    try:
        async for chunk in export.mbox(state(request).pool, user.user_id, selection):
            await response.write(chunk)
            count += 1
    except (ConnectionResetError, OSError) as exc:
        log.info("api-export-abandoned user=%s messages=%d error=%s", user.address, count, type(exc).__name__)
        raise
    except Exception:
        # Headers are sent: the only honest signal left is an unfinished body.
        log.exception("api-export-failed user=%s messages=%d", user.address, count)
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    log.info("api-export user=%s messages=%d", user.address, count)
    return response
