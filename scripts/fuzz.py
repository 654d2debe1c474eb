"""Long fuzzing runs: every parser's property tests for minutes each, and garbage over the network.

In-process (the default): each module of ``tests/fuzz`` covers one parser.
Its tests run under the ``fuzz`` hypothesis profile (at most 50 ms of CPU
per input, see tests/fuzz/conftest.py: any costlier input is a failure, as
is any exception but the parser's own error), for ``--minutes`` per module shared among its tests: a short
calibration run measures each test's speed, then it runs with as many
examples as fit its share. Failures are printed by hypothesis with the
smallest input that shows them.

``--network``: a dev run (``relatectl dev --any-port``, every daemon in its
own process) takes garbage on every port for ``--minutes``: random and
mutated commands, overlong lines, NULs, broken UTF-8, bogus literals and
DATA, TLS handshakes of random bytes, random HTTP requests, clients that stall
or vanish. The garbage comes from other loopback addresses, so failed logins never lock
out the well-behaved client on 127.0.0.1, which meanwhile submits mail over
STARTTLS, reads it over IMAP and POP3 and lists it over the API in a loop and
must never see an error. At the end the daemons' output is searched for
tracebacks, ``loop-blocked`` lines and server-side failures, and the
supervisor's restarts are counted: all must be zero.

Exit code 0 when nothing was found, 1 otherwise. Run it with scripts/fuzz.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import imaplib
import json
import os
import poplib
import random
import re
import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CALIBRATION = 200


# -- in-process ---------------------------------------------------------------------


def _pytest(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - this interpreter and pytest, fixed arguments
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--hypothesis-seed",
            str(random.getrandbits(32)),
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def fuzz_tests(only: str | None) -> dict[str, list[str]]:
    """Test ids of tests/fuzz by module (one module per parser)."""
    done = _pytest(["--collect-only", "tests/fuzz"], dict(os.environ))
    by_module: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        if "::" in line and (only is None or only in line):
            by_module.setdefault(line.split("::")[0], []).append(line.strip())
    return by_module


_RAN = re.compile(r"(\d+) passing, (?:\d+) failing")


def _timing_noise(done: subprocess.CompletedProcess[str]) -> bool:
    """Whether a failed run's only finding is an input that missed a time bound once and met it when
    hypothesis ran it again ("Unreliable test timings" for the wall deadline, a FlakyFailure of the CPU
    bound): a busy machine, not a slow input."""
    out = done.stdout
    if "Falsifying example" in out:
        return "Unreliable test timings" in out and out.count("Falsifying example") <= out.count(
            "Unreliable test timings"
        )
    return "FlakyFailure" in out and "CpuDeadlineExceeded" in out


def fuzz_one(
    test: str, seconds: float, env: dict[str, str]
) -> tuple[int, float, int, subprocess.CompletedProcess[str]]:
    """Run ``test`` again and again (a new seed each time) until ``seconds`` are used or it fails.

    The first run asks for CALIBRATION inputs; each next one for as many as fit in the time left at the
    rate the last one showed (pytest's start-up included, so it errs short and the loop goes round
    again). Inputs are counted as hypothesis reports them run (a small search space ends a run early),
    and a run asks for at most ten times what the last one ran. A deadline missed once but not when
    hypothesis replays the input is counted as timing noise and the fuzzing goes on; returns (inputs,
    seconds, noise, the last run).
    """
    start = time.monotonic()
    deadline = start + seconds
    inputs, noise, rate, ran = 0, 0, 0.0, CALIBRATION
    while True:
        left = deadline - time.monotonic()
        count = max(CALIBRATION, min(int(rate * left), 10 * ran))
        began = time.monotonic()
        done = _pytest([test, "--hypothesis-show-statistics"], {**env, "FUZZ_EXAMPLES": str(count)})
        if done.returncode != 0 and _timing_noise(done) and noise < 20:
            # The run stopped early, after an unknown number of its inputs: neither counted nor used for
            # the rate (a rate from a cut-short run would plan the next run far past the deadline).
            noise += 1
            done = subprocess.CompletedProcess(done.args, 0, "", "")
        else:
            ran = max(1, sum(int(n) for n in _RAN.findall(done.stdout)))
            inputs += ran
            rate = ran / max(time.monotonic() - began, 0.1)
        if done.returncode != 0 or deadline - time.monotonic() < 5:
            return inputs, time.monotonic() - start, noise, done


def run_in_process(minutes: float, only: str | None) -> bool:
    env = {**os.environ, "FUZZ_PROFILE": "fuzz"}
    modules = fuzz_tests(only)
    if not modules:
        print("fuzz: no tests found in tests/fuzz", file=sys.stderr)
        return False
    ok = True
    rows = []
    for tests in modules.values():
        share = minutes * 60 / len(tests)
        for test in tests:
            inputs, spent, noise, done = fuzz_one(test, share, env)
            passed = done.returncode == 0
            ok &= passed
            result = ("ok" if passed else "FOUND") + (f" ({noise} timing noise)" if noise else "")
            rows.append((test, inputs, f"{spent:.0f}s", result))
            print(f"fuzz: {test}: {inputs} inputs in {spent:.0f}s: {result}", file=sys.stderr)
            if not passed:
                print(done.stdout[-6000:], file=sys.stderr)
    width = max(len(r[0]) for r in rows)
    print(f"{'test':<{width}}  {'inputs':>9}  {'time':>6}  result")
    for test, count, took, result in rows:
        print(f"{test:<{width}}  {count:>9}  {took:>6}  {result}")
    return ok


# -- over the network -------------------------------------------------------------------


def garbage_from(rng: random.Random) -> str:
    """A loopback source address for garbage other than the well-behaved client's 127.0.0.1 (many, so
    connections in TIME_WAIT never use up one address's ports)."""
    return f"127.0.{rng.randrange(1, 255)}.{rng.randrange(2, 255)}"


SMTP_VERBS = ["EHLO", "HELO", "MAIL FROM:", "RCPT TO:", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP",
              "STARTTLS", "AUTH", "AUTH PLAIN", "AUTH LOGIN", "BDAT", "XCLIENT"]  # fmt: skip
IMAP_VERBS = ["CAPABILITY", "NOOP", "LOGIN", "AUTHENTICATE", "ENABLE", "SELECT", "EXAMINE", "CREATE", "DELETE",
              "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB", "NAMESPACE", "STATUS", "APPEND", "IDLE", "CHECK",
              "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE", "UID FETCH", "UID SEARCH",
              "UID STORE", "UID EXPUNGE", "ID", "STARTTLS", "LOGOUT"]  # fmt: skip
POP3_VERBS = ["USER", "PASS", "APOP", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "QUIT", "TOP", "UIDL", "CAPA",
              "STLS", "AUTH", "AUTH PLAIN"]  # fmt: skip
ATOMS = ["INBOX", '""', '"*"', "*", "%", "1:*", "4294967295", "0", "-1", "(", ")", "((((((((((", "{5}",
         "{99999999}", "{5+}", "~{3}", "<@a:b@c>", "<>", "<a@b>", "<a\x00b@x>", "<\xff\xfe@x>", "BODY[]", "(FLAGS)",
         "&AAA-", "=?x?q?y?=", "NIL", "SIZE=99999999999", "BODY=8BITMIME", "SMTPUTF8", "\\Seen", "RETURN (ALL)",
         "CHARSET UTF-8"]  # fmt: skip


def garbage_line(rng: random.Random, verbs: list[str]) -> bytes:
    kind = rng.random()
    if kind < 0.3:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300)))
    if kind < 0.35:
        return b"A" * rng.choice([1000, 70000, 300000])
    if kind < 0.4:
        return b"(" * rng.randrange(100, 5000) + b"x"
    words = [rng.choice(verbs)] + [rng.choice(ATOMS) for _ in range(rng.randrange(0, 6))]
    tag = [] if verbs is not IMAP_VERBS else [rng.choice(["a", "1", "*", "+", "a" * 100])]
    return " ".join(tag + words).encode("utf-8", "surrogateescape")


async def _connect(
    port: int, rng: random.Random, stats: Counter[str]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    try:
        return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, local_addr=(garbage_from(rng), 0)), 5)
    except (OSError, TimeoutError):
        stats["connect-failed"] += 1
        return None


async def garbage_client(port: int, verbs: list[str] | None, rng: random.Random, stats: Counter[str]) -> None:
    """One connection of garbage: command-like lines, raw bytes, stalls and abrupt ends."""
    if (connection := await _connect(port, rng, stats)) is None:
        return
    reader, writer = connection
    stats["connections"] += 1
    try:
        for _ in range(rng.randrange(1, 40)):
            if verbs is None:  # an implicit-TLS port: a handshake of random bytes
                writer.write(bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 600))))
            else:
                writer.write(garbage_line(rng, verbs) + rng.choice([b"\r\n", b"\n", b"\r\n", b""]))
            await writer.drain()
            stats["lines"] += 1
            if rng.random() < 0.05:
                await asyncio.sleep(rng.random() * 2)  # a slow client
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(65536), 0.05)
            if rng.random() < 0.05:
                break  # vanish mid-conversation
    except (OSError, ConnectionError):
        stats["dropped-by-server"] += 1
    finally:
        writer.close()


async def garbage_http(port: int, rng: random.Random, stats: Counter[str]) -> None:
    paths = ["/api/emails", "/api/emails/search", "/api/mailboxes", "/api/outbound", "/api/outbound/send",
             "/api/emails/1", "/api/smtp-credentials", "/hubs/email", "/api/push-subscriptions",
             "/healthz"]  # fmt: skip
    method = rng.choice(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "X"])
    path = rng.choice(paths) + rng.choice(["", "?q=%00", "?mailbox=%00x", "?page=-1", "?pageSize=99999", "/%2e%2e"])
    body = rng.choice([b"", b"{", b"[" * 10000 + b"]" * 10000, json.dumps({"subject": "\u2028x"}).encode(),
                       bytes(rng.getrandbits(8) for _ in range(200))])  # fmt: skip
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += f"Authorization: Bearer relate_{rng.getrandbits(48):012x}_{'x' * 32}\r\nContent-Length: {len(body)}\r\n\r\n"
    if (connection := await _connect(port, rng, stats)) is None:
        return
    reader, writer = connection
    try:
        writer.write(head.encode() + body)
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 10)
        stats["http-" + (status.split(b" ")[1].decode(errors="replace")[:1] + "xx" if b" " in status else "none")] += 1
    except (OSError, TimeoutError, ConnectionError):
        stats["http-dropped"] += 1
    finally:
        writer.close()


async def garbage(info: dict[str, Any], seconds: float, stats: Counter[str]) -> None:
    ports = info["ports"]
    targets: list[tuple[int, list[str] | None]] = [
        (ports["smtp"], SMTP_VERBS), (ports["submission"], SMTP_VERBS), (ports["submissions"], None),
        (ports["imap"], IMAP_VERBS), (ports["imaps"], None), (ports["pop3"], POP3_VERBS), (ports["pop3s"], None),
    ]  # fmt: skip
    deadline = time.monotonic() + seconds
    rng = random.Random()  # noqa: S311 - garbage, not cryptography

    async def worker(n: int) -> None:
        local = random.Random(rng.getrandbits(64))  # noqa: S311
        while time.monotonic() < deadline:
            if n == 0:
                await garbage_http(ports["api"], local, stats)
            else:
                port, verbs = local.choice(targets)
                await garbage_client(port, verbs, local, stats)

    await asyncio.gather(*(worker(n) for n in range(12)))


class WellBehaved(threading.Thread):
    """A mail user going about their day on 127.0.0.1; every error it sees is a finding."""

    def __init__(self, info: dict[str, Any], deadline: float) -> None:
        super().__init__(daemon=True)
        self.info = info
        self.deadline = deadline
        self.rounds = 0
        self.errors: list[str] = []

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            try:
                self.one_round()
                self.rounds += 1
            except Exception as exc:  # noqa: BLE001 - any failure a user would see is a finding
                self.errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(1.0)  # one API request a round: well under the key's 100 requests a minute

    def one_round(self) -> None:
        info, ports = self.info, self.info["ports"]
        tls = ssl.create_default_context(cafile=info["tls"]["cert"])
        subject = f"well-behaved {self.rounds}"
        with smtplib.SMTP("localhost", ports["submission"], timeout=30) as smtp:
            smtp.starttls(context=tls)
            smtp.login(info["user"], info["key"])
            smtp.sendmail(
                info["user"], [info["user"]], f"From: {info['user']}\r\nSubject: {subject}\r\n\r\nhello\r\n".encode()
            )
        with imaplib.IMAP4("127.0.0.1", ports["imap"], timeout=30) as imap:
            imap.login(info["user"], info["key"])
            imap.select("INBOX")
            status, found = imap.search(None, "SUBJECT", f'"{subject}"')
            if status != "OK" or not found[0]:
                raise AssertionError(f"IMAP did not find {subject!r}: {status} {found}")
            imap.fetch(found[0].split()[-1], "(FLAGS ENVELOPE BODY.PEEK[])")
            imap.logout()
        pop = poplib.POP3("127.0.0.1", ports["pop3"], timeout=30)
        try:
            pop.user(info["user"])
            pop.pass_(info["key"])
            pop.stat()
        finally:
            pop.quit()
        request = urllib.request.Request(
            f"http://127.0.0.1:{ports['api']}/api/emails", headers={"Authorization": f"Bearer {info['key']}"}
        )
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
            json.loads(resp.read())


def run_network(minutes: float) -> bool:
    state = Path(tempfile.mkdtemp(prefix="relate-fuzz-"))
    out = state / "dev.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELATE_")}
    with out.open("w") as log:
        dev = subprocess.Popen(  # noqa: S603 - this project's own CLI
            [sys.executable, "-m", "relatectl", "dev", "--state-dir", str(state), "--any-port"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C" not in out.read_text(errors="replace"):
            if dev.poll() is not None or time.monotonic() > deadline:
                print(out.read_text(errors="replace")[-3000:], file=sys.stderr)
                return False
            time.sleep(0.2)
        info = json.loads((state / "dev.json").read_text())
        seconds = minutes * 60
        user = WellBehaved(info, time.monotonic() + seconds)
        user.start()
        stats: Counter[str] = Counter()
        asyncio.run(garbage(info, seconds, stats))
        user.join()
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(timeout=60)
        except subprocess.TimeoutExpired:
            dev.kill()
    text = out.read_text(errors="replace")
    findings = {
        "well-behaved client errors": user.errors,
        "tracebacks": [m.group(0)[:300] for m in re.finditer(r"Traceback.*?(?=\n\S)", text, re.S)],
        "loop-blocked": [line for line in text.splitlines() if "loop-blocked" in line],
        "server failures": [
            line for line in text.splitlines() if re.search(r"SERVERBUG|imap-error|smtp-error|api-error", line)
        ],
        "daemon restarts": [line for line in text.splitlines() if "supervisor-restart" in line],
    }
    print(f"network: {minutes:g} min, well-behaved rounds {user.rounds}, garbage {dict(stats)}")
    for name, items in findings.items():
        print(f"{name}: {len(items)}")
        for item in items[:10]:
            print(f"  {item}")
    found = any(findings.values())
    if found:
        print(f"fuzz: the dev run's output is in {out}", file=sys.stderr)
    else:
        shutil.rmtree(state, ignore_errors=True)
    return not found


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="per parser (in-process), or in all (network)")
    parser.add_argument("--only", help="only fuzz tests whose id contains this")
    parser.add_argument("--network", action="store_true", help="also fuzz a dev run over the network")
    parser.add_argument("--network-only", action="store_true", help="only the network run")
    args = parser.parse_args()
    ok = True
    if not args.network_only:
        ok &= run_in_process(args.minutes, args.only)
    if args.network or args.network_only:
        ok &= run_network(args.minutes)
    print("fuzz: nothing found" if ok else "fuzz: FOUND problems (above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
