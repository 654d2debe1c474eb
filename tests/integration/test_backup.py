"""relatectl backup and restore, end to end: mail in, an archive out, a new PostgreSQL cluster restored from it
that serves every message byte for byte over IMAP, with its flags, dates and folders."""

from __future__ import annotations

import asyncio
import gzip
import imaplib
import io
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from relate.auth import Authenticator
from relate.config import Config, DatabaseConfig, ListenerConfig
from relate.imap.server import ImapServer
from relate.runtime.embedded_pg import EmbeddedPostgres
from relate.runtime.tls import make_self_signed
from relate.services import accounts
from relate.store import db, messages, migrate
from tests.daemons import clean_env
from tests.support import imap_folders, make_message

BOB, ALICE = "bob@example.com", "alice@example.com"

Snapshot = dict[str, dict[str, Any]]


@asynccontextmanager
async def imap_on(dsn: str) -> AsyncIterator[int]:
    """An IMAP daemon on ``dsn`` (plain-text login on loopback); yields its port."""
    cfg = Config(hostname="mail.example.com")
    cfg.database.dsn = dsn
    cfg.auth.bcrypt_rounds = 4
    cfg.imap.imap = ListenerConfig(listen=["127.0.0.1:0"])
    cfg.imap.imaps = ListenerConfig(listen=[])
    cfg.imap.allow_plaintext_auth = True
    pool = await db.create_pool(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=6))
    server = ImapServer(cfg, pool, Authenticator(pool, cfg.auth))
    await server.start()
    try:
        yield server.addresses("imap")[0][1]
    finally:
        await server.stop(grace=2)
        await pool.close()


def _snapshot(port: int, user: str, key: str) -> dict[str, Any]:
    """Every folder of ``user`` over IMAP: UIDVALIDITY, and each message's UID, flags, date and BODY[]."""
    conn = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    try:
        conn.login(user, key)
        return imap_folders(conn)
    finally:
        conn.logout()


def _imap_script(port: int, key: str) -> None:
    """What bob does over IMAP before the backup: folders (one non-ASCII), an APPEND with flags and a date, a
    flag set, a MOVE."""
    conn = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    try:
        conn.login(BOB, key)
        assert conn.create("Work/2026")[0] == "OK"
        assert conn.create("&ANw-bersicht")[0] == "OK"  # Übersicht in modified UTF-7
        raw = make_message(subject="appended", body="8-bit: Gr\u00fc\u00dfe\r\n")
        date = imaplib.Time2Internaldate(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
        assert conn.append("Work/2026", r"(\Seen $Label1)", date, raw)[0] == "OK"
        conn.select("INBOX")
        assert conn.uid("STORE", "2", "+FLAGS", r"(\Flagged \Answered)")[0] == "OK"
        assert conn.uid("MOVE", "3", "&ANw-bersicht")[0] == "OK"
    finally:
        conn.logout()


async def _fill(dsn: str) -> dict[str, str]:
    """bob and alice with imap keys, and mail delivered to them (one message to both); returns their keys."""
    pool = await db.create_pool(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=2))
    try:
        await accounts.add_domain(pool, "example.com")
        keys = {}
        for user in (BOB, ALICE):
            await accounts.add_user(pool, user)
            keys[user], _ = await accounts.create_key(pool, user, "imap", "imap", rounds=4)
        boxes = {
            r["address"]: r["id"]
            for r in await pool.fetch(
                "SELECT u.address, x.id FROM mailboxes x JOIN users u ON u.id = x.user_id WHERE x.name = 'INBOX'"
            )
        }
        bodies = [
            make_message(subject="plain"),
            make_message(subject="binary-ish", body=bytes(range(1, 256)).replace(b"\r", b"").replace(b"\n", b"")),
            make_message(subject="large", body=("x" * 998 + "\r\n").encode() * 400),
            make_message(subject="to both", to="bob@example.com, alice@example.com"),
        ]
        async with pool.acquire() as conn:
            for raw in bodies[:3]:
                await messages.ingest(conn, raw, [boxes[BOB]], flags=[])
            await messages.ingest(conn, bodies[3], [boxes[BOB], boxes[ALICE]], flags=["\\Seen"])
        return keys
    finally:
        await pool.close()


async def _relatectl(config: Path, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    """relatectl run as the admin runs it: (exit code, stdout, stderr)."""
    code, out, err = await _relatectl_bytes(config, *args, stdin=stdin)
    return code, out.decode(errors="replace"), err


async def _relatectl_bytes(config: Path, *args: str, stdin: bytes | None = None) -> tuple[int, bytes, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relatectl",
        "--config",
        str(config),
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(COLUMNS="200", NO_COLOR="1"),
    )
    out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, out, err.decode(errors="replace")


def _configs(tmp_path: Path, dsn: str) -> tuple[Path, dict[str, tuple[bytes, int]]]:
    """/etc/relate as an admin has it (a config, TLS in its own folder and in /etc/ssl-like elsewhere, the internal
    key in a file); returns the config and the named files' contents by path."""
    etc = tmp_path / "etc" / "relate"
    (etc / "tls").mkdir(parents=True)
    elsewhere = tmp_path / "ssl" / "private"
    elsewhere.mkdir(parents=True)
    make_self_signed(etc / "tls" / "cert.pem", etc / "tls" / "key.pem", "mail.example.com")
    make_self_signed(elsewhere / "smtp.pem", elsewhere / "smtp.key", "smtp.example.com")
    (etc / "internal.key").write_text("relate_internal_SECRETSECRETSECRET\n")
    os.chmod(etc / "internal.key", 0o640)
    config = etc / "relate.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "hostname": "mail.example.com",
                "database": {"dsn": dsn},
                "internal": {"api_key_file": str(etc / "internal.key")},
                "tls": {"cert": str(etc / "tls" / "cert.pem"), "key": str(etc / "tls" / "key.pem")},
                "smtp": {
                    "submissions": {
                        "listen": ["127.0.0.1:0"],
                        "cert": str(elsewhere / "smtp.pem"),
                        "key": str(elsewhere / "smtp.key"),
                    }
                },
            }
        )
    )
    os.chmod(config, 0o640)
    files = {
        str(p): (p.read_bytes(), p.stat().st_mode & 0o777)
        for p in (
            etc / "tls" / "cert.pem",
            etc / "tls" / "key.pem",
            etc / "internal.key",
            elsewhere / "smtp.pem",
            elsewhere / "smtp.key",
        )
    }
    return config, files


async def _tables(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"))
    finally:
        await conn.close()


async def test_restore_serves_every_message_byte_for_byte(dsn: str, tmp_path: Path) -> None:
    """Mail delivered and changed over IMAP, backed up, restored (from a gzipped copy on standard input) into a
    new PostgreSQL cluster: every folder,
    UIDVALIDITY, UID, flag, date and BODY[] octet is the same over IMAP, the old keys log in, the config and
    every file it names come back under --config-dir with their modes, and nothing secret was printed."""
    keys = await _fill(dsn)
    async with imap_on(dsn) as port:
        await asyncio.to_thread(_imap_script, port, keys[BOB])
        before = {u: await asyncio.to_thread(_snapshot, port, u, keys[u]) for u in (BOB, ALICE)}
    assert set(before[BOB]) >= {"INBOX", "Work/2026", "&ANw-bersicht"}
    assert sum(len(f["messages"]) for f in before[BOB].values()) == 5

    config, files = _configs(tmp_path, dsn)
    archive = tmp_path / "nightly.tar"
    code, out, err = await _relatectl(config, "backup", str(archive))
    assert code == 0, err
    assert re.search(r"backup written to .*nightly\.tar: [\d.]+ [kM]?B in [\d.]+ s", err), err
    assert oct(archive.stat().st_mode & 0o777) == oct(0o600)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names[0] == "relate-backup/manifest.json"
    assert names[-1] == "relate-backup/end.json"

    # A second machine: a new cluster, an empty database, the admin's own config for it.
    cluster = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="relate-restore-pg-")) / "data")
    target = await asyncio.to_thread(cluster.start, durable=False)
    try:
        target_config = tmp_path / "target.yaml"
        target_config.write_text(yaml.safe_dump({"database": {"dsn": target}}))
        restored_dir = tmp_path / "restored"
        code, out, err = await _relatectl(  # through gzip, as `backup - | gzip > file` keeps it
            target_config, "restore", "-", "--config-dir", str(restored_dir), stdin=gzip.compress(archive.read_bytes())
        )
        assert code == 0, err
        assert "restored the database" in out

        async with imap_on(target) as port:
            after = {u: await asyncio.to_thread(_snapshot, port, u, keys[u]) for u in (BOB, ALICE)}
        assert after == before

        # The config comes back beside the files that were under its folder; the others under files/.
        assert (restored_dir / "relate.yaml").read_bytes() == config.read_bytes()
        assert oct((restored_dir / "relate.yaml").stat().st_mode & 0o777) == oct(0o640)
        for original, (content, mode) in files.items():
            rel = Path(original).relative_to(tmp_path)
            place = (
                restored_dir / rel.relative_to("etc/relate")
                if rel.parts[:2] == ("etc", "relate")
                else restored_dir / "files" / Path(original).relative_to("/")
            )
            assert place.read_bytes() == content, place
            assert place.stat().st_mode & 0o777 == mode

        # A database with anything in it is refused, in one line, and left as it was.
        tables = await _tables(target)
        code, out, err = await _relatectl(target_config, "restore", str(archive))
        assert code == 1
        assert err.strip().splitlines() == [err.strip()]
        assert "is not empty" in err
        assert "restore only into an empty database" in err
        assert await _tables(target) == tables

        # A truncated archive restores nothing: the database stays empty.
        conn = await asyncpg.connect(target)
        try:
            await conn.execute("CREATE DATABASE second")
        finally:
            await conn.close()
        second = target.replace("/relate?", "/second?")
        (tmp_path / "second.yaml").write_text(yaml.safe_dump({"database": {"dsn": second}}))
        cut = tmp_path / "cut.tar"
        cut.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])
        code, out, err = await _relatectl(tmp_path / "second.yaml", "restore", str(cut))
        assert code == 1
        assert "nothing was restored" in err or "cannot read the archive" in err, err
        assert await _tables(second) == 0
    finally:
        await asyncio.to_thread(cluster.stop)
        shutil.rmtree(cluster.data_dir.parent, ignore_errors=True)

    printed = out + err
    for secret in [*keys.values(), "SECRETSECRET", "PRIVATE KEY"]:
        assert secret not in printed


async def test_backup_to_standard_output_and_its_schema(dsn: str, tmp_path: Path) -> None:
    """`backup -` streams the archive to standard output (the summary goes to stderr), and its manifest records
    the schema version and the pg_dump that made it."""
    config = tmp_path / "relate.yaml"
    config.write_text(yaml.safe_dump({"database": {"dsn": dsn}}))
    code, raw, err = await _relatectl_bytes(config, "backup", "-")
    assert code == 0, err
    assert "backup written to standard output" in err
    (tmp_path / "out.tar").write_bytes(raw)
    with tarfile.open(tmp_path / "out.tar") as tar:
        handle = tar.extractfile("relate-backup/manifest.json")
        assert handle is not None
        manifest = json.loads(handle.read())
    assert manifest["schema_version"] == migrate.latest_version()
    assert manifest["pg_dump_major"] >= manifest["server_major"]


async def test_what_is_not_a_backup_is_refused_in_one_line(empty_dsn: str, tmp_path: Path) -> None:
    """A tar of something else, and one whose manifest is nonsense, are refused in one line; nothing is restored."""
    config = tmp_path / "relate.yaml"
    config.write_text(yaml.safe_dump({"database": {"dsn": empty_dsn}}))
    for name, content in (("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"), ("relate-backup/manifest.json", b"[]")):
        archive = tmp_path / "other.tar"
        with tarfile.open(archive, "w") as tar:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        code, _, err = await _relatectl(config, "restore", str(archive))
        assert code == 1
        assert err.startswith("error: not a Relate Mail backup"), err
        assert len(err.strip().splitlines()) == 1, err
    assert await _tables(empty_dsn) == 0
