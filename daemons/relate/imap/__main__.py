"""``relate-imap`` / ``python -m relate.imap``: the IMAP daemon."""

from __future__ import annotations

import gc
import socket

from relate.imap.server import ImapServer
from relate.runtime.daemon import Context, run

# The collector's first generation is collected every this many allocations (CPython's default: 700).
# IMAP sessions live long and many at once: at 700, a burst of work across thousands of them (news of
# one delivery to 10,000 sessions in IDLE) promotes its short-lived futures to the older generations
# and sets off full collections over every session's objects, a second each at 10,000 sessions.
# Collected this rarely, those die young by reference counting; a young collection stays short.
GC_YOUNG_THRESHOLD = 50_000


async def start(ctx: Context, sockets: dict[str, list[socket.socket]] | None) -> ImapServer:
    gc.freeze()  # what start-up made (modules, config) lives as long as the process: never scanned again
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    server = ImapServer(ctx.cfg, ctx.pool, ctx.authenticator, ctx.feed)
    await server.start(sockets, hold=ctx.hold_listeners)
    return server


def main() -> None:
    run("imap", start)


if __name__ == "__main__":
    main()
