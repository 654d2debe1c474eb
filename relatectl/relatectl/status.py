"""relatectl status: how the whole installation is doing, from the one database.

Shows whether the database answers, its schema version against the one this
release wants, every daemon process on every host from the heartbeats they
write (a daemon that stopped writing is marked stale rather than hidden: it
died or lost the database; one that reports a problem, such as a change feed
that cannot reach the database, is marked degraded with the problem; one switched off in
this host's config is shown as disabled, not as missing or stale), the
outbound queue by status, and the message deferred longest. For each live
daemon on this host it reads a few numbers from the daemon's own metrics
endpoint (``metrics.<service>`` of the config; the answer must come from the
process the heartbeat names): connections, messages accepted and refused,
failed logins, queue depth. Exit code 0 when
the database is reachable, its schema current and no live daemon is
degraded, 1 otherwise, so monitoring can run it as a check.
"""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from typing import Any

import asyncpg
import typer
from rich.text import Text

from relate.config import Config
from relate.store import db, heartbeats, migrate
from relatectl.cli import JsonOption
from relatectl.common import as_peer, cell, console, load_config, print_json, print_table, run, table_cell

HEARTBEAT_VERSION = 8  # the migration that created daemon_heartbeats
PROBLEM_VERSION = 15  # the migration that added daemon_heartbeats.problem


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(max(seconds, 0))
    if s < 90:
        return f"{s}s ago"
    if s < 5400:
        return f"{s // 60}m ago"
    if s < 2 * 86400:
        return f"{s // 3600}h ago"
    return f"{s // 86400}d ago"


async def gather(cfg: Config) -> dict[str, Any]:
    """Everything the command shows, as plain data (what ``--json`` prints)."""
    report: dict[str, Any] = {
        "checked_at": datetime.now(UTC),
        "database": {"reachable": False, "error": None, "schema_version": None, "schema_wanted": None},
        "daemons": [],
        "queue": {"by_status": {}, "oldest_deferred": None},
    }
    database = report["database"]
    database["schema_wanted"] = migrate.latest_version()
    try:
        conn = await as_peer(cfg, lambda: db.connect(cfg.database))
    except db.DatabaseUnavailable as exc:
        database["error"] = str(exc)
        mark_disabled(report, cfg)
        return report
    try:
        database["reachable"] = True
        have = await migrate.current_version(conn)
        database["schema_version"] = have
        database["schema_current"] = have == database["schema_wanted"]
        done = await migrate.applied(conn)
        if HEARTBEAT_VERSION in done:
            report["daemons"] = await heartbeats.instances(conn, with_problem=PROBLEM_VERSION in done)
        if 1 in done:
            report["queue"]["by_status"] = await heartbeats.queue_depth(conn)
            report["queue"]["oldest_deferred"] = await heartbeats.oldest_deferred(conn)
    except (OSError, asyncpg.PostgresError) as exc:
        database["error"] = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    finally:
        await conn.close()
    mark_disabled(report, cfg)
    await _read_metrics(cfg, report["daemons"])
    return report


# What the status shows of each daemon's metrics: (key, sample name, labels).
_KEY_METRICS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("connections", "relate_connections_open", {}),
    ("accepted", "relate_smtp_messages_accepted_total", {}),
    ("refused", "relate_smtp_messages_refused_total", {}),
    ("auth_failures", "relate_auth_failures_total", {}),
    ("delivered", "relate_delivery_attempts_total", {"result": "sent"}),
    ("deferred", "relate_delivery_attempts_total", {"result": "deferred"}),
    ("failed", "relate_delivery_attempts_total", {"result": "failed"}),
    ("queued", "relate_queue_recipients", {}),
)
# Which of them each daemon shows.
_SHOWN = {
    "smtp": ("connections", "accepted", "refused", "auth_failures"),
    "imap": ("connections", "auth_failures"),
    "pop3": ("connections", "auth_failures"),
    "api": ("connections", "auth_failures"),
    "delivery": ("delivered", "deferred", "failed", "queued"),
}


async def _read_metrics(cfg: Config, daemons: list[dict[str, Any]]) -> None:
    """Each live daemon of this host gets ``metrics``: its key numbers, or None when its endpoint is
    unknown, silent or answered by another process."""
    from relate.runtime import metrics  # here: prometheus_client costs every other command 50 ms

    here = socket.gethostname()

    async def one(daemon: dict[str, Any]) -> None:
        daemon["metrics"] = None
        if daemon["stale"] or daemon["host"] != here:
            return
        for address in cfg.metrics.listen(daemon["service"]):
            if address.endswith(":0"):
                continue
            try:
                found = await metrics.scrape(address, 2.0)
            except (OSError, TimeoutError, ValueError):
                continue
            if found.pid != daemon["pid"]:
                continue
            shown = _SHOWN.get(daemon["service"], ())
            daemon["metrics"] = {
                "endpoint": address,
                **{key: int(found.total(name, **labels)) for key, name, labels in _KEY_METRICS if key in shown},
            }
            return

    await asyncio.gather(*(one(d) for d in daemons))


def mark_disabled(report: dict[str, Any], cfg: Config) -> None:
    """What this host's config switches off: ``disabled`` (daemon -> reason) and ``listeners_off``; and each
    daemon row of this host whose service is off carries ``disabled`` (a stale one is the process that ran
    before it was switched off, not one that died)."""
    off = cfg.disabled_services()
    report["disabled"] = off
    report["listeners_off"] = cfg.disabled_listeners()
    here = socket.gethostname()
    for d in report["daemons"]:
        d["disabled"] = d["host"] == here and d["service"] in off


def degraded(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The live daemons that report a problem."""
    return [d for d in report["daemons"] if d.get("problem") and not d["stale"]]


def healthy(report: dict[str, Any]) -> bool:
    database = report["database"]
    ok = database["reachable"] and database.get("schema_current") and not database["error"]
    return bool(ok) and not degraded(report)


def _print(report: dict[str, Any]) -> None:
    database = report["database"]
    if not database["reachable"]:
        console.print(Text(f"database: UNREACHABLE: {database['error']}", style="bold red"))
    else:
        have, want = database["schema_version"], database["schema_wanted"]
        if have == want:
            console.print(Text(f"database: reachable, schema {have} (current)"))
        elif have < want:
            console.print(
                Text(f"database: reachable, schema {have} but this release needs {want}: run `relatectl db migrate`"),
                style="bold red",
            )
        else:
            console.print(Text(f"database: reachable, schema {have} is newer than this release ({want})"), style="red")
        if database["error"]:
            console.print(Text(f"database: error: {database['error']}", style="bold red"))

    off: dict[str, str] = report.get("disabled", {})
    # A stale row of a service switched off here is what ran before: one "disabled" row stands for it.
    daemons = [d for d in report["daemons"] if not (d.get("disabled") and d["stale"])]
    here = socket.gethostname()
    if daemons or off:
        cells: list[list[str | Text]] = []
        for d in daemons:
            if d.get("disabled"):
                state = Text(f"running, but disabled in config ({off[d['service']]}): stops at restart", style="yellow")
            elif d["stale"]:
                state = Text("STALE", style="bold red")
            elif d.get("problem"):
                state = Text(f"DEGRADED: {d['problem']}", style="bold yellow")
            else:
                state = Text("running", style="green")
            cells.append(
                [
                    Text(d["host"]),
                    Text(d["service"]),
                    str(d["pid"]),
                    Text(d["version"]),
                    table_cell(d["started_at"]),
                    _ago(d["age_seconds"]),
                    str(d["connections"]),
                    state,
                ]
            )
        for service, reason in off.items():
            cells.append(
                [Text(here), Text(service), "-", "-", "-", "-", "-", Text(f"disabled ({reason})", style="dim")]
            )
        print_table(
            "Daemons",
            [
                ("host", "Host"),
                ("service", "Service"),
                ("pid", "PID", 1),
                ("version", "Version", 3),
                ("started", "Started", 2),
                ("last_seen", "Last seen"),
                ("connections", "Connections"),
                ("state", "State"),
            ],
            cells,
        )
        for host in dict.fromkeys(d["host"] for d in daemons):
            rows = [d for d in daemons if d["host"] == host]
            if all(d["stale"] for d in rows):
                newest = min(rows, key=lambda d: d["age_seconds"])
                console.print(
                    Text(
                        f"host {host}: no daemon heard from since {cell(newest['last_seen'])} "
                        f"({_ago(newest['age_seconds'])}); its rows go when a daemon starts there, or after 7 days",
                        style="bold red",
                    )
                )
        for d in daemons:
            numbers = d.get("metrics")
            if numbers:
                text = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in numbers.items() if k != "endpoint")
                console.print(Text(f"metrics {d['service']} (pid {d['pid']}, {numbers['endpoint']}): {text}"))
    elif database["reachable"]:
        console.print("daemons: none running (no heartbeats)", highlight=False)

    lone = [key for key in report.get("listeners_off", []) if key.split(".")[0] not in off]
    if lone:
        console.print(Text(f"listeners off in config: {', '.join(lone)}"))

    if database["reachable"]:
        by_status = report["queue"]["by_status"]
        counts = ", ".join(f"{status} {n}" for status, n in sorted(by_status.items())) or "empty"
        console.print(Text(f"queue: {counts}"))
        oldest = report["queue"]["oldest_deferred"]
        if oldest is not None:
            line = (
                f"oldest deferred: #{oldest['id']} from <{oldest['mail_from']}>, queued {_ago(oldest['age_seconds'])},"
                f" {oldest['attempts']} attempt(s), next try {cell(oldest['next_attempt_at'])},"
                f" last error: {oldest['last_error'] or '-'}"
            )
            console.print(Text(line))


def status(as_json: bool = JsonOption) -> None:
    """Show the database, every daemon on every host (stale and degraded ones marked), and the outbound queue.

    For this host's daemons, a few numbers from their metrics endpoints (metrics.* of the config).

    Exits 1 when the database is down or out of date, or a live daemon reports a problem.
    """
    report = run(gather(load_config()))
    if as_json:
        print_json(report)
    else:
        _print(report)
    if not healthy(report):
        raise typer.Exit(1)
