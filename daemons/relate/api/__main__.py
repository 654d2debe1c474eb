"""``relate-api`` / ``python -m relate.api``: the REST + WebSocket API daemon."""

from __future__ import annotations

import socket

from relate.api.server import ApiServer
from relate.runtime.daemon import Context, run


async def start(ctx: Context, sockets: dict[str, list[socket.socket]] | None) -> ApiServer:
    server = ApiServer(ctx)
    await server.start(sockets)
    return server


def main() -> None:
    run("api", start)


if __name__ == "__main__":
    main()
