"""Moving in: `relatectl import imap` of a 10,000-message Dovecot account, beside mbsync copying the same.

What it does, in a temp dir:

1. A throwaway Dovecot 2.3 (relate.testing.dovecot: Debian's dovecot-imapd,
   IMAP on a free loopback port, Maildir, delimiter ``/``, a \\Sent folder)
   filled over IMAP by four APPEND clients with ``--messages`` messages
   (default 10,000) in INBOX, Archive/2025, Work and Sent: plain text of 1 to
   8 KB, every tenth multipart with a 20 KB attachment, one in 500 of 300 KB;
   random flags and keywords, a distinct INTERNALDATE each.
2. An embedded PostgreSQL with ``durable=True`` (fsync and synchronous_commit
   on, checked), the schema, and user importer@bench.test.
3. ``python -m relatectl import imap --plain ... --json`` as the admin runs
   it (a process of its own; nothing else of Relate Mail runs): wall time,
   messages/s, MB/s, CPU of relatectl, PostgreSQL and Dovecot per message.
4. Verification: every folder's messages on Dovecot (SHA-256 of BODY[], and
   FLAGS) must equal the stored ones (blob hash, flags) as multisets, folder
   for folder; then a second run must import nothing (its time is shown).
5. The peer, in the same run: mbsync (Debian's isync, the yardstick of
   shared/peers.md) pulling the same account into a Maildir (``Sync Pull``,
   ``CopyArrivalDate yes``, its default fsync), checked to have written as
   many files.

The machine is shared: the load average and the CPU others used during each
run are reported beside the figures.

    .venv/bin/python bench/import.py                    # 10,000 messages, relate and mbsync
    .venv/bin/python bench/import.py --messages 1000    # a quick check
    .venv/bin/python bench/import.py --no-peer          # relate only
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import imaplib
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from _common import (
    BenchError,
    add_account,
    find_program,
    machine_cpu,
    make_workdir,
    migrate_db,
    query_row,
    ratio,
    require_durable,
    run_benchmark,
    say,
    start_postgres,
    table,
    tree_cpu,
)

from relate.runtime.embedded_pg import EmbeddedPostgres
from relate.testing.dovecot import PASSWORD, ThrowawayDovecot, Unavailable

DOMAIN = "bench.test"
USER = f"importer@{DOMAIN}"
SOURCE = "olduser"
SHARES = {"INBOX": 0.6, "Archive/2025": 0.2, "Work": 0.1, "Sent": 0.1}
KEYWORDS = ["$Forwarded", "$Label1", "Junk", "NonJunk"]
CLIENTS = 4


def make_message(rng: random.Random, n: int) -> bytes:
    words = ["alpha", "bravo", "charlie", "delta", "echo", "Grüße", "日本語", "meeting", "invoice", "report"]
    size = 300_000 if n % 500 == 7 else rng.randint(1000, 8000)
    lines, length = [], 0
    while length < size:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(4, 12)))
        lines.append(line)
        length += len(line) + 2
    when = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=37 * n)
    head = (
        f"Date: {when.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\nFrom: Sender {n % 97} <s{n % 97}@example.org>\r\n"
        f"To: <{USER}>\r\nSubject: Message {n} about {rng.choice(words)}\r\n"
        f"Message-ID: <bench-{n}@example.org>\r\nMIME-Version: 1.0\r\n"
    )
    text = "\r\n".join(lines) + "\r\n"
    if n % 10 == 3:
        blob = base64.encodebytes(rng.randbytes(20_000)).decode().replace("\n", "\r\n")
        body = (
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n'
            f"Content-Transfer-Encoding: 8bit\r\n\r\n{text}--b\r\nContent-Type: application/pdf; name=r{n}.pdf\r\n"
            f"Content-Transfer-Encoding: base64\r\n\r\n{blob}--b--\r\n"
        )
    else:
        body = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + text
    return (head + body).encode()


def plan(messages: int) -> list[tuple[str, int]]:
    """(folder, message number) for every message, folders by their share."""
    out: list[tuple[str, int]] = []
    n = 0
    for i, (folder, share) in enumerate(SHARES.items()):
        count = messages - n if i == len(SHARES) - 1 else int(messages * share)
        out += [(folder, n + k) for k in range(count)]
        n += count
    return out


def fill(dovecot: ThrowawayDovecot, messages: int) -> float:
    """APPEND the account's messages with CLIENTS connections; returns the seconds it took."""
    work = plan(messages)
    client = imaplib.IMAP4("127.0.0.1", dovecot.port)
    client.login(SOURCE, PASSWORD)
    for folder in SHARES:
        client.create(f'"{folder}"')
    client.logout()
    errors: list[str] = []

    def worker(part: list[tuple[str, int]]) -> None:
        c = imaplib.IMAP4("127.0.0.1", dovecot.port)
        c.login(SOURCE, PASSWORD)
        try:
            for folder, n in part:
                rng = random.Random(n)  # noqa: S311 - seeded test data, not cryptography
                flags = [f for f, p in (("\\Seen", 0.7), ("\\Answered", 0.2), ("\\Flagged", 0.1)) if rng.random() < p]
                flags += [k for k in KEYWORDS if rng.random() < 0.1]
                when = datetime(2024, 1, 1, 9, tzinfo=UTC) + timedelta(minutes=37 * n, seconds=n % 60)
                typ, data = c.append(
                    f'"{folder}"', "(" + " ".join(flags) + ")", imaplib.Time2Internaldate(when), make_message(rng, n)
                )
                if typ != "OK":
                    errors.append(f"APPEND {folder}: {data}")
                    return
        finally:
            c.logout()

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(work[i::CLIENTS],)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise BenchError(f"filling Dovecot failed: {errors[0]}")
    return time.monotonic() - started


def dovecot_contents(dovecot: ThrowawayDovecot) -> dict[str, Counter[tuple[bytes, frozenset[str]]]]:
    """Per folder: (SHA-256 of BODY[], flags without \\Recent) as a multiset, read over Dovecot's IMAP."""
    client = imaplib.IMAP4("127.0.0.1", dovecot.port)
    client.login(SOURCE, PASSWORD)
    found: dict[str, Counter[tuple[bytes, frozenset[str]]]] = {}
    try:
        for folder in SHARES:
            client.select(f'"{folder}"', readonly=True)
            _, data = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
            box: Counter[tuple[bytes, frozenset[str]]] = Counter()
            for item in data:
                if isinstance(item, tuple):
                    head = item[0].decode()
                    flags = head.split("FLAGS (", 1)[1].split(")", 1)[0].split()
                    box[hashlib.sha256(item[1]).digest(), frozenset(f for f in flags if f != "\\Recent")] += 1
            found[folder] = box
    finally:
        client.logout()
    return found


async def relate_contents(dsn: str) -> dict[str, Counter[tuple[bytes, frozenset[str]]]]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT x.name, m.blob_hash, m.flags FROM messages m JOIN mailboxes x ON x.id = m.mailbox_id
                 JOIN users u ON u.id = x.user_id WHERE u.address = $1""",
            USER,
        )
    finally:
        await conn.close()
    found: dict[str, Counter[tuple[bytes, frozenset[str]]]] = {}
    for r in rows:
        found.setdefault(r["name"], Counter())[bytes(r["blob_hash"]), frozenset(r["flags"])] += 1
    return found


def measured(
    argv: list[str], *, pids: dict[str, int], timeout: float, workdir: Path
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run ``argv``; its wall time, CPU and peak resident set (from wait4), the CPU of ``pids``' process
    trees over the same time, the load average before, and the CPU the rest of the machine used meanwhile."""
    before = {name: tree_cpu(pid) for name, pid in pids.items()}
    machine = machine_cpu()
    load = os.getloadavg()[0]
    out, err = workdir / "run.out", workdir / "run.err"
    started = time.monotonic()
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=o, stderr=e)  # noqa: S603
    deadline = started + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            raise BenchError(f"{argv[0]} ran past {timeout:.0f} s")
        time.sleep(0.02)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = {"client": usage.ru_utime + usage.ru_stime, **{n: tree_cpu(p) - before[n] for n, p in pids.items()}}
    busy = (machine_cpu() - machine).busy
    figures = {
        "seconds": round(wall, 2),
        "cpu_seconds": {k: round(v, 2) for k, v in cpu.items()},
        "client_peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "load_average_1m_before": round(load, 2),
        "others_cpu_seconds": round(max(0.0, busy - sum(cpu.values())), 2),
    }
    done = subprocess.CompletedProcess(argv, proc.returncode, out.read_text(), err.read_text())
    return done, figures


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000, help="messages in the account (default 10,000)")
    parser.add_argument("--no-peer", action="store_true", help="do not run mbsync beside it")
    parser.add_argument("--workdir", type=Path, help="parent of the temp dir (default: $TMPDIR or /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data) for inspection")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    return parser.parse_args(argv)


ROWS = [
    ("messages", "messages"),
    ("megabytes", "megabytes"),
    ("seconds", "seconds"),
    ("messages/s", "messages_per_second"),
    ("MB/s", "megabytes_per_second"),
    ("client CPU ms/msg", "client_cpu_ms_per_message"),
    ("client peak RSS MB", "client_peak_rss_mb"),
    ("PostgreSQL CPU ms/msg", "postgres_cpu_ms_per_message"),
    ("Dovecot CPU ms/msg", "dovecot_cpu_ms_per_message"),
    ("others' CPU s (machine shared)", "others_cpu_seconds"),
    ("load average (1 min) before", "load_average_1m_before"),
    ("second run: seconds", "second_run_seconds"),
    ("second run: imported", "second_run_imported"),
]


def render(report: dict[str, Any]) -> str:
    relate, peer = report["relate"], report.get("mbsync")
    headers = ["", "relate import"] + (["mbsync", "relate/mbsync"] if peer else [])
    rows = []
    for label, key in ROWS:
        row: list[Any] = [label, relate.get(key)]
        if peer:
            row += [peer.get(key), ratio(relate.get(key), peer.get(key))]
        if any(v is not None for v in row[1:]):
            rows.append(row)
    lines = [
        f"source: {report['source']}",
        f"database: {report['database']}",
        "",
        table(headers, rows),
    ]
    return "\n".join(lines)


def _per_message(figures: dict[str, Any], messages: int, octets: int) -> dict[str, Any]:
    seconds = figures["seconds"]
    cpu = figures["cpu_seconds"]
    return {
        "messages": messages,
        "megabytes": round(octets / 1e6, 1),
        "messages_per_second": round(messages / seconds, 1),
        "megabytes_per_second": round(octets / 1e6 / seconds, 2),
        "client_cpu_ms_per_message": round(cpu["client"] * 1000 / messages, 3),
        "postgres_cpu_ms_per_message": round(cpu["postgres"] * 1000 / messages, 3) if "postgres" in cpu else None,
        "dovecot_cpu_ms_per_message": round(cpu["dovecot"] * 1000 / messages, 3),
        **figures,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = make_workdir("relate-bench-import-", args.workdir)
    report: dict[str, Any] = {"benchmark": "import", "params": {"messages": args.messages}, "valid": False}
    quiet = args.json_only
    pg = EmbeddedPostgres(workdir / "pgdata")
    holder: dict[str, ThrowawayDovecot] = {}

    def body() -> None:
        try:
            dovecot = ThrowawayDovecot(separator="/", sent="Sent")
            holder["dovecot"] = dovecot
            dovecot.start()
        except Unavailable as exc:
            raise BenchError(f"no Dovecot: {exc}") from None
        assert dovecot.proc is not None
        say(f"dovecot: filling {args.messages} messages over IMAP ({CLIENTS} clients)", quiet=quiet)
        fill_seconds = fill(dovecot, args.messages)
        report["source"] = (
            f"Dovecot 2.3 (Debian) on 127.0.0.1:{dovecot.port}, Maildir, filled by APPEND in {fill_seconds:.1f} s"
        )
        dsn, postmaster = start_postgres(pg, quiet=quiet)
        settings = asyncio.run(migrate_db(dsn))
        require_durable(settings)
        report["database"] = f"embedded PostgreSQL {settings['server_version']}, fsync {settings['fsync']}"
        asyncio.run(add_account(dsn, DOMAIN, USER, "Importer", "imap"))
        config = workdir / "relate.yaml"
        config.write_text(yaml.safe_dump({"hostname": "mail.bench.test", "database": {"dsn": dsn}}))
        secret = workdir / "password"
        secret.write_text(PASSWORD + "\n")
        argv = [
            sys.executable, "-m", "relatectl", "--config", str(config), "import", "imap", "--host", "127.0.0.1",
            "--port", str(dovecot.port), "--plain", "--login", SOURCE, "--password-file", str(secret),
            "--user", USER, "--json",
        ]  # fmt: skip
        pids = {"postgres": postmaster, "dovecot": dovecot.proc.pid}
        say("relate: relatectl import imap", quiet=quiet)
        proc, figures = measured(argv, pids=pids, timeout=3600, workdir=workdir)
        if proc.returncode != 0:
            raise BenchError(f"relatectl import failed ({proc.returncode}): {proc.stderr.strip()}")
        first = json.loads(proc.stdout)
        if first["imported"] != args.messages:
            raise BenchError(f"imported {first['imported']} of {args.messages}", first)
        say("relate: checking every message against Dovecot's BODY[] and FLAGS", quiet=quiet)
        theirs = dovecot_contents(dovecot)
        ours = asyncio.run(relate_contents(dsn))
        for folder, box in theirs.items():
            if ours.get(folder) != box:
                raise BenchError(f"{folder}: what was stored differs from Dovecot's (octets or flags)")
        octets = int(query_row(dsn, "SELECT coalesce(sum(size), 0) FROM messages")[0])
        report["relate"] = _per_message(figures, args.messages, octets)
        say("relate: a second run (must import nothing)", quiet=quiet)
        proc, again = measured(argv, pids=pids, timeout=600, workdir=workdir)
        second = json.loads(proc.stdout) if proc.returncode == 0 else {"imported": None}
        if second["imported"] != 0:
            raise BenchError(f"the second run imported {second['imported']}: {proc.stderr.strip()}")
        report["relate"]["second_run_seconds"] = again["seconds"]
        report["relate"]["second_run_imported"] = 0
        report["relate"]["verified"] = "every message's SHA-256 and flags, per folder, equal Dovecot's"

        mbsync = None if args.no_peer else find_program("mbsync")
        if mbsync:
            local = workdir / "mbsync"
            local.mkdir()
            rc = workdir / "mbsyncrc"
            rc.write_text(
                f"IMAPAccount src\nHost 127.0.0.1\nPort {dovecot.port}\nUser {SOURCE}\nPass {PASSWORD}\n"
                "SSLType None\nAuthMechs LOGIN\nPipelineDepth 50\n\nIMAPStore remote\nAccount src\n\n"
                f"MaildirStore near\nPath {local}/\nInbox {local}/INBOX\nSubFolders Verbatim\n\n"
                "Channel c\nFar :remote:\nNear :near:\nPatterns *\nCreate Near\nSync Pull\nCopyArrivalDate yes\n"
                f"SyncState {workdir}/mbsync-state/\n"
            )
            (workdir / "mbsync-state").mkdir()
            say("mbsync: pulling the same account", quiet=quiet)
            proc, peer = measured(
                [mbsync, "-c", str(rc), "-a", "-q"], pids={"dovecot": dovecot.proc.pid}, timeout=3600, workdir=workdir
            )
            if proc.returncode != 0:
                raise BenchError(f"mbsync failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
            files = sum(1 for p in local.rglob("*") if p.is_file() and p.parent.name in ("cur", "new"))
            if files != args.messages:
                raise BenchError(f"mbsync wrote {files} messages of {args.messages}")
            report["mbsync"] = _per_message(peer, files, octets)
            report["ratio"] = {
                "messages_per_second": ratio(
                    report["relate"]["messages_per_second"], report["mbsync"]["messages_per_second"]
                )
            }

    def cleanup() -> None:
        if "dovecot" in holder:
            holder["dovecot"].stop()
        pg.stop()

    return run_benchmark("import bench", args, workdir, report, body, cleanup, render)


if __name__ == "__main__":
    sys.exit(main())
