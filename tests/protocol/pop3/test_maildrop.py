"""The maildrop: one session at a time ([IN-USE]), the snapshot taken at login, and the UPDATE state at QUIT."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest

from relate.services import accounts
from relate.store import imap_messages, mailboxes

from .helpers import ALICE, BOB, Client, Pop3, logged_in, make_message, unstuff, wait_until


async def can_log_in(pop3: Pop3, user: str = ALICE) -> bool:
    """Whether a fresh session gets the maildrop now (it quits again at once)."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    key = pop3.alice_key if user == ALICE else pop3.bob_key
    reply = await client.login(user, key)
    await client.cmd("QUIT")
    await client.close()
    return reply.startswith("+OK")


# -- the lock -----------------------------------------------------------------------------


async def test_second_login_is_in_use(pop3: Pop3) -> None:
    """While a session holds the maildrop, another login gets '-ERR [IN-USE]' and stays in AUTHORIZATION."""
    first = await logged_in(pop3)
    second = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert await second.login(ALICE, pop3.alice_key) == "-ERR [IN-USE] Maildrop is in use by another session"
    assert await second.cmd("STAT") == "-ERR STAT is not allowed now"
    # AUTH PLAIN meets the same lock, and so does a login by alias.
    assert (await second.auth_plain(ALICE, pop3.alice_key)).startswith("-ERR [IN-USE]")
    assert (await second.login("al@example.com", pop3.alice_key)).startswith("-ERR [IN-USE]")
    assert await first.cmd("STAT") == "+OK 0 0"


async def test_lock_is_per_maildrop(pop3: Pop3) -> None:
    """Bob can log in while Alice's maildrop is held."""
    await logged_in(pop3)
    assert await can_log_in(pop3, BOB)


async def test_lock_released_after_quit(pop3: Pop3) -> None:
    """After QUIT, the maildrop can be opened again at once."""
    first = await logged_in(pop3)
    await first.cmd("QUIT")
    assert await first.closed()
    assert await wait_until(lambda: can_log_in(pop3))


async def test_login_again_right_after_quit(pop3: Pop3) -> None:
    """Once QUIT has answered +OK, the maildrop is free: a new login at once gets it, every time."""
    for _ in range(20):
        first = await logged_in(pop3)
        assert (await first.cmd("QUIT")).startswith("+OK")
        second = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
        assert (await second.login(ALICE, pop3.alice_key)).startswith("+OK")
        assert (await second.cmd("QUIT")).startswith("+OK")
        await first.close()
        await second.close()


async def test_same_connection_retries_after_in_use(pop3: Pop3) -> None:
    """A session refused with [IN-USE] can log in on the same connection once the holder quits."""
    first = await logged_in(pop3)
    second = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert (await second.login(ALICE, pop3.alice_key)).startswith("-ERR [IN-USE]")
    await first.cmd("QUIT")
    assert await first.closed()
    assert (await second.login(ALICE, pop3.alice_key)).startswith("+OK")


async def test_lock_released_after_dropped_connection(pop3: Pop3) -> None:
    """A client that vanishes without QUIT (connection reset) frees the maildrop."""
    first = await logged_in(pop3)
    assert not await can_log_in(pop3)
    first.drop()
    assert await wait_until(lambda: can_log_in(pop3))


async def test_lock_released_after_half_close(pop3: Pop3) -> None:
    """A client that just closes its socket (FIN, no QUIT) frees the maildrop."""
    first = await logged_in(pop3)
    await first.close()
    assert await wait_until(lambda: can_log_in(pop3))


async def test_lock_released_after_idle_timeout(pop3: Pop3) -> None:
    """A session that idles past idle_timeout is logged out and the maildrop is free again."""
    pop3.cfg.pop3.idle_timeout = 2.0
    first = await logged_in(pop3)
    assert not await can_log_in(pop3)
    assert await first.status(wait=5) == "-ERR Autologout; idle for too long"
    assert await first.closed()
    assert await can_log_in(pop3)


async def test_lock_released_at_server_shutdown(pop3: Pop3) -> None:
    """At shutdown a logged-in client hears '-ERR [SYS/TEMP]' and its maildrop lock goes with the session."""
    first = await logged_in(pop3)
    await pop3.server.stop(grace=2)
    assert await first.status() == "-ERR [SYS/TEMP] Server shutting down"
    assert await first.closed()
    held = await pop3.pool.fetchval(
        """SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
              AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""
    )
    assert held == 0


# -- QUIT and the UPDATE state ---------------------------------------------------------------


async def test_quit_expunges_marked_in_one_transaction(pop3: Pop3) -> None:
    """QUIT removes every marked message in one go: one modseq for all, gone for IMAP, unmarked ones stay."""
    msgs = [make_message(subject=f"m{n}") for n in range(6)]
    for raw in msgs:
        await pop3.deliver(ALICE, raw)
    uids = await pop3.uids(ALICE)
    inbox = pop3.inbox_ids[ALICE]
    modseq_before = await pop3.pool.fetchval("SELECT highestmodseq FROM mailboxes WHERE id = $1", inbox)
    client = await logged_in(pop3)
    for n in (1, 3, 4, 6):
        assert await client.cmd(f"DELE {n}") == f"+OK Message {n} deleted"
    # Nothing leaves the store before QUIT.
    assert await pop3.uids(ALICE) == uids
    assert await client.cmd("QUIT") == "+OK Relate Mail POP3 server signing off"
    # What an IMAP session sees now: the list of UIDs, the expunge log (QRESYNC), the modseq.
    async with pop3.pool.acquire() as conn:
        assert await imap_messages.uids(conn, inbox) == [uids[1], uids[4]]
        changes = await imap_messages.changes(conn, inbox, modseq_before, max(uids))
    assert changes["expunged"] == [uids[0], uids[2], uids[3], uids[5]]
    logged = await pop3.pool.fetch("SELECT uid, modseq FROM mailbox_expunges WHERE mailbox_id = $1", inbox)
    assert len({r["modseq"] for r in logged}) == 1, "one UPDATE transaction, one modseq"
    assert [m["raw"] for m in await pop3.stored(ALICE)] == [msgs[1], msgs[4]]
    # The removed messages' bytes go with the next blob sweep (no other message shares them).
    async with pop3.pool.acquire() as conn:
        assert await mailboxes.sweep_blobs(conn, timedelta(0)) == (4, 4)
    blobs = await pop3.pool.fetchval("SELECT count(*) FROM blobs")
    assert blobs == 2


async def test_quit_without_dele_removes_nothing(pop3: Pop3) -> None:
    """QUIT after only reading leaves every message in place (now \\Seen)."""
    for n in range(3):
        await pop3.deliver(ALICE, make_message(subject=f"m{n}"))
    client = await logged_in(pop3)
    for n in (1, 2, 3):
        await client.multi(f"RETR {n}")
    await client.cmd("QUIT")
    stored = await pop3.stored(ALICE)
    assert len(stored) == 3
    assert all("\\Seen" in m["flags"] for m in stored)


async def test_dropped_connection_after_dele_removes_nothing(pop3: Pop3) -> None:
    """A connection that drops after DELE (no QUIT) removes nothing (RFC 1939 §6)."""
    for n in range(3):
        await pop3.deliver(ALICE, make_message(subject=f"m{n}"))
    uids = await pop3.uids(ALICE)
    client = await logged_in(pop3)
    for n in (1, 2, 3):
        assert (await client.cmd(f"DELE {n}")).startswith("+OK")
    client.drop()
    assert await wait_until(lambda: can_log_in(pop3))  # the session is over
    assert await pop3.uids(ALICE) == uids


async def test_idle_timeout_after_dele_removes_nothing(pop3: Pop3) -> None:
    """A session autologged-out after DELE removes nothing."""
    pop3.cfg.pop3.idle_timeout = 1.0
    await pop3.deliver(ALICE, make_message())
    client = await logged_in(pop3)
    await client.cmd("DELE 1")
    assert await client.status(wait=5) == "-ERR Autologout; idle for too long"
    assert await client.closed()
    assert len(await pop3.stored(ALICE)) == 1


async def test_quit_after_message_removed_elsewhere(pop3: Pop3) -> None:
    """A message removed by IMAP during the session: RETR answers -ERR, and QUIT still removes the marked ones."""
    for n in range(3):
        await pop3.deliver(ALICE, make_message(subject=f"m{n}"))
    uids = await pop3.uids(ALICE)
    client = await logged_in(pop3)
    async with pop3.pool.acquire() as conn:
        await imap_messages.remove(conn, pop3.inbox_ids[ALICE], [uids[1]])
    assert await client.cmd("RETR 2") == "-ERR [SYS/TEMP] Message is gone"
    assert await client.cmd("DELE 2") == "+OK Message 2 deleted"
    assert await client.cmd("DELE 3") == "+OK Message 3 deleted"
    assert (await client.cmd("QUIT")).startswith("+OK")
    assert await pop3.uids(ALICE) == [uids[0]]


# -- the snapshot ----------------------------------------------------------------------------------


async def test_new_mail_waits_for_next_session(pop3: Pop3) -> None:
    """Mail delivered during a session is not seen until the next login."""
    old = make_message(subject="old")
    new = make_message(subject="new")
    await pop3.deliver(ALICE, old)
    client = await logged_in(pop3)
    await pop3.deliver(ALICE, new)
    assert await client.cmd("STAT") == f"+OK 1 {len(old)}"
    assert (await client.multi("LIST"))[1] == f"1 {len(old)}\r\n".encode()
    assert len((await client.multi("UIDL"))[1].splitlines()) == 1
    assert await client.cmd("RETR 2") == "-ERR No such message"
    assert await client.cmd("RSET") == "+OK Maildrop has 1 messages"
    await client.cmd("DELE 1")
    await client.cmd("QUIT")
    # The new message survived the QUIT that removed the old one, and the next session sees it.
    again = await logged_in(pop3)
    assert await again.cmd("STAT") == f"+OK 1 {len(new)}"
    assert unstuff((await again.multi("RETR 1"))[1]) == new


async def test_snapshot_sizes_and_numbers_fixed(pop3: Pop3) -> None:
    """Message numbers stay put during a session even when IMAP removes a message meanwhile."""
    for n in range(3):
        await pop3.deliver(ALICE, make_message(subject=f"m{n}"))
    uids = await pop3.uids(ALICE)
    client = await logged_in(pop3)
    _, before = await client.multi("UIDL")
    async with pop3.pool.acquire() as conn:
        await imap_messages.remove(conn, pop3.inbox_ids[ALICE], [uids[0]])
    assert (await client.multi("UIDL"))[1] == before
    assert (await client.cmd("STAT")).startswith("+OK 3 ")


async def test_concurrent_sessions_of_two_users(pop3: Pop3) -> None:
    """Alice and Bob download their own maildrops at the same time, each seeing only their mail."""
    a_raw, b_raw = make_message(subject="for alice"), make_message(subject="for bob")
    await pop3.deliver(ALICE, a_raw)
    await pop3.deliver(BOB, b_raw)

    async def fetch(user: str) -> bytes:
        client = await logged_in(pop3, user)
        _, wire = await client.multi("RETR 1")
        await client.cmd("DELE 1")
        await client.cmd("QUIT")
        return unstuff(wire)

    assert await asyncio.gather(fetch(ALICE), fetch(BOB)) == [a_raw, b_raw]
    assert await pop3.stored(ALICE) == await pop3.stored(BOB) == []


async def test_user_removed_during_the_session(pop3: Pop3, caplog: pytest.LogCaptureFixture) -> None:
    """The user removed mid-session: RETR answers [SYS/TEMP] Message is gone, QUIT [SYS/PERM]; no error logged."""
    await pop3.deliver(ALICE, make_message())
    client = await logged_in(pop3)
    await accounts.remove_user(pop3.pool, ALICE)
    assert await client.cmd("RETR 1") == "-ERR [SYS/TEMP] Message is gone"
    assert await client.cmd("DELE 1") == "+OK Message 1 deleted"
    assert await client.cmd("QUIT") == "-ERR [SYS/PERM] The maildrop no longer exists"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
