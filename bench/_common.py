"""Shared parts of the benchmarks: a lean SMTP load generator, CPU accounting, the relate side, and output.

The load generator speaks just enough SMTP over raw asyncio streams (EHLO
once per connection, then MAIL, RCPT, DATA per message, no pipelining, the
way ``smtp-source`` talks), so that the client costs little of the two
cores it shares with the server under test. ``aiosmtplib`` is offered as an
alternative client to compare against.

CPU time is read from ``/proc/PID/stat``: ``utime + stime`` of every live
process of a tree plus ``cutime + cstime`` (what each one has reaped from
children that already exited), so short-lived workers (Postfix's smtpd,
PostgreSQL backends) are counted too.

The relate side (an embedded durable PostgreSQL, the schema, one
``python -m relate.<service>`` daemon) and the skeleton of ``main`` (signals,
temp dir, cleanup, the table and the JSON line) are here too, so each script
keeps only its own workload. ``relate`` is imported lazily: the sink process of
``delivery.py`` imports this module and should stay lean.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

CLK_TCK = os.sysconf("SC_CLK_TCK")
CLIENT_NAME = "bench-client.test"
HOST = "127.0.0.1"


class BenchError(Exception):
    """A setup or verification failure, worded for the person running the benchmark."""


# -- processes, ports and CPU ----------------------------------------------------


def run_cmd(
    args: Sequence[str],
    *,
    timeout: float,
    check: bool = True,
    input_text: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a fixed command (never a shell string), capturing its output."""
    return subprocess.run(  # noqa: S603 - argument lists built by the benchmark itself
        list(args), check=check, capture_output=True, text=True, timeout=timeout, input=input_text, env=env
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_smtp(host: str, port: int, timeout: float, alive: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``host:port`` answers with a 220 greeting; raise if it does not in time."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"the server exited with code {alive.returncode} before it listened")
        try:
            with socket.create_connection((host, port), timeout=2) as sock:
                sock.settimeout(5)
                greeting = sock.recv(512)
                if greeting.startswith(b"220"):
                    sock.sendall(b"QUIT\r\n")
                    return
                last = RuntimeError(f"unexpected greeting {greeting[:80]!r}")
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{host}:{port} did not greet within {timeout:.0f}s ({last})")


def wait_for_banner(
    host: str, port: int, timeout: float, banner: bytes, alive: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until ``host:port`` greets with a line starting with ``banner`` (b"+OK" for POP3); raise if not in time.

    Connects, reads the greeting and hangs up (no QUIT), so it suits any line protocol.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"the server exited with code {alive.returncode} before it listened")
        try:
            with socket.create_connection((host, port), timeout=2) as sock:
                sock.settimeout(5)
                greeting = sock.recv(512)
                if greeting.startswith(banner):
                    return
                last = RuntimeError(f"unexpected greeting {greeting[:80]!r}")
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{host}:{port} did not greet within {timeout:.0f}s ({last})")


def _proc_cpu(pid: int) -> float:
    """utime + stime + cutime + cstime of one process, in seconds (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name is in parentheses and may contain spaces; fields follow the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime..cstime are fields 14..17.
    return sum(int(v) for v in fields[11:15]) / CLK_TCK


def tree_cpu(root_pid: int) -> float:
    """CPU seconds used so far by a process, its live descendants, and the children they reaped."""
    try:
        pids = [root_pid, *(p.pid for p in psutil.Process(root_pid).children(recursive=True))]
    except psutil.Error:
        return 0.0
    return sum(_proc_cpu(pid) for pid in pids)


def sched_times(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for a CPU) of every thread of ``pid``, from schedstat.

    The second figure tells a process starved of cores (by the machine's other load) from one
    that is slow on its own; (0, 0) when the process is gone or the kernel keeps no schedstat.
    """
    run = wait = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0, 0.0
    for tid in tasks:
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        except OSError:
            continue
        run += int(fields[0])
        wait += int(fields[1])
    return run / 1e9, wait / 1e9


@dataclass(frozen=True)
class MachineCpu:
    """Cumulative CPU seconds of the whole machine, split by who used them."""

    busy: float  # all cores, idle and iowait excluded
    kernel: float  # interrupts, softirqs (loopback TCP, block I/O completion) and kernel threads (jbd2, kworkers)

    def __sub__(self, other: MachineCpu) -> MachineCpu:
        return MachineCpu(self.busy - other.busy, self.kernel - other.kernel)

    def __add__(self, other: MachineCpu) -> MachineCpu:
        return MachineCpu(self.busy + other.busy, self.kernel + other.kernel)


def machine_cpu() -> MachineCpu:
    """Now: how busy the machine has been since boot; subtract two readings for a window."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...; guest time is already inside user.
    busy = (sum(values[:8]) - values[3] - values[4]) / CLK_TCK
    irq = (values[5] + values[6]) / CLK_TCK
    return MachineCpu(busy, irq + tree_cpu(2))  # pid 2, kthreadd, is the parent of every kernel thread


def fs_type(path: Path) -> str:
    """The file system holding ``path`` (fsync means little on tmpfs; say so)."""
    best = ("?", "")
    for part in psutil.disk_partitions(all=True):
        mount = part.mountpoint
        if str(path).startswith(mount) and len(mount) >= len(best[1]):
            best = (part.fstype, mount)
    return best[0]


# -- messages -------------------------------------------------------------------

_FILLER = b"The quick brown fox jumps over the lazy dog while the benchmark counts its steps."  # 80 bytes


def make_message(index: int, size: int, sender: str, recipient: str) -> bytes:
    """One unique RFC 5322 message of about ``size`` bytes, CRLF line ends, no line starting with '.'."""
    headers = (
        f"From: Bench Sender <{sender}>\r\n"
        f"To: <{recipient}>\r\n"
        f"Subject: bench message {index}\r\n"
        f"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
        f"Message-ID: <bench-{index}-{os.getpid()}@{CLIENT_NAME}>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
    ).encode()
    first = f"message {index}\r\n".encode()
    room = max(0, size - len(headers) - len(first))
    line = _FILLER[:76] + b"\r\n"
    body = line * (room // len(line))
    rest = room - len(body)
    if rest > 2:
        body += _FILLER[: rest - 2] + b"\r\n"
    return headers + first + body


@dataclass(frozen=True)
class Job:
    """One message to send: envelope and content (already dot-safe, ending in CRLF)."""

    index: int
    mail_from: str
    rcpt_to: str
    data: bytes


def plan_jobs(messages: int, sessions: int, size: int, sender: str, recipients: Sequence[str]) -> list[list[Job]]:
    """Split ``messages`` over ``sessions``; message ``i`` goes to ``recipients[i % len(recipients)]``.

    Session ``s`` sends messages ``s, s + sessions, s + 2*sessions, ...``, so with as
    many recipients as sessions each session keeps writing to its own mailbox.
    """
    plan: list[list[Job]] = [[] for _ in range(sessions)]
    for i in range(messages):
        rcpt = recipients[i % len(recipients)]
        plan[i % sessions].append(Job(i, sender, rcpt, make_message(i, size, sender, rcpt)))
    return plan


# -- the load -------------------------------------------------------------------


@dataclass
class LoadResult:
    """What the client saw."""

    sent: int = 0  # messages answered 250 after the final '.'
    failed: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, final '.' -> 250
    connections: int = 0
    wall: float = 0.0
    client_cpu: float = 0.0

    def rate(self) -> float:
        return self.sent / self.wall if self.wall > 0 else 0.0


class SmtpReplyError(Exception):
    def __init__(self, stage: str, code: int, text: str) -> None:
        super().__init__(f"{stage}: {code} {text}")
        self.stage = stage
        self.code = code


class RawSmtp:
    """A minimal SMTP client on asyncio streams: what a benchmark needs and no more."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout

    @classmethod
    async def connect(cls, host: str, port: int, io_timeout: float) -> RawSmtp:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), io_timeout)
        conn = cls(reader, writer, io_timeout)
        await conn.expect("greeting", 220)
        conn.writer.write(f"EHLO {CLIENT_NAME}\r\n".encode())
        await conn.expect("ehlo", 250)
        return conn

    async def reply(self) -> tuple[int, str]:
        lines: list[bytes] = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), self.timeout)
            if not line:
                raise ConnectionError("server closed the connection")
            lines.append(line)
            if line[3:4] != b"-":
                break
        return int(lines[-1][:3]), lines[-1][4:].decode("ascii", "replace").strip()

    async def expect(self, stage: str, code: int) -> None:
        got, text = await self.reply()
        if got != code:
            raise SmtpReplyError(stage, got, text)

    async def send(self, job: Job) -> float:
        """Send one message; returns the seconds from the final '.' to the 250."""
        self.writer.write(f"MAIL FROM:<{job.mail_from}>\r\n".encode())
        await self.expect("mail", 250)
        self.writer.write(f"RCPT TO:<{job.rcpt_to}>\r\n".encode())
        await self.expect("rcpt", 250)
        self.writer.write(b"DATA\r\n")
        await self.expect("data", 354)
        self.writer.write(job.data)
        await self.writer.drain()
        start = time.perf_counter()
        self.writer.write(b".\r\n")
        await self.expect("dot", 250)
        return time.perf_counter() - start

    async def reset(self) -> None:
        self.writer.write(b"RSET\r\n")
        await self.expect("rset", 250)

    async def close(self) -> None:
        with contextlib.suppress(OSError, TimeoutError, ConnectionError, SmtpReplyError, ValueError):
            self.writer.write(b"QUIT\r\n")
            await self.expect("quit", 221)
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError, ConnectionError):
            await asyncio.wait_for(self.writer.wait_closed(), self.timeout)


async def _raw_session(host: str, port: int, jobs: list[Job], reuse: bool, io_timeout: float, out: LoadResult) -> None:
    conn: RawSmtp | None = None
    try:
        for job in jobs:
            try:
                if conn is None:
                    conn = await RawSmtp.connect(host, port, io_timeout)
                    out.connections += 1
                latency = await conn.send(job)
            except SmtpReplyError as exc:
                out.failed[f"{exc.stage} {exc.code}"] += 1
                if conn is not None and exc.stage not in ("greeting", "ehlo"):
                    with contextlib.suppress(Exception):
                        await conn.reset()
                        continue
                if conn is not None:
                    await conn.close()
                conn = None
                continue
            except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
                out.failed[type(exc).__name__] += 1
                if conn is not None:
                    await conn.close()
                conn = None
                continue
            out.sent += 1
            out.latencies.append(latency)
            if not reuse:
                await conn.close()
                conn = None
    finally:
        if conn is not None:
            await conn.close()


async def _aiosmtplib_session(
    host: str, port: int, jobs: list[Job], reuse: bool, io_timeout: float, out: LoadResult
) -> None:
    import aiosmtplib

    conn: aiosmtplib.SMTP | None = None
    try:
        for job in jobs:
            try:
                if conn is None:
                    conn = aiosmtplib.SMTP(
                        hostname=host,
                        port=port,
                        timeout=io_timeout,
                        local_hostname=CLIENT_NAME,
                        use_tls=False,
                        start_tls=False,
                    )
                    await conn.connect()
                    await conn.ehlo()
                    out.connections += 1
                await conn.mail(job.mail_from)
                await conn.rcpt(job.rcpt_to)
                # aiosmtplib sends DATA, waits for 354, then the body: this times both round trips.
                start = time.perf_counter()
                await conn.data(job.data)
                latency = time.perf_counter() - start
            except aiosmtplib.SMTPResponseException as exc:
                out.failed[f"{type(exc).__name__} {exc.code}"] += 1
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.rset()
                        continue
                conn = None
                continue
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                out.failed[type(exc).__name__] += 1
                if conn is not None:
                    conn.close()
                conn = None
                continue
            out.sent += 1
            out.latencies.append(latency)
            if not reuse:
                with contextlib.suppress(Exception):
                    await conn.quit()
                conn = None
    finally:
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.quit()


async def run_load(
    host: str, port: int, plan: list[list[Job]], *, reuse: bool, client: str, io_timeout: float, deadline: float
) -> LoadResult:
    """Run every session of ``plan`` at once; ``deadline`` (seconds) bounds the whole load."""
    out = LoadResult()
    session = _raw_session if client == "raw" else _aiosmtplib_session
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(session(host, port, jobs, reuse, io_timeout, out)) for jobs in plan if jobs]
    if not tasks:
        return out
    done, pending = await asyncio.wait(tasks, timeout=deadline)
    out.wall = time.perf_counter() - t0
    out.client_cpu = time.process_time() - cpu0
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
        out.failed["deadline"] += sum(len(j) for j in plan) - out.sent - sum(out.failed.values())
    for task in done:
        exc = task.exception()
        if exc is not None:
            out.failed[f"client-bug {type(exc).__name__}: {exc}"] += 1
    return out


# -- figures and output ---------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def per_1k(cpu_seconds: float, messages: int) -> float:
    return cpu_seconds * 1000 / messages if messages else 0.0


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    cells = [list(headers), *[[fmt(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        parts = [row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def say(message: str, *, quiet: bool = False) -> None:
    """Progress on stderr, so stdout keeps the table and the JSON line only."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def json_line(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=False, separators=(",", ":"))


def dig(data: dict[str, Any] | None, path: tuple[str, ...]) -> Any:
    """``data[path[0]][path[1]]...``, or None where a key is missing."""
    value: Any = data
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def ratio(a: Any, b: Any) -> float | None:
    """``a / b`` to three places when both are numbers and ``b`` is not 0, else None."""
    return round(a / b, 3) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def ratios(relate: dict[str, Any], peer: dict[str, Any], names: dict[tuple[str, ...], str]) -> dict[str, float | None]:
    """relate/peer for each figure path of ``names``, under its name."""
    return {name: ratio(dig(relate, path), dig(peer, path)) for path, name in names.items()}


def comparison_rows(
    spec: Sequence[tuple[str, tuple[str, ...]]],
    relate: dict[str, Any] | None,
    peer: dict[str, Any] | None,
    ratio_of: Callable[[tuple[str, ...]], float | None],
) -> list[list[Any]]:
    """Table rows (label, relate[, peer, ratio]) for each (label, figure path) of ``spec`` that has a value."""
    rows = []
    for label, path in spec:
        row: list[Any] = [label, dig(relate, path)]
        if peer:
            row += [dig(peer, path), ratio_of(path)]
        if any(v is not None for v in row[1:]):
            rows.append(row)
    return rows


def comparison_table(
    spec: Sequence[tuple[str, tuple[str, ...]]], report: dict[str, Any], peer: str, names: dict[tuple[str, ...], str]
) -> str:
    """The table of ``report``: relate's figures, and with a ``peer`` in the report its figures and the
    ratios of ``report["ratio"]`` (named by ``names``) too."""
    relate, other, ratio_by = report["relate"], report.get(peer), report.get("ratio")
    headers = ["", "relate"] + ([peer, f"relate/{peer}"] if other else [])

    def ratio_of(path: tuple[str, ...]) -> float | None:
        key = names.get(path)
        return ratio_by.get(key) if (ratio_by and key) else None

    return table(headers, comparison_rows(spec, relate, other, ratio_of))


def cpu_figures(
    cpu: dict[str, float], client: float, machine: MachineCpu, messages: int, window: float
) -> dict[str, Any]:
    """CPU per 1,000 messages by process group, and the cores busy over ``window`` seconds: the server's,
    the kernel's (interrupts and kernel threads: loopback TCP, file-system journal, block I/O done for the
    server) and everyone else's (other users' tests, say: big values mean noisy figures)."""
    server = sum(v for k, v in cpu.items() if not k.startswith("of which "))  # parts of another entry
    return {
        "cpu_s_per_1k": {k: round(per_1k(v, messages), 3) for k, v in cpu.items()}
        | {"server_total": round(per_1k(server, messages), 3), "client": round(per_1k(client, messages), 3)},
        "server_cores_busy": round(server / window, 2),
        "kernel_cores_busy": round(machine.kernel / window, 2),
        "other_cores_busy": round(max(0.0, machine.busy - server - client - machine.kernel) / window, 2),
    }


# -- profiles -------------------------------------------------------------------


def summarize_collapsed(path: Path, label: str, top: int = 25, empty: str | None = None) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks (``--format raw``)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        # One entry per function, whatever the line: "name (file.py:123)" -> "name (file.py)".
        frames = [_LINE_NUMBER.sub(")", f) for f in stack.split(";") if f]
        total += count
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return empty if empty is not None else f"profile of {label}: no samples"
    out = [f"profile of {label}: {total} samples in {path}", "  self%  function"]
    out += [f"  {100 * n / total:5.1f}  {f}" for f, n in own.most_common(top)]
    out += ["  incl%  function"]
    out += [f"  {100 * n / total:5.1f}  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(out)


_LINE_NUMBER = re.compile(r":\d+\)$")


def start_py_spy(py_spy: str, pid: int, output: Path | str) -> subprocess.Popen[bytes]:
    """``py-spy record`` of ``pid`` into ``output`` (collapsed stacks), until :func:`stop_py_spy`."""
    return subprocess.Popen(  # noqa: S603 - the py-spy the user named, fixed arguments
        [
            py_spy,
            *("record", "--pid", str(pid), "--rate", "250", "--format", "raw", "--nonblocking"),
            # Only samples holding the GIL: on-CPU Python time. Without it, time spent runnable but
            # waiting for a core or the network dominates the picture (see bench/README.md).
            "--gil",
            *("--output", str(output)),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stop_py_spy(
    proc: subprocess.Popen[bytes] | None,
    output: Path,
    label: str,
    *,
    quiet: bool,
    top: int = 25,
    empty: str | None = None,
    what: str = "",
) -> None:
    """Stop py-spy (it writes its output on SIGINT) and print the summary of its profile on stderr."""
    if proc is None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return
    if not output.exists():
        say(f"py-spy wrote no profile{what}: {err.decode(errors='replace')[-500:]}", quiet=quiet)
        return
    say(summarize_collapsed(output, label, top, empty), quiet=quiet)


# -- relate: embedded PostgreSQL, schema, daemon ----------------------------------


def start_postgres(pg: Any, *, quiet: bool, who: str = "relate: ") -> tuple[str, int]:
    """Start an ``EmbeddedPostgres`` durably (fsync on); returns (dsn, postmaster pid)."""
    say(f"{who}starting the embedded PostgreSQL (durable: fsync on)", quiet=quiet)
    dsn: str = pg.start(durable=True)
    return dsn, int((pg.data_dir / "postmaster.pid").read_text().split()[0])


async def migrate_db(
    dsn: str, settings: Sequence[str] = ("server_version", "fsync", "synchronous_commit")
) -> dict[str, str]:
    """Apply the schema; returns the PostgreSQL ``settings`` asked for (``SHOW name``)."""
    import asyncpg

    from relate.store import migrate

    conn = await asyncpg.connect(dsn)
    try:
        await migrate.migrate(conn)
        return {name: str(await conn.fetchval(f"SHOW {name}")) for name in settings}
    finally:
        await conn.close()


async def message_columns(conn: Any, changed: set[str]) -> list[str]:
    """The columns of ``messages`` in table order, but ``changed``: what a bulk copy of template rows takes
    as it is (the schema grows with every migration, so the list is read, not written down)."""
    rows = await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'messages' ORDER BY ordinal_position"
    )
    return [r["column_name"] for r in rows if r["column_name"] not in changed]


def require_durable(settings: dict[str, str]) -> None:
    if settings.get("fsync") != "on" or settings.get("synchronous_commit") != "on":
        raise BenchError(f"PostgreSQL is not durable: {settings}")


def spawn_daemon(module: str, config: Path, log_path: Path, *, append: bool = False) -> subprocess.Popen[bytes]:
    """``python -m module --config config`` with its output in ``log_path``, no RELATE_* variables inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELATE_")}
    with log_path.open("ab" if append else "wb") as log:
        return subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
            [sys.executable, "-m", module, "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the benchmark only; it stops the daemon itself
        )


def stop_daemon(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after 40 s, for a daemon still running."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def plain_imap_config(dsn: str, port: int, hostname: str) -> dict[str, Any]:
    """relate-imap's config for a benchmark: the plain port only, plaintext LOGIN allowed (TLS is not
    measured), logging at WARNING."""
    return {
        "hostname": hostname,
        "database": {"dsn": dsn},
        "imap": {
            "imap": {"listen": [f"{HOST}:{port}"]},
            "imaps": {"listen": []},
            "allow_plaintext_auth": True,
        },
        "logging": {"level": "WARNING"},
    }


def query_row(dsn: str, sql: str, *args: Any) -> tuple[Any, ...]:
    """The first row of one query, over a connection of its own (for figures and checks between loads)."""
    import asyncpg

    async def fetch() -> tuple[Any, ...]:
        conn = await asyncpg.connect(dsn)
        try:
            return tuple(await conn.fetchrow(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(fetch())


class RelateServer:
    """One relate daemon (``python -m module``) over an embedded, durable PostgreSQL, in ``workdir``.

    Subclasses set ``module`` and ``daemon_name`` and write the config; this holds the rest.
    """

    name = "relate"
    module = ""  # e.g. "relate.smtp"
    daemon_name = ""  # e.g. "relate-smtp": its log file and its messages

    def __init__(self, workdir: Path, quiet: bool) -> None:
        from relate.runtime.embedded_pg import EmbeddedPostgres

        self.workdir = workdir
        self.quiet = quiet
        self.pg = EmbeddedPostgres(workdir / "pgdata")
        self.dsn = ""
        self.port = 0
        self.daemon: subprocess.Popen[bytes] | None = None
        self.postmaster_pid = 0
        self.settings: dict[str, str] = {}
        self.log_path = workdir / f"{self.daemon_name}.log"

    def start_postgres(self) -> None:
        self.dsn, self.postmaster_pid = start_postgres(self.pg, quiet=self.quiet)

    def start_daemon(
        self, config: Path, wait: Callable[[subprocess.Popen[bytes]], None], *, append: bool = False
    ) -> None:
        """Start the daemon and ``wait(daemon)`` until it listens on ``self.port``."""
        say(f"relate: starting {self.daemon_name} on {HOST}:{self.port}", quiet=self.quiet)
        self.daemon = spawn_daemon(self.module, config, self.log_path, append=append)
        try:
            wait(self.daemon)
        except (RuntimeError, TimeoutError) as exc:
            raise BenchError(f"{self.daemon_name} did not start: {exc}\n{self.log_tail()}") from None

    def stop_daemon(self) -> None:
        stop_daemon(self.daemon)

    def count_messages(self) -> int:
        """Rows in ``messages``, over a connection of its own."""
        return int(query_row(self.dsn, "SELECT count(*) FROM messages")[0])

    def cpu(self) -> dict[str, float]:
        assert self.daemon is not None
        return {"daemon": tree_cpu(self.daemon.pid), "postgres": tree_cpu(self.postmaster_pid)}

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_path, lines)

    def stop(self) -> None:
        self.stop_daemon()
        self.pg.stop()


# -- main ---------------------------------------------------------------------------


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def make_workdir(prefix: str, parent: Path | None) -> Path:
    """Install the signal handlers and make the temp dir of a run.

    Ctrl-C and SIGTERM both end the run through the cleanup of :func:`run_benchmark` (also when
    started from a script that ignores SIGINT for background jobs). The temp dir is world-readable:
    PostgreSQL and the peers run as their own users and must reach their directories.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=parent)).resolve()
    workdir.chmod(0o755)
    return workdir


def stop_targets(targets: Sequence[Any], prog: str) -> None:
    """``stop()`` every target, last started first; a failure is reported and the others still stop."""
    for target in reversed(targets):
        try:
            target.stop()
        except Exception as exc:  # noqa: BLE001 - cleanup goes on with the next target whatever happens
            print(f"{prog}: stopping {target.name} failed: {exc}", file=sys.stderr)


def run_benchmark(
    prog: str,
    args: argparse.Namespace,
    workdir: Path,
    report: dict[str, Any],
    body: Callable[[], None],
    cleanup: Callable[[], None],
    render: Callable[[dict[str, Any]], str],
) -> int:
    """Run ``body`` (which fills ``report``), always ``cleanup`` and remove ``workdir`` (unless --keep),
    then print the table (unless --json-only) and the JSON line; returns the exit code.

    A :class:`BenchError` ``(message[, verification])`` fails the run with its message (and the
    verification details in the report); Ctrl-C or SIGTERM exits with 130.
    """
    quiet = args.json_only
    code = 1
    try:
        body()
        report["valid"] = True
        code = 0
    except BenchError as exc:
        message = str(exc.args[0]) if exc.args else ""
        report["error"] = message.splitlines()[0]
        if len(exc.args) > 1:
            report["verification"] = exc.args[1]
        print(f"{prog}: {message}", file=sys.stderr)
    except KeyboardInterrupt:
        report["error"] = "interrupted"
        print(f"{prog}: interrupted, cleaning up", file=sys.stderr)
        code = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cleanup()
        if args.keep:
            say(f"kept {workdir}", quiet=quiet)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if report["valid"] and not quiet:
        print(render(report))
    print(json_line(report))
    return code


def find_program(name: str) -> str | None:
    """A peer's command on PATH, or in /usr/sbin and /usr/bin where root's PATH may miss it."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/bin"):
        if Path(folder, name).exists():
            return f"{folder}/{name}"
    return None


def apt_install(what: str, packages: list[str], *, quiet: bool, preseed: str | None = None) -> None:
    """Install a peer's Debian packages (as peers.md says), or say in one line why that cannot be done."""
    if os.geteuid() != 0:
        raise BenchError(f"{what} is not installed and installing it needs root: apt-get install {' '.join(packages)}")
    apt = shutil.which("apt-get")
    if not apt:
        raise BenchError(f"{what} is not installed and there is no apt-get to install it with")
    say(f"{what}: not installed; apt-get update && apt-get install {' '.join(packages)}", quiet=quiet)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        run_cmd([apt, "update"], timeout=600, env=env)
        if preseed:
            run_cmd(["debconf-set-selections"], timeout=60, input_text=preseed)
        run_cmd([apt, "install", "-y", "--no-install-recommends", *packages], timeout=900, env=env)
    except subprocess.CalledProcessError as exc:
        raise BenchError(f"installing {what} failed: {exc}\n{exc.stdout}\n{exc.stderr}") from None
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"installing {what} timed out: {exc}") from None


def wait_for_http(url: str, timeout: float, alive: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until GET ``url`` answers 200; raise if the server exits or does not in time."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"the daemon exited with code {alive.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (a loopback http URL)
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"no answer from {url} within {timeout:.0f} s")


async def add_account(dsn: str, domain: str, user: str, name: str, scope: str) -> str:
    """Add ``domain`` and ``user`` (display ``name``) to the database; returns a new key with ``scope``."""
    import asyncpg

    from relate.services import accounts

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        await accounts.add_domain(pool, domain)
        await accounts.add_user(pool, user, name)
        key, _ = await accounts.create_key(pool, user, "bench", scope)
        return key
    finally:
        await pool.close()
