"""SMTP ingest benchmark: how fast relate-smtp takes mail for hosted users, durably, and at what CPU cost.

Sets up a throwaway world in a temp dir (an embedded PostgreSQL 18 with fsync
on, the schema, domain ``bench.test`` with ``--users`` users, and
``python -m relate.smtp`` listening on a free loopback port as its MX role),
then drives ``--sessions`` concurrent SMTP sessions that send ``--messages``
messages of about ``--size`` bytes between them, and prints:

- messages/s (accepted, i.e. answered 250, over the wall time of the load);
- p50/p99 latency from sending the final ``.`` to reading the 250;
- CPU seconds per 1,000 messages of the daemon and of the PostgreSQL cluster
  (every process of it, reaped ones included), and of the load client itself.

Sender authentication (relate/mailauth) is on, as deployed: a loopback DNS
server (``relate.testing.dns``, in a thread of this script) publishes SPF and
DMARC (``p=reject``) for the sender's domain ``client.example``, SPF for the
client's HELO name and, with ``--dkim`` (the default), the key every message
is signed with (RSA 2048, signed before the load starts), so each message
costs SPF twice, a DKIM verification and DMARC, answered from the daemon's
warm DNS cache after the first. ``--no-mailauth`` turns the checks off
(``smtp.mailauth.enabled: false``): run both to see what they cost.
``--rspamd`` adds spam filtering: a throwaway rspamd (relate.testing.rspamd)
asked for every message, as ``smtp.rspamd.url`` does; compare with a run without.

It refuses to report figures unless the database then holds exactly the
messages that were acknowledged. ``--vs postfix`` runs the same load with the
same client against a throwaway Postfix (installed from Debian if missing)
that delivers to maildirs, as ``shared/peers.md`` describes, and adds the
ratio relate/postfix. Everything started is stopped again, also on Ctrl-C.

Usage: ``.venv/bin/python bench/smtp_ingest.py [--sessions 20] [--messages 2000]
[--size 10240] [--vs postfix] [--quota] [--sieve] [--no-mailauth] [--rspamd] [--no-dkim] [--json-only]``, or
``--shape deployed [--cases one,one-d,twenty] [--sustained 60] [--push]``; ``--help`` for the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pwd
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    CLIENT_NAME,
    HOST,
    BenchError,
    Job,
    LoadResult,
    MachineCpu,
    RelateServer,
    apt_install,
    comparison_table,
    cpu_figures,
    find_program,
    free_port,
    fs_type,
    log_tail,
    machine_cpu,
    make_workdir,
    migrate_db,
    percentile,
    plan_jobs,
    query_row,
    ratios,
    require_durable,
    run_benchmark,
    run_cmd,
    run_load,
    say,
    start_py_spy,
    stop_py_spy,
    stop_targets,
    tree_cpu,
    wait_for_smtp,
)

from relate.config import DatabaseConfig
from relate.mail import dkim
from relate.runtime.embedded_pg import EmbeddedPostgres
from relate.services import accounts
from relate.services import sieve as sieve_service
from relate.services.dns import txt_strings
from relate.services.setup import new_vapid_keys
from relate.store import db
from relate.testing.dns import ThreadedDnsServer, Zone
from relate.testing.rspamd import RspamdServer

DOMAIN = "bench.test"
SENDER_DOMAIN = "client.example"
SENDER = f"sender@{SENDER_DOMAIN}"
VMAIL_UID = 5000  # peers.md: virtual_uid_maps = static:5000


# -- Relate Mail ------------------------------------------------------------------


# --sieve: each user's active script, 50 rules of the kinds filters hold (header, address, size, list
# tests; fileinto, flags), none of which matches the load's messages, so each is evaluated and the message
# ends in INBOX by the implicit keep (what most mail meets in a real filter set).
SIEVE_SCRIPT = 'require ["fileinto", "imap4flags", "variables", "mailbox"];\n' + "".join(
    (
        f'if header :contains "subject" "sieve-rule-{i}" {{ fileinto :create "Rule{i}"; stop; }}\n',
        f'if address :domain :is "from" "rule{i}.invalid" {{ addflag "\\\\Flagged"; fileinto "Rule{i}"; }}\n',
        f'if allof (size :over {100 + i}M, header :matches "x-rule" "*{i}*") {{ discard; }}\n',
        f'if header :is "list-id" "<rule{i}.lists.invalid>" {{ fileinto :create "Lists/rule{i}"; }}\n',
        f'if anyof (header :contains "to" "rule{i}@", exists "x-rule-{i}") {{ keep; stop; }}\n',
    )[i % 5]
    for i in range(50)
)

# --quota: every user's limits (store/quota.py), far above any load this script sends.
QUOTA_STORAGE = 1024**4
QUOTA_MESSAGES = 10**9


def sender_zone(key: dkim.DkimKey | None) -> Zone:
    """The sender's SPF, DKIM and DMARC records (and SPF for the client's HELO name)."""
    zone = Zone(negative_ttl=300)  # void answers carry an SOA, as a real server's do, and are kept
    spf = txt_strings(f"v=spf1 ip4:{HOST} -all")
    zone.add(SENDER_DOMAIN, "TXT", spf)
    zone.add(CLIENT_NAME, "TXT", spf)
    zone.add(f"_dmarc.{SENDER_DOMAIN}", "TXT", txt_strings("v=DMARC1; p=reject"))
    if key is not None:
        zone.add(f"{key.selector}._domainkey.{SENDER_DOMAIN}", "TXT", txt_strings(key.txt_record()))
    return zone


def sign_plan(plan: list[list[Job]], key: dkim.DkimKey) -> list[list[Job]]:
    """Every message DKIM-signed by the sender's domain (before the load: the client's CPU is not measured)."""
    return [
        [Job(j.index, j.mail_from, j.rcpt_to, dkim.sign(j.data, SENDER_DOMAIN, key) + j.data) for j in s] for s in plan
    ]


class Relate(RelateServer):
    """relate-smtp over an embedded, durable PostgreSQL, in ``workdir``."""

    module = "relate.smtp"
    daemon_name = "relate-smtp"

    def __init__(
        self,
        workdir: Path,
        users: list[str],
        pool_max: int | None,
        sessions: int,
        quiet: bool,
        quota: bool = False,
        *,
        dns: str,
        mailauth: bool = True,
        rspamd: str | None = None,
        sieve: bool = False,
    ) -> None:
        super().__init__(workdir, quiet)
        self.rspamd = rspamd
        self.sieve = sieve
        self.users = users
        self.pool_max = pool_max
        self.sessions = sessions
        self.quota = quota
        self.dns = dns
        self.mailauth = mailauth

    @property
    def description(self) -> str:
        return (
            f"relate-smtp (MX role, logging WARNING, pool_max {self.pool_max or DatabaseConfig.pool_max}"
            f"{', every user under a quota' if self.quota else ''}"
            f"{', every user with an active 50-rule Sieve script' if self.sieve else ''}"
            f", SPF/DKIM/DMARC {'on' if self.mailauth else 'off'}, rspamd {'on' if self.rspamd else 'off'}) -> "
            f"PostgreSQL {self.settings.get('server_version', '?')} "
            f"(fsync={self.settings.get('fsync')}, synchronous_commit={self.settings.get('synchronous_commit')})"
        )

    def start(self) -> None:
        self.start_postgres()
        asyncio.run(self._prepare_db())
        require_durable(self.settings)
        self.port = free_port(HOST)
        config = self.workdir / "relate.yaml"
        database: dict[str, Any] = {"dsn": self.dsn}
        if self.pool_max is not None:
            database["pool_max"] = self.pool_max
        config.write_text(
            yaml.safe_dump(
                {
                    "hostname": f"mx.{DOMAIN}",
                    "database": database,
                    "smtp": {
                        "mx": {"listen": [f"{HOST}:{self.port}"]},
                        "submission": {"listen": []},
                        "submissions": {"listen": []},
                        # Room for reconnects (--no-reuse) so the per-client cap never refuses the load.
                        "max_connections_per_client": 2 * self.sessions + 10,
                        "mailauth": {"enabled": self.mailauth},
                        **({"rspamd": {"url": self.rspamd}} if self.rspamd else {}),
                    },
                    "delivery": {"dns_servers": [self.dns]},
                    "logging": {"level": "WARNING"},
                    # --quota: limits far above the load, so every delivery is checked and none refused.
                    **({"quota": {"storage": QUOTA_STORAGE, "messages": QUOTA_MESSAGES}} if self.quota else {}),
                }
            )
        )
        self.start_daemon(config, lambda daemon: wait_for_smtp(HOST, self.port, 60, alive=daemon))

    async def _prepare_db(self) -> None:
        self.settings = await migrate_db(
            self.dsn, ("server_version", "fsync", "synchronous_commit", "full_page_writes", "wal_sync_method")
        )
        pool = await db.create_pool(DatabaseConfig(dsn=self.dsn, pool_min=1, pool_max=2))
        try:
            await accounts.add_domain(pool, DOMAIN)
            for address in self.users:
                await accounts.add_user(pool, address)
                if self.sieve:  # --sieve: every delivery runs a 50-rule script that files into INBOX
                    await sieve_service.put(pool, address, "bench", SIEVE_SCRIPT, activate=True)
        finally:
            await pool.close()

    def stored(self) -> int:
        return self.count_messages()

    def wait_stored(self, expected: int, timeout: float) -> tuple[int, float]:
        """Stored at 250 already: one count is the whole check."""
        return self.stored(), 0.0


# -- Postfix ----------------------------------------------------------------------

MAIN_CF = """\
# Throwaway Postfix test peer of bench/smtp_ingest.py (shared/peers.md), loopback only, no relaying.
compatibility_level = 3.6
config_directory = {root}/etc
queue_directory = {root}/spool
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = {root}/log/postfix.log
maillog_file_prefixes = /var, /dev/stdout, {root}/log

myhostname = mx.{domain}
mydomain = {domain}
myorigin = $mydomain
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_banner = $myhostname ESMTP Postfix test peer

mydestination = localhost
alias_maps =
alias_database =
local_recipient_maps =
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {root}/vmail
virtual_mailbox_maps = texthash:{root}/etc/vmailbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{uid}
virtual_minimum_uid = 1000

relayhost =
default_transport = error:outbound delivery disabled on this test peer
relay_transport = error:relaying disabled on this test peer
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions = reject_unauth_destination

smtpd_tls_security_level = none
message_size_limit = 52428800
virtual_mailbox_limit = 0
biff = no
"""

MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
{host}:{port} inet  n       -       n       -       -       smtpd
pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
proxywrite unix  -       -       n       -       1       proxymap
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
local      unix  -       n       n       -       -       local
virtual    unix  -       n       n       -       -       virtual
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
"""


def ensure_postfix(quiet: bool) -> str:
    """The path of ``postfix``; installs Debian's package first (as peers.md says) when it is missing."""
    found = find_program("postfix")
    if found:
        return found
    apt_install(
        "postfix", ["postfix"], quiet=quiet, preseed="postfix postfix/main_mailer_type select No configuration\n"
    )
    found = find_program("postfix")
    if not found:
        raise BenchError("apt-get installed postfix but there is no postfix command")
    return found


class Postfix:
    """A throwaway Postfix 3.7 instance: smtpd on a loopback port, virtual(8) delivery to maildirs."""

    name = "postfix"

    def __init__(self, workdir: Path, users: list[str], quiet: bool) -> None:
        self.root = workdir / "postfix"
        self.users = users
        self.quiet = quiet
        self.port = 0
        self.postfix = ""
        self.version = "?"
        self.master_pid = 0
        self.started = False

    @property
    def description(self) -> str:
        return f"Postfix {self.version} smtpd -> cleanup (queue fsync) -> qmgr -> virtual(8) to maildirs"

    def _postfix(self, action: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        # postfix(1) prints its errors only to a terminal: give it one (peers.md).
        command = shlex.join([self.postfix, "-c", str(self.root / "etc"), action])
        script = shutil.which("script")
        if script is None:
            return run_cmd(shlex.split(command), timeout=timeout, check=False)
        return run_cmd([script, "-qec", command, "/dev/null"], timeout=timeout, check=False)

    def start(self) -> None:
        self.postfix = ensure_postfix(self.quiet)
        postconf = str(Path(self.postfix).with_name("postconf"))
        self.version = run_cmd([postconf, "-d", "-h", "mail_version"], timeout=30, check=False).stdout.strip() or "?"
        for sub in ("etc", "spool", "data", "log", "vmail"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        postfix_user = pwd.getpwnam("postfix")
        os.chown(self.root / "data", postfix_user.pw_uid, postfix_user.pw_gid)
        os.chown(self.root / "vmail", VMAIL_UID, VMAIL_UID)
        self.port = free_port(HOST)
        etc = self.root / "etc"
        (etc / "main.cf").write_text(MAIN_CF.format(root=self.root, domain=DOMAIN, uid=VMAIL_UID))
        (etc / "master.cf").write_text(MASTER_CF.format(host=HOST, port=self.port))
        (etc / "vmailbox").write_text(
            "".join(f"{a} {DOMAIN}/{a.split('@')[0]}/\n" for a in self.users) + f"@{DOMAIN} {DOMAIN}/catchall/\n"
        )
        say(f"postfix: starting Postfix {self.version} on {HOST}:{self.port} in {self.root}", quiet=self.quiet)
        started = self._postfix("start")
        self.started = True
        if started.returncode != 0:
            raise BenchError(f"postfix start failed ({started.returncode}): {started.stdout}{started.stderr}")
        try:
            wait_for_smtp(HOST, self.port, 60)
        except TimeoutError as exc:
            raise BenchError(f"postfix did not listen: {exc}\n{self.log_tail()}") from None
        self.master_pid = int((self.root / "spool" / "pid" / "master.pid").read_text().split()[0])

    def cpu(self) -> dict[str, float]:
        return {"postfix": tree_cpu(self.master_pid)}

    def stored(self) -> int:
        return self.delivered()

    def delivered(self) -> int:
        base = self.root / "vmail" / DOMAIN
        if not base.is_dir():
            return 0
        return sum(len(os.listdir(box / "new")) for box in base.iterdir() if (box / "new").is_dir())

    def queued(self) -> int:
        total = 0
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _dirpath, _dirs, files in os.walk(self.root / "spool" / sub):
                total += len(files)
        return total

    def wait_stored(self, expected: int, timeout: float) -> tuple[int, float]:
        """Wait until every accepted message is in a maildir and the queue is empty; (count, seconds)."""
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout
        while True:
            delivered = self.delivered()
            if (delivered >= expected and self.queued() == 0) or time.monotonic() > deadline:
                return delivered, time.perf_counter() - t0
            time.sleep(0.05)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.root / "log" / "postfix.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if not self.started:
            return
        self._postfix("stop", timeout=60)
        deadline = time.monotonic() + 30
        while self.master_pid and Path(f"/proc/{self.master_pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.master_pid and Path(f"/proc/{self.master_pid}").exists():
            self._postfix("abort", timeout=60)
        self.started = False


# -- the deployed shape: `relatectl dev --any-port` driven by Postfix's smtp-source ------------------


@dataclass(frozen=True)
class Case:
    """One smtp-source load of the deployed shape."""

    key: str
    label: str
    reuse: bool  # smtp-source -d: one connection per session for all its messages
    recipients: int  # 1: every message to user1; N: the load spread over user1..N, one smtp-source each


CASES = {
    "one": Case("one", "1 recipient", False, 1),
    "one-d": Case("one-d", "1 recipient, -d", True, 1),
    "twenty": Case("twenty", "20 recipients", False, 20),
}


_TOP_STATEMENTS = """SELECT calls, total_exec_time AS total, mean_exec_time AS mean, query
                       FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%'
                      ORDER BY total_exec_time DESC LIMIT $1"""


async def _fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


class RelateDev:
    """The whole system as users run it: ``relatectl dev --any-port`` in ``workdir/dev`` (every daemon its
    own process as the systemd units start them, logging INFO, the indexer and notifications on, an
    embedded durable PostgreSQL), with domain ``bench.test`` and its users added to it."""

    name = "relate"

    def __init__(
        self,
        workdir: Path,
        users: list[str],
        sessions: int,
        quiet: bool,
        *,
        mailauth: bool = True,
        statements: bool = False,
        push: bool = False,
    ) -> None:
        self.workdir = workdir
        self.statements = statements
        self.push = push
        # The sender's SPF and DMARC records on a loopback DNS server of its own (smtp-source's mail is not
        # signed): the dev run asks it, never the machine's resolver.
        self.dns = ThreadedDnsServer(sender_zone(None))
        self.mailauth = mailauth
        self.state = workdir / "dev"
        self.users = users
        self.sessions = sessions
        self.quiet = quiet
        self.log_path = workdir / "relatectl-dev.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.dsn = ""
        self.postmaster_pid = 0
        self.settings: dict[str, str] = {}

    @property
    def description(self) -> str:
        push = ", web push keys" if self.push else ""
        return (
            "relatectl dev --any-port (api, smtp, imap, pop3, delivery: each its own process, logging INFO, "
            f"indexer and notifications on{push}) -> PostgreSQL {self.settings.get('server_version', '?')} "
            f"(fsync={self.settings.get('fsync')}, synchronous_commit={self.settings.get('synchronous_commit')})"
        )

    def start(self) -> None:
        self.state.mkdir()
        if self.statements:
            # pg_stat_statements must be loaded when the server starts: the cluster is made here first, with
            # it preloaded, and the dev run starts that cluster (it reuses the data directory it finds).
            pg = EmbeddedPostgres(self.state / "pgdata")
            dsn = pg.start()
            asyncio.run(_fetch(dsn, "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"))
            pg.stop()
        # The changes to the dev run's config: the load comes from one address, and smtp-source without -d
        # opens a connection per message, so the per-client cap (meant for strangers) is raised; DNS is the
        # bench's loopback server (the sender's SPF and DMARC records), never the machine's resolver.
        extra = self.workdir / "dev-extra.yaml"
        settings: dict[str, Any] = {
            "smtp": {
                "max_connections_per_client": 2 * self.sessions + 10,
                "mailauth": {"enabled": self.mailauth},
            },
            "delivery": {"dns_servers": [self.dns.start()]},
        }
        if self.push:
            public, private = new_vapid_keys()
            settings["push"] = {"vapid_public_key": public, "vapid_private_key": private}
        extra.write_text(yaml.safe_dump(settings))
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELATE_")}
        say(f"relate: starting relatectl dev --any-port in {self.state}", quiet=self.quiet)
        dev_args = ["--state-dir", str(self.state), "--any-port"]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - this interpreter, this project's CLI
                [sys.executable, "-m", "relatectl", "--config", str(extra), "dev", *dev_args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + 180
        info: dict[str, Any] = {}
        while "ports" not in info:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"relatectl dev did not come up\n{self.log_tail()}")
            time.sleep(0.2)
            with contextlib.suppress(OSError, ValueError):
                info = json.loads((self.state / "dev.json").read_text())
        self.port, self.dsn = int(info["ports"]["smtp"]), str(info["dsn"])
        self.postmaster_pid = int((self.state / "pgdata" / "postmaster.pid").read_text().split()[0])
        self.settings = asyncio.run(self._prepare())
        require_durable(self.settings)
        wait_for_smtp(HOST, self.port, 60)

    async def _prepare(self) -> dict[str, str]:
        pool = await db.create_pool(DatabaseConfig(dsn=self.dsn, pool_min=1, pool_max=2))
        try:
            await accounts.add_domain(pool, DOMAIN)
            for address in self.users:
                await accounts.add_user(pool, address)
            if self.statements:
                await pool.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            names = ("server_version", "fsync", "synchronous_commit")
            return {name: str(await pool.fetchval(f"SHOW {name}")) for name in names}
        finally:
            await pool.close()

    def daemon_pid(self, module: str) -> int | None:
        """The pid of the dev run's daemon running ``python -m module``."""
        assert self.proc is not None
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                if module in child.cmdline():
                    return child.pid
        return None

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far: every relate process, PostgreSQL, and each daemon on its own (the parts of
        the first figure that matter: ``smtp``, ``api`` (notifications), ``delivery`` (the indexer))."""
        assert self.proc is not None
        out = {"daemons": tree_cpu(self.proc.pid), "postgres": tree_cpu(self.postmaster_pid)}
        for name in ("smtp", "api", "delivery"):
            pid = self.daemon_pid(f"relate.{'queue' if name == 'delivery' else name}")
            out[f"of which {name}"] = tree_cpu(pid) if pid else 0.0
        return out

    def counts(self) -> tuple[int, int]:
        """(messages stored, distinct Message-IDs among them) for the bench users."""
        n, ids = query_row(
            self.dsn,
            """SELECT count(*), count(DISTINCT m.message_id)
                 FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id JOIN users u ON u.id = b.user_id
                WHERE u.address LIKE '%@' || $1""",
            DOMAIN,
        )
        return int(n), int(ids)

    def reset_statements(self) -> None:
        query_row(self.dsn, "SELECT pg_stat_statements_reset() IS NULL")

    def top_statements(self, messages: int, top: int = 20) -> list[dict[str, Any]]:
        """The statements PostgreSQL ran since :meth:`reset_statements`, most total time first, per message."""
        rows = asyncio.run(_fetch(self.dsn, _TOP_STATEMENTS, top))
        return [
            {
                "calls_per_msg": round(r["calls"] / messages, 3),
                "ms_per_msg": round(r["total"] / messages, 4),
                "mean_ms": round(r["mean"], 4),
                "query": " ".join(r["query"].split())[:110],
            }
            for r in rows
        ]

    def unindexed(self) -> int:
        """Messages whose body text the indexer has not reached yet (issue 14: indexer lag)."""
        return int(query_row(self.dsn, "SELECT count(*) FROM messages WHERE NOT text_indexed")[0])

    def wait_indexed(self, timeout: float) -> float | None:
        """Seconds until the indexer has caught up (None: not within ``timeout``)."""
        t0 = time.perf_counter()
        while self.unindexed():
            if time.perf_counter() - t0 > timeout:
                return None
            time.sleep(0.2)
        return round(time.perf_counter() - t0, 1)

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # the dev run stops its daemons, then its PostgreSQL
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.dns.stop()


def postfix_counts(postfix: Postfix) -> tuple[int, int]:
    """(messages in the maildirs, distinct Message-IDs among them)."""
    base = postfix.root / "vmail" / DOMAIN
    count, ids = 0, set()
    for box in base.iterdir() if base.is_dir() else ():
        for name in os.listdir(box / "new") if (box / "new").is_dir() else ():
            count += 1
            with (box / "new" / name).open("rb") as fh:
                head = fh.read(4096)
            found = re.search(rb"^Message-Id: (.*)$", head, re.M | re.I)
            ids.add(found.group(1).strip() if found else name.encode())
    return count, len(ids)


def source_commands(source: str, port: int, case: Case, args: argparse.Namespace, users: list[str]) -> list[list[str]]:
    """The smtp-source command lines of one load: one, or one per recipient (the sessions and messages split)."""
    n = case.recipients
    out = []
    for i in range(n):
        messages = args.messages // n + (1 if i < args.messages % n else 0)
        sessions = max(1, args.sessions // n + (1 if i < args.sessions % n else 0))
        out.append(
            [source, "-s", str(sessions), "-m", str(messages), "-l", str(args.size), "-M", CLIENT_NAME]
            + ["-f", SENDER, "-t", users[i]]
            + (["-d"] if case.reuse else [])
            + [f"{HOST}:{port}"]
        )
    return out


def run_source(commands: list[list[str]], timeout: float) -> tuple[float, float]:
    """Run the smtp-source processes at once; (wall seconds, their CPU seconds). Any failure is fatal:
    smtp-source exits non-zero on the first reply that is not 2xx, so exit 0 means every message got 250."""
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # noqa: S603
        for cmd in commands
    ]
    outputs = [p.communicate(timeout=timeout)[0].decode(errors="replace") for p in procs]
    wall = time.perf_counter() - t0
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    failed = [(p.returncode, out.strip()) for p, out in zip(procs, outputs, strict=True) if p.returncode != 0]
    if failed:
        raise BenchError(f"smtp-source failed ({len(failed)} of {len(procs)}): {failed[0]}; no figures reported")
    cpu = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    return wall, cpu


class WaitSampler:
    """What the dev run's PostgreSQL backends wait on during a load (pg_stat_activity every 20 ms)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.counts: Counter[str] = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            while not self._stop.is_set():
                rows = await conn.fetch(
                    """SELECT coalesce(wait_event_type || ':' || wait_event, 'on CPU') AS w FROM pg_stat_activity
                        WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()"""
                )
                self.samples += 1
                self.counts.update(r["w"] for r in rows)
                await asyncio.sleep(0.02)
        finally:
            await conn.close()

    def __enter__(self) -> WaitSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def summary(self) -> dict[str, float]:
        """Active backends per sample by what they wait on (mean)."""
        return {k: round(v / max(1, self.samples), 2) for k, v in self.counts.most_common(12)}


def deployed_round(
    target: RelateDev | Postfix, case: Case, source: str, args: argparse.Namespace, users: list[str], first: bool
) -> dict[str, Any]:
    """One verified smtp-source load against one target: its figures."""
    n0, ids0 = target.counts() if isinstance(target, RelateDev) else postfix_counts(target)
    commands = source_commands(source, target.port, case, args, users)
    profiler = waits = None
    if isinstance(target, RelateDev) and first and args.py_spy:
        pid = target.daemon_pid("relate.smtp")
        profiler = start_py_spy(args.py_spy, pid, args.profile) if pid else None
    if isinstance(target, RelateDev) and args.pg_waits:
        waits = WaitSampler(target.dsn)
        waits.__enter__()
    statements = isinstance(target, RelateDev) and target.statements
    if statements:
        target.reset_statements()
    load0 = os.getloadavg()[0]
    cpu0, machine0 = target.cpu(), machine_cpu()
    try:
        wall, client = run_source(commands, args.timeout)
        backlog = target.unindexed() if isinstance(target, RelateDev) else None
        if isinstance(target, Postfix):
            _, tail = target.wait_stored(n0 + args.messages, args.timeout)
        else:
            tail = 0.0  # stored at 250
        cpu1, machine1 = target.cpu(), machine_cpu()
        # Taken at once: the indexer's catch-up below, and the counts, are not the load's.
        top = target.top_statements(args.messages) if statements and isinstance(target, RelateDev) else None
    finally:
        if waits is not None:
            waits.__exit__()
        if profiler is not None:
            stop_py_spy(profiler, Path(args.profile), "relate-smtp", quiet=args.json_only)
    n1, ids1 = target.counts() if isinstance(target, RelateDev) else postfix_counts(target)
    if (n1 - n0, ids1 - ids0) != (args.messages, args.messages):
        raise BenchError(
            f"{target.name}, {case.label}: {args.messages} messages acknowledged, {n1 - n0} stored with "
            f"{ids1 - ids0} distinct Message-IDs; no figures reported\n{target.log_tail()}"
        )
    cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
    window = wall + tail
    out: dict[str, Any] = {
        "msg_per_s": round(args.messages / wall, 1),
        "end_to_end_msg_per_s": round(args.messages / window, 1),
        "wall_s": round(wall, 3),
        "stored_once": args.messages,
        "load_avg_1m": [round(load0, 1), round(os.getloadavg()[0], 1)],
    } | cpu_figures(cpu, client, machine1 - machine0, args.messages, window)
    if isinstance(target, RelateDev):
        # Outside the measured window, so each load starts with the index caught up (issue 14: indexer lag).
        out["unindexed_at_end"] = backlog
        out["index_catch_up_s"] = target.wait_indexed(args.timeout)
    if waits is not None:
        out["pg_waits"] = waits.summary()
    if top is not None:
        out["pg_statements"] = top
    return out


def smtp_source(quiet: bool) -> str:
    """Postfix's smtp-source (the postfix package installed when it is missing)."""
    source = find_program("smtp-source")
    if source is None:
        ensure_postfix(quiet)
        source = find_program("smtp-source")
    if source is None:
        raise BenchError("the postfix package is installed but has no smtp-source")
    return source


def deployed_body(args: argparse.Namespace, workdir: Path, report: dict[str, Any], targets: list[Any]) -> None:
    quiet = args.json_only
    cases = [CASES[k] for k in args.cases.split(",") if k]
    users = [f"user{n}@{DOMAIN}" for n in range(1, max((c.recipients for c in cases), default=1) + 1)]
    source = smtp_source(quiet)
    targets.append(
        RelateDev(
            workdir, users, args.sessions, quiet, mailauth=args.mailauth, statements=args.pg_statements, push=args.push
        )
    )
    if args.vs == "postfix":
        targets.append(Postfix(workdir, users, quiet))
    for target in targets:
        target.start()
    deployed_cases(args, cases, source, users, report, targets)


def deployed_cases(
    args: argparse.Namespace,
    cases: list[Case],
    source: str,
    users: list[str],
    report: dict[str, Any],
    targets: list[Any],
) -> None:
    quiet = args.json_only
    report["setup"] = {t.name: t.description for t in targets}
    report["cases"] = {}
    for case in cases:
        rounds: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
        for n in range(args.rounds):
            for target in targets if n % 2 == 0 else targets[::-1]:
                say(f"{target.name}: {case.label}: round {n + 1}/{args.rounds}", quiet=quiet)
                rounds[target.name].append(
                    deployed_round(target, case, source, args, users, first=n == 0 and case is cases[0])
                )
        entry: dict[str, Any] = {}
        for name, done in rounds.items():
            best = max(done, key=lambda r: r["msg_per_s"])
            entry[name] = best | {"rounds_msg_per_s": [r["msg_per_s"] for r in done]}
        if "postfix" in entry:
            entry["ratio"] = ratios(entry["relate"], entry["postfix"], DEPLOYED_RATIO_OF)
        report["cases"][case.key] = entry
    if args.sustained:
        relate = targets[0]
        say(f"relate: sustained smtp-source to one recipient for {args.sustained:g} s", quiet=quiet)
        report["sustained"] = sustained_round(relate, source, args, users)


def index_lag(target: RelateDev) -> tuple[int, float]:
    """(messages whose text the indexer has not stored yet, age in seconds of the oldest of them)."""
    n, age = query_row(
        target.dsn,
        """SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
             FROM messages WHERE NOT text_indexed""",
    )
    return int(n), round(float(age), 1)


def sustained_round(target: RelateDev, source: str, args: argparse.Namespace, users: list[str]) -> dict[str, Any]:
    """smtp-source at full speed to one recipient for ``--sustained`` seconds (loads of ``20 x sessions``
    messages back to back), the text index backlog sampled every second; then how long the indexer takes
    to catch up. Every acknowledged message must be stored once."""
    n0, ids0 = target.counts()
    chunk = argparse.Namespace(**{**vars(args), "messages": 20 * args.sessions})
    samples: list[tuple[float, int, float]] = []
    stop = threading.Event()
    t0 = time.perf_counter()

    def sample() -> None:
        while not stop.is_set():
            backlog, age = index_lag(target)
            samples.append((round(time.perf_counter() - t0, 1), backlog, age))
            stop.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu0, load0, sent = target.cpu(), os.getloadavg()[0], 0
    try:
        while time.perf_counter() - t0 < args.sustained:
            run_source(source_commands(source, target.port, CASES["one"], chunk, users), args.timeout)
            sent += chunk.messages
        wall = time.perf_counter() - t0
        backlog, age = index_lag(target)
        cpu1 = target.cpu()
    finally:
        stop.set()
        sampler.join(timeout=10)
    catch_up = target.wait_indexed(args.timeout)
    n1, ids1 = target.counts()
    if (n1 - n0, ids1 - ids0) != (sent, sent):
        raise BenchError(f"relate, sustained: {sent} acknowledged, {n1 - n0} stored with {ids1 - ids0} Message-IDs")
    return {
        "seconds": round(wall, 1),
        "messages": sent,
        "msg_per_s": round(sent / wall, 1),
        "backlog_at_end": backlog,
        "oldest_unindexed_at_end_s": age,
        "max_backlog": max((b for _, b, _ in samples), default=0),
        "max_oldest_unindexed_s": max((a for _, _, a in samples), default=0.0),
        "index_catch_up_s": catch_up,
        "indexed_msg_per_s_during_load": round((sent - backlog) / wall, 1),
        "cpu_s_per_1k": {k: round((cpu1[k] - cpu0[k]) * 1000 / sent, 2) for k in cpu0},
        "load_avg_1m": [round(load0, 1), round(os.getloadavg()[0], 1)],
        "backlog_every_10s": [(t, b, a) for t, b, a in samples if int(t) % 10 == 0],
        "stored_once": sent,
    }


DEPLOYED_ROWS: list[tuple[str, tuple[str, ...]]] = [
    ("messages/s (250 received)", ("msg_per_s",)),
    ("messages/s end to end (stored)", ("end_to_end_msg_per_s",)),
    ("daemons CPU s / 1k msgs (all relate processes)", ("cpu_s_per_1k", "daemons")),
    ("  of which relate-smtp", ("cpu_s_per_1k", "of which smtp")),
    ("  of which relate-api (notifications)", ("cpu_s_per_1k", "of which api")),
    ("  of which relate-delivery (indexer)", ("cpu_s_per_1k", "of which delivery")),
    ("PostgreSQL CPU s / 1k msgs", ("cpu_s_per_1k", "postgres")),
    ("Postfix CPU s / 1k msgs (all processes)", ("cpu_s_per_1k", "postfix")),
    ("server CPU s / 1k msgs, total", ("cpu_s_per_1k", "server_total")),
    ("smtp-source CPU s / 1k msgs", ("cpu_s_per_1k", "client")),
    ("other processes' cores busy (noise)", ("other_cores_busy",)),
    ("text index backlog at the last 250", ("unindexed_at_end",)),
    ("index catch-up after the load (s)", ("index_catch_up_s",)),
    ("stored exactly once (count, Message-IDs)", ("stored_once",)),
]
DEPLOYED_RATIO_OF = {
    ("msg_per_s",): "msg_per_s",
    ("end_to_end_msg_per_s",): "end_to_end_msg_per_s",
    ("cpu_s_per_1k", "server_total"): "server_cpu_per_msg",
}


def render_deployed(report: dict[str, Any]) -> str:
    p = report["params"]
    lines = [
        f"SMTP ingest, deployed shape: smtp-source -s {p['sessions']} -m {p['messages']} -l {p['size']} per case "
        f"(best of {p['rounds']} rounds), {p['cpus']} CPUs shared, work dir on {p['fs']}",
        *(f"{name}: {setup}" for name, setup in report["setup"].items()),
    ]
    for key, entry in report["cases"].items():
        lines += ["", f"{CASES[key].label}:", comparison_table(DEPLOYED_ROWS, entry, "postfix", DEPLOYED_RATIO_OF)]
        if "pg_waits" in entry["relate"]:
            lines.append(f"  relate PostgreSQL backends active per sample: {entry['relate']['pg_waits']}")
        if "pg_statements" in entry["relate"]:
            lines.append("  relate PostgreSQL statements (pg_stat_statements), per message: calls, ms, mean ms")
            lines += [
                f"    {r['calls_per_msg']:>7} {r['ms_per_msg']:>8} {r['mean_ms']:>8}  {r['query']}"
                for r in entry["relate"]["pg_statements"]
            ]
    if "sustained" in report:
        s = report["sustained"]
        lines += [
            "",
            f"sustained, 1 recipient, {s['seconds']} s at full speed: {s['messages']} messages, {s['msg_per_s']} msg/s "
            f"(load {s['load_avg_1m']}); indexed during the load {s['indexed_msg_per_s_during_load']} msg/s",
            f"  text index backlog at the end: {s['backlog_at_end']} messages, "
            f"oldest {s['oldest_unindexed_at_end_s']} s "
            f"(most during the load: {s['max_backlog']} messages, {s['max_oldest_unindexed_s']} s); "
            f"caught up {s['index_catch_up_s']} s after the load",
            f"  (s, backlog, oldest s) every 10 s: {s['backlog_every_10s']}",
        ]
    return "\n".join(lines)


# -- one run ------------------------------------------------------------------------

Target = Relate | Postfix


@dataclass
class Round:
    """One verified pass of the load against one target."""

    load: LoadResult
    cpu: dict[str, float]  # CPU seconds per process group of the server
    tail: float  # seconds from the last 250 until every message was stored
    machine: MachineCpu  # CPU seconds of the whole machine in the same window


def run_round(target: Target, plan: list[list[Job]], args: argparse.Namespace, *, profile: bool = False) -> Round:
    """Send ``plan`` to a started target and check that all of it was stored."""
    total = sum(map(len, plan))
    before = target.stored()
    profiler = start_profiler(args, target) if profile else None
    try:
        cpu0, machine0 = target.cpu(), machine_cpu()
        load = asyncio.run(
            run_load(
                HOST, target.port, plan, reuse=args.reuse, client=args.client, io_timeout=30, deadline=args.timeout
            )
        )
        stored, tail = target.wait_stored(before + load.sent, args.timeout)
        cpu1, machine1 = target.cpu(), machine_cpu()
    finally:
        stop_profiler(profiler, args)
    if load.failed or load.sent != total:
        raise BenchError(
            f"{target.name}: {load.sent} of {total} messages acknowledged, failures {dict(load.failed)}; "
            "no figures reported"
        )
    if stored - before != total:
        raise BenchError(
            f"{target.name}: {total} messages acknowledged but {stored - before} stored; no figures reported\n"
            f"{target.log_tail()}"
        )
    return Round(load, {k: cpu1[k] - cpu0[k] for k in cpu0}, tail, machine1 - machine0)


def figures(target: Target, rounds: list[Round]) -> dict[str, Any]:
    """The verified rounds of one target, summed up: rates over summed wall time, latencies pooled."""
    total = sum(r.load.sent for r in rounds)
    wall = sum(r.load.wall for r in rounds)
    window = sum(r.load.wall + r.tail for r in rounds)
    latencies = [x for r in rounds for x in r.load.latencies]
    cpu = {k: sum(r.cpu[k] for r in rounds) for k in rounds[0].cpu}
    client = sum(r.load.client_cpu for r in rounds)
    machine = sum((r.machine for r in rounds), MachineCpu(0.0, 0.0))
    return {
        "setup": target.description,
        "messages": total,
        "stored": total,  # run_round refuses any round where stored != acknowledged
        "rounds_msg_per_s": [round(r.load.rate(), 1) for r in rounds],
        "connections": sum(r.load.connections for r in rounds),
        "wall_s": round(wall, 3),
        "msg_per_s": round(total / wall, 1),
        # Postfix answers 250 once the message is queued; end to end waits for the maildir copies too.
        "end_to_end_msg_per_s": round(total / window, 1),
        "latency_ms": {
            "p50": round(percentile(latencies, 50) * 1000, 2),
            "p99": round(percentile(latencies, 99) * 1000, 2),
            "mean": round(sum(latencies) / len(latencies) * 1000, 2),
            "max": round(max(latencies) * 1000, 2),
        },
    } | cpu_figures(cpu, client, machine, total, window)


def warm_up(target: Target, warmup: list[list[Job]], args: argparse.Namespace) -> None:
    if any(warmup):
        say(f"{target.name}: warm-up, {sum(map(len, warmup))} messages (not counted)", quiet=args.json_only)
        run_round(target, warmup, args)


def start_profiler(args: argparse.Namespace, target: Target) -> subprocess.Popen[bytes] | None:
    if not args.py_spy or not isinstance(target, Relate) or target.daemon is None:
        return None
    return start_py_spy(args.py_spy, target.daemon.pid, args.profile)


def stop_profiler(proc: subprocess.Popen[bytes] | None, args: argparse.Namespace) -> None:
    if proc is None:
        return
    stop_py_spy(proc, Path(args.profile), "relate-smtp", quiet=args.json_only, empty="profile: no samples")


# -- output ------------------------------------------------------------------------

ROWS: list[tuple[str, tuple[str, ...]]] = [
    ("messages/s (250 received)", ("msg_per_s",)),
    ("messages/s end to end (stored)", ("end_to_end_msg_per_s",)),
    ("latency p50, final '.' -> 250 (ms)", ("latency_ms", "p50")),
    ("latency p99 (ms)", ("latency_ms", "p99")),
    ("latency max (ms)", ("latency_ms", "max")),
    ("daemon CPU s / 1k msgs", ("cpu_s_per_1k", "daemon")),
    ("PostgreSQL CPU s / 1k msgs", ("cpu_s_per_1k", "postgres")),
    ("Postfix CPU s / 1k msgs (all processes)", ("cpu_s_per_1k", "postfix")),
    ("server CPU s / 1k msgs, total", ("cpu_s_per_1k", "server_total")),
    ("client CPU s / 1k msgs", ("cpu_s_per_1k", "client")),
    ("server cores busy (avg)", ("server_cores_busy",)),
    ("kernel (irq, softirq, kthreads) cores busy", ("kernel_cores_busy",)),
    ("other processes' cores busy (noise)", ("other_cores_busy",)),
    ("messages stored (= acknowledged, checked)", ("stored",)),
    ("wall time (s)", ("wall_s",)),
]
RATIO_OF = {
    ("msg_per_s",): "msg_per_s",
    ("end_to_end_msg_per_s",): "end_to_end_msg_per_s",
    ("latency_ms", "p50"): "latency_p50",
    ("latency_ms", "p99"): "latency_p99",
    ("cpu_s_per_1k", "server_total"): "server_cpu_per_msg",
}


def render(report: dict[str, Any]) -> str:
    relate, postfix = report["relate"], report.get("postfix")
    p = report["params"]
    lines = [
        f"SMTP ingest: {p['messages']} messages of {p['size']} bytes, {p['sessions']} concurrent sessions, "
        f"{'one connection per session' if p['reuse'] else 'one connection per message'}, "
        f"{p['users']} recipients, client {p['client']} (no pipelining), {p['cpus']} CPUs shared, "
        f"work dir on {p['fs']}",
        f"relate:  {relate['setup']}",
    ]
    if postfix:
        lines.append(f"postfix: {postfix['setup']}")
    lines += ["", comparison_table(ROWS, report, "postfix", RATIO_OF)]
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=20, help="concurrent SMTP sessions (default 20)")
    parser.add_argument(
        "--shape",
        choices=["daemon", "deployed"],
        default="daemon",
        help="daemon: relate-smtp alone, driven by this script's client (default); deployed: the whole system "
        "(relatectl dev --any-port) driven by Postfix's smtp-source, case by case (--cases)",
    )
    parser.add_argument(
        "--cases",
        default="one,one-d,twenty",
        help="deployed shape: which loads, of one (every message to one recipient), one-d (the same with "
        "smtp-source -d), twenty (spread over 20 recipients, one smtp-source each); default all three",
    )
    parser.add_argument(
        "--pg-waits", action="store_true", help="deployed shape: sample what PostgreSQL's backends wait on"
    )
    parser.add_argument(
        "--pg-statements",
        action="store_true",
        help="deployed shape: PostgreSQL with pg_stat_statements loaded; report its top statements per message",
    )
    parser.add_argument(
        "--push",
        action="store_true",
        help="deployed shape: VAPID keys in the config, as relatectl setup writes them (relate-api claims every "
        "delivery for web push; the bench users have no subscriptions, so nothing is sent)",
    )
    parser.add_argument(
        "--sustained",
        type=float,
        metavar="SECONDS",
        help="deployed shape: then smtp-source to one recipient at full speed for SECONDS (e.g. 60), the text "
        "index backlog sampled every second, and its catch-up time (--cases '' for this alone)",
    )
    parser.add_argument(
        "--messages", type=int, help="messages in all, per case (default 2000; 5000 in the deployed shape)"
    )
    parser.add_argument("--size", type=int, default=10240, help="approximate message size in bytes (default 10240)")
    parser.add_argument("--users", type=int, default=20, help="recipient mailboxes, user1..N@bench.test (default 20)")
    parser.add_argument(
        "--reuse",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one connection per session carrying all its messages, like smtp-source -d (default); "
        "--no-reuse opens a connection per message",
    )
    parser.add_argument("--vs", choices=["postfix"], help="also run the same load against a throwaway Postfix")
    parser.add_argument(
        "--client", choices=["raw", "aiosmtplib"], default="raw", help="load client (default raw asyncio streams)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="passes of the load per target, alternating targets (default 1)"
    )
    parser.add_argument("--warmup", type=int, default=0, help="messages sent first and not measured (default 0)")
    parser.add_argument("--pool-max", type=int, help="relate's database.pool_max (default: the config default)")
    parser.add_argument(
        "--sieve",
        action="store_true",
        help="give every user an active 50-rule Sieve script (none matches): the cost of filtering every delivery",
    )
    parser.add_argument(
        "--quota",
        action="store_true",
        help="give every user quota limits (far above the load): the cost of checking them on every delivery",
    )
    parser.add_argument(
        "--mailauth",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="SPF, DKIM and DMARC on every message, as deployed (default); --no-mailauth: smtp.mailauth.enabled false",
    )
    parser.add_argument(
        "--rspamd",
        action="store_true",
        help="spam filtering on: a throwaway rspamd (Debian's, relate.testing.rspamd's minimal configuration, "
        "no network lookups) asked for every message (smtp.rspamd.url); default off",
    )
    parser.add_argument(
        "--dkim",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="sign every message (RSA 2048) and publish the key (default); --no-dkim sends them unsigned",
    )
    parser.add_argument("--timeout", type=float, default=600, help="limit in seconds for each load (default 600)")
    parser.add_argument("--workdir", type=Path, help="parent of the temp dir (default: $TMPDIR or /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data) for inspection")
    parser.add_argument("--py-spy", help="path of a py-spy binary: profile relate-smtp during the load")
    parser.add_argument("--profile", type=Path, help="where py-spy writes collapsed stacks (with --py-spy)")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    if args.messages is None:
        args.messages = 5000 if args.shape == "deployed" else 2000
    if any(case not in CASES for case in args.cases.split(",") if case):
        parser.error(f"--cases: a comma-separated list of {', '.join(CASES)}")
    if min(args.sessions, args.messages, args.users, args.rounds) < 1 or args.size < 512 or args.warmup < 0:
        parser.error("--sessions, --messages, --users and --rounds must be positive, --size at least 512")
    if args.sustained is not None and (args.shape != "deployed" or args.sustained <= 0):
        parser.error("--sustained needs --shape deployed and a positive number of seconds")
    if args.py_spy and not args.profile:
        parser.error("--py-spy needs --profile FILE")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet = args.json_only
    workdir = make_workdir("relate-bench-", args.workdir)
    if args.shape == "deployed":
        return deployed_main(args, workdir)
    users = [f"user{n}@{DOMAIN}" for n in range(1, args.users + 1)]
    plan = plan_jobs(args.messages, args.sessions, args.size, SENDER, users)
    key = dkim.generate("bench", "rsa") if args.dkim else None
    if key is not None:
        plan = sign_plan(plan, key)
    warmup = [
        [
            Job(j.index + args.messages, j.mail_from, j.rcpt_to, j.data.replace(b"bench message", b"warm-up", 1))
            for j in s
        ]
        for s in plan_jobs(args.warmup, args.sessions, args.size, SENDER, users)
    ]
    if key is not None:
        warmup = sign_plan(warmup, key)
    report: dict[str, Any] = {
        "benchmark": "smtp_ingest",
        "params": {
            "sessions": args.sessions,
            "messages": args.messages,
            "size": len(plan[0][0].data),
            "users": args.users,
            "reuse": args.reuse,
            "client": args.client,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "quota": args.quota,
            "sieve": args.sieve,
            "mailauth": args.mailauth,
            "rspamd": args.rspamd,
            "dkim": args.dkim,
            "cpus": os.cpu_count(),
            "fs": fs_type(workdir),
        },
        "valid": False,
    }
    targets: list[Target] = []
    dns = ThreadedDnsServer(sender_zone(key))

    spam = None
    if args.rspamd:
        binary = find_program("rspamd")
        if binary is None:
            apt_install("rspamd", ["rspamd"], quiet=quiet)
            binary = find_program("rspamd") or "rspamd"
        spam = RspamdServer(workdir / "rspamd", binary, workers=os.cpu_count() or 1)  # rspamd's default count

    def body() -> None:
        rounds: dict[str, list[Round]] = {}
        address = dns.start()
        if spam is not None:
            spam.start()
        relate = Relate(
            workdir,
            users,
            args.pool_max,
            args.sessions,
            quiet,
            args.quota,
            dns=address,
            mailauth=args.mailauth,
            rspamd=spam.url if spam is not None else None,
            sieve=args.sieve,
        )
        targets.append(relate)
        if args.vs == "postfix":
            targets.append(Postfix(workdir, users, quiet))
        for target in targets:
            target.start()
            warm_up(target, warmup, args)
            rounds[target.name] = []
        for n in range(args.rounds):
            # Alternate the order, so slow drifts of the machine hit both targets alike.
            for target in targets if n % 2 == 0 else targets[::-1]:
                say(
                    f"{target.name}: round {n + 1}/{args.rounds}: {args.messages} messages of ~{args.size} bytes "
                    f"over {args.sessions} sessions",
                    quiet=quiet,
                )
                rounds[target.name].append(run_round(target, plan, args, profile=n == 0))
        for target in targets:
            report[target.name] = figures(target, rounds[target.name])
        if "postfix" in report:
            report["ratio"] = ratios(report["relate"], report["postfix"], RATIO_OF)

    def stop() -> None:
        stop_targets(targets, "smtp_ingest")
        dns.stop()
        if spam is not None:
            spam.stop()

    return run_benchmark("smtp_ingest", args, workdir, report, body, stop, render)


def deployed_main(args: argparse.Namespace, workdir: Path) -> int:
    report: dict[str, Any] = {
        "benchmark": "smtp_ingest",
        "params": {
            "shape": "deployed",
            "client": "smtp-source",
            "sessions": args.sessions,
            "messages": args.messages,
            "size": args.size,
            "cases": [c for c in args.cases.split(",") if c],
            "sustained_s": args.sustained,
            "push": args.push,
            "rounds": args.rounds,
            "cpus": os.cpu_count(),
            "fs": fs_type(workdir),
        },
        "valid": False,
    }
    targets: list[Any] = []
    return run_benchmark(
        "smtp_ingest",
        args,
        workdir,
        report,
        lambda: deployed_body(args, workdir, report, targets),
        lambda: stop_targets(targets, "smtp_ingest"),
        render_deployed,
    )


if __name__ == "__main__":
    sys.exit(main())
