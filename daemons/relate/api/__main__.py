"""``relate-api`` / ``python -m relate.api``: the REST + WebSocket API daemon."""

from __future__ import annotations

import socket

from relate.api.server import ApiServer
from relate.runtime import metrics
from relate.runtime.daemon import Context, run


async def start(ctx: Context, sockets: dict[str, list[socket.socket]] | None) -> ApiServer:
    server = ApiServer(ctx)
    await server.start(sockets)
    if ctx.metrics is not None:
        open_now = metrics.child(metrics.CONNECTIONS_OPEN, "api", "api")

        async def read_connections() -> None:
            open_now.set(server.open_connections())

        ctx.metrics.before_scrape(read_connections, every=0)
    return server


def main() -> None:
    run("api", start)


if __name__ == "__main__":
    main()
