"""relatectl start-up: wall time of the commands an admin types and of each TAB completion, as processes.

Every figure is a whole process started from outside (``relatectl`` as
installed in the venv, its interpreter start-up included), run ``--runs``
times after one warm-up; the MEDIAN wall time is reported with min and max.
The CPU seconds (user + system, from wait4) are given too: on a machine
that other work shares they move much less than the wall time. The
yardstick in the same run is the bare interpreter (``python -c pass``):
what no command can go below; the ratio is relatectl / yardstick (wall),
paired run by run. Completions run against a real embedded PostgreSQL with two
domains (one IDNA), 200 users, 200 queued messages and a DKIM key, the way
bash asks (``_RELATECTL_COMPLETE=complete_bash COMP_WORDS COMP_CWORD``).
The brief's bound is 0.3 s per command and per completion; the machine's
load is printed beside the figures (its two cores are shared).

Usage: ``.venv/bin/python bench/relatectl_start.py [--runs 11] [--json-only] [--keep]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BenchError, make_workdir, run_benchmark, say, start_postgres, table

VENV_BIN = Path(sys.executable).parent
RELATECTL = str(VENV_BIN / "relatectl")

COMMANDS: list[tuple[str, list[str], dict[str, str]]] = [
    ("relatectl --version", ["--version"], {}),
    ("relatectl --help", ["--help"], {}),
    ("relatectl user --help", ["user", "--help"], {}),
    ("relatectl domain list", ["domain", "list"], {}),
    ("relatectl user list", ["user", "list"], {}),
    ("relatectl queue list", ["queue", "list"], {}),
]
COMPLETIONS = [
    "relatectl ",
    "relatectl user show ",
    "relatectl user show user1",
    "relatectl domain dns ",
    "relatectl queue hold ",
    "relatectl key create user1@example.com --scope imap,",
    "relatectl dkim retire example.com ",
]


def _completion_env(line: str) -> dict[str, str]:
    words = line.split() + ([""] if line.endswith(" ") else [])
    return {"_RELATECTL_COMPLETE": "complete_bash", "COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)}


def _time(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system of the process and what it waited for) of one run."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({proc.returncode}): {err.decode()[-400:]}")
    return took, usage.ru_utime + usage.ru_stime


def measure(argv: list[str], env: dict[str, str], runs: int) -> dict[str, Any]:
    """Median/min/max wall seconds of ``argv``, its median CPU seconds, the same of the bare interpreter
    (alternated run by run), and the median of the paired wall ratios."""
    yardstick = [str(VENV_BIN / "python"), "-c", "pass"]
    _time(argv, env)
    _time(yardstick, env)
    mine: list[tuple[float, float]] = []
    floor: list[tuple[float, float]] = []
    for _ in range(runs):
        mine.append(_time(argv, env))
        floor.append(_time(yardstick, env))
    walls = [w for w, _ in mine]
    return {
        "median_s": round(statistics.median(walls), 4),
        "min_s": round(min(walls), 4),
        "max_s": round(max(walls), 4),
        "cpu_median_s": round(statistics.median(c for _, c in mine), 4),
        "python_median_s": round(statistics.median(w for w, _ in floor), 4),
        "python_cpu_median_s": round(statistics.median(c for _, c in floor), 4),
        "ratio": round(statistics.median(a[0] / b[0] for a, b in zip(mine, floor, strict=True)), 2),
    }


async def populate(dsn: str) -> None:
    import asyncpg

    from relate.config import DatabaseConfig
    from relate.services import accounts
    from relate.services import dns as dns_service
    from relate.store import db, migrate

    conn = await asyncpg.connect(dsn)
    try:
        await migrate.migrate(conn)
    finally:
        await conn.close()
    pool = await db.create_pool(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=2))
    try:
        await accounts.add_domain(pool, "example.com")
        await accounts.add_domain(pool, "münchen.de")
        for i in range(200):
            await accounts.add_user(pool, f"user{i}@example.com", f"User {i}")
        user_id = (await accounts.get_user(pool, "user1@example.com"))["id"]
        await pool.execute(
            """INSERT INTO outbound_emails (user_id, from_address, status, subject, queued_at, next_retry_at)
               SELECT $1, 'user1@example.com', 'queued', 'bench ' || n, now(), now() FROM generate_series(1, 200) n""",
            user_id,
        )
        await dns_service.dkim_keygen(pool, "example.com", kind="ed25519", selector="bench1")
    finally:
        await pool.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--json-only", action="store_true")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    workdir = make_workdir("relate-bench-relatectl-", None)
    report: dict[str, Any] = {"bench": "relatectl_start", "valid": False, "runs": args.runs}
    from relate.runtime.embedded_pg import EmbeddedPostgres

    pg = EmbeddedPostgres(workdir / "pgdata")

    def body() -> None:
        dsn, _ = start_postgres(pg, quiet=args.json_only)
        asyncio.run(populate(dsn))
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELATE_")}
        env.update({"RELATE_DATABASE__DSN": dsn, "COLUMNS": "80", "NO_COLOR": "1"})
        report["load_before"] = [round(x, 2) for x in os.getloadavg()]
        report["commands"] = {}
        for name, argv, extra in COMMANDS:
            say(f"timing {name}", quiet=args.json_only)
            report["commands"][name] = measure([RELATECTL, *argv], {**env, **extra}, args.runs)
        report["completions"] = {}
        for line in COMPLETIONS:
            say(f"timing completion of {line!r}", quiet=args.json_only)
            report["completions"][line] = measure([RELATECTL], {**env, **_completion_env(line)}, args.runs)
        report["load_after"] = [round(x, 2) for x in os.getloadavg()]

    def render(data: dict[str, Any]) -> str:
        rows = [
            [name, f["median_s"], f["min_s"], f["max_s"], f["cpu_median_s"], f["python_median_s"], f["ratio"]]
            for group in ("commands", "completions")
            for name, f in data[group].items()
        ]
        head = ["what (seconds, median of runs)", "wall", "min", "max", "cpu", "python -c pass", "ratio"]
        load = f"load average before {data['load_before']}, after {data['load_after']} (2 cores, shared)"
        return table(head, [[repr(r[0]) if r[0].endswith(" ") else r[0], *r[1:]] for r in rows]) + "\n" + load

    return run_benchmark("relatectl_start", args, workdir, report, body, pg.stop, render)


if __name__ == "__main__":
    sys.exit(main())
