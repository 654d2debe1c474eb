"""SMTP memory benchmark: how much memory relate-smtp takes for large messages arriving at once.

Sets up a throwaway world in a temp dir (an embedded PostgreSQL 18, the
schema, domain ``bench.test`` with one user per client, and
``python -m relate.smtp --config …`` listening on a free loopback port as its
MX role, as ``bench/smtp_ingest.py`` does), sends one small warm-up message,
reads the daemon's resident set size (``VmRSS`` in ``/proc/PID/status``) as
the baseline, then has ``--clients`` concurrent clients each send one message
of ``--size-mb`` megabytes (10^6 bytes) to its own user, sampling ``VmRSS``
every ``--interval`` seconds until every client has its final reply. It prints:

- the peak RSS growth over the baseline (the figure the SMTP daemon's memory
  bound is about), the baseline, the peak, and ``VmHWM`` (the kernel's own
  high-water mark, which also catches a peak between two samples);
- every client's final reply (250, a 4xx such as 452 4.3.1 from the memory
  budget, or 552 when the message is over ``smtp.max_message_size``) and how
  long its transaction took;
- the wall time, and the verification: the database holds exactly one
  message per 250.

Each message is a multipart/mixed with a short text part and one base64
attachment (76-character lines, as mail clients write them), unique by its
Subject and Message-ID. ``--encoding 7bit`` declares the same attachment
lines as 7bit (nothing for the parser to decode), which separates what
storing costs from what parsing a base64 attachment costs. ``--no-declare-size`` leaves ``SIZE=`` out of MAIL
FROM, so the daemon learns the size only while the data arrives (the case of
a message over the limit sent without ``SIZE=``). The clients stream their
messages from one shared block, so the benchmark itself stays small.

Usage: ``.venv/bin/python bench/smtp_memory.py [--clients 20] [--size-mb 49]
[--no-declare-size] [--memory-budget BYTES] [--json-only]``; ``--help`` for the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    HOST,
    BenchError,
    RelateServer,
    fmt,
    free_port,
    fs_type,
    make_workdir,
    migrate_db,
    run_benchmark,
    say,
    stop_targets,
    table,
    wait_for_smtp,
)

from relate.config import DatabaseConfig
from relate.services import accounts
from relate.store import db

DOMAIN = "bench.test"
SENDER = "sender@client.example"
MB = 1_000_000
_LINE = 76  # base64 line length of MIME (RFC 2045 §6.8)
_BLOCK = 57 * 1024 * 16  # bytes of random data per repeated block: whole base64 lines, ~1.2 MB of text


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB."""
    values = {"VmRSS": 0, "VmHWM": 0}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


class Sampler:
    """VmRSS of one process every ``interval`` seconds, in a thread of its own (so a busy loop cannot skew it)."""

    def __init__(self, pid: int, interval: float) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic() - start, rss_kib(self.pid)[0]))
            except OSError:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def message_parts(index: int, size: int, encoding: str = "base64") -> tuple[bytes, bytes, int, bytes]:
    """(head, repeated body block, how many body bytes in all, tail) of a message of ``size`` bytes."""
    raw = os.urandom(_BLOCK)
    encoded = base64.b64encode(raw)
    block = b"\r\n".join(encoded[i : i + _LINE] for i in range(0, len(encoded), _LINE)) + b"\r\n"
    head = (
        f"From: Sender <{SENDER}>\r\nTo: user{index}@{DOMAIN}\r\nSubject: memory bench {index}\r\n"
        f"Message-ID: <memory-{index}-{os.getpid()}@client.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n'
        "A large attachment follows.\r\n--b\r\nContent-Type: application/octet-stream\r\n"
        f'Content-Transfer-Encoding: {encoding}\r\nContent-Disposition: attachment; filename="big.bin"\r\n\r\n'
    ).encode()
    tail = b"--b--\r\n"
    body = size - len(head) - len(tail)
    body -= body % (_LINE + 2)  # whole lines only
    return head, block, body, tail


@dataclass
class ClientResult:
    index: int
    reply: str = "-"
    seconds: float = 0.0
    data_seconds: float = 0.0  # from DATA's 354 to the final reply
    error: str | None = None


async def read_reply(reader: asyncio.StreamReader, wait: float) -> str:
    while True:
        line = (await asyncio.wait_for(reader.readline(), wait)).decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            raise ConnectionError("connection closed")
        if len(line) < 4 or line[3] != "-":
            return line


async def send_one(
    port: int, index: int, size: int, declare: bool, wait: float, out: ClientResult, encoding: str = "base64"
) -> None:
    """One connection, one message streamed from a repeated block, QUIT; the final reply goes in ``out``."""
    head, block, body, tail = message_parts(index, size, encoding)
    total = len(head) + body + len(tail)
    started = time.monotonic()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port, limit=1 << 20), wait)
    try:
        await read_reply(reader, wait)
        writer.write(b"EHLO bench-client.test\r\n")
        await read_reply(reader, wait)
        size_param = f" SIZE={total}" if declare else ""
        for command, expect in (
            (f"MAIL FROM:<{SENDER}>{size_param}", "250"),
            (f"RCPT TO:<user{index}@{DOMAIN}>", "250"),
            ("DATA", "354"),
        ):
            writer.write(command.encode() + b"\r\n")
            reply = await read_reply(reader, wait)
            if not reply.startswith(expect):
                out.reply = reply
                return
        data_started = time.monotonic()
        writer.write(head)
        left = body
        while left:
            piece = block[: min(left, len(block))]
            writer.write(piece)
            left -= len(piece)
            await writer.drain()
        writer.write(tail + b".\r\n")
        await writer.drain()
        out.reply = await read_reply(reader, wait)
        out.data_seconds = time.monotonic() - data_started
        writer.write(b"QUIT\r\n")
        await writer.drain()
    except (OSError, TimeoutError, ConnectionError) as exc:
        out.error = f"{type(exc).__name__}: {exc}"
    finally:
        out.seconds = time.monotonic() - started
        writer.close()


async def run_clients(port: int, args: argparse.Namespace) -> list[ClientResult]:
    results = [ClientResult(i) for i in range(1, args.clients + 1)]
    size = int(args.size_mb * MB)
    await asyncio.gather(
        *(send_one(port, r.index, size, args.declare_size, args.timeout, r, args.encoding) for r in results)
    )
    return results


async def warm_up(port: int, wait: float) -> None:
    out = ClientResult(0)
    await send_one(port, 1, 20_000, True, wait, out)
    if not out.reply.startswith("250"):
        raise BenchError(f"the warm-up message was not accepted: {out.reply} {out.error or ''}")


class Relate(RelateServer):
    """relate-smtp (MX role) over an embedded PostgreSQL, with one user per client."""

    module = "relate.smtp"
    daemon_name = "relate-smtp"

    def __init__(self, workdir: Path, clients: int, smtp: dict[str, Any], quiet: bool) -> None:
        super().__init__(workdir, quiet)
        self.clients = clients
        self.smtp = smtp

    def start(self) -> None:
        self.start_postgres()
        asyncio.run(self._prepare_db())
        self.port = free_port(HOST)
        config = self.workdir / "relate.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "hostname": f"mx.{DOMAIN}",
                    "database": {"dsn": self.dsn},
                    "smtp": {
                        "mx": {"listen": [f"{HOST}:{self.port}"]},
                        "submission": {"listen": []},
                        "submissions": {"listen": []},
                        "max_connections_per_client": self.clients + 10,
                        **self.smtp,
                    },
                    "logging": {"level": "INFO"},
                }
            )
        )
        self.start_daemon(config, lambda daemon: wait_for_smtp(HOST, self.port, 60, alive=daemon))

    async def _prepare_db(self) -> None:
        self.settings = await migrate_db(self.dsn)
        pool = await db.create_pool(DatabaseConfig(dsn=self.dsn, pool_min=1, pool_max=2))
        try:
            await accounts.add_domain(pool, DOMAIN)
            for n in range(1, self.clients + 1):
                await accounts.add_user(pool, f"user{n}@{DOMAIN}")
        finally:
            await pool.close()


@dataclass
class Run:
    results: list[ClientResult]
    baseline_kib: int
    peak_kib: int
    hwm_kib: int
    wall: float
    samples: list[tuple[float, int]] = field(default_factory=list)


def measure(relate: Relate, args: argparse.Namespace) -> Run:
    assert relate.daemon is not None
    pid = relate.daemon.pid
    baseline, _ = rss_kib(pid)
    say(
        f"relate: {args.clients} clients x {args.size_mb:g} MB, baseline RSS {baseline / 1024:.1f} MiB",
        quiet=args.json_only,
    )
    started = time.monotonic()
    with Sampler(pid, args.interval) as sampler:
        results = asyncio.run(run_clients(relate.port, args))
    wall = time.monotonic() - started
    _, hwm = rss_kib(pid)
    peak = max([kib for _, kib in sampler.samples] or [baseline])
    return Run(results, baseline, peak, hwm, wall, sampler.samples)


def report_of(run: Run, args: argparse.Namespace, stored: int) -> dict[str, Any]:
    replies: dict[str, int] = {}
    for r in run.results:
        key = r.reply[:9] if r.error is None else "error"
        replies[key] = replies.get(key, 0) + 1
    return {
        "rss_mib": {
            "baseline": round(run.baseline_kib / 1024, 1),
            "peak": round(run.peak_kib / 1024, 1),
            "peak_growth": round((run.peak_kib - run.baseline_kib) / 1024, 1),
            "hwm": round(run.hwm_kib / 1024, 1),
            "hwm_growth": round((run.hwm_kib - run.baseline_kib) / 1024, 1),
        },
        "replies": replies,
        "stored": stored,
        "wall_s": round(run.wall, 2),
        "clients": [
            {
                "client": r.index,
                "reply": r.reply,
                "seconds": round(r.seconds, 2),
                "data_seconds": round(r.data_seconds, 2),
                **({"error": r.error} if r.error else {}),
            }
            for r in run.results
        ],
        "samples": len(run.samples),
    }


def render(report: dict[str, Any]) -> str:
    params, figures = report["params"], report["relate"]
    rss = figures["rss_mib"]
    head = (
        f"SMTP memory: {params['clients']} concurrent clients x {params['size_mb']:g} MB over the MX port, "
        f"SIZE= {'declared' if params['declare_size'] else 'not declared'}, attachment {params['encoding']}, "
        f"smtp settings {params['smtp'] or 'default'}, "
        f"{params['cpus']} CPUs, work dir on {params['fs']}"
    )
    summary = table(
        ["figure", "relate-smtp"],
        [
            [f"RSS peak growth (MiB, sampled every {params['interval']:g} s)", rss["peak_growth"]],
            ["RSS baseline / peak (MiB)", f"{fmt(rss['baseline'])} / {fmt(rss['peak'])}"],
            ["VmHWM growth (MiB, kernel high-water mark)", rss["hwm_growth"]],
            ["final replies", ", ".join(f"{k}: {v}" for k, v in sorted(figures["replies"].items()))],
            ["messages stored (= 250 replies, checked)", figures["stored"]],
            ["wall time (s)", figures["wall_s"]],
        ],
    )
    clients = table(
        ["client", "final reply", "transaction s", "data s"],
        [[c["client"], c.get("error") or c["reply"][:60], c["seconds"], c["data_seconds"]] for c in figures["clients"]],
    )
    return f"{head}\n\n{summary}\n\n{clients}\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="smtp_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients, one message each (20)")
    parser.add_argument("--size-mb", type=float, default=49, help="message size in MB of 10^6 bytes (49)")
    parser.add_argument(
        "--no-declare-size", dest="declare_size", action="store_false", help="leave SIZE= out of MAIL FROM"
    )
    parser.add_argument(
        "--encoding", choices=["base64", "7bit"], default="base64", help="the attachment's transfer encoding"
    )
    parser.add_argument("--memory-budget", type=int, help="smtp.memory_budget in bytes (default: the daemon's)")
    parser.add_argument("--memory-wait", type=float, help="smtp.memory_wait in seconds (default: the daemon's)")
    parser.add_argument("--max-message-size", type=int, help="smtp.max_message_size in bytes (default: the daemon's)")
    parser.add_argument("--interval", type=float, default=0.05, help="RSS sampling interval in seconds (0.05)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds any one reply may take (900)")
    parser.add_argument("--workdir", type=Path, help="where the temp dir goes (default: the system's)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data) afterwards")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = make_workdir("relate-bench-memory-", args.workdir)
    smtp: dict[str, Any] = {}
    for key in ("memory_budget", "memory_wait", "max_message_size"):
        if getattr(args, key) is not None:
            smtp[key] = getattr(args, key)
    report: dict[str, Any] = {
        "benchmark": "smtp_memory",
        "params": {
            "clients": args.clients,
            "size_mb": args.size_mb,
            "declare_size": args.declare_size,
            "encoding": args.encoding,
            "smtp": smtp,
            "interval": args.interval,
            "cpus": os.cpu_count(),
            "fs": fs_type(workdir),
        },
        "valid": False,
    }
    targets: list[Relate] = []

    def body() -> None:
        relate = Relate(workdir, args.clients, smtp, args.json_only)
        targets.append(relate)
        relate.start()
        asyncio.run(warm_up(relate.port, args.timeout))
        time.sleep(0.5)
        before = relate.count_messages()
        run = measure(relate, args)
        stored = relate.count_messages() - before
        accepted = sum(1 for r in run.results if r.reply.startswith("250"))
        report["relate"] = report_of(run, args, stored)
        if stored != accepted:
            raise BenchError(f"{accepted} messages got 250 but {stored} were stored\n{relate.log_tail()}")

    return run_benchmark(
        "smtp_memory", args, workdir, report, body, lambda: stop_targets(targets, "smtp_memory"), render
    )


if __name__ == "__main__":
    sys.exit(main())
