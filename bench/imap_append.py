"""Memory of relate-imap while it stores big APPENDs: peak RSS growth over the idle daemon.

What it does: in a temp dir, an embedded durable PostgreSQL with the schema,
one user with an IMAP key, and ``python -m relate.imap`` on a free loopback
port (plain text, ``allow_plaintext_auth``, logging WARNING). It reads the
daemon's resident set (``VmRSS``) once it is idle, then ``--concurrent``
clients each APPEND one message of ``--size`` bytes (synchronizing literal,
sent in 64 KiB writes) at the same time, waits for every tagged answer,
checks that the database holds exactly the messages answered OK, byte for
byte, and reads the daemon's peak resident set (``VmHWM``). It prints the
growth (peak minus idle) and that growth per message byte; a fresh daemon
serves each run, so the peak is this workload's.

    .venv/bin/python bench/imap_append.py                     # one 49 MB APPEND
    .venv/bin/python bench/imap_append.py --concurrent 4      # four at once (imap.memory_budget applies)
    PYTHONPATH=/path/to/other/tree/daemons .venv/bin/python bench/imap_append.py   # another version's daemon
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from _common import (
    HOST,
    BenchError,
    RelateServer,
    free_port,
    make_workdir,
    migrate_db,
    plain_imap_config,
    require_durable,
    run_benchmark,
    say,
    table,
)

DOMAIN = "bench.test"
USER = f"appender@{DOMAIN}"
CHUNK = 64 * 1024


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {field} in /proc/{pid}/status")


def make_message(index: int, size: int) -> bytes:
    head = (
        f"From: Sender <sender@{DOMAIN}>\r\nTo: {USER}\r\nSubject: big append {index}\r\n"
        f"Message-ID: <append-{index}-{time.time_ns()}@{DOMAIN}>\r\nDate: Tue, 03 Nov 2026 09:15:00 +0000\r\n\r\n"
    ).encode()
    line = b"x" * 998 + b"\r\n"
    body = line * ((size - len(head)) // len(line))
    return head + body + b"y" * (size - len(head) - len(body))


class Relate(RelateServer):
    module = "relate.imap"
    daemon_name = "relate-imap"

    def __init__(self, workdir: Path, quiet: bool) -> None:
        super().__init__(workdir, quiet)
        self.key = ""

    def start(self) -> None:
        self.start_postgres()
        asyncio.run(self._prepare())
        require_durable(self.settings)
        self.port = free_port(HOST)
        config = plain_imap_config(self.dsn, self.port, f"imap.{DOMAIN}")
        (self.workdir / "relate.yaml").write_text(yaml.safe_dump(config))
        self.start_daemon(self.workdir / "relate.yaml", lambda daemon: asyncio.run(_wait_greeting(self.port, daemon)))

    async def _prepare(self) -> None:
        from relate.config import DatabaseConfig
        from relate.services import accounts
        from relate.store import db

        self.settings = await migrate_db(self.dsn)
        pool = await db.create_pool(DatabaseConfig(dsn=self.dsn, pool_min=1, pool_max=2))
        try:
            await accounts.add_domain(pool, DOMAIN)
            await accounts.add_user(pool, USER)
            self.key, _ = await accounts.create_key(pool, USER, "bench", "imap", rounds=4)
        finally:
            await pool.close()

    async def stored_digests(self) -> list[bytes]:
        import asyncpg

        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch("SELECT b.hash FROM messages m JOIN blobs b ON b.hash = m.blob_hash ORDER BY m.id")
            return [bytes(r["hash"]) for r in rows]
        finally:
            await conn.close()


async def _wait_greeting(port: int, daemon: Any, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError(f"the daemon exited with code {daemon.returncode}")
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            line = await asyncio.wait_for(reader.readline(), 5)
            writer.close()
            if line.startswith(b"* OK"):
                return
        except OSError:
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{HOST}:{port} did not greet within {within:.0f}s")


async def _append(port: int, key: str, message: bytes) -> str:
    reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
    try:
        await reader.readline()
        writer.write(f"a LOGIN {USER} {key}\r\n".encode())
        if not (await reader.readline()).startswith(b"a OK"):
            raise BenchError("LOGIN failed")
        writer.write(b"b APPEND INBOX {%d}\r\n" % len(message))
        answer = await reader.readline()
        if not answer.startswith(b"+"):
            return answer.decode(errors="replace").strip()
        view = memoryview(message)
        for start in range(0, len(message), CHUNK):
            writer.write(view[start : start + CHUNK])
            await writer.drain()
        writer.write(b"\r\n")
        while not (line := await asyncio.wait_for(reader.readline(), 600)).startswith(b"b "):
            pass
        return line.decode(errors="replace").strip()
    finally:
        writer.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=49 * 1000 * 1000, help="message size in bytes (default 49 MB)")
    parser.add_argument("--concurrent", type=int, default=1, help="APPENDs at once, one per client (default 1)")
    parser.add_argument("--workdir", type=Path, help="parent of the temp dir (default: $TMPDIR or /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data) for inspection")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    return parser.parse_args(argv)


def render(report: dict[str, Any]) -> str:
    r = report["relate"]
    return table(
        ["size MB", "at once", "stored", "idle RSS MB", "peak RSS MB", "growth MB", "growth / bytes sent", "seconds"],
        [
            [
                report["params"]["size"] / 1e6,
                report["params"]["concurrent"],
                r["stored"],
                r["idle_rss_kib"] / 1024,
                r["peak_rss_kib"] / 1024,
                r["growth_kib"] / 1024,
                r["growth_per_byte"],
                r["seconds"],
            ]
        ],
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = make_workdir("relate-bench-imap-append-", args.workdir)
    report: dict[str, Any] = {
        "benchmark": "imap_append",
        "params": {"size": args.size, "concurrent": args.concurrent},
        "valid": False,
    }
    relate = Relate(workdir, args.json_only)

    def body() -> None:
        relate.start()
        assert relate.daemon is not None
        pid = relate.daemon.pid
        time.sleep(1.0)
        idle = _status_kib(pid, "VmRSS")
        messages = [make_message(i, args.size) for i in range(args.concurrent)]
        say(f"relate: {args.concurrent} APPEND of {args.size} bytes, idle at {idle // 1024} MB", quiet=args.json_only)

        async def run() -> list[str]:
            return await asyncio.gather(*(_append(relate.port, relate.key, m) for m in messages))

        started = time.monotonic()
        answers = asyncio.run(run())
        seconds = time.monotonic() - started
        peak = _status_kib(pid, "VmHWM")
        ok = [m for m, a in zip(messages, answers, strict=True) if a.startswith("b OK")]
        stored = asyncio.run(relate.stored_digests())
        if sorted(stored) != sorted(hashlib.sha256(m).digest() for m in ok):
            raise BenchError(f"the database holds {len(stored)} messages, {len(ok)} were answered OK", answers)
        sent = args.size * args.concurrent
        report["relate"] = {
            "answers": sorted({a.split("]")[0] + "]" if "[" in a else a for a in answers}),
            "stored": len(stored),
            "idle_rss_kib": idle,
            "peak_rss_kib": peak,
            "growth_kib": peak - idle,
            "growth_per_byte": round((peak - idle) * 1024 / sent, 2),
            "seconds": round(seconds, 2),
        }

    return run_benchmark("imap_append bench", args, workdir, report, body, relate.stop, render)


if __name__ == "__main__":
    sys.exit(main())
