"""PostgreSQL stopped and started again under the daemons' feet: nothing acknowledged is lost, push comes back.

The real relate-smtp and relate-imap processes run against a PostgreSQL of
the test's own (not the suite's shared one), which the test stops with
``pg_ctl -m fast`` while SMTP clients keep sending and an IMAP client sits
in IDLE, then starts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import asyncpg
import pytest

from relate.runtime.embedded_pg import EmbeddedPostgres
from relate.store import migrate
from tests.daemons import Daemon, add_user, clean_env, daemon_argv, free_port, write_config
from tests.support import make_message

USER = "alice@example.com"
OUTAGE = 5.0  # seconds; bench/db_outage.py runs 30 s and 120 s


@pytest.fixture
def private_pg(tmp_path: Path) -> Iterator[tuple[EmbeddedPostgres, str]]:
    """A PostgreSQL of this test's own, with the schema, that the test may stop and start; and its DSN."""
    server = EmbeddedPostgres(tmp_path / "pg")
    dsn = server.start(durable=False)

    async def prepare() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate.migrate(conn)
        finally:
            await conn.close()

    asyncio.run(prepare())
    yield server, dsn
    server.stop()
    shutil.rmtree(tmp_path / "pg", ignore_errors=True)


class Idler:
    """An IMAP client in IDLE on INBOX, noting when each EXISTS arrives."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.exists: list[tuple[float, int]] = []  # (monotonic time, count)
        self.new = asyncio.Event()

    @classmethod
    async def open(cls, port: int, key: str) -> Idler:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        idler = cls(reader, writer)
        await reader.readline()
        for command in (f"a LOGIN {USER} {key}", "b SELECT INBOX"):
            tag = command.split()[0].encode()
            writer.write(command.encode() + b"\r\n")
            while not (line := await reader.readline()).startswith(tag):
                assert line, "the IMAP server closed the connection"
            assert line.split()[1] == b"OK", line
        writer.write(b"c IDLE\r\n")
        assert (await reader.readline()).startswith(b"+")
        return idler

    async def listen(self) -> None:
        while line := await self.reader.readline():
            parts = line.split()
            if len(parts) == 3 and parts[0] == b"*" and parts[2] == b"EXISTS":
                self.exists.append((time.monotonic(), int(parts[1])))
                self.new.set()
            assert not line.startswith((b"c ", b"* BYE")), f"IDLE ended: {line!r}"

    def close(self) -> None:
        self.writer.close()


async def send(port: int, subject: str) -> int | str:
    """One message over the MX port: the final reply code, or what went wrong on the connection."""
    try:
        async with asyncio.timeout(30):
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
            await client.connect()
            try:
                await client.sendmail("carol@remote.example", [USER], make_message(to=USER, subject=subject))
            finally:
                with contextlib.suppress(aiosmtplib.SMTPException):
                    await client.quit()
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code
    except aiosmtplib.SMTPRecipientsRefused as exc:
        return next(iter(exc.recipients)).code
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return type(exc).__name__
    return 250


async def stored_subjects(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return {r["subject"] for r in await conn.fetch("SELECT subject FROM messages")}
    finally:
        await conn.close()


@pytest.mark.slow
def test_smtp_and_idle_survive_a_database_restart(private_pg: tuple[EmbeddedPostgres, str], tmp_path: Path) -> None:
    """PostgreSQL down for 5 s: SMTP answers only 250 or 4xx, every 250 is stored, IDLE hears new mail
    within 5 s of the database being back, and neither daemon restarts."""
    pg, dsn = private_pg
    key = add_user(dsn)
    smtp_port, imap_port = free_port(), free_port()
    config = write_config(
        tmp_path / "relate.yaml",
        dsn,
        smtp={"mx": {"listen": [f"127.0.0.1:{smtp_port}"]}},
        imap={"imap": {"listen": [f"127.0.0.1:{imap_port}"]}, "allow_plaintext_auth": True},
    )
    smtp = Daemon(daemon_argv("relate.smtp", config), clean_env(), tmp_path / "smtp.log")
    imap = Daemon(daemon_argv("relate.imap", config), clean_env(), tmp_path / "imap.log")
    try:
        smtp.wait_log("ready service=smtp")
        imap.wait_log("ready service=imap")
        results, up_at, resumed_at = asyncio.run(_outage(pg, smtp_port, imap_port, key))
        assert smtp.proc.poll() is None, "the SMTP daemon died"
        assert imap.proc.poll() is None, "the IMAP daemon died"
        assert "change-feed-lost" in imap.log()
        imap.wait_log("change-feed-restored", timeout=10)
        assert "Traceback" not in imap.log() + smtp.log()
    finally:
        smtp.stop()
        imap.stop()
    codes = [code for _, code in results]
    assert codes.count(250) >= 5, codes
    unexpected = [c for c in codes if not (c == 250 or (isinstance(c, int) and 400 <= c < 500))]
    assert not unexpected, f"replies other than 250 or 4xx: {unexpected}"
    acknowledged = {subject for subject, code in results if code == 250}
    missing = acknowledged - asyncio.run(stored_subjects(dsn))
    assert not missing, f"{len(missing)} acknowledged messages were lost"
    assert resumed_at - up_at < 5.0, f"IDLE resumed {resumed_at - up_at:.1f}s after the database came back"


async def _outage(
    pg: EmbeddedPostgres, smtp_port: int, imap_port: int, key: str
) -> tuple[list[tuple[str, int | str]], float, float]:
    idler = await Idler.open(imap_port, key)
    listener = asyncio.create_task(idler.listen())
    results: list[tuple[str, int | str]] = []
    sending = True

    async def sender() -> None:
        while sending:
            subject = f"load {uuid.uuid4().hex}"
            results.append((subject, await send(smtp_port, subject)))
            await asyncio.sleep(0.05)

    senders = [asyncio.create_task(sender()) for _ in range(3)]
    try:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(pg.stop)
        await asyncio.sleep(OUTAGE)
        await asyncio.to_thread(pg.start, durable=False)
        up_at = time.monotonic()
        # New mail after the restart must reach the IDLE client: probe until an EXISTS arrives.
        idler.new.clear()
        while not idler.new.is_set():
            assert time.monotonic() - up_at < 30, "IDLE never heard of new mail after the restart"
            subject = f"probe {uuid.uuid4().hex}"
            results.append((subject, await send(smtp_port, subject)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(idler.new.wait(), 0.5)
            assert not listener.done(), listener.exception()
        resumed_at = idler.exists[-1][0]
    finally:
        sending = False
        await asyncio.gather(*senders)
        listener.cancel()
        idler.close()
    return results, up_at, resumed_at
