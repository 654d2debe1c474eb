"""The daemons under systemd's protocols: socket activation, sd_notify, graceful stop, SIGHUP certificate reload.

Each daemon is started by ``systemd-socket-activate`` on loopback ports with
the FileDescriptorName= roles its .socket unit gives, and reports to a
NOTIFY_SOCKET of the test's own, so what is checked is what systemd sees.
"""

from __future__ import annotations

import imaplib
import poplib
import signal
import smtplib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import USER, NotifyListener, add_user, fetch, make_cert, retry, socket_activated, write_config

pytestmark = pytest.mark.slow


def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifyListener]:
    """A NOTIFY_SOCKET for the daemon under test."""
    listener = NotifyListener(tmp_path)
    yield listener
    listener.close()


def test_smtp_socket_activated_ready_status_watchdog_and_graceful_stop(
    dsn: str, tmp_path: Path, notify: NotifyListener
) -> None:
    """relate-smtp serves mx/submission/submissions from systemd's sockets, reports READY/STATUS/WATCHDOG, and
    finishes a DATA transfer in flight after SIGTERM before it exits."""
    key = add_user(dsn)
    cert, cert_key = make_cert(tmp_path)
    config = write_config(tmp_path / "relate.yaml", dsn, tls={"cert": str(cert), "key": str(cert_key)})
    daemon, ports = socket_activated(
        "relate.smtp",
        config,
        ["mx", "submission", "submissions"],
        tmp_path / "smtp.log",
        notify=notify.path,
        WATCHDOG_USEC="1000000",
    )
    try:
        with retry(lambda: smtplib.SMTP("127.0.0.1", ports["mx"], timeout=60)) as mx:
            ready = notify.wait_for("READY", "1")
            assert ready["MAINPID"] == str(daemon.pid)
            # READY=1 comes after the database: the heartbeat row is written before it.
            rows = fetch(dsn, "SELECT service, pid FROM daemon_heartbeats")
            assert rows == [{"service": "smtp", "pid": daemon.pid}]
            mx.sendmail("someone@elsewhere.example", [USER], b"Subject: via mx\r\n\r\nhello\r\n")
        with smtplib.SMTP("127.0.0.1", ports["submission"], timeout=30) as sub:
            sub.starttls(context=client_tls())
            sub.login(USER, key)
            sub.sendmail(USER, [USER], f"From: {USER}\r\nSubject: via submission\r\n\r\nhi\r\n".encode())
        with smtplib.SMTP_SSL("127.0.0.1", ports["submissions"], timeout=30, context=client_tls()) as subs:
            subs.login(USER, key)
            subs.sendmail(USER, [USER], f"From: {USER}\r\nSubject: via submissions\r\n\r\nhi\r\n".encode())
        log = daemon.log()
        for role in ("mx", "submission", "submissions"):
            assert f"role={role} address=127.0.0.1:{ports[role]}" in log
        notify.wait_for("WATCHDOG", "1")
        notify.wait_for("WATCHDOG", "1", after=len(notify.messages))  # and again: kept alive, not sent once

        slow = smtplib.SMTP("127.0.0.1", ports["mx"], timeout=30)
        slow.ehlo()
        assert slow.mail("late@elsewhere.example")[0] == 250
        assert slow.rcpt(USER)[0] == 250
        slow.putcmd("data")
        assert slow.getreply()[0] == 354
        notify.wait_for("STATUS", "relate-smtp running, 1 open connection")
        slow.send(b"Subject: in flight\r\n\r\nfirst half\r\n")
        daemon.signal(signal.SIGTERM)
        notify.wait_for("STOPPING", "1")
        slow.send(b"second half\r\n.\r\n")
        assert slow.getreply()[0] == 250, "the transaction in flight was cut off"
        slow.close()
        assert daemon.stop() == 0, daemon.log()
    finally:
        daemon.stop()
    subjects = [r["subject"] for r in fetch(dsn, "SELECT subject FROM messages ORDER BY id")]
    assert "in flight" in subjects
    assert {"via mx", "via submission", "via submissions"} <= set(subjects)
    assert fetch(dsn, "SELECT id FROM daemon_heartbeats") == [], "a clean stop removes the heartbeat"


def test_imap_and_pop3_socket_activated_bye_on_stop(dsn: str, tmp_path: Path, notify: NotifyListener) -> None:
    """relate-imap and relate-pop3 serve imap/imaps and pop3/pop3s from systemd's sockets, log for the journal when
    stderr is the journal; SIGTERM sends IMAP sessions * BYE and the daemons say STOPPING=1 and exit 0."""
    key = add_user(dsn)
    cert, cert_key = make_cert(tmp_path)
    config = write_config(tmp_path / "relate.yaml", dsn, tls={"cert": str(cert), "key": str(cert_key)})
    imapd, imap_ports = socket_activated(
        "relate.imap", config, ["imap", "imaps"], tmp_path / "imap.log", notify=notify.path
    )
    pop3_log = tmp_path / "pop3.log"
    pop3_log.touch()
    st = pop3_log.stat()  # stderr "is the journal": the daemon logs with <N> priority prefixes
    pop3d, pop3_ports = socket_activated(
        "relate.pop3", config, ["pop3", "pop3s"], pop3_log, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}"
    )
    try:
        plain = retry(lambda: imaplib.IMAP4("127.0.0.1", imap_ports["imap"], timeout=60))
        notify.wait_for("READY", "1")
        plain.starttls(ssl_context=client_tls())
        plain.login(USER, key)
        plain.select("INBOX")
        with imaplib.IMAP4_SSL("127.0.0.1", imap_ports["imaps"], ssl_context=client_tls(), timeout=30) as imaps:
            imaps.login(USER, key)
            assert imaps.select("INBOX")[0] == "OK"
            imaps.logout()

        pop = retry(lambda: poplib.POP3_SSL("127.0.0.1", pop3_ports["pop3s"], context=client_tls(), timeout=60))
        pop.user(USER)
        pop.pass_(key)
        assert pop.stat() == (0, 0)
        pop.quit()
        pop = poplib.POP3("127.0.0.1", pop3_ports["pop3"], timeout=30)
        pop.stls(context=client_tls())
        pop.user(USER)
        pop.pass_(key)
        pop.quit()
        for role, port in [*imap_ports.items()]:
            assert f"role={role} address=127.0.0.1:{port}" in imapd.log()
        for role, port in pop3_ports.items():
            assert f"<6>relate.pop3: listening role={role} address=127.0.0.1:{port}" in pop3d.log()
        assert "<6>relate-imap" not in imapd.log()
        assert " INFO relate.imap: listening" in imapd.log(), "without the journal: timestamps and level names"

        imapd.signal(signal.SIGTERM)
        notify.wait_for("STOPPING", "1")
        with pytest.raises(imaplib.IMAP4.abort) as bye:
            plain.noop()
        assert "Server shutting down" in str(bye.value)
        plain.shutdown()
        assert imapd.stop() == 0, imapd.log()
        assert pop3d.stop() == 0, pop3d.log()
    finally:
        imapd.stop()
        pop3d.stop()


@pytest.mark.parametrize(
    ("module", "roles"),
    [
        ("relate.smtp", ["mx", "submission", "submissions"]),
        ("relate.imap", ["imap", "imaps"]),
        ("relate.pop3", ["pop3", "pop3s"]),
    ],
)
def test_socket_activated_daemon_greets_only_after_ready(
    dsn: str, tmp_path: Path, notify: NotifyListener, module: str, roles: list[str]
) -> None:
    """The connection that starts a socket-activated daemon is greeted only once READY=1 is sent: it serves up."""
    cert, cert_key = make_cert(tmp_path)
    config = write_config(tmp_path / "relate.yaml", dsn, tls={"cert": str(cert), "key": str(cert_key)})
    daemon, ports = socket_activated(module, config, roles, tmp_path / "daemon.log", notify=notify.path)
    try:
        with socket.create_connection(("127.0.0.1", ports[roles[0]]), timeout=60) as first:
            greeting = first.makefile("rb").readline()
            sent = notify.received()
        assert greeting.split()[:1] in ([b"220"], [b"*"], [b"+OK"]), greeting
        assert any(m.get("READY") == "1" for m in sent), f"greeted before READY=1: {sent}"
        assert daemon.stop() == 0, daemon.log()
    finally:
        daemon.stop()


def test_daemon_never_ready_on_an_old_schema(empty_dsn: str, tmp_path: Path, notify: NotifyListener) -> None:
    """Against a database without the schema the daemon exits 1 naming the fix, and never says READY=1."""
    config = write_config(tmp_path / "relate.yaml", empty_dsn)
    daemon, ports = socket_activated("relate.pop3", config, ["pop3"], tmp_path / "pop3.log", notify=notify.path)
    try:
        with socket.create_connection(("127.0.0.1", ports["pop3"]), timeout=60) as conn:
            try:
                greeting = conn.recv(100)  # starts the daemon
            except ConnectionResetError:
                greeting = b""
        assert greeting == b"", "a daemon that cannot use the database must not serve"
        assert daemon.proc.wait(timeout=60) == 1
    finally:
        daemon.stop()
    assert "relatectl db migrate" in daemon.log()
    failed = notify.wait_for("STATUS", timeout=5)
    assert "relatectl db migrate" in failed["STATUS"]
    assert not any("READY" in m for m in notify.messages)


def _peer_cert(port: int) -> bytes:
    with imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=client_tls(), timeout=30) as conn:
        der = conn.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        conn.logout()
    assert der is not None
    return der


def test_sighup_reloads_certificates_and_keeps_live_sessions(dsn: str, tmp_path: Path) -> None:
    """After SIGHUP new IMAP connections get the new certificate while a live TLS session carries on; a bad new
    certificate keeps the previous one and the log says why."""
    key = add_user(dsn)
    old_cert, old_key = make_cert(tmp_path, "old.example.com")
    new_cert, new_key = make_cert(tmp_path, "new.example.com")
    live_cert, live_key = tmp_path / "live.crt", tmp_path / "live.key"
    live_cert.write_bytes(old_cert.read_bytes())
    live_key.write_bytes(old_key.read_bytes())
    config = write_config(tmp_path / "relate.yaml", dsn, tls={"cert": str(live_cert), "key": str(live_key)})
    daemon, ports = socket_activated("relate.imap", config, ["imaps"], tmp_path / "imap.log")
    try:
        live = retry(lambda: imaplib.IMAP4_SSL("127.0.0.1", ports["imaps"], ssl_context=client_tls(), timeout=60))
        live.login(USER, key)
        live.select("INBOX")
        before = _peer_cert(ports["imaps"])
        assert before == ssl.PEM_cert_to_DER_cert(old_cert.read_text())

        live_cert.write_bytes(new_cert.read_bytes())
        live_key.write_bytes(new_key.read_bytes())
        daemon.signal(signal.SIGHUP)
        daemon.wait_log(f"tls-reloaded cert={live_cert}")
        assert _peer_cert(ports["imaps"]) == ssl.PEM_cert_to_DER_cert(new_cert.read_text())
        assert live.noop()[0] == "OK", "the live session was dropped by the reload"
        assert live.sock.getpeercert(binary_form=True) == before  # type: ignore[attr-defined]

        live_key.write_bytes(old_key.read_bytes())  # a key that does not match the certificate
        daemon.signal(signal.SIGHUP)
        log = daemon.wait_log("tls-reload-failed")
        assert "keeping the previous certificate" in log
        live_cert.write_text("not a certificate\n")
        daemon.signal(signal.SIGHUP)
        daemon.wait_log("tls-reload-failed", timeout=10, count=2)
        assert _peer_cert(ports["imaps"]) == ssl.PEM_cert_to_DER_cert(new_cert.read_text())
        assert live.noop()[0] == "OK"
        live.logout()
        assert daemon.proc.poll() is None
    finally:
        assert daemon.stop() == 0, daemon.log()
