"""Starting the real daemons as processes, the way systemd does, for the systemd and status tests.

``systemd-socket-activate`` (Debian's systemd package) binds the listening
sockets, waits for the first connection, then execs the daemon with
``LISTEN_FDS``/``LISTEN_FDNAMES``, exactly what a ``.socket`` unit does. The
sd_notify messages a daemon sends are caught on a datagram socket of the
test's own (:class:`NotifyListener`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from relate.config import DatabaseConfig
from relate.runtime.tls import make_self_signed
from relate.services import accounts
from relate.store import db
from relate.testing.dns import ThreadedDnsServer

USER = "alice@example.com"
ON_CI = bool(os.environ.get("CI"))


def need(command: str) -> str:
    """The path of a Debian tool the test drives; skip (fail under CI) when it is missing."""
    path = shutil.which(command)
    if path is None:
        message = f"{command} is not installed (scripts/test-deps installs it)"
        if ON_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    """A loopback port the kernel just handed out for port 0 (for tools that cannot bind port 0 themselves)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


_EMPTY_DNS: ThreadedDnsServer | None = None


def empty_dns() -> str:
    """``host:port`` of a loopback DNS server with an empty zone, started once per test process."""
    global _EMPTY_DNS
    if _EMPTY_DNS is None:
        _EMPTY_DNS = ThreadedDnsServer()
        _EMPTY_DNS.start()
    return _EMPTY_DNS.address


def write_config(path: Path, dsn: str, **sections: Any) -> Path:
    """A config file for the test's database, with every listener off unless ``sections`` turns it on."""
    off = {"listen": []}
    data: dict[str, Any] = {
        "hostname": "mail.example.com",
        "database": {"dsn": dsn, "pool_min": 1, "pool_max": 4},
        "logging": {"level": "INFO"},
        "internal": {"heartbeat_seconds": 1},
        "smtp": {"mx": off, "submission": off, "submissions": off},
        "imap": {"imap": off, "imaps": off},
        "pop3": {"pop3": off, "pop3s": off},
        # A loopback DNS server that knows no name: never the real resolver, and a quick NXDOMAIN for the
        # SMTP daemon's SPF, DKIM and DMARC lookups (an unreachable server would cost dns_timeout each).
        "delivery": {"dns_servers": [empty_dns()]},
        # Each daemon's metrics endpoint on a port of its own (its log's metrics-listening line names it).
        "metrics": {service: ["127.0.0.1:0"] for service in ("smtp", "imap", "pop3", "api", "delivery")},
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(name), dict):
            data[name] = {**data[name], **value}
        else:
            data[name] = value
    path.write_text(yaml.safe_dump(data))
    return path


def make_cert(directory: Path, hostname: str = "mail.example.com", days: int = 30) -> tuple[Path, Path]:
    cert, key = directory / f"{hostname}-{days}.crt", directory / f"{hostname}-{days}.key"
    make_self_signed(cert, key, hostname, days=days)
    return cert, key


async def _add_user(dsn: str) -> str:
    pool = await db.create_pool(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=2))
    try:
        await accounts.add_domain(pool, "example.com")
        await accounts.add_user(pool, USER)
        key, _ = await accounts.create_key(pool, USER, "tests", "imap,pop3,smtp", rounds=4)
        return key
    finally:
        await pool.close()


def add_user(dsn: str) -> str:
    """The test user, with a key for IMAP, POP3 and SMTP; returns the key."""
    return asyncio.run(_add_user(dsn))


async def _fetch(dsn: str, query: str, *args: Any) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [dict(r) for r in await conn.fetch(query, *args)]
    finally:
        await conn.close()


def fetch(dsn: str, query: str, *args: Any) -> list[dict[str, Any]]:
    return asyncio.run(_fetch(dsn, query, *args))


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELATE_", "LISTEN_", "NOTIFY_", "WATCHDOG_"))}
    env.pop("JOURNAL_STREAM", None)
    env.update(extra)
    return env


class NotifyListener:
    """A NOTIFY_SOCKET of the test's own: every datagram a daemon sends, as dicts of KEY -> value."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.messages: list[dict[str, str]] = []

    def _drain(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        self.messages.append(fields)

    def wait_for(self, key: str, value: str | None = None, timeout: float = 60.0, *, after: int = 0) -> dict[str, str]:
        """The first message from number ``after`` on (received or arriving within ``timeout``) setting ``key``."""
        deadline = time.monotonic() + timeout
        seen = after
        while True:
            for msg in self.messages[seen:]:
                if key in msg and (value is None or msg[key] == value):
                    return msg
            seen = len(self.messages)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key}={value or '*'} within {timeout}s; got {self.messages}")
            self._drain(min(left, 0.5))

    def received(self) -> list[dict[str, str]]:
        """Every message so far, with those queued on the socket now (without waiting for more)."""
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(65536)
                self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line))
        except BlockingIOError:
            return list(self.messages)

    def close(self) -> None:
        self.sock.close()


class Daemon:
    """A daemon process whose stderr (its log) is collected in a file the test can read."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 60.0, *, count: int = 1) -> str:
        """The log once ``needle`` occurs in it ``count`` times."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if text.count(needle) >= count:
                return text
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} not in the daemon's log (exit {self.proc.poll()}):\n{self.log()}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then the exit code; fails the test if the daemon's loop-lag watchdog ever fired."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        blocked = [line for line in self.log().splitlines() if "loop-blocked" in line]
        assert not blocked, "the daemon blocked its event loop:\n" + "\n".join(blocked)
        return code


def daemon_argv(module: str, config: Path) -> list[str]:
    return [sys.executable, "-m", module, "--config", str(config)]


def socket_activated(
    module: str, config: Path, roles: list[str], log_path: Path, *, notify: Path | None = None, **env: str
) -> tuple[Daemon, dict[str, int]]:
    """``module`` started by systemd-socket-activate on one fresh loopback port per role; (daemon, role -> port).

    The daemon itself starts at the first connection to any of the ports.
    """
    tool = need("systemd-socket-activate")
    ports = {role: free_port() for role in roles}
    argv = [tool]
    for role in roles:
        argv += ["-l", f"127.0.0.1:{ports[role]}"]
    argv.append("--fdname=" + ":".join(roles))
    extra = {"NOTIFY_SOCKET": str(notify)} if notify is not None else {}
    extra.update(env)
    # PYTHONPATH too, where set (a checkout run without installing it): the daemon must run this code.
    for name in [*extra, "PATH", "HOME", *(["PYTHONPATH"] if "PYTHONPATH" in os.environ else [])]:
        argv += ["-E", name]
    argv += daemon_argv(module, config)
    daemon = Daemon(argv, clean_env(**extra), log_path)
    for role in roles:
        daemon.wait_log(f"127.0.0.1:{ports[role]} as", timeout=15)
    return daemon, ports


@contextmanager
def running(*daemons: Daemon) -> Iterator[None]:
    try:
        yield
    finally:
        for d in daemons:
            d.stop()


def retry(fn: Callable[[], Any], timeout: float = 60.0) -> Any:
    """``fn()`` once it stops raising OSError (a daemon still starting), within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
