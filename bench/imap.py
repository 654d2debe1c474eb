"""IMAP benchmark: logins, FETCH and SEARCH over a big mailbox, IDLE latency and memory, optionally against Dovecot.

Sets up a throwaway world in a temp dir (an embedded PostgreSQL 18 with fsync
on, the schema, domain ``bench.test`` with its users and API keys, a mailbox
of ``--messages`` messages loaded through the store's ingest and then indexed
for text search, and ``python -m relate.imap`` on a free loopback port with
plaintext LOGIN allowed, so TLS is not measured), then measures:

- logins/s with ``--concurrency`` clients doing connect, LOGIN, LOGOUT:
  warm (one user and key, so relate's auth cache answers) and cold
  (``--cold-users`` users with a key each, every one used once: one bcrypt
  verification per login);
- SELECT, then ``FETCH 1:* (FLAGS ENVELOPE)`` over the mailbox (first run and
  the median of the repeats; seconds and messages/s);
- ``SEARCH TEXT <word>``, where exactly ``--hits`` messages contain the word
  (checked: the hit count must be the same on every server);
- IDLE latency: one client in IDLE, a second connection APPENDs a message,
  time from sending the APPEND to the IDLE client reading ``* n EXISTS``
  (p50/p99 over ``--deliveries``); for relate also with the store's ingest
  called from the benchmark process (the path SMTP delivery takes);
- memory per idle connection: the server's RSS (and PSS) before and after
  opening ``--idle-connections`` logged-in connections that sit in IDLE.

``--vs dovecot`` runs the same against a throwaway Dovecot (installed from
Debian if missing, configured as ``shared/peers.md`` says, the same message
bytes written into its Maildir and indexed with ``doveadm force-resync``) and
adds the ratio relate/dovecot. Everything started is stopped again, also on
Ctrl-C.

Usage: ``.venv/bin/python bench/imap.py [--vs dovecot] [--messages 10000]
[--json-only]``; ``--help`` for the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import email.utils
import os
import random
import re
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg
import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    HOST,
    BenchError,
    Job,
    MachineCpu,
    RawSmtp,
    RelateServer,
    apt_install,
    comparison_rows,
    dig,
    find_program,
    free_port,
    fs_type,
    machine_cpu,
    make_workdir,
    migrate_db,
    percentile,
    ratio,
    require_durable,
    run_benchmark,
    run_cmd,
    say,
    start_py_spy,
    stop_py_spy,
    stop_targets,
    table,
    tree_cpu,
)
from _imapstress import (
    STRESS_RUNS,
    DeployedRelate,
    bigbox_load,
    fanout,
    find_imaptest,
    run_imaptest,
    write_mbox,
)

from relate.config import AuthConfig, DatabaseConfig
from relate.services import accounts
from relate.store import db, messages

DOMAIN = "bench.test"
VMAIL_UID = 5000  # peers.md: Dovecot's mail files belong to uid/gid 5000 (vmail)
BIG_USER = f"big@{DOMAIN}"  # owns the --messages mailbox
WARM_USER = f"warm@{DOMAIN}"  # the warm login test: one user, one key, over and over
IDLE_USER = f"idle@{DOMAIN}"  # the IDLE latency test
# The word SEARCH TEXT looks for. It has q, x and z, which the generated vocabulary never uses, so it
# is neither a substring nor a prefix of any other word (relate's full-text prefilter matches prefixes).
MARKER = "quixzotl"
DOVECOT_PASSWORD = "pass"  # noqa: S105 - peers.md: static passdb, any user


def cold_user(n: int) -> str:
    return f"cold{n}@{DOMAIN}"


# -- messages ----------------------------------------------------------------------


def _vocabulary(rng: random.Random, size: int = 4000) -> list[str]:
    consonants, vowels = "bcdfghjklmnprstvw", "aeiou"
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.randint(1, 4))))
    return sorted(words)


def make_corpus(count: int, size: int, hits: int, seed: int = 1) -> tuple[list[bytes], set[int]]:
    """``count`` unique plain-text messages of about ``size`` bytes (CRLF), and the indexes of the ``hits``
    messages that contain MARKER once in their body. Words are random, from a fixed vocabulary."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not cryptography
    vocab = _vocabulary(rng)
    with_marker = {i * count // hits for i in range(hits)} if hits else set()
    base = datetime(2024, 1, 1, tzinfo=UTC)
    corpus = []
    for i in range(count):
        subject = " ".join(rng.choices(vocab, k=4))
        sender = f"sender{i % 97}@client.example"
        headers = (
            f"From: Sender {i % 97} <{sender}>\r\n"
            f"To: <{BIG_USER}>\r\n"
            f"Subject: bench {i} {subject}\r\n"
            f"Date: {email.utils.format_datetime(base + timedelta(minutes=i))}\r\n"
            f"Message-ID: <imap-bench-{i}@client.example>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n"
            "Content-Transfer-Encoding: 7bit\r\n"
            "\r\n"
        )
        lines: list[str] = []
        room = size - len(headers)
        while room > 0:
            line = " ".join(rng.choices(vocab, k=10))[:76]
            lines.append(line)
            room -= len(line) + 2
        if i in with_marker:
            n = rng.randrange(len(lines))
            words = lines[n].split(" ")
            words[rng.randrange(len(words))] = MARKER
            lines[n] = " ".join(words)
        corpus.append((headers + "\r\n".join(lines) + "\r\n").encode("ascii"))
    assert sum(MARKER.encode() in m.lower() for m in corpus) == len(with_marker)
    return corpus, with_marker


def small_message(n: int, recipient: str) -> bytes:
    """A short message for APPEND and the IDLE test."""
    return (
        f"From: Bench <sender@client.example>\r\nTo: <{recipient}>\r\nSubject: idle test {n}\r\n"
        f"Date: {email.utils.format_datetime(datetime.now(UTC))}\r\n"
        f"Message-ID: <idle-{n}-{os.getpid()}-{time.time_ns()}@client.example>\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"Hello {n}, this is a short message for the IDLE test.\r\n"
    ).encode()


# -- a lean IMAP client --------------------------------------------------------------

_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
_EXISTS = re.compile(rb"^\* (\d+) EXISTS")


class ImapFailure(Exception):
    """The server answered something the benchmark did not expect."""


def quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Imap:
    """One connection: commands one at a time, responses read line by line (literals inlined)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.tags = 0

    @classmethod
    async def open(cls, port: int, within: float = 30.0) -> Imap:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port, limit=1 << 20), within)
        conn = cls(reader, writer)
        try:
            greeting = await asyncio.wait_for(conn.read_line(), within)
        except BaseException:
            conn.abort()
            raise
        if not greeting.startswith(b"* OK"):
            conn.abort()
            raise ImapFailure(f"greeting {greeting[:100]!r}")
        return conn

    async def read_line(self) -> bytes:
        line = await self.reader.readuntil(b"\r\n")
        while (m := _LITERAL.search(line)) is not None:
            line += await self.reader.readexactly(int(m.group(1)))
            line += await self.reader.readuntil(b"\r\n")
        return line

    def _tag(self) -> bytes:
        self.tags += 1
        return b"a%d" % self.tags

    async def command(self, text: str | bytes, within: float = 60.0) -> list[bytes]:
        """Send one command (literals LITERAL+ style, inside ``text``); the untagged lines, or ImapFailure."""
        tag = self._tag()
        body = text.encode() if isinstance(text, str) else text
        self.writer.write(tag + b" " + body + b"\r\n")
        untagged: list[bytes] = []
        async with asyncio.timeout(within):
            while True:
                line = await self.read_line()
                if line.startswith(tag + b" "):
                    if not line[len(tag) + 1 :].startswith(b"OK"):
                        raise ImapFailure(f"{body[:40]!r} -> {line[:200]!r}")
                    return untagged
                untagged.append(line)

    async def login(self, user: str, password: str) -> None:
        await self.command(f"LOGIN {quoted(user)} {quoted(password)}")

    async def append(self, mailbox: str, message: bytes) -> None:
        await self.command(f"APPEND {quoted(mailbox)} {{{len(message)}+}}\r\n".encode() + message)

    async def idle(self) -> bytes:
        """Start IDLE; returns its tag once the server said '+'."""
        tag = self._tag()
        self.writer.write(tag + b" IDLE\r\n")
        async with asyncio.timeout(60):
            while True:
                line = await self.read_line()
                if line.startswith(b"+"):
                    return tag
                if line.startswith(tag + b" "):
                    raise ImapFailure(f"IDLE -> {line[:200]!r}")

    async def done(self, tag: bytes) -> None:
        self.writer.write(b"DONE\r\n")
        async with asyncio.timeout(30):
            while not (await self.read_line()).startswith(tag + b" "):
                pass

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 5)

    def abort(self) -> None:
        self.writer.close()


def wait_for_imap(port: int, timeout: float, alive: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until the port greets with ``* OK``; raise if it does not in time."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"the server exited with code {alive.returncode} before it listened")
        try:

            async def probe() -> None:
                conn = await Imap.open(port, within=5)
                await conn.command("LOGOUT", within=5)
                await conn.close()

            asyncio.run(probe())
            return
        except (OSError, TimeoutError, ImapFailure, asyncio.IncompleteReadError) as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{HOST}:{port} did not greet within {timeout:.0f}s ({last})")


# -- Relate Mail -------------------------------------------------------------------------


class Relate(RelateServer):
    """relate-imap over an embedded, durable PostgreSQL, in ``workdir``."""

    module = "relate.imap"
    daemon_name = "relate-imap"

    def __init__(self, workdir: Path, args: argparse.Namespace) -> None:
        super().__init__(workdir, args.json_only)
        self.args = args
        self.keys: dict[str, str] = {}
        self.load: dict[str, Any] = {}
        self.config: dict[str, Any] = {}

    @property
    def description(self) -> str:
        imap = self.config.get("imap", {})
        return (
            f"relate-imap (plain port, allow_plaintext_auth, logging WARNING, auth cache "
            f"{AuthConfig.cache_seconds:.0f}s, bcrypt rounds {AuthConfig.bcrypt_rounds}, "
            f"max_connections_per_client {imap.get('max_connections_per_client')}, "
            f"max_connections_per_user {imap.get('max_connections_per_user')}) -> "
            f"PostgreSQL {self.settings.get('server_version', '?')} "
            f"(fsync={self.settings.get('fsync')}, synchronous_commit={self.settings.get('synchronous_commit')})"
        )

    def password(self, user: str) -> str:
        return self.keys[user]

    def start(self, corpus: list[bytes]) -> None:
        self.start_postgres()
        asyncio.run(self._prepare(corpus))
        require_durable(self.settings)
        self.port = free_port(HOST)
        conns = self.args.idle_connections
        self.config = {
            "hostname": f"imap.{DOMAIN}",
            "database": {"dsn": self.dsn},
            "imap": {
                "imap": {"listen": [f"{HOST}:{self.port}"]},
                "imaps": {"listen": []},
                "allow_plaintext_auth": True,
                # The memory test opens --idle-connections from 127.0.0.1, a few per cold user.
                "max_connections_per_client": max(50, conns + 2 * self.args.concurrency + 10),
                "max_connections_per_user": max(50, -(-conns // max(1, self.args.cold_users)) + 10),
            },
            "logging": {"level": "WARNING"},
        }
        (self.workdir / "relate.yaml").write_text(yaml.safe_dump(self.config))
        self._launch()

    def _launch(self) -> None:
        # The log is appended to: fresh() starts the daemon a second time.
        self.start_daemon(
            self.workdir / "relate.yaml", lambda daemon: wait_for_imap(self.port, 60, alive=daemon), append=True
        )

    def fresh(self) -> None:
        """Restart relate-imap (same config, same database)."""
        self.stop_daemon()
        self._launch()

    async def _prepare(self, corpus: list[bytes]) -> None:
        self.settings = await migrate_db(self.dsn)
        pool = await db.create_pool(DatabaseConfig(dsn=self.dsn, pool_min=1, pool_max=4))
        try:
            await accounts.add_domain(pool, DOMAIN)
            users = [BIG_USER, WARM_USER, IDLE_USER, *(cold_user(n) for n in range(1, self.args.cold_users + 1))]
            for address in users:
                await accounts.add_user(pool, address)
            say(
                f"relate: {len(users)} API keys with scope imap (bcrypt rounds {AuthConfig.bcrypt_rounds})",
                quiet=self.quiet,
            )
            limit = asyncio.Semaphore(os.cpu_count() or 2)

            async def make_key(address: str) -> None:
                async with limit:
                    key, _ = await accounts.create_key(pool, address, "bench", "imap", rounds=AuthConfig.bcrypt_rounds)
                self.keys[address] = key

            await asyncio.gather(*(make_key(a) for a in users))
            await self._load(pool, corpus)
        finally:
            await pool.close()

    async def _load(self, pool: asyncpg.Pool, corpus: list[bytes]) -> None:
        async with pool.acquire() as conn:
            self.load = await ingest_corpus(conn, corpus, BIG_USER, quiet=self.quiet)

    def memory(self) -> dict[str, float]:
        assert self.daemon is not None
        proc = psutil.Process(self.daemon.pid)
        info = proc.memory_full_info()
        return {"rss": info.rss, "pss": info.pss, "uss": info.uss, "processes": 1}


async def ingest_corpus(conn: asyncpg.Connection, corpus: list[bytes], user: str, *, quiet: bool) -> dict[str, Any]:
    """``user``'s INBOX through the store's ingest (one transaction per batch), then its body text indexed."""
    say(f"relate: loading {len(corpus)} messages with messages.ingest, batches of 500", quiet=quiet)
    inbox = await conn.fetchval(
        "SELECT m.id FROM mailboxes m JOIN users u ON u.id = m.user_id "
        "WHERE u.address = $1 AND upper(m.name) = 'INBOX'",
        user,
    )
    size0 = await conn.fetchval("SELECT pg_database_size(current_database())")
    t0 = time.perf_counter()
    for start in range(0, len(corpus), 500):
        async with conn.transaction():
            for raw in corpus[start : start + 500]:
                await messages.ingest(conn, raw, [inbox])
    ingest_s = time.perf_counter() - t0
    say(f"relate: ingest took {ingest_s:.1f}s; indexing body text (index_pending until 0)", quiet=quiet)
    t0 = time.perf_counter()
    indexed = 0
    while n := await messages.index_pending(conn, limit=500):
        indexed += n
    index_s = time.perf_counter() - t0
    # Settle before measuring: autovacuum would otherwise go over the fresh rows during the first workloads.
    await conn.execute("VACUUM ANALYZE")
    await conn.execute("CHECKPOINT")
    stored = await conn.fetchval("SELECT count(*) FROM messages WHERE mailbox_id = $1", inbox)
    pending = await conn.fetchval("SELECT count(*) FROM messages WHERE NOT text_indexed")
    size = await conn.fetchval("SELECT pg_database_size(current_database())")
    if stored != len(corpus) or pending:
        raise BenchError(f"relate: {stored} of {len(corpus)} messages stored, {pending} not indexed")
    return {
        "seconds": round(ingest_s + index_s, 2),
        "ingest_s": round(ingest_s, 2),
        "index_s": round(index_s, 2),
        "indexed": indexed,
        "store_mib": round((size - size0) / 2**20, 1),  # tables, TOAST and indexes; WAL not counted
        "how": "messages.ingest, 500 per transaction, then messages.index_pending until 0",
    }


class RelateDelivery:
    """The store's ingest called from the benchmark process: what SMTP delivery does, without SMTP."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.pool: asyncpg.Pool | None = None
        self.inbox = 0

    async def __aenter__(self) -> RelateDelivery:
        self.pool = await db.create_pool(DatabaseConfig(dsn=self.dsn, pool_min=1, pool_max=1))
        self.inbox = await self.pool.fetchval(
            "SELECT m.id FROM mailboxes m JOIN users u ON u.id = m.user_id "
            "WHERE u.address = $1 AND upper(m.name) = 'INBOX'",
            IDLE_USER,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def deliver(self, raw: bytes) -> None:
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            await messages.ingest(conn, raw, [self.inbox])


# -- Dovecot ------------------------------------------------------------------------------

DOVECOT_CONF = """\
# Throwaway Dovecot test peer of bench/imap.py (shared/peers.md), loopback only, plaintext, no TLS.
# Start: dovecot -c {root}/dovecot.conf   Stop: doveadm -c {root}/dovecot.conf stop
instance_name = relate-bench-dovecot
base_dir = {root}/run
state_dir = {root}/state
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = {root}/log/dovecot.log
info_log_path = {root}/log/dovecot-info.log
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = {uid}
mail_location = maildir:~/Maildir
mail_max_userip_connections = {userip_limit}
# peers.md has 500 and 2000; the memory test needs a process per IDLE connection.
default_process_limit = {process_limit}
default_client_limit = {client_limit}

passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid={uid} gid={uid} home={root}/home/%u
}}

namespace inbox {{
  inbox = yes
  separator = /
  mailbox Drafts {{
    special_use = \\Drafts
    auto = subscribe
  }}
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = subscribe
  }}
  mailbox Junk {{
    special_use = \\Junk
  }}
}}

service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
protocol imap {{
  mail_max_userip_connections = {userip_limit}
}}
"""


def ensure_dovecot(quiet: bool) -> tuple[str, str]:
    """The paths of ``dovecot`` and ``doveadm``; installs Debian's packages first (peers.md) when missing."""
    dovecot, doveadm = find_program("dovecot"), find_program("doveadm")
    if not (dovecot and doveadm and Path("/usr/lib/dovecot/imap").exists()):
        apt_install("dovecot", ["dovecot-core", "dovecot-imapd"], quiet=quiet)
        dovecot, doveadm = find_program("dovecot"), find_program("doveadm")
    if not dovecot or not doveadm:
        raise BenchError("apt-get installed dovecot but there is no dovecot or doveadm command")
    return dovecot, doveadm


class Dovecot:
    """A throwaway Dovecot 2.3: imap on a loopback port, static passdb, Maildir under ``workdir/dovecot/home``."""

    name = "dovecot"

    def __init__(self, workdir: Path, args: argparse.Namespace) -> None:
        self.root = workdir / "dovecot"
        self.args = args
        self.quiet = args.json_only
        self.port = 0
        self.dovecot = ""
        self.doveadm = ""
        self.version = "?"
        self.master_pid = 0
        self.started = False
        self.load: dict[str, Any] = {}

    @property
    def conf(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def description(self) -> str:
        return (
            f"Dovecot {self.version} (peers.md config: static passdb, no auth cache, imap-login "
            "service_count=1, a process per session; Maildir; info log on)"
        )

    def password(self, user: str) -> str:
        return DOVECOT_PASSWORD

    def home(self, user: str) -> Path:
        return self.root / "home" / user

    def _maildir(self, user: str) -> Path:
        maildir = self.home(user) / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        return maildir

    def start(self, corpus: list[bytes]) -> None:
        self.dovecot, self.doveadm = ensure_dovecot(self.quiet)
        self.version = run_cmd([self.dovecot, "--version"], timeout=30, check=False).stdout.strip() or "?"
        for sub in ("run", "state", "log", "home"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.port = free_port(HOST)
        conns = self.args.idle_connections
        process_limit = max(500, conns + 2 * self.args.concurrency + 100, self.args.fanout_peer_sessions + 100)
        self.conf.write_text(
            DOVECOT_CONF.format(
                root=self.root,
                uid=VMAIL_UID,
                port=self.port,
                password=DOVECOT_PASSWORD,
                process_limit=process_limit,
                client_limit=max(2000, 4 * process_limit),
                userip_limit=max(200, self.args.fanout_peer_sessions + 10),
            )
        )
        # The same users as relate's, each with an (empty) INBOX, so a cold login does not create one.
        users = [WARM_USER, IDLE_USER, *(cold_user(n) for n in range(1, self.args.cold_users + 1))]
        for user in users:
            self._maildir(user)
        write_s = self._write_maildir(corpus)
        for dirpath, dirnames, filenames in os.walk(self.root / "home"):
            for name in (dirpath, *(os.path.join(dirpath, d) for d in dirnames)):
                os.chown(name, VMAIL_UID, VMAIL_UID)
            for name in filenames:
                os.chown(os.path.join(dirpath, name), VMAIL_UID, VMAIL_UID)
        say(f"dovecot: starting Dovecot {self.version} on {HOST}:{self.port} in {self.root}", quiet=self.quiet)
        self.started = True  # from here on, stop() cleans up whatever got started
        # The master daemonizes: its output goes to a file, since a pipe would stay open with it.
        with (self.root / "log" / "start.log").open("wb") as out:
            code = subprocess.run(  # noqa: S603 - Debian's dovecot, our own config
                [self.dovecot, "-c", str(self.conf)], stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=60
            ).returncode
        if code != 0:
            text = (self.root / "log" / "start.log").read_text(errors="replace")
            raise BenchError(f"dovecot start failed ({code}): {text}\n{self.log_tail()}")
        try:
            self.master_pid = self._read_master_pid(30)
            wait_for_imap(self.port, 60)
        except (TimeoutError, RuntimeError) as exc:
            raise BenchError(f"dovecot did not listen: {exc}\n{self.log_tail()}") from None
        say(f"dovecot: doveadm force-resync -u {BIG_USER} INBOX", quiet=self.quiet)
        t0 = time.perf_counter()
        resync = run_cmd(
            [self.doveadm, "-c", str(self.conf), "force-resync", "-u", BIG_USER, "INBOX"],
            timeout=self.args.timeout,
            check=False,
        )
        resync_s = time.perf_counter() - t0
        if resync.returncode != 0:
            raise BenchError(f"doveadm force-resync failed: {resync.stdout}{resync.stderr}\n{self.log_tail()}")
        os.sync()  # no writeback of the new files during the workloads (relate's load ends with a CHECKPOINT)
        size = sum(f.stat().st_size for f in self.home(BIG_USER).rglob("*") if f.is_file())
        self.load = {
            "seconds": round(write_s + resync_s, 2),
            "write_s": round(write_s, 2),
            "resync_s": round(resync_s, 2),
            "store_mib": round(size / 2**20, 1),
            "how": "the same bytes written as Maildir files (cur/), then doveadm force-resync",
        }

    def _write_maildir(self, corpus: list[bytes]) -> float:
        say(f"dovecot: writing {len(corpus)} messages into {BIG_USER}'s Maildir", quiet=self.quiet)
        cur = self._maildir(BIG_USER) / "cur"
        t0 = time.perf_counter()
        stamp = int(time.time()) - len(corpus)
        for i, raw in enumerate(corpus):
            # <time>.M<usecs>P<pid>.<host>,S=<size>,W=<size with CRLF>:2,<flags>; the bytes are CRLF already.
            name = f"{stamp + i}.M{i:06d}P{os.getpid()}.bench,S={len(raw)},W={len(raw)}:2,"
            (cur / name).write_bytes(raw)
        return time.perf_counter() - t0

    def _read_master_pid(self, timeout: float) -> int:
        pid_file = self.root / "run" / "master.pid"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, IndexError):
                return int(pid_file.read_text().split()[0])
            time.sleep(0.1)
        raise TimeoutError(f"no {pid_file}")

    def cpu(self) -> dict[str, float]:
        return {"dovecot": tree_cpu(self.master_pid)}

    def memory(self) -> dict[str, float]:
        """RSS of the imap and imap-login processes (as asked); PSS and USS of every Dovecot process."""
        rss = pss = uss = 0
        count = 0
        try:
            master = psutil.Process(self.master_pid)
            procs = [master, *master.children(recursive=True)]
        except psutil.Error:
            return {"rss": 0, "pss": 0, "uss": 0, "processes": 0}
        for proc in procs:
            try:
                info = proc.memory_full_info()
                pss += info.pss
                uss += info.uss
                if proc.name() in ("imap", "imap-login"):
                    rss += info.rss
                    count += 1
            except psutil.Error:
                continue
        return {"rss": rss, "pss": pss, "uss": uss, "processes": count}

    def imap_processes(self) -> int:
        try:
            return sum(1 for p in psutil.Process(self.master_pid).children() if p.name() == "imap")
        except psutil.Error:
            return 0

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.root / "log" / "dovecot.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if not self.started:
            return
        if not self.master_pid:
            with contextlib.suppress(TimeoutError):
                self.master_pid = self._read_master_pid(5)
        run_cmd([self.doveadm or "doveadm", "-c", str(self.conf), "stop"], timeout=60, check=False)
        deadline = time.monotonic() + 30
        while self.master_pid and psutil.pid_exists(self.master_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.master_pid and psutil.pid_exists(self.master_pid):
            with contextlib.suppress(OSError):
                os.kill(self.master_pid, signal.SIGKILL)
        self.started = False


Target = Relate | Dovecot


# -- measuring ----------------------------------------------------------------------------


@dataclass
class Phase:
    """Wall time and CPU of one measured stretch."""

    wall: float = 0.0
    server_cpu: dict[str, float] = field(default_factory=dict)
    client_cpu: float = 0.0
    machine: MachineCpu = field(default_factory=lambda: MachineCpu(0.0, 0.0))

    @property
    def server(self) -> float:
        return sum(self.server_cpu.values())

    @property
    def other(self) -> float:
        """CPU seconds of everything else on the machine (noise)."""
        return max(0.0, self.machine.busy - self.server - self.client_cpu - self.machine.kernel)


class Meter:
    """``with Meter(target, "fetch") as m: ...``: CPU and wall time of the block, optionally under py-spy."""

    # Every phase of the run by target, for the noise figure.
    phases: collections.defaultdict[str, list[Phase]] = collections.defaultdict(list)  # noqa: RUF012

    def __init__(self, target: Target, label: str, args: argparse.Namespace) -> None:
        self.target = target
        self.label = label
        self.args = args
        self.phase = Phase()
        self._profiler: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Meter:
        if self.args.py_spy and isinstance(self.target, Relate) and self.target.daemon is not None:
            self._profiler = start_py_spy(self.args.py_spy, self.target.daemon.pid, self._profile_path())
        self._cpu0 = self.target.cpu()
        self._machine0 = machine_cpu()
        self._client0 = time.process_time()
        self._t0 = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        wall = time.perf_counter() - self._t0
        client = time.process_time() - self._client0
        cpu1 = self.target.cpu()
        self.phase = Phase(wall, {k: cpu1[k] - self._cpu0[k] for k in cpu1}, client, machine_cpu() - self._machine0)
        Meter.phases[self.target.name].append(self.phase)
        if self._profiler is not None:
            stop_py_spy(
                self._profiler,
                self._profile_path(),
                f"relate-imap during {self.label}",
                quiet=self.args.json_only,
                top=20,
                empty=f"profile {self.label}: no samples",
                what=f" for {self.label}",
            )

    def _profile_path(self) -> Path:
        return Path(f"{self.args.profile}.{self.label}")


def cpu_ms_per(phase: Phase, ops: float) -> dict[str, float]:
    out = {k: round(v * 1000 / ops, 3) for k, v in phase.server_cpu.items()} if ops else {}
    out["server_total"] = round(phase.server * 1000 / ops, 3) if ops else 0.0
    out["client"] = round(phase.client_cpu * 1000 / ops, 3) if ops else 0.0
    return out


def ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": round(percentile(values, 50) * 1000, 2),
        "p99": round(percentile(values, 99) * 1000, 2),
        "max": round(max(values) * 1000, 2),
    }


# -- workloads --------------------------------------------------------------------------------


async def login_load(
    target: Target, users: list[str], concurrency: int, deadline: float
) -> tuple[list[float], collections.Counter[str]]:
    """``concurrency`` clients work through ``users``: connect, LOGIN, LOGOUT, close, one user each time."""
    queue: Iterator[str] = iter(users)
    latencies: list[float] = []
    failed: collections.Counter[str] = collections.Counter()

    async def client() -> None:
        for user in queue:
            try:
                conn = await Imap.open(target.port)
                try:
                    t0 = time.perf_counter()
                    await conn.login(user, target.password(user))
                    latencies.append(time.perf_counter() - t0)
                    await conn.command("LOGOUT")
                finally:
                    await conn.close()
            except (OSError, TimeoutError, ImapFailure, asyncio.IncompleteReadError) as exc:
                failed[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1

    tasks = [asyncio.create_task(client()) for _ in range(concurrency)]
    _, pending = await asyncio.wait(tasks, timeout=deadline)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
        failed["deadline"] += len(users) - len(latencies) - sum(failed.values())
    return latencies, failed


async def logins(target: Target, args: argparse.Namespace, kind: str) -> dict[str, Any]:
    if kind == "warm":
        # One warm-up login (not counted) fills relate's auth cache; then the same user and key every time.
        await login_load(target, [WARM_USER], 1, 60)
        users = [WARM_USER] * args.warm_logins
    else:
        users = [cold_user(n) for n in range(1, args.cold_users + 1)]
    say(f"{target.name}: {len(users)} {kind} logins, {args.concurrency} concurrent clients", quiet=args.json_only)
    with Meter(target, f"login-{kind}", args) as meter:
        latencies, failed = await login_load(target, users, args.concurrency, args.timeout)
    if failed:
        raise BenchError(f"{target.name}: {kind} logins failed: {dict(failed)}\n{target.log_tail()}")
    phase = meter.phase
    return {
        "logins": len(latencies),
        "distinct_users": len(set(users)),
        "wall_s": round(phase.wall, 3),
        "per_s": round(len(latencies) / phase.wall, 1),
        "login_ms": ms(latencies),
        "cpu_ms_per_login": cpu_ms_per(phase, len(latencies)),
        "other_cores_busy": round(phase.other / phase.wall, 2),
    }


def _search_hits(untagged: list[bytes]) -> list[int]:
    numbers: list[int] = []
    for line in untagged:
        if line.startswith(b"* SEARCH"):
            numbers += [int(n) for n in line[8:].split()]
    return numbers


async def mailbox_work(target: Target, args: argparse.Namespace, expected_hits: set[int]) -> dict[str, Any]:
    """SELECT the big mailbox, FETCH 1:* (FLAGS ENVELOPE) ``--fetch-rounds`` times, SEARCH TEXT ``--searches``."""
    count = args.messages
    conn = await Imap.open(target.port)
    out: dict[str, Any] = {}
    try:
        await conn.login(BIG_USER, target.password(BIG_USER))
        t0 = time.perf_counter()
        untagged = await conn.command("SELECT INBOX", args.timeout)
        out["select_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        exists = [int(m.group(1)) for line in untagged if (m := _EXISTS.match(line))]
        if exists != [count]:
            raise BenchError(f"{target.name}: SELECT INBOX said EXISTS {exists}, expected {count}")

        say(f"{target.name}: FETCH 1:* (FLAGS ENVELOPE) x{args.fetch_rounds}", quiet=args.json_only)
        times: list[float] = []
        phases: list[Phase] = []
        for n in range(args.fetch_rounds):
            with Meter(target, "fetch-first" if n == 0 else "fetch", args) as meter:
                untagged = await conn.command("FETCH 1:* (FLAGS ENVELOPE)", args.timeout)
            fetched = sum(1 for line in untagged if b" FETCH (" in line and b"ENVELOPE (" in line)
            if fetched != count:
                raise BenchError(f"{target.name}: FETCH 1:* returned {fetched} responses with ENVELOPE of {count}")
            times.append(meter.phase.wall)
            phases.append(meter.phase)
        repeat = times[1:] or times
        out["fetch"] = {
            "messages": count,
            "bytes": sum(len(line) for line in untagged),
            "first_s": round(times[0], 3),
            "first_msg_per_s": round(count / times[0], 1),
            "repeat_s": round(statistics.median(repeat), 3),
            "repeat_msg_per_s": round(count / statistics.median(repeat), 1),
            # The best run is the least disturbed by other load on a shared machine.
            "best_s": round(min(repeat), 3),
            "best_msg_per_s": round(count / min(repeat), 1),
            "runs_s": [round(t, 3) for t in times],
            "cpu_ms_per_1k_msgs_first": cpu_ms_per(phases[0], count / 1000),
            "cpu_ms_per_1k_msgs_repeat": cpu_ms_per(_sum_phases(phases[1:] or phases), len(repeat) * count / 1000),
        }

        say(f"{target.name}: SEARCH TEXT {MARKER} x{args.searches}", quiet=args.json_only)
        times = []
        phases = []
        hit_counts = []
        for n in range(args.searches):
            with Meter(target, "search-first" if n == 0 else "search", args) as meter:
                untagged = await conn.command(f"SEARCH TEXT {MARKER}", args.timeout)
            hits = _search_hits(untagged)
            if sorted(hits) != sorted(i + 1 for i in expected_hits):
                raise BenchError(
                    f"{target.name}: SEARCH TEXT {MARKER} found {len(hits)} messages, expected {len(expected_hits)}"
                )
            hit_counts.append(len(hits))
            times.append(meter.phase.wall)
            phases.append(meter.phase)
        repeat = times[1:] or times
        out["search"] = {
            "hits": hit_counts[0],
            "expected_hits": len(expected_hits),
            "first_ms": round(times[0] * 1000, 2),
            "median_ms": round(statistics.median(repeat) * 1000, 2),
            "best_ms": round(min(repeat) * 1000, 2),
            "runs_ms": [round(t * 1000, 2) for t in times],
            "cpu_ms_per_search": cpu_ms_per(_sum_phases(phases[1:] or phases), len(repeat)),
        }
        await conn.command("LOGOUT")
    finally:
        await conn.close()
    return out


def _sum_phases(phases: list[Phase]) -> Phase:
    total = Phase()
    for p in phases:
        total.wall += p.wall
        total.client_cpu += p.client_cpu
        for k, v in p.server_cpu.items():
            total.server_cpu[k] = total.server_cpu.get(k, 0.0) + v
        total.machine = MachineCpu(total.machine.busy + p.machine.busy, total.machine.kernel + p.machine.kernel)
    return total


async def idle_latency(
    target: Target, args: argparse.Namespace, deliver: Callable[[bytes], Awaitable[None]] | None, label: str
) -> dict[str, Any]:
    """One client IDLEs on IDLE_USER's INBOX; each delivery's time until it reads ``* n EXISTS``.

    ``deliver`` None: APPEND from a second IMAP connection (the same for every server). Otherwise the
    given coroutine stores the message (relate: the store's ingest from this process).
    """
    idler = await Imap.open(target.port)
    appender: Imap | None = None
    arrivals: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
    reader_task: asyncio.Task[None] | None = None
    latencies: list[float] = []
    round_trips: list[float] = []
    try:
        await idler.login(IDLE_USER, target.password(IDLE_USER))
        untagged = await idler.command("SELECT INBOX")
        exists = next((int(m.group(1)) for line in untagged if (m := _EXISTS.match(line))), 0)
        tag = await idler.idle()

        async def read_exists() -> None:
            while True:
                line = await idler.read_line()
                if m := _EXISTS.match(line):
                    arrivals.put_nowait((int(m.group(1)), time.perf_counter()))

        reader_task = asyncio.create_task(read_exists())
        if deliver is None:
            appender = await Imap.open(target.port)
            await appender.login(IDLE_USER, target.password(IDLE_USER))
            store = appender

            async def via_append(raw: bytes) -> None:
                await store.append("INBOX", raw)

            deliver = via_append
        say(f"{target.name}: IDLE latency, {args.deliveries} deliveries by {label}", quiet=args.json_only)
        with Meter(target, f"idle-{label.split()[0]}", args):
            for n in range(args.deliveries):
                raw = small_message(n, IDLE_USER)
                t0 = time.perf_counter()
                await deliver(raw)
                round_trips.append(time.perf_counter() - t0)
                expected = exists + n + 1
                async with asyncio.timeout(10):
                    while True:
                        count, seen = await arrivals.get()
                        if count >= expected:
                            break
                latencies.append(seen - t0)
                await asyncio.sleep(0.02)  # let both sides settle; deliveries do not overlap
        reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader_task
        reader_task = None
        await idler.done(tag)
        await idler.command("LOGOUT")
    except TimeoutError:
        raise BenchError(f"{target.name}: no EXISTS within 10s of delivery {len(latencies) + 1}") from None
    finally:
        if reader_task is not None:
            reader_task.cancel()
        await idler.close()
        if appender is not None:
            await appender.close()
    return {"deliveries": len(latencies), "to_exists_ms": ms(latencies), "delivery_rtt_ms": ms(round_trips)}


async def idle_memory(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    """Server memory before and after ``--idle-connections`` logged-in connections sit in IDLE on their INBOX."""
    total = args.idle_connections
    users = [cold_user(1 + n % args.cold_users) for n in range(total)]
    conns: list[Imap] = []
    failed: collections.Counter[str] = collections.Counter()
    limit = asyncio.Semaphore(args.concurrency)
    # Warm-up: the code paths and lazy imports of LOGIN, SELECT and IDLE, once, before the baseline.
    for user in users[: args.concurrency]:
        conn = await Imap.open(target.port)
        await conn.login(user, target.password(user))
        await conn.command("SELECT INBOX")
        await conn.done(await conn.idle())
        await conn.command("LOGOUT")
        await conn.close()
    await asyncio.sleep(1)
    before = target.memory()
    say(f"{target.name}: opening {total} IDLE connections", quiet=args.json_only)

    async def open_one(user: str) -> None:
        async with limit:
            try:
                conn = await Imap.open(target.port)
            except (OSError, TimeoutError, ImapFailure, asyncio.IncompleteReadError) as exc:
                failed[f"connect {type(exc).__name__}: {str(exc)[:80]}"] += 1
                return
            conns.append(conn)
            try:
                await conn.login(user, target.password(user))
                await conn.command("SELECT INBOX")
                await conn.idle()
            except (OSError, TimeoutError, ImapFailure, asyncio.IncompleteReadError) as exc:
                failed[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1

    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(args.timeout):
            await asyncio.gather(*(open_one(u) for u in users))
        opened_s = time.perf_counter() - t0
        if failed:
            raise BenchError(f"{target.name}: IDLE connections failed: {dict(failed)}\n{target.log_tail()}")
        await asyncio.sleep(2)  # let the server finish whatever the last logins started
        after = target.memory()
    except TimeoutError:
        raise BenchError(f"{target.name}: opening {total} IDLE connections took over {args.timeout}s") from None
    finally:
        for conn in conns:
            with contextlib.suppress(OSError, RuntimeError):
                conn.writer.write(b"DONE\r\nz LOGOUT\r\n")
            conn.abort()
    if isinstance(target, Dovecot):
        for _ in range(300):  # up to a minute for the imap processes to exit
            if not target.imap_processes():
                break
            await asyncio.sleep(0.2)
    else:
        await asyncio.sleep(1)
    return {
        "connections": total,
        "open_s": round(opened_s, 2),
        "rss_before_mib": round(before["rss"] / 2**20, 1),
        "rss_after_mib": round(after["rss"] / 2**20, 1),
        "rss_kib_per_conn": round((after["rss"] - before["rss"]) / 1024 / total, 1),
        "pss_kib_per_conn": round((after["pss"] - before["pss"]) / 1024 / total, 1),
        "uss_kib_per_conn": round((after["uss"] - before["uss"]) / 1024 / total, 1),
        "processes_after": after["processes"],
    }


async def run_workloads(targets: list[Target], args: argparse.Namespace, hits: set[int]) -> dict[str, dict[str, Any]]:
    """Each workload on every target in turn, the order alternating, so a slow phase of a shared machine
    hits both alike (both servers are up all along; the idle one costs nothing)."""
    out: dict[str, dict[str, Any]] = {t.name: {"setup": t.description, "load": t.load} for t in targets}
    steps: list[tuple[str, Callable[[Target], Awaitable[dict[str, Any]]]]] = []
    if "login" in args.workloads:
        steps.append(("login_warm", lambda t: logins(t, args, "warm")))
        steps.append(("login_cold", lambda t: logins(t, args, "cold")))
    if "fetch" in args.workloads:
        steps.append(("", lambda t: mailbox_work(t, args, hits)))
    if "idle" in args.workloads:
        steps.append(("idle", lambda t: idle_latency(t, args, None, "APPEND from a second connection")))

        async def via_ingest(t: Target) -> dict[str, Any]:
            if not isinstance(t, Relate):
                return {}
            async with RelateDelivery(t.dsn) as delivery:
                return await idle_latency(t, args, delivery.deliver, "store ingest")

        steps.append(("idle_ingest", via_ingest))
    for n, (key, step) in enumerate(steps):
        for target in targets if n % 2 == 0 else targets[::-1]:
            result = await step(target)
            if key:
                if result:
                    out[target.name][key] = result
            else:
                out[target.name].update(result)
    return out


# -- Relate as deployed: imaptest stress, the big mailbox, IDLE fan-out ------------------------------------


def stress_user(n: int) -> str:
    return f"stress{n}@{DOMAIN}"


async def prepare_deployed(relate: DeployedRelate, args: argparse.Namespace, corpus: list[bytes]) -> None:
    """The deployed run's accounts (an API key each, scope imap) and, for bigbox, the big INBOX."""
    pool = await db.create_pool(DatabaseConfig(dsn=relate.dsn, pool_min=1, pool_max=4))
    try:
        relate.settings = {
            name: str(await pool.fetchval(f"SHOW {name}")) for name in ("server_version", "fsync", "synchronous_commit")
        }
        await accounts.add_domain(pool, DOMAIN)
        users = [IDLE_USER, *(stress_user(n) for n in range(1, args.stress_clients + 1))]
        if "bigbox" in args.workloads:
            users.append(BIG_USER)
        for address in users:
            await accounts.add_user(pool, address)
            relate.keys[address], _ = await accounts.create_key(
                pool, address, "bench", "imap", rounds=AuthConfig.bcrypt_rounds
            )
        if "bigbox" in args.workloads:
            async with pool.acquire() as conn:
                await ingest_corpus(conn, corpus, BIG_USER, quiet=args.json_only)
    finally:
        await pool.close()


def userfile(target: DeployedRelate | Dovecot, args: argparse.Namespace, workdir: Path) -> Path:
    path = workdir / f"users-{target.name}.txt"
    path.write_text(
        "".join(f"{u}:{target.password(u)}\n" for u in (stress_user(n) for n in range(1, args.stress_clients + 1)))
    )
    return path


def stress(
    targets: list[DeployedRelate | Dovecot], args: argparse.Namespace, imaptest: str, workdir: Path
) -> dict[str, dict[str, Any]]:
    """imaptest's three runs on every target, the order alternating; server CPU beside each."""
    mbox = workdir / "stress.mbox"
    write_mbox(mbox, 500)
    out: dict[str, dict[str, Any]] = {t.name: {} for t in targets}
    for n, run in enumerate(args.stress_runs):
        for target in targets if n % 2 == 0 else targets[::-1]:
            say(
                f"{target.name}: imaptest {run}, {args.stress_clients} clients, {args.stress_secs}s",
                quiet=args.json_only,
            )
            cpu0, machine0, t0 = target.cpu(), machine_cpu(), time.perf_counter()
            result = run_imaptest(
                imaptest,
                target.port,
                userfile(target, args, workdir),
                mbox,
                workdir,
                f"{target.name}-{run}",
                STRESS_RUNS[run],
                args.stress_clients,
                args.stress_secs,
            )
            wall, cpu1 = time.perf_counter() - t0, target.cpu()
            result["server_cores_busy"] = {k: round((cpu1[k] - cpu0[k]) / wall, 2) for k in cpu1}
            result["machine_cores_busy"] = round((machine_cpu() - machine0).busy / wall, 2)
            out[target.name][run] = result
    return out


async def open_logged_in(target: DeployedRelate | Dovecot, user: str) -> Imap:
    conn = await Imap.open(target.port)
    await conn.login(user, target.password(user))
    return conn


async def deliver_smtp(relate: DeployedRelate, n: int) -> float:
    """One message to IDLE_USER over relate-smtp's MX port; the perf_counter() time its final '.' went."""
    smtp = await RawSmtp.connect(HOST, relate.smtp_port, 30)
    try:
        body = small_message(n, IDLE_USER).replace(b"\r\n.", b"\r\n..")
        took = await smtp.send(Job(n, "sender@client.example", IDLE_USER, body))
        return time.perf_counter() - took
    finally:
        await smtp.close()


def deliver_maildir(dovecot: Dovecot, n: int) -> float:
    """One message into IDLE_USER's Maildir/new the way an LDA does (tmp, then rename); the time of the rename."""
    maildir = dovecot.home(IDLE_USER) / "Maildir"
    raw = small_message(n, IDLE_USER)
    name = f"{int(time.time())}.M{n:06d}P{os.getpid()}.fanout,S={len(raw)}"
    tmp = maildir / "tmp" / name
    tmp.write_bytes(raw)
    os.chown(tmp, VMAIL_UID, VMAIL_UID)
    at = time.perf_counter()
    os.rename(tmp, maildir / "new" / name)
    return at


async def run_deployed(
    targets: list[DeployedRelate | Dovecot], args: argparse.Namespace, imaptest: str, workdir: Path, out: dict[str, Any]
) -> dict[str, Any]:
    """The deployed workloads into ``out`` (filled as they finish, so a failure keeps what was measured)."""
    out.update({t.name: {"setup": t.description} for t in targets})
    if "stress" in args.workloads:
        for name, runs in (await asyncio.to_thread(stress, targets, args, imaptest, workdir)).items():
            out[name]["stress"] = runs
    if "bigbox" in args.workloads:
        for target in targets:
            say(
                f"{target.name}: {args.bigbox_sessions} sessions LIST/STATUS/SELECT on the big INBOX",
                quiet=args.json_only,
            )
            out[target.name]["bigbox"] = await bigbox_load(
                lambda t=target: open_logged_in(t, BIG_USER), args.bigbox_sessions, args.bigbox_secs
            )
    if "fanout" in args.workloads:
        for target in targets:
            if isinstance(target, DeployedRelate):
                sessions = args.fanout_sessions

                async def deliver(n: int, t: DeployedRelate = target) -> float:
                    return await deliver_smtp(t, n)

                how = "SMTP to relate-smtp's MX port; from the final '.'"
            else:
                sessions = args.fanout_peer_sessions

                async def deliver(n: int, t: Dovecot = target) -> float:
                    return deliver_maildir(t, n)

                how = "a file renamed into Maildir/new (as an LDA does); from the rename"
            result = await fanout(
                lambda t=target: open_logged_in(t, IDLE_USER),
                sessions,
                args.fanout_deliveries,
                deliver,
                args.json_only,
                target.name,
            )
            result["delivery"] = how
            out[target.name]["fanout"] = result
    return out


def deployed_ratios(relate: dict[str, Any], peer: dict[str, Any]) -> dict[str, float | None]:
    """relate / dovecot of every stress rate (higher is better for relate)."""
    out: dict[str, float | None] = {}
    for run, mine in relate.get("stress", {}).items():
        theirs = peer.get("stress", {}).get(run)
        if not theirs:
            continue
        out[f"stress.{run}.total_per_s"] = ratio(mine["total_per_s"], theirs["total_per_s"])
        for name, c in mine["commands"].items():
            other = theirs["commands"].get(name)
            if other:
                out[f"stress.{run}.{name}.per_s"] = ratio(c["per_s"], other["per_s"])
    return out


def noise(phases: list[Phase]) -> float | None:
    wall = sum(p.wall for p in phases)
    return round(sum(p.other for p in phases) / wall, 2) if wall else None


# -- output ---------------------------------------------------------------------------------------

ROWS: list[tuple[str, tuple[str, ...]]] = [
    ("mailbox load (s; different paths, see setup)", ("load", "seconds")),
    ("disk used by that mailbox (MiB)", ("load", "store_mib")),
    ("logins/s, warm (1 user + key over and over)", ("login_warm", "per_s")),
    ("  LOGIN p50 (ms)", ("login_warm", "login_ms", "p50")),
    ("  LOGIN p99 (ms)", ("login_warm", "login_ms", "p99")),
    ("  server CPU ms / login", ("login_warm", "cpu_ms_per_login", "server_total")),
    ("logins/s, cold (distinct users + keys, once each)", ("login_cold", "per_s")),
    ("  LOGIN p50 (ms)", ("login_cold", "login_ms", "p50")),
    ("  LOGIN p99 (ms)", ("login_cold", "login_ms", "p99")),
    ("  server CPU ms / login", ("login_cold", "cpu_ms_per_login", "server_total")),
    ("SELECT of the big INBOX (ms)", ("select_ms",)),
    ("FETCH 1:* (FLAGS ENVELOPE), first (s)", ("fetch", "first_s")),
    ("  first, messages/s", ("fetch", "first_msg_per_s")),
    ("  repeated, median (s)", ("fetch", "repeat_s")),
    ("  repeated, median, messages/s", ("fetch", "repeat_msg_per_s")),
    ("  repeated, best (s)", ("fetch", "best_s")),
    ("  repeated, best, messages/s", ("fetch", "best_msg_per_s")),
    ("  server CPU ms / 1k messages, repeated", ("fetch", "cpu_ms_per_1k_msgs_repeat", "server_total")),
    ("SEARCH TEXT <word>, first (ms)", ("search", "first_ms")),
    ("  repeated, median (ms)", ("search", "median_ms")),
    ("  repeated, best (ms)", ("search", "best_ms")),
    ("  server CPU ms / search, repeated", ("search", "cpu_ms_per_search", "server_total")),
    ("  hits (must equal the planted count)", ("search", "hits")),
    ("IDLE: APPEND sent -> EXISTS p50 (ms)", ("idle", "to_exists_ms", "p50")),
    ("  p99 (ms)", ("idle", "to_exists_ms", "p99")),
    ("  APPEND round trip p50 (ms)", ("idle", "delivery_rtt_ms", "p50")),
    ("IDLE: store ingest -> EXISTS p50 (ms)", ("idle_ingest", "to_exists_ms", "p50")),
    ("  p99 (ms)", ("idle_ingest", "to_exists_ms", "p99")),
    ("memory per IDLE connection, RSS (KiB)", ("memory", "rss_kib_per_conn")),
    ("  USS: private pages only, the real cost (KiB)", ("memory", "uss_kib_per_conn")),
    ("  server RSS before (MiB)", ("memory", "rss_before_mib")),
    ("  server RSS with the connections (MiB)", ("memory", "rss_after_mib")),
    ("  time to open them, logins included (s)", ("memory", "open_s")),
    ("other processes' cores busy (noise)", ("other_cores_busy",)),
]
# Rows whose ratio says something (the load row compares different mechanisms; noise is no figure of merit).
NO_RATIO = {("load", "seconds"), ("other_cores_busy",), ("search", "hits"), ("memory", "rss_before_mib")}


def ratios(relate: dict[str, Any], peer: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for _, path in ROWS:
        if path in NO_RATIO:
            continue
        a, b = dig(relate, path), dig(peer, path)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            out[".".join(path)] = ratio(a, b)
    return out


def render(report: dict[str, Any]) -> str:
    relate, peer, ratio_by = report.get("relate"), report.get("dovecot"), report.get("ratio") or {}
    headers = ["", "relate"] + (["dovecot", "relate/dovecot"] if peer else [])
    rows = comparison_rows(ROWS, relate, peer, lambda path: ratio_by.get(".".join(path)))
    p = report["params"]
    lines = [
        f"IMAP: {p['messages']:,} messages of ~{p['size']:,} bytes in one INBOX ({p['hits']} contain "
        f"'{MARKER}'), {p['concurrency']} concurrent login clients, {p['cold_users']} cold users, "
        f"{p['idle_connections']} IDLE connections, {p['cpus']} CPUs shared with the client, work dir on {p['fs']}",
        "plain IMAP on 127.0.0.1, no TLS; relate's mailbox is indexed (index_pending until 0) before SEARCH",
    ]
    if relate:
        lines.append(f"relate:  {relate['setup']}")
    if peer:
        lines.append(f"dovecot: {peer['setup']}")
    if relate and "setup" in relate:
        lines += ["", table(headers, rows)]
    if "deployed" in report:
        lines += ["", render_deployed(report["deployed"])]
    return "\n".join(lines)


def render_deployed(data: dict[str, Any]) -> str:
    """The deployed runs: imaptest's columns per run (per second and mean ms), big mailbox and fan-out latencies."""
    relate, peer = data["relate"], data.get("dovecot")
    lines = [f"relate (as deployed): {relate['setup']}"]
    if peer:
        lines.append(f"dovecot: {peer['setup']}")
    headers = ["", "relate/s", "relate ms"] + (["dovecot/s", "dovecot ms", "relate/dovecot"] if peer else [])
    rows: list[list[Any]] = []
    for run, mine in relate.get("stress", {}).items():
        theirs = (peer or {}).get("stress", {}).get(run, {})
        rows.append([f"imaptest {run} ({mine['args']})", "", ""] + (["", "", ""] if peer else []))
        names = list(dict.fromkeys([*mine["commands"], *theirs.get("commands", {})]))
        for name in names:
            a, b = mine["commands"].get(name, {}), theirs.get("commands", {}).get(name, {})
            row = [f"  {name}", a.get("per_s"), a.get("avg_ms")]
            if peer:
                row += [b.get("per_s"), b.get("avg_ms"), ratio(a.get("per_s"), b.get("per_s"))]
            rows.append(row)
        total = ["  all commands", mine["total_per_s"], ""]
        errors = ["  errors (imaptest 'Error:' lines)", mine["errors"], ""]
        if peer:
            total += [theirs.get("total_per_s"), "", ratio(mine["total_per_s"], theirs.get("total_per_s"))]
            errors += [theirs.get("errors"), "", ""]
        rows += [total, errors]
    parts = ["\n".join(lines)]
    if rows:
        parts.append(table(headers, rows))
    latency: list[list[Any]] = []
    two = ["relate", "dovecot"] if peer else ["relate"]
    if "bigbox" in relate:
        for name in ("list", "status", "select"):
            for q in ("p50", "p99"):
                latency.append(
                    [f"big INBOX, {relate['bigbox']['sessions']} busy sessions: {name.upper()} {q} (ms)"]
                    + [dig(data.get(t), ("bigbox", name, q)) for t in two]
                )
    if "fanout" in relate:
        latency.append(["IDLE fan-out: sessions"] + [dig(data.get(t), ("fanout", "sessions")) for t in two])
        for q in ("p50", "p99", "max"):
            latency.append(
                [f"  delivery -> EXISTS {q} (ms)"] + [dig(data.get(t), ("fanout", "to_exists_ms", q)) for t in two]
            )
        latency.append(["  sessions that missed one"] + [dig(data.get(t), ("fanout", "missed")) for t in two])
    if latency:
        parts.append(table(["", *two], latency))
    return "\n\n".join(parts)


# -- main -------------------------------------------------------------------------------------------

WORKLOADS = ("login", "fetch", "idle", "memory")
# Runs against Relate as deployed (relatectl dev --any-port: every daemon its own process), named explicitly.
DEPLOYED = ("stress", "bigbox", "fanout")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=10000, help="messages in the big INBOX (default 10000)")
    parser.add_argument("--size", type=int, default=10240, help="approximate message size in bytes (default 10240)")
    parser.add_argument("--hits", type=int, default=100, help="messages that contain the search word (default 100)")
    parser.add_argument("--concurrency", type=int, default=20, help="concurrent login clients (default 20)")
    parser.add_argument("--warm-logins", type=int, default=2000, help="logins with one user and key (default 2000)")
    parser.add_argument(
        "--cold-users", type=int, default=300, help="users with a key each, one login each (default 300)"
    )
    parser.add_argument(
        "--fetch-rounds", type=int, default=5, help="FETCH 1:* runs, the first reported apart (default 5)"
    )
    parser.add_argument(
        "--searches", type=int, default=5, help="SEARCH TEXT runs, the first reported apart (default 5)"
    )
    parser.add_argument("--deliveries", type=int, default=50, help="messages delivered to the IDLE client")
    parser.add_argument(
        "--idle-connections", type=int, default=1000, help="connections in IDLE for the memory figure (default 1000)"
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated subset of {','.join(WORKLOADS + DEPLOYED)} (default {','.join(WORKLOADS)}; fetch "
        "includes SEARCH). stress, bigbox and fanout run against Relate as deployed (relatectl dev --any-port); "
        "stress runs imaptest, found through $IMAPTEST",
    )
    parser.add_argument("--stress-clients", type=int, default=20, help="imaptest clients= (default 20)")
    parser.add_argument("--stress-secs", type=int, default=30, help="imaptest secs= of each stress run (default 30)")
    parser.add_argument(
        "--stress-runs",
        default=",".join(STRESS_RUNS),
        help=f"comma-separated subset of {','.join(STRESS_RUNS)} (default all)",
    )
    parser.add_argument(
        "--bigbox-sessions", type=int, default=20, help="sessions repeating LIST/STATUS/SELECT on the big INBOX"
    )
    parser.add_argument("--bigbox-secs", type=float, default=20, help="how long they do (default 20)")
    parser.add_argument(
        "--fanout-sessions", type=int, default=10000, help="sessions in IDLE on one INBOX (default 10000)"
    )
    parser.add_argument(
        "--fanout-peer-sessions",
        type=int,
        default=1000,
        help="the same for Dovecot, a process per session (default 1000)",
    )
    parser.add_argument("--fanout-deliveries", type=int, default=5, help="messages delivered to them (default 5)")
    parser.add_argument("--vs", choices=["dovecot"], help="also run the same workloads against a throwaway Dovecot")
    parser.add_argument("--timeout", type=float, default=300, help="limit in seconds for each workload (default 300)")
    parser.add_argument("--workdir", type=Path, help="parent of the temp dir (default: $TMPDIR or /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data) for inspection")
    parser.add_argument("--py-spy", help="path of a py-spy binary: profile relate-imap during each workload")
    parser.add_argument("--profile", type=Path, help="prefix of the py-spy output files (with --py-spy)")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if unknown := set(args.workloads) - set(WORKLOADS + DEPLOYED):
        parser.error(f"unknown workloads {sorted(unknown)}: choose from {','.join(WORKLOADS + DEPLOYED)}")
    args.stress_runs = [r.strip() for r in args.stress_runs.split(",") if r.strip()]
    if unknown := set(args.stress_runs) - set(STRESS_RUNS):
        parser.error(f"unknown stress runs {sorted(unknown)}: choose from {','.join(STRESS_RUNS)}")
    if min(args.messages, args.concurrency, args.warm_logins, args.cold_users, args.fetch_rounds) < 1:
        parser.error("--messages, --concurrency, --warm-logins, --cold-users and --fetch-rounds must be positive")
    if min(args.searches, args.deliveries, args.idle_connections) < 1 or args.size < 512:
        parser.error("--searches, --deliveries and --idle-connections must be positive, --size at least 512")
    if not 0 < args.hits <= args.messages:
        parser.error("--hits must be between 1 and --messages")
    if args.py_spy and not args.profile:
        parser.error("--py-spy needs --profile PREFIX")
    return args


def raise_fd_limit(needed: int) -> None:
    """Room for the client's connections and, inherited, the servers' (Dovecot's master, relate-imap)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard < needed and os.geteuid() == 0:
        with contextlib.suppress(ValueError, OSError):  # a container may deny root this too
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    if min(needed, hard) < needed:
        raise BenchError(f"ulimit -n is {hard} at most; {needed} are needed for --idle-connections / --fanout-sessions")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet = args.json_only
    workdir = make_workdir("relate-bench-imap-", args.workdir)
    report: dict[str, Any] = {
        "benchmark": "imap",
        "params": {
            "messages": args.messages,
            "size": args.size,
            "hits": args.hits,
            "word": MARKER,
            "concurrency": args.concurrency,
            "warm_logins": args.warm_logins,
            "cold_users": args.cold_users,
            "fetch_rounds": args.fetch_rounds,
            "searches": args.searches,
            "deliveries": args.deliveries,
            "idle_connections": args.idle_connections,
            "workloads": args.workloads,
            "stress": {"clients": args.stress_clients, "secs": args.stress_secs, "runs": args.stress_runs},
            "bigbox": {"sessions": args.bigbox_sessions, "secs": args.bigbox_secs},
            "fanout": {
                "sessions": args.fanout_sessions,
                "peer_sessions": args.fanout_peer_sessions,
                "deliveries": args.fanout_deliveries,
            },
            "cpus": os.cpu_count(),
            "fs": fs_type(workdir),
        },
        "valid": False,
    }
    targets: list[Target | DeployedRelate] = []

    def body() -> None:
        classic = [w for w in args.workloads if w in WORKLOADS]
        deployed = [w for w in args.workloads if w in DEPLOYED]
        imaptest = find_imaptest() if "stress" in deployed else ""
        fanout_sessions = args.fanout_sessions if "fanout" in deployed else 0
        # Each process (this client, the servers) holds one end of every connection.
        raise_fd_limit(max(2 * args.idle_connections, fanout_sessions) + 4096)
        say(f"generating {args.messages} messages of ~{args.size} bytes", quiet=quiet)
        corpus, hits = make_corpus(args.messages, args.size, args.hits)
        report["params"]["size"] = round(sum(map(len, corpus)) / len(corpus))
        peer: Dovecot | None = None
        if args.vs == "dovecot":
            peer = Dovecot(workdir, args)
            targets.append(peer)
            peer.start(corpus)
        if classic:
            relate = Relate(workdir, args)
            targets.insert(0, relate)
            relate.start(corpus)
            both: list[Target] = [relate] + ([peer] if peer is not None else [])
            report.update(asyncio.run(run_workloads(both, args, hits)))
            if "memory" in args.workloads:
                for target in both:
                    if isinstance(target, Relate):
                        # A new process, so the figure is not hidden in heap that earlier workloads freed.
                        # Dovecot needs none: every connection gets an imap process of its own anyway.
                        target.fresh()
                    report[target.name]["memory"] = asyncio.run(idle_memory(target, args))
            for target in both:
                report[target.name]["other_cores_busy"] = noise(Meter.phases[target.name])
            if "dovecot" in report:
                report["ratio"] = ratios(report["relate"], report["dovecot"])
        if deployed:
            if targets and isinstance(targets[0], Relate):
                targets[0].stop()  # out of the way: the deployed run has its own database and daemons
            sessions = max(fanout_sessions, args.bigbox_sessions, args.stress_clients)
            live = DeployedRelate(workdir, sessions, quiet)
            targets.append(live)
            live.start()
            asyncio.run(prepare_deployed(live, args, corpus))
            them: list[DeployedRelate | Dovecot] = [live] + ([peer] if peer is not None else [])
            report["deployed"] = {}
            asyncio.run(run_deployed(them, args, imaptest, workdir, report["deployed"]))
            if peer is not None:
                report["deployed"]["ratio"] = deployed_ratios(
                    report["deployed"]["relate"], report["deployed"]["dovecot"]
                )
        report["params"]["deployed_workloads"] = deployed

    return run_benchmark("imap bench", args, workdir, report, body, lambda: stop_targets(targets, "imap bench"), render)


if __name__ == "__main__":
    sys.exit(main())
