"""POP3 download benchmark: how fast relate-pop3 hands a big maildrop to a client, and at what CPU cost.

Sets up a throwaway world in a temp dir (an embedded PostgreSQL 18 with fsync
on, the schema, user ``popuser@bench.test`` with a pop3 key, and
``python -m relate.pop3 --config FILE`` listening on a free loopback port),
fills the user's INBOX with ``--messages`` unique messages of about ``--size``
bytes (through ``relate.store.messages.ingest``, in batches, not timed), and
then downloads the whole maildrop over one connection the way a fetch-and-
delete client does: USER/PASS, STAT, RETR of every message, DELE of every
message, QUIT. It prints:

- messages/s and MB/s over the whole session (connect to QUIT's +OK), and the
  time of each phase (login, RETR, DELE, QUIT, which removes the messages);
- CPU seconds per 1,000 messages of the daemon and of the PostgreSQL cluster
  (every process of it, reaped ones included), and of the client itself.

The client pipelines its commands (both servers announce CAPA PIPELINING):
it writes ``--pipeline`` commands at once, then reads their answers. It
refuses to report figures unless every message came back byte for byte (after
undoing the dot-stuffing) and the maildrop is empty after QUIT. ``--vs
dovecot`` runs the same download with the same client against a throwaway
Dovecot 2.3 (Debian's dovecot-pop3d, installed if missing, configured as
``shared/peers.md`` says) whose Maildir is filled with the same messages as
files, and adds the ratio relate/dovecot. Both servers speak plain text on
loopback (no TLS), as in peers.md. Everything started is stopped again, also
on Ctrl-C.

Usage: ``.venv/bin/python bench/pop3.py [--messages 10000] [--size 10240] [--pipeline 50]
[--vs dovecot] [--json-only] [--py-spy PATH --profile FILE]``; ``--help`` for the rest.
With ``--py-spy``, the daemon is profiled during each download (on-CPU Python
time, ``--gil``) and a summary of the profile is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    HOST,
    BenchError,
    MachineCpu,
    RelateServer,
    apt_install,
    comparison_table,
    cpu_figures,
    find_program,
    free_port,
    fs_type,
    machine_cpu,
    make_message,
    make_workdir,
    migrate_db,
    ratios,
    require_durable,
    run_benchmark,
    run_cmd,
    say,
    start_py_spy,
    stop_py_spy,
    stop_targets,
    tree_cpu,
    wait_for_banner,
)

from relate.config import DatabaseConfig
from relate.services import accounts
from relate.store import accounts as account_store
from relate.store import db, messages

DOMAIN = "bench.test"
ADDRESS = f"popuser@{DOMAIN}"
SENDER = "sender@client.example"
DOVECOT_USER = "popuser"
DOVECOT_PASSWORD = "pass"  # noqa: S105 - peers.md: static passdb, any user, password "pass"
VMAIL_UID = 5000  # peers.md: a vmail user and group, uid/gid 5000
SETTLE = 0.5  # seconds after QUIT before CPU is read, so the server's session processes are reaped and counted


# -- messages ------------------------------------------------------------------------


def plan_messages(count: int, size: int) -> list[bytes]:
    """``count`` unique messages of about ``size`` bytes, CRLF line ends; every tenth has lines starting with '.'."""
    out = []
    for i in range(count):
        raw = make_message(i, size, SENDER, ADDRESS)
        if i % 10 == 0:
            raw += b".a line the server must dot-stuff\r\n..and another\r\n"
        out.append(raw)
    return out


def crlf(raw: bytes) -> bytes:
    """The message as a POP3 server sends it before dot-stuffing: CRLF line ends, a final CRLF."""
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)


def unstuff(wire: bytes) -> bytes:
    lines = wire.split(b"\r\n")
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines[:-1])


def digests(items: list[bytes]) -> Counter[bytes]:
    return Counter(hashlib.sha1(m, usedforsecurity=False).digest() for m in items)


# -- the client ----------------------------------------------------------------------


class Pop3Error(Exception):
    pass


class RawPop3:
    """A minimal blocking POP3 client: pipelined commands, responses parsed straight out of one buffer."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0
        self.wire_bytes = 0  # everything received, for the MB/s on the wire
        self.greeting = self.status(b"greeting")

    def _fill(self) -> int:
        """Read more; returns how far earlier positions moved (the consumed part is dropped now and then)."""
        shift = 0
        if self.pos > 1 << 22:
            shift = self.pos - 2  # keep the CRLF before pos: it may begin the terminator of an empty body
            del self.buf[:shift]
            self.pos -= shift
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.wire_bytes += len(chunk)
        self.buf += chunk
        return shift

    def status(self, what: bytes) -> bytes:
        """One status line; Pop3Error on -ERR."""
        while (end := self.buf.find(b"\r\n", self.pos)) < 0:
            self._fill()
        line = bytes(self.buf[self.pos : end])
        self.pos = end + 2
        if not line.startswith(b"+OK"):
            raise Pop3Error(f"{what.decode()}: {line[:200].decode(errors='replace')}")
        return line

    def body(self) -> bytes:
        """The rest of a multi-line response, dot-stuffed as sent, without the final '.' line."""
        start = self.pos
        scan = start - 2  # the status line's CRLF begins the terminator of an empty body
        while (end := self.buf.find(b"\r\n.\r\n", scan)) < 0:
            scan = max(start - 2, len(self.buf) - 4)
            shift = self._fill()
            start -= shift
            scan -= shift
        data = bytes(self.buf[start : end + 2])
        self.pos = end + 5
        return data

    def send(self, lines: list[bytes]) -> None:
        self.sock.sendall(b"".join(line + b"\r\n" for line in lines))

    def command(self, line: bytes) -> bytes:
        self.send([line])
        return self.status(line.split(b" ")[0])

    def close(self) -> None:
        self.sock.close()


@dataclass
class Download:
    """What the client saw of one session."""

    messages: int = 0
    octets: int = 0  # message octets as STAT announced them (CRLF, before dot-stuffing)
    wire_bytes: int = 0
    bodies: list[bytes] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0
    client_cpu: float = 0.0


def download(host: str, port: int, user: str, password: str, pipeline: int, timeout: float) -> Download:
    """USER/PASS, STAT, RETR 1..n, DELE 1..n, QUIT over one connection, ``pipeline`` commands per write."""
    out = Download()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    conn = RawPop3(host, port, timeout)
    try:
        conn.send([b"USER " + user.encode(), b"PASS " + password.encode(), b"STAT"])
        conn.status(b"USER")
        conn.status(b"PASS")
        count, octets = (int(v) for v in conn.status(b"STAT").split()[1:3])
        out.messages, out.octets = count, octets
        t1 = time.perf_counter()
        for first in range(1, count + 1, pipeline):
            numbers = range(first, min(first + pipeline, count + 1))
            conn.send([b"RETR %d" % n for n in numbers])
            for _ in numbers:
                conn.status(b"RETR")
                out.bodies.append(conn.body())
        t2 = time.perf_counter()
        for first in range(1, count + 1, pipeline):
            numbers = range(first, min(first + pipeline, count + 1))
            conn.send([b"DELE %d" % n for n in numbers])
            for _ in numbers:
                conn.status(b"DELE")
        t3 = time.perf_counter()
        conn.command(b"QUIT")  # the server removes the messages before it answers
        t4 = time.perf_counter()
        conn.sock.settimeout(timeout)
        while conn.sock.recv(65536):
            pass
    finally:
        conn.close()
    out.wall = t4 - t0
    out.client_cpu = time.process_time() - cpu0
    out.wire_bytes = conn.wire_bytes
    out.phases = {"login_s": t1 - t0, "retr_s": t2 - t1, "dele_s": t3 - t2, "quit_s": t4 - t3}
    return out


# -- targets ---------------------------------------------------------------------------


class Target(Protocol):
    name: str

    @property
    def description(self) -> str: ...
    def start(self) -> None: ...
    def load(self, msgs: list[bytes]) -> float: ...
    def login(self) -> tuple[int, str, str]: ...
    def cpu(self) -> dict[str, float]: ...
    def remaining(self) -> int: ...
    def log_tail(self) -> str: ...
    def stop(self) -> None: ...


class Relate(RelateServer):
    """relate-pop3 over an embedded, durable PostgreSQL, in ``workdir``."""

    module = "relate.pop3"
    daemon_name = "relate-pop3"

    def __init__(self, workdir: Path, batch: int, quiet: bool) -> None:
        super().__init__(workdir, quiet)
        self.batch = batch
        self.key = ""
        self.inbox = 0

    @property
    def description(self) -> str:
        return (
            f"relate-pop3 (plain text, logging WARNING) -> PostgreSQL {self.settings.get('server_version', '?')} "
            f"(fsync={self.settings.get('fsync')}, synchronous_commit={self.settings.get('synchronous_commit')})"
        )

    def start(self) -> None:
        self.start_postgres()
        asyncio.run(self._prepare_db())
        require_durable(self.settings)
        self.port = free_port(HOST)
        config = self.workdir / "relate.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "hostname": f"mail.{DOMAIN}",
                    "database": {"dsn": self.dsn},
                    "pop3": {
                        "pop3": {"listen": [f"{HOST}:{self.port}"]},
                        "pop3s": {"listen": []},
                        # Plain text on loopback, like the Dovecot peer (ssl = no).
                        "allow_plaintext_auth": True,
                    },
                    "logging": {"level": "WARNING"},
                }
            )
        )
        self.start_daemon(config, lambda daemon: wait_for_banner(HOST, self.port, 60, b"+OK", alive=daemon))

    async def _prepare_db(self) -> None:
        self.settings = await migrate_db(self.dsn)
        pool = await db.create_pool(DatabaseConfig(dsn=self.dsn, pool_min=1, pool_max=2))
        try:
            await accounts.add_domain(pool, DOMAIN)
            user = await accounts.add_user(pool, ADDRESS)
            self.key, _ = await accounts.create_key(pool, ADDRESS, "bench", "pop3")
            async with pool.acquire() as conn:
                self.inbox = await account_store.inbox_id(conn, user["id"]) or 0
        finally:
            await pool.close()

    def load(self, msgs: list[bytes]) -> float:
        """Ingest the messages into the INBOX, ``batch`` per transaction; returns the seconds it took."""

        async def fill() -> None:
            conn = await db.connect(DatabaseConfig(dsn=self.dsn))
            try:
                for first in range(0, len(msgs), self.batch):
                    async with conn.transaction():
                        for raw in msgs[first : first + self.batch]:
                            await messages.ingest(conn, raw, [self.inbox])
            finally:
                await conn.close()

        start = time.perf_counter()
        asyncio.run(fill())
        return time.perf_counter() - start

    def login(self) -> tuple[int, str, str]:
        return self.port, ADDRESS, self.key

    def remaining(self) -> int:
        return self.count_messages()


DOVECOT_CONF = """\
# Throwaway Dovecot 2.3 peer of bench/pop3.py (shared/peers.md), POP3 only, loopback, plain text.
instance_name = relate-bench-dovecot
base_dir = {root}/run
state_dir = {root}/state
protocols = pop3
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

passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid={uid} gid={uid} home={root}/home/%u
}}

service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
protocol pop3 {{
  pop3_uidl_format = %08Xu%08Xv
}}
"""


def ensure_dovecot(quiet: bool) -> tuple[str, str]:
    """The paths of ``dovecot`` and ``doveadm``; installs Debian's packages first (peers.md) when missing."""
    dovecot, doveadm = find_program("dovecot"), find_program("doveadm")
    if not (dovecot and doveadm and Path("/usr/lib/dovecot/pop3").exists()):
        apt_install("dovecot", ["dovecot-core", "dovecot-pop3d"], quiet=quiet)
        dovecot, doveadm = find_program("dovecot"), find_program("doveadm")
    if not dovecot or not doveadm or not Path("/usr/lib/dovecot/pop3").exists():
        raise BenchError("apt-get installed dovecot but there is no dovecot/doveadm or POP3 server")
    return dovecot, doveadm


def ensure_vmail() -> None:
    """The vmail user and group (uid/gid 5000) that peers.md's Dovecot delivers as."""
    try:
        pwd.getpwuid(VMAIL_UID)
        return
    except KeyError:
        pass
    if os.geteuid() != 0:
        raise BenchError(f"no user with uid {VMAIL_UID} (vmail) and creating one needs root")
    run_cmd(["groupadd", "-g", str(VMAIL_UID), "vmail"], timeout=30, check=False)
    uid = str(VMAIL_UID)
    run_cmd(["useradd", "-u", uid, "-g", uid, "-d", "/nonexistent", "-M", "-s", "/bin/false", "vmail"], timeout=30)


class Dovecot:
    """A throwaway Dovecot 2.3 POP3 server: one user's Maildir, filled with files directly."""

    name = "dovecot"

    def __init__(self, workdir: Path, quiet: bool) -> None:
        self.root = workdir / "dovecot"
        self.quiet = quiet
        self.conf = self.root / "dovecot.conf"
        self.maildir = self.root / "home" / DOVECOT_USER / "Maildir"
        self.port = 0
        self.dovecot = ""
        self.doveadm = ""
        self.version = "?"
        self.master_pid = 0
        self.started = False

    @property
    def description(self) -> str:
        return f"Dovecot {self.version} pop3 -> Maildir (one file per message, LF line ends, S= and W= sizes in names)"

    def start(self) -> None:
        self.dovecot, self.doveadm = ensure_dovecot(self.quiet)
        ensure_vmail()
        self.version = run_cmd([self.dovecot, "--version"], timeout=30).stdout.split()[0]
        for sub in ("run", "state", "log", "home"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        home = self.root / "home" / DOVECOT_USER
        for sub in ("cur", "new", "tmp"):
            (self.maildir / sub).mkdir(parents=True, exist_ok=True)
        for path in (self.root / "home", home, self.maildir, *(self.maildir / s for s in ("cur", "new", "tmp"))):
            os.chown(path, VMAIL_UID, VMAIL_UID)
        self.port = free_port(HOST)
        self.conf.write_text(
            DOVECOT_CONF.format(root=self.root, uid=VMAIL_UID, port=self.port, password=DOVECOT_PASSWORD)
        )
        say(f"dovecot: starting Dovecot {self.version} (POP3 on {HOST}:{self.port})", quiet=self.quiet)
        self.started = True  # from here on stop() must run, whatever happens
        start_log = self.root / "log" / "start.log"
        # dovecot forks into the background; its children inherit stdout/stderr, so no pipes (they never close).
        with start_log.open("wb") as out:
            try:
                code = subprocess.run(  # noqa: S603 - the dovecot found above, fixed arguments
                    [self.dovecot, "-c", str(self.conf)], stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=60
                ).returncode
            except subprocess.TimeoutExpired:
                code = -1
        if code != 0:
            raise BenchError(f"dovecot did not start: {start_log.read_text(errors='replace').strip()}")
        pidfile = self.root / "run" / "master.pid"
        deadline = time.monotonic() + 30
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            self.master_pid = int(pidfile.read_text().split()[0])
            wait_for_banner(HOST, self.port, 30, b"+OK")
        except (OSError, ValueError, TimeoutError) as exc:
            raise BenchError(f"dovecot did not start: {exc}\n{self.log_tail()}") from None

    def load(self, msgs: list[bytes]) -> float:
        """Write each message as a Maildir file in cur/ (as an MTA would: LF line ends), then resync the index."""
        start = time.perf_counter()
        cur = self.maildir / "cur"
        stamp = int(time.time())
        for i, raw in enumerate(msgs):
            data = raw.replace(b"\r\n", b"\n")
            name = f"{stamp}.M{i}P{os.getpid()}.bench,S={len(data)},W={len(crlf(raw))}:2,"
            path = cur / name
            path.write_bytes(data)
            os.chown(path, VMAIL_UID, VMAIL_UID)
        result = run_cmd(
            [self.doveadm, "-c", str(self.conf), "force-resync", "-u", DOVECOT_USER, "INBOX"], timeout=600, check=False
        )
        if result.returncode != 0:
            raise BenchError(f"doveadm force-resync failed: {result.stderr.strip()}")
        return time.perf_counter() - start

    def login(self) -> tuple[int, str, str]:
        return self.port, DOVECOT_USER, DOVECOT_PASSWORD

    def cpu(self) -> dict[str, float]:
        return {"dovecot": tree_cpu(self.master_pid)}

    def remaining(self) -> int:
        return sum(1 for sub in ("cur", "new") for _ in (self.maildir / sub).iterdir())

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
            with contextlib.suppress(OSError, ValueError):
                self.master_pid = int((self.root / "run" / "master.pid").read_text().split()[0])
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            run_cmd([self.doveadm, "-c", str(self.conf), "stop"], timeout=60, check=False)
        deadline = time.monotonic() + 20
        while self.master_pid and Path(f"/proc/{self.master_pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.master_pid and Path(f"/proc/{self.master_pid}").exists():
            os.kill(self.master_pid, signal.SIGKILL)
        self.started = False


# -- rounds and figures ---------------------------------------------------------------


@dataclass
class Round:
    download: Download
    cpu: dict[str, float]
    machine: MachineCpu
    load_s: float


def run_round(target: Target, msgs: list[bytes], expected: Counter[bytes], args: argparse.Namespace) -> Round:
    """Fill the maildrop, warm up (login, STAT, QUIT), download everything with DELE, and check the result."""
    quiet = args.json_only
    if target.remaining() != 0:
        raise BenchError(f"{target.name}: the maildrop is not empty before the round")
    say(f"{target.name}: loading {len(msgs)} messages (not timed)", quiet=quiet)
    load_s = target.load(msgs)
    port, user, password = target.login()
    # Warm-up session, not measured: lets each server build its caches (Dovecot's index, PostgreSQL's buffers).
    warm = RawPop3(HOST, port, args.timeout)
    try:
        warm.send([b"USER " + user.encode(), b"PASS " + password.encode(), b"STAT", b"QUIT"])
        for what in (b"USER", b"PASS", b"STAT", b"QUIT"):
            warm.status(what)
    except (Pop3Error, OSError) as exc:
        raise BenchError(f"{target.name}: warm-up session failed: {exc}\n{target.log_tail()}") from None
    finally:
        warm.close()
    time.sleep(SETTLE)
    say(f"{target.name}: downloading {len(msgs)} messages, {args.pipeline} pipelined commands per write", quiet=quiet)
    cpu0, machine0 = target.cpu(), machine_cpu()
    daemon = getattr(target, "daemon", None)
    profiler = start_py_spy(args.py_spy, daemon.pid, args.profile) if args.py_spy and daemon is not None else None
    try:
        got = download(HOST, port, user, password, args.pipeline, args.timeout)
    except (Pop3Error, OSError) as exc:
        raise BenchError(f"{target.name}: the download failed: {exc}\n{target.log_tail()}") from None
    finally:
        if profiler is not None:
            stop_py_spy(profiler, args.profile, "relate-pop3 during the download (--gil)", quiet=quiet)
    time.sleep(SETTLE)  # the session's processes (Dovecot's pop3, PostgreSQL's backend) exit and are reaped
    cpu1, machine1 = target.cpu(), machine_cpu()
    if got.messages != len(msgs) or len(got.bodies) != len(msgs):
        raise BenchError(f"{target.name}: STAT said {got.messages}, {len(got.bodies)} retrieved, of {len(msgs)}")
    if digests([unstuff(b) for b in got.bodies]) != expected:
        raise BenchError(f"{target.name}: the messages retrieved differ from those loaded")
    if got.octets != sum(len(crlf(m)) for m in msgs):
        raise BenchError(f"{target.name}: STAT announced {got.octets} octets, not the messages' CRLF size")
    left = target.remaining()
    if left:
        raise BenchError(f"{target.name}: {left} messages are still in the maildrop after DELE and QUIT")
    got.bodies = []
    return Round(got, {k: cpu1[k] - cpu0[k] for k in cpu0}, machine1 - machine0, load_s)


def figures(target: Target, rounds: list[Round]) -> dict[str, Any]:
    """The verified rounds of one target, summed: rates over the summed wall time of the sessions."""
    total = sum(r.download.messages for r in rounds)
    octets = sum(r.download.octets for r in rounds)
    wall = sum(r.download.wall for r in rounds)
    window = wall + SETTLE * len(rounds)
    phases = {k: sum(r.download.phases[k] for r in rounds) for k in rounds[0].download.phases}
    cpu = {k: sum(r.cpu[k] for r in rounds) for k in rounds[0].cpu}
    client = sum(r.download.client_cpu for r in rounds)
    machine = sum((r.machine for r in rounds), MachineCpu(0.0, 0.0))
    return (
        {
            "setup": target.description,
            "messages": total,
            "octets": octets,
            "rounds_msg_per_s": [round(r.download.messages / r.download.wall, 1) for r in rounds],
            "wall_s": round(wall, 3),
            "msg_per_s": round(total / wall, 1),
            "mb_per_s": round(octets / 1e6 / wall, 2),
            "retr_msg_per_s": round(total / phases["retr_s"], 1),
            "phases_s": {k: round(v, 3) for k, v in phases.items()},
        }
        | cpu_figures(cpu, client, machine, total, window)
        | {"load_s": round(sum(r.load_s for r in rounds), 1)}
    )


ROWS: list[tuple[str, tuple[str, ...]]] = [
    ("messages/s (connect to QUIT's +OK)", ("msg_per_s",)),
    ("MB/s of message octets", ("mb_per_s",)),
    ("messages/s during the RETR phase", ("retr_msg_per_s",)),
    ("wall time of the session (s)", ("wall_s",)),
    ("  login + STAT (s)", ("phases_s", "login_s")),
    ("  RETR all (s)", ("phases_s", "retr_s")),
    ("  DELE all (s)", ("phases_s", "dele_s")),
    ("  QUIT, removing them (s)", ("phases_s", "quit_s")),
    ("daemon CPU s / 1k msgs", ("cpu_s_per_1k", "daemon")),
    ("PostgreSQL CPU s / 1k msgs", ("cpu_s_per_1k", "postgres")),
    ("Dovecot CPU s / 1k msgs (all processes)", ("cpu_s_per_1k", "dovecot")),
    ("server CPU s / 1k msgs, total", ("cpu_s_per_1k", "server_total")),
    ("client CPU s / 1k msgs", ("cpu_s_per_1k", "client")),
    ("server cores busy (avg)", ("server_cores_busy",)),
    ("kernel (irq, softirq, kthreads) cores busy", ("kernel_cores_busy",)),
    ("other processes' cores busy (noise)", ("other_cores_busy",)),
    ("messages retrieved and removed (checked)", ("messages",)),
    ("loading the maildrop, not timed above (s)", ("load_s",)),
]

RATIO_OF = {
    ("msg_per_s",): "msg_per_s",
    ("mb_per_s",): "mb_per_s",
    ("retr_msg_per_s",): "retr_msg_per_s",
    ("wall_s",): "wall_s",
    ("phases_s", "quit_s"): "quit_s",
    ("cpu_s_per_1k", "server_total"): "server_cpu_per_msg",
}


def render(report: dict[str, Any]) -> str:
    relate, dovecot = report["relate"], report.get("dovecot")
    p = report["params"]
    lines = [
        f"POP3 download: {p['messages']} messages of ~{p['size']} bytes ({p['octets'] / 1e6:.1f} MB) in one "
        f"maildrop, one connection: USER/PASS, STAT, RETR all, DELE all, QUIT; client raw sockets, "
        f"{p['pipeline']} pipelined commands per write, for both servers; plain text on loopback; "
        f"{p['rounds']} round(s); {p['cpus']} CPUs shared; work dir on {p['fs']}",
        f"relate:  {relate['setup']}",
    ]
    if dovecot:
        lines.append(f"dovecot: {dovecot['setup']}")
    lines += ["", comparison_table(ROWS, report, "dovecot", RATIO_OF)]
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=10_000, help="messages in the maildrop (default 10000)")
    parser.add_argument("--size", type=int, default=10240, help="approximate message size in bytes (default 10240)")
    parser.add_argument(
        "--pipeline", type=int, default=50, help="commands written at once before reading their answers (default 50)"
    )
    parser.add_argument("--vs", choices=["dovecot"], help="also run the same download against a throwaway Dovecot")
    parser.add_argument(
        "--rounds", type=int, default=1, help="fill-and-download passes per target, alternating targets (default 1)"
    )
    parser.add_argument("--batch", type=int, default=500, help="messages per ingest transaction when loading relate")
    parser.add_argument("--timeout", type=float, default=600, help="socket timeout in seconds (default 600)")
    parser.add_argument("--workdir", type=Path, help="parent of the temp dir (default: $TMPDIR or /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data) for inspection")
    parser.add_argument("--py-spy", help="path of a py-spy binary: profile relate-pop3 during the download")
    parser.add_argument("--profile", type=Path, help="where py-spy writes collapsed stacks (with --py-spy)")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    if args.py_spy and not args.profile:
        parser.error("--py-spy needs --profile FILE")
    if min(args.messages, args.pipeline, args.rounds, args.batch) < 1 or args.size < 512:
        parser.error("--messages, --pipeline, --rounds and --batch must be positive, --size at least 512")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet = args.json_only
    workdir = make_workdir("relate-bench-pop3-", args.workdir)
    msgs = plan_messages(args.messages, args.size)
    expected = digests([crlf(m) for m in msgs])
    report: dict[str, Any] = {
        "benchmark": "pop3",
        "params": {
            "messages": args.messages,
            "size": len(msgs[1]) if len(msgs) > 1 else len(msgs[0]),
            "octets": sum(len(crlf(m)) for m in msgs),
            "pipeline": args.pipeline,
            "rounds": args.rounds,
            "cpus": os.cpu_count(),
            "fs": fs_type(workdir),
        },
        "valid": False,
    }
    targets: list[Target] = []

    def body() -> None:
        rounds: dict[str, list[Round]] = {}
        targets.append(Relate(workdir, args.batch, quiet))
        if args.vs == "dovecot":
            targets.append(Dovecot(workdir, quiet))
        for target in targets:
            target.start()
            rounds[target.name] = []
        for n in range(args.rounds):
            # Alternate the order, so slow drifts of the machine hit both targets alike.
            for target in targets if n % 2 == 0 else targets[::-1]:
                say(f"{target.name}: round {n + 1}/{args.rounds}", quiet=quiet)
                rounds[target.name].append(run_round(target, msgs, expected, args))
        for target in targets:
            report[target.name] = figures(target, rounds[target.name])
        if "dovecot" in report:
            report["ratio"] = ratios(report["relate"], report["dovecot"], RATIO_OF)

    return run_benchmark("pop3", args, workdir, report, body, lambda: stop_targets(targets, "pop3"), render)


if __name__ == "__main__":
    sys.exit(main())
