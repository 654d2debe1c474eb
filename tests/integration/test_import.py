"""relatectl import against a real Dovecot: its live IMAP account, and the Maildir it wrote.

Each test starts its own throwaway Dovecot 2.3 (relate.testing.dovecot: IMAP
on a loopback port chosen by binding port 0, hierarchy delimiter ``.``, a
``Sent Items`` folder marked \\Sent) and fills it over IMAP, so the Maildir
on disk (file names with flags, ``dovecot-keywords``, ``dovecot-uidlist``,
modified UTF-7 folder names) is Dovecot's own. ``relatectl import`` runs as
the admin runs it (``python -m relatectl``), and what it stored is read
back over Relate's own IMAP (the daemon on this test's event loop) and
compared with what Dovecot serves for the same folder: every message's
BODY[] byte for byte, its flags (keywords too) and its INTERNALDATE.

Needs Debian's dovecot-imapd (``scripts/test-deps``) and root (Dovecot's
master process); without them the tests are skipped, except under CI.
"""

from __future__ import annotations

import asyncio
import base64
import imaplib
import json
import random
import re
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from relate.auth import Authenticator
from relate.config import Config, ListenerConfig
from relate.errors import RelateError
from relate.imap.server import ImapServer
from relate.importing.imap import ImapSource, SourceError
from relate.mail import mutf7
from relate.services import accounts, imports
from relate.testing.dovecot import PASSWORD, ThrowawayDovecot, Unavailable
from tests.daemons import ON_CI, clean_env, write_config

USER = "alice@example.com"
SOURCE = "olduser"
# Dovecot folder (delimiter ".") -> how many messages it gets
FOLDERS = {"INBOX": 24, "Work": 8, "Work.Reports": 6, "Sent Items": 5, "&AMk-t&AOk-": 3, "Trash": 2}
# ... and the folder of ours each lands in (Sent Items is \Sent: our Sent; Été is modified UTF-7 on the wire)
OURS = {"INBOX": "INBOX", "Work": "Work", "Work.Reports": "Work/Reports", "Sent Items": "Sent", "&AMk-t&AOk-": "Été"}
OURS["Trash"] = "Trash"
KEYWORDS = ["$Forwarded", "$Label1", "Junk", "NonJunk"]
_FETCH = re.compile(rb"UID (\d+)|FLAGS \(([^)]*)\)|INTERNALDATE \"([^\"]+)\"")


# -- Dovecot ---------------------------------------------------------------------------------------------


async def start_dovecot(**options: Any) -> ThrowawayDovecot:
    """A throwaway Dovecot on a loopback port; the test is skipped (failed under CI) where it cannot run."""
    try:
        server = ThrowawayDovecot(separator=".", sent="Sent Items", **options)
        await asyncio.to_thread(server.start)
    except Unavailable as exc:
        if ON_CI:
            pytest.fail(f"Dovecot is needed under CI: {exc}")
        pytest.skip(f"no Dovecot to import from: {exc}")
    return server


@pytest.fixture
async def dovecot() -> AsyncIterator[ThrowawayDovecot]:
    """A throwaway Dovecot (:func:`start_dovecot`), stopped after the test."""
    server = await start_dovecot()
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


def _message(rng: random.Random, n: int, folder: str) -> bytes:
    """A varied message: plain, 8-bit UTF-8, multipart with an attachment, a body line "From ", one large."""
    when = datetime(2025, 3, 1, tzinfo=UTC) + timedelta(hours=5 * n)
    words = ["alpha", "bravo", "Grüße", "日本語", "From here on", "charlie", ">From quoted", "delta"]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(rng.randint(1, 40))]
    if n == 3:
        lines = ["y" * 76] * 4500  # ~340 KB: streamed to the blob table, parsed off the loop
    lines.insert(0, "From the start of a line")
    head = (
        f"Date: {when.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n"
        f"From: Sender {n} <s{n}@example.org>\r\nTo: <{USER}>\r\n"
        f"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= {n} in {folder}\r\n"
        f"Message-ID: <{n}.{abs(hash(folder)) % 1000}@example.org>\r\nMIME-Version: 1.0\r\n"
    )
    text = "\r\n".join(lines) + "\r\n"
    if n % 5 == 1:
        blob = base64.encodebytes(rng.randbytes(3000)).decode().replace("\n", "\r\n")
        body = (
            'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\n'
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            f"{text}--b1\r\nContent-Type: application/pdf; name=x{n}.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            f"{blob}--b1--\r\n"
        )
    else:
        body = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + text
    return (head + body).encode()


def _flags(rng: random.Random, folder: str) -> list[str]:
    chosen = [
        f for f, p in (("\\Seen", 0.6), ("\\Answered", 0.2), ("\\Flagged", 0.2), ("\\Draft", 0.05)) if rng.random() < p
    ]
    chosen += [k for k in KEYWORDS if rng.random() < 0.2]
    if folder == "Trash":
        chosen.append("\\Deleted")
    return chosen


def _login(dovecot: ThrowawayDovecot, user: str = SOURCE) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", dovecot.port, timeout=30)
    client.login(user, PASSWORD)
    return client


def fill(dovecot: ThrowawayDovecot, folders: dict[str, int], *, seed: int = 16, start: int = 0) -> int:
    """APPEND messages to Dovecot (which writes its Maildir); returns how many."""
    rng = random.Random(seed)
    client = _login(dovecot)
    count = 0
    try:
        for folder, number in folders.items():
            client.create(f'"{folder}"')  # NO when it exists (INBOX, the auto folders): fine
            for _ in range(number):
                n = start + count
                when = datetime(2025, 3, 1, 8, 30, tzinfo=UTC) + timedelta(days=n, seconds=n)
                flags = "(" + " ".join(_flags(rng, folder)) + ")"
                typ, data = client.append(
                    f'"{folder}"', flags, imaplib.Time2Internaldate(when), _message(rng, n, folder)
                )
                assert typ == "OK", data
                count += 1
    finally:
        client.logout()
    return count


# -- both sides, read over IMAP --------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One message as an IMAP client sees it."""

    body: bytes
    flags: frozenset[str]
    date: datetime


def read_folder(client: imaplib.IMAP4, folder: str) -> list[Seen]:
    """Every message of ``folder`` (its name as the server spells it), in UID order."""
    typ, data = client.select(f'"{folder}"', readonly=True)
    assert typ == "OK", (folder, data)
    if int(data[0] or 0) == 0:
        return []
    typ, data = client.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE BODY.PEEK[])")
    assert typ == "OK", data
    found: list[tuple[int, Seen]] = []
    for item in data:
        if not isinstance(item, tuple):
            continue
        uid, flags, date = 0, frozenset[str](), datetime.min
        for m in _FETCH.finditer(item[0]):
            if m.group(1):
                uid = int(m.group(1))
            elif m.group(2) is not None:
                flags = frozenset(f for f in m.group(2).decode().split() if f != "\\Recent")
            else:
                date = datetime.strptime(m.group(3).decode(), "%d-%b-%Y %H:%M:%S %z")
        found.append((uid, Seen(item[1], flags, date)))
    return [s for _, s in sorted(found, key=lambda p: p[0])]


def dovecot_state(dovecot: ThrowawayDovecot) -> dict[str, list[Seen]]:
    """What Dovecot serves, by the name of our folder each one should land in."""
    client = _login(dovecot)
    try:
        return {OURS[folder]: read_folder(client, folder) for folder in FOLDERS}
    finally:
        client.logout()


@dataclass
class Relate:
    server: ImapServer
    pool: asyncpg.Pool
    port: int
    key: str
    config: Path

    def state(self, folders: list[str]) -> dict[str, list[Seen]]:
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=30)
        client.login(USER, self.key)
        try:
            return {name: read_folder(client, mutf7.encode(name)) for name in folders}
        finally:
            client.logout()

    async def count(self) -> dict[str, int]:
        rows = await self.pool.fetch(
            """SELECT x.name, count(m.id) AS n FROM mailboxes x JOIN users u ON u.id = x.user_id
                 LEFT JOIN messages m ON m.mailbox_id = x.id WHERE u.address = $1 GROUP BY x.name""",
            USER,
        )
        return {r["name"]: r["n"] for r in rows if r["n"]}


@pytest.fixture
async def relate(pool: asyncpg.Pool, dsn: str, tmp_path: Path) -> AsyncIterator[Relate]:
    """Relate's IMAP daemon (plain IMAP on a loopback ephemeral port) and alice, with no mail yet."""
    cfg = Config(hostname="mail.example.com")
    cfg.database.dsn = dsn
    cfg.auth.bcrypt_rounds = 4
    cfg.imap.imap = ListenerConfig(listen=["127.0.0.1:0"])
    cfg.imap.imaps = ListenerConfig(listen=[])
    cfg.imap.allow_plaintext_auth = True
    await accounts.add_domain(pool, "example.com")
    await accounts.add_user(pool, USER, "Alice")
    key, _ = await accounts.create_key(pool, USER, "imap", "imap", rounds=4)
    server = ImapServer(cfg, pool, Authenticator(pool, cfg.auth))
    await server.start()
    try:
        yield Relate(server, pool, server.addresses("imap")[0][1], key, write_config(tmp_path / "relate.yaml", dsn))
    finally:
        await server.stop(grace=1)


async def relatectl(config: Path, *args: str) -> tuple[int, str, str]:
    """``python -m relatectl --config CONFIG ARGS...``: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relatectl",
        "--config",
        str(config),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(COLUMNS="200", NO_COLOR="1"),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def import_imap(relate: Relate, dovecot: ThrowawayDovecot, tmp_path: Path, *extra: str) -> dict[str, Any]:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    code, out, err = await relatectl(
        relate.config,
        "import",
        "imap",
        "--host",
        "127.0.0.1",
        "--port",
        str(dovecot.port),
        "--plain",
        "--login",
        SOURCE,
        "--password-file",
        str(secret),
        "--user",
        USER,
        *extra,
    )
    assert code == 0, err
    return json.loads(out) if "--json" in extra else {"table": out}


def assert_same(ours: dict[str, list[Seen]], theirs: dict[str, list[Seen]]) -> None:
    assert sorted(ours) == sorted(theirs)
    for folder, messages in theirs.items():
        assert len(ours[folder]) == len(messages), f"{folder}: {len(ours[folder])} here, {len(messages)} there"
        for i, (mine, source) in enumerate(zip(ours[folder], messages, strict=True)):
            assert mine.body == source.body, f"{folder} #{i + 1}: BODY[] differs"
            assert mine.flags == source.flags, f"{folder} #{i + 1}: {sorted(mine.flags)} != {sorted(source.flags)}"
            assert mine.date == source.date, f"{folder} #{i + 1}: INTERNALDATE {mine.date} != {source.date}"


# -- the tests -------------------------------------------------------------------------------------------


async def test_imap_import_copies_every_folder_message_flag_and_date(
    relate: Relate, dovecot: ThrowawayDovecot, tmp_path: Path
) -> None:
    """A whole Dovecot account over IMAP: each folder lands in ours (delimiter mapped, Sent Items in Sent,
    modified UTF-7 decoded), each message byte-identical with its flags, keywords and INTERNALDATE; a second
    run imports nothing, and a third only what arrived since."""
    total = await asyncio.to_thread(fill, dovecot, FOLDERS)
    first = await import_imap(relate, dovecot, tmp_path, "--json")
    assert (first["imported"], first["already"], first["skipped"]) == (total, 0, 0)
    assert {f["name"]: f["imported"] for f in first["folders"] if f["imported"]} == {
        OURS[k]: v for k, v in FOLDERS.items()
    }
    theirs = await asyncio.to_thread(dovecot_state, dovecot)
    assert_same(await asyncio.to_thread(relate.state, list(theirs)), theirs)

    again = await import_imap(relate, dovecot, tmp_path, "--json")
    assert (again["imported"], again["already"]) == (0, total)
    assert sum((await relate.count()).values()) == total

    await asyncio.to_thread(fill, dovecot, {"INBOX": 2, "Work.Reports": 1}, seed=99, start=total)
    third = await import_imap(relate, dovecot, tmp_path, "--json")
    assert (third["imported"], third["already"]) == (3, total)
    counts = await relate.count()
    assert (counts["INBOX"], counts["Work/Reports"]) == (FOLDERS["INBOX"] + 2, FOLDERS["Work.Reports"] + 1)
    theirs = await asyncio.to_thread(dovecot_state, dovecot)
    assert_same(await asyncio.to_thread(relate.state, list(theirs)), theirs)


async def test_imap_import_goes_on_after_a_break_and_after_uidvalidity_changes(
    relate: Relate, dovecot: ThrowawayDovecot, tmp_path: Path
) -> None:
    """A connection lost mid-import keeps what was committed and the next run fetches only the rest; when the
    source folder is recreated (new UIDVALIDITY, new UIDs, same mail) nothing is imported twice."""
    total = await asyncio.to_thread(fill, dovecot, {"INBOX": 40, "Work": 10})
    source = await asyncio.to_thread(ImapSource, "127.0.0.1", dovecot.port, "plain")
    await asyncio.to_thread(source.login, SOURCE, PASSWORD)
    cfg = Config()

    def breaking(known: dict[str, Any]) -> Iterator[imports.Event]:
        """The source's events, until the line drops at the 25th message of INBOX (20 of them committed)."""
        folder, seen = "", 0
        for event in imports.imap_events(source, known):
            if isinstance(event, imports.FolderStart):
                folder = event.name
            elif folder == "INBOX":
                seen += 1
                if seen == 25:
                    raise SourceError("the IMAP server 127.0.0.1 broke off (UID FETCH): connection reset")
            yield event

    name = imports.imap_source_name("127.0.0.1", dovecot.port, SOURCE)
    with pytest.raises(RelateError, match="broke off"):
        await imports.run(relate.pool, cfg, USER, breaking, source=name, batch_size=10)
    await asyncio.to_thread(source.logout)
    before = await relate.count()
    assert before["INBOX"] == 20

    rest = await import_imap(relate, dovecot, tmp_path, "--json")
    inbox = next(f for f in rest["folders"] if f["name"] == "INBOX")
    assert (inbox["messages"], inbox["already"], inbox["imported"]) == (40, 20, 20)
    assert rest["imported"] == total - sum(before.values())
    assert await relate.count() == {"INBOX": 40, "Work": 10}

    # Work deleted and made again on the source with the same mail: a new UIDVALIDITY, UIDs from 1.
    def recreate() -> None:
        client = _login(dovecot)
        try:
            client.select('"Work"', readonly=True)
            _, data = client.uid("FETCH", "1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
            saved = [(item[0], item[1]) for item in data if isinstance(item, tuple)]
            client.close()
            assert client.delete('"Work"')[0] == "OK"
            client.create('"Work"')
            for head, body in saved:
                flags = re.search(rb"FLAGS (\([^)]*\))", head)
                date = re.search(rb'INTERNALDATE ("[^"]+")', head)
                assert flags is not None
                assert date is not None
                kept = flags.group(1).decode().replace("\\Recent", "").replace("( ", "(").replace(" )", ")")
                client.append('"Work"', kept, date.group(1).decode(), body)
        finally:
            client.logout()

    await asyncio.to_thread(recreate)
    after = await import_imap(relate, dovecot, tmp_path, "--json")
    work = next(f for f in after["folders"] if f["name"] == "Work")
    assert (work["imported"], work["already"]) == (0, 10)
    assert await relate.count() == {"INBOX": 40, "Work": 10}


async def test_maildir_written_by_dovecot_imports_like_its_imap(
    relate: Relate, dovecot: ThrowawayDovecot, tmp_path: Path
) -> None:
    """The Maildir Dovecot wrote, imported from disk: the same folders, BODY[] octets, flags (the keywords of
    dovecot-keywords too) and INTERNALDATEs as Dovecot's own IMAP serves; a second run imports nothing."""
    total = await asyncio.to_thread(fill, dovecot, FOLDERS)
    maildir = dovecot.maildir(SOURCE)
    assert (maildir / "dovecot-keywords").exists()  # INBOX's keywords, by number, as the file names carry them
    code, out, err = await relatectl(relate.config, "import", "maildir", str(maildir), "--user", USER, "--json")
    assert code == 0, err
    first = json.loads(out)
    assert (first["imported"], first["skipped"]) == (total, 0)
    theirs = await asyncio.to_thread(dovecot_state, dovecot)
    # On disk there is no special use: "Sent Items" keeps its name here.
    theirs["Sent Items"] = theirs.pop("Sent")
    assert_same(await asyncio.to_thread(relate.state, list(theirs)), theirs)

    code, out, err = await relatectl(relate.config, "import", "maildir", str(maildir), "--user", USER)
    assert code == 0, err
    assert "Already here" in out
    assert sum((await relate.count()).values()) == total


MBOX = b"""From alice@example.org Sat Jan  3 01:05:34 2026
Status: RO
X-Status: AF
X-Keywords: $Label2 Work
X-UID: 17
From: alice@example.org
Subject: first
Message-ID: <first@example.org>

Hello
>From the quoted line
>>From a line that had one > already
From? not a separator

From bob@example.org Sun Jan  4 10:00:00 2026
From: bob@example.org
Subject: second
Date: Sun, 4 Jan 2026 09:59:00 +0000

unread, unflagged

"""


async def test_mbox_import_unquotes_and_keeps_status_flags(relate: Relate, tmp_path: Path) -> None:
    """An mboxrd file: each message with one '>' taken off quoted From lines, Status/X-Status/X-Keywords as
    flags (and out of the message), the separator's date as INTERNALDATE; run again, nothing is added."""
    path = tmp_path / "Archive 2025.mbox"
    path.write_bytes(MBOX)
    code, out, err = await relatectl(relate.config, "import", "mbox", str(path), "--user", USER, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["imported"], result["folders"][0]["name"]) == (2, "Archive 2025")
    seen = (await asyncio.to_thread(relate.state, ["Archive 2025"]))["Archive 2025"]
    assert seen[0].body == (
        b"From: alice@example.org\r\nSubject: first\r\nMessage-ID: <first@example.org>\r\n\r\nHello\r\n"
        b"From the quoted line\r\n>From a line that had one > already\r\nFrom? not a separator\r\n"
    )
    assert seen[0].flags == {"\\Seen", "\\Answered", "\\Flagged", "$Label2", "Work"}
    assert seen[0].date == datetime(2026, 1, 3, 1, 5, 34, tzinfo=UTC)
    assert seen[1].body.endswith(b"\r\n\r\nunread, unflagged\r\n")
    assert seen[1].flags == frozenset()

    code, out, err = await relatectl(relate.config, "import", "mbox", str(path), "--user", USER, "--json")
    assert code == 0, err
    assert (json.loads(out)["imported"], json.loads(out)["already"]) == (0, 2)


async def test_import_errors_are_one_line(relate: Relate, dovecot: ThrowawayDovecot, tmp_path: Path) -> None:
    """A wrong password, an unreachable host, an unknown user, a path that is no Maildir: one line each, exit 1."""
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    common = ["--login", SOURCE, "--password-file", str(wrong), "--plain", "--host", "127.0.0.1"]
    code, _, err = await relatectl(relate.config, "import", "imap", *common, "--port", str(dovecot.port), "-u", USER)
    assert code == 1
    assert err.strip().startswith(f"error: the IMAP server 127.0.0.1:{dovecot.port} refused the login of olduser")
    assert len(err.strip().splitlines()) == 1

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connection refused
        code, _, err = await relatectl(relate.config, "import", "imap", *common, "--port", str(port), "-u", USER)
    assert (code, err.strip()) == (1, f"error: cannot reach the IMAP server 127.0.0.1:{port}: connection refused")

    code, _, err = await relatectl(relate.config, "import", "maildir", str(tmp_path), "-u", "nobody@example.com")
    assert code == 1
    assert err.strip().startswith("error: no such user: nobody@example.com")

    code, _, err = await relatectl(relate.config, "import", "maildir", str(tmp_path), "-u", USER)
    assert code == 1
    assert err.strip() == f"error: {tmp_path} is not a Maildir: no cur/ or new/ in it or in any .Folder beside them"
    assert await relate.count() == {}


async def test_a_full_mailbox_stops_the_import_and_a_second_run_goes_on(relate: Relate, tmp_path: Path) -> None:
    """Over quota: one line naming the user and the command to raise it, exit 1, nothing of the failed batch
    stored; with room made, the same command stores the rest, and only the rest."""
    path = tmp_path / "big.mbox"
    path.write_bytes(
        b"".join(b"From a@x Mon Jan  5 10:00:00 2026\nSubject: %d\n\nbody %d\n\n" % (i, i) for i in range(5))
    )
    await accounts.set_quota(relate.pool, USER, {"messages": 3})
    code, out, err = await relatectl(relate.config, "import", "mbox", str(path), "-u", USER, "-m", "INBOX")
    assert code == 1
    assert err.strip() == (
        f"error: {USER} is over quota (after 0 messages in INBOX): "
        f"raise it (relatectl user quota {USER} ...) and run the same import again"
    )
    assert await relate.count() == {}
    await accounts.set_quota(relate.pool, USER, {"messages": None})
    code, out, err = await relatectl(relate.config, "import", "mbox", str(path), "-u", USER, "-m", "INBOX", "--json")
    assert code == 0, err
    assert json.loads(out)["imported"] == 5
    assert await relate.count() == {"INBOX": 5}


async def test_a_client_in_idle_hears_of_imported_mail(relate: Relate, tmp_path: Path) -> None:
    """Imported mail is announced like delivered mail: an IMAP client idling in INBOX gets EXISTS for it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", relate.port)
    try:
        await reader.readline()
        writer.write(f'a LOGIN {USER} "{relate.key}"\r\nb SELECT INBOX\r\nc IDLE\r\n'.encode())
        while not (await asyncio.wait_for(reader.readline(), 30)).startswith(b"+ "):
            pass
        path = tmp_path / "inbox"
        path.write_bytes(
            b"From a@x Mon Jan  5 10:00:00 2026\nSubject: 1\n\none\n\nFrom b@x Mon Jan  5 10:00:00 2026\n\n2\n"
        )
        code, _, err = await relatectl(relate.config, "import", "mbox", str(path), "-u", USER)
        assert code == 0, err
        heard = b""
        while b"* 2 EXISTS" not in heard:
            heard += await asyncio.wait_for(reader.readline(), 30)
        writer.write(b"DONE\r\nd LOGOUT\r\n")
        await writer.drain()
    finally:
        writer.close()


async def test_imap_import_over_tls_and_starttls_checks_the_certificate(relate: Relate, tmp_path: Path) -> None:
    """Implicit TLS and STARTTLS both import; a certificate that does not verify stops the import with one line
    (the old server's self-signed one), unless --insecure says not to check it."""
    server = await start_dovecot(tls=True)
    try:
        await asyncio.to_thread(fill, server, {"INBOX": 3, "Work": 2})
        secret = tmp_path / "password"
        secret.write_text(PASSWORD)
        base = ["import", "imap", "--host", "127.0.0.1", "--login", SOURCE, "--password-file", str(secret), "-u", USER]
        code, _, err = await relatectl(relate.config, *base, "--tls", "--port", str(server.tls_port))
        assert code == 1
        assert err.strip().startswith(f"error: TLS with the IMAP server 127.0.0.1:{server.tls_port} failed: ")
        assert "CERTIFICATE_VERIFY_FAILED" in err
        assert len(err.strip().splitlines()) == 1

        tls = [*base, "--tls", "--port", str(server.tls_port), "--insecure", "--json"]
        code, out, err = await relatectl(relate.config, *tls)
        assert code == 0, err
        assert json.loads(out)["imported"] == 5
        starttls = [*base, "--starttls", "--port", str(server.port), "--insecure", "--json"]
        await asyncio.to_thread(fill, server, {"INBOX": 1}, seed=5, start=5)
        code, out, err = await relatectl(relate.config, *starttls)
        assert code == 0, err
        # Another port is another source (no UIDs recorded for it): all 6 fetched, 5 found here by content.
        assert (json.loads(out)["imported"], json.loads(out)["already"]) == (1, 5)
        assert await relate.count() == {"INBOX": 4, "Work": 2}
    finally:
        await asyncio.to_thread(server.stop)


async def test_a_courier_style_namespace_prefix_is_taken_off(relate: Relate, tmp_path: Path) -> None:
    """An old server whose folders all sit below INBOX. (Courier's layout, NAMESPACE (("INBOX." "."))): its
    INBOX.Work.Reports is our Work/Reports, not INBOX/Work/Reports."""
    server = await start_dovecot(prefix="INBOX.")
    try:
        await asyncio.to_thread(fill, server, {"INBOX": 2, "INBOX.Work": 2, "INBOX.Work.Reports": 1})
        result = await import_imap(relate, server, tmp_path, "--json")
        assert result["imported"] == 5
        assert await relate.count() == {"INBOX": 2, "Work": 2, "Work/Reports": 1}
    finally:
        await asyncio.to_thread(server.stop)
