"""Protocols switched off in config (smtp.enabled, imap.enabled, pop3.enabled, and each listener's enabled):
the daemon exits 0 at once with one line and tells systemd so, a listener off is not served even when systemd
hands its socket over, the dev run starts nothing of it, and relatectl status shows it as disabled."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from relate import config as config_mod
from relatectl import common
from relatectl.main import app
from tests.daemons import NotifyListener, clean_env, daemon_argv, fetch, socket_activated, write_config
from tests.integration.test_dev_run import wait_ready

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/x"  # nothing listens on port 1


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables render 200 columns wide whatever the terminal."""
    monkeypatch.setattr(common.console, "_width", 200)


def test_switches_in_yaml_and_environment() -> None:
    """`pop3.enabled: false` (or RELATE_POP3__ENABLED=false) turns POP3 off; every SMTP listener off turns SMTP
    off; one listener off leaves its protocol on and is named."""
    cfg = config_mod.from_mapping(
        {"pop3": {"enabled": False}, "imap": {"imaps": {"enabled": False}}}, "test", environ={}
    )
    assert cfg.disabled_services() == {"pop3": "pop3.enabled is false"}
    assert cfg.disabled_listeners() == ["imap.imaps", "pop3.pop3", "pop3.pop3s"]
    off = {"enabled": False}
    cfg = config_mod.from_mapping(
        {"smtp": {"mx": off, "submission": off, "submissions": off}}, "test", environ={"RELATE_IMAP__ENABLED": "no"}
    )
    assert cfg.disabled_services() == {
        "smtp": "every listener is off (smtp.mx.enabled, smtp.submission.enabled, smtp.submissions.enabled)",
        "imap": "imap.enabled is false",
    }
    assert config_mod.from_mapping({}, "test", environ={}).disabled_services() == {}


@pytest.mark.parametrize("name", ["smtp", "imap", "pop3"])
def test_a_disabled_daemon_exits_0_at_once_and_tells_systemd(name: str, tmp_path: Path) -> None:
    """Switched off, each daemon exits 0 within seconds without touching the database, logs one line saying
    why, and sends READY=1 then STOPPING=1 (a Type=notify unit that exits before READY fails with result
    'protocol', which Restart=on-failure would restart)."""
    config = write_config(tmp_path / "relate.yaml", UNREACHABLE, **{name: {"enabled": False}})
    notify = NotifyListener(tmp_path)
    try:
        started = time.monotonic()
        done = subprocess.run(
            daemon_argv(f"relate.{name}", config),
            env=clean_env(NOTIFY_SOCKET=str(notify.path)),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert time.monotonic() - started < 20
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, lines
        assert f"disabled service={name}: {name}.enabled is false, exiting" in lines[0]
        ready = notify.wait_for("READY", "1", timeout=5)
        assert "disabled in config" in ready["STATUS"]
        notify.wait_for("STOPPING", "1", timeout=5)
    finally:
        notify.close()


def test_a_disabled_daemon_started_by_its_socket_names_the_units(tmp_path: Path) -> None:
    """Socket-activated (as by its .socket units) and switched off, relate-pop3 exits 0 at the first connection
    and its log line names the socket units to disable."""
    config = write_config(tmp_path / "relate.yaml", UNREACHABLE, pop3={"enabled": False})
    daemon, ports = socket_activated("relate.pop3", config, ["pop3", "pop3s"], tmp_path / "pop3.log")
    with socket.create_connection(("127.0.0.1", ports["pop3"]), timeout=10) as conn:
        conn.settimeout(20)
        try:
            answer = conn.recv(100)
        except ConnectionResetError:
            answer = b""
        assert answer == b""  # closed unanswered: the process that held the socket exited
    assert daemon.proc.wait(timeout=30) == 0
    assert daemon.stop() == 0
    log = daemon.log()
    assert "systemd still listens for it on relate-pop3.socket relate-pop3s.socket: run `relatectl setup`" in log


def test_a_listener_off_is_not_served_even_when_systemd_passes_it(dsn: str, tmp_path: Path) -> None:
    """smtp.submissions.enabled: false: relate-smtp serves MX on the socket it is handed, closes the submissions
    socket unserved (a connection is refused) and says which unit `relatectl setup` masks."""
    config = write_config(
        tmp_path / "relate.yaml",
        dsn,
        smtp={"mx": {"listen": []}, "submissions": {"enabled": False}},
    )
    daemon, ports = socket_activated("relate.smtp", config, ["mx", "submissions"], tmp_path / "smtp.log")
    try:
        with smtplib.SMTP("127.0.0.1", ports["mx"], timeout=30) as mx:
            assert mx.noop()[0] == 250
        daemon.wait_log("ready service=smtp")
        assert "listener-disabled role=submissions" in daemon.log()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", ports["submissions"]), timeout=5).close()
        told = "relate-smtp-submissions.socket passed it, closed unserved; run `relatectl setup` as root"
        assert told in daemon.log()
    finally:
        assert daemon.stop() == 0


def test_dev_run_starts_nothing_switched_off_and_status_shows_it_disabled(tmp_path: Path) -> None:
    """With pop3.enabled false and smtp.submission off, the dev run starts no relate-pop3 and binds neither POP3
    port nor 587, prints them as off, and relatectl status shows POP3 as disabled (not missing, not stale)."""
    config = tmp_path / "relate.yaml"
    config.write_text("pop3:\n  enabled: false\nsmtp:\n  submission:\n    enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELATE_")}
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "relatectl", "--config", str(config), "dev", "--state-dir", str(state), "--any-port"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        banner = wait_ready(proc)
        assert "pop3         off (pop3.enabled is false)" in banner
        assert "submission   off (smtp.submission.enabled is false)" in banner
        info = json.loads((state / "dev.json").read_text())
        assert set(info["ports"]) == {"smtp", "submissions", "imap", "imaps", "api"}
        assert info["off"] == {"pop3": "pop3.enabled is false", "submission": "smtp.submission.enabled is false"}
        # A heartbeat row left by a relate-pop3 that ran here before POP3 was switched off.
        assert _heartbeats(info["dsn"]) == {"smtp", "imap", "api", "delivery"}
        _stale_pop3(info["dsn"])
        env_cli: dict[str, str | None] = {name: None for name in os.environ if name.startswith("RELATE_")}
        env_cli.update({"RELATE_DATABASE__DSN": info["dsn"], "NO_COLOR": "1", "COLUMNS": "200"})
        result = CliRunner().invoke(app, ["--config", str(config), "status"], env=env_cli)
        assert result.exit_code == 0, result.output
        pop3_rows = [line for line in result.output.splitlines() if " pop3 " in line]
        assert len(pop3_rows) == 1, result.output
        assert "disabled (pop3.enabled is false)" in pop3_rows[0]
        assert "STALE" not in result.output
        assert "listeners off in config: smtp.submission" in result.output
        result = CliRunner().invoke(app, ["--config", str(config), "status", "--json"], env=env_cli)
        report = json.loads(result.output)
        assert report["disabled"] == {"pop3": "pop3.enabled is false"}
        assert report["listeners_off"] == ["smtp.submission", "pop3.pop3", "pop3.pop3s"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)


def _heartbeats(dsn: str) -> set[str]:
    """The services with a heartbeat row, once the dev run's four daemons have written theirs."""
    deadline = time.monotonic() + 30
    while True:
        services = {r["service"] for r in fetch(dsn, "SELECT service FROM daemon_heartbeats")}
        if len(services) >= 4 or time.monotonic() > deadline:
            return services
        time.sleep(0.2)


def _stale_pop3(dsn: str) -> None:
    """A row of a relate-pop3 on this host last heard from an hour ago (stale)."""
    fetch(
        dsn,
        """INSERT INTO daemon_heartbeats (host, service, pid, version, interval_seconds, last_seen)
           VALUES ($1, 'pop3', 999999, 'old', 1, now() - interval '1 hour') RETURNING id""",
        socket.gethostname(),
    )


def test_tls_status_leaves_out_what_is_switched_off(tmp_path: Path) -> None:
    """With no certificate anywhere, `tls status` fails for the TLS-only listeners; switched off (SMTP, POP3 and
    imaps), they are not checked, and what is left (IMAP on 143, STARTTLS) passes."""
    config = tmp_path / "relate.yaml"
    config.write_text("smtp:\n  enabled: false\npop3:\n  enabled: false\nimap:\n  imaps:\n    enabled: false\n")
    env: dict[str, str | None] = {name: None for name in os.environ if name.startswith("RELATE_")}
    env.update({"NO_COLOR": "1", "COLUMNS": "200"})
    result = CliRunner().invoke(app, ["--config", str(config), "tls", "status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert {(row["service"], row["listener"]) for row in json.loads(result.output)} <= {("imap", "imap")}
    config.write_text("imap:\n  imaps:\n    enabled: true\n")
    result = CliRunner().invoke(app, ["--config", str(config), "tls", "status", "--json"], env=env)
    assert result.exit_code == 1
