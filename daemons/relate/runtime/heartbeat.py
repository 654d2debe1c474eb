"""A daemon's pulse: its heartbeat row in the database and its STATUS= line for systemd.

Every ``internal.heartbeat_seconds`` the running process refreshes its
``daemon_heartbeats`` row with its open connection count and what it reports
as degraded (its ``problem``, if any), and sends the same to the service
manager as ``STATUS=``. A problem that starts or ends is logged once. A database that cannot be
reached is logged once per outage and retried at the next beat: losing the
heartbeat must never stop mail. A row deleted from under a live process is
written again at the next beat. On a clean stop the row is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable

import asyncpg

from relate import __version__
from relate.runtime.sdnotify import SystemdNotifier
from relate.store import heartbeats

log = logging.getLogger("relate.runtime")


def status_line(service: str, connections: int | None, problem: str | None = None) -> str:
    text = f"relate-{service} {'DEGRADED' if problem else 'running'}"
    if connections is not None:
        text += f", {connections} open connection{'' if connections == 1 else 's'}"
    return f"{text}: {problem}" if problem else text


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class Heartbeat:
    def __init__(
        self,
        pool: asyncpg.Pool,
        service: str,
        interval: float,
        connections: Callable[[], int | None],
        notifier: SystemdNotifier,
        problem: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.pool = pool
        self.problem = problem
        self._last_problem: str | None = None
        self.service = service
        self.interval = interval
        self.connections = connections
        self.notifier = notifier
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.row_id: int | None = None
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> None:
        """Write the row (registering it first if needed) and refresh STATUS=; never raises for the database."""
        count = self.connections()
        problem = self.problem()
        if (problem is None) != (self._last_problem is None):
            if problem is not None:
                log.warning("degraded service=%s problem=%s", self.service, problem)
            else:
                log.info("recovered service=%s", self.service)
        self._last_problem = problem
        self.notifier.status(status_line(self.service, count, problem))
        try:
            if self.row_id is None or not await heartbeats.beat(self.pool, self.row_id, count or 0, problem):
                self.row_id = await heartbeats.register(
                    self.pool,
                    host=self.host,
                    service=self.service,
                    pid=self.pid,
                    version=__version__,
                    interval=self.interval,
                    connections=count or 0,
                    problem=problem,
                )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            if not self._failing:
                log.warning("heartbeat-failed service=%s error=%s", self.service, _first_line(exc))
                self._failing = True
            return
        if self._failing:
            log.info("heartbeat-restored service=%s", self.service)
            self._failing = False

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.beat()

    async def start(self) -> None:
        await self.beat()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop beating and remove the row (a clean stop leaves nothing behind)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.row_id is not None:
            try:
                await heartbeats.remove(self.pool, self.row_id)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("heartbeat-remove-failed service=%s error=%s", self.service, _first_line(exc))
