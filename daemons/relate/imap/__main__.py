"""``relate-imap`` / ``python -m relate.imap``: the IMAP daemon."""

from __future__ import annotations

import socket

from relate.imap.server import ImapServer
from relate.runtime.daemon import Context, run


async def start(ctx: Context, sockets: dict[str, list[socket.socket]] | None) -> ImapServer:
    server = ImapServer(ctx.cfg, ctx.pool, ctx.authenticator, ctx.feed)
    await server.start(sockets)
    return server


def main() -> None:
    run("imap", start)


if __name__ == "__main__":
    main()
