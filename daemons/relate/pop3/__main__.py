"""``relate-pop3`` / ``python -m relate.pop3``: the POP3 daemon."""

from __future__ import annotations

import socket

from relate.pop3.server import Pop3Server
from relate.runtime.daemon import Context, run


async def start(ctx: Context, sockets: dict[str, list[socket.socket]] | None) -> Pop3Server:
    server = Pop3Server(ctx.cfg, ctx.pool, ctx.authenticator)
    await server.start(sockets, hold=ctx.hold_listeners)
    return server


def main() -> None:
    run("pop3", start)


if __name__ == "__main__":
    main()
