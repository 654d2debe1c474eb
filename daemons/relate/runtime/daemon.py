"""What every daemon process shares: arguments, config, logging, database, change feed, signals, systemd.

One function, :func:`serve`, runs any set of services in one process: each
daemon's console script runs its one service with it, and the dev run starts
each daemon as a process of its own, with the sockets bound for it, exactly
as the systemd units do (runtime/supervisor.py). A service is a coroutine
factory (a :data:`Starter`) that starts it on the sockets systemd passed, if
any, and returns it.

Start-up, in order: config, logging, the pool (with the schema check), the
services' listeners, the change feed (when a service subscribed to it), a
heartbeat row per service, the loop-lag watchdog, then ``READY=1`` to systemd,
so a unit is "active" only when it really serves, and only then do the
listeners accept (until then they listen, and clients wait in the backlog, as
they do on systemd's sockets before the daemon starts). Then the watchdog is fed
from the event loop (a loop that hangs stops the keep-alives and systemd
restarts the daemon), and the process waits for SIGTERM/SIGINT (graceful
stop: ``STOPPING=1``, then each service's own ``stop``, which lets SMTP
transactions in flight finish and says BYE to IMAP and POP3 sessions) and
SIGHUP (every service reloads its TLS certificates; one that fails to load
keeps the old one). A service that reports a problem (``problem()``, e.g. its
change feed is down) shows it in ``STATUS=``, its heartbeat and the log.

Start-up problems (bad config, unreachable database, old schema) are one line
on stderr and exit code 1, never a traceback.

Logging goes to the journal when stderr is connected to it (``$JOURNAL_STREAM``
names stderr's device and inode): as entries with fields (priority,
identifier, logger name, code location) over journald's native socket
(runtime/journal.py); without that socket, as plain lines with a ``<N>``
syslog priority prefix, which journald turns into the entry's priority.
Elsewhere: stderr with timestamps.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn, Protocol, runtime_checkable

import asyncpg

from relate import __version__
from relate import config as config_mod
from relate.auth import Authenticator
from relate.config import Config, ConfigError
from relate.errors import RelateError
from relate.runtime import journal
from relate.runtime.heartbeat import Heartbeat
from relate.runtime.listen import inherited_sockets, socket_unit
from relate.runtime.looplag import LoopWatchdog
from relate.runtime.sdnotify import SystemdNotifier
from relate.store import db
from relate.store.changes import ChangeFeed

if TYPE_CHECKING:  # imported where used: relatectl imports this module, and prometheus_client costs 50 ms
    from relate.runtime.metrics import MetricsServer

log = logging.getLogger("relate")


class Service(Protocol):
    def reload_tls(self) -> None: ...

    async def stop(self, grace: float = 30.0) -> None: ...


@runtime_checkable
class Counted(Protocol):
    """A service that serves connections and can say how many are open (for STATUS= and heartbeats)."""

    def open_connections(self) -> int: ...


@runtime_checkable
class Degradable(Protocol):
    """A service that can say what is wrong with it while it goes on serving (None: nothing)."""

    def problem(self) -> str | None: ...


@runtime_checkable
class Held(Protocol):
    """A service whose listeners accept nothing until told to (it was started with ``Context.hold_listeners``)."""

    async def start_serving(self) -> None: ...


@dataclass
class Context:
    """The shared parts a service is built from."""

    cfg: Config
    pool: asyncpg.Pool
    authenticator: Authenticator
    # The process's one change feed; None: each service that needs one makes its own (tests do).
    feed: ChangeFeed | None = None
    # The process's /metrics endpoint, for services to add what they read at scrape time; None in tests.
    metrics: MetricsServer | None = None
    # Services listen but accept nothing until serve() says so, after READY=1 (see serve()).
    hold_listeners: bool = False


class _PriorityPrefix(logging.Formatter):
    """``<N>`` syslog priority before each line (sd-daemon(3)); the journal adds time, host and unit itself."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{journal.SYSLOG_PRIORITY.get(record.levelno, 6)}>"
        return prefix + super().format(record).replace("\n", "\n" + prefix)


class _Timestamped(logging.Formatter):
    """``%(asctime)s`` as logging.Formatter writes it, the part before the milliseconds made once a second:
    the daemons log a line or two per message and connection, and ``time.strftime`` was half of a line's
    formatting."""

    _made: tuple[int, str] = (-1, "")  # (second, its text): one tuple, replaced whole

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second, text = self._made
        if int(record.created) != second:
            text = time.strftime(self.default_time_format, self.converter(record.created))
            self._made = (int(record.created), text)
        msec = self.default_msec_format
        return text if msec is None else msec % (text, record.msecs)


def _journal_handler(identifier: str) -> logging.Handler:
    if journal.native_available():
        return journal.JournalHandler(identifier)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PriorityPrefix("%(name)s: %(message)s"))
    return handler


class _OneLine(logging.Filter):
    """A library's warnings about an unreachable database as one line each, at most once a minute.

    asyncpg's pool logs a full traceback every time it fails to re-open a connection (every second or
    two while PostgreSQL is down); the daemons' own lines already say what an outage does to clients.
    """

    def __init__(self, every: float = 60.0) -> None:
        super().__init__()
        self.every = every
        self._last = -every

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text = (str(exc).strip().splitlines() or [""])[0]
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {text}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        if record.created - self._last < self.every:
            return False
        self._last = record.created
        return True


def setup_logging(level: str, identifier: str = "relate") -> None:
    """Log at ``level`` to the journal under systemd, else to stderr with timestamps."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    if journal.stderr_is_journal():
        handler = _journal_handler(identifier)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Timestamped("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # No handler here writes the thread or process of a record (journald has the pid from the socket):
    # not looking them up saves each line a few calls (the logging HOWTO's "Optimization").
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root.addHandler(handler)
    root.setLevel(level.upper())
    pool_log = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, _OneLine) for f in pool_log.filters):
        pool_log.addFilter(_OneLine())


async def open_context(cfg: Config) -> Context:
    pool = await db.create_pool(cfg.database)
    return Context(
        cfg=cfg,
        pool=pool,
        authenticator=Authenticator(pool, cfg.auth, internal_key=cfg.internal.api_key),
        feed=ChangeFeed(cfg.database),
        metrics=_metrics_server(),
    )


Starter = Callable[[Context, dict[str, list[socket.socket]] | None], Awaitable[Service]]


async def _watchdog(notifier: SystemdNotifier, interval: float) -> None:
    """WATCHDOG=1 every ``interval`` seconds, from the event loop itself: a stuck loop stops it."""
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)


def start_watchdog(cfg: Config) -> LoopWatchdog | None:
    """The loop-lag watchdog on the running loop (``logging.slow_callback_ms``; 0: none)."""
    if cfg.logging.slow_callback_ms <= 0:
        return None
    watchdog = LoopWatchdog(cfg.logging.slow_callback_ms / 1000)
    watchdog.start()
    return watchdog


def _metrics_server() -> MetricsServer:
    from relate.runtime.metrics import MetricsServer

    return MetricsServer()


async def start_metrics(
    ctx: Context, services: Mapping[str, Starter], sockets: dict[str, list[socket.socket]] | None
) -> None:
    """The process's /metrics: on the ``metrics`` socket handed over, else ``metrics.<service>`` of each."""
    from relate.runtime.metrics import DAEMON_INFO, pool_usage

    assert ctx.metrics is not None
    for name in services:
        DAEMON_INFO.labels(name, __version__).set(1)
    pool = ctx.pool

    async def read_pool() -> None:
        pool_usage(pool)

    ctx.metrics.before_scrape(read_pool, every=0)
    inherited = sockets.get("metrics") if sockets is not None else None
    if not ctx.cfg.metrics.enabled:
        for sock in inherited or []:
            sock.close()
        return
    await ctx.metrics.start([a for name in services for a in ctx.cfg.metrics.listen(name)], inherited)


def open_connections(service: Service) -> int | None:
    return service.open_connections() if isinstance(service, Counted) else None


def problem_of(service: Service) -> str | None:
    return service.problem() if isinstance(service, Degradable) else None


async def serve(cfg: Config, services: Mapping[str, Starter], notifier: SystemdNotifier) -> None:
    """Run ``services`` (name -> starter) in this process until SIGTERM or SIGINT."""
    label = "relate-" + "+".join(services)
    sockets = inherited_sockets()
    watchdog: LoopWatchdog | None = None
    ctx = await open_context(cfg)  # the pool, and the schema checked: READY=1 must come after both
    assert ctx.feed is not None
    # Listeners (systemd's sockets, or bound here) queue connections until the change feed, the heartbeat and
    # the watchdog run and READY=1 is sent: no client is served by a half-started daemon, and a unit is
    # "active" by the time anyone is greeted.
    ctx.hold_listeners = True
    started: dict[str, Service] = {}
    beats: list[Heartbeat] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for name, start in services.items():
            started[name] = await start(ctx, sockets)
        if ctx.feed.wanted:
            await ctx.feed.start()
        await start_metrics(ctx, services, sockets)
        for name, service in started.items():
            beat = Heartbeat(
                ctx.pool,
                name,
                cfg.internal.heartbeat_seconds,
                lambda service=service: open_connections(service),  # type: ignore[misc]
                notifier,
                problem=lambda service=service: problem_of(service),  # type: ignore[misc]
            )
            await beat.start()
            beats.append(beat)
        loop = asyncio.get_running_loop()
        if notifier.watchdog_seconds is not None:
            tasks.append(loop.create_task(_watchdog(notifier, notifier.watchdog_seconds)))
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def reload() -> None:
            # One handler for every service of the process: a second add_signal_handler would replace the first.
            log.info("reloading TLS certificates")
            for service in started.values():
                service.reload_tls()
            notifier.status(f"{label} running, certificates reloaded")

        loop.add_signal_handler(signal.SIGHUP, reload)
        # Watched from here on: start-up (imports, certificates, CA bundles) runs on the loop once, before
        # anyone is served.
        watchdog = start_watchdog(cfg)
        notifier.ready(f"{label} running")
        for service in started.values():
            if isinstance(service, Held):
                await service.start_serving()
        log.info("ready service=%s pid=%d version=%s", ",".join(services), os.getpid(), __version__)
        await stop.wait()
        log.info("stopping")
        notifier.stopping(f"{label} stopping")
    finally:
        for service in reversed(started.values()):
            await service.stop()
        for beat in beats:
            await beat.stop()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await ctx.feed.stop()
        if ctx.metrics is not None:
            await ctx.metrics.stop()
        await ctx.pool.close()
        if watchdog is not None:
            watchdog.stop()
    log.info("stopped")


def exit_disabled(cfg: Config, name: str, reason: str, notifier: SystemdNotifier) -> NoReturn:
    """Exit 0 at once, saying why in one line, for a daemon its config switches off.

    Under systemd the unit is ``Type=notify``: a process that exits before ``READY=1`` fails the start with
    result ``protocol``, which ``Restart=on-failure`` restarts. So it says READY, then STOPPING, and waits
    for the manager to have read both (``BARRIER=1``) before it exits: the unit ends inactive, not failed,
    and is not restarted. Its .socket units still listen and would start it again at the next connection,
    until `relatectl setup` (as root) masks them with the service.
    """
    sockets = ""
    if os.environ.get("LISTEN_FDS"):
        units = " ".join(socket_unit(role) for role in cfg.protocol_listeners().get(name, {}))
        sockets = f"; systemd still listens for it on {units}: run `relatectl setup` as root to mask them"
    log.warning("disabled service=%s: %s, exiting%s", name, reason, sockets)
    status = f"relate-{name} disabled in config ({reason})"
    notifier.ready(status)
    notifier.stopping(status)
    notifier.barrier()
    notifier.close()
    sys.exit(0)


def run(name: str, start: Starter) -> None:
    """The body of a daemon's console script: :func:`serve` for its one service."""
    parser = argparse.ArgumentParser(prog=f"relate-{name}", description=f"Relate Mail {name} daemon.")
    parser.add_argument("--config", "-c", help="config file (default: $RELATE_CONFIG or /etc/relate/relate.yaml)")
    parser.add_argument("--version", action="version", version=f"relate-{name} {__version__}")
    args = parser.parse_args()
    notifier = SystemdNotifier()

    def fail(text: str) -> NoReturn:
        sys.stderr.write(f"relate-{name}: {text}\n")
        notifier.status(f"relate-{name} failed: {text}")
        sys.exit(1)

    try:
        cfg = config_mod.load(args.config)
    except ConfigError as exc:
        fail(str(exc))
    setup_logging(cfg.logging.level, f"relate-{name}")
    off = cfg.disabled_services().get(name)
    if off is not None:
        exit_disabled(cfg, name, off, notifier)
    try:
        asyncio.run(serve(cfg, {name: start}, notifier))
    except (RelateError, ConfigError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(exc.strerror or str(exc))
    finally:
        notifier.close()
