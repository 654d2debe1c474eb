"""relatectl tls: the certificates the listeners use, and reloading them without a restart.

``tls status`` reads the certificate files the config names, per service and
listener (a listener without its own pair uses ``tls.cert``/``tls.key``),
and shows subject, names, issuer, expiry and days left. A certificate with
fewer than 14 days left is a warning; an expired or unreadable one, or none
at all where the listener serves only over TLS (465, 993, 995, and 587, which
takes no login before STARTTLS), makes the exit code 1, so the command
doubles as a monitoring check.

``tls reload`` makes the daemons on this host re-read their certificates:
``systemctl reload relate.target`` when systemd runs Relate Mail (each unit's
ExecReload sends SIGHUP), else SIGHUP to each daemon process this host
recorded in the heartbeats, after checking that the pid still belongs to a
relate process. Live connections keep their certificate; new ones get the
new one; a daemon that cannot load the new pair keeps the old and logs why.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import typer
from cryptography.exceptions import UnsupportedAlgorithm
from rich.text import Text

from relate.config import Config, ListenerConfig
from relate.runtime.tls import certificate_summary
from relate.store import heartbeats
from relatectl.cli import App, JsonOption
from relatectl.common import (
    cell,
    console,
    err_console,
    fail,
    load_config,
    print_json,
    print_table,
    table_cell,
    with_pool,
)

app = App(help="TLS certificates: what each listener uses, and reloading them.")

WARN_DAYS = 14
# Listeners that cannot serve without a certificate: implicit TLS (465, 993, 995), and submission on 587,
# which takes no AUTH before STARTTLS.
NEEDS_TLS = frozenset({"submission", "submissions", "imaps", "pop3s"})


def listeners(cfg: Config) -> list[tuple[str, str, ListenerConfig]]:
    """(service, listener, config) of every TLS-capable listener."""
    found = [("smtp", role, lst) for role, lst in cfg.smtp.listeners().items()]
    found += [("imap", "imap", cfg.imap.imap), ("imap", "imaps", cfg.imap.imaps)]
    found += [("pop3", "pop3", cfg.pop3.pop3), ("pop3", "pop3s", cfg.pop3.pop3s)]
    return found


def inspect(cfg: Config, now: datetime | None = None) -> list[dict[str, Any]]:
    """One row per listener with a certificate: what the file holds, days left and a state."""
    now = now or datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    off = set(cfg.disabled_listeners())
    for service, listener, lst in listeners(cfg):
        if not lst.listen or f"{service}.{listener}" in off:
            continue  # switched off (under socket activation the .socket unit decides, the config still lists it)
        cert, key = (lst.cert, lst.key) if lst.cert is not None else (cfg.tls.cert, cfg.tls.key)
        row: dict[str, Any] = {
            "service": service,
            "listener": listener,
            "cert": cert,
            "key": key,
            "subject": None,
            "names": [],
            "issuer": None,
            "not_after": None,
            "days_left": None,
            "state": "none",
            "error": None,
        }
        rows.append(row)
        if cert is None:
            if listener in NEEDS_TLS:
                row["state"] = "missing"
            continue
        try:
            info = certificate_summary(Path(cert))
        except (OSError, ValueError, UnsupportedAlgorithm) as exc:
            row["state"] = "error"
            row["error"] = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            continue
        days = (info.not_after - now).total_seconds() / 86400
        row.update(
            subject=info.subject,
            names=info.names,
            issuer=info.issuer,
            not_after=info.not_after,
            days_left=int(days) if days >= 0 else -int(-days) - 1,
        )
        if info.not_after <= now:
            row["state"] = "expired"
        elif info.not_before > now:
            row["state"] = "not yet valid"
        elif days < WARN_DAYS:
            row["state"] = "expiring"
        else:
            row["state"] = "ok"
    return rows


_STYLE = {
    "ok": "green",
    "expiring": "bold yellow",
    "expired": "bold red",
    "error": "bold red",
    "missing": "bold red",
    "none": "dim",
}


@app.command("status")
def status_cmd(as_json: bool = JsonOption) -> None:
    """Per service and listener: certificate subject, names, issuer, expiry and days left."""
    rows = inspect(load_config())
    if as_json:
        print_json(rows)
    elif not rows:
        console.print("no listeners are configured", highlight=False)
    else:
        cells: list[list[str | Text]] = []
        for r in rows:
            state = r["state"] if r["state"] != "error" else f"error: {r['error']}"
            cells.append(
                [
                    r["service"],
                    r["listener"],
                    Text(cell(r["subject"])),
                    Text(cell(r["names"])),
                    Text(cell(r["issuer"])),
                    table_cell(r["not_after"]),
                    cell(r["days_left"]),
                    Text(state, style=_STYLE.get(r["state"], "")),
                ]
            )
        print_table(
            "TLS certificates",
            [
                ("service", "Service"),
                ("listener", "Listener"),
                ("subject", "Subject", 2),
                ("names", "Names"),
                ("issuer", "Issuer", 3),
                ("not_after", "Expires", 1),
                ("days_left", "Days left"),
                ("state", "State"),
            ],
            cells,
        )
    for r in rows:
        where = f"{r['service']}.{r['listener']}"
        if r["state"] == "expiring":
            err_console.print(
                Text(f"warning: {where}: {r['cert']} expires in {r['days_left']} days", style="yellow"),
                highlight=False,
            )
        elif r["state"] in {"expired", "not yet valid"}:
            err_console.print(Text(f"error: {where}: {r['cert']} is {r['state']}", style="red"), highlight=False)
        elif r["state"] == "error":
            err_console.print(Text(f"error: {where}: cannot read {r['cert']}: {r['error']}", style="red"))
        elif r["state"] == "missing":
            err_console.print(
                Text(
                    f"error: {where}: serves only over TLS and has no certificate: set tls.cert and tls.key "
                    "(relatectl setup makes a self-signed pair)",
                    style="red",
                ),
                highlight=False,
            )
    if any(r["state"] in {"expired", "not yet valid", "error", "missing"} for r in rows):
        raise typer.Exit(1)


def _systemd_runs_relate() -> bool:
    """True when this host boots with systemd and relate.target is active."""
    systemctl = shutil.which("systemctl")
    if systemctl is None or not Path("/run/systemd/system").is_dir():
        return False
    done = subprocess.run([systemctl, "is-active", "--quiet", "relate.target"], check=False)  # noqa: S603
    return done.returncode == 0


def _is_relate_process(pid: int) -> bool:
    """The pid is alive and runs a relate daemon (not some process that reused the number)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"relate" in cmdline


@app.command("reload")
def reload_cmd() -> None:
    """Make the daemons on this host re-read their certificates (live connections continue)."""
    if _systemd_runs_relate():
        systemctl = shutil.which("systemctl") or "systemctl"
        done = subprocess.run([systemctl, "reload", "relate.target"], check=False)  # noqa: S603
        if done.returncode != 0:
            fail(f"systemctl reload relate.target failed (exit {done.returncode})")
        console.print("reloaded relate.target (each daemon got SIGHUP)", highlight=False)
        return
    host = socket.gethostname()

    async def go(pool: asyncpg.Pool) -> list[tuple[str, int]]:
        return await heartbeats.local_pids(pool, host)

    signalled = 0
    seen: set[int] = set()
    for service, pid in with_pool(go):
        if pid in seen or not _is_relate_process(pid):  # a process serving several services has a row for each
            continue
        seen.add(pid)
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            continue
        except PermissionError:
            fail(f"not allowed to signal relate-{service} (pid {pid}): run as root or as the relate user")
        console.print(f"sent SIGHUP to relate-{service} (pid {pid})", highlight=False)
        signalled += 1
    if not signalled:
        fail(f"no running Relate Mail daemon recorded for this host ({host})")
