"""Outage benchmark: PostgreSQL stopped for a while under load, and what every daemon makes of it.

Sets up a throwaway world in a temp dir (an embedded PostgreSQL 18 with fsync
on, the schema, domain ``bench.test`` with user ``rcpt@bench.test`` and a key
for IMAP and the API) and starts the system as deployed, each daemon a
process of its own from one config: ``relate-smtp`` (MX), ``relate-imap``,
``relate-pop3``, ``relate-api`` and ``relate-delivery``, logging at INFO.

Then, for each length in ``--outages`` (default 5, 30 and 120 seconds):
``--senders`` SMTP clients send small messages over the MX port without
pause, an IMAP client sits in IDLE on the INBOX and a WebSocket client on
``/hubs/email``; after a few seconds of this, ``pg_ctl stop -m fast``; the
outage; ``pg_ctl start``; then new messages until both the IDLE client (an
``EXISTS``) and the hub client (a ``NewEmail``) have heard of one sent after
the database came back. It prints, per outage:

- SMTP replies during the run by class: 250, 4xx, and anything else (5xx, a
  dropped connection, a timeout), which must be none;
- acknowledged messages missing from the database afterwards (must be 0);
- seconds from the database being back to the first IDLE notification and
  to the first hub event of new mail (the target is under 5 s);
- whether any daemon process restarted or exited (must not), and the
  ``change-feed-lost``/``-restored`` and ``Traceback`` lines in the logs.

Usage: ``.venv/bin/python bench/db_outage.py [--outages 5,30,120]
[--senders 4] [--json-only] [--keep]``. Takes about the sum of the outages
plus 20 s each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    HOST,
    BenchError,
    add_account,
    free_port,
    make_workdir,
    migrate_db,
    run_benchmark,
    say,
    spawn_daemon,
    stop_daemon,
    table,
    wait_for_http,
    wait_for_smtp,
)

from relate.testing.dns import ThreadedDnsServer

DOMAIN = "bench.test"
RCPT = f"rcpt@{DOMAIN}"
DAEMONS = {"smtp": "relate.smtp", "imap": "relate.imap", "pop3": "relate.pop3", "api": "relate.api"}
DAEMONS["delivery"] = "relate.queue"
RESUME_TARGET = 5.0


def message(subject: str) -> bytes:
    return (
        f"From: Carol <carol@remote.example>\r\nTo: {RCPT}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@remote.example>\r\n\r\nhello\r\n"
    ).encode()


async def send(port: int, subject: str) -> str:
    """One message over a fresh connection: "250", "4xx"-style codes, or what went wrong."""
    try:
        async with asyncio.timeout(60):
            reader, writer = await asyncio.open_connection(HOST, port)
            try:

                async def reply() -> str:
                    while True:
                        line = await reader.readline()
                        if not line:
                            raise ConnectionResetError("closed")
                        if line[3:4] != b"-":
                            return line[:3].decode()

                if (code := await reply()) != "220":
                    return code
                for command in (b"EHLO bench.test", b"MAIL FROM:<carol@remote.example>", f"RCPT TO:<{RCPT}>".encode()):
                    writer.write(command + b"\r\n")
                    if not (code := await reply()).startswith("2"):
                        return code
                writer.write(b"DATA\r\n")
                if (code := await reply()) != "354":
                    return code
                writer.write(message(subject) + b".\r\n")
                code = await reply()
                writer.write(b"QUIT\r\n")
                return code
            finally:
                writer.close()
    except (OSError, TimeoutError) as exc:
        return type(exc).__name__


class Idle:
    def __init__(self) -> None:
        self.events: list[float] = []
        self.ended: str | None = None

    async def run(self, port: int, key: str) -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            await reader.readline()
            for command in (f"a LOGIN {RCPT} {key}", "b SELECT INBOX", "c IDLE"):
                writer.write(command.encode() + b"\r\n")
                while True:
                    line = await reader.readline()
                    if not line or line[:1] in (b"a", b"b", b"+"):
                        break
            while line := await reader.readline():
                if line.endswith(b"EXISTS\r\n"):
                    self.events.append(time.monotonic())
                elif line.startswith((b"c ", b"* BYE")):
                    self.ended = line.decode(errors="replace").strip()
                    return
            self.ended = "connection closed"
        finally:
            writer.close()


class Hub:
    def __init__(self) -> None:
        self.events: list[float] = []
        self.ended: str | None = None

    async def run(self, port: int, key: str) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(
                f"http://{HOST}:{port}/hubs/email", headers={"Authorization": f"Bearer {key}"}, heartbeat=10
            ) as ws,
        ):
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data).get("type") == "NewEmail":
                    self.events.append(time.monotonic())
            self.ended = f"closed {ws.close_code}"


async def stored(dsn: str) -> set[str]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return {r["subject"] for r in await conn.fetch("SELECT subject FROM messages")}
    finally:
        await conn.close()


async def one_outage(world: World, seconds: float, senders: int) -> dict[str, Any]:
    idle, hub = Idle(), Hub()
    watchers = [asyncio.create_task(idle.run(world.ports["imap"], world.key))]
    watchers.append(asyncio.create_task(hub.run(world.ports["api"], world.key)))
    results: list[tuple[str, str]] = []
    sending = True

    async def sender() -> None:
        while sending:
            subject = f"load {uuid.uuid4().hex}"
            results.append((subject, await send(world.ports["smtp"], subject)))
            await asyncio.sleep(0.02)

    tasks = [asyncio.create_task(sender()) for _ in range(senders)]
    try:
        await asyncio.sleep(3)
        await asyncio.to_thread(world.pg.stop)
        say(f"outage {seconds:g}s: PostgreSQL stopped")
        await asyncio.sleep(seconds)
        await asyncio.to_thread(world.pg.start, durable=True)
        up = time.monotonic()
        say(f"outage {seconds:g}s: PostgreSQL started again")
        while not ([t for t in idle.events if t > up] and [t for t in hub.events if t > up]):
            if time.monotonic() - up > 120:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)
    finally:
        sending = False
        await asyncio.gather(*tasks)
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
    counts = Counter("250" if code == "250" else "4xx" if code[:1] == "4" else "other" for _, code in results)
    acknowledged = {subject for subject, code in results if code == "250"}
    lost = len(acknowledged - await stored(world.dsn))
    first_idle = min((t for t in idle.events if t > up), default=None)
    first_hub = min((t for t in hub.events if t > up), default=None)
    return {
        "outage_seconds": seconds,
        "replies": dict(counts),
        "other_replies": sorted({code for _, code in results if code != "250" and code[:1] != "4"}),
        "acknowledged": len(acknowledged),
        "lost": lost,
        "idle_resume_seconds": None if first_idle is None else round(first_idle - up, 2),
        "hub_resume_seconds": None if first_hub is None else round(first_hub - up, 2),
        "idle_ended": idle.ended,
        "restarted": world.restarted(),
    }


class World:
    def __init__(self, workdir: Path) -> None:
        from relate.runtime.embedded_pg import EmbeddedPostgres

        self.workdir = workdir
        self.pg = EmbeddedPostgres(workdir / "pgdata")
        self.dsn = ""
        self.key = ""
        self.ports = {name: free_port() for name in ("smtp", "imap", "pop3", "api")}
        self.procs: dict[str, Any] = {}
        self.pids: dict[str, int] = {}
        self.dns = ThreadedDnsServer()

    def start(self) -> None:
        say("starting the embedded PostgreSQL (durable) and the schema")
        self.dsn = self.pg.start(durable=True)
        asyncio.run(migrate_db(self.dsn))
        self.key = asyncio.run(add_account(self.dsn, DOMAIN, RCPT, "Recipient", "imap,app"))
        off: dict[str, Any] = {"listen": []}
        config = {
            "hostname": "mail.bench.test",
            "database": {"dsn": self.dsn},
            "logging": {"level": "INFO"},
            "internal": {"api_socket": str(self.workdir / "api.sock"), "heartbeat_seconds": 5},
            "smtp": {
                "mx": {"listen": [f"{HOST}:{self.ports['smtp']}"]},
                "submission": off,
                "submissions": off,
                "max_connections_per_client": 100,
            },
            "imap": {"imap": {"listen": [f"{HOST}:{self.ports['imap']}"]}, "imaps": off, "allow_plaintext_auth": True},
            "pop3": {"pop3": {"listen": [f"{HOST}:{self.ports['pop3']}"]}, "pop3s": off},
            "api": {"listen": [f"{HOST}:{self.ports['api']}"]},
            # Loopback DNS that knows no name: the SMTP daemon's SPF/DKIM/DMARC lookups get a quick NXDOMAIN.
            "delivery": {"dns_servers": [self.dns.start()]},
        }
        path = self.workdir / "relate.yaml"
        path.write_text(yaml.safe_dump(config))
        for name, module in DAEMONS.items():
            self.procs[name] = spawn_daemon(module, path, self.workdir / f"{name}.log")
        wait_for_smtp(HOST, self.ports["smtp"], 60, self.procs["smtp"])
        wait_for_http(f"http://{HOST}:{self.ports['api']}/healthz", 60, self.procs["api"])
        time.sleep(1)
        self.pids = {name: proc.pid for name, proc in self.procs.items()}
        gone = [name for name, proc in self.procs.items() if proc.poll() is not None]
        if gone:
            raise BenchError(f"daemons exited at start: {gone}")

    def restarted(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.poll() is not None]

    def log_lines(self, needle: str) -> int:
        return sum((self.workdir / f"{name}.log").read_text(errors="replace").count(needle) for name in DAEMONS)

    def stop(self) -> None:
        for proc in self.procs.values():
            stop_daemon(proc)
        self.pg.stop()
        self.dns.stop()


def render(report: dict[str, Any]) -> str:
    rows = [
        [
            f"{r['outage_seconds']:g} s",
            r["replies"].get("250", 0),
            r["replies"].get("4xx", 0),
            r["replies"].get("other", 0),
            r["lost"],
            r["idle_resume_seconds"],
            r["hub_resume_seconds"],
            ", ".join(r["restarted"]) or "none",
        ]
        for r in report["outages"]
    ]
    head = ["outage", "250", "4xx", "other", "acked lost", "IDLE back (s)", "hub back (s)", "daemons died"]
    logs = report["logs"]
    return (
        table(head, rows)
        + f"\nlog lines: change-feed-lost {logs['change-feed-lost']}, change-feed-restored "
        + f"{logs['change-feed-restored']}, Traceback {logs['Traceback']}, loop-blocked {logs['loop-blocked']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outages", default="5,30,120", help="outage lengths in seconds, comma-separated")
    parser.add_argument("--senders", type=int, default=4, help="concurrent SMTP clients")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    args = parser.parse_args()
    workdir = make_workdir("relate-db-outage-", None)
    world = World(workdir)
    report: dict[str, Any] = {"benchmark": "db_outage", "valid": False, "outages": []}

    def body() -> None:
        world.start()
        for seconds in [float(s) for s in args.outages.split(",") if s.strip()]:
            report["outages"].append(asyncio.run(one_outage(world, seconds, args.senders)))
        report["logs"] = {n: world.log_lines(n) for n in ("change-feed-lost", "change-feed-restored", "Traceback")}
        report["logs"]["loop-blocked"] = world.log_lines("loop-blocked")
        bad = [
            r
            for r in report["outages"]
            if r["lost"]
            or r["replies"].get("other")
            or r["restarted"]
            or r["idle_ended"]
            or r["idle_resume_seconds"] is None
            or r["hub_resume_seconds"] is None
        ]
        report["within_target"] = all(
            (r["idle_resume_seconds"] or 99) < RESUME_TARGET and (r["hub_resume_seconds"] or 99) < RESUME_TARGET
            for r in report["outages"]
        )
        if bad:
            raise BenchError("the system did not ride out an outage: " + json.dumps(bad))

    return run_benchmark("db_outage", args, workdir, report, body, world.stop, render)


if __name__ == "__main__":
    sys.exit(main())
