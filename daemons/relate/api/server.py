"""The API daemon's listeners: HTTP (``api.listen``, or systemd's ``api`` socket) and the internal Unix socket."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path

from aiohttp import web

from relate.api.app import ApiState, make_app
from relate.api.routes import ROUTE_MODULES  # imported with this module, never on the event loop (pywebpush is slow)
from relate.api.security import RateLimiter
from relate.config import parse_listen
from relate.runtime.daemon import Context
from relate.store.changes import ChangeFeed

log = logging.getLogger("relate.api")


class ApiServer:
    def __init__(self, ctx: Context) -> None:
        # The process's change feed when the runtime shares one, else one of its own.
        self._own_feed = ctx.feed is None
        self.feed = ctx.feed if ctx.feed is not None else ChangeFeed(ctx.cfg.database)
        self.state = ApiState(
            cfg=ctx.cfg,
            pool=ctx.pool,
            authenticator=ctx.authenticator,
            limiter=RateLimiter(ctx.cfg.api),
            feed=self.feed,
        )
        self.app = make_app(self.state, ROUTE_MODULES)
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        self._sites: list[web.BaseSite] = []
        self._unix_path: Path | None = None

    async def start(self, sockets: dict[str, list[socket.socket]] | None = None, *, unix: bool = True) -> None:
        if self._own_feed:
            await self.feed.start()
        await self._runner.setup()
        cfg = self.state.cfg
        if sockets is not None and "api" in sockets:
            self._sites += [web.SockSite(self._runner, sock) for sock in sockets["api"]]
        else:
            for item in cfg.api.listen:
                host, port = parse_listen(item)
                self._sites.append(web.TCPSite(self._runner, host, port, reuse_address=True))
        if unix:
            path = cfg.internal.api_socket
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a stale socket from a previous run
            self._sites.append(web.UnixSite(self._runner, str(path)))
            self._unix_path = path
        for site in self._sites:
            await site.start()
        if self._unix_path is not None:
            # The daemons that notify run as the same user (or group): nobody else may talk to it.
            os.chmod(self._unix_path, 0o660)
        log.info("api listening on %s", ", ".join(site.name for site in self._sites))

    def addresses(self) -> list[tuple[str, int]]:
        """(host, port) of every TCP socket served."""
        found = []
        for site in self._sites:
            server = getattr(site, "_server", None)
            for sock in getattr(server, "sockets", None) or []:
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    found.append(sock.getsockname()[:2])
        return found

    def open_connections(self) -> int:
        """HTTP connections open now (WebSocket clients included), for the heartbeat and STATUS=."""
        server = self._runner.server
        return len(server.connections) if server is not None else 0

    def reload_tls(self) -> None:
        """Nothing to reload: the API speaks plain HTTP behind a TLS-terminating proxy."""

    def problem(self) -> str | None:
        """What is degraded (for the heartbeat and ``relatectl status``), or None."""
        return self.feed.problem()

    async def stop(self, grace: float = 10.0) -> None:
        await self._runner.shutdown()
        await self._runner.cleanup()
        if self._own_feed:
            await self.feed.stop()
        if self._unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._unix_path.unlink()
