"""`relatectl dev` as a user runs it: a real process, its own embedded PostgreSQL."""

from __future__ import annotations

import asyncio
import imaplib
import json
import os
import poplib
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from relate.auth import Authenticator
from relate.config import AuthConfig, DatabaseConfig
from relate.runtime.tls import make_self_signed
from relate.store import db


def start(state_dir: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELATE_")}
    return subprocess.Popen(
        [sys.executable, "-m", "relatectl", "dev", "--state-dir", str(state_dir), "--any-port"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def wait_ready(proc: subprocess.Popen[str]) -> str:
    """Read the dev run's output up to its 'Ctrl-C' line; returns what it printed."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Ctrl-C" in line:
            return "".join(lines)
    proc.kill()
    pytest.fail("dev run did not come up:\n" + "".join(lines))


def stop(proc: subprocess.Popen[str], sig: int) -> str:
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    return out


async def authenticates(dsn: str, user: str, key: str) -> bool:
    pool = await db.create_pool(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=2))
    try:
        auth = Authenticator(pool, AuthConfig())
        principal = await auth.authenticate(user, key, "imap", client="test", service="test")
        return principal.address == user
    finally:
        await pool.close()


def send_both_ways(info: dict[str, Any]) -> None:
    """One message in over the MX port, one submitted with the demo key over STARTTLS."""
    with smtplib.SMTP("127.0.0.1", info["ports"]["smtp"], timeout=10) as mx:
        mx.sendmail("someone@elsewhere.example", [info["user"]], b"Subject: via mx\r\n\r\nhello\r\n")
    tls = ssl.create_default_context(cafile=info["tls"]["cert"])
    with smtplib.SMTP("localhost", info["ports"]["submission"], timeout=10) as sub:
        sub.starttls(context=tls)
        sub.login(info["user"], info["key"])
        sub.sendmail(
            info["user"], [info["user"]], f"From: {info['user']}\r\nSubject: via submission\r\n\r\nhi\r\n".encode()
        )


async def inbox_subjects(dsn: str, user: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT m.subject FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
                 JOIN users u ON u.id = b.user_id WHERE u.address = $1 AND b.name = 'INBOX' ORDER BY m.uid""",
            user,
        )
        return [r["subject"] for r in rows]
    finally:
        await conn.close()


def peer_common_name(port: int) -> str:
    """The CN of the certificate an implicit-TLS listener presents now."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def reloads_every_listener(info: dict[str, Any]) -> None:
    """A new certificate in place, `relatectl tls reload` makes IMAP, POP3 and SMTP present it."""
    ports = [info["ports"][name] for name in ("imaps", "pop3s", "submissions")]
    assert {peer_common_name(port) for port in ports} == {"localhost"}
    make_self_signed(Path(info["tls"]["cert"]), Path(info["tls"]["key"]), "renewed.example.test")
    subprocess.run(
        [sys.executable, "-m", "relatectl", "tls", "reload"],
        env={**os.environ, "RELATE_DATABASE__DSN": info["dsn"]},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert {peer_common_name(port) for port in ports} == {"renewed.example.test"}


def shows_metrics(state: Path, info: dict[str, Any], pids: dict[str, int]) -> None:
    """Each daemon serves its metrics on the port in dev.json, and `relatectl status` with the dev run's
    config shows the two messages the SMTP daemon accepted."""
    for service, port in info["metrics"].items():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            assert resp.headers["X-Relate-Pid"] == str(pids[service])
            assert f'relate_daemon_info{{service="{service}"'.encode() in resp.read()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELATE_")}
    command = [sys.executable, "-m", "relatectl", "--config", str(state / "relate.yaml"), "status"]
    status = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True, timeout=30, check=True)
    smtp = next(d for d in json.loads(status.stdout)["daemons"] if d["service"] == "smtp")
    assert smtp["metrics"]["accepted"] == 2
    assert smtp["metrics"]["endpoint"] == f"127.0.0.1:{info['metrics']['smtp']}"
    shown = subprocess.run(command, env={**env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=30).stdout
    assert f"metrics smtp (pid {pids['smtp']}, 127.0.0.1:{info['metrics']['smtp']}): connections" in shown
    assert "accepted 2, refused 0" in shown
    assert "metrics delivery (pid" in shown


def restarts_a_killed_daemon(info: dict[str, Any], pid: int) -> None:
    """A daemon killed with SIGKILL is started again on the same port, as systemd's Restart= would."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        try:
            with imaplib.IMAP4("127.0.0.1", info["ports"]["imap"], timeout=5) as imap:
                imap.login(info["user"], info["key"])
                break
        except (OSError, imaplib.IMAP4.error):
            assert time.monotonic() < deadline, "IMAP did not come back after its process was killed"
            time.sleep(0.2)


@pytest.mark.slow
def test_dev_run_prints_credentials_and_stops_cleanly(tmp_path: Path) -> None:
    """The dev run prints a working key, serves SMTP, writes dev.json, stops on SIGINT/SIGTERM, reuses its state."""
    state = tmp_path / "state"
    proc = start(state)
    try:
        banner = wait_ready(proc)
        info = json.loads((state / "dev.json").read_text())
        assert info["domain"] == "example.test"
        assert info["user"] == "demo@example.test"
        assert info["key"] in banner
        assert info["dsn"] in banner
        assert (state / "dev.json").stat().st_mode & 0o077 == 0
        assert asyncio.run(authenticates(info["dsn"], info["user"], info["key"]))
        assert set(info["ports"]) == {"smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "api"}
        assert set(info["metrics"]) == {"smtp", "imap", "pop3", "api", "delivery"}
        assert f"smtp {info['metrics']['smtp']}" in banner
        send_both_ways(info)
        assert asyncio.run(inbox_subjects(info["dsn"], info["user"])) == ["via mx", "via submission"]
        with imaplib.IMAP4("127.0.0.1", info["ports"]["imap"], timeout=10) as imap:
            imap.login(info["user"], info["key"])
            imap.select("INBOX", readonly=True)
            _, found = imap.search(None, "SUBJECT", "submission")
            assert found == [b"2"]
        pop = poplib.POP3("127.0.0.1", info["ports"]["pop3"], timeout=10)
        try:
            pop.user(info["user"])
            pop.pass_(info["key"])
            assert pop.stat()[0] == 2
        finally:
            pop.quit()
        request = urllib.request.Request(
            f"http://127.0.0.1:{info['ports']['api']}/api/emails",
            headers={"Authorization": f"Bearer {info['key']}"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 (a fixed http URL)
            listing = json.loads(resp.read())
        assert [e["subject"] for e in listing["items"]] == ["via submission", "via mx"]
        autoconfig = f"http://127.0.0.1:{info['ports']['api']}/mail/config-v1.1.xml?emailaddress={info['user']}"
        with urllib.request.urlopen(autoconfig, timeout=10) as resp:
            assert f"<port>{info['ports']['imaps']}</port>" in resp.read().decode()
        status = subprocess.run(
            [sys.executable, "-m", "relatectl", "status", "--json"],
            env={**os.environ, "RELATE_DATABASE__DSN": info["dsn"]},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        daemons = json.loads(status.stdout)["daemons"]
        assert sorted(d["service"] for d in daemons) == ["api", "delivery", "imap", "pop3", "smtp"]
        # Shaped like an installed system: each daemon a process of its own, none of them the dev run itself.
        pids = {d["service"]: d["pid"] for d in daemons}
        assert len(set(pids.values())) == 5
        assert proc.pid not in pids.values()
        shows_metrics(state, info, pids)
        reloads_every_listener(info)
        restarts_a_killed_daemon(info, pids["imap"])
    finally:
        out = stop(proc, signal.SIGINT)
    assert proc.returncode == 0, out
    assert "stopped" in out
    socket_dir = info["dsn"].split("host=")[1].split("&")[0]
    assert not list(Path(socket_dir).glob(".s.PGSQL.*")), "the embedded PostgreSQL is still running:\n" + out

    again = start(state)
    try:
        banner = wait_ready(again)
        assert info["key"] in banner, "a second run reuses the demo key"
    finally:
        stop(again, signal.SIGTERM)
    assert again.returncode == 0
