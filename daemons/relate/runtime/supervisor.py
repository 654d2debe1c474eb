"""Running each daemon as a process of its own, the way the systemd units do (used by the dev run).

Policy:

- The supervisor binds every listening socket itself, as systemd's
  ``.socket`` units do, and hands each daemon its own by socket activation
  (``LISTEN_FDS``, ``LISTEN_FDNAMES`` with the role names, ``LISTEN_PID``):
  a daemon serves exactly as it does under systemd, and ports bound to 0 are
  known before any daemon starts.
- Every daemon runs its own console-script code (``python -m relate.smtp``
  and so on, with ``--config``), so it has its own event loop, pool and
  change feed, as installed; the daemons share nothing but the database.
- Start-up waits for each daemon's ``READY=1`` on a notify socket of the
  supervisor's (``NOTIFY_SOCKET``, as for ``Type=notify``); a daemon that
  exits before it is ready fails the start, with its exit code.
- A daemon that exits later is started again after ``RESTART_DELAYS``
  (``Restart=on-failure``), with one log line each time.
- SIGHUP goes to every daemon (certificates); :meth:`Supervisor.stop` sends
  SIGTERM to all (each finishes its own graceful stop) and SIGKILL to any
  still running after the grace period.

The supervisor itself does no mail work and holds no database connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from relate.config import parse_listen

log = logging.getLogger("relate.supervisor")

# Each daemon: its module (run with ``python -m``) and the roles of its listening sockets.
DAEMONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "api": ("relate.api", ("api",)),
    "smtp": ("relate.smtp", ("mx", "submission", "submissions")),
    "imap": ("relate.imap", ("imap", "imaps")),
    "pop3": ("relate.pop3", ("pop3", "pop3s")),
    "delivery": ("relate.queue", ()),
}
RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
SD_LISTEN_FDS_START = 3
# Inherited sockets are first moved this high, so that moving them down to 3, 4, ... never overwrites one.
_FD_PARKING = 100

# Runs in the child before the daemon: puts the sockets at 3, 4, ... and names this process in LISTEN_PID
# (exec keeps the pid), as systemd does between fork and exec.
_TRAMPOLINE = """\
import os, sys
sources = [int(fd) for fd in sys.argv[1].split(",") if fd]
for target, source in enumerate(sources, 3):
    os.dup2(source, target)
for source in sources:
    os.close(source)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])
"""


def bind(address: str) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free one)."""
    host, port = parse_listen(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=1024)
    sock.set_inheritable(False)
    return sock


@dataclass
class Process:
    name: str
    module: str
    sockets: list[tuple[str, socket.socket]]  # (role, listening socket)
    proc: asyncio.subprocess.Process | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    restarts: int = 0


class Supervisor:
    def __init__(
        self,
        config: Path,
        run_dir: Path,
        sockets: Mapping[str, list[socket.socket]],
        *,
        daemons: list[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``sockets``: the listening sockets by role (``metrics-NAME``: daemon NAME's metrics endpoint, handed
        over as its ``metrics`` socket); ``daemons``: which to run (default: all)."""
        self.config = config
        self.run_dir = run_dir
        self.env = dict(os.environ if env is None else env)
        self.processes: dict[str, Process] = {}
        for name in daemons or list(DAEMONS):
            module, roles = DAEMONS[name]
            mine = [(role, sock) for role in roles for sock in sockets.get(role, [])]
            mine += [("metrics", sock) for sock in sockets.get(f"metrics-{name}", [])]
            self.processes[name] = Process(name, module, mine)
        self._notify: socket.socket | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------

    async def start(self, wait: float = 60.0) -> None:
        """Start every daemon and wait until each says READY=1; raises RuntimeError if one cannot start."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / "notify.sock"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(path))
        self._notify.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._notify.setblocking(False)
        self._tasks.append(asyncio.get_running_loop().create_task(self._read_notifications()))
        for process in self.processes.values():
            await self._spawn(process)
        for process in self.processes.values():
            assert process.proc is not None
            waiters = [asyncio.ensure_future(process.ready.wait()), asyncio.ensure_future(process.proc.wait())]
            _, pending = await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            for waiter in pending:
                waiter.cancel()
            if not process.ready.is_set():
                code = process.proc.returncode
                await self.stop(grace=5)
                why = f"exited with code {code}" if code is not None else f"not ready within {wait:g}s"
                raise RuntimeError(f"relate-{process.name} {why}")
        for process in self.processes.values():
            self._tasks.append(asyncio.get_running_loop().create_task(self._watch(process)))

    async def stop(self, grace: float = 30.0) -> None:
        """SIGTERM to every daemon; SIGKILL to those still running after ``grace`` seconds."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        running = [p.proc for p in self.processes.values() if p.proc is not None and p.proc.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if running:
            await asyncio.wait([asyncio.ensure_future(p.wait()) for p in running], timeout=grace)
            for proc in running:
                if proc.returncode is None:
                    log.warning("supervisor-kill pid=%d: still running %gs after SIGTERM", proc.pid, grace)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
        if self._notify is not None:
            self._notify.close()
            self._notify = None

    def reload(self) -> None:
        """SIGHUP to every daemon: each reloads its certificates."""
        for process in self.processes.values():
            if process.proc is not None and process.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.proc.send_signal(signal.SIGHUP)

    def pids(self) -> dict[str, int]:
        return {name: p.proc.pid for name, p in self.processes.items() if p.proc is not None}

    # -- processes -----------------------------------------------------------------

    async def _spawn(self, process: Process) -> None:
        parked = [fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD, _FD_PARKING) for _, sock in process.sockets]
        env = {k: v for k, v in self.env.items() if not k.startswith(("LISTEN_", "NOTIFY_", "WATCHDOG_"))}
        env["NOTIFY_SOCKET"] = str(self.run_dir / "notify.sock")
        if parked:
            env["LISTEN_FDS"] = str(len(parked))
            env["LISTEN_FDNAMES"] = ":".join(role for role, _ in process.sockets)
        argv = [sys.executable, "-c", _TRAMPOLINE, ",".join(map(str, parked))]
        argv += [sys.executable, "-m", process.module, "--config", str(self.config)]
        try:
            process.ready.clear()
            process.proc = await asyncio.create_subprocess_exec(
                *argv, env=env, stdin=asyncio.subprocess.DEVNULL, pass_fds=parked
            )
        finally:
            for fd in parked:
                os.close(fd)
        log.info("supervisor-started daemon=%s pid=%d", process.name, process.proc.pid)

    def stopping(self) -> bool:
        return self._stopping

    async def _watch(self, process: Process) -> None:
        """Start the daemon again whenever it exits (until the supervisor stops)."""
        while True:
            assert process.proc is not None
            code = await process.proc.wait()
            if self.stopping():
                return
            delay = RESTART_DELAYS[min(process.restarts, len(RESTART_DELAYS) - 1)]
            process.restarts += 1
            log.warning(
                "supervisor-restart daemon=%s pid=%d code=%s in=%gs", process.name, process.proc.pid, code, delay
            )
            await asyncio.sleep(delay)
            await self._spawn(process)

    async def _read_notifications(self) -> None:
        """sd_notify datagrams: READY=1 marks its sender ready (by the pid the kernel vouches for)."""
        assert self._notify is not None
        loop = asyncio.get_running_loop()
        size = socket.CMSG_SPACE(3 * 4)
        while True:
            data, ancillary, _, _ = await _recvmsg(loop, self._notify, size)
            pid = _sender_pid(ancillary)
            fields = dict(line.split("=", 1) for line in data.decode(errors="replace").splitlines() if "=" in line)
            if fields.get("READY") != "1":
                continue
            for process in self.processes.values():
                if process.proc is not None and process.proc.pid == pid:
                    process.ready.set()


async def _recvmsg(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, ancillary: int
) -> tuple[bytes, list[tuple[int, int, bytes]], int, object]:
    """``sock.recvmsg`` once a datagram is there (asyncio has no recvmsg)."""
    while True:
        try:
            return sock.recvmsg(4096, ancillary)
        except BlockingIOError:
            readable = asyncio.Event()
            loop.add_reader(sock.fileno(), readable.set)
            try:
                await readable.wait()
            finally:
                loop.remove_reader(sock.fileno())


def _sender_pid(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(data) >= 4:
            return int.from_bytes(data[:4], sys.byteorder)
    return None
