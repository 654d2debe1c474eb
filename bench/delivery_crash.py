"""Crash benchmark of outbound delivery: kill -9 mid-backlog, restart, count what was sent twice or never.

Sets up a throwaway world in a temp dir: an embedded PostgreSQL 18 (fsync
on), the schema, the hosted sender ``sender@bench.test``, and a *sink*: a
small SMTP server in a separate process on ``127.0.0.1`` that answers each
message ``--delay`` seconds after its final dot and appends the Message-Id of
every message it acknowledged with 250 to a file (a message the sink
answered is delivered, whatever becomes of the sender). It queues
``--messages`` messages of about ``--size`` bytes, one recipient each, spread
over ``--domains`` recipient domains, straight into the database (as
submission does), then starts ``python -m relate.queue`` with the sink as its
smarthost. When ``--kill-at`` of the messages are at the sink it kills the
daemon with SIGKILL, starts it again at once, and waits until every message
is at the sink and every recipient is ``sent`` in the database. It prints:

- duplicates: acknowledgements beyond the first for a Message-Id;
- lost: queued messages the sink never acknowledged (must be 0);
- the most connections the sink had at once (a bound on the messages in
  flight), and whether duplicates <= that bound;
- recipients still claimed (``sending``) right after the kill: they wait for
  their lease (``delivery.lease_seconds``) before any daemon retries them;
- seconds from the restart to the last message at the sink.

With ``--vs postfix`` the same runs against Postfix from Debian's package
(installed as ``shared/peers.md`` says when missing): a throwaway instance
with the sink as ``relayhost``, the messages injected over SMTP and put on
hold (a ``HOLD`` header check), then released (``postsuper -H ALL``; the
deferred queue is scanned every second); at the same point every
process of the instance gets SIGKILL and ``postfix start`` brings it back.
The ratios are relate/postfix.

Acceptance (issue 12): duplicates <= the messages in flight, nothing lost,
the rest delivered within 2 minutes of the restart.

Usage: ``.venv/bin/python bench/delivery_crash.py [--messages 1000]
[--domains 20] [--delay 0.05] [--kill-at 0.3] [--vs postfix] [--json-only]``;
``--help`` for the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    HOST,
    BenchError,
    Job,
    RawSmtp,
    comparison_table,
    free_port,
    log_tail,
    make_workdir,
    ratios,
    run_benchmark,
    run_cmd,
    say,
    spawn_daemon,
    start_postgres,
    stop_daemon,
    wait_for_smtp,
)
from delivery import SENDER, Planned, make_outbound, prepare_db, queue_all
from smtp_ingest import MASTER_CF as INGEST_MASTER_CF
from smtp_ingest import ensure_postfix

# -- the sink (a separate process: python bench/delivery_crash.py --sink-process ...) --------------


async def _sink_session(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, out: Any, active: list[int]
) -> None:
    """One SMTP connection: 250 to everything; each message acknowledged ``delay`` s after its dot, then logged."""
    active[0] += 1
    print(f"active {active[0]}", flush=True)
    try:
        writer.write(b"220 crash-sink.test ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":  # no PIPELINING: one reply per command, in order
                writer.write(b"250-crash-sink.test\r\n250-8BITMIME\r\n250-SIZE 104857600\r\n250 SMTPUTF8\r\n")
            elif verb == b"DATA":
                writer.write(b"354 end with <CR><LF>.<CR><LF>\r\n")
                body = await reader.readuntil(b"\r\n.\r\n")
                await asyncio.sleep(delay)
                writer.write(b"250 2.0.0 Ok: queued\r\n")
                await writer.drain()  # raises if the sender is gone: then it was not acknowledged
                out.write(_message_id(body) + "\n")
                out.flush()
                continue
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                break
            else:  # HELO, MAIL, RCPT, RSET, NOOP
                writer.write(b"250 2.0.0 Ok\r\n")
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass  # the sender died: kill -9 is the point of this benchmark
    finally:
        active[0] -= 1
        writer.close()


def _message_id(body: bytes) -> str:
    head = body.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"message-id:"):
            return line[len(b"message-id:") :].strip().decode("ascii", "replace")
    return "?"


async def _sink_main(port: int, delay: float, log_path: Path) -> None:
    active = [0]  # connections now
    with log_path.open("a", encoding="ascii") as out:
        server = await asyncio.start_server(
            lambda r, w: _sink_session(r, w, delay, out, active), HOST, port, limit=64 * 1024 * 1024, backlog=512
        )
        print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
        async with server:
            await server.serve_forever()


class Sink:
    """The sink process and what it logged: the Message-Ids it acknowledged, the most connections at once."""

    def __init__(self, workdir: Path, delay: float) -> None:
        self.accepted_path = workdir / "accepted.txt"
        self.accepted_path.write_text("")
        self.out_path = workdir / "sink.out"
        self._out = self.out_path.open("ab")  # O_APPEND, shared with the sink: reset() can truncate it
        self.proc = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
            [sys.executable, __file__, "--sink-process", str(delay), str(self.accepted_path)],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while not self.out_path.read_text().startswith("ready "):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the sink did not start: {self.out_path.read_text()}")
            time.sleep(0.05)
        self.port = int(self.out_path.read_text().split()[1])

    def accepted(self) -> list[str]:
        return [line for line in self.accepted_path.read_text().splitlines() if line]

    def count(self) -> int:
        return self.accepted_path.read_text().count("\n")

    def reset(self) -> None:
        """Start counting afresh (acknowledgements, connections), for the next target."""
        self.accepted_path.write_text("")
        self._out.truncate(0)

    def peak(self) -> int:
        """The most connections the sink had at once since the last reset."""
        lines = self.out_path.read_text().splitlines()
        return max((int(line.split()[1]) for line in lines if line.startswith("active ")), default=0)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self._out.close()


# -- the messages -----------------------------------------------------------------------------------


def plan(count: int, domains: int, size: int) -> list[Planned]:
    """``count`` messages with one recipient each, domain ``i mod domains`` (so ``domains`` connections at once)."""
    nonce = os.urandom(4).hex()
    return [make_outbound(i, size, [f"user{i}@remote{i % domains + 1}.test"], nonce) for i in range(count)]


def wait_until(what: str, done: Any, limit: float, alive: subprocess.Popen[bytes] | None = None) -> float:
    """Poll ``done()`` every 10 ms until it holds; the seconds it took (BenchError after ``limit``)."""
    start = time.monotonic()
    while not done():
        if alive is not None and alive.poll() is not None:
            raise BenchError(f"{what}: the process under test exited with code {alive.returncode}")
        if time.monotonic() - start > limit:
            raise BenchError(f"{what}: not within {limit:.0f}s")
        time.sleep(0.01)
    return time.monotonic() - start


def tally(planned: list[Planned], accepted: list[str], before_kill: int) -> dict[str, Any]:
    """Duplicates and losses from the sink's log."""
    seen = collections.Counter(accepted)
    expected = {p.message_id for p in planned}
    return {
        "messages": len(planned),
        "acknowledged_before_kill": before_kill,
        "acknowledgements": len(accepted),
        "duplicates": sum(n - 1 for n in seen.values()),
        "lost": len(expected - seen.keys()),
        "unexpected": len(seen.keys() - expected),
    }


# -- relate -------------------------------------------------------------------------------------------


class Relate:
    name = "relate"

    def __init__(self, workdir: Path, args: argparse.Namespace) -> None:
        from relate.runtime.embedded_pg import EmbeddedPostgres

        self.workdir = workdir
        self.args = args
        self.pg = EmbeddedPostgres(workdir / "pgdata")
        self.dsn = ""
        self.settings: dict[str, str] = {}
        self.daemon: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "relate-delivery.log"

    def config(self, sink_port: int) -> Path:
        import yaml

        a = self.args
        delivery: dict[str, Any] = {
            "smarthost": {"host": HOST, "port": sink_port, "tls": "none"},
            "max_connections": a.max_connections,
            "connect_timeout": 10.0,
            "command_timeout": 60.0,
        }
        if a.lease is not None:
            delivery["lease_seconds"] = a.lease
        path = self.workdir / "relate.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "hostname": "relay.bench.test",
                    "database": {"dsn": self.dsn},
                    "delivery": delivery,
                    "logging": {"level": "INFO"},
                }
            )
        )
        return path

    def run(self, sink: Sink, planned: list[Planned]) -> dict[str, Any]:
        quiet = self.args.json_only
        self.dsn, _ = start_postgres(self.pg, quiet=quiet)
        user_id = asyncio.run(prepare_db(self.dsn, self.settings))
        say(f"relate: queueing {len(planned)} messages", quiet=quiet)
        asyncio.run(queue_all(self.dsn, user_id, planned))
        config = self.config(sink.port)
        kill_at = int(len(planned) * self.args.kill_at)
        say("relate: starting relate-delivery with the sink as its smarthost", quiet=quiet)
        self.daemon = spawn_daemon("relate.queue", config, self.log_path)
        wait_until(f"relate: {kill_at} messages at the sink", lambda: sink.count() >= kill_at, 120, self.daemon)
        os.kill(self.daemon.pid, signal.SIGKILL)
        self.daemon.wait(10)
        killed = time.monotonic()
        before_kill = sink.count()
        claimed = asyncio.run(self._count("status = 'sending'"))
        say(f"relate: killed with {before_kill} at the sink, {claimed} recipients claimed; restarting", quiet=quiet)
        self.daemon = spawn_daemon("relate.queue", config, self.log_path, append=True)
        restarted = time.monotonic()
        limit = self.args.timeout
        expected = {p.message_id for p in planned}
        wait_until(
            "relate: every message at the sink after the restart",
            lambda: expected <= set(sink.accepted()) and asyncio.run(self._count("status <> 'sent'")) == 0,
            limit,
            self.daemon,
        )
        done = time.monotonic()
        figures = tally(planned, sink.accepted(), before_kill)
        figures.update(
            {
                "peak_connections": sink.peak(),
                "claimed_at_kill": claimed,
                "drain_after_restart_s": round(done - restarted, 2),
                "drain_after_kill_s": round(done - killed, 2),
                "lease_seconds": self.args.lease if self.args.lease is not None else 60.0,
            }
        )
        return figures

    async def _count(self, where: str) -> int:
        """Recipients in the database matching ``where`` (a fixed condition of this script)."""
        import asyncpg

        conn = await asyncpg.connect(self.dsn)
        try:
            return int(await conn.fetchval(f"SELECT count(*) FROM outbound_recipients WHERE {where}"))
        finally:
            await conn.close()

    def stop(self) -> None:
        stop_daemon(self.daemon)
        if self.dsn:
            self.pg.stop()
            self.dsn = ""


# -- Postfix -------------------------------------------------------------------------------------------

MAIN_CF = """\
# Throwaway Postfix relay of bench/delivery_crash.py (shared/peers.md), loopback only.
compatibility_level = 3.6
config_directory = {root}/etc
queue_directory = {root}/spool
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = {root}/log/postfix.log
maillog_file_prefixes = /var, /dev/stdout, {root}/log

myhostname = relay.bench.test
mydomain = bench.test
myorigin = $mydomain
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_banner = $myhostname ESMTP Postfix crash-test peer
mydestination =
local_recipient_maps =
alias_maps =
alias_database =

# Everything goes to the sink, 20 connections at most (the default), nothing bounces.
relayhost = [{host}]:{sink_port}
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_tls_security_level = none
smtp_tls_security_level = none
# Every injected message goes on hold (the backlog); postsuper -H releases it to the deferred queue,
# which is scanned every second, so the backlog (and whatever the restart finds) goes out at once.
header_checks = regexp:{root}/etc/hold
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
message_size_limit = 52428800
biff = no
"""

# smtp_ingest.py's services (smtpd on a loopback port, no chroot) and the SMTP client, which relays here.
MASTER_CF = (
    INGEST_MASTER_CF
    + """smtp       unix  -       -       n       -       -       smtp
relay      unix  -       -       n       -       -       smtp
"""
)


class Postfix:
    name = "postfix"

    def __init__(self, workdir: Path, args: argparse.Namespace) -> None:
        self.root = workdir / "postfix"
        self.args = args
        self.postfix = ""
        self.version = "?"
        self.port = 0
        self.started = False

    def _run(self, *command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        # postfix(1) prints its errors only to a terminal: give it one (peers.md).
        line = shlex.join(command)
        script = shutil.which("script")
        if script is None:
            return run_cmd(list(command), timeout=timeout, check=False)
        return run_cmd([script, "-qec", line, "/dev/null"], timeout=timeout, check=False)

    def _tool(self, name: str) -> str:
        return str(Path(self.postfix).with_name(name))

    def _etc(self) -> str:
        return str(self.root / "etc")

    def start(self, sink_port: int) -> None:
        self.postfix = ensure_postfix(self.args.json_only)
        self.version = run_cmd([self._tool("postconf"), "-d", "-h", "mail_version"], timeout=30).stdout.strip()
        for sub in ("etc", "spool", "data", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        user = pwd.getpwnam("postfix")
        os.chown(self.root / "data", user.pw_uid, user.pw_gid)
        self.port = free_port(HOST)
        (self.root / "etc" / "main.cf").write_text(MAIN_CF.format(root=self.root, host=HOST, sink_port=sink_port))
        (self.root / "etc" / "master.cf").write_text(MASTER_CF.format(host=HOST, port=self.port))
        (self.root / "etc" / "hold").write_text("/^Message-Id:/ HOLD the crash benchmark's backlog\n")
        self._start()

    def _start(self) -> None:
        started = self._run(self.postfix, "-c", self._etc(), "start")
        self.started = True
        if started.returncode != 0:
            raise BenchError(f"postfix start failed ({started.returncode}): {started.stdout}{started.stderr}")
        try:
            wait_for_smtp(HOST, self.port, 60)
        except TimeoutError as exc:
            raise BenchError(f"postfix did not listen: {exc}\n{self.log_tail()}") from None

    def queued(self, *subs: str) -> int:
        names = subs or ("maildrop", "incoming", "active", "deferred", "hold")
        return sum(len(files) for sub in names for _dir, _sub, files in os.walk(self.root / "spool" / sub))

    def processes(self) -> list[int]:
        """The master and every process it started (the whole instance)."""
        try:
            master = int((self.root / "spool" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        found = [master]
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == master:
                    found.append(int(entry.name))
        return found

    def inject(self, planned: list[Planned], sessions: int = 20) -> None:
        jobs: list[list[Job]] = [[] for _ in range(sessions)]
        for p in planned:
            jobs[p.index % sessions].append(Job(p.index, SENDER, p.recipients[0], p.data))

        async def session(batch: list[Job]) -> None:
            conn = await RawSmtp.connect(HOST, self.port, 60)
            try:
                for job in batch:
                    await conn.send(job)
            finally:
                await conn.close()

        async def all_sessions() -> None:
            await asyncio.gather(*(session(b) for b in jobs if b))

        asyncio.run(all_sessions())

    def run(self, sink: Sink, planned: list[Planned]) -> dict[str, Any]:
        quiet = self.args.json_only
        self.start(sink.port)
        say(f"postfix: Postfix {self.version}; injecting {len(planned)} messages (on hold)", quiet=quiet)
        self.inject(planned)  # each 250 came after the queue file was written: the backlog is there
        if self.queued("hold") != len(planned) or sink.count():
            raise BenchError(f"postfix: {self.queued('hold')} messages on hold, {sink.count()} sent already")
        released = self._run(self._tool("postsuper"), "-c", self._etc(), "-H", "ALL")
        if released.returncode != 0:
            raise BenchError(f"postsuper -H ALL failed: {released.stdout}{released.stderr}")
        kill_at = int(len(planned) * self.args.kill_at)
        wait_until(f"postfix: {kill_at} messages at the sink", lambda: sink.count() >= kill_at, 300)
        victims = self.processes()
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_until("postfix: its processes gone", lambda: not any(Path(f"/proc/{p}").exists() for p in victims), 30)
        before_kill = sink.count()
        in_queue = self.queued()
        say(f"postfix: killed {len(victims)} processes with {before_kill} at the sink; restarting", quiet=quiet)
        self._start()
        restarted = time.monotonic()
        expected = {p.message_id for p in planned}
        wait_until(
            "postfix: every message at the sink after the restart",
            lambda: expected <= set(sink.accepted()) and self.queued() == 0,
            self.args.timeout,
        )
        done = time.monotonic()
        figures = tally(planned, sink.accepted(), before_kill)
        figures.update(
            {
                "peak_connections": sink.peak(),
                "queued_at_kill": in_queue,
                "processes_killed": len(victims),
                "drain_after_restart_s": round(done - restarted, 2),
                "drain_after_kill_s": round(done - killed, 2),
            }
        )
        return figures

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.root / "log" / "postfix.log", lines)

    def stop(self) -> None:
        if not self.started:
            return
        self._run(self.postfix, "-c", self._etc(), "stop", timeout=60)
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.started = False


# -- report ----------------------------------------------------------------------------------------

SPEC: list[tuple[str, tuple[str, ...]]] = [
    ("messages queued", ("messages",)),
    ("acknowledged by the sink before the kill", ("acknowledged_before_kill",)),
    ("most connections at the sink at once (in flight <=)", ("peak_connections",)),
    ("recipients claimed at the kill (wait for the lease)", ("claimed_at_kill",)),
    ("messages in Postfix's queue at the kill", ("queued_at_kill",)),
    ("duplicates (acknowledged twice or more)", ("duplicates",)),
    ("lost (never acknowledged)", ("lost",)),
    ("seconds from the restart to the last message", ("drain_after_restart_s",)),
    ("seconds from the kill to the last message", ("drain_after_kill_s",)),
]
RATIOS = {("duplicates",): "duplicates", ("drain_after_restart_s",): "drain_after_restart_s"}


def verdict(figures: dict[str, Any]) -> dict[str, bool]:
    return {
        "duplicates_within_in_flight": figures["duplicates"] <= figures["peak_connections"],
        "nothing_lost": figures["lost"] == 0 and figures["unexpected"] == 0,
        "drained_within_2_minutes": figures["drain_after_restart_s"] <= 120,
    }


def render(report: dict[str, Any]) -> str:
    p = report["params"]
    head = (
        f"Crash mid-backlog: {p['messages']} messages of {p['size']} bytes, one recipient each at {p['domains']} "
        f"domains, to a sink answering {p['delay'] * 1000:.0f} ms after each final dot; SIGKILL at "
        f"{p['kill_at']:.0%} acknowledged, restart at once"
    )
    lines = [head, "", comparison_table(SPEC, report, "postfix", RATIOS), ""]
    for name in ("relate", "postfix"):
        if name in report:
            checks = ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in report[name]["acceptance"].items())
            lines.append(f"{name}: {checks}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=1000, help="messages in the backlog (default 1000)")
    parser.add_argument("--domains", type=int, default=20, help="recipient domains (default 20: 20 connections)")
    parser.add_argument("--size", type=int, default=4096, help="approximate message size in bytes (default 4096)")
    parser.add_argument("--delay", type=float, default=0.05, help="sink's seconds per message (default 0.05)")
    parser.add_argument("--kill-at", type=float, default=0.3, help="share acknowledged at the kill (default 0.3)")
    parser.add_argument("--max-connections", type=int, default=20, help="delivery.max_connections (default 20)")
    parser.add_argument("--lease", type=float, help="delivery.lease_seconds (default: the config default, 60)")
    parser.add_argument("--vs", choices=["postfix"], help="run the same against Postfix and print the ratios")
    parser.add_argument("--timeout", type=float, default=300, help="limit for the drain after the restart (300 s)")
    parser.add_argument("--workdir", type=Path, help="parent of the temp dir (default: $TMPDIR or /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data) for inspection")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    if raw[:1] == ["--sink-process"]:
        asyncio.run(_sink_main(0, float(raw[1]), Path(raw[2])))
        return 0
    args = parse_args(argv)
    workdir = make_workdir("relate-bench-crash-", args.workdir)
    report: dict[str, Any] = {
        "benchmark": "delivery_crash",
        "params": {k: v for k, v in vars(args).items() if k not in ("workdir", "keep", "json_only")},
        "valid": False,
    }
    started: list[Any] = []

    def body() -> None:
        planned = plan(args.messages, args.domains, args.size)
        sink = Sink(workdir, args.delay)
        started.append(sink)
        relate = Relate(workdir, args)
        started.append(relate)
        report["relate"] = relate.run(sink, planned)
        relate.stop()
        if args.vs == "postfix":
            sink.reset()
            postfix = Postfix(workdir, args)
            started.append(postfix)
            report["postfix"] = postfix.run(sink, planned)
            report["postfix"]["version"] = postfix.version
            report["ratio"] = ratios(report["relate"], report["postfix"], RATIOS)
        for name in ("relate", "postfix"):
            if name in report:
                report[name]["acceptance"] = verdict(report[name])
                if not report[name]["acceptance"]["nothing_lost"]:
                    raise BenchError(f"{name} lost messages: {report[name]}", report[name])

    def cleanup() -> None:
        for target in reversed(started):
            try:
                target.stop()
            except Exception as exc:  # noqa: BLE001 - cleanup goes on with the next one whatever happens
                print(f"delivery_crash: stopping {type(target).__name__} failed: {exc}", file=sys.stderr)

    return run_benchmark("delivery_crash", args, workdir, report, body, cleanup, render)


if __name__ == "__main__":
    sys.exit(main())
