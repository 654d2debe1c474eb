"""bench/imap.py's runs of Relate as deployed: imaptest stress, a big mailbox under load, IDLE fan-out.

- :class:`DeployedRelate`: ``relatectl dev --any-port`` in a temp dir, every daemon its own process
  (the shape the systemd units give), logging at INFO as installed, on its embedded PostgreSQL.
- :func:`find_imaptest` / :func:`run_imaptest`: Dovecot's imaptest, never built or shipped by this
  project (``shared/peers.md`` says how to build it by hand); the binary is named by ``$IMAPTEST``.
- :func:`write_mbox`: the varied MIME messages imaptest APPENDs (each Message-ID unique: imaptest
  tracks messages by it and reports any two that differ as a server error).
- :func:`bigbox_load`: LIST, STATUS and SELECT latency over a big mailbox with 20 sessions busy at them.
- :func:`fanout`: a delivery to a mailbox that N sessions watch in IDLE; time until each hears EXISTS.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import yaml
from _common import HOST, BenchError, percentile, say, tree_cpu

IMAPTEST_ENV = "IMAPTEST"
BUILD_HINT = (
    "imaptest is not part of this project and is not packaged: build it by hand outside the tree as "
    "shared/peers.md ('imaptest: IMAP compliance scripts and stress') says (dovecot/imaptest branch release-2.3, "
    "./autogen.sh, ./configure --with-dovecot=/usr/lib/dovecot --prefix=$PEERS/imaptest "
    "LDFLAGS=-Wl,-rpath,/usr/lib/dovecot, the NULL 4th argument of imap_parser_create() at its three call sites, "
    "make install), then run with IMAPTEST=$PEERS/imaptest/bin/imaptest"
)


def find_imaptest() -> str:
    """The imaptest binary named by $IMAPTEST; a BenchError saying how to build it when there is none."""
    path = os.environ.get(IMAPTEST_ENV, "")
    if not path:
        raise BenchError(f"the stress workload needs ${IMAPTEST_ENV}. {BUILD_HINT}")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise BenchError(f"${IMAPTEST_ENV}={path} is not an executable file. {BUILD_HINT}")
    return path


# -- the messages imaptest appends ------------------------------------------------------------


def write_mbox(path: Path, count: int, seed: int = 7) -> None:
    """``count`` messages of several MIME shapes in mbox format, every Message-ID unique."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    out: list[bytes] = []

    def text(lines: int) -> str:
        return "\r\n".join(" ".join(rng.choices(words, k=12)) for _ in range(lines))

    for i in range(count):
        head = (
            f"From: Sender {i % 13} <sender{i % 13}@client.example>\r\n"
            f"To: Someone <rcpt{i % 7}@bench.test>\r\n"
            f"Cc: other{i % 5}@elsewhere.example\r\n"
            f"Subject: stress {i} {' '.join(rng.choices(words, k=3))}\r\n"
            f"Date: Mon, 7 Dec 2026 {i % 24:02d}:{i % 60:02d}:00 +0000\r\n"
            f"Message-ID: <stress-{i}-{seed}@client.example>\r\n"
            + (f"In-Reply-To: <stress-{i - 1}-{seed}@client.example>\r\n" if i % 3 else "")
            + "MIME-Version: 1.0\r\n"
        )
        shape = i % 5
        if shape == 0:
            body = "Content-Type: text/plain; charset=us-ascii\r\n\r\n" + text(rng.randint(3, 60))
        elif shape == 1:
            body = (
                f'Content-Type: multipart/alternative; boundary="alt-{i}"\r\n\r\n'
                f"--alt-{i}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Transfer-Encoding: quoted-printable\r\n\r\n{text(rng.randint(2, 20))}=\r\n caf=C3=A9\r\n"
                f"--alt-{i}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
                f"<p>{text(rng.randint(2, 20))}</p>\r\n--alt-{i}--\r\n"
            )
        elif shape == 2:
            blob = base64.encodebytes(rng.randbytes(rng.randint(200, 6000))).decode().replace("\n", "\r\n")
            body = (
                f'Content-Type: multipart/mixed; boundary="mix-{i}"\r\n\r\n'
                f"--mix-{i}\r\nContent-Type: text/plain\r\n\r\n{text(rng.randint(1, 10))}\r\n"
                f'--mix-{i}\r\nContent-Type: application/octet-stream; name="f{i}.bin"\r\n'
                f'Content-Disposition: attachment; filename="f{i}.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
                f"{blob}--mix-{i}--\r\n"
            )
        elif shape == 3:
            body = (
                f'Content-Type: multipart/mixed; boundary="fwd-{i}"\r\n\r\n'
                f"--fwd-{i}\r\nContent-Type: text/plain\r\n\r\nForwarded:\r\n"
                f"--fwd-{i}\r\nContent-Type: message/rfc822\r\n\r\n"
                f"From: inner@client.example\r\nSubject: inner {i}\r\nMessage-ID: <inner-{i}-{seed}@client.example>\r\n"
                f"Content-Type: text/plain\r\n\r\n{text(rng.randint(1, 15))}\r\n--fwd-{i}--\r\n"
            )
        else:
            body = "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + text(
                rng.randint(1, 8)
            )
        message = (head + body).rstrip("\r\n") + "\r\n"
        # mbox: "From " line first; a body line starting "From " would end the message, so quote it.
        lines = [(">" + line if line.startswith("From ") else line) for line in message.split("\r\n")]
        out.append(f"From sender@client.example Mon Dec  7 10:{i % 60:02d}:00 2026\n".encode())
        out.append("\n".join(lines).encode("utf-8", "replace") + b"\n")
    path.write_bytes(b"".join(out))


# -- imaptest --------------------------------------------------------------------------------------

# imaptest's short column names (its "Totals:" header) and the state each stands for.
COLUMNS = {
    "Logi": "LOGIN",
    "List": "LIST",
    "Stat": "STATUS",
    "Sele": "SELECT",
    "Fetc": "FETCH",
    "Fet2": "FETCH2",
    "Copy": "COPY",
    "Stor": "STORE",
    "Dele": "DELETE",
    "Expu": "EXPUNGE",
    "Appe": "APPEND",
    "Logo": "LOGOUT",
}
_ERROR = re.compile(r"^Error: ", re.MULTILINE)

# The three runs of the issue: (a) persistent sessions, as mail clients keep them; (b) imaptest's default
# mix, each client logging in, working and logging out; (c) logins only.
STRESS_RUNS: dict[str, list[str]] = {
    "persistent": ["logout=0", "msgs=100"],
    "default_mix": [],
    "logins": ["-", "select=0"],
}


def run_imaptest(
    binary: str,
    port: int,
    userfile: Path,
    mbox: Path,
    workdir: Path,
    label: str,
    extra: list[str],
    clients: int,
    secs: int,
) -> dict[str, Any]:
    """One imaptest stress run; per command: completed count, per second, mean ms; errors counted."""
    results = workdir / f"imaptest-{label}.tsv"
    argv = [
        binary,
        f"host={HOST}",
        f"port={port}",
        "user=unused",  # imaptest insists on a template; userfile= supplies the names and passwords
        f"userfile={userfile}",
        f"mbox={mbox}",
        f"clients={clients}",
        f"secs={secs}",
        f"output={results}",
        *extra,
    ]
    proc = subprocess.run(  # noqa: S603 - the operator's own imaptest build
        argv, capture_output=True, text=True, timeout=secs + 120, check=False, errors="replace"
    )
    text = proc.stdout + proc.stderr
    (workdir / f"imaptest-{label}.out").write_text(text)
    if "Totals:" not in proc.stdout:
        raise BenchError(
            f"imaptest {label} ({' '.join(extra)}) gave no totals (exit {proc.returncode}):\n{text[-2000:]}"
        )
    header, counts = proc.stdout.split("Totals:", 1)[1].strip().splitlines()[0], None
    names = [COLUMNS.get(n, n) for n in header.split()]
    counts = [int(v) for v in proc.stdout.rstrip().splitlines()[-1].split()]
    sums: collections.Counter[str] = collections.Counter()
    timed: collections.Counter[str] = collections.Counter()
    with contextlib.suppress(OSError):
        for row in results.read_text().splitlines()[1:]:
            values = [int(v) for v in row.split()]
            for n, name in enumerate(names):
                if 3 * n + 2 < len(values):
                    timed[name] += values[3 * n + 1]
                    sums[name] += values[3 * n + 2]
    errors = _ERROR.findall(text)
    samples = list(dict.fromkeys(re.sub(r"\d+", "N", line) for line in text.splitlines() if line.startswith("Error:")))
    commands = {
        name: {
            "count": count,
            "per_s": round(count / secs, 1),
            "avg_ms": round(sums[name] / timed[name], 1) if timed[name] else None,
        }
        for name, count in zip(names, counts, strict=False)
    }
    worked = sum(c["count"] for name, c in commands.items() if name not in ("LOGIN", "LOGOUT"))
    return {
        "args": " ".join(extra) or "(defaults)",
        "commands": commands,
        "total_per_s": round(sum(c["count"] for c in commands.values()) / secs, 1),
        "work_per_s": round(worked / secs, 1),
        "errors": len(errors),
        "error_samples": samples[:5],
    }


# -- Relate as deployed ----------------------------------------------------------------------------


class DeployedRelate:
    """``relatectl dev --any-port`` in ``workdir/dev``: every daemon its own process, INFO logging."""

    name = "relate"

    def __init__(self, workdir: Path, sessions: int, quiet: bool) -> None:
        self.root = workdir / "dev"
        self.sessions = sessions  # the most connections from 127.0.0.1 (and for one user) it must take
        self.quiet = quiet
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self.dsn = ""
        self.port = 0
        self.smtp_port = 0
        self.keys: dict[str, str] = {}
        self.settings: dict[str, str] = {}

    @property
    def description(self) -> str:
        return (
            "relatectl dev --any-port: relate-smtp, -imap, -pop3, -api, -delivery each its own process "
            "(socket activation, as the systemd units), logging INFO; IMAP max_connections, _per_client and "
            f"_per_user raised to {self.sessions + 100}; embedded PostgreSQL "
            f"{self.settings.get('server_version', '?')} (fsync={self.settings.get('fsync')}, "
            f"synchronous_commit={self.settings.get('synchronous_commit')})"
        )

    def password(self, user: str) -> str:
        return self.keys[user]

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root.parent / "relate-dev.yaml"
        limit = self.sessions + 100
        config.write_text(
            yaml.safe_dump(
                {
                    "imap": {
                        "max_connections": limit,
                        "max_connections_per_client": limit,
                        "max_connections_per_user": limit,
                    },
                    "logging": {"level": "INFO"},
                }
            )
        )
        relatectl = Path(sys.executable).with_name("relatectl")
        say(f"relate: starting {relatectl} dev --any-port in {self.root}", quiet=self.quiet)
        with (self.root.parent / "relate-dev.log").open("wb") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - our own CLI
                [str(relatectl), "--config", str(config), "dev", "--any-port", "--state-dir", str(self.root)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        state = self.root / "dev.json"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"relatectl dev exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                info = json.loads(state.read_text())
                if "ports" in info:
                    self.info = info
                    break
            time.sleep(0.3)
        else:
            raise BenchError(f"relatectl dev did not come up in 180 s:\n{self.log_tail()}")
        self.dsn = self.info["dsn"]
        self.port = int(self.info["ports"]["imap"])
        self.smtp_port = int(self.info["ports"]["smtp"])

    def daemon_pid(self, module: str) -> int:
        """The pid of ``python -m module`` under the dev run (0 if none)."""
        if self.proc is None:
            return 0
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if module in child.cmdline():
                        return child.pid
        return 0

    def postmaster_pid(self) -> int:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.root / "pgdata" / "postmaster.pid").read_text().split()[0])
        return 0

    def cpu(self) -> dict[str, float]:
        return {
            "relate-imap": tree_cpu(self.daemon_pid("relate.imap")),
            "relate-smtp": tree_cpu(self.daemon_pid("relate.smtp")),
            "postgres": tree_cpu(self.postmaster_pid()),
        }

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            text = (self.root.parent / "relate-dev.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


# -- a big mailbox under load ----------------------------------------------------------------------

Opener = Callable[[], Awaitable[Any]]


async def bigbox_load(open_session: Opener, sessions: int, secs: float) -> dict[str, Any]:
    """``sessions`` logged-in clients each repeat LIST "" "*", STATUS INBOX (...), SELECT INBOX for ``secs``
    seconds; latency of each command (p50, p99, max in ms) and commands per second."""
    conns = [await open_session() for _ in range(sessions)]
    latencies: dict[str, list[float]] = {"LIST": [], "STATUS": [], "SELECT": []}
    commands = {
        "LIST": 'LIST "" "*"',
        "STATUS": "STATUS INBOX (MESSAGES UNSEEN UIDNEXT UIDVALIDITY)",
        "SELECT": "SELECT INBOX",
    }
    stop = time.monotonic() + secs

    async def work(conn: Any) -> None:
        while time.monotonic() < stop:
            for name, text in commands.items():
                t0 = time.perf_counter()
                await conn.command(text)
                latencies[name].append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(work(c) for c in conns))
    wall = time.perf_counter() - t0
    for conn in conns:
        await conn.close()
    return {
        "sessions": sessions,
        "seconds": round(wall, 1),
        "commands_per_s": round(sum(map(len, latencies.values())) / wall, 1),
        **{name.lower(): _ms(values) for name, values in latencies.items()},
    }


def _ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "count": len(values),
        "p50": round(percentile(values, 50) * 1000, 2),
        "p99": round(percentile(values, 99) * 1000, 2),
        "max": round(max(values) * 1000, 2),
    }


# -- IDLE fan-out ----------------------------------------------------------------------------------

_EXISTS = re.compile(rb"^\* (\d+) EXISTS")


async def fanout(
    open_session: Opener,
    sessions: int,
    deliveries: int,
    deliver: Callable[[int], Awaitable[float]],
    quiet: bool,
    label: str,
) -> dict[str, Any]:
    """``sessions`` clients SELECT INBOX and IDLE; ``deliveries`` times one message is delivered
    (``deliver(n)`` returns when it is stored, giving the perf_counter() time it was sent); each session's
    time from that to reading ``* n EXISTS``."""
    conns: list[Any] = []
    batch = 200
    t0 = time.perf_counter()
    for start in range(0, sessions, batch):
        conns += await asyncio.gather(*(open_session() for _ in range(min(batch, sessions - start))))
    counts = []
    for conn in conns:
        untagged = await conn.command("SELECT INBOX")
        counts.append(next(int(m.group(1)) for line in untagged if (m := _EXISTS.match(line))))
        conn.idle_tag = await conn.idle()
    opened = time.perf_counter() - t0
    say(f"{label}: {sessions} sessions in IDLE ({opened:.1f}s to open them)", quiet=quiet)
    heard: list[dict[int, float]] = [{} for _ in conns]
    got: collections.Counter[int] = collections.Counter()  # sessions that heard of delivery k
    all_heard = [asyncio.Event() for _ in range(deliveries)]

    async def listen(i: int, conn: Any) -> None:
        while True:
            line = await conn.read_line()
            if (m := _EXISTS.match(line)) is not None:
                heard[i][int(m.group(1))] = time.perf_counter()
                k = int(m.group(1)) - counts[i] - 1
                got[k] += 1
                if 0 <= k < deliveries and got[k] == len(conns):
                    all_heard[k].set()

    listeners = [asyncio.create_task(listen(i, c)) for i, c in enumerate(conns)]
    sent: list[float] = []
    latencies: list[float] = []
    missing = 0
    try:
        for n in range(deliveries):
            sent.append(await deliver(n))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_heard[n].wait(), 30)
            for i, h in enumerate(heard):
                at = h.get(counts[i] + n + 1)
                if at is None:
                    missing += 1
                else:
                    latencies.append(at - sent[n])
            await asyncio.sleep(0.5)
    finally:
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
        for conn in conns:
            conn.abort()
    return {
        "sessions": sessions,
        "deliveries": deliveries,
        "open_s": round(opened, 1),
        "to_exists_ms": _ms(latencies),
        "missed": missing,
    }
