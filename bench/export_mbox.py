"""MBOX export benchmark: the memory of relate-api (and of ``relatectl user export``) exporting a 1 GB account.

Sets up the world of bench/api.py in a temp dir (an embedded PostgreSQL 18 with
fsync on, the schema, user ``big@bench.test`` with an ``app`` key, and
``python -m relate.api`` as its own process on a free loopback port, the
shape it is deployed in), fills the account with ``--size-mb`` of mail, then:

- REST: ``GET /api/export/mbox`` (everything) read by an aiohttp client that
  counts the entries and bytes and keeps none; relate-api's RSS sampled from
  /proc every 50 ms (before, peak during, after) beside its kernel high-water
  mark (VmHWM), wall time and MB/s;
- the CLI: ``relatectl user export big@bench.test -o FILE`` as a process,
  its peak RSS (``ru_maxrss`` from wait4), wall time and the file's size;
- both checked: every message exported once (entries counted against the
  database's message count; the CLI's file and the REST body the same size).

How the account is filled (fast, and still through the store): ``--distinct``
different messages (default 400; each a short text plus a random attachment
of 16 KiB to 256 KiB, and every 100th one of 8 MiB) go through
``messages.ingest`` into INBOX, Archive and Sent in turn, as delivered mail
does; then copies of those rows, sharing their template's blob as
content-addressed storage does for one message delivered many times, until
the account's messages add up to ``--size-mb``. Sharing blobs changes what
PostgreSQL reads from disk (it is cached), not what the API holds: every
message's bytes still travel through relate-api one by one.

There is no peer column: no mail server on this machine exports MBOX over
HTTP (doveadm's export is a local tool writing files, and this figure is
about the API process). The figure to compare with is the idle daemon's own
RSS, measured in the same run.

Usage: ``.venv/bin/python bench/export_mbox.py [--size-mb 1024] [--json-only]``; ``--help`` for the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BenchError, fs_type, make_workdir, message_columns, run_benchmark, say, stop_targets, table

from api import RelateApi

DOMAIN = "bench.test"
USER = f"big@{DOMAIN}"
FOLDERS = ("INBOX", "Archive", "Sent")


def template(i: int, rng: random.Random) -> bytes:
    """Distinct message ``i``: a short text and a random attachment (8 MiB for every 100th)."""
    size = 8 * 1024 * 1024 if i % 100 == 99 else rng.randint(16 * 1024, 256 * 1024)
    blob = rng.randbytes(size * 3 // 4)
    encoded = base64.encodebytes(blob).replace(b"\n", b"\r\n")
    head = (
        f"From: Sender {i % 37} <sender{i % 37}@remote.example>\r\n"
        f"To: Big <{USER}>\r\n"
        f"Subject: Export bench {i}\r\n"
        "Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
        f"Message-ID: <export-bench-{i}@remote.example>\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"Message {i}.\r\nFrom here a line that mboxrd must escape.\r\n\r\n"
        '--b\r\nContent-Type: application/octet-stream; name="data.bin"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode()
    return head + encoded + b"--b--\r\n"


class ExportApi(RelateApi):
    """bench/api.py's relate-api set-up (its config, account and key), filled with big mail instead."""

    def __init__(self, workdir: Path, args: argparse.Namespace) -> None:
        super().__init__(workdir, args)
        self.config = workdir / "relate.yaml"  # what RelateApi.start writes

    async def _fill(self, conn: asyncpg.Connection) -> None:
        from relate.store import messages
        from relate.store.db import _init_connection

        await _init_connection(conn)
        rng = random.Random(17)  # noqa: S311 - filler bytes, not secrets
        boxes = [
            await conn.fetchval(
                "SELECT b.id FROM mailboxes b JOIN users u ON u.id = b.user_id WHERE u.address = $1 AND b.name = $2",
                USER,
                name,
            )
            for name in FOLDERS
        ]
        say(f"relate: ingesting {self.args.distinct} distinct messages", quiet=self.quiet)
        t0 = time.perf_counter()
        start = datetime(2025, 1, 1, tzinfo=UTC)
        for first in range(0, self.args.distinct, 50):
            async with conn.transaction():
                for i in range(first, min(first + 50, self.args.distinct)):
                    raw = template(i, rng)
                    await messages.ingest(conn, raw, [boxes[i % 3]], internal_date=start + timedelta(minutes=i))
        ingest_s = time.perf_counter() - t0
        target = self.args.size_mb * 1024 * 1024
        have = int(await conn.fetchval("SELECT sum(size) FROM messages"))
        say(f"relate: copying rows up to {self.args.size_mb} MB (INSERT ... SELECT, blobs shared)", quiet=self.quiet)
        t0 = time.perf_counter()
        await self._copy_rows(conn, boxes, target - have)
        copy_s = time.perf_counter() - t0
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CHECKPOINT")
        count, size = await conn.fetchrow("SELECT count(*), sum(size) FROM messages")
        self.load = {
            "messages": count,
            "bytes": int(size),
            "distinct": self.args.distinct,
            "ingest_s": round(ingest_s, 2),
            "copy_s": round(copy_s, 2),
            "how": f"{self.args.distinct} via messages.ingest into {', '.join(FOLDERS)}, the rest copies of those "
            "rows sharing their blobs",
        }

    async def _copy_rows(self, conn: asyncpg.Connection, boxes: list[int], missing: int) -> None:
        """Copy the template rows round after round (new UIDs after each box's last) until ``missing`` is met."""
        changed = {"id", "uid", "modseq", "created_at"}
        columns = await message_columns(conn, changed)
        listed = ", ".join(f'"{c}"' for c in columns)
        template_size = int(await conn.fetchval("SELECT sum(size) FROM messages"))
        rounds = max(0, -(-missing // template_size))
        # Box b's templates have UIDs 1..n[b]; round k's copies get UIDs k*n[b]+1..(k+1)*n[b].
        n = [int(await conn.fetchval("SELECT max(uid) FROM messages WHERE mailbox_id = $1", box)) for box in boxes]
        for k in range(1, rounds + 1):
            async with conn.transaction():
                for box, last in zip(boxes, n, strict=True):
                    await conn.execute(
                        f"""INSERT INTO messages (uid, modseq, {listed})
                            SELECT uid + $2::bigint * $3::bigint, modseq + $2::bigint * $3::bigint, {listed}
                              FROM messages WHERE mailbox_id = $1 AND uid <= $3""",
                        box,
                        k,
                        last,
                    )
            say(f"relate: copy round {k}/{rounds}", quiet=self.quiet)
        for box in boxes:
            await conn.execute(
                """UPDATE mailboxes SET uidnext = (SELECT max(uid) + 1 FROM messages WHERE mailbox_id = $1),
                                        highestmodseq = (SELECT max(modseq) FROM messages WHERE mailbox_id = $1)
                    WHERE id = $1""",
                box,
            )


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {field} for pid {pid}")


async def rest_export(target: ExportApi) -> dict[str, Any]:
    assert target.daemon is not None
    pid = target.daemon.pid
    before = rss_kib(pid)
    peak = before
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_kib(pid))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    entries = total = 0
    tail = b""
    t0 = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        headers = {"Authorization": f"Bearer {target.key}"}
        async with session.get(target.url + "/api/export/mbox", headers=headers) as resp:
            if resp.status != 200:
                raise BenchError(f"export: {resp.status} {(await resp.read())[:200]!r}")
            async for chunk in resp.content.iter_chunked(1024 * 1024):
                data = tail + chunk
                entries += data.count(b"\n\nFrom ")
                tail = data[-6:]
                total += len(chunk)
    wall = time.perf_counter() - t0
    stop.set()
    await sampler
    return {
        "entries": entries + 1 if total else 0,  # the first entry has no blank line before it
        "bytes": total,
        "wall_s": round(wall, 2),
        "mb_per_s": round(total / wall / 1e6, 1),
        "rss_before_mib": round(before / 1024, 1),
        "rss_peak_mib": round(peak / 1024, 1),
        "rss_growth_mib": round((peak - before) / 1024, 1),
        "vm_hwm_mib": round(rss_kib(pid, "VmHWM") / 1024, 1),
    }


def cli_export(target: ExportApi) -> dict[str, Any]:
    out = target.workdir / "export.mbox"
    relatectl = Path(sys.executable).with_name("relatectl")
    t0 = time.perf_counter()
    proc = subprocess.Popen(  # noqa: S603 - this venv's relatectl, fixed arguments
        [str(relatectl), "--config", str(target.config), "user", "export", USER, "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ | {"RELATE_LOGGING__LEVEL": "WARNING"},
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise BenchError(f"relatectl user export failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    size = out.stat().st_size
    out.unlink()
    return {
        "bytes": size,
        "wall_s": round(wall, 2),
        "mb_per_s": round(size / wall / 1e6, 1),
        "max_rss_mib": round(usage.ru_maxrss / 1024, 1),
    }


def render(report: dict[str, Any]) -> str:
    p, r = report["params"], report["relate"]
    rest, cli = r["rest"], r["cli"]
    lines = [
        f"MBOX export of a {r['load']['bytes'] / 2**20:,.0f} MiB account, {r['load']['messages']:,} messages "
        f"({r['load']['how']}); client on the same machine; {p['cpus']} CPUs shared; work dir on {p['fs']}",
        f"relate: {r['setup']}",
        "",
        table(
            ["", "relate-api (GET /api/export/mbox)", "relatectl user export"],
            [
                ["exported MiB", round(rest["bytes"] / 2**20, 1), round(cli["bytes"] / 2**20, 1)],
                ["wall s", rest["wall_s"], cli["wall_s"]],
                ["MB/s", rest["mb_per_s"], cli["mb_per_s"]],
                ["RSS before (MiB)", rest["rss_before_mib"], "-"],
                ["RSS peak (MiB)", rest["rss_peak_mib"], cli["max_rss_mib"]],
                ["RSS growth (MiB)", rest["rss_growth_mib"], "-"],
            ],
        ),
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size-mb", type=int, default=1024, help="the account's size in MiB (default 1024)")
    parser.add_argument("--distinct", type=int, default=400, help="distinct messages ingested (default 400)")
    parser.add_argument("--pool-max", type=int, default=10, help="the daemon's database.pool_max (default 10)")
    parser.add_argument("--workdir", type=Path, help="parent of the temp dir (default: $TMPDIR or /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data) for inspection")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    if min(args.size_mb, args.distinct) < 1:
        parser.error("sizes and counts must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = make_workdir("relate-bench-export-", args.workdir)
    report: dict[str, Any] = {
        "benchmark": "export_mbox",
        "params": {"size_mb": args.size_mb, "distinct": args.distinct, "cpus": os.cpu_count(), "fs": fs_type(workdir)},
        "valid": False,
    }
    targets: list[ExportApi] = []

    def body() -> None:
        target = ExportApi(workdir, args)
        targets.append(target)
        target.start()
        figures: dict[str, Any] = {"setup": target.description, "load": target.load}
        say("relate: GET /api/export/mbox", quiet=target.quiet)
        figures["rest"] = asyncio.run(rest_export(target))
        say("relate: relatectl user export", quiet=target.quiet)
        figures["cli"] = cli_export(target)
        report["relate"] = figures
        messages = target.load["messages"]
        if figures["rest"]["entries"] != messages:
            raise BenchError(f"REST export: {figures['rest']['entries']} entries for {messages} messages")
        if figures["cli"]["bytes"] != figures["rest"]["bytes"]:
            raise BenchError(f"the CLI wrote {figures['cli']['bytes']} bytes, REST sent {figures['rest']['bytes']}")

    return run_benchmark("export_mbox", args, workdir, report, body, lambda: stop_targets(targets, "export"), render)


if __name__ == "__main__":
    sys.exit(main())
