"""Upgrading a database made by the first release: every migration since 0001 applied in order on data, with
the IMAP daemon's socket listening throughout, and everything readable by this release at the end.

What "a live daemon through the upgrade" can honestly mean here: this tree holds one release, and its
daemons refuse a schema older than they expect (they would misread it). So the daemon in this test is the
one an installed system has during a package upgrade: systemd holds ``relate-imap.socket`` (here the test
binds the listening socket and the dev run's supervisor, which starts daemons exactly as the unit does,
hands it over); the daemon is started at the old schema and at points along the way, and each time
refuses, in one line naming the fix, without taking the socket down; a client that connected before the
first migration stays connected, queued on the socket, through every migration; and the daemon that
starts once the schema is current serves that very connection: its greeting, a login with a key made by
the first release, and every message byte for byte.

The data is what the first release wrote: rows of 0001's tables only, with the parsed columns (envelope,
body structure, addresses) in the jsonb form 0001 stored (the same form the current parser produces:
migration 0009 renders its wire form from that jsonb in SQL, which is what makes it a contract), no
column a later migration added, and a queue of mail deferred by a failed attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import json
import os
import socket
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from typer.testing import CliRunner

from relate import auth
from relate.config import DatabaseConfig
from relate.runtime.supervisor import Supervisor
from relate.store import db, messages, migrate
from relatectl import common
from relatectl.main import app
from tests.daemons import clean_env, daemon_argv, write_config
from tests.support import imap_folders, make_message

BOB = "bob@example.com"


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables render 200 columns wide whatever the terminal."""
    monkeypatch.setattr(common.console, "_width", 200)


async def _fill_0001(conn: asyncpg.Connection) -> dict[str, Any]:
    """What the first release stored: a domain, bob with an alias and an imap key, his folders, mail with flags
    (one message in two folders, sharing its blob), and two queued messages, one deferred. Returns the key, the
    messages by folder and the queue's ids."""
    domain = await conn.fetchval("INSERT INTO domains (name) VALUES ('example.com') RETURNING id")
    user = await conn.fetchval(
        "INSERT INTO users (domain_id, address, display_name) VALUES ($1, $2, 'Bob') RETURNING id", domain, BOB
    )
    await conn.executemany(
        "INSERT INTO addresses (address, domain_id, user_id, is_primary) VALUES ($1, $2, $3, $4)",
        [(BOB, domain, user, True), ("robert@example.com", domain, user, False)],
    )
    key, prefix, hashed = auth.new_key(4)
    await conn.execute(
        "INSERT INTO api_keys (user_id, name, prefix, hash, scopes) VALUES ($1, 'old phone', $2, $3, $4)",
        user,
        prefix,
        hashed,
        ["imap", "smtp"],
    )
    folders = {"INBOX": None, "Sent": "\\Sent", "Archive": "\\Archive", "Lists/Debian": None}
    boxes = {}
    for name, special in folders.items():
        boxes[name] = await conn.fetchval(
            "INSERT INTO mailboxes (user_id, name, special_use, subscribed) VALUES ($1, $2, $3, $4) RETURNING id",
            user,
            name,
            special,
            name != "Lists/Debian",
        )
    raws = [
        make_message(subject="first", body="Hello Bob,\r\nplain ASCII.\r\n"),
        make_message(subject="Gr\u00fc\u00dfe", sender="J\u00fcrgen <j@remote.example>", body="8-bit \u00e4\r\n"),
        make_message(subject="reply", headers=("In-Reply-To: <a@b>", "References: <a@b>")),
        make_message(subject="bare LF", body=b"no CR here\nnor here\n"),
        make_message(subject="big", body=("y" * 990 + "\r\n").encode() * 300),
    ]
    placed = [
        ("INBOX", raws[0], ["\\Seen"]),
        ("INBOX", raws[1], []),
        ("INBOX", raws[2], ["\\Seen", "\\Answered", "$Forwarded"]),
        ("INBOX", raws[3], ["\\Flagged"]),
        ("Archive", raws[4], ["\\Seen"]),
        ("Lists/Debian", raws[0], ["\\Seen", "\\Deleted"]),  # the same bytes as INBOX 1: one blob
    ]
    expected: dict[str, list[tuple[int, list[str], bytes]]] = {name: [] for name in folders}
    date = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    for name, raw, flags in placed:
        prepared = await messages.prepare(raw)
        parsed = prepared.parsed
        await conn.execute(
            "INSERT INTO blobs (hash, size, data) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            prepared.digest,
            len(raw),
            raw,
        )
        uid = len(expected[name]) + 1
        addresses = [[{"name": a.name, "email": a.email} for a in group] for group in (parsed.from_, parsed.to)]
        await conn.execute(
            """INSERT INTO messages (mailbox_id, uid, modseq, flags, internal_date, size, blob_hash, subject,
                                     from_addr, to_addr, date_header, message_id, in_reply_to, "references",
                                     envelope, bodystructure, header_end, search)
               VALUES ($1, $2, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb, $10, $11, $12, $13, $14::jsonb,
                       $15::jsonb, $16, to_tsvector('simple', coalesce($7, '')))""",
            boxes[name],
            uid,
            flags,
            date + timedelta(minutes=len(expected[name])),
            len(raw),
            prepared.digest,
            parsed.subject,
            json.dumps(addresses[0]),
            json.dumps(addresses[1]),
            parsed.date,
            parsed.message_id,
            parsed.in_reply_to,
            parsed.references,
            json.dumps(parsed.envelope),
            json.dumps(parsed.bodystructure),
            parsed.header_end,
        )
        expected[name].append((uid, sorted(flags), raw))
    for name, rows in expected.items():
        await conn.execute(
            "UPDATE mailboxes SET uidnext = $2, highestmodseq = $3 WHERE id = $1",
            boxes[name],
            len(rows) + 1,
            max(len(rows), 1),
        )
    queue = []
    for status, recipients in (
        ("queued", [("carol@remote.example", "deferred", 1)]),
        ("held", [("d@x.example", "pending", 0)]),
    ):
        email = await conn.fetchval(
            """INSERT INTO outbound_emails (user_id, status, from_address, mail_from, subject, blob_hash, message_id,
                                            queued_at)
               VALUES ($1, $2, $3, $3, 'queued by 0001', $4, '<q@example.com>', now() - interval '1 hour')
               RETURNING id""",
            user,
            status,
            BOB,
            (await messages.prepare(raws[0])).digest,
        )
        for address, rstatus, attempts in recipients:
            await conn.execute(
                """INSERT INTO outbound_recipients (outbound_email_id, kind, address, status, attempts,
                                                    next_attempt_at, last_error)
                   VALUES ($1, 'to', $2, $3, $4, now() + interval '10 minutes', $5)""",
                email,
                address,
                rstatus,
                attempts,
                "451 4.7.1 greylisted" if attempts else None,
            )
        queue.append(email)
    return {"key": key, "expected": expected, "queue": queue}


async def _counts(conn: asyncpg.Connection) -> dict[str, int]:
    tables = ("domains", "users", "addresses", "api_keys", "mailboxes", "messages", "blobs", "outbound_recipients")
    return {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in tables}


def _greeted(sock: socket.socket) -> bytes:
    sock.settimeout(120)
    line = b""
    while not line.endswith(b"\r\n"):
        part = sock.recv(1)
        if not part:
            break
        line += part
    return line


def _read_back(port: int, key: str) -> dict[str, list[tuple[int, list[str], bytes]]]:
    """(UID, flags, BODY[]) of every message in every folder, read over IMAP as robert@ (an alias of 0001)."""
    conn = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    try:
        conn.login("robert@example.com", key)
        return {
            name: [(uid, flags, body) for uid, flags, _, body in folder["messages"]]
            for name, folder in imap_folders(conn).items()
        }
    finally:
        conn.logout()


async def test_every_migration_since_0001_on_data_with_the_daemon_socket_held_throughout(
    empty_dsn: str, tmp_path: Path
) -> None:
    """0001's data, migrated one migration at a time in order (each recorded, no row lost); relate-imap refuses
    each old schema in one line while its socket keeps listening; a client connected before the first migration
    is served once the schema is current: it logs in with 0001's key and reads every message byte for byte, with
    its flags, in its folder; the queue of 0001 lists with its deferral."""
    conn = await db.connect(DatabaseConfig(dsn=empty_dsn))
    try:
        assert [m.version for m in await migrate.migrate(conn, up_to=1)] == [1]
        data = await _fill_0001(conn)
        before = await _counts(conn)
    finally:
        await conn.close()

    config = write_config(tmp_path / "relate.yaml", empty_dsn, imap={"allow_plaintext_auth": True})
    # relate-imap at 0001: one line naming the command, exit 1 (systemd would restart it: Restart=on-failure).
    refused = await asyncio.to_thread(
        subprocess.run, daemon_argv("relate.imap", config), env=clean_env(), capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"relate-imap: database schema is at version 1, this release needs {migrate.latest_version()} "
        f"(missing {', '.join(f'{m.version:04d}' for m in migrate.available()[1:])}): run `relatectl db migrate`"
    ]

    listening = socket.create_server(("127.0.0.1", 0), backlog=16)  # what relate-imap.socket holds
    port = listening.getsockname()[1]
    supervisor = Supervisor(config, tmp_path / "run", {"imap": [listening]}, daemons=["imap"], env=clean_env())
    client = socket.create_connection(("127.0.0.1", port), timeout=10)  # queued in the socket's backlog
    greeting = asyncio.get_running_loop().run_in_executor(None, _greeted, client)
    try:
        versions = [m.version for m in migrate.available()]
        try_start_at = {versions[1], versions[len(versions) // 2], versions[-2]}
        conn = await db.connect(DatabaseConfig(dsn=empty_dsn))
        try:
            for version in versions[1:]:
                ran = await migrate.migrate(conn, up_to=version)
                assert [m.version for m in ran] == [version]
                assert await migrate.current_version(conn) == version
                assert await _counts(conn) == before, f"rows changed by migration {version:04d}"
                if version in try_start_at:
                    with pytest.raises(RuntimeError, match="relate-imap exited with code 1"):
                        await supervisor.start(wait=60)
                    assert not greeting.done(), "the waiting client was answered or dropped"
            applied = await migrate.applied(conn)
        finally:
            await conn.close()
        assert sorted(applied) == versions

        await supervisor.start(wait=60)
        assert (await asyncio.wait_for(greeting, 60)).startswith(b"* OK")
        client.sendall(b"a1 LOGIN robert@example.com " + data["key"].encode() + b"\r\n")
        reply = await asyncio.to_thread(_greeted, client)
        while not reply.startswith(b"a1 "):
            reply = await asyncio.to_thread(_greeted, client)
        assert reply.startswith(b"a1 OK"), reply

        found = await asyncio.to_thread(_read_back, port, data["key"])
        assert found == data["expected"]
    finally:
        with contextlib.suppress(OSError):
            client.close()
        await supervisor.stop(grace=10)
        listening.close()

    # The queue of 0001 as an admin sees it now.
    env: dict[str, str | None] = {name: None for name in os.environ if name.startswith("RELATE_")}
    env.update({"RELATE_DATABASE__DSN": empty_dsn, "NO_COLOR": "1", "COLUMNS": "200"})
    result = await asyncio.to_thread(CliRunner().invoke, app, ["queue", "list", "--json"], env=env)
    assert result.exit_code == 0, result.output
    listed = {row["id"]: row for row in json.loads(result.output)}
    assert sorted(listed) == sorted(data["queue"])
    command = ["queue", "show", str(data["queue"][0]), "--json"]
    result = await asyncio.to_thread(CliRunner().invoke, app, command, env=env)
    assert result.exit_code == 0, result.output
    (carol,) = json.loads(result.output)["recipients"]
    assert (carol["address"], carol["status"], carol["attempts"]) == ("carol@remote.example", "deferred", 1)
    conn = await asyncpg.connect(empty_dsn)
    try:  # grouped by domain for delivery: the column 0002 added and filled in
        assert await conn.fetchval("SELECT domain FROM outbound_recipients WHERE address = $1", carol["address"]) == (
            "remote.example"
        )
    finally:
        await conn.close()
    assert carol["last_error"] == "451 4.7.1 greylisted"
