"""The delivery daemon as a real process (``python -m relate.queue``): kill -9 mid-backlog, and memory over big mail.

The receiving side is an aiosmtpd server in a thread of the test process
(:class:`SlowSink`), reached as the smarthost, so no DNS is involved. It
answers each message after ``delay`` seconds and records the Message-Id of
every message it acknowledged with 250.
"""

from __future__ import annotations

import asyncio
import collections
import email
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from relate.config import DatabaseConfig
from relate.services import accounts
from relate.store import db
from tests.daemons import Daemon, clean_env, daemon_argv, fetch, write_config

from .helpers import ALICE, queue_mail


class SlowSink:
    """An SMTP server on 127.0.0.1 in its own thread, taking ``delay`` seconds per message."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.accepted: list[str] = []  # Message-Ids acknowledged with 250, in order
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(self.delay)
        message_id = email.message_from_bytes(bytes(envelope.content or b"")).get("Message-Id", "")  # type: ignore[arg-type]
        with self._lock:
            self.accepted.append(message_id)
        return "250 2.0.0 Ok"

    def start(self) -> int:
        self._thread.start()

        async def serve() -> int:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(lambda: SMTP(self, hostname="sink.test", loop=loop), "127.0.0.1", 0)
            port: int = self._server.sockets[0].getsockname()[1]
            return port

        return asyncio.run_coroutine_threadsafe(serve(), self._loop).result(10)

    def count(self) -> int:
        with self._lock:
            return len(self.accepted)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def sink_factory():  # type: ignore[no-untyped-def]
    """Start SlowSinks for the test; all are stopped after it."""
    sinks: list[SlowSink] = []

    def make(delay: float) -> tuple[SlowSink, int]:
        sink = SlowSink(delay)
        sinks.append(sink)
        return sink, sink.start()

    yield make
    for sink in sinks:
        sink.stop()


async def _queue(dsn: str, recipients: list[str], **compose: Any) -> list[str]:
    """Alice at example.com queues one message to each of ``recipients``; their Message-Ids."""
    pool = await db.create_pool(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=2))
    try:
        if await pool.fetchval("SELECT count(*) FROM users") == 0:
            await accounts.add_domain(pool, "example.com")
            await accounts.add_user(pool, ALICE, "Alice")
        ids = [await queue_mail(pool, [rcpt], **compose) for rcpt in recipients]
        rows = await pool.fetch("SELECT message_id FROM outbound_emails WHERE id = ANY($1::bigint[])", ids)
        return [r["message_id"] for r in rows]
    finally:
        await pool.close()


def queue(dsn: str, recipients: list[str], **compose: Any) -> list[str]:
    return asyncio.run(_queue(dsn, recipients, **compose))


def wait_until(predicate, limit: float, what: str) -> float:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` every 20 ms until it holds; the seconds it took."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < limit, f"timed out after {limit}s waiting for {what}"
        time.sleep(0.02)
    return time.monotonic() - start


def delivery_config(path: Path, dsn: str, port: int, **delivery: Any) -> Path:
    settings: dict[str, Any] = {
        "smarthost": {"host": "127.0.0.1", "port": port, "tls": "none"},
        "connect_timeout": 5,
        "command_timeout": 10,
    }
    settings.update(delivery)
    return write_config(path, dsn, delivery=settings)


def all_sent(dsn: str) -> bool:
    rows = fetch(dsn, "SELECT count(*) FILTER (WHERE status <> 'sent') AS left FROM outbound_recipients")
    return bool(rows[0]["left"] == 0)


def test_kill_9_mid_backlog_repeats_at_most_the_messages_in_flight(dsn: str, tmp_path: Path, sink_factory: Any) -> None:
    """kill -9 mid-backlog: every message arrives, duplicates <= max_connections, the rest within lease + 6 s."""
    sink, port = sink_factory(0.1)
    max_connections, lease = 4, 3.0
    config = delivery_config(tmp_path / "relate.yaml", dsn, port, max_connections=max_connections, lease_seconds=lease)
    # Four recipient domains: four connections to the smarthost at once.
    expected = queue(dsn, [f"user{i}@d{i % 4}.test" for i in range(60)])
    first = Daemon(daemon_argv("relate.queue", config), clean_env(), tmp_path / "first.log")
    try:
        wait_until(lambda: sink.count() >= 20, 30, "20 messages at the sink")
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
    finally:
        first.stop()
    at_kill = sink.count()
    assert at_kill < 60, "the backlog was gone before the kill"

    restarted = time.monotonic()
    second = Daemon(daemon_argv("relate.queue", config), clean_env(), tmp_path / "second.log")
    try:
        took = wait_until(
            lambda: set(expected) <= set(sink.accepted) and all_sent(dsn), lease + 6, "the rest of the backlog"
        )
    finally:
        second.stop()
    seen = collections.Counter(sink.accepted)
    duplicates = sum(n - 1 for n in seen.values())
    assert set(seen) == set(expected)
    assert duplicates <= max_connections, (duplicates, at_kill)
    assert took <= time.monotonic() - restarted


def _vm(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` memory figure (``VmRSS``, ``VmHWM``) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def test_memory_stays_bounded_over_a_batch_of_large_messages(dsn: str, tmp_path: Path, sink_factory: Any) -> None:
    """24 queued messages of 2 MiB in one batch: the daemon's peak RSS grows by less than 24 MiB while it sends them."""
    sink, port = sink_factory(0.0)
    config = delivery_config(tmp_path / "relate.yaml", dsn, port, max_connections=2)
    queue(dsn, ["warmup@d0.test"])
    daemon = Daemon(daemon_argv("relate.queue", config), clean_env(), tmp_path / "daemon.log")
    try:
        wait_until(lambda: sink.count() == 1 and all_sent(dsn), 30, "the warm-up message")
        time.sleep(0.5)  # let the first pass and the background turn settle
        Path(f"/proc/{daemon.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)
        baseline = _vm(daemon.pid, "VmRSS")
        line = "x" * 76 + "\r\n"
        body = line * (2 * 1024 * 1024 // len(line))
        queue(dsn, [f"user{i}@d{i % 2}.test" for i in range(24)], body=body)
        wait_until(lambda: sink.count() == 25 and all_sent(dsn), 60, "24 large messages")
        growth = _vm(daemon.pid, "VmHWM") - baseline
    finally:
        daemon.stop()
    assert growth < 24 * 1024 * 1024, f"peak RSS grew by {growth / 2**20:.1f} MiB"
