"""IMAP resync benchmark: what a client that keeps a mailbox offline (Thunderbird) pays to catch up.

Sets up relate-imap over an embedded, durable PostgreSQL in a temp dir (plain
port, plaintext LOGIN allowed, so TLS is not measured) and, with ``--vs
dovecot``, uses the Dovecot 2.3 already running on 127.0.0.1:10143 as
``shared/peers.md`` describes it (``--dovecot-port``; any user, password
``pass``). Each server gets a mailbox ``resync`` of ``--messages`` messages
through IMAP APPEND (LITERAL+, ``--pipeline`` commands in flight), the same
bytes for both. Then:

1. first sync: a client logs in, ENABLE QRESYNC, SELECT, ``UID FETCH 1:* (UID
   FLAGS)``: its offline copy (UIDVALIDITY, HIGHESTMODSEQ, the flags of every
   UID); LOGOUT;
2. per round (``--rounds``, the servers' order alternating): another session
   sets flags on ``--flagged`` messages (half \\Seen, half \\Flagged) and
   expunges ``--expunged`` others (UID STORE \\Deleted, UID EXPUNGE); then the
   client logs in again, ENABLE QRESYNC, and ``SELECT resync (QRESYNC
   (uidvalidity modseq))`` is timed from sending it to its tagged OK, with the
   octets the server sent. Checked: FETCH responses for every flagged UID and
   a VANISHED (EARLIER) for every expunged one (relate must name exactly
   those; Dovecot may name more); the copy, with them applied, must equal the
   flags a full fetch then gives;
3. for contrast, in the same round: a SELECT (CONDSTORE) without QRESYNC (what
   the QRESYNC parameter adds to a SELECT), what a CONDSTORE-only client then
   sends (``UID FETCH 1:* (FLAGS) (CHANGEDSINCE m)``, which cannot tell
   expunges) and a client with neither (``UID FETCH 1:* (FLAGS)``).

Every figure is the median over the rounds (min and max in the JSON). The
mailbox made on Dovecot is deleted at the end.

Usage: ``.venv/bin/python bench/imap_resync.py [--vs dovecot] [--messages 10000] [--rounds 5]
[--json-only]``; ``--help`` for the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    HOST,
    BenchError,
    RelateServer,
    add_account,
    comparison_table,
    dig,
    free_port,
    fs_type,
    make_workdir,
    migrate_db,
    plain_imap_config,
    ratio,
    require_durable,
    run_benchmark,
    say,
    stop_targets,
)
from imap import DOVECOT_PASSWORD, Imap, ImapFailure, make_corpus, quoted, wait_for_imap

DOMAIN = "bench.test"
RELATE_USER = f"resync@{DOMAIN}"
DOVECOT_USER = "relate-resync-bench"
MAILBOX = "resync"


class Target(Protocol):
    name: str
    port: int
    user: str

    @property
    def description(self) -> str: ...

    def password(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Relate(RelateServer):
    """relate-imap over an embedded, durable PostgreSQL, in ``workdir``."""

    module = "relate.imap"
    daemon_name = "relate-imap"
    user = RELATE_USER

    def __init__(self, workdir: Path, quiet: bool) -> None:
        super().__init__(workdir, quiet)
        self.key = ""

    @property
    def description(self) -> str:
        return (
            f"relate-imap (plain port, allow_plaintext_auth, logging WARNING) -> PostgreSQL "
            f"{self.settings.get('server_version', '?')} (fsync={self.settings.get('fsync')}, "
            f"synchronous_commit={self.settings.get('synchronous_commit')})"
        )

    def password(self) -> str:
        return self.key

    def start(self) -> None:
        self.start_postgres()
        self.settings = asyncio.run(migrate_db(self.dsn))
        require_durable(self.settings)
        self.key = asyncio.run(add_account(self.dsn, DOMAIN, RELATE_USER, "Resync", "imap"))
        self.port = free_port(HOST)
        config = plain_imap_config(self.dsn, self.port, f"imap.{DOMAIN}")
        (self.workdir / "relate.yaml").write_text(yaml.safe_dump(config))
        self.start_daemon(self.workdir / "relate.yaml", lambda daemon: wait_for_imap(self.port, 60, alive=daemon))


class RunningDovecot:
    """The Dovecot on ``port`` that shared/peers.md runs; the benchmark only adds (and then deletes) a mailbox."""

    name = "dovecot"
    user = DOVECOT_USER

    def __init__(self, port: int, quiet: bool) -> None:
        self.port = port
        self.quiet = quiet
        self.greeting = ""
        self.created = False

    @property
    def description(self) -> str:
        return f"the Dovecot on {HOST}:{self.port} ({self.greeting}; peers.md config: Maildir, static passdb)"

    def password(self) -> str:
        return DOVECOT_PASSWORD

    def start(self) -> None:
        async def probe() -> None:
            try:
                conn = await Imap.open(self.port, within=5)
            except OSError as exc:
                raise BenchError(
                    f"no Dovecot on {HOST}:{self.port} ({exc}): start it as shared/peers.md says, "
                    "or give --dovecot-port"
                ) from None
            await conn.login(self.user, self.password())
            caps = b" ".join(await conn.command("CAPABILITY"))
            if b"QRESYNC" not in caps:
                raise BenchError(f"the server on {HOST}:{self.port} does not offer QRESYNC")
            await conn.command("LOGOUT")
            await conn.close()

        asyncio.run(probe())
        self.greeting = "Dovecot 2.3"

    def stop(self) -> None:
        if not self.created:
            return

        async def delete() -> None:
            conn = await Imap.open(self.port)
            await conn.login(self.user, self.password())
            await conn.command(f"DELETE {MAILBOX}")
            await conn.command("LOGOUT")
            await conn.close()

        asyncio.run(delete())


# -- the client ------------------------------------------------------------------------------


@dataclass
class Timed:
    seconds: float
    octets: int
    untagged: list[bytes]


async def timed(conn: Imap, text: str, within: float) -> Timed:
    """Send one command; the wall time to its tagged OK, the octets the server sent, the untagged lines."""
    conn.tags += 1
    tag = b"a%d" % conn.tags
    octets = 0
    untagged: list[bytes] = []
    t0 = time.perf_counter()
    conn.writer.write(tag + b" " + text.encode() + b"\r\n")
    async with asyncio.timeout(within):
        while True:
            line = await conn.read_line()
            octets += len(line)
            if line.startswith(tag + b" "):
                if not line[len(tag) + 1 :].startswith(b"OK"):
                    raise ImapFailure(f"{text[:60]!r} -> {line[:200]!r}")
                return Timed(time.perf_counter() - t0, octets, untagged)
            untagged.append(line)


@dataclass
class OfflineCopy:
    """What the client keeps between sessions, as it learns it from the server's responses."""

    uidvalidity: int = 0
    highestmodseq: int = 0
    flags: dict[int, frozenset[str]] = field(default_factory=dict)

    def apply(self, lines: list[bytes]) -> tuple[set[int], set[int]]:
        """Take in [UIDVALIDITY], [HIGHESTMODSEQ], VANISHED (EARLIER) and FETCH (UID FLAGS [MODSEQ]) responses;
        returns (UIDs fetched, UIDs vanished)."""
        fetched: set[int] = set()
        vanished: set[int] = set()
        for line in lines:
            text = line.decode("utf-8", "replace")
            if text.startswith("* VANISHED (EARLIER) "):
                for item in text.split(" ", 3)[3].strip().split(","):
                    lo, _, hi = item.partition(":")
                    vanished.update(range(int(lo), int(hi or lo) + 1))
            elif " FETCH (" in text:
                uid = int(text.split("UID ", 1)[1].split(None, 1)[0].rstrip(")"))
                flags = text.split("FLAGS (", 1)[1].split(")", 1)[0].split()
                self.flags[uid] = frozenset(f for f in flags if f != "\\Recent")
                fetched.add(uid)
                if "MODSEQ (" in text:
                    self.highestmodseq = max(self.highestmodseq, int(text.split("MODSEQ (", 1)[1].split(")", 1)[0]))
            elif text.startswith("* OK [UIDVALIDITY "):
                self.uidvalidity = int(text.split()[3].rstrip("]"))
            elif text.startswith("* OK [HIGHESTMODSEQ "):
                self.highestmodseq = int(text.split()[3].rstrip("]"))
        for uid in vanished:
            self.flags.pop(uid, None)
        return fetched, vanished


async def login(target: Target, *, enable: str | None = None) -> Imap:
    conn = await Imap.open(target.port)
    await conn.login(target.user, target.password())
    if enable:
        await conn.command(f"ENABLE {enable}")
    return conn


async def fill(target: Target, corpus: list[bytes], pipeline: int) -> float:
    """The mailbox, made anew, with ``corpus`` through APPEND, ``pipeline`` at a time; returns the seconds."""
    conn = await login(target)
    with contextlib.suppress(ImapFailure):  # there was none
        await conn.command(f"DELETE {MAILBOX}")
    await conn.command(f"CREATE {MAILBOX}")
    if isinstance(target, RunningDovecot):
        target.created = True
    t0 = time.perf_counter()
    for start in range(0, len(corpus), pipeline):
        batch = corpus[start : start + pipeline]
        tags = []
        for raw in batch:
            conn.tags += 1
            tags.append(b"a%d " % conn.tags)
            conn.writer.write(tags[-1] + f"APPEND {quoted(MAILBOX)} {{{len(raw)}+}}\r\n".encode() + raw + b"\r\n")
        async with asyncio.timeout(300):
            for tag in tags:
                while not (line := await conn.read_line()).startswith(tag):
                    pass
                if not line[len(tag) :].startswith(b"OK"):
                    raise BenchError(f"{target.name}: APPEND answered {line[:200]!r}")
    seconds = time.perf_counter() - t0
    await conn.command("LOGOUT")
    await conn.close()
    return seconds


async def first_sync(target: Target, within: float) -> tuple[OfflineCopy, Timed]:
    copy = OfflineCopy()
    conn = await login(target, enable="QRESYNC")
    copy.apply(await conn.command(f"SELECT {MAILBOX}"))
    full = await timed(conn, "UID FETCH 1:* (UID FLAGS)", within)
    copy.apply(full.untagged)
    await conn.command("LOGOUT")
    await conn.close()
    return copy, full


async def change(
    target: Target, copy: OfflineCopy, rng: random.Random, flagged: int, expunged: int
) -> tuple[set[int], set[int]]:
    """Another session flags ``flagged`` of the copy's messages and expunges ``expunged`` others."""
    picked = rng.sample(sorted(u for u, f in copy.flags.items() if not f), flagged + expunged)
    to_flag, to_expunge = sorted(picked[:flagged]), sorted(picked[flagged:])
    half = len(to_flag) // 2
    conn = await login(target)
    await conn.command(f"SELECT {MAILBOX}")
    for uids, flag in ((to_flag[:half], "\\Seen"), (to_flag[half:], "\\Flagged")):
        if uids:
            await conn.command(f"UID STORE {','.join(map(str, uids))} +FLAGS.SILENT ({flag})")
    if to_expunge:
        await conn.command(f"UID STORE {','.join(map(str, to_expunge))} +FLAGS.SILENT (\\Deleted)")
        await conn.command(f"UID EXPUNGE {','.join(map(str, to_expunge))}")
    await conn.command("LOGOUT")
    await conn.close()
    return set(to_flag), set(to_expunge)


async def one_round(target: Target, copy: OfflineCopy, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    since = copy.highestmodseq
    flagged, expunged = await change(target, copy, rng, args.flagged, args.expunged)

    conn = await login(target, enable="QRESYNC")
    resync = await timed(conn, f"SELECT {MAILBOX} (QRESYNC ({copy.uidvalidity} {since}))", args.timeout)
    fetched, vanished = copy.apply(resync.untagged)
    await conn.command("LOGOUT")
    await conn.close()
    if not (fetched >= flagged and vanished >= expunged):
        raise BenchError(
            f"{target.name}: the QRESYNC SELECT missed changes: fetched {len(fetched & flagged)} of "
            f"{len(flagged)} flagged, vanished {len(vanished & expunged)} of {len(expunged)} expunged"
        )
    if isinstance(target, Relate) and (fetched, vanished) != (flagged, expunged):
        raise BenchError(f"relate: QRESYNC said more than what changed: {len(fetched)} FETCH, {len(vanished)} vanished")

    conn = await login(target)
    select = await timed(conn, f"SELECT {MAILBOX} (CONDSTORE)", args.timeout)
    changedsince = await timed(conn, f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {since})", args.timeout)
    if len(changedsince.untagged) < len(flagged):
        raise BenchError(f"{target.name}: CHANGEDSINCE answered {len(changedsince.untagged)} of {len(flagged)}")
    full = await timed(conn, "UID FETCH 1:* (FLAGS)", args.timeout)
    await conn.command("LOGOUT")
    await conn.close()
    truth = OfflineCopy()
    truth.apply(full.untagged)
    if truth.flags != copy.flags:
        differ = len(set(truth.flags.items()) ^ set(copy.flags.items()))
        raise BenchError(f"{target.name}: the resynced copy differs from the server in {differ} messages")
    return {
        "qresync": {"ms": resync.seconds * 1000, "octets": resync.octets, "lines": len(resync.untagged)},
        "fetches": len(fetched),
        "vanished": len(vanished),
        "select": {"ms": select.seconds * 1000, "octets": select.octets},
        "changedsince": {"ms": changedsince.seconds * 1000, "octets": changedsince.octets},
        "full": {"ms": full.seconds * 1000, "octets": full.octets},
    }


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"fetches": max(r["fetches"] for r in rounds), "vanished": max(r["vanished"] for r in rounds)}
    for kind in ("qresync", "select", "changedsince", "full"):
        out[kind] = {}
        for figure in ("ms", "octets"):
            values = [r[kind][figure] for r in rounds]
            out[kind][figure] = round(statistics.median(values), 2)
            out[kind][f"{figure}_min"] = round(min(values), 2)
            out[kind][f"{figure}_max"] = round(max(values), 2)
    return out


async def run(targets: list[Target], corpus: list[bytes], args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {}
    copies: dict[str, OfflineCopy] = {}
    rounds: dict[str, list[dict[str, Any]]] = {}
    for target in targets:
        say(f"{target.name}: APPEND of {len(corpus)} messages, {args.pipeline} in flight", quiet=args.json_only)
        load_s = await fill(target, corpus, args.pipeline)
        copy, full = await first_sync(target, args.timeout)
        if len(copy.flags) != len(corpus):
            raise BenchError(f"{target.name}: the first sync saw {len(copy.flags)} of {len(corpus)} messages")
        copies[target.name], rounds[target.name] = copy, []
        report[target.name] = {
            "setup": target.description,
            "load": {"seconds": round(load_s, 2), "per_s": round(len(corpus) / load_s, 1)},
            "first_sync": {"ms": round(full.seconds * 1000, 2), "octets": full.octets},
        }
    rng = {t.name: random.Random(7) for t in targets}  # noqa: S311 - the same picks on both servers
    for n in range(args.rounds):
        for target in targets if n % 2 == 0 else list(reversed(targets)):
            say(f"{target.name}: round {n + 1} of {args.rounds}", quiet=args.json_only)
            rounds[target.name].append(await one_round(target, copies[target.name], args, rng[target.name]))
    for target in targets:
        report[target.name].update(summary(rounds[target.name]))
    return report


# -- report ------------------------------------------------------------------------------------

ROWS = [
    ("load: APPEND messages/s", ("load", "per_s")),
    ("first sync UID FETCH 1:* (UID FLAGS) ms", ("first_sync", "ms")),
    ("first sync octets", ("first_sync", "octets")),
    ("QRESYNC SELECT ms (median)", ("qresync", "ms")),
    ("QRESYNC SELECT octets", ("qresync", "octets")),
    ("QRESYNC FETCH responses", ("fetches",)),
    ("QRESYNC vanished UIDs", ("vanished",)),
    ("plain SELECT (CONDSTORE) ms, for contrast", ("select", "ms")),
    ("CHANGEDSINCE UID FETCH ms", ("changedsince", "ms")),
    ("CHANGEDSINCE octets", ("changedsince", "octets")),
    ("full UID FETCH 1:* (FLAGS) ms", ("full", "ms")),
    ("full octets", ("full", "octets")),
]
RATIO_OF = {path: ".".join(path) for _, path in ROWS}


def render(report: dict[str, Any]) -> str:
    p = report["params"]
    lines = [
        f"IMAP resync: {p['messages']:,} messages of ~{p['size']:,} bytes in one mailbox; per round another "
        f"session flags {p['flagged']} and expunges {p['expunged']}, then the offline client catches up; "
        f"{p['rounds']} round(s), medians; plain IMAP on 127.0.0.1; {p['cpus']} CPUs shared; work dir on {p['fs']}",
        f"relate:  {report['relate']['setup']}",
    ]
    if "dovecot" in report:
        lines.append(f"dovecot: {report['dovecot']['setup']}")
    lines += ["", comparison_table(ROWS, report, "dovecot", RATIO_OF)]
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=10_000, help="messages in the mailbox (default 10000)")
    parser.add_argument("--size", type=int, default=2048, help="approximate message size in bytes (default 2048)")
    parser.add_argument("--flagged", type=int, default=10, help="messages flagged per round (default 10)")
    parser.add_argument("--expunged", type=int, default=3, help="messages expunged per round (default 3; 0: none)")
    parser.add_argument("--rounds", type=int, default=5, help="change-and-resync rounds (default 5)")
    parser.add_argument("--pipeline", type=int, default=50, help="APPENDs in flight while filling (default 50)")
    parser.add_argument("--vs", choices=["dovecot"], help="also run against the Dovecot of shared/peers.md")
    parser.add_argument("--dovecot-port", type=int, default=10143, help="its IMAP port (default 10143)")
    parser.add_argument("--timeout", type=float, default=300, help="limit in seconds for each command (default 300)")
    parser.add_argument("--workdir", type=Path, help="parent of the temp dir (default: $TMPDIR or /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data) for inspection")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    if min(args.messages, args.rounds, args.pipeline) < 1 or min(args.flagged, args.expunged) < 0 or args.size < 512:
        parser.error(
            "--messages, --rounds and --pipeline must be positive, --flagged and --expunged not negative,"
            " --size at least 512"
        )
    if (args.flagged + args.expunged) * args.rounds > args.messages // 2:
        parser.error("--rounds x (--flagged + --expunged) must be at most half of --messages")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = make_workdir("relate-bench-imap-resync-", args.workdir)
    report: dict[str, Any] = {
        "benchmark": "imap_resync",
        "params": {
            "messages": args.messages,
            "size": args.size,
            "flagged": args.flagged,
            "expunged": args.expunged,
            "rounds": args.rounds,
            "pipeline": args.pipeline,
            "cpus": os.cpu_count(),
            "fs": fs_type(workdir),
        },
        "valid": False,
    }
    targets: list[Target] = []

    def body() -> None:
        say(f"generating {args.messages} messages of ~{args.size} bytes", quiet=args.json_only)
        corpus, _ = make_corpus(args.messages, args.size, 0)
        report["params"]["size"] = round(sum(map(len, corpus)) / len(corpus))
        targets.append(Relate(workdir, args.json_only))
        if args.vs == "dovecot":
            targets.append(RunningDovecot(args.dovecot_port, args.json_only))
        for target in targets:
            target.start()
        report.update(asyncio.run(run(targets, corpus, args)))
        if "dovecot" in report:
            report["ratio"] = {
                key: ratio(dig(report["relate"], path), dig(report["dovecot"], path)) for path, key in RATIO_OF.items()
            }

    def cleanup() -> None:
        stop_targets(targets, "imap_resync bench")

    return run_benchmark("imap_resync bench", args, workdir, report, body, cleanup, render)


if __name__ == "__main__":
    sys.exit(main())
