"""``relate-smtp`` / ``python -m relate.smtp``: the SMTP daemon."""

from __future__ import annotations

import socket

from relate.runtime.daemon import Context, run
from relate.smtp.server import SmtpServer


async def start(ctx: Context, sockets: dict[str, list[socket.socket]] | None) -> SmtpServer:
    server = SmtpServer(ctx.cfg, ctx.pool, ctx.authenticator)
    await server.start(sockets, hold=ctx.hold_listeners)
    return server


def main() -> None:
    run("smtp", start)


if __name__ == "__main__":
    main()
