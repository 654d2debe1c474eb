"""Storage benchmark: where the bytes of a 10,000-message mailbox go, beside a maildir, and what search costs.

Starts the whole system as deployed (``relatectl dev --any-port``: every daemon
its own process, the indexer and notifications on, an embedded durable
PostgreSQL) and, unless ``--vs none``, a throwaway Postfix delivering to a
maildir (shared/peers.md), then in one run:

1. sends ``--messages`` (10,000) messages of ``--size`` (10,240) bytes to one
   recipient with Postfix's ``smtp-source -s 20`` to both, checks every one is
   stored exactly once, and reports messages/s;
2. adds ``--planted`` (20) messages of ordinary text by SMTP to both, each
   with a rare word (``quixzotl``) and half of them with a second one
   (``brambleweft``), so the searches below have known answers;
3. waits for the text indexer to catch up (seconds reported), runs what
   autovacuum would (``VACUUM ANALYZE``), a ``CHECKPOINT``, and measures every table
   of the database (heap, TOAST, each index: ``pg_relation_size``;
   ``pg_total_relation_size`` per table; WAL is not counted) against the
   maildir (apparent bytes and disk blocks of its files);
4. times IMAP ``SEARCH TEXT``/``BODY``/``SUBJECT`` on the INBOX and
   ``GET /api/emails/search`` (rare word, a word in every message) ``--searches``
   times each, checking every answer, and reports p50/p99;
5. lists the indexes of ``messages`` and ``blobs`` with ``idx_scan`` from
   ``pg_stat_user_indexes`` (scans during this run's ingest and searches).

Prints a table and one JSON line (``--json-only``: the line alone).

Usage: ``.venv/bin/python bench/storage.py [--messages 10000] [--size 10240] [--searches 30] [--vs postfix|none]``
"""

from __future__ import annotations

import argparse
import asyncio
import imaplib
import json
import os
import smtplib
import sys
import time
import urllib.request
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    HOST,
    BenchError,
    Job,
    fs_type,
    make_workdir,
    percentile,
    query_row,
    run_benchmark,
    run_load,
    say,
    stop_targets,
    table,
)
from imap import make_corpus
from smtp_ingest import (
    CASES,
    DOMAIN,
    SENDER,
    Postfix,
    RelateDev,
    postfix_counts,
    run_source,
    smtp_source,
    source_commands,
)

from relate.config import DatabaseConfig
from relate.services import accounts
from relate.store import db

RARE = "quixzotl"
HALF = "brambleweft"
MIB = 1024 * 1024


def planted(i: int, recipient: str) -> EmailMessage:
    """Planted message ``i``: ordinary text, RARE in every one, HALF in the even ones."""
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = recipient
    msg["Subject"] = f"Planted report {i} {RARE}"
    msg["Message-ID"] = f"<planted-{i}@client.example>"
    words = f"{RARE} {HALF}" if i % 2 == 0 else RARE
    msg.set_content(f"Hello,\n\nthis is planted message {i}; it mentions {words} once.\n\nRegards\n")
    return msg


def words_plan(args: argparse.Namespace, user: str) -> list[list[Job]]:
    """bench/imap.py's corpus (random words of a 4,000-word vocabulary, as compressible as prose), one
    message per job, spread over ``--sessions`` connections like smtp-source -d."""
    corpus, _ = make_corpus(args.messages, args.size, 0)
    plan: list[list[Job]] = [[] for _ in range(args.sessions)]
    for i, data in enumerate(corpus):
        plan[i % args.sessions].append(Job(i, SENDER, user, data))
    return plan


def send_planted(port: int, count: int, recipient: str) -> None:
    with smtplib.SMTP(HOST, port, timeout=30) as smtp:
        for i in range(count):
            smtp.send_message(planted(i, recipient), from_addr=SENDER, to_addrs=[recipient])


# -- sizes ---------------------------------------------------------------------------------------------

SIZES = """
SELECT c.relname AS name, c.relkind::text AS kind, t.relname AS of_table,
       pg_relation_size(c.oid) AS bytes,
       CASE WHEN c.relkind = 'r' THEN pg_total_relation_size(c.oid) END AS total,
       CASE WHEN c.relkind = 'r' AND c.reltoastrelid <> 0 THEN pg_total_relation_size(c.reltoastrelid) END AS toast,
       CASE WHEN c.relkind = 'r' THEN pg_indexes_size(c.oid) END AS indexes
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_index i ON i.indexrelid = c.oid LEFT JOIN pg_class t ON t.oid = i.indrelid
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')
 ORDER BY pg_relation_size(c.oid) DESC
"""


async def measure_db(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        t0 = time.perf_counter()
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CHECKPOINT")
        vacuum_s = time.perf_counter() - t0
        rows = await conn.fetch(SIZES)
        tables = {
            r["name"]: {
                "heap": r["bytes"],
                "toast": r["toast"] or 0,
                "indexes": r["indexes"],
                "total": r["total"],
            }
            for r in rows
            if r["kind"] == "r" and r["total"] > 64 * 1024
        }
        indexes = {r["name"]: {"table": r["of_table"], "bytes": r["bytes"]} for r in rows if r["kind"] == "i"}
        scans = {
            r["indexrelname"]: r["idx_scan"]
            for r in await conn.fetch(
                "SELECT indexrelname, idx_scan FROM pg_stat_user_indexes WHERE relname IN ('messages', 'blobs')"
            )
        }
        for name, entry in indexes.items():
            entry["scans"] = scans.get(name)
        columns = await conn.fetch(
            """SELECT a.attname FROM pg_attribute a
                WHERE a.attrelid = 'messages'::regclass AND a.attnum > 0 AND NOT a.attisdropped"""
        )
        widths: dict[str, int] = {}
        for c in columns:
            name = c["attname"]
            widths[name] = int(
                await conn.fetchval(f'SELECT coalesce(sum(pg_column_size(m."{name}")), 0)::bigint FROM messages m')
            )
        blob_bytes = await conn.fetchval("SELECT coalesce(sum(pg_column_size(data)), 0)::bigint FROM blobs")
        raw_bytes = await conn.fetchval("SELECT coalesce(sum(size), 0)::bigint FROM blobs")
        database = await conn.fetchval("SELECT pg_database_size(current_database())")
        return {
            "database_bytes": database,
            "tables_total_bytes": sum(t["total"] for t in tables.values()),
            "tables": tables,
            "indexes": {k: v for k, v in indexes.items() if v["bytes"] > 64 * 1024 or v["table"] == "messages"},
            "messages_columns_bytes": dict(sorted(widths.items(), key=lambda kv: -kv[1])),
            "blobs_stored_bytes": blob_bytes,
            "blobs_raw_bytes": raw_bytes,
            "vacuum_checkpoint_s": round(vacuum_s, 1),
        }
    finally:
        await conn.close()


def maildir_size(root: Path) -> dict[str, int]:
    files = apparent = blocks = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            st = os.lstat(os.path.join(dirpath, name))
            files += 1
            apparent += st.st_size
            blocks += st.st_blocks * 512
    return {"files": files, "apparent_bytes": apparent, "disk_bytes": blocks}


# -- searches -----------------------------------------------------------------------------------------

IMAP_SEARCHES = [
    ("SEARCH TEXT rare", f"SEARCH TEXT {RARE}", "planted"),
    ("SEARCH BODY rare", f"SEARCH BODY {HALF}", "half"),
    ("SEARCH SUBJECT rare", f"SEARCH SUBJECT {RARE}", "planted"),
    ("SEARCH TEXT absent", "SEARCH TEXT zzyzxnotthere", "none"),
    ("SEARCH TEXT common word", "SEARCH TEXT {common}", "common_imap"),
]
REST_SEARCHES = [
    ("REST q=rare", f"q={RARE}", "planted"),
    ("REST q=half of the rare", f"q={HALF}", "half"),
    ("REST q=absent", "q=zzyzxnotthere", "none"),
    ("REST q=common word", "q={common}", "common"),
    ("REST q=common word, unread", "q={common}&isRead=false", "common"),
]
SEARCH_CAP = 1000  # the REST search counts this many matches at most (store/emails.py)


def timed(fn: Any, count: int, warmup: int = 2) -> tuple[list[float], Any]:
    out: list[float] = []
    result = None
    for n in range(warmup + count):
        t0 = time.perf_counter()
        result = fn()
        if n >= warmup:
            out.append((time.perf_counter() - t0) * 1000)
    return out, result


def summary(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(ms, 50), 2), "p99_ms": round(percentile(ms, 99), 2), "n": len(ms)}


def measure_searches(
    imap_port: int, api_port: int, user: str, keys: list[str], expected: dict[str, int], count: int, common: str
) -> dict[str, Any]:
    """Each search ``count`` times after two untimed ones, each answer checked; each REST search with a key
    of its own (api.requests_per_minute counts per key)."""
    key = keys[0]
    out: dict[str, Any] = {}
    imap = imaplib.IMAP4(HOST, imap_port, timeout=120)
    try:
        imap.login(user, key)
        imap.select("INBOX", readonly=True)
        for label, command, want in IMAP_SEARCHES:
            args = command.format(common=common).split()[1:]

            def run(args: list[str] = args) -> int:
                typ, data = imap.search(None, *args)
                if typ != "OK":
                    raise BenchError(f"IMAP {args}: {typ} {data}")
                return len(data[0].split())

            ms, hits = timed(run, count)
            if hits != expected[want]:
                raise BenchError(f"IMAP {command}: {hits} hits, expected {expected[want]}")
            out[label] = summary(ms) | {"hits": hits}
    finally:
        imap.logout()
    for (label, query, want), rest_key in zip(REST_SEARCHES, keys[1:], strict=True):
        headers = {"Authorization": f"Bearer {rest_key}"}
        url = f"http://{HOST}:{api_port}/api/emails/search?{query.format(common=common)}&pageSize=50"

        def get(url: str = url, headers: dict[str, str] = headers) -> dict[str, Any]:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as resp:  # noqa: S310
                body: dict[str, Any] = json.loads(resp.read())
                return body

        ms, body = timed(get, count)
        hits = int(body.get("total", -1))
        if hits != min(expected[want], SEARCH_CAP):
            raise BenchError(f"REST {query}: total {hits}, expected {expected[want]}")
        out[label] = summary(ms) | {"hits": hits}
    return out


# -- the run --------------------------------------------------------------------------------------------


async def make_keys(dsn: str, user: str, count: int) -> list[str]:
    pool = await db.create_pool(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=2))
    try:
        return [
            (await accounts.create_key(pool, user, f"storage-bench-{n}", ["imap", "api:read"], rounds=4))[0]
            for n in range(count)
        ]
    finally:
        await pool.close()


def body(args: argparse.Namespace, workdir: Path, report: dict[str, Any], targets: list[Any]) -> None:
    quiet = args.json_only
    user = f"user1@{DOMAIN}"
    source = smtp_source(quiet)
    relate = RelateDev(workdir, [user], args.sessions, quiet)
    targets.append(relate)
    postfix = Postfix(workdir, [user], quiet) if args.vs == "postfix" else None
    if postfix is not None:
        targets.append(postfix)
    for target in targets:
        target.start()
    report["setup"] = {t.name: t.description for t in targets}
    info = json.loads((relate.state / "dev.json").read_text())
    imap_port, api_port = int(info["ports"]["imap"]), int(info["ports"]["api"])
    keys = asyncio.run(make_keys(relate.dsn, user, 1 + len(REST_SEARCHES)))
    case = CASES["one"]
    ingest: dict[str, Any] = {}
    plan = words_plan(args, user) if args.corpus == "words" else []
    for target in targets:
        say(f"{target.name}: {args.corpus} -s {args.sessions} -m {args.messages} -l {args.size} to {user}", quiet=quiet)
        load0 = os.getloadavg()[0]
        if plan:
            load = asyncio.run(
                run_load(HOST, target.port, plan, reuse=True, client="raw", io_timeout=60, deadline=args.timeout)
            )
            if load.failed or load.sent != args.messages:
                raise BenchError(f"{target.name}: {load.sent} of {args.messages} acknowledged: {dict(load.failed)}")
            wall = load.wall
        else:
            wall, _client = run_source(source_commands(source, target.port, case, args, [user]), args.timeout)
        entry: dict[str, Any] = {
            "msg_per_s": round(args.messages / wall, 1),
            "load_avg_1m": [round(load0, 1), round(os.getloadavg()[0], 1)],
        }
        if target is relate:
            entry["unindexed_at_end"] = relate.unindexed()
        send_planted(target.port, args.planted, user)
        total = args.messages + args.planted
        if target is relate:
            n, ids = relate.counts()
            entry["index_catch_up_s"] = relate.wait_indexed(args.timeout)
        else:
            assert postfix is not None
            postfix.wait_stored(total, args.timeout)
            n, ids = postfix_counts(postfix)
        if (n, ids) != (total, total):
            raise BenchError(f"{target.name}: {total} acknowledged, {n} stored with {ids} distinct Message-IDs")
        entry["stored_once"] = n
        ingest[target.name] = entry
    report["ingest"] = ingest
    say("relate: VACUUM, CHECKPOINT, sizes", quiet=quiet)
    report["relate_sizes"] = asyncio.run(measure_db(relate.dsn))
    if postfix is not None:
        report["maildir"] = maildir_size(postfix.root / "vmail")
    expected = {"planted": args.planted, "half": (args.planted + 1) // 2, "none": 0}
    if plan:
        # A word of the vocabulary: in about a third of the messages (body or subject, as a word).
        common = plan[0][0].data.split(b"\r\n\r\n", 1)[1].split()[0].decode()
        with_word = [j for s in plan for j in s if common.encode() in j.data.lower().split()]
        expected["common"] = len(with_word)
        # IMAP's substring match counts a word inside a longer one too.
        expected["common_imap"] = sum(
            common.encode() in j.data.split(b"\r\n\r\n", 1)[1].lower()
            or common.encode() in j.data.split(b"\r\n\r\n", 1)[0].lower()
            for s in plan
            for j in s
        )
    else:
        # smtp-source's body is the same line over and over: its first word is in every message.
        row = query_row(relate.dsn, "SELECT body FROM message_texts ORDER BY message_id LIMIT 1")
        common = str(row[0]).split()[0]
        expected["common"] = expected["common_imap"] = args.messages
    report["common_word"] = common
    say(f"relate: searches, {args.searches} of each (common word {common!r})", quiet=quiet)
    report["searches"] = measure_searches(imap_port, api_port, user, keys, expected, args.searches, common)
    report["index_scans_after_searches"] = asyncio.run(index_scans(relate.dsn))


async def index_scans(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT indexrelname, idx_scan FROM pg_stat_user_indexes WHERE relname IN ('messages', 'blobs') "
            "ORDER BY indexrelname"
        )
        return {r["indexrelname"]: r["idx_scan"] for r in rows}
    finally:
        await conn.close()


def mib(n: int | None) -> str:
    return "" if n is None else f"{n / MIB:.1f}"


def render(report: dict[str, Any]) -> str:
    p = report["params"]
    sizes = report["relate_sizes"]
    lines = [
        f"Storage: {p['corpus']} corpus, -s {p['sessions']} -m {p['messages']} -l {p['size']} to one recipient, "
        f"+{p['planted']} planted; {p['cpus']} CPUs shared, work dir on {p['fs']}",
        *(f"{name}: {setup}" for name, setup in report["setup"].items()),
        "",
        table(
            ["ingest", "msg/s", "index backlog at end", "index catch-up s", "load 1m"],
            [
                [name, e["msg_per_s"], e.get("unindexed_at_end", ""), e.get("index_catch_up_s", ""), e["load_avg_1m"]]
                for name, e in report["ingest"].items()
            ],
        ),
        "",
        table(
            ["table", "heap MiB", "TOAST MiB", "indexes MiB", "total MiB"],
            [
                [name, mib(t["heap"]), mib(t["toast"]), mib(t["indexes"]), mib(t["total"])]
                for name, t in sizes["tables"].items()
            ],
        ),
        "",
        table(
            ["index", "table", "MiB", "idx_scan"],
            [[name, i["table"], mib(i["bytes"]), i["scans"]] for name, i in sizes["indexes"].items()],
        ),
        "",
        "messages columns (sum of pg_column_size, MiB): "
        + ", ".join(f"{k} {mib(v)}" for k, v in sizes["messages_columns_bytes"].items() if v > MIB // 4),
        f"blobs: {mib(sizes['blobs_raw_bytes'])} MiB raw, {mib(sizes['blobs_stored_bytes'])} MiB as stored",
        f"relate tables in all: {mib(sizes['tables_total_bytes'])} MiB "
        f"(database {mib(sizes['database_bytes'])} MiB, WAL not counted)",
    ]
    if "maildir" in report:
        md = report["maildir"]
        lines.append(
            f"Postfix maildir: {md['files']} files, {mib(md['apparent_bytes'])} MiB apparent, "
            f"{mib(md['disk_bytes'])} MiB on disk; relate / maildir on disk: {report['ratio_vs_maildir']}"
        )
    lines += [
        "",
        table(
            ["search", "hits", "p50 ms", "p99 ms"],
            [[name, s["hits"], s["p50_ms"], s["p99_ms"]] for name, s in report["searches"].items()],
        ),
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=10_000, help="smtp-source messages (default 10000)")
    parser.add_argument("--size", type=int, default=10_240, help="smtp-source -l (default 10240)")
    parser.add_argument("--sessions", type=int, default=20, help="smtp-source -s (default 20)")
    parser.add_argument(
        "--corpus",
        choices=["smtp-source", "words"],
        default="smtp-source",
        help="smtp-source: its own body (a repeated line: compresses ~16x); words: bench/imap.py's random words "
        "(compresses ~2x, like prose), sent by this script's client over --sessions connections",
    )
    parser.add_argument("--planted", type=int, default=20, help="planted messages with known words (default 20)")
    parser.add_argument("--searches", type=int, default=30, help="timed runs of each search (default 30)")
    parser.add_argument(
        "--vs", choices=["postfix", "none"], default="postfix", help="the maildir peer (default postfix)"
    )
    parser.add_argument("--timeout", type=float, default=900, help="limit in seconds for each step (default 900)")
    parser.add_argument("--workdir", type=Path, help="parent of the temp dir (default: $TMPDIR or /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data) for inspection")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    if min(args.messages, args.sessions, args.searches, args.planted) < 1 or args.size < 512:
        parser.error("--messages, --sessions, --searches and --planted must be positive, --size at least 512")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = make_workdir("relate-storage-", args.workdir)
    report: dict[str, Any] = {
        "benchmark": "storage",
        "params": {
            "shape": "deployed",
            "corpus": args.corpus,
            "messages": args.messages,
            "size": args.size,
            "sessions": args.sessions,
            "planted": args.planted,
            "searches": args.searches,
            "cpus": os.cpu_count(),
            "fs": fs_type(workdir),
        },
        "valid": False,
    }
    targets: list[Any] = []

    def run() -> None:
        body(args, workdir, report, targets)
        if "maildir" in report:
            report["ratio_vs_maildir"] = round(
                report["relate_sizes"]["tables_total_bytes"] / report["maildir"]["disk_bytes"], 2
            )

    return run_benchmark("storage", args, workdir, report, run, lambda: stop_targets(targets, "storage"), render)


if __name__ == "__main__":
    sys.exit(main())
