"""relatectl status, tls status and tls reload, against real daemon processes and certificate files."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner, Result

from relate.config import DatabaseConfig
from relate.services import accounts
from relate.store import db, heartbeats
from relate.store import queue as queue_store
from relate.store.queue import Outcome
from relatectl import common
from relatectl.main import app
from tests.daemons import Daemon, clean_env, daemon_argv, fetch, make_cert, write_config
from tests.protocol.delivery.helpers import ALICE, queue_mail


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables render 200 columns wide whatever the terminal."""
    monkeypatch.setattr(common.console, "_width", 200)


def relatectl(config: Path, *args: str) -> Result:
    env: dict[str, str | None] = {name: None for name in os.environ if name.startswith("RELATE_")}
    env.update({"RELATE_CONFIG": str(config), "NO_COLOR": "1", "COLUMNS": "200"})
    return CliRunner().invoke(app, list(args), env=env)


def start_pop3(config: Path, log: Path) -> Daemon:
    return Daemon(daemon_argv("relate.pop3", config), clean_env(), log)


def wait_rows(dsn: str, n: int, timeout: float = 60.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = fetch(dsn, "SELECT service, pid FROM daemon_heartbeats ORDER BY pid")
        if len(rows) == n:
            return rows
        time.sleep(0.2)
    raise AssertionError(f"expected {n} heartbeat rows, got {rows}")


async def _defer_one(dsn: str) -> int:
    """A queued message whose one recipient was deferred after a failed attempt; returns its id."""
    pool = await db.create_pool(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=2))
    try:
        await accounts.add_domain(pool, "example.com")
        await accounts.add_user(pool, ALICE)
        email_id = await queue_mail(pool, ["someone@elsewhere.example"])
        now = dt.datetime.now(dt.UTC)
        async with pool.acquire() as conn:
            claimed = [
                c for c in await queue_store.claim(conn, now, dt.timedelta(minutes=5), 10) if c.email_id == email_id
            ]
            await queue_store.record(
                conn,
                [
                    Outcome(
                        c.recipient_id,
                        "deferred",
                        "4.4.1",
                        "connection timed out",
                        next_attempt_at=now + dt.timedelta(minutes=10),
                    )
                    for c in claimed
                ],
                now,
            )
        await queue_mail(pool, ["other@elsewhere.example"])  # queued, never tried
        return email_id
    finally:
        await pool.close()


def test_status_shows_two_copies_stale_ones_and_the_queue(dsn: str, tmp_path: Path) -> None:
    """Two running copies of a daemon appear with their pids; a killed one turns stale; tls reload signals only the
    live one; a clean stop removes its row; the queue shows depth by status and the oldest deferred message."""
    deferred_id = asyncio.run(_defer_one(dsn))
    config = write_config(tmp_path / "relate.yaml", dsn, pop3={"pop3": {"listen": ["127.0.0.1:0"]}})
    first = start_pop3(config, tmp_path / "first.log")
    second = start_pop3(config, tmp_path / "second.log")
    try:
        wait_rows(dsn, 2)
        result = relatectl(config, "status", "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["database"]["reachable"] is True
        assert report["database"]["schema_current"] is True
        daemons = report["daemons"]
        assert sorted(d["pid"] for d in daemons) == sorted([first.pid, second.pid])
        assert {d["service"] for d in daemons} == {"pop3"}
        assert not any(d["stale"] for d in daemons)
        assert report["queue"]["by_status"] == {"queued": 2}
        oldest = report["queue"]["oldest_deferred"]
        assert oldest["id"] == deferred_id
        assert oldest["last_error"] == "connection timed out"

        first.signal(signal.SIGKILL)
        first.stop()
        time.sleep(3.5)  # three heartbeat intervals of one second
        result = relatectl(config, "status")
        assert result.exit_code == 0, result.output
        lines = [line for line in result.stdout.splitlines() if "pop3" in line]
        assert len(lines) == 2
        assert any(str(first.pid) in line and "STALE" in line for line in lines), result.stdout
        assert any(str(second.pid) in line and "running" in line for line in lines), result.stdout
        assert f"oldest deferred: #{deferred_id}" in result.stdout
        assert "queued 2" in result.stdout

        reload = relatectl(config, "tls", "reload")
        assert reload.exit_code == 0, reload.output
        assert f"pid {second.pid}" in reload.stdout
        assert f"pid {first.pid}" not in reload.stdout
        second.wait_log("reloading TLS certificates", timeout=10)
        assert second.stop() == 0
    finally:
        first.stop()
        second.stop()
    assert [r["pid"] for r in fetch(dsn, "SELECT pid FROM daemon_heartbeats")] == [first.pid]


def test_status_unreachable_database_exits_1(tmp_path: Path) -> None:
    """With the database down, status says so and exits 1 (a usable monitoring check)."""
    config = write_config(tmp_path / "relate.yaml", "postgresql://relate@127.0.0.1:9/relate")
    result = relatectl(config, "status")
    assert result.exit_code == 1
    assert "UNREACHABLE" in result.stdout
    as_json = json.loads(relatectl(config, "status", "--json").stdout)
    assert as_json["database"]["reachable"] is False
    assert "cannot connect" in as_json["database"]["error"]


def test_status_old_schema_names_the_fix(empty_dsn: str, tmp_path: Path) -> None:
    """On a database that was never migrated, status exits 1 and names `relatectl db migrate`."""
    config = write_config(tmp_path / "relate.yaml", empty_dsn)
    result = relatectl(config, "status")
    assert result.exit_code == 1
    assert "relatectl db migrate" in result.stdout


def test_tls_reload_with_no_daemon_fails(dsn: str, tmp_path: Path) -> None:
    """tls reload with nothing running on this host says so and exits 1."""
    config = write_config(tmp_path / "relate.yaml", dsn)
    result = relatectl(config, "tls", "reload")
    assert result.exit_code == 1
    assert "no running Relate Mail daemon" in result.stderr


def expired_cert(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old.example.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=100))
        .not_valid_after(now - dt.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "expired.crt", directory / "expired.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_tls_status_per_listener_with_warnings(tmp_path: Path) -> None:
    """tls status lists each listener's certificate with days left, warns under 14 days, exit 0 when all valid."""
    good, good_key = make_cert(tmp_path, "mail.example.com", days=400)
    soon, soon_key = make_cert(tmp_path, "imap.example.com", days=10)
    on = {"listen": ["127.0.0.1:0"]}
    config = write_config(
        tmp_path / "relate.yaml",
        "postgresql://relate@127.0.0.1:9/relate",  # tls status reads files only: no database needed
        tls={"cert": str(good), "key": str(good_key)},
        smtp={"submissions": on},
        imap={"imaps": {**on, "cert": str(soon), "key": str(soon_key)}},
    )
    result = relatectl(config, "tls", "status", "--json")
    assert result.exit_code == 0, result.output
    rows = {(r["service"], r["listener"]): r for r in json.loads(result.stdout)}
    assert set(rows) == {("smtp", "submissions"), ("imap", "imaps")}
    assert rows["smtp", "submissions"]["subject"] == "CN=mail.example.com"
    assert "mail.example.com" in rows["smtp", "submissions"]["names"]
    assert rows["smtp", "submissions"]["days_left"] in (398, 399, 400)
    assert rows["smtp", "submissions"]["state"] == "ok"
    assert rows["imap", "imaps"]["state"] == "expiring"
    assert rows["imap", "imaps"]["days_left"] in (9, 10)
    assert "imap.imaps" in result.stderr
    assert "expires in" in result.stderr

    table = relatectl(config, "tls", "status")
    assert table.exit_code == 0
    assert "CN=imap.example.com" in table.stdout
    assert "expiring" in table.stdout


def test_tls_status_expired_or_unreadable_exits_1(tmp_path: Path) -> None:
    """An expired certificate or an unreadable file is shown as such and makes the exit code 1."""
    old, old_key = expired_cert(tmp_path)
    on = {"listen": ["127.0.0.1:0"]}
    config = write_config(
        tmp_path / "relate.yaml",
        "postgresql://relate@127.0.0.1:9/relate",
        pop3={"pop3s": {**on, "cert": str(old), "key": str(old_key)}},
        imap={"imaps": {**on, "cert": str(tmp_path / "missing.crt"), "key": str(tmp_path / "missing.key")}},
    )
    result = relatectl(config, "tls", "status", "--json")
    assert result.exit_code == 1
    rows = {r["listener"]: r for r in json.loads(result.stdout)}
    assert rows["pop3s"]["state"] == "expired"
    assert rows["pop3s"]["days_left"] < 0
    assert rows["imaps"]["state"] == "error"
    assert "No such file" in rows["imaps"]["error"]
    assert "is expired" in result.stderr


def test_tls_status_without_certificates_names_what_cannot_serve(tmp_path: Path) -> None:
    """No certificate at all: the TLS-only listeners (465, 993, 995) and submission on 587 (no login before
    STARTTLS) are errors naming the fix, and the exit code is 1; port 25, 143 and 110 are plain "none"."""
    on = {"listen": ["127.0.0.1:0"]}
    config = write_config(
        tmp_path / "relate.yaml",
        "postgresql://relate@127.0.0.1:9/relate",
        smtp={"mx": on, "submission": on, "submissions": on},
        imap={"imap": on, "imaps": on},
        pop3={"pop3": on, "pop3s": on},
    )
    result = relatectl(config, "tls", "status", "--json")
    assert result.exit_code == 1
    states = {r["listener"]: r["state"] for r in json.loads(result.stdout)}
    assert states == {
        "mx": "none",
        "submission": "missing",
        "submissions": "missing",
        "imap": "none",
        "imaps": "missing",
        "pop3": "none",
        "pop3s": "missing",
    }
    errors = result.stderr.splitlines()
    assert len(errors) == 4
    assert "error: imap.imaps: serves only over TLS and has no certificate: set tls.cert and tls.key" in errors[2]


async def _register(dsn: str, problem: str | None) -> None:
    conn = await db.connect(DatabaseConfig(dsn=dsn))
    try:
        await heartbeats.register(
            conn, host="mx1", service="imap", pid=4242, version="0.1.0", interval=15, connections=3, problem=problem
        )
    finally:
        await conn.close()


def test_status_shows_a_degraded_daemon_and_exits_1(dsn: str, tmp_path: Path) -> None:
    """A live daemon that reports a problem (its change feed lost the database) is shown DEGRADED, with the
    problem, and makes status exit 1 for monitoring; the problem gone, status is healthy again."""
    config = write_config(tmp_path / "relate.yaml", dsn)
    asyncio.run(_register(dsn, "change feed down for 42s (connection refused): no push, IDLE or hub events"))
    result = relatectl(config, "status")
    assert result.exit_code == 1, result.output
    line = next(line for line in result.stdout.splitlines() if "mx1" in line)
    assert "DEGRADED: change feed down for 42s" in line
    report = json.loads(relatectl(config, "status", "--json").stdout)
    assert report["daemons"][0]["problem"].startswith("change feed down")

    asyncio.run(_register(dsn, None))
    result = relatectl(config, "status")
    assert result.exit_code == 0, result.output
    assert "running" in next(line for line in result.stdout.splitlines() if "mx1" in line)


async def _heartbeat(dsn: str, host: str, service: str, pid: int, *, hours_ago: float = 0) -> None:
    """A heartbeat row as the daemon writes it, last heard from ``hours_ago``."""
    conn = await db.connect(DatabaseConfig(dsn=dsn))
    try:
        row = await heartbeats.register(conn, host=host, service=service, pid=pid, version="0.1.0", interval=15)
        await conn.execute(
            "UPDATE daemon_heartbeats SET last_seen = now() - make_interval(secs => $2) WHERE id = $1",
            row,
            hours_ago * 3600,
        )
    finally:
        await conn.close()


def test_a_restarted_daemon_replaces_its_dead_rows_and_a_gone_host_says_when_it_was_seen(
    dsn: str, tmp_path: Path
) -> None:
    """Crashes of one service on one host leave one stale row at most: the next start of that service there
    replaces them. A host whose every daemon is stale gets one line saying when it was last heard from."""
    config = write_config(tmp_path / "relate.yaml", dsn)
    for pid in (101, 102, 103):  # three crashes, each restarted
        asyncio.run(_heartbeat(dsn, "mx1", "smtp", pid, hours_ago=1))
    asyncio.run(_heartbeat(dsn, "mx1", "smtp", 104))
    asyncio.run(_heartbeat(dsn, "mx1", "imap", 105, hours_ago=1))  # another service's dead row stays
    asyncio.run(_heartbeat(dsn, "old-box", "pop3", 7, hours_ago=3))
    report = json.loads(relatectl(config, "status", "--json").stdout)
    assert sorted((d["host"], d["pid"], d["stale"]) for d in report["daemons"]) == [
        ("mx1", 104, False),
        ("mx1", 105, True),
        ("old-box", 7, True),
    ]
    text = relatectl(config, "status").stdout
    (line,) = [line for line in text.splitlines() if line.startswith("host ")]
    assert line.startswith("host old-box: no daemon heard from since ")
    assert "(3h ago)" in line
