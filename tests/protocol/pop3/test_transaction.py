"""TRANSACTION state: STAT, LIST, RETR, DELE, NOOP, RSET, TOP, UIDL and QUIT, raw and through poplib."""

from __future__ import annotations

import asyncio
import poplib
import re

import pytest

from .helpers import ALICE, Client, Pop3, blocking, crlf, logged_in, make_message, unstuff, wait_until


async def three(pop3: Pop3) -> list[bytes]:
    """Deliver three messages of different sizes to alice; returns them."""
    msgs = [
        make_message(subject="first"),
        make_message(subject="second", body="A longer body.\r\n" * 20),
        make_message(subject="third", body="x\r\n"),
    ]
    for raw in msgs:
        await pop3.deliver(ALICE, raw)
    return msgs


# -- STAT and LIST ------------------------------------------------------------------------


async def test_stat(pop3: Pop3) -> None:
    """STAT answers '+OK count octets' for the maildrop."""
    msgs = await three(pop3)
    client = await logged_in(pop3)
    assert await client.cmd("STAT") == f"+OK 3 {sum(map(len, msgs))}"


async def test_stat_empty_maildrop(pop3: Pop3) -> None:
    """STAT on an empty maildrop answers '+OK 0 0'."""
    client = await logged_in(pop3)
    assert await client.cmd("STAT") == "+OK 0 0"


async def test_list_all(pop3: Pop3) -> None:
    """LIST gives a scan listing 'n size' per message, in order, ended by '.'."""
    msgs = await three(pop3)
    client = await logged_in(pop3)
    status, body = await client.multi("LIST")
    assert status == "+OK Scan listing follows"
    assert body.decode() == "".join(f"{n} {len(m)}\r\n" for n, m in enumerate(msgs, 1))


async def test_list_empty_maildrop(pop3: Pop3) -> None:
    """LIST on an empty maildrop is '+OK' and an immediate '.'."""
    client = await logged_in(pop3)
    assert await client.multi("LIST") == ("+OK Scan listing follows", b"")


async def test_list_one(pop3: Pop3) -> None:
    """LIST n answers '+OK n size' on one line."""
    msgs = await three(pop3)
    client = await logged_in(pop3)
    assert await client.cmd("LIST 2") == f"+OK 2 {len(msgs[1])}"


@pytest.mark.parametrize("argument", ["0", "4", "99999999999999999999", "-1", "abc", "1.0"])
async def test_list_no_such_message(pop3: Pop3, argument: str) -> None:
    """LIST with a number outside the maildrop, or not a number, answers '-ERR No such message'."""
    await three(pop3)
    client = await logged_in(pop3)
    assert await client.cmd(f"LIST {argument}") == "-ERR No such message"
    assert await client.cmd("NOOP") == "+OK"


async def test_list_via_poplib(pop3: Pop3) -> None:
    """poplib's list() and list(n) agree with the sizes of the messages."""
    msgs = await three(pop3)

    def talk() -> tuple[list[bytes], bytes]:
        client = poplib.POP3_SSL("127.0.0.1", pop3.pop3s, context=pop3.client_tls, timeout=10)
        try:
            client.user(ALICE)
            client.pass_(pop3.alice_key)
            _, listing, _ = client.list()
            return listing, client.list(3)
        finally:
            client.quit()

    listing, one = await blocking(talk)
    assert listing == [f"{n} {len(m)}".encode() for n, m in enumerate(msgs, 1)]
    assert one == f"+OK 3 {len(msgs[2])}".encode()


# -- RETR ------------------------------------------------------------------------------------


async def test_retr(pop3: Pop3) -> None:
    """RETR sends '+OK size octets', the message byte for byte, and '.'."""
    msgs = await three(pop3)
    client = await logged_in(pop3)
    for n, raw in enumerate(msgs, 1):
        status, body = await client.multi(f"RETR {n}")
        assert status == f"+OK {len(raw)} octets"
        assert unstuff(body) == raw


async def test_retr_same_message_twice(pop3: Pop3) -> None:
    """A message can be retrieved again in the same session."""
    msgs = await three(pop3)
    client = await logged_in(pop3)
    first = await client.multi("RETR 1")
    assert await client.multi("RETR 1") == first
    assert unstuff(first[1]) == msgs[0]


@pytest.mark.parametrize("command", ["RETR", "RETR 1 2"])
async def test_retr_needs_one_number(pop3: Pop3, command: str) -> None:
    """RETR without a number, or with two, is refused."""
    await three(pop3)
    client = await logged_in(pop3)
    assert await client.cmd(command) == "-ERR RETR takes a message number"


@pytest.mark.parametrize("argument", ["0", "4", "x"])
async def test_retr_no_such_message(pop3: Pop3, argument: str) -> None:
    """RETR of a number outside the maildrop answers '-ERR No such message'."""
    await three(pop3)
    client = await logged_in(pop3)
    assert await client.cmd(f"RETR {argument}") == "-ERR No such message"


async def test_retr_sets_seen(pop3: Pop3) -> None:
    """RETR sets \\Seen in the store (what IMAP and the API see) during the session; others stay unseen."""
    await three(pop3)
    await pop3.deliver(ALICE, make_message(subject="flagged"), flags=["\\Flagged"])
    client = await logged_in(pop3)
    await client.multi("RETR 2")
    await client.multi("RETR 4")
    assert await client.cmd("NOOP") == "+OK"
    inbox = pop3.inbox_ids[ALICE]

    async def seen() -> list[bool]:
        rows = await pop3.pool.fetch("SELECT flags FROM messages WHERE mailbox_id = $1 ORDER BY uid", inbox)
        return ["\\Seen" in r["flags"] for r in rows]

    async def committed() -> bool:
        return await seen() == [False, True, False, True]

    # Committed while the session goes on (the client has not quit), give or take a moment.
    assert await wait_until(committed)
    flags = [sorted(m["flags"]) for m in await pop3.stored(ALICE)]
    assert flags == [[], ["\\Seen"], [], ["\\Flagged", "\\Seen"]]


async def test_retr_then_dele_then_drop_leaves_message_seen(pop3: Pop3) -> None:
    """A message RETR'd and marked by DELE stays, \\Seen, when the connection drops without QUIT."""
    await three(pop3)
    client = await logged_in(pop3)
    await client.multi("RETR 1")
    assert await client.cmd("DELE 1") == "+OK Message 1 deleted"
    client.drop()

    async def seen_and_kept() -> bool:
        return [("\\Seen" in m["flags"]) for m in await pop3.stored(ALICE)] == [True, False, False]

    assert await wait_until(seen_and_kept)


async def test_rset_after_dele_has_seen_written_in_session(pop3: Pop3) -> None:
    """RSET undoing a DELE mark lets the RETR's \\Seen reach the store while the session goes on."""
    await three(pop3)
    client = await logged_in(pop3)
    await client.multi("RETR 2")
    assert await client.cmd("DELE 2") == "+OK Message 2 deleted"
    await asyncio.sleep(0.5)  # longer than the client pause that lets a \\Seen write start
    assert [("\\Seen" in m["flags"]) for m in await pop3.stored(ALICE)] == [False, False, False]
    assert await client.cmd("RSET") == "+OK Maildrop has 3 messages"

    async def seen() -> bool:
        return [("\\Seen" in m["flags"]) for m in await pop3.stored(ALICE)] == [False, True, False]

    assert await wait_until(seen)
    assert await client.cmd("NOOP") == "+OK"


async def test_retr_keeps_seen_message_seen(pop3: Pop3) -> None:
    """RETR of a message already \\Seen leaves its flags as they were."""
    await pop3.deliver(ALICE, make_message(), flags=["\\Seen", "$Label1"])
    client = await logged_in(pop3)
    await client.multi("RETR 1")
    assert sorted((await pop3.stored(ALICE))[0]["flags"]) == ["$Label1", "\\Seen"]


async def test_retr_via_poplib(pop3: Pop3) -> None:
    """poplib's retr() returns the message's lines and the octet count LIST announced."""
    msgs = await three(pop3)

    def talk() -> list[tuple[bytes, list[bytes], int]]:
        client = poplib.POP3_SSL("127.0.0.1", pop3.pop3s, context=pop3.client_tls, timeout=10)
        try:
            client.user(ALICE)
            client.pass_(pop3.alice_key)
            return [client.retr(n) for n in (1, 2, 3)]
        finally:
            client.quit()

    for raw, (resp, lines, octets) in zip(msgs, await blocking(talk), strict=True):
        assert resp == f"+OK {len(raw)} octets".encode()
        assert b"".join(line + b"\r\n" for line in lines) == raw
        assert octets == len(raw)


# -- DELE, RSET, NOOP --------------------------------------------------------------------------


async def test_dele_marks_message(pop3: Pop3) -> None:
    """DELE n answers '+OK Message n deleted'; the message leaves STAT and LIST but keeps its number."""
    msgs = await three(pop3)
    client = await logged_in(pop3)
    assert await client.cmd("DELE 2") == "+OK Message 2 deleted"
    assert await client.cmd("STAT") == f"+OK 2 {len(msgs[0]) + len(msgs[2])}"
    _, body = await client.multi("LIST")
    assert body.decode() == f"1 {len(msgs[0])}\r\n3 {len(msgs[2])}\r\n"
    assert await client.cmd("LIST 3") == f"+OK 3 {len(msgs[2])}"
    _, uidl = await client.multi("UIDL")
    assert [line.split()[0] for line in uidl.decode().splitlines()] == ["1", "3"]
    # Only marked: the store still has all three until QUIT.
    assert len(await pop3.stored(ALICE)) == 3


@pytest.mark.parametrize("command", ["RETR 2", "LIST 2", "TOP 2 0", "UIDL 2", "DELE 2"])
async def test_deleted_message_is_refused(pop3: Pop3, command: str) -> None:
    """RETR, LIST, TOP, UIDL and DELE of a deleted message answer '-ERR Message is deleted'."""
    await three(pop3)
    client = await logged_in(pop3)
    await client.cmd("DELE 2")
    assert await client.cmd(command) == "-ERR Message is deleted"


@pytest.mark.parametrize("command", ["DELE", "DELE 1 2"])
async def test_dele_needs_one_number(pop3: Pop3, command: str) -> None:
    """DELE without a number, or with two, is refused."""
    await three(pop3)
    client = await logged_in(pop3)
    assert await client.cmd(command) == "-ERR DELE takes a message number"


async def test_dele_no_such_message(pop3: Pop3) -> None:
    """DELE of a number outside the maildrop answers '-ERR No such message'."""
    await three(pop3)
    client = await logged_in(pop3)
    assert await client.cmd("DELE 4") == "-ERR No such message"


async def test_rset_unmarks_everything(pop3: Pop3) -> None:
    """RSET unmarks every deleted message; QUIT then removes nothing."""
    msgs = await three(pop3)
    client = await logged_in(pop3)
    await client.cmd("DELE 1")
    await client.cmd("DELE 3")
    assert await client.cmd("RSET") == "+OK Maildrop has 3 messages"
    assert await client.cmd("STAT") == f"+OK 3 {sum(map(len, msgs))}"
    assert unstuff((await client.multi("RETR 1"))[1]) == msgs[0]
    assert (await client.cmd("QUIT")).startswith("+OK")
    assert len(await pop3.stored(ALICE)) == 3


async def test_noop(pop3: Pop3) -> None:
    """NOOP answers '+OK' and changes nothing."""
    await three(pop3)
    client = await logged_in(pop3)
    before = await client.cmd("STAT")
    assert await client.cmd("NOOP") == "+OK"
    assert await client.cmd("STAT") == before


# -- TOP ------------------------------------------------------------------------------------------

BODY_LINES = ["line one", "line two", "", "line four", "line five"]


async def test_top_zero_lines(pop3: Pop3) -> None:
    """TOP n 0 sends the header section and the blank line, no body."""
    raw = make_message(body="\r\n".join(BODY_LINES) + "\r\n")
    await pop3.deliver(ALICE, raw)
    client = await logged_in(pop3)
    status, body = await client.multi("TOP 1 0")
    assert status == "+OK Top of message follows"
    assert body == raw[: raw.index(b"\r\n\r\n") + 4]


@pytest.mark.parametrize("lines", [1, 2, 3, 4])
async def test_top_some_lines(pop3: Pop3, lines: int) -> None:
    """TOP n k sends the headers, the blank line and the first k body lines (empty lines count)."""
    raw = make_message(body="\r\n".join(BODY_LINES) + "\r\n")
    await pop3.deliver(ALICE, raw)
    client = await logged_in(pop3)
    _, body = await client.multi(f"TOP 1 {lines}")
    head = raw[: raw.index(b"\r\n\r\n") + 4]
    assert body == head + "".join(f"{line}\r\n" for line in BODY_LINES[:lines]).encode()


async def test_top_more_lines_than_the_body_has(pop3: Pop3) -> None:
    """TOP n k with k beyond the body's length sends the whole message."""
    raw = make_message(body="\r\n".join(BODY_LINES) + "\r\n")
    await pop3.deliver(ALICE, raw)
    client = await logged_in(pop3)
    assert (await client.multi("TOP 1 1000"))[1] == raw
    assert (await client.multi("TOP 1 5"))[1] == raw


async def test_top_message_without_body(pop3: Pop3) -> None:
    """A message that ends right after the blank line: TOP sends headers and the blank line."""
    raw = make_message(body="")
    assert raw.endswith(b"\r\n\r\n")
    await pop3.deliver(ALICE, raw)
    client = await logged_in(pop3)
    assert (await client.multi("TOP 1 0"))[1] == raw
    assert (await client.multi("TOP 1 3"))[1] == raw


async def test_top_message_without_blank_line(pop3: Pop3) -> None:
    """A message of header lines only (no blank line): TOP sends all of it, whatever the count."""
    raw = b"From: carol@remote.example\r\nTo: alice@example.com\r\nSubject: headers only\r\n"
    await pop3.deliver(ALICE, raw)
    client = await logged_in(pop3)
    assert (await client.multi("TOP 1 0"))[1] == raw
    assert (await client.multi("TOP 1 10"))[1] == raw


async def test_top_dot_stuffs_and_normalizes(pop3: Pop3) -> None:
    """TOP dot-stuffs body lines and sends CRLF line ends for a bare-LF message."""
    raw = b"Subject: lf\n\n.dot first\nsecond\n"
    await pop3.deliver(ALICE, raw)
    client = await logged_in(pop3)
    assert (await client.multi("TOP 1 1"))[1] == b"Subject: lf\r\n\r\n..dot first\r\n"


async def test_top_message_without_headers(pop3: Pop3) -> None:
    """A message whose header section is empty (it starts with the blank line): TOP n 0 sends only the blank line."""
    await pop3.deliver(ALICE, b"\r\nbody line one\r\nbody line two\r\n")
    client = await logged_in(pop3)
    assert (await client.multi("TOP 1 0"))[1] == b"\r\n"
    assert (await client.multi("TOP 1 1"))[1] == b"\r\nbody line one\r\n"


@pytest.mark.parametrize("command", ["TOP", "TOP 1", "TOP 1 -1", "TOP 1 x", "TOP 1 2 3"])
async def test_top_argument_errors(pop3: Pop3, command: str) -> None:
    """TOP needs a message number and a non-negative line count."""
    await pop3.deliver(ALICE, make_message())
    client = await logged_in(pop3)
    assert await client.cmd(command) == "-ERR TOP takes a message number and a line count"


async def test_top_does_not_set_seen(pop3: Pop3) -> None:
    """TOP leaves the message unseen (only RETR sets \\Seen)."""
    await pop3.deliver(ALICE, make_message())
    client = await logged_in(pop3)
    await client.multi("TOP 1 10")
    assert (await pop3.stored(ALICE))[0]["flags"] == []


async def test_top_via_poplib(pop3: Pop3) -> None:
    """poplib's top() returns the header lines, the empty line and the asked body lines."""
    raw = make_message(body="\r\n".join(BODY_LINES) + "\r\n")
    await pop3.deliver(ALICE, raw)

    def talk() -> tuple[bytes, list[bytes], int]:
        client = poplib.POP3_SSL("127.0.0.1", pop3.pop3s, context=pop3.client_tls, timeout=10)
        try:
            client.user(ALICE)
            client.pass_(pop3.alice_key)
            return client.top(1, 2)
        finally:
            client.quit()

    _, lines, _ = await blocking(talk)
    head = raw[: raw.index(b"\r\n\r\n")].split(b"\r\n")
    assert lines == [*head, b"", b"line one", b"line two"]


# -- UIDL -------------------------------------------------------------------------------------------


async def test_uidl_is_uidvalidity_dot_uid(pop3: Pop3) -> None:
    """UIDL lists 'n UIDVALIDITY.UID' for every message; UIDL n answers on one line."""
    await three(pop3)
    validity = await pop3.uidvalidity(ALICE)
    uids = await pop3.uids(ALICE)
    client = await logged_in(pop3)
    status, body = await client.multi("UIDL")
    assert status == "+OK Unique-id listing follows"
    assert body.decode() == "".join(f"{n} {validity}.{uid}\r\n" for n, uid in enumerate(uids, 1))
    assert await client.cmd("UIDL 2") == f"+OK 2 {validity}.{uids[1]}"
    assert await client.cmd("UIDL 4") == "-ERR No such message"


async def test_uidl_unique_and_not_the_message_id(pop3: Pop3) -> None:
    """Two messages with the same Message-Id get different UIDLs, neither derived from the Message-Id."""
    same = "<same-id@remote.example>"
    await pop3.deliver(ALICE, make_message(subject="one", message_id=same))
    await pop3.deliver(ALICE, make_message(subject="two", message_id=same))
    client = await logged_in(pop3)
    _, body = await client.multi("UIDL")
    ids = [line.split(" ", 1)[1] for line in body.decode().splitlines()]
    assert len(set(ids)) == 2
    for uid in ids:
        assert "same-id" not in uid
        # RFC 1939 §7: 1 to 70 characters in the range 0x21 to 0x7E.
        assert re.fullmatch(r"[\x21-\x7e]{1,70}", uid)


async def test_uidl_of_identical_bytes_differ(pop3: Pop3) -> None:
    """The same bytes delivered twice are two messages with two UIDLs."""
    raw = make_message()
    await pop3.deliver(ALICE, raw)
    await pop3.deliver(ALICE, raw)
    client = await logged_in(pop3)
    _, body = await client.multi("UIDL")
    first, second = (line.split()[1] for line in body.decode().splitlines())
    assert first != second


async def test_uidl_stable_across_sessions(pop3: Pop3) -> None:
    """A message keeps its UIDL in later sessions, also after earlier messages were removed."""
    await three(pop3)
    client = await logged_in(pop3)
    _, before = await client.multi("UIDL")
    await client.cmd("DELE 1")
    await client.cmd("QUIT")
    again = await logged_in(pop3)
    _, after = await again.multi("UIDL")
    old = [line.split()[1] for line in before.decode().splitlines()]
    new = after.decode().splitlines()
    assert new == [f"1 {old[1]}", f"2 {old[2]}"]


async def test_uidl_via_poplib(pop3: Pop3) -> None:
    """poplib's uidl() and uidl(n) return the server's unique ids."""
    await three(pop3)
    validity = await pop3.uidvalidity(ALICE)
    uids = await pop3.uids(ALICE)

    def talk() -> tuple[list[bytes], bytes]:
        client = poplib.POP3_SSL("127.0.0.1", pop3.pop3s, context=pop3.client_tls, timeout=10)
        try:
            client.user(ALICE)
            client.pass_(pop3.alice_key)
            return client.uidl()[1], client.uidl(1)
        finally:
            client.quit()

    listing, one = await blocking(talk)
    assert listing == [f"{n} {validity}.{uid}".encode() for n, uid in enumerate(uids, 1)]
    assert one == f"+OK 1 {validity}.{uids[0]}".encode()


# -- QUIT -------------------------------------------------------------------------------------------


async def test_quit_signs_off_and_closes(pop3: Pop3) -> None:
    """QUIT in TRANSACTION answers +OK and the server closes the connection."""
    await three(pop3)
    client = await logged_in(pop3)
    assert await client.cmd("QUIT") == "+OK Relate Mail POP3 server signing off"
    assert await client.closed()


async def test_quit_removes_deleted(pop3: Pop3) -> None:
    """QUIT removes the messages marked with DELE and only those."""
    msgs = await three(pop3)
    client = await logged_in(pop3)
    await client.cmd("DELE 1")
    await client.cmd("DELE 3")
    assert (await client.cmd("QUIT")).startswith("+OK")
    assert [m["raw"] for m in await pop3.stored(ALICE)] == [msgs[1]]


# -- a whole conversation ----------------------------------------------------------------------------


async def test_pipelined_session(pop3: Pop3) -> None:
    """Commands sent in one write (PIPELINING) are answered in order."""
    msgs = await three(pop3)
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    commands = [f"USER {ALICE}", f"PASS {pop3.alice_key}", "STAT", "RETR 1", "RETR 2"]
    commands += ["DELE 1", "DELE 2", "LIST", "QUIT"]
    await client.write("".join(f"{c}\r\n" for c in commands).encode())
    assert (await client.status()).startswith("+OK Send your key")
    assert (await client.status()).startswith("+OK Maildrop has 3 messages")
    assert await client.status() == f"+OK 3 {sum(map(len, msgs))}"
    for raw in msgs[:2]:
        assert await client.status() == f"+OK {len(raw)} octets"
        assert unstuff(await client.body()) == raw
    assert await client.status() == "+OK Message 1 deleted"
    assert await client.status() == "+OK Message 2 deleted"
    assert await client.status() == "+OK Scan listing follows"
    assert await client.body() == f"3 {len(msgs[2])}\r\n".encode()
    assert (await client.status()).startswith("+OK Relate Mail POP3 server signing off")
    assert await client.closed()
    assert [m["raw"] for m in await pop3.stored(ALICE)] == [msgs[2]]


async def test_full_session_via_poplib(pop3: Pop3) -> None:
    """A poplib client downloads everything, deletes it, and quits: the maildrop is then empty."""
    msgs = await three(pop3)

    def talk() -> list[bytes]:
        client = poplib.POP3_SSL("127.0.0.1", pop3.pop3s, context=pop3.client_tls, timeout=10)
        client.user(ALICE)
        client.pass_(pop3.alice_key)
        count, _ = client.stat()
        got = []
        for n in range(1, count + 1):
            _, lines, _ = client.retr(n)
            got.append(b"".join(line + b"\r\n" for line in lines))
            client.dele(n)
        client.noop()
        client.quit()
        return got

    assert await blocking(talk) == [crlf(m) for m in msgs]
    assert await pop3.stored(ALICE) == []


async def test_rset_via_poplib(pop3: Pop3) -> None:
    """poplib's dele() then rset() keeps every message."""
    await three(pop3)

    def talk() -> tuple[int, int]:
        client = poplib.POP3_SSL("127.0.0.1", pop3.pop3s, context=pop3.client_tls, timeout=10)
        try:
            client.user(ALICE)
            client.pass_(pop3.alice_key)
            client.dele(1)
            client.dele(2)
            client.rset()
            return client.stat()
        finally:
            client.quit()

    count, _ = await blocking(talk)
    assert count == 3
    assert len(await pop3.stored(ALICE)) == 3
