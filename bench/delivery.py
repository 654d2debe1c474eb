"""Outbound delivery benchmark: how fast one relate-delivery daemon empties a queue to remote MXs, and at what cost.

Sets up a throwaway world in a temp dir: an embedded PostgreSQL 18 with fsync
on, the schema, hosted domain ``bench.test`` with the sender, ``--domains``
remote domains ``remote1.test…`` whose MX hosts are fast SMTP sinks on
``127.0.0.11, 127.0.0.12…`` (all on one port, in a separate process that
counts connections and (Message-Id, recipient) deliveries and answers 250),
and a loopback DNS server in the benchmark process that publishes their MX
and A records. It first drives the sinks directly to show their ceiling,
then queues ``--messages`` messages of about ``--size`` bytes with 1 to 3
recipients each straight into the database (``store.outbound.queue_message``,
batched transactions), and only then starts ONE ``python -m relate.queue``.
It times the daemon until every recipient is ``sent`` and prints:

- messages/s and recipients/s delivered (from the first claim to the last
  recipient marked sent), and the same from the daemon's start;
- connections opened per 100 messages and messages per connection (counted
  by the sinks);
- p50/p99 time in queue (``queued_at`` -> ``sent_at``) and delivery delay
  after the first claim;
- CPU seconds per 1,000 messages of the daemon, of PostgreSQL (minus the
  benchmark's own polling backend), of the sinks, and the noise of the rest
  of the machine.

It refuses to report figures unless the sinks received exactly the queued
(message, recipient) pairs, each once, each at the MX of its domain, and the
database holds every recipient as ``sent``. Everything started is stopped
again, also on Ctrl-C or SIGTERM.

Usage: ``.venv/bin/python bench/delivery.py [--messages 5000] [--domains 10]
[--messages-per-connection 100] [--max-connections 20] [--per-domain 4]
[--json-only]``; ``--help`` for the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BenchError,
    Job,
    MachineCpu,
    RawSmtp,
    fs_type,
    log_tail,
    machine_cpu,
    make_message,
    make_workdir,
    migrate_db,
    per_1k,
    percentile,
    require_durable,
    run_benchmark,
    say,
    sched_times,
    spawn_daemon,
    start_postgres,
    start_py_spy,
    stop_daemon,
    stop_py_spy,
    table,
    tree_cpu,
)

LOCAL_DOMAIN = "bench.test"
SENDER = f"sender@{LOCAL_DOMAIN}"
USERS_PER_DOMAIN = 100
FIRST_MX_OCTET = 11  # domain k (1-based) has its MX on 127.0.0.(10 + k)


def remote_domain(k: int) -> str:
    return f"remote{k}.test"


def mx_address(k: int) -> str:
    return f"127.0.0.{FIRST_MX_OCTET - 1 + k}"


# -- the sinks (a separate process: python bench/delivery.py --sink-process ...) -------------------


class SinkState:
    """What the sinks saw since the last reset."""

    def __init__(self, domain_of: dict[str, str]) -> None:
        self.domain_of = domain_of  # local (listening) address -> the domain whose MX it is
        self.reset()

    def reset(self) -> None:
        self.connections: collections.Counter[str] = collections.Counter()
        self.transactions = 0
        self.recipients = 0
        self.bytes = 0
        self.pairs: collections.Counter[tuple[str, str]] = collections.Counter()
        self.misrouted = 0  # RCPT for a domain other than the one this address is the MX of
        self.no_message_id = 0
        self.active = 0
        self.peak_active = 0
        self.active_at: collections.Counter[str] = collections.Counter()
        self.peak_at: collections.Counter[str] = collections.Counter()
        self.first_connection: float | None = None
        self.last_message: float | None = None

    def stats(self) -> dict[str, Any]:
        return {
            "connections": sum(self.connections.values()),
            "connections_by_address": dict(self.connections),
            "transactions": self.transactions,
            "recipients": self.recipients,
            "bytes": self.bytes,
            "distinct_pairs": len(self.pairs),
            "duplicate_pairs": sum(1 for n in self.pairs.values() if n > 1),
            "misrouted": self.misrouted,
            "no_message_id": self.no_message_id,
            "active": self.active,
            "peak_connections": self.peak_active,
            "peak_connections_per_address": max(self.peak_at.values(), default=0),
            "first_connection": self.first_connection,
            "last_message": self.last_message,
        }


_EHLO = (
    b"250-sink.test\r\n250-8BITMIME\r\n250-SIZE 104857600\r\n250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n"
    b"250 SMTPUTF8\r\n"
)
_MAX_LINE = 4096


def _message_id(body: bytes) -> str | None:
    """The Message-Id header of a message (only the header block is looked at)."""
    end = body.find(b"\r\n\r\n")
    head = body if end < 0 else body[: end + 2]
    at = (b"\r\n" + head.lower()).find(b"\r\nmessage-id:")  # at: where the name starts in ``head``
    if at < 0:
        return None
    start = at + len(b"message-id:")
    stop = head.find(b"\r\n", start)
    value = head[start:] if stop < 0 else head[start:stop]
    return value.strip().decode("ascii", "replace") or None


class SinkProtocol(asyncio.Protocol):
    """Just enough of an SMTP server: every command 250, every message counted, nothing stored."""

    def __init__(self, state: SinkState) -> None:
        self.state = state
        self.transport: asyncio.Transport | None = None
        self.local = ""
        self.buf = bytearray()
        self.in_data = False
        self.scan = 0  # where the search for the final dot resumes
        self.mail = False
        self.rcpts: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.local = transport.get_extra_info("sockname")[0]
        s = self.state
        s.connections[self.local] += 1
        s.active += 1
        s.peak_active = max(s.peak_active, s.active)
        s.active_at[self.local] += 1
        s.peak_at[self.local] = max(s.peak_at[self.local], s.active_at[self.local])
        if s.first_connection is None:
            s.first_connection = time.time()
        transport.write(b"220 sink.test ESMTP bench sink\r\n")

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.active -= 1
        self.state.active_at[self.local] -= 1

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while buf and self.transport is not None:
            if self.in_data:
                if self.scan == 0 and buf.startswith(b".\r\n"):
                    body, cut = b"", 3
                else:
                    end = buf.find(b"\r\n.\r\n", self.scan)
                    if end < 0:
                        self.scan = max(0, len(buf) - 4)
                        return
                    body, cut = bytes(buf[: end + 2]), end + 5
                del buf[:cut]
                self.scan = 0
                self.in_data = False
                self._message(body)
                continue
            eol = buf.find(b"\r\n")
            if eol < 0:
                if len(buf) > _MAX_LINE:
                    self.transport.write(b"500 5.5.2 line too long\r\n")
                    self.transport.close()
                    self.transport = None
                return
            line = bytes(buf[:eol])
            del buf[: eol + 2]
            self._command(line)

    def _command(self, line: bytes) -> None:
        assert self.transport is not None
        verb = line[:4].upper()
        if verb == b"MAIL":
            self.mail, self.rcpts = True, []
            self.transport.write(b"250 2.1.0 Ok\r\n")
        elif verb == b"RCPT":
            if not self.mail:
                self.transport.write(b"503 5.5.1 MAIL first\r\n")
                return
            start, stop = line.find(b"<"), line.find(b">")
            self.rcpts.append(line[start + 1 : stop].decode("utf-8", "replace").lower())
            self.transport.write(b"250 2.1.5 Ok\r\n")
        elif verb == b"DATA":
            if not self.rcpts:
                self.transport.write(b"503 5.5.1 RCPT first\r\n")
                return
            self.in_data = True
            self.transport.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
        elif verb == b"EHLO":
            self.transport.write(_EHLO)
        elif verb in (b"HELO", b"NOOP"):
            self.transport.write(b"250 2.0.0 Ok\r\n")
        elif verb == b"RSET":
            self.mail, self.rcpts = False, []
            self.transport.write(b"250 2.0.0 Ok\r\n")
        elif verb == b"QUIT":
            self.transport.write(b"221 2.0.0 Bye\r\n")
            self.transport.close()
            self.transport = None
        else:
            self.transport.write(b"502 5.5.2 not implemented\r\n")

    def _message(self, body: bytes) -> None:
        assert self.transport is not None
        s = self.state
        mid = _message_id(body)
        domain = s.domain_of.get(self.local, "")
        s.transactions += 1
        s.recipients += len(self.rcpts)
        s.bytes += len(body)
        if mid is None:
            s.no_message_id += 1
            mid = "?"
        for rcpt in self.rcpts:
            s.pairs[(mid, rcpt)] += 1
            if rcpt.rpartition("@")[2] != domain:
                s.misrouted += 1
        self.mail, self.rcpts = False, []
        s.last_message = time.time()
        self.transport.write(b"250 2.0.0 Ok: queued\r\n")


async def _sink_main(listen: list[tuple[str, str]]) -> None:
    loop = asyncio.get_running_loop()
    state = SinkState(dict(listen))
    servers: list[asyncio.Server] = []
    port = 0
    for _ in range(50):
        try:
            port = 0
            for address, _domain in listen:
                server = await loop.create_server(lambda: SinkProtocol(state), address, port, backlog=512)
                servers.append(server)
                port = server.sockets[0].getsockname()[1]
            break
        except OSError:
            for server in servers:
                server.close()
            servers = []
    if not servers:
        print("error: cannot bind one port on every sink address", flush=True)
        return
    print(f"ready {port}", flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        command = (await reader.readline()).strip().decode()
        if command == "stats":
            print(json.dumps(state.stats()), flush=True)
        elif command == "pairs":
            print(json.dumps([[m, r, n] for (m, r), n in state.pairs.items()]), flush=True)
        elif command == "reset":
            state.reset()
            print("{}", flush=True)
        else:  # "quit", or end of file: the benchmark is gone
            break
    for server in servers:
        server.close()


class Sinks:
    """The sink process, seen from the benchmark: started with Popen, driven over its stdin and stdout."""

    def __init__(self, domains: int, log_path: Path) -> None:
        self.listen = [(mx_address(k), remote_domain(k)) for k in range(1, domains + 1)]
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.reader: asyncio.StreamReader | None = None

    def start(self) -> None:
        spec = ",".join(f"{a}={d}" for a, d in self.listen)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - this interpreter and this script, fixed arguments
                [sys.executable, str(Path(__file__).resolve()), "--sink-process", spec],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,  # Ctrl-C reaches the benchmark only; it stops the sinks itself
            )
        line = self._readline_blocking(30)
        if not line.startswith("ready "):
            raise BenchError(f"the sinks did not start: {line or 'no answer'} {self.log_tail()}")
        self.port = int(line.split()[1])

    def _readline_blocking(self, timeout: float) -> str:
        assert self.proc is not None
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline().decode().strip() if ready else ""

    async def ask(self, command: str) -> Any:
        """Send a command; returns the decoded JSON answer (read without blocking the loop: DNS keeps answering)."""
        assert self.proc is not None
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        if self.proc.poll() is not None:
            raise BenchError(f"the sink process exited with code {self.proc.returncode}: {self.log_tail()}")
        if self.reader is None:
            self.reader = asyncio.StreamReader(limit=1 << 28)  # "pairs" is one long line
            reader = self.reader
            await asyncio.get_running_loop().connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), self.proc.stdout
            )
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        line = await asyncio.wait_for(self.reader.readline(), 120)
        if not line:
            raise BenchError(f"the sink process did not answer {command!r}: {self.log_tail()}")
        return json.loads(line)

    def cpu(self) -> float:
        return tree_cpu(self.proc.pid) if self.proc is not None else 0.0

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-1000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # end of file: the sink process leaves
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


# -- the world: PostgreSQL, DNS, the queue, the daemon ---------------------------------------------


@dataclass
class Planned:
    index: int
    message_id: str
    recipients: list[str]
    data: bytes


_FILLER = b"The quick brown fox jumps over the lazy dog while the benchmark counts its steps."[:76] + b"\r\n"


def make_outbound(index: int, size: int, recipients: list[str], nonce: str) -> Planned:
    """One unique message of about ``size`` bytes (CRLF, no line starting with '.') to ``recipients``."""
    message_id = f"<delivery-{index}.{nonce}@{LOCAL_DOMAIN}>"
    head = (
        f"From: Bench Sender <{SENDER}>\r\n"
        f"To: {', '.join(f'<{r}>' for r in recipients)}\r\n"
        f"Subject: delivery bench {index}\r\n"
        "Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
        f"Message-Id: {message_id}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        f"message {index}\r\n"
    ).encode()
    body = _FILLER * (max(0, size - len(head)) // len(_FILLER))
    return Planned(index, message_id, recipients, head + body)


def plan_messages(count: int, domains: int, size: int, seed: int) -> list[Planned]:
    """``count`` messages with 1 to 3 distinct recipients each, domains and users drawn at random (seeded)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not cryptography
    nonce = uuid.uuid4().hex[:8]
    planned = []
    for i in range(count):
        want = rng.randint(1, 3)
        recipients: list[str] = []
        while len(recipients) < want:
            rcpt = f"user{rng.randrange(USERS_PER_DOMAIN) + 1}@{remote_domain(rng.randrange(domains) + 1)}"
            if rcpt not in recipients:
                recipients.append(rcpt)
        planned.append(make_outbound(i, size, recipients, nonce))
    return planned


@dataclass
class Snapshot:
    at: float  # time.time()
    daemon: float
    postgres: float
    poller: float  # the benchmark's own polling backend (inside postgres)
    sinks: float
    bench: float  # this process: DNS server, polling
    machine: MachineCpu
    daemon_sched: tuple[float, float]  # the daemon's (on a CPU, waiting for a CPU) seconds


@dataclass
class World:
    workdir: Path
    args: argparse.Namespace
    pg: Any = None
    dsn: str = ""
    postmaster_pid: int = 0
    settings: dict[str, str] = field(default_factory=dict)
    sinks: Sinks | None = None
    daemon: subprocess.Popen[bytes] | None = None
    profiler: subprocess.Popen[bytes] | None = None

    @property
    def daemon_log(self) -> Path:
        return self.workdir / "relate-delivery.log"

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.daemon_log, lines)

    def start_postgres(self) -> None:
        from relate.runtime.embedded_pg import EmbeddedPostgres

        self.pg = EmbeddedPostgres(self.workdir / "pgdata")
        self.dsn, self.postmaster_pid = start_postgres(self.pg, quiet=self.args.json_only, who="")

    def start_daemon(self, config: Path) -> None:
        self.daemon = spawn_daemon("relate.queue", config, self.daemon_log)

    def snapshot(self, poller_pid: int) -> Snapshot:
        return Snapshot(
            at=time.time(),
            daemon=tree_cpu(self.daemon.pid) if self.daemon is not None else 0.0,
            postgres=tree_cpu(self.postmaster_pid),
            poller=tree_cpu(poller_pid),
            sinks=self.sinks.cpu() if self.sinks is not None else 0.0,
            bench=time.process_time(),
            machine=machine_cpu(),
            daemon_sched=sched_times(self.daemon.pid) if self.daemon is not None else (0.0, 0.0),
        )

    def stop(self) -> None:
        """Stop everything that was started, in reverse order; never raises."""
        quiet = self.args.json_only
        steps: list[tuple[str, Any]] = [
            ("py-spy", lambda: stop_profiler(self, self.args)),
            ("the daemon", lambda: stop_daemon(self.daemon)),
            ("the sinks", lambda: self.sinks.stop() if self.sinks is not None else None),
            ("PostgreSQL", lambda: self.pg.stop() if self.pg is not None else None),
        ]
        for name, step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - cleanup goes on with the next step whatever happens
                say(f"delivery: stopping {name} failed: {exc}", quiet=quiet)


async def prepare_db(dsn: str, settings: dict[str, str]) -> int:
    """Schema (PostgreSQL's settings into ``settings``), the hosted sender; returns the sender's user id."""
    from relate.config import DatabaseConfig
    from relate.services import accounts
    from relate.store import db

    settings.update(await migrate_db(dsn))
    require_durable(settings)
    pool = await db.create_pool(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=2))
    try:
        await accounts.add_domain(pool, LOCAL_DOMAIN)
        user = await accounts.add_user(pool, SENDER)
    finally:
        await pool.close()
    return int(user["id"])


async def queue_all(dsn: str, user_id: int, planned: list[Planned], chunk: int = 250) -> float:
    """Queue every message the way submission does (blob + queue_message), ``chunk`` per transaction."""
    import asyncpg

    from relate.store import messages, outbound

    chunks = [planned[i : i + chunk] for i in range(0, len(planned), chunk)]
    todo: asyncio.Queue[list[Planned]] = asyncio.Queue()
    for c in chunks:
        todo.put_nowait(c)

    async def worker() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            while not todo.empty():
                batch = todo.get_nowait()
                async with conn.transaction():
                    for p in batch:
                        blob = await messages.put_blob(conn, p.data)
                        await outbound.queue_message(
                            conn,
                            user_id=user_id,
                            from_address=SENDER,
                            mail_from=SENDER,
                            subject=f"delivery bench {p.index}",
                            message_id=p.message_id,
                            blob_hash=blob,
                            recipients=p.recipients,
                        )
        finally:
            conn.terminate()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(4, len(chunks)))))
    elapsed = time.perf_counter() - t0
    conn = await asyncpg.connect(dsn)
    try:
        # Fresh statistics for the planner (autovacuum would get there within a minute or so), and the
        # inserts' dirty pages flushed now rather than by a checkpoint in the middle of the measurement.
        await conn.execute("ANALYZE outbound_emails, outbound_recipients, blobs")
        await conn.execute("CHECKPOINT")
    finally:
        conn.terminate()
    return elapsed


async def calibrate_sinks(world: World, count: int, sessions: int, size: int) -> dict[str, Any]:
    """Drive the sinks directly with the raw client of ``_common``: their ceiling, and their CPU per message."""
    assert world.sinks is not None
    sinks = world.sinks
    listen = sinks.listen
    jobs: list[list[Job]] = [[] for _ in range(sessions)]
    for i in range(count):
        domain = listen[(i % sessions) % len(listen)][1]
        rcpt = f"calibration{i % 7}@{domain}"
        jobs[i % sessions].append(Job(i, SENDER, rcpt, make_message(i, size, SENDER, rcpt)))

    async def session(n: int) -> int:
        address = listen[n % len(listen)][0]
        conn = await RawSmtp.connect(address, sinks.port, 30)
        try:
            for job in jobs[n]:
                await conn.send(job)
        finally:
            await conn.close()
        return len(jobs[n])

    await sinks.ask("reset")
    cpu0, bench0, t0 = sinks.cpu(), time.process_time(), time.perf_counter()
    sent = sum(await asyncio.gather(*(session(n) for n in range(sessions) if jobs[n])))
    wall = time.perf_counter() - t0
    cpu1, bench1 = sinks.cpu(), time.process_time()
    stats = await sinks.ask("stats")
    await sinks.ask("reset")
    if stats["transactions"] != sent or stats["misrouted"] or stats["duplicate_pairs"]:
        raise BenchError(f"the sinks miscounted the calibration: sent {sent}, sinks saw {stats}")
    return {
        "messages": sent,
        "sessions": sessions,
        "msg_per_s": round(sent / wall, 1),
        "sink_cpu_ms_per_msg": round((cpu1 - cpu0) * 1000 / sent, 3),
        "client_cpu_ms_per_msg": round((bench1 - bench0) * 1000 / sent, 3),
    }


def write_config(world: World, dns: str, port: int) -> Path:
    import yaml

    a = world.args
    delivery: dict[str, Any] = {
        "dns_servers": [dns],
        "dns_timeout": 5.0,
        "port": port,
        "connect_timeout": 10.0,
        "command_timeout": 60.0,
        "max_connections": a.max_connections,
        "max_connections_per_domain": a.per_domain,
        "messages_per_connection": a.messages_per_connection,
        "poll_seconds": 5.0,
    }
    if a.batch_size is not None:
        delivery["batch_size"] = a.batch_size
    database: dict[str, Any] = {"dsn": world.dsn}
    if a.pool_max is not None:
        database["pool_max"] = a.pool_max
    config = world.workdir / "relate.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "hostname": f"relay.{LOCAL_DOMAIN}",
                "database": database,
                "delivery": delivery,
                "logging": {"level": "WARNING"},
            }
        )
    )
    return config


async def wait_first_claim(world: World, conn: Any, limit_s: float) -> float:
    """Poll (every 10 ms) until the daemon has claimed something; returns that moment (time.time())."""
    assert world.daemon is not None
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if world.daemon.poll() is not None:
            raise BenchError(f"the delivery daemon exited with code {world.daemon.returncode}:\n{world.log_tail()}")
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM outbound_recipients WHERE status <> 'pending')"):
            return time.time()
        await asyncio.sleep(0.01)
    raise BenchError(f"the delivery daemon claimed nothing within {limit_s:.0f}s:\n{world.log_tail()}")


async def wait_all_sent(world: World, conn: Any, total: int, limit_s: float, quiet: bool) -> None:
    """Poll (every 100 ms) until every recipient is sent; fail fast on a deferral or failure."""
    assert world.daemon is not None
    deadline = time.monotonic() + limit_s
    last_say = time.monotonic()
    while True:
        sent, bad = await conn.fetchrow(
            """SELECT count(*) FILTER (WHERE status = 'sent'),
                      count(*) FILTER (WHERE status IN ('deferred', 'failed'))
                 FROM outbound_recipients"""
        )
        if bad:
            errors = await conn.fetch(
                """SELECT status, last_error, count(*) AS n FROM outbound_recipients
                    WHERE status IN ('deferred', 'failed') GROUP BY 1, 2 ORDER BY n DESC LIMIT 5"""
            )
            shown = "; ".join(f"{r['n']} {r['status']}: {r['last_error']}" for r in errors)
            raise BenchError(f"{bad} recipients deferred or failed ({shown}); no figures reported\n{world.log_tail()}")
        if sent >= total:
            return
        if world.daemon.poll() is not None:
            raise BenchError(f"the delivery daemon exited with code {world.daemon.returncode}:\n{world.log_tail()}")
        if time.monotonic() > deadline:
            raise BenchError(f"only {sent} of {total} recipients sent after {limit_s:.0f}s; no figures reported")
        if time.monotonic() - last_say > 2:
            say(f"  {sent}/{total} recipients sent", quiet=quiet)
            last_say = time.monotonic()
        await asyncio.sleep(0.1)


# -- py-spy ----------------------------------------------------------------------------------------


def start_profiler(world: World, args: argparse.Namespace) -> None:
    if not args.py_spy or world.daemon is None:
        return
    world.profiler = start_py_spy(args.py_spy, world.daemon.pid, args.profile)


def stop_profiler(world: World, args: argparse.Namespace) -> None:
    proc, world.profiler = world.profiler, None
    if proc is None:
        return
    stop_py_spy(proc, Path(args.profile), "relate-delivery (--gil)", quiet=args.json_only)


# -- one run ---------------------------------------------------------------------------------------


def ms_stats(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 50) * 1000, 1),
        "p99": round(percentile(values, 99) * 1000, 1),
        "max": round(max(values, default=0.0) * 1000, 1),
    }


async def run(world: World) -> dict[str, Any]:
    import asyncpg

    from relate.testing.dns import DnsServer, Zone

    args = world.args
    quiet = args.json_only
    user_id = await prepare_db(world.dsn, world.settings)
    assert world.sinks is not None
    sinks = world.sinks
    zone = Zone()
    for k in range(1, args.domains + 1):
        zone.add(remote_domain(k), "MX", f"10 mx.{remote_domain(k)}.")
        zone.add(f"mx.{remote_domain(k)}", "A", mx_address(k))
    dns = DnsServer(zone)
    dns_address = await dns.start()
    poller: asyncpg.Connection | None = None
    try:
        calibration = None
        if args.calibrate:
            say(f"sinks: calibrating with {args.calibrate} messages over 20 raw-client sessions", quiet=quiet)
            calibration = await calibrate_sinks(world, args.calibrate, 20, args.size)
            say(f"  sinks take >= {calibration['msg_per_s']:,.0f} msg/s", quiet=quiet)

        say(f"planning {args.messages} messages of ~{args.size} bytes to {args.domains} domains", quiet=quiet)
        planned = plan_messages(args.messages, args.domains, args.size, args.seed)
        total_rcpts = sum(len(p.recipients) for p in planned)
        say(f"queueing {args.messages} messages ({total_rcpts} recipients) into PostgreSQL", quiet=quiet)
        queue_seconds = await queue_all(world.dsn, user_id, planned)

        poller = await asyncpg.connect(world.dsn)
        poller_pid = int(await poller.fetchval("SELECT pg_backend_pid()"))
        queued = int(await poller.fetchval("SELECT count(*) FROM outbound_recipients WHERE status = 'pending'"))
        if queued != total_rcpts:
            raise BenchError(f"queued {queued} recipients, expected {total_rcpts}")

        config = write_config(world, dns_address, sinks.port)
        say("starting relate-delivery (python -m relate.queue), logging WARNING", quiet=quiet)
        t_spawn = time.time()
        world.start_daemon(config)
        t_first = await wait_first_claim(world, poller, 60)
        start = world.snapshot(poller_pid)
        start_profiler(world, args)
        await wait_all_sent(world, poller, total_rcpts, args.timeout, quiet)
        end = world.snapshot(poller_pid)
        stop_profiler(world, args)

        # -- what the database says
        by_status = {
            r["status"]: r["n"]
            for r in await poller.fetch("SELECT status, count(*) AS n FROM outbound_recipients GROUP BY 1")
        }
        email_status = {
            r["status"]: r["n"]
            for r in await poller.fetch("SELECT status, count(*) AS n FROM outbound_emails GROUP BY 1")
        }
        rcpt_done = [
            float(r["t"])
            for r in await poller.fetch(
                "SELECT extract(epoch FROM updated_at) AS t FROM outbound_recipients WHERE status = 'sent'"
            )
        ]
        in_queue = [
            float(r["s"])
            for r in await poller.fetch(
                "SELECT extract(epoch FROM sent_at - queued_at) AS s FROM outbound_emails WHERE sent_at IS NOT NULL"
            )
        ]
        expected = {
            (r["message_id"], r["address"])
            for r in await poller.fetch(
                """SELECT e.message_id, r.address FROM outbound_recipients r
                     JOIN outbound_emails e ON e.id = r.outbound_email_id"""
            )
        }
    finally:
        if poller is not None:
            poller.terminate()
        dns.close()

    # -- what the sinks say
    stats = await sinks.ask("stats")
    pairs = {(m, r): n for m, r, n in await sinks.ask("pairs")}
    missing = len(expected - pairs.keys())
    unexpected = len(pairs.keys() - expected)
    duplicates = sum(1 for n in pairs.values() if n > 1)
    deliveries = sum(pairs.values())
    problems = []
    if by_status.get("sent", 0) != total_rcpts or len(by_status) != 1:
        problems.append(f"recipient statuses {by_status}, expected {total_rcpts} sent")
    if email_status.get("sent", 0) != args.messages or len(email_status) != 1:
        problems.append(f"message statuses {email_status}, expected {args.messages} sent")
    if len(expected) != total_rcpts:
        problems.append(f"{total_rcpts} recipients queued but {len(expected)} distinct (Message-Id, recipient) pairs")
    if missing or unexpected or duplicates or deliveries != total_rcpts:
        problems.append(
            f"sinks: {deliveries} deliveries of {len(pairs)} pairs for {total_rcpts} expected; "
            f"{missing} missing, {unexpected} unexpected, {duplicates} duplicated"
        )
    if stats["misrouted"] or stats["no_message_id"]:
        problems.append(f"sinks: {stats['misrouted']} misrouted, {stats['no_message_id']} without Message-Id")
    verification = {
        "recipients_expected": total_rcpts,
        "recipients_sent_in_db": by_status.get("sent", 0),
        "sink_deliveries": deliveries,
        "missing": missing,
        "unexpected": unexpected,
        "duplicates": duplicates,
        "misrouted": stats["misrouted"],
    }
    if problems:
        raise BenchError("; ".join(problems) + "; no figures reported", verification)

    # -- figures
    n = args.messages
    t_last = max(rcpt_done)
    window = t_last - t_first
    cpu_window = end.at - start.at
    cpu = {
        "daemon": end.daemon - start.daemon,
        "postgres": (end.postgres - start.postgres) - (end.poller - start.poller),
        "sinks": end.sinks - start.sinks,
    }
    bench = end.bench - start.bench
    poller_cpu = end.poller - start.poller
    machine = end.machine - start.machine
    server = cpu["daemon"] + cpu["postgres"]
    other = machine.busy - sum(cpu.values()) - poller_cpu - bench - machine.kernel
    sink_busy = cpu["sinks"] / cpu_window
    # Where the daemon's wall time went: on a core, runnable but waiting for one (the machine's other
    # load), or neither: blocked on PostgreSQL, the MXs, DNS, or idle.
    on_cpu = end.daemon_sched[0] - start.daemon_sched[0]
    runqueue = end.daemon_sched[1] - start.daemon_sched[1]
    figures = {
        "msg_per_s": round(n / window, 1),
        "rcpt_per_s": round(total_rcpts / window, 1),
        "msg_per_s_from_daemon_start": round(n / (t_last - t_spawn), 1),
        "delivery_window_s": round(window, 3),
        "daemon_startup_s": round(t_first - t_spawn, 3),
        "connections": stats["connections"],
        "connections_per_100_msgs": round(stats["connections"] * 100 / n, 2),
        "smtp_transactions": stats["transactions"],
        "transactions_per_connection": round(stats["transactions"] / max(1, stats["connections"]), 1),
        "peak_connections": stats["peak_connections"],
        "peak_connections_per_mx": stats["peak_connections_per_address"],
        "time_in_queue_ms": ms_stats(in_queue),
        "delay_after_first_claim_ms": ms_stats([t - t_first for t in rcpt_done]),
        "cpu_s_per_1k_msgs": {k: round(per_1k(v, n), 3) for k, v in cpu.items()}
        | {"server_total": round(per_1k(server, n), 3), "bench_process": round(per_1k(bench, n), 3)},
        "cores_busy": {
            "daemon": round(cpu["daemon"] / cpu_window, 2),
            "postgres": round(cpu["postgres"] / cpu_window, 2),
            "sinks": round(sink_busy, 2),
            "bench_process": round((bench + poller_cpu) / cpu_window, 2),
            "kernel": round(max(0.0, machine.kernel) / cpu_window, 2),  # < 0 when a kernel thread exited
            "other_noise": round(max(0.0, other) / cpu_window, 2),
        },
        "daemon_wall_share": {
            "on_cpu": round(on_cpu / cpu_window, 2),
            "waiting_for_cpu": round(runqueue / cpu_window, 2),
            "blocked_or_idle": round(max(0.0, 1 - (on_cpu + runqueue) / cpu_window), 2),
        },
        "queueing_s": round(queue_seconds, 2),
    }
    ceiling = calibration["msg_per_s"] if calibration else None
    # The sinks limit nothing if they idle most of the time and could take far more than they got.
    figures["sinks_bottleneck"] = bool(sink_busy > 0.5 or (ceiling is not None and n / window > 0.5 * ceiling))
    return {
        "setup": {
            "postgres": {k: world.settings.get(k) for k in ("server_version", "fsync", "synchronous_commit")},
            "dns": dns_address,
            "sink_port": sinks.port,
            "mx_addresses": f"{mx_address(1)}..{mx_address(args.domains)}",
        },
        "calibration": calibration,
        "figures": figures,
        "verification": verification,
    }


# -- output ----------------------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    p, f, v, c = report["params"], report["figures"], report["verification"], report.get("calibration")
    cpu, busy = f["cpu_s_per_1k_msgs"], f["cores_busy"]
    q, d, w = f["time_in_queue_ms"], f["delay_after_first_claim_ms"], f["daemon_wall_share"]
    rows: list[list[Any]] = [
        ["messages/s delivered (first claim -> last sent)", f["msg_per_s"]],
        ["recipients/s delivered", f["rcpt_per_s"]],
        ["messages/s from daemon start (incl. startup)", f["msg_per_s_from_daemon_start"]],
        ["connections opened / 100 messages", f["connections_per_100_msgs"]],
        ["SMTP transactions / connection", f["transactions_per_connection"]],
        ["connections (sinks' count)", f["connections"]],
        ["SMTP transactions (message x domain)", f["smtp_transactions"]],
        ["peak concurrent connections (all MXs / one MX)", f"{f['peak_connections']} / {f['peak_connections_per_mx']}"],
        ["time in queue p50 / p99 (ms, queued_at -> sent_at)", f"{q['p50']:,.0f} / {q['p99']:,.0f}"],
        ["delivered after first claim p50 / p99 (ms)", f"{d['p50']:,.0f} / {d['p99']:,.0f}"],
        ["daemon CPU s / 1k msgs", cpu["daemon"]],
        ["PostgreSQL CPU s / 1k msgs (bench polling excluded)", cpu["postgres"]],
        ["server CPU s / 1k msgs, total", cpu["server_total"]],
        ["sinks CPU s / 1k msgs", cpu["sinks"]],
        ["bench process CPU s / 1k msgs (DNS, polling)", cpu["bench_process"]],
        ["daemon / PostgreSQL cores busy", f"{busy['daemon']:.2f} / {busy['postgres']:.2f}"],
        ["sinks cores busy", busy["sinks"]],
        [
            "daemon wall: on CPU / waiting for a CPU / blocked (DB, SMTP, DNS)",
            f"{w['on_cpu']:.2f} / {w['waiting_for_cpu']:.2f} / {w['blocked_or_idle']:.2f}",
        ],
        ["kernel (irq, softirq, kthreads) cores busy", busy["kernel"]],
        ["other processes' cores busy (noise)", busy["other_noise"]],
        ["delivery window (s)", f["delivery_window_s"]],
        ["daemon startup to first claim (s)", f["daemon_startup_s"]],
        [
            "recipients sent (DB) = delivered once each (sinks)",
            f"{v['recipients_sent_in_db']} = {v['sink_deliveries']}",
        ],
    ]
    if c:
        rows.append(["sinks' ceiling, raw client 20 sessions (msg/s, >=)", c["msg_per_s"]])
        rows.append(["sinks CPU ms / msg at the ceiling", c["sink_cpu_ms_per_msg"]])
    rows.append(["sinks the bottleneck?", "YES" if f["sinks_bottleneck"] else "no"])
    s = report["setup"]
    lines = [
        f"Delivery: {p['messages']} messages of {p['size']} bytes, {v['recipients_expected']} recipients "
        f"(1-3 each) at {p['domains']} domains, MXs {s['mx_addresses']}:{s['sink_port']}; "
        f"{p['cpus']} CPUs shared, work dir on {p['fs']}",
        f"relate-delivery: one daemon, max_connections {p['max_connections']}, per domain {p['per_domain']}, "
        f"messages_per_connection {p['messages_per_connection']}, batch_size {p['batch_size']}, "
        f"logging WARNING -> PostgreSQL {s['postgres']['server_version']} "
        f"(fsync={s['postgres']['fsync']}, synchronous_commit={s['postgres']['synchronous_commit']})",
        "",
        table(["", "relate"], rows),
    ]
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from relate.config import DeliveryConfig

    d = DeliveryConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=5000, help="messages to queue (default 5000)")
    parser.add_argument("--domains", type=int, default=10, help="remote domains, one MX sink each (default 10)")
    parser.add_argument("--size", type=int, default=10240, help="approximate message size in bytes (default 10240)")
    parser.add_argument(
        "--messages-per-connection",
        type=int,
        default=d.messages_per_connection,
        help=f"delivery.messages_per_connection (default {d.messages_per_connection})",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=d.max_connections,
        help=f"delivery.max_connections (default {d.max_connections})",
    )
    parser.add_argument(
        "--per-domain",
        type=int,
        default=d.max_connections_per_domain,
        help=f"delivery.max_connections_per_domain (default {d.max_connections_per_domain})",
    )
    parser.add_argument("--batch-size", type=int, help=f"delivery.batch_size (default {d.batch_size})")
    parser.add_argument("--pool-max", type=int, help="database.pool_max of the daemon (default: the config default)")
    parser.add_argument(
        "--calibrate",
        type=int,
        default=2000,
        help="messages sent straight to the sinks first, to show their ceiling (default 2000; 0 skips)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed for the recipients drawn (default 1)")
    parser.add_argument("--timeout", type=float, default=900, help="limit in seconds for the delivery (default 900)")
    parser.add_argument("--workdir", type=Path, help="parent of the temp dir (default: $TMPDIR or /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data) for inspection")
    parser.add_argument("--py-spy", help="path of a py-spy binary: profile the daemon during the delivery")
    parser.add_argument("--profile", type=Path, help="where py-spy writes collapsed stacks (with --py-spy)")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    if min(args.messages, args.domains, args.messages_per_connection, args.max_connections, args.per_domain) < 1:
        parser.error("--messages, --domains, --messages-per-connection, --max-connections, --per-domain must be >= 1")
    if args.domains > 240:
        parser.error("--domains: at most 240 (MX addresses 127.0.0.11 to 127.0.0.250)")
    if args.size < 1024 or args.calibrate < 0:
        parser.error("--size must be at least 1024 and --calibrate not negative")
    if args.py_spy and not args.profile:
        parser.error("--py-spy needs --profile FILE")
    args.batch_size_effective = args.batch_size or d.batch_size
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet = args.json_only
    workdir = make_workdir("relate-bench-delivery-", args.workdir)
    report: dict[str, Any] = {
        "benchmark": "delivery",
        "params": {
            "messages": args.messages,
            "domains": args.domains,
            "size": args.size,
            "messages_per_connection": args.messages_per_connection,
            "max_connections": args.max_connections,
            "per_domain": args.per_domain,
            "batch_size": args.batch_size_effective,
            "pool_max": args.pool_max,
            "seed": args.seed,
            "cpus": os.cpu_count(),
            "fs": fs_type(workdir),
        },
        "valid": False,
    }
    world = World(workdir, args)

    def body() -> None:
        world.start_postgres()
        world.sinks = Sinks(args.domains, workdir / "sinks.log")
        world.sinks.start()
        say(f"sinks: {args.domains} MXs on {mx_address(1)}..{mx_address(args.domains)}:{world.sinks.port}", quiet=quiet)
        report.update(asyncio.run(run(world)))

    return run_benchmark("delivery", args, workdir, report, body, world.stop, render)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--sink-process":
        # The sink process: "addr=domain,addr=domain,..."; it leaves when its stdin closes.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        asyncio.run(_sink_main([tuple(item.split("=", 1)) for item in sys.argv[2].split(",")]))  # type: ignore[misc]
        sys.exit(0)
    sys.exit(main())
