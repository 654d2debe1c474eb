"""QUOTA (RFC 9208): GETQUOTAROOT, GETQUOTA, SETQUOTA refused, NO [OVERQUOTA] on APPEND and COPY, DELETED-STORAGE."""

from __future__ import annotations

import imaplib

from relate.services import accounts

from .conftest import ALICE, BOB, Imap
from .helpers import Lit, make_message


def sized(size: int, subject: str = "quota") -> bytes:
    """A message of exactly ``size`` octets."""
    head = make_message(subject=subject, body="")
    body = (b"x" * 78 + b"\r\n") * ((size - len(head)) // 80)
    return head + body + b"y" * (size - len(head) - len(body))


async def limit(imap: Imap, user: str = BOB, *, storage: int | None = None, messages: int | None = None) -> None:
    """Set a user's own limits as `relatectl user quota` does."""
    changes = {k: v for k, v in (("storage", storage), ("messages", messages)) if v is not None}
    await accounts.set_quota(imap.pool, user, changes)


async def test_capability_names_quota_and_both_resources(imap: Imap) -> None:
    """CAPABILITY lists QUOTA, QUOTA=RES-STORAGE and QUOTA=RES-MESSAGE, and not QUOTASET (SETQUOTA is refused)."""
    client = await imap.connect()
    caps = (await client.ok("CAPABILITY")).lines("CAPABILITY")[0].split()
    assert {b"QUOTA", b"QUOTA=RES-STORAGE", b"QUOTA=RES-MESSAGE"} <= set(caps)
    assert b"QUOTASET" not in caps


async def test_getquotaroot_reports_usage_in_kibibytes_and_messages(imap: Imap) -> None:
    """With limits, GETQUOTAROOT INBOX names the root "" and its usage: STORAGE in 1024-octet units, MESSAGE."""
    await imap.deliver(sized(3000))
    await imap.deliver(sized(1000), folder="Sent")  # every folder counts
    await limit(imap, storage=2 * 1024 * 1024, messages=100)
    client = await imap.connect()
    result = await client.ok("GETQUOTAROOT INBOX")
    assert result.untagged == [b'* QUOTAROOT "INBOX" ""', b'* QUOTA "" (STORAGE 4 2048 MESSAGE 2 100)']
    assert (await client.ok('GETQUOTA ""')).untagged == [b'* QUOTA "" (STORAGE 4 2048 MESSAGE 2 100)']
    # Usage rounds up, the limit down: 4001 octets are 4 KiB (rounded up: 4), a 5000-octet limit 4 KiB.
    await limit(imap, storage=5000)
    assert (await client.ok('GETQUOTA ""')).untagged == [b'* QUOTA "" (STORAGE 4 4 MESSAGE 2 100)']


async def test_only_limited_resources_are_reported_and_no_root_without_limits(imap: Imap) -> None:
    """A user without limits has no quota root (GETQUOTA "" is NO [NONEXISTENT]); one limit shows alone."""
    client = await imap.connect()
    assert (await client.ok("GETQUOTAROOT INBOX")).untagged == [b'* QUOTAROOT "INBOX"']
    result = await client.command('GETQUOTA ""')
    assert (result.status, result.code) == ("NO", "NONEXISTENT")
    await limit(imap, messages=10)
    assert (await client.ok('GETQUOTA ""')).untagged == [b'* QUOTA "" (MESSAGE 0 10)']
    result = await client.command('GETQUOTA "user.bob"')
    assert (result.status, result.code) == ("NO", "NONEXISTENT")
    result = await client.command("GETQUOTAROOT Nonexistent")
    assert (result.status, result.code) == ("NO", "NONEXISTENT")


async def test_configured_defaults_apply_to_users_without_their_own(imap: Imap) -> None:
    """quota.storage and quota.messages are the limits of every user who has none of his own."""
    imap.cfg.quota.messages = 1
    try:
        await imap.deliver()
        client = await imap.connect()
        assert (await client.ok('GETQUOTA ""')).untagged == [b'* QUOTA "" (MESSAGE 1 1)']
        result = await client.command("APPEND INBOX ", Lit(make_message()))
        assert (result.status, result.code) == ("NO", "OVERQUOTA")
    finally:
        imap.cfg.quota.messages = 0


async def test_setquota_is_refused_and_changes_nothing(imap: Imap) -> None:
    """SETQUOTA is NO [NOPERM] (limits are the administrator's); a malformed one is BAD; limits stay as they were."""
    await limit(imap, messages=10)
    client = await imap.connect()
    result = await client.command('SETQUOTA "" (STORAGE 999999 MESSAGE 999999)')
    assert (result.status, result.code) == ("NO", "NOPERM")
    assert (await client.command('SETQUOTA "" (STORAGE)')).status == "BAD"
    assert (await client.command('SETQUOTA "" (STORAGE 99999999999999999999)')).status == "BAD"
    assert (await client.ok('GETQUOTA ""')).untagged == [b'* QUOTA "" (MESSAGE 0 10)']


async def test_append_over_the_storage_limit_is_overquota_and_stores_nothing(imap: Imap) -> None:
    """APPEND that would pass the STORAGE limit is NO [OVERQUOTA]; nothing is stored; after EXPUNGE it fits again."""
    await limit(imap, storage=10_000)
    client = await imap.connect(select="INBOX")
    await client.ok("APPEND INBOX ", Lit(sized(6000)))
    await client.ok("APPEND Archive ", Lit(sized(4000)))  # exactly the limit
    result = await client.command("APPEND INBOX ", Lit(sized(1000)))
    assert (result.status, result.code) == ("NO", "OVERQUOTA")
    assert len(await imap.stored()) == 1
    await client.ok("STORE 1 +FLAGS (\\Deleted)")
    await client.ok("EXPUNGE")
    await client.ok("APPEND INBOX ", Lit(sized(1000)))
    assert imap.errors.records == []


async def test_append_over_the_message_limit_is_overquota(imap: Imap) -> None:
    """APPEND past the MESSAGE limit is NO [OVERQUOTA] whatever the size; another session sees the same."""
    await limit(imap, messages=2)
    client = await imap.connect()
    other = await imap.connect()
    await client.ok("APPEND INBOX ", Lit(make_message()))
    await other.ok("APPEND Drafts ", Lit(make_message()))
    for session in (client, other):
        result = await session.command("APPEND INBOX ", Lit(b"Subject: tiny\r\n\r\n"))
        assert (result.status, result.code) == ("NO", "OVERQUOTA")


async def test_copy_over_quota_is_refused_and_move_to_trash_is_not(imap: Imap) -> None:
    """COPY that would pass a limit is NO [OVERQUOTA] and copies nothing; MOVE stays within the user and works."""
    for i in range(3):
        await imap.deliver(sized(2000, f"m{i}"))
    await limit(imap, storage=7000)
    client = await imap.connect(select="INBOX")
    result = await client.command("COPY 1:2 Archive")
    assert (result.status, result.code) == ("NO", "OVERQUOTA")
    assert await imap.stored("Archive") == []
    await limit(imap, storage=1000)  # far over now: still, mail can go to Trash and away
    moved = await client.ok("MOVE 1:3 Trash")
    assert moved.lines("EXPUNGE")
    assert len(await imap.stored("Trash")) == 3
    await client.ok("SELECT Trash")
    await client.ok("STORE 1:3 +FLAGS (\\Deleted)")
    await client.ok("EXPUNGE")
    await client.ok("APPEND INBOX ", Lit(sized(900)))


async def test_status_deleted_storage_is_what_expunge_would_free(imap: Imap) -> None:
    """STATUS (DELETED DELETED-STORAGE) gives the \\Deleted messages and their octets; LIST-STATUS too."""
    for size in (1000, 2500, 4000):
        await imap.deliver(sized(size), flags=["\\Deleted"] if size != 1000 else [])
    client = await imap.connect()
    line = (await client.ok("STATUS INBOX (MESSAGES DELETED DELETED-STORAGE)")).lines("STATUS")[0]
    assert line == b'* STATUS "INBOX" (MESSAGES 3 DELETED 2 DELETED-STORAGE 6500)'
    listed = await client.ok('LIST "" "INBOX" RETURN (STATUS (DELETED-STORAGE))')
    assert listed.lines("STATUS") == [b'* STATUS "INBOX" (DELETED-STORAGE 6500)']


async def test_imaplib_reads_the_quota_root(imap: Imap) -> None:
    """imaplib's getquotaroot and getquota parse what the daemon sends."""
    await imap.deliver(sized(2048))
    await limit(imap, ALICE, storage=1024 * 1024)
    await limit(imap, storage=1024 * 1024, messages=50)

    def script(conn: imaplib.IMAP4_SSL) -> tuple[object, object]:
        return conn.getquotaroot("INBOX"), conn.getquota('""')

    root, usage = await imap.imaplib(script)
    assert root == ("OK", [[b'"INBOX" ""'], [b'"" (STORAGE 2 1024 MESSAGE 1 50)']])
    assert usage == ("OK", [b'"" (STORAGE 2 1024 MESSAGE 1 50)'])
