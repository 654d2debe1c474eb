"""Each daemon's Prometheus endpoint, scraped from the real processes while real clients use them."""

from __future__ import annotations

import asyncio
import imaplib
import poplib
import re
import smtplib
import socket
import threading
import time
from pathlib import Path

import pytest

from relate.runtime.metrics import Scrape, scrape
from tests.cli.test_status import _defer_one
from tests.daemons import USER, Daemon, add_user, clean_env, daemon_argv, fetch, write_config
from tests.integration.test_smtp_durability import prepare

MESSAGES = 200
CLIENTS = 4
TOO_BIG = 3
UNKNOWN = 5


def address_in_log(daemon: Daemon, needle: str) -> str:
    """The ``host:port`` a ``needle`` log line names (``listening role=mx address=``, ``metrics-listening``)."""
    text = daemon.wait_log(needle)
    found = re.search(re.escape(needle) + r"(\S+)", text)
    assert found is not None
    return found.group(1)


def scrape_now(address: str) -> Scrape:
    return asyncio.run(scrape(address))


def send_load(port: int) -> int:
    """MESSAGES messages to bob over CLIENTS connections; then refusals: too big, unknown recipients.
    Returns the number of connections made."""
    per_client = MESSAGES // CLIENTS
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as conn:
                for i in range(per_client):
                    body = f"Subject: load c{n}-m{i}\r\n\r\n{'x' * 500}\r\n".encode()
                    conn.sendmail("sender@elsewhere.example", ["bob@example.com"], body)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as conn:
        conn.ehlo()
        for _ in range(TOO_BIG):  # no SIZE= on MAIL: refused at the end of DATA
            assert conn.mail("sender@elsewhere.example")[0] == 250
            assert conn.rcpt("bob@example.com")[0] == 250
            assert conn.data(b"Subject: big\r\n\r\n" + b"y" * 5000)[0] == 552
        for i in range(UNKNOWN):
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                conn.sendmail("sender@elsewhere.example", [f"nobody{i}@example.com"], b"Subject: lost\r\n\r\nx\r\n")
    return CLIENTS + 1


@pytest.mark.slow
def test_accepted_count_equals_messages_stored(dsn: str, tmp_path: Path) -> None:
    """After 200 messages over real SMTP, the daemon's endpoint says 200 accepted, as many as PostgreSQL
    holds, and counts the refusals, commands, replies and connections the clients saw."""
    asyncio.run(prepare(dsn))
    config = write_config(
        tmp_path / "relate.yaml",
        dsn,
        smtp={"mx": {"listen": ["127.0.0.1:0"]}, "max_message_size": 4096},
    )
    daemon = Daemon(daemon_argv("relate.smtp", config), clean_env(), tmp_path / "smtp.log")
    try:
        mx = address_in_log(daemon, "listening role=mx address=")
        endpoint = address_in_log(daemon, "metrics-listening address=")
        daemon.wait_log("ready service=smtp")
        before = scrape_now(endpoint)
        assert before.pid == daemon.pid
        assert before.total("relate_smtp_messages_accepted_total") == 0
        started = time.monotonic()
        connections = send_load(int(mx.rpartition(":")[2]))
        seconds = time.monotonic() - started
        deadline = time.monotonic() + 10
        while (after := scrape_now(endpoint)).total("relate_connections_open") and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        daemon.stop()
    stored = fetch(dsn, "SELECT count(*) AS n FROM messages")[0]["n"]
    assert stored == MESSAGES, f"{stored} stored in {seconds:.1f}s"
    assert after.total("relate_smtp_messages_accepted_total", listener="mx") == stored
    assert after.total("relate_smtp_messages_refused_total", listener="mx", reason="too-big") == TOO_BIG
    assert after.total("relate_smtp_recipients_refused_total", listener="mx", reason="unknown-user") == UNKNOWN
    assert after.total("relate_commands_total", protocol="smtp", command="DATA") == MESSAGES + TOO_BIG
    assert after.total("relate_commands_total", protocol="smtp", command="RCPT") == MESSAGES + TOO_BIG + UNKNOWN
    assert after.total("relate_replies_total", protocol="smtp", status="5xx") == TOO_BIG + UNKNOWN
    assert after.total("relate_connections_total", protocol="smtp", listener="mx") == connections
    assert after.total("relate_connections_open") == 0
    assert after.total("relate_db_pool_max_connections") == 4
    assert after.total("relate_event_loop_lag_seconds_count") > 0
    assert after.total("relate_daemon_info", service="smtp") == 1


def test_endpoint_answers_only_get_metrics(dsn: str, tmp_path: Path) -> None:
    """The endpoint serves GET /metrics; another path is 404, another method 405, an endless header 431."""
    config = write_config(tmp_path / "relate.yaml", dsn)
    daemon = Daemon(daemon_argv("relate.pop3", config), clean_env(), tmp_path / "pop3.log")
    try:
        host, _, port = address_in_log(daemon, "metrics-listening address=").rpartition(":")
        daemon.wait_log("ready service=pop3")

        def ask(request: bytes) -> bytes:
            with socket.create_connection((host, int(port)), timeout=10) as conn:
                conn.sendall(request)
                answer = b""
                while chunk := conn.recv(65536):
                    answer += chunk
                return answer

        assert ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200 OK\r\n")
        assert ask(b"GET /secret HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
        assert ask(b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")
        assert ask(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n").startswith(b"HTTP/1.1 431 ")
    finally:
        daemon.stop()


def test_delivery_daemon_reports_the_queue_from_the_database(dsn: str, tmp_path: Path) -> None:
    """relate-delivery's endpoint shows a deferred recipient in the queue depth, with its age, and counts
    the attempt it makes at the message never tried (to a domain that does not exist: failed for good)."""
    asyncio.run(_defer_one(dsn))
    config = write_config(tmp_path / "relate.yaml", dsn)
    daemon = Daemon(daemon_argv("relate.queue", config), clean_env(), tmp_path / "delivery.log")
    try:
        endpoint = address_in_log(daemon, "metrics-listening address=")
        daemon.wait_log("rcpt=other@elsewhere.example status=failed")
        found = scrape_now(endpoint)
    finally:
        daemon.stop()
    assert found.total("relate_delivery_attempts_total") == 1
    assert found.total("relate_delivery_attempts_total", result="failed") == 1
    assert found.total("relate_queue_recipients", state="deferred") == 1
    assert found.total("relate_queue_messages", state="deferred") == 1
    assert found.total("relate_queue_recipients", state="pending") == 0
    assert found.total("relate_queue_oldest_age_seconds", state="deferred") >= 0
    assert found.total("relate_db_pool_connections", state="open") >= 1


def test_imap_and_pop3_count_what_their_clients_saw(dsn: str, tmp_path: Path) -> None:
    """A wrong key and a right one over IMAP and POP3: the endpoints count the failed logins by protocol,
    the commands by verb, and the OK/NO and +OK/-ERR answers the clients got."""
    key = add_user(dsn)
    config = write_config(
        tmp_path / "relate.yaml",
        dsn,
        imap={"imap": {"listen": ["127.0.0.1:0"]}, "allow_plaintext_auth": True},
        pop3={"pop3": {"listen": ["127.0.0.1:0"]}, "allow_plaintext_auth": True},
    )
    imapd = Daemon(daemon_argv("relate.imap", config), clean_env(), tmp_path / "imap.log")
    pop3d = Daemon(daemon_argv("relate.pop3", config), clean_env(), tmp_path / "pop3.log")
    try:
        imap_port = int(address_in_log(imapd, "listening role=imap address=").rpartition(":")[2])
        pop3_port = int(address_in_log(pop3d, "listening role=pop3 address=").rpartition(":")[2])
        imap_metrics = address_in_log(imapd, "metrics-listening address=")
        pop3_metrics = address_in_log(pop3d, "metrics-listening address=")
        imapd.wait_log("ready service=imap")
        pop3d.wait_log("ready service=pop3")

        with imaplib.IMAP4("127.0.0.1", imap_port, timeout=10) as imap:
            with pytest.raises(imaplib.IMAP4.error):
                imap.login(USER, "wrong-key")
            imap.login(USER, key)
            imap.select("INBOX")
            imap.logout()
        pop = poplib.POP3("127.0.0.1", pop3_port, timeout=10)
        pop.user(USER)
        with pytest.raises(poplib.error_proto):
            pop.pass_("wrong-key")
        pop.user(USER)
        pop.pass_(key)
        assert pop.stat() == (0, 0)
        pop.quit()
        imap_seen, pop3_seen = scrape_now(imap_metrics), scrape_now(pop3_metrics)
    finally:
        imapd.stop()
        pop3d.stop()
    assert imap_seen.total("relate_auth_failures_total", protocol="imap") == 1
    assert imap_seen.total("relate_commands_total", protocol="imap", command="LOGIN") == 2
    assert imap_seen.total("relate_commands_total", protocol="imap", command="SELECT") == 1
    assert imap_seen.total("relate_replies_total", protocol="imap", status="NO") == 1
    assert imap_seen.total("relate_replies_total", protocol="imap", status="OK") >= 3  # LOGIN, SELECT, LOGOUT
    assert imap_seen.total("relate_connections_total", protocol="imap", listener="imap") == 1
    assert pop3_seen.total("relate_auth_failures_total", protocol="pop3") == 1
    assert pop3_seen.total("relate_commands_total", protocol="pop3", command="PASS") == 2
    assert pop3_seen.total("relate_commands_total", protocol="pop3", command="STAT") == 1
    assert pop3_seen.total("relate_replies_total", protocol="pop3", status="-ERR") == 1
    # The greeting, USER twice, PASS, STAT and QUIT.
    assert pop3_seen.total("relate_replies_total", protocol="pop3", status="+OK") == 6
