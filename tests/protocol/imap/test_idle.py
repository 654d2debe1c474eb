"""IDLE (RFC 9051 §6.3.13): changes are pushed while the client waits."""

from __future__ import annotations

import imaplib
import time

from .conftest import Imap
from .helpers import make_message


async def test_idle_pushes_new_message_quickly(imap: Imap) -> None:
    """A delivered message reaches an IDLEing client as EXISTS well under half a second."""
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    tag = await client.idle()
    await imap.deliver(make_message(subject="pushed"))
    started = time.monotonic()  # committed: from here on it is the push alone
    lines = await client.read_until(lambda line: line.endswith(b" RECENT"), wait=5)
    elapsed = time.monotonic() - started
    assert lines[-2:] == [b"* 2 EXISTS", b"* 2 RECENT"]  # the session had the mailbox first: both recent
    assert elapsed < 0.5, f"EXISTS after {elapsed:.3f}s"
    done = await client.done(tag)
    assert done.ok
    assert done.untagged == []


async def test_idle_pushes_flag_changes_and_expunges(imap: Imap) -> None:
    """Another session's STORE and EXPUNGE reach an IDLEing client as FETCH FLAGS and EXPUNGE."""
    await imap.deliver()
    await imap.deliver()
    watcher = await imap.connect(select="INBOX")
    actor = await imap.connect(select="INBOX")
    tag = await watcher.idle()
    await actor.ok("STORE 2 +FLAGS (\\Flagged)")
    lines = await watcher.read_until(lambda line: b"FETCH" in line)
    assert lines[-1].startswith(b"* 2 FETCH (")
    assert b"FLAGS (\\Recent \\Flagged)" in lines[-1]  # the watcher selected first: recent there
    await actor.ok("STORE 1 +FLAGS (\\Deleted)")
    await actor.ok("EXPUNGE")
    lines = await watcher.read_until(lambda line: line.endswith(b"EXPUNGE"))
    assert lines[-1] == b"* 1 EXPUNGE"
    assert (await watcher.done(tag)).ok
    assert list((await watcher.ok("FETCH 1:* FLAGS")).fetches()) == [1]


async def test_idle_only_hears_its_mailbox(imap: Imap) -> None:
    """Deliveries to another mailbox or another user are not pushed."""
    client = await imap.connect(select="INBOX")
    tag = await client.idle()
    await imap.deliver(folder="Sent")
    await imap.deliver(user="alice@example.com")
    assert await client.untagged_within(0.3) == []
    assert (await client.done(tag)).ok


async def test_idle_done_is_case_insensitive_and_session_continues(imap: Imap) -> None:
    """``done`` in lower case ends IDLE; later commands work."""
    client = await imap.connect(select="INBOX")
    tag = await client.idle()
    await client.send(b"done\r\n")
    assert (await client.read_tagged(tag)).ok
    assert (await client.command("NOOP")).ok


async def test_idle_anything_but_done_is_bad(imap: Imap) -> None:
    """A line other than DONE ends IDLE with BAD."""
    client = await imap.connect(select="INBOX")
    tag = await client.idle()
    await client.send(b"A99 NOOP\r\n")
    assert (await client.read_tagged(tag)).status == "BAD"
    assert (await client.command("NOOP")).ok


async def test_idle_without_selected_mailbox(imap: Imap) -> None:
    """IDLE in the authenticated state is accepted and ends with DONE."""
    client = await imap.connect()
    tag = await client.idle()
    assert (await client.done(tag)).ok


async def test_idle_needs_login(imap: Imap) -> None:
    """IDLE before login is BAD (no continuation)."""
    client = await imap.connect(None)
    result = await client.command("IDLE")
    assert result.status == "BAD"
    assert result.continuations == []


async def test_idle_times_out(imap: Imap) -> None:
    """An IDLE longer than the idle timeout ends with BYE and the connection closes."""
    imap.cfg.imap.idle_timeout = 0.3
    client = await imap.connect(select="INBOX")
    await client.idle()
    lines = await client.read_until(lambda line: line.startswith(b"* BYE"), wait=5)
    assert lines[-1].startswith(b"* BYE")
    assert await client.closed()


async def test_idle_with_imaplib_client_in_parallel(imap: Imap) -> None:
    """An IDLEing raw client hears about a message appended by a stock client (imaplib)."""
    client = await imap.connect(select="INBOX")
    tag = await client.idle()

    def script(conn: imaplib.IMAP4) -> str:
        return str(conn.append("INBOX", None, None, make_message())[0])

    assert await imap.imaplib(script) == "OK"
    lines = await client.read_until(lambda line: line.endswith(b" EXISTS"))
    assert lines[-1] == b"* 1 EXISTS"
    assert (await client.done(tag)).ok


async def test_idle_survives_a_lost_listen_connection(imap: Imap) -> None:
    """When the daemon's LISTEN connection is killed, it listens again and an IDLEing client still hears new mail."""
    client = await imap.connect(select="INBOX")
    tag = await client.idle()
    killed = await imap.pool.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
    )
    assert killed == 1
    await imap.deliver(make_message(subject="after the drop"))
    lines = await client.read_until(lambda line: line.endswith(b" EXISTS"), wait=10)
    assert lines[-1] == b"* 1 EXISTS"
    assert (await client.done(tag)).ok


async def test_many_idlers_each_hear_every_change_once(imap: Imap) -> None:
    """Thirty sessions idling on one mailbox each hear a delivery, a flag change and an expunge, once each;
    the new message is \\Recent in exactly one of them (they share the look in the database)."""
    await imap.deliver()
    idlers = [await imap.connect(select="INBOX") for _ in range(30)]
    tags = [await client.idle() for client in idlers]
    await imap.deliver(make_message(subject="to all"))
    heard = [await client.read_until(lambda line: line.endswith(b"RECENT")) for client in idlers]
    assert all(lines[-2] == b"* 2 EXISTS" for lines in heard)
    actor = await imap.connect(select="INBOX")
    await actor.ok("STORE 1 +FLAGS (\\Flagged)")
    for client in idlers:
        lines = await client.read_until(lambda line: b"FETCH" in line)
        assert lines[-1].startswith(b"* 1 FETCH (")
        assert b"\\Flagged" in lines[-1]
    await actor.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    await actor.ok("EXPUNGE")
    recent = 0
    for client, tag in zip(idlers, tags, strict=True):
        lines = await client.read_until(lambda line: line.endswith(b"EXPUNGE"))
        assert lines[-1] == b"* 1 EXPUNGE"
        done = await client.done(tag)
        assert done.ok
        assert done.lines("EXISTS") == []
        assert done.lines("EXPUNGE") == []
        fetched = (await client.ok("FETCH 1:* (UID FLAGS)")).fetches()
        assert list(fetched) == [1]
        recent += "\\Recent" in fetched[1]["FLAGS"]
    assert recent == 1
