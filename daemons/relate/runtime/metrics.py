"""Every daemon's Prometheus metrics, and the tiny HTTP endpoint that serves them.

Policy:

- One definition of each metric, here; the code that counts calls the
  helpers below. Names carry the ``relate_`` prefix and their unit
  (``_seconds``, ``_total`` for counters). Labels take a bounded set of
  values written in the code (protocol, listener role, command verb, reply
  class, reason): never a user, an address, a host or a message id, so the
  number of series stays fixed however much mail flows.
- Counting costs one ``inc()`` on a child looked up once (a dict hit):
  under a microsecond per command or reply, which bench/smtp_ingest.py
  cannot tell apart from noise.
- Values that live elsewhere (the pool's connections, the outbound queue in
  PostgreSQL) are read when Prometheus scrapes, by the hooks a service adds
  with :meth:`MetricsServer.before_scrape`; a hook's database query is
  bounded by a timeout and its answer reused for ``SCRAPE_CACHE_SECONDS``,
  so a scrape storm costs the database one query per few seconds.
- Each daemon process serves ``GET /metrics`` on its own loopback address
  (``metrics.<daemon>`` in the config; socket activation's ``metrics``
  socket when the dev run binds it), from its own event loop: the request is
  read with a size and time limit and answered with the text exposition
  format, which is rendered in a thread (1-3 ms of CPU for a daemon's few
  hundred series; the loop serves clients meanwhile). A port that cannot be bound is one warning line; mail goes on.
  The response carries ``X-Relate-Pid``, so ``relatectl status`` can tell
  which process answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from relate.config import parse_listen

log = logging.getLogger("relate.runtime")

# No <counter>_created series: a third of every scrape that nothing here reads (the process start time says it).
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated in prometheus_client

SCRAPE_CACHE_SECONDS = 5.0
SCRAPE_TIMEOUT = 5.0  # a hook that takes longer leaves its metrics as they were
_MAX_REQUEST = 8192  # bytes of request line and headers
_READ_TIMEOUT = 5.0

# -- connections, commands, replies (relate/runtime/streams.py and each protocol's session) ---------------

CONNECTIONS_OPEN = Gauge("relate_connections_open", "Connections being served now.", ["protocol", "listener"])
CONNECTIONS = Counter("relate_connections_total", "Connections accepted and served.", ["protocol", "listener"])
CONNECTIONS_REFUSED = Counter(
    "relate_connections_refused_total",
    "Connections answered with a refusal and closed (too-many-connections, shutting-down).",
    ["protocol", "reason"],
)
COMMANDS = Counter(
    "relate_commands_total", "Commands received, by verb (invalid: a line that is no command).", ["protocol", "command"]
)
REPLIES = Counter(
    "relate_replies_total",
    "Final replies sent: SMTP by code class (2xx..5xx), IMAP tagged OK/NO/BAD, POP3 +OK/-ERR.",
    ["protocol", "status"],
)

# -- relate-smtp ---------------------------------------------------------------------------------------

SMTP_ACCEPTED = Counter(
    "relate_smtp_messages_accepted_total", "Messages answered 250 at the end of DATA (committed).", ["listener"]
)
SMTP_REFUSED = Counter(
    "relate_smtp_messages_refused_total", "Messages refused at the end of DATA, by reason.", ["listener", "reason"]
)
SMTP_RCPT_REFUSED = Counter(
    "relate_smtp_recipients_refused_total", "RCPT commands refused, by reason.", ["listener", "reason"]
)

# -- relate-delivery -----------------------------------------------------------------------------------

QUEUE_MESSAGES = Gauge(
    "relate_queue_messages",
    "Outbound messages with recipients in each state (pending, sending, deferred, held), read from PostgreSQL.",
    ["state"],
)
QUEUE_RECIPIENTS = Gauge("relate_queue_recipients", "Outbound recipients in each state.", ["state"])
QUEUE_OLDEST = Gauge(
    "relate_queue_oldest_age_seconds", "Age of the oldest queued message with recipients in each state.", ["state"]
)
DELIVERY_ATTEMPTS = Counter(
    "relate_delivery_attempts_total", "Delivery attempts per recipient, by result (sent, deferred, failed).", ["result"]
)
DELIVERY_EXPIRED = Counter(
    "relate_delivery_expired_total", "Recipients given up after delivery.max_age without a last attempt."
)
QUEUE_STATES = ("pending", "sending", "deferred", "held")

# -- change feed, authentication, event loop, database pool -----------------------------------------------

NOTIFICATION_LAG = Histogram(
    "relate_notification_lag_seconds",
    "From the statement that stored a message to this process hearing of it on the change feed.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
AUTH_FAILURES = Counter("relate_auth_failures_total", "Failed logins, by protocol and reason.", ["protocol", "reason"])
AUTH_LOCKOUTS = Counter("relate_auth_lockouts_total", "Lockouts started (a login or an address).", ["protocol"])
LOOP_LAG = Histogram(
    "relate_event_loop_lag_seconds",
    "How late the loop-lag probe's ticks run (every 20 ms): time the event loop was held by other work.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
LOOP_STALLS = Counter(
    "relate_event_loop_stalls_total",
    "Stalls past logging.slow_callback_ms: blocked (our code held the loop) or starved (no CPU).",
    ["kind"],
)
POOL_CONNECTIONS = Gauge(
    "relate_db_pool_connections", "The process's PostgreSQL pool: connections open and in use.", ["state"]
)
POOL_MAX = Gauge("relate_db_pool_max_connections", "The pool's limit (database.pool_max).")
DAEMON_INFO = Gauge("relate_daemon_info", "1 for each service this process runs.", ["service", "version"])

_children: dict[tuple[Any, ...], Any] = {}


def child(metric: Counter | Gauge, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once: the hot paths call this per command."""
    key = (metric, *labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


# The per-command and per-reply children by protocol, then verb or status: two dict hits, no tuple.
_commands: dict[str, dict[str, Any]] = {}
_replies: dict[str, dict[str, Any]] = {}


def _counted(table: dict[str, dict[str, Any]], metric: Counter, protocol: str, value: str) -> None:
    by_value = table.get(protocol)
    if by_value is None:
        by_value = table[protocol] = {}
    found = by_value.get(value)
    if found is None:
        found = by_value[value] = metric.labels(protocol, value)
    found.inc()


def command(protocol: str, verb: str) -> None:
    _counted(_commands, COMMANDS, protocol, verb)


def reply(protocol: str, status: str) -> None:
    _counted(_replies, REPLIES, protocol, status)


_SMTP_CLASSES = ("1xx", "1xx", "2xx", "3xx", "4xx", "5xx")


def smtp_reply(code: int) -> None:
    """One SMTP reply, counted by its class."""
    reply("smtp", _SMTP_CLASSES[min(max(code // 100, 1), 5)])


def auth_failure(protocol: str, reason: str) -> None:
    # "missing-scope:imap" names a scope; the reason is the part before it (a fixed set of words).
    child(AUTH_FAILURES, protocol, reason.partition(":")[0]).inc()


def loop_lag(seconds: float) -> None:
    LOOP_LAG.observe(max(seconds, 0.0))


def stalled(kind: str) -> None:
    child(LOOP_STALLS, kind).inc()


def pool_usage(pool: Any) -> None:
    """The pool's size now (an asyncpg.Pool: get_size, get_idle_size, get_max_size)."""
    size = pool.get_size()
    child(POOL_CONNECTIONS, "open").set(size)
    child(POOL_CONNECTIONS, "in_use").set(size - pool.get_idle_size())
    POOL_MAX.set(pool.get_max_size())


Hook = Callable[[], Awaitable[None]]


class MetricsServer:
    """``GET /metrics`` for this process, on sockets handed over or addresses bound here."""

    def __init__(self) -> None:
        self._hooks: list[tuple[Hook, float]] = []
        self._last: dict[int, float] = {}
        self._servers: list[asyncio.Server] = []
        self._handlers: set[asyncio.Task[None]] = set()

    def before_scrape(self, hook: Hook, every: float = SCRAPE_CACHE_SECONDS) -> None:
        """Run ``hook`` before answering a scrape, at most once per ``every`` seconds."""
        self._hooks.append((hook, every))

    async def refresh(self) -> None:
        now = time.monotonic()
        for i, (hook, every) in enumerate(self._hooks):
            if now - self._last.get(i, -every) < every:
                continue
            self._last[i] = now
            try:
                await asyncio.wait_for(hook(), SCRAPE_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - a failed hook leaves old values; the scrape goes on
                log.info("metrics-hook-failed error=%s", type(exc).__name__)

    async def exposition(self) -> bytes:
        await self.refresh()
        # In a thread: a few ms of CPU for a daemon with many series, which the event loop need not wait for.
        return await asyncio.to_thread(generate_latest, REGISTRY)

    async def start(self, addresses: Iterable[str], inherited: list[socket.socket] | None) -> None:
        """Serve on ``inherited`` sockets if any, else on ``addresses``; one that cannot be bound is logged."""
        if inherited:
            for sock in inherited:
                self._servers.append(await asyncio.start_server(self._handle, sock=sock, limit=_MAX_REQUEST))
        else:
            for item in addresses:
                host, port = parse_listen(item)
                try:
                    self._servers.append(
                        await asyncio.start_server(self._handle, host, port, reuse_address=True, limit=_MAX_REQUEST)
                    )
                except OSError as exc:
                    log.warning("metrics-unavailable address=%s error=%s", item, exc.strerror or exc)
        for host, port in self.addresses():
            log.info("metrics-listening address=%s:%d", host, port)

    def addresses(self) -> list[tuple[str, int]]:
        return [sock.getsockname()[:2] for server in self._servers for sock in server.sockets]

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._handlers):
            task.cancel()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            status, body, ctype = await self._answer(reader)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                f"X-Relate-Pid: {os.getpid()}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("ascii") + body)
            await asyncio.wait_for(writer.drain(), _READ_TIMEOUT)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the scraper went away or never finished its request
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), _READ_TIMEOUT)
            if task is not None:
                self._handlers.discard(task)

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[str, bytes, str]:
        text = "text/plain; charset=utf-8"
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT)
        except asyncio.LimitOverrunError:
            return "431 Request Header Fields Too Large", b"request too large\n", text
        if len(head) > _MAX_REQUEST:
            return "431 Request Header Fields Too Large", b"request too large\n", text
        method, _, rest = head.split(b"\r\n", 1)[0].partition(b" ")
        path = rest.partition(b" ")[0].partition(b"?")[0]
        if method != b"GET":
            return "405 Method Not Allowed", b"GET only\n", text
        if path not in (b"/metrics", b"/"):
            return "404 Not Found", b"see /metrics\n", text
        return "200 OK", await self.exposition(), CONTENT_TYPE_LATEST


# -- reading an endpoint (relatectl status, the tests) ---------------------------------------------------

_MAX_RESPONSE = 16 * 1024 * 1024


@dataclass(frozen=True)
class Scrape:
    """What one endpoint answered: the process that answered, and every sample by name."""

    pid: int | None
    samples: dict[str, list[tuple[dict[str, str], float]]]

    def total(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels``."""
        return sum(
            value
            for have, value in self.samples.get(name, [])
            if all(have.get(key) == want for key, want in labels.items())
        )


async def scrape(address: str, seconds: float = 2.0) -> Scrape:
    """GET /metrics from ``address`` ("host:port"; a wildcard host is asked on loopback); raises OSError or
    TimeoutError when it does not answer, ValueError when the answer is not an exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    host, port = parse_listen(address)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 - mapped to loopback here
    async with asyncio.timeout(seconds):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n".encode("ascii", "replace"))
            data = b""
            while len(data) < _MAX_RESPONSE:
                more = await reader.read(_MAX_RESPONSE - len(data))
                if not more:
                    break
                data += more
        finally:
            writer.close()
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not sep or not lines[0].startswith("HTTP/") or lines[0].split(" ")[1:2] != ["200"]:
        raise ValueError(f"not a metrics answer: {lines[0][:80]!r}")
    pid = None
    for line in lines[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == "x-relate-pid" and value.strip().isdigit():
            pid = int(value.strip())
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body.decode("utf-8", "replace")):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return Scrape(pid, samples)
