"""Nothing acknowledged is lost: the SMTP daemon killed with SIGKILL while twenty clients send."""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import asyncpg
import pytest

from relate.config import DatabaseConfig
from relate.services import accounts
from relate.store import db

CLIENTS = 20


def start_daemon(config: Path, listener: socket.socket) -> subprocess.Popen[bytes]:
    """relate-smtp as systemd would start it: the MX socket passed as fd 3 (LISTEN_FDS)."""
    fd = listener.fileno()
    script = f'LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=mx exec "$0" -m relate.smtp --config "$1" 3<&{fd}'
    return subprocess.Popen(
        ["/bin/bash", "-c", script, sys.executable, str(config)],
        pass_fds=(fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def prepare(dsn: str) -> None:
    pool = await db.create_pool(DatabaseConfig(dsn=dsn))
    try:
        await accounts.add_domain(pool, "example.com")
        await accounts.add_user(pool, "bob@example.com")
    finally:
        await pool.close()


async def stored_tokens(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r["subject"] for r in await conn.fetch("SELECT subject FROM messages")]
    finally:
        await conn.close()


def wait_for_banner(port: int, daemon: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and daemon.poll() is None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=5) as probe:
                probe.noop()
                return
        except (OSError, smtplib.SMTPException):
            time.sleep(0.1)
    daemon.kill()
    _, err = daemon.communicate()
    pytest.fail(f"relate-smtp did not come up: {err.decode(errors='replace')}")


@pytest.mark.slow
def test_sigkill_loses_no_acknowledged_message(dsn: str, tmp_path: Path) -> None:
    """Every message that got 250 before a SIGKILL is in the database exactly once."""
    asyncio.run(prepare(dsn))
    config = tmp_path / "relate.yaml"
    config.write_text(
        f"hostname: mx.example.com\ndatabase:\n  dsn: '{dsn}'\nlogging:\n  level: WARNING\n"
        "smtp:\n  mx: {listen: []}\n  submission: {listen: []}\n  submissions: {listen: []}\n"
    )
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    daemon = start_daemon(config, listener)
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        i = 0
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as conn:
                while not stop.is_set():
                    token = f"c{n}-m{i}"
                    body = f"Subject: {token}\r\n\r\n{'x' * 2000}\r\n".encode()
                    conn.sendmail("sender@elsewhere.example", ["bob@example.com"], body)
                    with lock:
                        acknowledged.append(token)
                    i += 1
        except (OSError, smtplib.SMTPException):
            pass  # the daemon was killed under us

    try:
        wait_for_banner(port, daemon)
        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=15)
    finally:
        stop.set()
        if daemon.poll() is None:
            daemon.kill()
        daemon.communicate()
        listener.close()
    assert daemon.returncode == -signal.SIGKILL
    assert len(acknowledged) >= CLIENTS, "the load did not get going before the kill"
    stored = asyncio.run(stored_tokens(dsn))
    missing = [t for t in acknowledged if stored.count(t) != 1]
    assert missing == [], f"acknowledged but not stored exactly once: {missing[:10]}"
