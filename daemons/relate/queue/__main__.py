"""``relate-delivery`` / ``python -m relate.queue``: the delivery daemon."""

from __future__ import annotations

import socket

from relate.queue.worker import DeliveryWorker
from relate.runtime.daemon import Context, run


async def start(ctx: Context, sockets: dict[str, list[socket.socket]] | None) -> DeliveryWorker:
    worker = DeliveryWorker(ctx.cfg, ctx.pool, feed=ctx.feed)
    await worker.start()
    if ctx.metrics is not None:
        ctx.metrics.before_scrape(worker.read_backlog)
    return worker


def main() -> None:
    run("delivery", start)


if __name__ == "__main__":
    main()
