"""isync's mbsync, a real IMAP client, syncing a Relate mailbox both ways over implicit TLS.

One test walks a mailbox through the life mbsync gives it: a first full
sync of ~100 messages in INBOX and two folders, local changes pushed up
(flags, deletions, a move, a new message, a new folder), server changes
pulled down (flags, expunges, a move, new deliveries), and a last sync that
must find nothing to do. After every sync both sides must hold the same
messages, byte for byte, with the same flags.

mbsync keeps messages in the Maildir with LF line ends (its Maildir format;
it converts CRLF on the way down and back on the way up), and it appends its
own ``X-TUID:`` field to the header of each message it copies, either way
(its marker for finding a copy again after a crash). So "byte for byte"
compares the server's octets, CRLF turned into LF, with the file's octets,
both less that one last header line.

Needs Debian's isync (``scripts/test-deps``). Without it the tests are skipped,
except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import imaplib
import os
import pty
import random
import re
import select
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from relate.auth import Authenticator
from relate.config import Config, ListenerConfig
from relate.imap.server import ImapServer
from relate.runtime.tls import make_self_signed
from relate.services import accounts
from relate.store import mailboxes, messages

USER = "alice@example.com"
FOLDERS = {"INBOX": 45, "Work": 35, "Work/Reports": 20}  # 100 messages
MBSYNC_TIMEOUT = 120.0
# Maildir info flags (https://cr.yp.to/proto/maildir.html) as IMAP system flags.
MAILDIR_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}
_COUNTERS = re.compile(
    r"C: (\d+)/(\d+)  B: (\d+)/(\d+)  "
    r"F: \+(\d+)/(\d+) \*(\d+)/(\d+) #(\d+)/(\d+)  N: \+(\d+)/(\d+) \*(\d+)/(\d+) #(\d+)/(\d+)"
)
_MESSAGE_ID = re.compile(rb"^Message-ID: *(<[^>]+>)", re.IGNORECASE | re.MULTILINE)

# folder -> Message-ID -> (flags, the message with LF line ends)
State = dict[str, dict[str, tuple[frozenset[str], bytes]]]


@pytest.fixture
def mbsync() -> str:
    """The mbsync binary; the test skips without it, or fails under CI."""
    path = shutil.which("mbsync")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("mbsync is not installed; under CI it must be: run scripts/test-deps as root")
        pytest.skip("mbsync (Debian package isync) is not installed: run scripts/test-deps as root")
    return path


# -- the messages ----------------------------------------------------------------------------------------


def _message(rng: random.Random, n: int, folder: str) -> tuple[bytes, list[str], datetime]:
    """A deterministic, varied message: plain, multipart with an attachment, 8-bit UTF-8, one large."""
    when = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=7 * n, seconds=n)
    subject = rng.choice(["Status", "Re: Lunch", "Rechnung Nr. %d", "Ünïcödé ✓ %d", "Report %d"])
    subject = subject % n if "%d" in subject else f"{subject} {n}"
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "élan", "ğüş", "日本"]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 14))) for _ in range(rng.randint(1, 60))]
    if n == 7:
        lines = ["x" * 76] * 4000  # ~300 KB: more than one read, more than one pipe buffer
    head = (
        f"Date: {when.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n"
        f"From: Sender {n} <sender{n}@example.org>\r\n"
        f"To: Alice <{USER}>\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <m{n}.{folder.replace('/', '-')}@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
    )
    text = "\r\n".join(lines) + "\r\n"
    if n % 9 == 4:
        payload = rng.randbytes(rng.randint(500, 20000))
        b64 = base64.encodebytes(payload).decode().replace("\n", "\r\n")
        body = (
            'Content-Type: multipart/mixed; boundary="=b"\r\n\r\n'
            "--=b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            f'{text}--=b\r\nContent-Type: application/octet-stream; name="data{n}.bin"\r\n'
            f"Content-Transfer-Encoding: base64\r\n\r\n{b64}--=b--\r\n"
        )
    else:
        body = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + text
    flags = [f for f, p in (("\\Seen", 0.6), ("\\Flagged", 0.15), ("\\Answered", 0.2)) if rng.random() < p]
    return (head + body).encode(), flags, when


async def _deliver(pool: asyncpg.Pool, user_id: int, folder: str, raw: bytes, flags: list[str]) -> None:
    box = await mailboxes.get(pool, user_id, folder)
    assert box is not None
    async with pool.acquire() as conn:
        await messages.ingest(conn, raw, [box["id"]], flags=flags)


# -- the two sides' states -------------------------------------------------------------------------------


async def server_state(pool: asyncpg.Pool) -> State:
    """Every folder of alice's and its messages, from the database."""
    rows = await pool.fetch(
        """SELECT x.name, m.flags, b.data FROM mailboxes x JOIN users u ON u.id = x.user_id
             LEFT JOIN messages m ON m.mailbox_id = x.id LEFT JOIN blobs b ON b.hash = m.blob_hash
            WHERE u.address = $1 ORDER BY x.name, m.uid""",
        USER,
    )
    state: State = {}
    for r in rows:
        folder = state.setdefault(r["name"], {})
        if r["data"] is not None:
            raw = bytes(r["data"])
            folder[_message_id(raw)] = (frozenset(r["flags"]), _without_tuid(raw.replace(b"\r\n", b"\n")))
    return state


async def server_raw(pool: asyncpg.Pool, folder: str, message_id: str) -> bytes:
    """The stored octets of one message."""
    rows = await pool.fetch(
        """SELECT b.data FROM messages m JOIN blobs b ON b.hash = m.blob_hash JOIN mailboxes x ON x.id = m.mailbox_id
             JOIN users u ON u.id = x.user_id WHERE u.address = $1 AND x.name = $2""",
        USER,
        folder,
    )
    found = [bytes(r["data"]) for r in rows if _message_id(bytes(r["data"])) == message_id]
    assert len(found) == 1, f"{message_id} is in {folder} on the server {len(found)} times"
    return found[0]


async def server_snapshot(pool: asyncpg.Pool) -> list[tuple[object, ...]]:
    """What clients can see of every folder: UIDVALIDITY, UIDNEXT, and each message's UID, flags and modseq."""
    rows = await pool.fetch(
        """SELECT x.name, x.uidvalidity, x.uidnext, m.uid, m.flags, m.modseq
             FROM mailboxes x JOIN users u ON u.id = x.user_id LEFT JOIN messages m ON m.mailbox_id = x.id
            WHERE u.address = $1 ORDER BY x.name, m.uid""",
        USER,
    )
    return [tuple(r) for r in rows]


async def highest_modseqs(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT x.name, x.highestmodseq FROM mailboxes x JOIN users u ON u.id = x.user_id WHERE u.address = $1",
        USER,
    )
    return {r["name"]: r["highestmodseq"] for r in rows}


def changes(old: State, new: State) -> tuple[int, int, int]:
    """(messages added, messages whose flags changed, messages gone) from ``old`` to ``new``, over all folders."""
    added = changed = gone = 0
    for folder in old.keys() | new.keys():
        a, b = old.get(folder, {}), new.get(folder, {})
        added += len(b.keys() - a.keys())
        gone += len(a.keys() - b.keys())
        changed += sum(1 for mid in a.keys() & b.keys() if a[mid][0] != b[mid][0])
    return added, changed, gone


_TUID = re.compile(rb"\nX-TUID: [A-Za-z0-9+/]{12}\n\n")


def _without_tuid(data: bytes) -> bytes:
    """The file's message without the X-TUID field mbsync added as the header's last line, if it did."""
    head_end = data.find(b"\n\n")
    m = _TUID.match(data, head_end - len(b"\nX-TUID: ") - 12) if head_end > 0 else None
    return data[: m.start()] + b"\n\n" + data[m.end() :] if m else data


def _message_id(raw: bytes) -> str:
    m = _MESSAGE_ID.search(raw)
    assert m is not None, raw[:200]
    return m.group(1).decode()


def _maildirs(root: Path) -> Iterator[tuple[str, Path]]:
    for cur in sorted(root.rglob("cur")):
        folder = cur.parent.relative_to(root).as_posix()
        yield folder, cur.parent


def _info_flags(name: str) -> frozenset[str]:
    info = name.rpartition(":2,")[2] if ":2," in name else ""
    return frozenset(MAILDIR_FLAGS[c] for c in info if c in MAILDIR_FLAGS)


def maildir_state(root: Path) -> State:
    """Every Maildir folder under ``root`` and its messages."""
    state: State = {}
    for folder, path in _maildirs(root):
        box = state.setdefault(folder, {})
        for sub in ("cur", "new"):
            for f in sorted((path / sub).iterdir()):
                data = _without_tuid(f.read_bytes())
                box[_message_id(data)] = (_info_flags(f.name), data)
    return state


def maildir_snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (sync state included) by relative path, for "nothing changed" checks."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def find_file(root: Path, folder: str, message_id: str) -> Path:
    for sub in ("cur", "new"):
        for f in (root / folder / sub).iterdir():
            if _message_id(f.read_bytes()) == message_id:
                return f
    raise AssertionError(f"{message_id} is not in the Maildir folder {folder}")


def set_local_flags(path: Path, flags: str) -> Path:
    """Rename a Maildir file to carry exactly ``flags`` (letters), moving it to cur/ as a reader would."""
    base = path.name.split(":2,")[0]
    target = path.parent.parent / "cur" / f"{base}:2,{''.join(sorted(flags))}"
    path.rename(target)
    return target


def assert_same(local: State, remote: State) -> None:
    assert sorted(local) == sorted(remote), "folders differ"
    for folder in remote:
        assert sorted(local[folder]) == sorted(remote[folder]), f"messages differ in {folder}"
        for mid, (flags, data) in remote[folder].items():
            lflags, ldata = local[folder][mid]
            assert lflags == flags, f"{folder} {mid}: flags {sorted(lflags)} locally, {sorted(flags)} on the server"
            assert ldata == data, f"{folder} {mid}: the octets differ"


# -- running mbsync ----------------------------------------------------------------------------------------


@dataclass
class Sync:
    """One mbsync run: its wall time and its final progress counters for each side.

    The counters are mbsync's ``+`` (messages added), ``*`` (messages whose
    flags it changed; a message it deletes counts here, as it is flagged
    deleted first) and ``#`` (messages moved to a Trash store; none here).
    """

    seconds: float
    far: tuple[int, int, int]  # on the server
    near: tuple[int, int, int]  # in the Maildir
    output: str


def _run_mbsync(mbsync: str, rc: Path) -> Sync:
    """Run ``mbsync -a`` with stdout on a pty, so it prints its progress counters; blocking (call in a thread)."""
    master, slave = pty.openpty()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [mbsync, "-c", str(rc), "-a"], stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.STDOUT
    )
    os.close(slave)
    out = bytearray()
    deadline = started + MBSYNC_TIMEOUT
    try:
        while time.perf_counter() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            out += data
        status = proc.wait(timeout=max(1.0, deadline - time.perf_counter()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(
            f"mbsync did not finish in {MBSYNC_TIMEOUT:g} s:\n{out.decode(errors='replace')}"
        ) from None
    finally:
        os.close(master)
    seconds = time.perf_counter() - started
    text = out.decode("utf-8", "replace")
    assert status == 0, f"mbsync exited with {status}:\n{text}"
    counters = _COUNTERS.findall(text)
    assert counters, f"no progress counters in mbsync's output:\n{text}"
    last = [int(v) for v in counters[-1]]
    assert (last[0], last[2]) == (last[1], last[3]), f"mbsync did not finish every channel and box:\n{text}"
    done = last[4::2]  # far +, *, #, near +, *, #
    return Sync(seconds, (done[0], done[1], done[2]), (done[3], done[4], done[5]), text)


def _unsettled_for(root: Path) -> float:
    """How long until nothing in the Maildir will have changed for a second.

    mbsync sleeps a second before it touches a folder modified that recently
    (its guard against same-second Maildir races); timings should not include that.
    """
    newest = max((p.stat().st_mtime for p in root.rglob("*")), default=0.0)
    return max(0.0, newest + 1.05 - time.time())


# -- the daemon ---------------------------------------------------------------------------------------------


@dataclass
class Relate:
    server: ImapServer
    pool: asyncpg.Pool
    port: int
    key: str
    user_id: int
    cert: Path

    def imap(self) -> imaplib.IMAP4_SSL:
        """An imaplib client over verified TLS (the certificate names 127.0.0.1), logged in as alice."""
        ctx = ssl.create_default_context(cafile=str(self.cert))
        client = imaplib.IMAP4_SSL("127.0.0.1", self.port, ssl_context=ctx, timeout=30)
        client.login(USER, self.key)
        return client


@pytest.fixture
async def relate(pool: asyncpg.Pool, dsn: str, tmp_path: Path) -> AsyncIterator[Relate]:
    """The IMAP daemon, implicit TLS only on a loopback ephemeral port, alice with ~100 messages."""
    cert, tls_key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    make_self_signed(cert, tls_key, "mail.example.com")
    cfg = Config(hostname="mail.example.com")
    cfg.database.dsn = dsn
    cfg.tls.cert, cfg.tls.key = cert, tls_key
    cfg.auth.bcrypt_rounds = 4
    cfg.imap.imap = ListenerConfig(listen=[])
    cfg.imap.imaps = ListenerConfig(listen=["127.0.0.1:0"])
    await accounts.add_domain(pool, "example.com")
    user = await accounts.add_user(pool, USER, "Alice")
    key, _ = await accounts.create_key(pool, USER, "mbsync", "imap", rounds=4)
    for folder in FOLDERS:
        if folder != "INBOX":
            await mailboxes.create(pool, user["id"], folder)
    rng = random.Random(20260322)
    n = 0
    for folder, count in FOLDERS.items():
        for _ in range(count):
            n += 1
            raw, flags, when = _message(rng, n, folder)
            box = await mailboxes.get(pool, user["id"], folder)
            assert box is not None
            async with pool.acquire() as conn:
                await messages.ingest(conn, raw, [box["id"]], flags=flags, internal_date=when)
    server = ImapServer(cfg, pool, Authenticator(pool, cfg.auth))
    await server.start()
    try:
        yield Relate(server, pool, server.addresses("imaps")[0][1], key, user["id"], cert)
    finally:
        await server.stop(grace=1)


def _mbsyncrc(tmp_path: Path, relate: Relate) -> Path:
    maildir = tmp_path / "maildir"
    maildir.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(
        f"""# isync 1.4 (Debian 12): SSLType, not 1.5's TLSType.
IMAPAccount relate
Host 127.0.0.1
Port {relate.port}
User {USER}
PassCmd "cat {tmp_path / "pass"}"
SSLType IMAPS
CertificateFile {relate.cert}
SystemCertificates no
AuthMechs PLAIN
PipelineDepth 50

IMAPStore relate-remote
Account relate

MaildirStore local
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel relate
Far :relate-remote:
Near :local:
Patterns *
Create Both
Remove None
Expunge Both
SyncState *
CopyArrivalDate yes
"""
    )
    (tmp_path / "pass").write_text(relate.key)
    return rc


# -- the test -------------------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_mbsync_two_way_sync(
    mbsync: str, relate: Relate, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """mbsync syncs ~100 messages in three folders both ways: contents, flags, deletions, moves, new mail."""
    rc = _mbsyncrc(tmp_path, relate)
    root = tmp_path / "maildir"
    timings: list[tuple[str, float]] = []

    async def sync(label: str) -> Sync:
        await asyncio.sleep(_unsettled_for(root))
        result = await asyncio.to_thread(_run_mbsync, mbsync, rc)
        timings.append((label, result.seconds))
        return result

    # 1. The first sync pulls everything down, byte for byte, flags included.
    first = await sync("first full sync (100 messages, 8 folders)")
    remote = await server_state(relate.pool)
    assert sum(len(v) for v in remote.values()) == 100
    assert first.near == (100, 0, 0), first.output
    assert first.far == (0, 0, 0), first.output
    assert_same(maildir_state(root), remote)

    # 2. Local changes: flags, deletions, a move between folders, a new message, a new folder.
    inbox = maildir_state(root)["INBOX"]
    unseen = sorted(mid for mid, (flags, _) in inbox.items() if "\\Seen" not in flags)
    seen = sorted(mid for mid, (flags, _) in inbox.items() if "\\Seen" in flags and "\\Flagged" not in flags)
    for mid in unseen[:5]:
        set_local_flags(find_file(root, "INBOX", mid), "S")
    for mid in seen[:3]:
        set_local_flags(find_file(root, "INBOX", mid), "FS")
    set_local_flags(find_file(root, "INBOX", seen[3]), "")  # marked unread again
    deleted_local = [seen[4], seen[5]]
    for mid in deleted_local:
        find_file(root, "INBOX", mid).unlink()
    work_victim = sorted(maildir_state(root)["Work"])[0]
    find_file(root, "Work", work_victim).unlink()
    moved = unseen[5]
    src = find_file(root, "INBOX", moved)
    # A mail reader moves a file and drops mbsync's ",U=<uid>" (it belongs to the old folder).
    src.rename(root / "Work/Reports/cur" / (re.sub(r",U=\d+", "", src.name.split(":2,")[0]) + ":2,S"))
    new_local = (
        b"From: Alice <alice@example.com>\nTo: Bob <bob@example.com>\nSubject: written offline\n"
        b"Message-ID: <offline-1@example.com>\n\nDrafted on the train.\n"
    )
    (root / "Work/new/1700000000.offline1.host").write_bytes(new_local)
    notes = root / "Notes"
    for sub in ("cur", "new", "tmp"):
        (notes / sub).mkdir(parents=True)
    note = b"From: Alice <alice@example.com>\nSubject: a note\nMessage-ID: <note-1@example.com>\n\nRemember.\n"
    (notes / "cur/1700000001.note1.host:2,S").write_bytes(note)

    second = await sync("local changes pushed (9 flag changes, 3 deletions, 1 move, 2 new)")
    # 3 uploads; 5 + 3 + 1 flag changes, and 4 messages marked deleted, then expunged (2 + 1 deletions, the move).
    assert second.far == (3, 13, 0), second.output
    assert second.near == (0, 0, 0), second.output
    remote = await server_state(relate.pool)
    assert_same(maildir_state(root), remote)
    assert moved in remote["Work/Reports"]
    assert moved not in remote["INBOX"]
    for mid in deleted_local:
        assert mid not in remote["INBOX"]
    assert remote["Notes"]["<note-1@example.com>"][0] == frozenset({"\\Seen"})
    # Uploads reach the server as the file's octets with CRLF line ends (and mbsync's X-TUID), stored as sent.
    for folder, mid, local in (("Work", "<offline-1@example.com>", new_local), ("Notes", "<note-1@example.com>", note)):
        raw = await server_raw(relate.pool, folder, mid)
        assert b"\n" not in raw.replace(b"\r\n", b""), "a bare LF on the server"
        assert _without_tuid(raw.replace(b"\r\n", b"\n")) == local

    # 3. Server-side changes through another client: flags, an expunge, a move, new deliveries.
    def server_side_changes() -> None:
        client = relate.imap()
        try:
            assert client.select("INBOX")[0] == "OK"
            assert client.store("1:3", "+FLAGS", "(\\Flagged)")[0] == "OK"
            assert client.store("4", "-FLAGS", "(\\Seen)")[0] == "OK"
            assert client.store("5,6", "+FLAGS", "(\\Deleted)")[0] == "OK"
            assert client.expunge()[0] == "OK"
            assert client.select("Work/Reports")[0] == "OK"
            _, data = client.uid("SEARCH", "ALL")
            first_uid = data[0].split()[0].decode()
            assert client.uid("MOVE", first_uid, "Work")[0] == "OK"
            client.logout()
        finally:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                client.shutdown()

    before = await server_state(relate.pool)
    await asyncio.to_thread(server_side_changes)
    rng = random.Random(7)
    for n in range(201, 204):
        raw, flags, _ = _message(rng, n, "INBOX")
        await _deliver(relate.pool, relate.user_id, "INBOX", raw, flags)
    after = await server_state(relate.pool)
    added, changed, gone = changes(before, after)
    assert (added, gone) == (4, 3)  # 3 deliveries and the move's copy; 2 expunged and the move's original
    assert changed >= 1

    third = await sync("server changes pulled (flags, 2 expunges, 1 move, 3 new)")
    # mbsync counts a message it removes as a flag change (it marks it deleted, then expunges).
    assert third.near == (added, changed + gone, 0), third.output
    assert third.far == (0, 0, 0), third.output
    assert_same(maildir_state(root), await server_state(relate.pool))

    # 4. Nothing changed anywhere: mbsync finds nothing to do, and neither side is touched.
    files, seen_by_clients = maildir_snapshot(root), await server_snapshot(relate.pool)
    last = await sync("no-op sync")
    assert (last.far, last.near) == ((0, 0, 0), (0, 0, 0)), last.output
    assert maildir_snapshot(root) == files
    assert await server_snapshot(relate.pool) == seen_by_clients

    with capsys.disabled():
        print("\nmbsync against Relate (peers.md: Dovecot, 100 messages in 3 folders, full sync 0.09 s):")
        for label, seconds in timings:
            print(f"  {label}: {seconds:.3f} s")


async def test_mbsync_noop_sync_leaves_highestmodseq(mbsync: str, relate: Relate, tmp_path: Path) -> None:
    """A sync that changes nothing leaves every folder's HIGHESTMODSEQ where it was (mbsync CLOSEs each folder)."""
    rc = _mbsyncrc(tmp_path, relate)
    await asyncio.to_thread(_run_mbsync, mbsync, rc)
    before = await highest_modseqs(relate.pool)
    again = await asyncio.to_thread(_run_mbsync, mbsync, rc)
    assert (again.far, again.near) == ((0, 0, 0), (0, 0, 0)), again.output
    assert await highest_modseqs(relate.pool) == before
