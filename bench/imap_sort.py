"""SORT and THREAD latency on a threaded mailbox, optionally against Dovecot: first and repeated runs, server CPU.

Sets up the world of ``imap.py`` (an embedded PostgreSQL with fsync on, the
schema, domain ``bench.test``, ``python -m relate.imap`` on a free loopback
port, plaintext LOGIN; ``--vs dovecot`` a throwaway Dovecot 2.3 with the same
message bytes in its Maildir), but the mailbox is a discussion archive of
``--messages`` messages: threads started by one of 300 senders, replies
that quote their parent's References and Message-ID (so REFERENCES has real
trees to link) and say "Re:" before the thread's subject, dates a few
minutes apart with replies now and then arriving before the message they
answer, 5% without a Date.

It then runs each command ``--rounds`` times on one connection (the first run
reported apart: Dovecot builds its sort and thread indexes on first use; relate
stores its sort keys at ingest), reading the whole response, and reports the
first, the median and the best wall time and the server's CPU per command:

    SORT (ARRIVAL), SORT (REVERSE DATE), SORT (SUBJECT), SORT (FROM), SORT (DISPLAYFROM) over ALL,
    SORT (DATE) over FROM <one sender> (a SEARCH first),
    SORT RETURN (PARTIAL 1:50) (REVERSE DATE)   (ESORT/PARTIAL: the newest 50; Dovecot 2.3 takes no -1:-50),
    THREAD ORDEREDSUBJECT, THREAD REFERENCES, THREAD REFS over ALL.

Every answer is checked: SORT must list every message once (or the sender's
messages), THREAD must name every message once; with ``--vs dovecot`` the two
servers' answers are compared and the report says which differ (they should
not, except THREAD=REFS's order of two threads whose roots are both missing
messages and end on one date, which Dovecot leaves to qsort).

Usage: ``.venv/bin/python bench/imap_sort.py [--vs dovecot] [--messages 10000] [--json-only]``.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import hashlib
import os
import random
import re
import statistics
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BenchError,
    comparison_rows,
    dig,
    fs_type,
    make_workdir,
    ratio,
    run_benchmark,
    say,
    stop_targets,
    table,
)
from imap import BIG_USER, Dovecot, Imap, ImapFailure, Meter, Relate, Target, noise

SENDERS = 300
SORTS = [
    ("sort_arrival", "SORT (ARRIVAL) UTF-8 ALL"),
    ("sort_reverse_date", "SORT (REVERSE DATE) UTF-8 ALL"),
    ("sort_subject", "SORT (SUBJECT) UTF-8 ALL"),
    ("sort_from", "SORT (FROM) UTF-8 ALL"),
    ("sort_displayfrom", "SORT (DISPLAYFROM) UTF-8 ALL"),
    ("sort_searched", "SORT (DATE) UTF-8 FROM sender7@"),
    ("sort_partial", "SORT RETURN (PARTIAL 1:50) (REVERSE DATE) UTF-8 ALL"),
    ("thread_orderedsubject", "THREAD ORDEREDSUBJECT UTF-8 ALL"),
    ("thread_references", "THREAD REFERENCES UTF-8 ALL"),
    ("thread_refs", "THREAD REFS UTF-8 ALL"),
]


def make_archive(count: int, size: int, seed: int = 5) -> tuple[list[bytes], int]:
    """``count`` messages of about ``size`` bytes in threads, and how many are from sender7 (SORT ... FROM)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data
    base = datetime(2025, 3, 1, tzinfo=UTC)
    threads: list[tuple[str, list[tuple[str, list[str]]]]] = []  # (subject, [(message id, its references)])
    corpus: list[bytes] = []
    from_seven = 0
    for i in range(count):
        msg_id = f"<arch-{i}@lists.example>"
        if not threads or rng.random() < 0.25:
            subject = f"topic {rng.randrange(count)} {rng.choice(['plan', 'bug', 'idea', 'note', 'ask'])}"
            threads.append((subject, [(msg_id, [])]))
            refs: list[str] = []
            shown = subject
        else:
            subject, members = threads[-1 - min(len(threads) - 1, int(rng.expovariate(0.3)))]
            parent, parent_refs = rng.choice(members)
            refs = [*parent_refs, parent][-20:]
            members.append((msg_id, refs))
            shown = f"Re: {subject}"
        sender = rng.randrange(SENDERS)
        from_seven += sender == 7
        when = base + timedelta(minutes=3 * i + rng.choice([0, 0, 0, -30]))
        head = [
            f"From: Person {sender} <sender{sender}@people.example>",
            f"To: list{rng.randrange(5)}@lists.example",
            f"Subject: {shown}",
            f"Message-ID: {msg_id}",
        ]
        if refs:
            head += [f"In-Reply-To: {refs[-1]}", "References: " + " ".join(refs)]
        head.append(f"Date: {email.utils.format_datetime(when)}")
        text = "\r\n".join([*head, "", ""])
        line = "quoted text and more words " * 3
        body = (line + "\r\n") * max(1, (size - len(text)) // (len(line) + 2))
        corpus.append((text + body).encode())
    return corpus, from_seven


def _numbers(untagged: list[bytes], kind: bytes) -> list[int]:
    out: list[int] = []
    for line in untagged:
        if line.startswith(kind):
            out += [int(n) for n in re.findall(rb"\d+", line[len(kind) :])]
    return out


def check(name: str, untagged: list[bytes], count: int, from_seven: int) -> None:
    """Raise BenchError unless the answer names the messages it must."""
    if name.startswith("thread"):
        numbers = _numbers(untagged, b"* THREAD")
        if sorted(numbers) != list(range(1, count + 1)):
            raise BenchError(f"{name}: THREAD named {len(numbers)} messages ({len(set(numbers))} distinct) of {count}")
    elif name == "sort_partial":
        line = next((x for x in untagged if x.startswith(b"* ESEARCH")), b"")
        if not re.search(rb"PARTIAL \(1:50 [\d:,]+\)", line):
            raise BenchError(f"{name}: no PARTIAL answer in {line[:100]!r}")
    else:
        numbers = _numbers(untagged, b"* SORT")
        want = from_seven if name == "sort_searched" else count
        if len(numbers) != want or len(set(numbers)) != want:
            raise BenchError(f"{name}: SORT listed {len(numbers)} messages ({len(set(numbers))} distinct), not {want}")


async def sort_work(target: Target, args: argparse.Namespace, from_seven: int) -> dict[str, Any]:
    conn = await Imap.open(target.port)
    out: dict[str, Any] = {"answers": {}}
    try:
        await conn.login(BIG_USER, target.password(BIG_USER))
        await conn.command("SELECT INBOX", args.timeout)
        for name, command in SORTS:
            say(f"{target.name}: {command} x{args.rounds}", quiet=args.json_only)
            times, phases = [], []
            for n in range(args.rounds):
                with Meter(target, f"{name}-{n}", args) as meter:
                    try:
                        untagged = await conn.command(command, args.timeout)
                    except ImapFailure as exc:
                        raise BenchError(f"{target.name}: {exc}") from None
                check(name, untagged, args.messages, from_seven)
                times.append(meter.phase.wall)
                phases.append(meter.phase)
            repeat = times[1:] or times
            out[name] = {
                "first_ms": round(times[0] * 1000, 1),
                "median_ms": round(statistics.median(repeat) * 1000, 1),
                "best_ms": round(min(repeat) * 1000, 1),
                # /proc counts CPU in ticks of 10 ms: the repeated runs' total, per run.
                "server_cpu_ms": round(sum(p.server for p in phases[1:] or phases) * 1000 / len(repeat), 1),
            }
            answer = b"\n".join(line.replace(b'"' + b"a%d" % conn.tags + b'"', b'"T"') for line in untagged)
            out["answers"][name] = hashlib.sha256(answer).hexdigest()[:16]
        await conn.command("LOGOUT")
    finally:
        await conn.close()
    return out


ROWS = [(f"{command} (ms, {stat})", (name, f"{stat}_ms")) for name, command in SORTS for stat in ("first", "median")]
ROWS += [(f"{command}: server CPU (ms)", (name, "server_cpu_ms")) for name, command in SORTS]


def render(report: dict[str, Any]) -> str:
    relate, peer, ratio_by = report.get("relate"), report.get("dovecot"), report.get("ratio") or {}
    headers = ["", "relate"] + (["dovecot", "relate/dovecot"] if peer else [])
    rows = comparison_rows(ROWS, relate, peer, lambda path: ratio_by.get(".".join(path)))
    p = report["params"]
    lines = [
        f"SORT/THREAD: {p['messages']:,} messages of ~{p['size']:,} bytes in threads, one INBOX, "
        f"{p['rounds']} runs each (first apart), {p['cpus']} CPUs shared with the client, work dir on {p['fs']}",
    ]
    for name in ("relate", "dovecot"):
        if report.get(name):
            lines.append(f"{name}: {report[name]['setup']}")
    if peer:
        differ = report.get("answers_differ") or []
        lines.append("answers: " + ("the same on both servers" if not differ else "differ for " + ", ".join(differ)))
    lines += ["", table(headers, rows)]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=10000, help="messages in the INBOX (default 10000)")
    parser.add_argument("--size", type=int, default=2048, help="approximate message size in bytes (default 2048)")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each command, the first apart (default 5)")
    parser.add_argument("--vs", choices=["dovecot"], help="also run the same commands against a throwaway Dovecot")
    parser.add_argument("--timeout", type=float, default=300, help="limit in seconds for each command (default 300)")
    parser.add_argument("--workdir", type=Path, help="parent of the temp dir (default: $TMPDIR or /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data) for inspection")
    parser.add_argument("--py-spy", help="path of a py-spy binary: profile relate-imap during each command")
    parser.add_argument("--profile", type=Path, help="prefix of the py-spy output files (with --py-spy)")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    if args.messages < 100 or args.rounds < 1 or args.size < 512:
        parser.error("--messages must be at least 100, --rounds positive, --size at least 512")
    if args.py_spy and not args.profile:
        parser.error("--py-spy needs --profile PREFIX")
    # What imap.py's Relate and Dovecot read of their arguments: no extra users or connections here.
    args.cold_users, args.idle_connections, args.concurrency = 0, 0, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = make_workdir("relate-bench-imap-sort-", args.workdir)
    report: dict[str, Any] = {
        "benchmark": "imap_sort",
        "params": {
            "messages": args.messages,
            "size": args.size,
            "rounds": args.rounds,
            "cpus": os.cpu_count(),
            "fs": fs_type(workdir),
        },
        "valid": False,
    }
    targets: list[Target] = []

    def body() -> None:
        say(f"generating {args.messages} threaded messages of ~{args.size} bytes", quiet=args.json_only)
        corpus, from_seven = make_archive(args.messages, args.size)
        report["params"]["size"] = round(sum(map(len, corpus)) / len(corpus))
        kinds: list[type[Relate] | type[Dovecot]] = [Relate] + ([Dovecot] if args.vs == "dovecot" else [])
        for kind in kinds:
            targets.append(kind(workdir, args))
            targets[-1].start(corpus)
        for target in targets:
            report[target.name] = {"setup": target.description, "load": target.load}
            report[target.name].update(asyncio.run(sort_work(target, args, from_seven)))
            report[target.name]["other_cores_busy"] = noise(Meter.phases[target.name])
        if "dovecot" in report:
            ours, theirs = report["relate"]["answers"], report["dovecot"]["answers"]
            report["answers_differ"] = [name for name, _ in SORTS if ours.get(name) != theirs.get(name)]
            report["ratio"] = {
                ".".join(path): ratio(dig(report["relate"], path), dig(report["dovecot"], path)) for _, path in ROWS
            }

    return run_benchmark(
        "imap_sort bench", args, workdir, report, body, lambda: stop_targets(targets, "imap_sort bench"), render
    )


if __name__ == "__main__":
    sys.exit(main())
