"""Downloading a big maildrop: pipelined RETRs across read-ahead batches, messages removed meanwhile, \\Seen."""

from __future__ import annotations

from relate.store import imap_messages

from .helpers import ALICE, Pop3, crlf, logged_in, make_message, unstuff, wait_until


async def test_pipelined_download_across_read_ahead_batches(pop3: Pop3) -> None:
    """250 messages (CRLF, bare LF, dot lines) RETR'd in one pipelined write come back byte for byte, all \\Seen."""
    raws = []
    for n in range(250):
        if n % 3 == 0:
            raw = f"Subject: bare {n}\n\n.dot {n}\nline\n".encode()
        else:
            raw = make_message(subject=f"m{n}", body=f".{n}\r\n" + "x" * (n * 7) + "\r\n")
        raws.append(raw)
        await pop3.deliver(ALICE, raw)
    client = await logged_in(pop3)
    await client.write(b"".join(b"RETR %d\r\n" % n for n in range(1, 251)))
    for n, raw in enumerate(raws, 1):
        status = await client.status()
        wire = await client.body()
        assert status == f"+OK {len(crlf(raw))} octets", n
        assert unstuff(wire) == crlf(raw), n
    inbox = pop3.inbox_ids[ALICE]

    async def all_seen() -> bool:
        unseen = await pop3.pool.fetchval(
            "SELECT count(*) FROM messages WHERE mailbox_id = $1 AND NOT '\\Seen' = ANY (flags)", inbox
        )
        return bool(unseen == 0)

    # Written while the session goes on, without QUIT.
    assert await wait_until(all_seen)
    assert (await client.cmd("QUIT")).startswith("+OK")


async def test_messages_removed_after_login_in_both_batches(pop3: Pop3) -> None:
    """Messages IMAP removes after login, in the first batch and in the one read ahead, get -ERR; others come whole."""
    raws = [make_message(subject=f"m{n}") for n in range(150)]
    for raw in raws:
        await pop3.deliver(ALICE, raw)
    uids = await pop3.uids(ALICE)
    client = await logged_in(pop3)
    async with pop3.pool.acquire() as conn:
        await imap_messages.remove(conn, pop3.inbox_ids[ALICE], [uids[49], uids[119]])
    for n in range(1, 151):
        status, wire = await client.multi(f"RETR {n}")
        if n in (50, 120):
            assert status == "-ERR [SYS/TEMP] Message is gone", n
        else:
            assert status == f"+OK {len(raws[n - 1])} octets", n
            assert unstuff(wire) == raws[n - 1], n
    assert (await client.cmd("QUIT")).startswith("+OK")
