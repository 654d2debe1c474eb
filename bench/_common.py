"""Shared parts of the benchmarks: a lean SMTP load generator, CPU accounting, and output.

The load generator speaks just enough SMTP over raw asyncio streams (EHLO
once per connection, then MAIL, RCPT, DATA per message, no pipelining, the
way ``smtp-source`` talks), so that the client costs little of the two
cores it shares with the server under test. ``aiosmtplib`` is offered as an
alternative client to compare against.

CPU time is read from ``/proc/PID/stat``: ``utime + stime`` of every live
process of a tree plus ``cutime + cstime`` (what each one has reaped from
children that already exited), so short-lived workers (Postfix's smtpd,
PostgreSQL backends) are counted too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

CLK_TCK = os.sysconf("SC_CLK_TCK")
CLIENT_NAME = "bench-client.test"


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


# -- profiles -------------------------------------------------------------------


def summarize_collapsed(path: Path, label: str, top: int = 25) -> str:
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
        return f"profile of {label}: no samples"
    out = [f"profile of {label}: {total} samples in {path}", "  self%  function"]
    out += [f"  {100 * n / total:5.1f}  {f}" for f, n in own.most_common(top)]
    out += ["  incl%  function"]
    out += [f"  {100 * n / total:5.1f}  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(out)


_LINE_NUMBER = re.compile(r":\d+\)$")
