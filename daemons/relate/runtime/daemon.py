"""What every daemon process shares: arguments, config, logging, database, signals.

A daemon's ``main`` hands :func:`run` a coroutine factory that starts its
service (on the sockets systemd passed, if any) and returns it; ``run`` then waits for SIGTERM/SIGINT (graceful
stop) and SIGHUP (reload TLS certificates). Start-up problems (bad config,
unreachable database, old schema) are one line on stderr and exit code 1,
never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from relate import __version__
from relate import config as config_mod
from relate.auth import Authenticator
from relate.config import Config, ConfigError
from relate.errors import RelateError
from relate.notify import Notifier
from relate.runtime.listen import inherited_sockets
from relate.store import db

log = logging.getLogger("relate")


class Service(Protocol):
    def reload_tls(self) -> None: ...

    async def stop(self, grace: float = 30.0) -> None: ...


@dataclass
class Context:
    """The shared parts a service is built from."""

    cfg: Config
    pool: asyncpg.Pool
    authenticator: Authenticator
    notifier: Notifier


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # aiosmtpd logs every command at INFO and deprecation chatter at WARNING; our own lines say what matters.
    logging.getLogger("mail.log").setLevel(logging.ERROR)


async def open_context(cfg: Config) -> Context:
    pool = await db.create_pool(cfg.database)
    return Context(
        cfg=cfg,
        pool=pool,
        authenticator=Authenticator(pool, cfg.auth, internal_key=cfg.internal.api_key),
        notifier=Notifier(cfg.internal),
    )


Starter = Callable[[Context, dict[str, list[socket.socket]] | None], Awaitable[Service]]


async def _serve(cfg: Config, start: Starter) -> None:
    sockets = inherited_sockets()
    ctx = await open_context(cfg)
    try:
        service = await start(ctx, sockets)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, service.reload_tls)
        await stop.wait()
        log.info("stopping")
        await service.stop()
    finally:
        await ctx.pool.close()


def run(name: str, start: Starter) -> None:
    """The body of a daemon's console script."""
    parser = argparse.ArgumentParser(prog=f"relate-{name}", description=f"Relate Mail {name} daemon.")
    parser.add_argument("--config", "-c", help="config file (default: $RELATE_CONFIG or /etc/relate/relate.yaml)")
    parser.add_argument("--version", action="version", version=f"relate-{name} {__version__}")
    args = parser.parse_args()
    try:
        cfg = config_mod.load(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"relate-{name}: {exc}\n")
        sys.exit(1)
    setup_logging(cfg.logging.level)
    try:
        asyncio.run(_serve(cfg, start))
    except (RelateError, ConfigError) as exc:
        sys.stderr.write(f"relate-{name}: {exc}\n")
        sys.exit(1)
    except OSError as exc:
        sys.stderr.write(f"relate-{name}: {exc.strerror or exc}\n")
        sys.exit(1)
