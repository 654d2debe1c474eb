"""Debian's fetchmail, a real POP3 client, downloads a 100-message maildrop from relate-pop3 over TLS (pop3s).

fetchmail checks the server's self-signed certificate against the file it is
given (``sslcertck``, ``sslcertfile``) and hands each message to a small MDA
that writes it to its own numbered file. Each file is compared with what was
delivered, byte for byte after CRLF normalization (an MDA gets LF line ends).
Once with ``keep`` (the maildrop stays, unseen: fetchmail then reads with TOP
rather than RETR; a second run finds nothing new by UIDL), once without (the maildrop is empty
afterwards). The time of each download is printed; shared/peers.md has
Dovecot's 0.38 s for 100 messages.

fetchmail comes from Debian (``apt-get install fetchmail``). Without it the
test is skipped, unless ``CI`` is set: CI installs it, so there it must run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from relate.config import Config
from tests.protocol.pop3.helpers import ALICE, Pop3, crlf, make_message, pop3_config, start_world

FETCHMAIL = shutil.which("fetchmail") or ("/usr/bin/fetchmail" if Path("/usr/bin/fetchmail").exists() else None)
COUNT = 100
DOVECOT_SECONDS = 0.38  # shared/peers.md: fetchmail, 100 messages over POP3 from Dovecot

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        FETCHMAIL is None and not os.environ.get("CI"),
        reason="fetchmail is not installed (apt-get install fetchmail); under CI it is required",
    ),
]


def maildrop() -> list[bytes]:
    """100 messages of the kinds mail really comes in: plain, dot lines, 8-bit, bare LF, no final newline, long."""
    msgs = []
    for n in range(COUNT):
        kind = n % 5
        if kind == 0:
            raw = make_message(subject=f"plain {n}", body=f"Hello number {n}.\r\n" * (1 + n % 7))
        elif kind == 1:
            raw = make_message(subject=f"dots {n}", body=f".leading dot\r\n.\r\n..two\r\nend {n}\r\n")
        elif kind == 2:
            raw = make_message(subject=f"Grüße {n}", body=f"Größe {n}: 42 € — 日本語\r\n".encode() + b"\xe9\xff\r\n")
        elif kind == 3:
            raw = f"From: lf@remote.example\nTo: {ALICE}\nSubject: bare LF {n}\nMessage-ID: <lf-{n}@remote.example>\n\n"
            raw = (raw + f"line one of {n}\nline two\n").encode()
        else:
            raw = make_message(subject=f"long {n}", body="w" * (3000 + n) + f"\r\nno final newline {n}")
        msgs.append(raw)
    return msgs


def normalized(raw: bytes) -> bytes:
    return crlf(raw)


@pytest.fixture
def config(dsn: str, tmp_path: Path) -> Config:
    return pop3_config(dsn, tmp_path)


@pytest.fixture
async def pop3(pool: asyncpg.Pool, config: Config) -> AsyncIterator[Pop3]:
    world = await start_world(pool, config)
    yield world
    await world.server.stop(grace=2)


class Fetchmail:
    """One fetchmail setup in a temp dir: rc file, id file, MDA, output directory."""

    def __init__(self, root: Path, pop3: Pop3, *, keep: bool, tls: bool = True) -> None:
        assert FETCHMAIL is not None, "fetchmail is required under CI: apt-get install fetchmail"
        self.root = root
        self.out = root / "out"
        self.out.mkdir(parents=True)
        self.rc = root / "fetchmailrc"
        assert pop3.cfg.tls.cert is not None
        if tls:  # pop3s, the certificate checked against the test's self-signed one
            port = pop3.pop3s
            security = f'ssl sslcertck sslcertfile "{pop3.cfg.tls.cert}" sslcommonname "mail.example.com"'
        else:  # plain text on loopback, STLS not tried (as in shared/peers.md's Dovecot measurement)
            port = pop3.pop3
            security = "sslproto ''"
        self.rc.write_text(
            "set no syslog\n"
            "set invisible\n"  # no Received: header of fetchmail's own
            f"poll 127.0.0.1 service {port} protocol POP3 uidl auth password timeout 30\n"
            f'  user "{ALICE}" there with password "{pop3.alice_key}" is "root" here\n'
            f"  {security}\n"
            f"  {'keep' if keep else 'no keep'} no rewrite no mimedecode\n"
            # The MDA of shared/peers.md's Dovecot measurement (sh + cat per message), one file per message.
            f"  mda \"/bin/sh -c 'cat > {self.out}/msg.$$'\"\n"
        )
        self.rc.chmod(stat.S_IRUSR | stat.S_IWUSR)  # fetchmail refuses an rc file others can read

    async def run(self) -> tuple[int, float, str]:
        """(exit code, seconds, verbose output) of one ``fetchmail`` run."""
        env = {**os.environ, "HOME": str(self.root), "FETCHMAILHOME": str(self.root), "LC_ALL": "C.UTF-8"}
        assert FETCHMAIL is not None
        start = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            FETCHMAIL,
            *("-f", str(self.rc), "--idfile", str(self.root / "fetchids"), "--pidfile", str(self.root / "pid")),
            "-v",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        return proc.returncode or 0, time.perf_counter() - start, out.decode(errors="replace")

    def received(self) -> list[bytes]:
        return [p.read_bytes() for p in self.out.iterdir()]


def commands(log: str) -> list[str]:
    """The commands fetchmail sent, from its verbose output."""
    return [line.split("POP3> ", 1)[1] for line in log.splitlines() if "POP3> " in line]


def compare(delivered: list[bytes], received: list[bytes], log: str) -> None:
    """Every delivered message arrived exactly once, identical after CRLF normalization."""
    assert len(received) == len(delivered), f"{len(received)} of {len(delivered)} messages arrived\n{log[-3000:]}"
    got = {normalized(m) for m in received}
    assert len(got) == COUNT, "a message arrived twice"
    for n, want in enumerate(delivered, 1):
        assert normalized(want) in got, f"message {n} did not arrive intact:\n{want[:300]!r}"


async def deliver_all(pop3: Pop3) -> list[bytes]:
    msgs = maildrop()
    for raw in msgs:
        await pop3.deliver(ALICE, raw)
    return msgs


async def test_fetchmail_keep(pop3: Pop3, tmp_path: Path) -> None:
    """fetchmail with keep downloads all 100 messages over pop3s, leaves them, and finds nothing new next time."""
    delivered = await deliver_all(pop3)
    fetchmail = Fetchmail(tmp_path / "keep", pop3, keep=True)
    code, seconds, log = await fetchmail.run()
    assert code == 0, log[-3000:]
    assert "SSL/TLS: using protocol TLSv1." in log
    compare(delivered, fetchmail.received(), log)
    print(f"\nfetchmail, keep, pop3s: {COUNT} messages in {seconds:.2f} s (peers.md, Dovecot: {DOVECOT_SECONDS} s)")
    stored = await pop3.stored(ALICE)
    assert [m["raw"] for m in stored] == delivered
    # fetchmail reads with TOP n 99999999, which (unlike RETR) leaves messages unseen, and deletes nothing.
    sent = commands(log)
    assert "TOP 1 99999999" in sent
    assert not [c for c in sent if c.startswith(("DELE", "RETR"))]
    assert all("\\Seen" not in m["flags"] for m in stored)
    # UIDL is stable: the second run knows every message by its unique id and fetches none.
    code, _, log = await fetchmail.run()
    assert code == 1, f"expected exit 1 (no new mail)\n{log[-3000:]}"
    assert not [c for c in commands(log) if c.startswith(("TOP", "RETR"))]
    assert len(fetchmail.received()) == COUNT


@pytest.mark.parametrize("tls", [True, False], ids=["pop3s", "plaintext"])
async def test_fetchmail_no_keep(pop3: Pop3, tmp_path: Path, tls: bool) -> None:
    """fetchmail without keep downloads all 100 messages intact and the maildrop is empty afterwards."""
    pop3.cfg.pop3.allow_plaintext_auth = not tls
    delivered = await deliver_all(pop3)
    fetchmail = Fetchmail(tmp_path / "flush", pop3, keep=False, tls=tls)
    code, seconds, log = await fetchmail.run()
    assert code == 0, log[-3000:]
    assert ("SSL/TLS: using protocol TLSv1." in log) is tls
    compare(delivered, fetchmail.received(), log)
    print(
        f"\nfetchmail, no keep, {'pop3s' if tls else 'plain POP3'}: {COUNT} messages downloaded and deleted "
        f"in {seconds:.2f} s (peers.md, Dovecot, plain POP3, keep: {DOVECOT_SECONDS} s)"
    )
    assert sum(1 for c in commands(log) if c.startswith("DELE ")) == COUNT
    assert await pop3.stored(ALICE) == []
    code, _, log = await fetchmail.run()
    assert code == 1, f"expected exit 1 (no mail)\n{log[-3000:]}"
