"""Hostile and broken clients: the session refuses what it must, survives what it can, and the daemon stays up."""

from __future__ import annotations

import asyncio
import random
import time

from .conftest import Imap
from .helpers import ImapClient, Lit, make_message


async def test_garbage_bytes(imap: Imap) -> None:
    """Random binary lines get BAD; the same session then works normally."""
    rng = random.Random(1234)
    client = await imap.connect(None)
    for _ in range(5):
        junk = bytes(rng.randrange(256) for _ in range(200)).replace(b"\n", b"").replace(b"{", b"")
        await client.send(junk + b"\r\n")
        line = await client.read_line()
        assert b" BAD " in line, line
    await client.send(b"\x00\x00\x00\r\n\r\n")
    assert b" BAD " in await client.read_line()
    assert b" BAD " in await client.read_line()
    await client.login("bob@example.com", imap.bob_key)
    assert (await client.command("SELECT INBOX")).ok
    await imap.assert_serves()


async def test_unterminated_quoted_string(imap: Imap) -> None:
    """An unterminated quoted string is BAD, tagged, and the session continues."""
    client = await imap.connect(None)
    result = await client.command('LOGIN "bob@example.com')
    assert result.status == "BAD"
    assert (await client.command('LOGIN "bob@example.com" "unterminated')).status == "BAD"
    await client.login("bob@example.com", imap.bob_key)
    await imap.assert_serves()


async def test_overlong_line(imap: Imap) -> None:
    """A line longer than max_line_length is refused with BAD and the session continues."""
    client = await imap.connect()
    await client.send(b"A1 NOOP " + b"x" * (imap.cfg.imap.max_line_length + 5000) + b"\r\n")
    line = await client.read_line()
    assert b"BAD" in line, line
    assert (await client.command("SELECT INBOX")).ok
    await imap.assert_serves()


async def test_overlong_line_bad_is_tagged(imap: Imap) -> None:
    """The BAD for an overlong command carries the command's tag, so the client is not left waiting."""
    client = await imap.connect()
    result = await client.command("UID FETCH " + ",".join(str(i) for i in range(1, 20000)) + " FLAGS", wait=1)
    assert result.status == "BAD"


async def test_huge_synchronizing_literal(imap: Imap) -> None:
    """A {1073741824} announcement gets tagged NO [TOOBIG] without a continuation; the session goes on."""
    client = await imap.connect()
    await client.send(b"A1 APPEND INBOX {1073741824}\r\n")
    line = await client.read_line()
    assert line.startswith(b"A1 NO [TOOBIG]"), line
    assert (await client.command("NOOP")).ok
    await client.send(b"A2 LOGIN {99999999999999999999}\r\n")
    assert (await client.read_line()).startswith(b"A2 NO [TOOBIG]")
    assert (await client.command("APPEND INBOX ", Lit(make_message()))).ok
    await imap.assert_serves()


async def test_huge_literal_plus(imap: Imap) -> None:
    """The same announcement as LITERAL+ gets BYE and the connection is closed."""
    client = await imap.connect()
    await client.send(b"A1 APPEND INBOX {1073741824+}\r\n" + b"x" * 1000)
    line = await client.read_line()
    assert line.startswith(b"* BYE"), line
    assert await client.closed()
    assert await imap.stored() == []
    await imap.assert_serves()


async def test_deeply_nested_search(imap: Imap) -> None:
    """Thousands of nested parentheses in SEARCH are BAD, not a crash."""
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    for criteria in ("(" * 20000 + "ALL" + ")" * 20000, "(" * 30000, "NOT " * 15000 + "ALL", "OR " * 15000 + "ALL"):
        assert (await client.command(f"SEARCH {criteria}")).status == "BAD"
    assert (await client.ok("SEARCH ALL")).search() == [1]
    await imap.assert_serves()


async def test_invalid_sequence_sets(imap: Imap) -> None:
    """Malformed or zero sequence sets are BAD for FETCH, STORE, COPY and UID FETCH; the session goes on."""
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    for seqset in ("0", "1:", "abc", "1:2:3", "*:0", "4294967296", "1,,2", ",1", "-1", "1.5", "0:*"):
        for command in (f"FETCH {seqset} FLAGS", f"STORE {seqset} +FLAGS (\\Seen)", f"COPY {seqset} Trash"):
            assert (await client.command(command)).status == "BAD", command
        assert (await client.command(f"UID FETCH {seqset} FLAGS")).status == "BAD", seqset
        assert (await client.command("FETCH 1 FLAGS")).ok  # resets the bad-command count
    assert await imap.stored("Trash") == []


async def test_twenty_bad_commands_end_the_session(imap: Imap) -> None:
    """Twenty bad commands in a row get nineteen BADs and then BYE and close."""
    client = await imap.connect(None)
    for i in range(19):
        assert (await client.command(f"BOGUS{i}")).status == "BAD"
    await client.send(b"A99 BOGUS\r\n")
    line = await client.read_line()
    assert line.startswith(b"* BYE"), line
    assert await client.closed()
    await imap.assert_serves()


async def test_good_command_resets_bad_count(imap: Imap) -> None:
    """A valid command in between resets the count: 19 bad, 1 good, 19 bad leaves the session open."""
    client = await imap.connect(None)
    for _ in range(2):
        for _ in range(19):
            assert (await client.command("BOGUS")).status == "BAD"
        assert (await client.command("NOOP")).ok
    assert (await client.command("CAPABILITY")).ok


async def test_client_vanishes_mid_append(imap: Imap) -> None:
    """A client that sends part of an APPEND literal and closes stores nothing; the daemon stays healthy."""
    client = await imap.connect()
    raw = make_message(body="z" * 5000)
    await client.send(b"A1 APPEND INBOX {%d}\r\n" % len(raw))
    assert (await client.read_line()).startswith(b"+")
    await client.send(raw[: len(raw) // 2])
    await client.close()
    plus = await imap.connect()
    await plus.send(b"A1 APPEND INBOX {%d+}\r\n" % len(raw) + raw[:100])
    await plus.close()
    await asyncio.sleep(0.2)
    assert await imap.stored() == []
    await imap.assert_serves()


async def test_commands_keep_a_session_past_idle_timeout(imap: Imap) -> None:
    """A session that sends a command more often than idle_timeout stays up well past it; silent, it gets BYE."""
    imap.cfg.imap.idle_timeout = 0.5
    client = await imap.connect("bob@example.com")
    for _ in range(8):  # 1.6 s of NOOPs, 0.2 s apart
        assert (await client.command("NOOP")).ok
        await asyncio.sleep(0.2)
    lines = await client.read_until(lambda line: line.startswith(b"* BYE"), wait=5)
    assert lines[-1].startswith(b"* BYE Autologout")
    assert await client.closed()
    imap.cfg.imap.idle_timeout = 1800
    await imap.assert_serves()


async def test_idle_timeout_says_bye(imap: Imap) -> None:
    """A session silent for longer than idle_timeout gets BYE and is closed, logged in or not."""
    imap.cfg.imap.idle_timeout = 0.3
    for user in (None, "bob@example.com"):
        client = await imap.connect(user)
        lines = await client.read_until(lambda line: line.startswith(b"* BYE"), wait=5)
        assert lines[-1].startswith(b"* BYE")
        assert await client.closed()
    imap.cfg.imap.idle_timeout = 1800
    await imap.assert_serves()


async def test_too_many_connections_from_one_client(imap: Imap) -> None:
    """Past max_connections_per_client a new connection gets BYE at once; the others keep working."""
    async with imap.other_server(max_connections_per_client=3) as port:
        clients = [await ImapClient.connect(port, tls=imap.client_tls) for _ in range(3)]
        extra = await ImapClient.connect(port, tls=imap.client_tls, greet=False)
        assert (await extra.read_line()).startswith(b"* BYE")
        assert await extra.closed()
        assert (await clients[0].command("NOOP")).ok
        await clients[0].close()
        await asyncio.sleep(0.1)
        again = await ImapClient.connect(port, tls=imap.client_tls)
        assert again.greeting.startswith(b"* OK")
        for c in [*clients, again]:
            await c.close()
    await imap.assert_serves()


async def test_literal_anywhere(imap: Imap) -> None:
    """Literals work for any string argument (SELECT, CREATE, LIST, STATUS), mixed with LITERAL+."""
    client = await imap.connect()
    await client.ok("CREATE ", Lit(b"With Space"))
    assert (await client.command("SELECT ", Lit(b"With Space", plus=True))).ok
    assert (await client.command("STATUS ", Lit(b"INBOX"), " (MESSAGES)")).ok
    assert (await client.command("LIST ", Lit(b""), " ", Lit(b"With*", plus=True))).ok


async def test_client_vanishes_during_idle(imap: Imap) -> None:
    """A client that disconnects while IDLEing is cleaned up without a server error."""
    client = await imap.connect(select="INBOX")
    await client.idle()
    await client.close()
    await asyncio.sleep(0.2)
    assert imap.errors.records == []
    await imap.assert_serves()


async def test_overlong_authenticate_response(imap: Imap) -> None:
    """An overlong AUTHENTICATE continuation line is refused without a server failure; the session goes on."""
    client = await imap.connect(None)
    await client.send(b"A1 AUTHENTICATE PLAIN\r\n")
    assert (await client.read_line()).startswith(b"+")
    await client.send(b"A" * (imap.cfg.imap.max_line_length + 1000) + b"\r\n")
    lines = await client.read_until(lambda line: line.startswith(b"A1 "))
    assert not lines[-1].startswith(b"A1 OK")
    assert b"SERVERBUG" not in lines[-1]
    assert (await client.command("NOOP")).ok
    assert imap.errors.records == []


async def test_server_stop_says_bye(imap: Imap) -> None:
    """Stopping the daemon tells connected clients BYE and closes them."""
    client = await imap.connect(select="INBOX")
    await imap.server.stop(grace=2)
    lines = await client.read_until(lambda line: line.startswith(b"* BYE"), wait=5)
    assert lines[-1].startswith(b"* BYE")
    assert await client.closed()


async def test_overlong_line_is_answered_before_its_end(imap: Imap) -> None:
    """A 10 MB line without CRLF is answered BAD while it still arrives; the rest is dropped, the session goes on."""
    client = await imap.connect()
    await client.send(b"A1 NOOP ")
    chunk = b"x" * 65536
    answered = None
    for sent in range(160):  # 10 MB, no CRLF
        await client.send(chunk)
        if answered is None:
            try:
                answered = await client.read_line(wait=0.01)
                answered_after = sent
            except TimeoutError:
                pass
    assert answered is not None, "no answer before the end of the line"
    assert answered.startswith(b"A1 BAD"), answered
    assert answered_after < 10
    await client.send(b"\r\n")
    result = await client.command("NOOP")
    assert result.ok, str(result)
    assert result.untagged == []
    await imap.assert_serves()


async def test_overlong_line_with_literal_plus_tail_skips_the_literal(imap: Imap) -> None:
    """An overlong line that ends in a LITERAL+ announcement has that literal dropped too, not run as commands."""
    client = await imap.connect()
    limit = imap.cfg.imap.max_line_length
    await client.send(b"A1 LOGIN " + b"x" * (limit + 10) + b" {20+}\r\n" + b"A2 LOGOUT\r\nA3 LOGOUT" + b"\r\n")
    assert (await client.read_line()).startswith(b"A1 BAD")
    result = await client.command("NOOP")
    assert result.ok, str(result)
    assert result.untagged == []


async def test_overlong_lines_count_as_bad_commands(imap: Imap) -> None:
    """Overlong lines count toward imap.max_bad_commands: a client that keeps sending them is told BYE."""
    client = await imap.connect()
    line = b"A NOOP " + b"x" * (imap.cfg.imap.max_line_length + 10) + b"\r\n"
    for _ in range(imap.cfg.imap.max_bad_commands - 1):
        await client.send(line)
        assert (await client.read_line()).startswith(b"A BAD")
    await client.send(line)
    assert (await client.read_line()).startswith(b"* BYE")
    assert await client.closed()
    await imap.assert_serves()


async def test_command_too_long_across_literals(imap: Imap) -> None:
    """Lines and literals outside an APPEND message are bounded together: past max_line_length, NO [TOOBIG]."""
    client = await imap.connect()
    half = b"y" * (imap.cfg.imap.max_line_length // 2)
    result = await client.command("LOGIN ", Lit(half), " ", Lit(half + b"z" * 100))
    assert (result.status, result.code) == ("NO", "TOOBIG"), str(result)
    many = ["SEARCH"] + [p for _ in range(65) for p in (" SUBJECT ", Lit(b"a", plus=True))]
    await client.ok("SELECT INBOX")
    result = await client.command(*many)
    assert result.status == "BAD", str(result)
    plus = await client.command("LOGIN ", Lit(half + half + b"w", plus=True), " x")
    assert (plus.status, plus.code) == ("NO", "TOOBIG"), str(plus)
    assert (await client.command("NOOP")).ok
    await imap.assert_serves()


async def test_refused_literal_plus_with_line_breaks_is_skipped_exactly(imap: Imap) -> None:
    """A refused LITERAL+ whose data holds CRLFs is skipped by its length; nothing in it runs as a command."""
    client = await imap.connect()
    data = b"A9 LOGOUT\r\n" * (imap.cfg.imap.max_line_length // 11 + 10)
    await client.send(b"A1 LOGIN {%d+}\r\n" % len(data) + data + b" x\r\n")
    result = await client.read_tagged("A1")
    assert (result.status, result.code) == ("NO", "TOOBIG"), str(result)
    assert result.untagged == []
    result = await client.command("NOOP")
    assert result.ok, str(result)
    assert result.untagged == []


_NOISE = [
    b"NOOP", b"FETCH", b"UID", b"SEARCH", b"STORE", b"LIST", b"SELECT", b"STATUS", b"APPEND", b"COPY", b"MOVE",
    b"EXAMINE", b"CREATE", b"SUBSCRIBE", b"ENABLE", b"ID", b"AUTHENTICATE", b"EXPUNGE", b"CLOSE", b"IDLE",
    b" ", b"(", b")", b"[", b"]", b"<", b">", b".", b"*", b"%", b"$", b":", b",", b"\\", b'"', b"~", b"+",
    b"INBOX", b'""', b"NIL", b"1", b"0", b"4294967295", b"1:*", b"*:1", b"FLAGS", b"+FLAGS", b"(\\Seen)",
    b"BODY[", b"BODY.PEEK[HEADER.FIELDS (SUBJECT)]", b"1.2.3", b"<0.10>", b"ENVELOPE", b"ALL", b"OR", b"NOT",
    b"HEADER", b"SINCE 1-Feb-2026", b"31-Feb-2026", b'"07-Dec-2026 10:00:00 +9999"', b"RETURN (ALL SAVE)",
    b"&AAA-", b"&AOk-", b"\x00", b"\xff", b"\xc3\xa9", b"UTF8=ACCEPT", b"IMAP4rev2", b"*%*%*%*%x",
]  # fmt: skip


_MAILBOXES = [
    b"INBOX",
    b"Sent",
    b'"&AAA-"',
    b'"a&AB8-b"',
    b'"&AGE-"',
    b"&Jjo",
    b'"' + b"x" * 1200 + b'"',
    b'""',
    b"{3+}\r\na\x00b",
]
_TEMPLATES = [
    b"SELECT %(m)s", b"EXAMINE %(m)s", b"STATUS %(m)s (MESSAGES %(w)s)", b"CREATE %(m)s", b"DELETE %(m)s",
    b"RENAME %(m)s %(m)s", b"SUBSCRIBE %(m)s", b'LIST "" %(p)s', b"LIST %(m)s %(p)s", b"COPY %(s)s %(m)s",
    b"MOVE %(s)s %(m)s", b"FETCH %(s)s (%(w)s %(w)s)", b"UID FETCH %(s)s %(w)s", b"SEARCH %(w)s %(w)s %(w)s",
    b"STORE %(s)s %(w)sFLAGS (%(w)s)", b"APPEND %(m)s %(d)s {%(k)d+}\r\n%(lit)s", b"UID EXPUNGE %(s)s",
    b"ID (%(w)s %(w)s)", b"ENABLE %(w)s", b"AUTHENTICATE PLAIN %(w)s",
]  # fmt: skip
_SEQUENCES = [b"1", b"1:*", b"*", b"1:4294967295", b"0", b"2,1:*,5", b"$", b"4294967296", b"1:2:3"]
_PATTERNS = [b"*", b"%", b'"' + b"*%" * 15 + b'x"', b'"' + b"*" * 80 + b'x"', b'"&AAA-"', b"INBOX/%"]
_DATES = [b'"07-Dec-2026 10:00:00 +9999"', b'"31-Feb-2026 10:00:00 +0000"', b'" 5-Jan-2026 08:30:00 +0200"', b""]


def _garbage(rng: random.Random, n: int) -> bytes:
    """One hostile command: raw bytes, a soup of grammar tokens, or a real command filled with bad values."""
    kind = rng.random()
    if kind < 0.1:
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))).replace(b"\n", b"").replace(b"{", b"")
        return body + b"\r\n"
    if kind < 0.4:
        line = b"h%d " % n + b"".join(rng.choice(_NOISE) for _ in range(rng.randrange(1, 25)))
        if kind < 0.2:
            data = bytes(rng.randrange(32, 127) for _ in range(rng.randrange(0, 40)))
            line += b" {%d+}\r\n" % len(data) + data + b"".join(rng.choice(_NOISE) for _ in range(rng.randrange(5)))
        return line + b"\r\n"
    literal = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 60)))
    values = {
        b"m": rng.choice(_MAILBOXES), b"p": rng.choice(_PATTERNS), b"s": rng.choice(_SEQUENCES),
        b"w": rng.choice(_NOISE), b"d": rng.choice(_DATES), b"k": len(literal), b"lit": literal,
    }  # fmt: skip
    return b"h%d " % n + rng.choice(_TEMPLATES) % values + b"\r\n"


async def test_garbage_session_beside_a_good_one(imap: Imap) -> None:
    """Hundreds of random and malformed commands in one session; another user's session meanwhile never sees
    an error or a slow answer, and the daemon logs no server failure."""
    rng = random.Random(20260512)
    await imap.deliver()
    good = await imap.connect(select="INBOX")
    stop = asyncio.Event()
    slowest = 0.0
    rounds = 0

    async def behave() -> None:
        nonlocal slowest, rounds
        while not stop.is_set():
            for command in (
                "NOOP",
                "FETCH 1:* (FLAGS UID ENVELOPE)",
                "SEARCH ALL",
                'LIST "" *',
                "STATUS Sent (MESSAGES)",
            ):
                started = time.monotonic()
                result = await good.command(command)
                slowest = max(slowest, time.monotonic() - started)
                assert result.ok, (command, str(result))
            rounds += 1

    answers: list[bytes] = []

    async def attack() -> int:
        sent = 0
        client = await imap.connect("alice@example.com", select="INBOX")
        while sent < 400:
            # Fewer than imap.max_bad_commands in a row, then a good command that resets the count.
            batch = b"".join(_garbage(rng, sent + i) for i in range(8))
            marker = b"zz%d " % sent
            await client.send(batch + marker + b"NOOP\r\n")
            sent += 8
            try:
                lines = await client.read_until(lambda x, end=marker: x.startswith((end, b"* BYE")), wait=5)
            except ConnectionError:
                lines = [b"* BYE (closed)"]
            assert not [x for x in lines if b"SERVERBUG" in x], lines
            answers.extend(lines)
            if lines[-1].startswith(b"* BYE"):
                await client.close()
                client = await imap.connect("alice@example.com", select="INBOX")
        await client.close()
        return sent

    helper = asyncio.ensure_future(behave())
    try:
        started = time.monotonic()
        assert await asyncio.wait_for(attack(), 30) == 400
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        await asyncio.wait_for(helper, 10)
    assert rounds > 0
    assert slowest < 1.0, slowest
    assert elapsed < 15, elapsed
    assert imap.errors.records == []
    await imap.assert_serves()
