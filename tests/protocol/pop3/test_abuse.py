"""Hostile and broken clients: garbage, overlong lines, bad commands, idling, not reading, failed handshakes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import socket
import ssl
import warnings

import pytest

from .helpers import ALICE, BOB, Client, Pop3, logged_in, make_message, unstuff, wait_until


async def assert_serves(pop3: Pop3) -> None:
    """The daemon still serves a complete session on a fresh connection."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert (await client.login(ALICE, pop3.alice_key)).startswith("+OK")
    assert (await client.cmd("STAT")).startswith("+OK")
    assert (await client.cmd("QUIT")).startswith("+OK")
    await client.close()


# -- unknown and malformed commands -------------------------------------------------------


@pytest.mark.parametrize("line", [b"FOO", b"XTND XMIT", b"APOP alice@example.com 0123456789abcdef", b"", b"   "])
async def test_unknown_command(pop3: Pop3, line: bytes) -> None:
    """An unknown command (APOP and XTND included) or an empty line answers '-ERR Unknown command'."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert await client.cmd(line) == "-ERR Unknown command"
    assert (await client.login(ALICE, pop3.alice_key)).startswith("+OK")


@pytest.mark.parametrize(
    "line",
    [b"\xff\xfe\xfd\xfc", b"US\xc0ER alice", b"\x80\x81\x82 garbage \xe9", bytes(range(128, 256))],
)
async def test_binary_garbage(pop3: Pop3, line: bytes) -> None:
    """A line that is not UTF-8 answers '-ERR Commands are text' and the session goes on."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert await client.cmd(line) == "-ERR Commands are text"
    assert (await client.login(ALICE, pop3.alice_key)).startswith("+OK")


async def test_nul_and_control_bytes(pop3: Pop3) -> None:
    """NUL and control bytes in a command are an unknown command, not a crash."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert await client.cmd(b"\x00\x01\x02") == "-ERR Unknown command"
    assert await client.cmd(b"USER\x00alice") == "-ERR Unknown command"
    assert (await client.login(ALICE, pop3.alice_key)).startswith("+OK")


async def test_bare_lf_command_line_ends(pop3: Pop3) -> None:
    """Commands ended by a bare LF are accepted like CRLF."""
    await pop3.deliver(ALICE, make_message())
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    await client.write(f"USER {ALICE}\nPASS {pop3.alice_key}\nSTAT\n".encode())
    assert (await client.status()).startswith("+OK")
    assert (await client.status()).startswith("+OK Maildrop has 1 messages")
    assert (await client.status()).startswith("+OK 1 ")


async def test_random_binary_stream(pop3: Pop3) -> None:
    """64 KiB of random bytes make the server close the connection (too many bad commands); it keeps serving."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    await client.write(random.Random(7).randbytes(65536))
    assert await client.closed(10)
    await assert_serves(pop3)


# -- long lines --------------------------------------------------------------------------------


async def test_255_octet_command_is_accepted(pop3: Pop3) -> None:
    """A command line of 255 octets (RFC 2449's limit for clients) is served."""
    client = await logged_in(pop3)
    line = b"NOOP " + b"x" * (255 - 7)
    assert len(line + b"\r\n") == 255
    assert await client.cmd(line) == "+OK"


async def test_line_at_max_line_length_is_accepted(pop3: Pop3) -> None:
    """A command line just inside max_line_length (1024) is served."""
    client = await logged_in(pop3)
    assert await client.cmd(b"NOOP " + b"x" * 1000) == "+OK"


@pytest.mark.parametrize("length", [1100, 5000, 100_000])
async def test_overlong_line_gets_one_reply(pop3: Pop3, length: int) -> None:
    """A line over max_line_length answers one '-ERR Line too long'; the next command's reply follows in step."""
    client = await logged_in(pop3)
    await client.write(b"NOOP " + b"x" * length + b"\r\nSTAT\r\n")
    assert await client.status() == "-ERR Line too long"
    assert await client.status() == "+OK 0 0"


async def test_overlong_line_does_not_kill_the_daemon(pop3: Pop3) -> None:
    """However long the line, the client gets -ERR replies (or is closed) and the daemon keeps serving."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    await client.write(b"USER " + b"a" * 200_000 + b"\r\n")
    assert (await client.status()).startswith("-ERR")
    await assert_serves(pop3)


async def test_overlong_auth_continuation(pop3: Pop3) -> None:
    """An overlong line in answer to AUTH PLAIN's '+ ' is refused with -ERR and the session goes on."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert await client.cmd("AUTH PLAIN") == "+ "
    assert (await client.cmd(b"A" * 3000)).startswith("-ERR")
    assert (await client.auth_plain(ALICE, pop3.alice_key)).startswith("+OK")


# -- non-ASCII digits ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["LIST ²", "RETR ²", "DELE ³", "UIDL ²", "TOP 1 ²"])
async def test_superscript_digits(pop3: Pop3, command: str) -> None:
    """A message number or line count of non-ASCII digits answers -ERR; the session goes on."""
    await pop3.deliver(ALICE, make_message())
    client = await logged_in(pop3)
    assert (await client.cmd(command)).startswith("-ERR")
    assert await client.cmd("NOOP") == "+OK"


async def test_other_unicode_digits_are_not_numbers(pop3: Pop3) -> None:
    """Arabic-Indic or full-width digits are not taken as message numbers (or do not crash)."""
    await pop3.deliver(ALICE, make_message())
    client = await logged_in(pop3)
    for command in ("LIST ١", "RETR １"):
        reply = await client.cmd(command)
        if reply.startswith("+OK") and command.startswith("RETR"):
            await client.body()
    assert await client.cmd("NOOP") == "+OK"


# -- too many bad commands ----------------------------------------------------------------------


async def test_twenty_bad_commands_close_the_connection(pop3: Pop3) -> None:
    """After max_bad_commands (20) invalid commands in a row the server says so and closes the connection."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    for _ in range(19):
        assert await client.cmd("BOGUS") == "-ERR Unknown command"
    assert await client.cmd("BOGUS") == "-ERR Too many invalid commands"
    assert await client.closed()


async def test_bad_commands_of_every_kind_count(pop3: Pop3) -> None:
    """Unknown verbs, binary lines, wrong-state commands and overlong lines all count towards the limit."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    kinds = [b"BOGUS", b"\xff\xfe", b"STAT", b"RETR 1"]
    for n in range(19):
        assert (await client.cmd(kinds[n % len(kinds)])).startswith("-ERR")
    assert await client.cmd("NOOP") == "-ERR Too many invalid commands"
    assert await client.closed()


async def test_pipelined_bad_commands_close_the_connection(pop3: Pop3) -> None:
    """25 bad commands in one write: 20 answers, then the connection closes."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    await client.write(b"BOGUS\r\n" * 25)
    replies = [await client.status() for _ in range(20)]
    assert replies == ["-ERR Unknown command"] * 19 + ["-ERR Too many invalid commands"]
    assert await client.closed()


async def test_good_command_resets_the_bad_count(pop3: Pop3) -> None:
    """A valid command between bad ones starts the count again."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    for _ in range(3):
        for _ in range(19):
            assert await client.cmd("BOGUS") == "-ERR Unknown command"
        assert (await client.cmd("CAPA")).startswith("+OK")
        await client.body()
    assert (await client.login(ALICE, pop3.alice_key)).startswith("+OK")


async def test_refused_arguments_do_not_count_as_bad(pop3: Pop3) -> None:
    """Well-formed commands refused for their arguments (no such message) do not close the connection."""
    client = await logged_in(pop3)
    for _ in range(30):
        assert await client.cmd("RETR 7") == "-ERR No such message"
    assert await client.cmd("NOOP") == "+OK"


async def test_max_bad_commands_is_configurable(pop3: Pop3) -> None:
    """pop3.max_bad_commands sets the limit."""
    pop3.cfg.pop3.max_bad_commands = 3
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert await client.cmd("X") == "-ERR Unknown command"
    assert await client.cmd("X") == "-ERR Unknown command"
    assert await client.cmd("X") == "-ERR Too many invalid commands"
    assert await client.closed()


# -- idling --------------------------------------------------------------------------------------


async def test_idle_timeout_in_authorization(pop3: Pop3) -> None:
    """A client silent for idle_timeout before login gets '-ERR Autologout' and is disconnected."""
    pop3.cfg.pop3.idle_timeout = 0.5
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert await client.status(wait=5) == "-ERR Autologout; idle for too long"
    assert await client.closed()


async def test_idle_timeout_in_transaction(pop3: Pop3) -> None:
    """A logged-in client silent for idle_timeout gets '-ERR Autologout' and is disconnected."""
    pop3.cfg.pop3.idle_timeout = 1.0
    client = await logged_in(pop3)
    assert await client.cmd("NOOP") == "+OK"
    assert await client.status(wait=5) == "-ERR Autologout; idle for too long"
    assert await client.closed()


async def test_activity_keeps_the_session(pop3: Pop3) -> None:
    """Commands more often than idle_timeout keep the session open."""
    pop3.cfg.pop3.idle_timeout = 1.5
    client = await logged_in(pop3)
    for _ in range(7):  # 2.1 s in all, longer than one idle_timeout
        await asyncio.sleep(0.3)
        assert await client.cmd("NOOP") == "+OK"


async def test_slow_partial_line_times_out(pop3: Pop3) -> None:
    """A command line never finished (no LF) counts as idling."""
    pop3.cfg.pop3.idle_timeout = 0.5
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    await client.write(b"US")
    assert await client.status(wait=5) == "-ERR Autologout; idle for too long"
    assert await client.closed()


async def test_idle_timeout_during_auth_continuation(pop3: Pop3) -> None:
    """A client that never answers AUTH PLAIN's '+ ' is disconnected after idle_timeout."""
    pop3.cfg.pop3.idle_timeout = 0.5
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert await client.cmd("AUTH PLAIN") == "+ "
    assert await client.closed(wait=4)


async def test_client_that_stops_reading_loses_the_maildrop(pop3: Pop3) -> None:
    """A client that stops reading during RETR is dropped after idle_timeout and the maildrop is free again."""
    pop3.cfg.pop3.idle_timeout = 1.0
    pop3.cfg.pop3.allow_plaintext_auth = True
    await pop3.deliver(ALICE, make_message(body=("z" * 998 + "\r\n") * 4000))  # 4 MB
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", pop3.pop3))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    stuck = Client(reader, writer)
    await stuck.status()
    assert (await stuck.login(ALICE, pop3.alice_key)).startswith("+OK")
    await stuck.write(b"RETR 1\r\n" * 5)  # 20 MB the client will never read

    async def free() -> bool:
        other = await Client.connect(pop3.pop3)
        reply = await other.login(ALICE, pop3.alice_key)
        await other.close()
        return reply.startswith("+OK")

    assert await wait_until(free, wait=4)


# -- TLS gone wrong -------------------------------------------------------------------------------


async def test_plaintext_on_pop3s(pop3: Pop3) -> None:
    """Plain text on the implicit-TLS port is dropped without a reply; the daemon keeps serving."""
    client = await Client.connect(pop3.pop3s, greet=False)
    await client.write(b"CAPA\r\nUSER alice@example.com\r\n")
    assert await client.closed()
    await assert_serves(pop3)


async def test_failed_stls_handshake(pop3: Pop3) -> None:
    """Garbage instead of a TLS ClientHello after STLS ends that connection; the daemon keeps serving."""
    client = await Client.connect(pop3.pop3)
    assert await client.cmd("STLS") == "+OK Begin TLS negotiation"
    await client.write(b"this is not a ClientHello\r\n" * 10)
    assert await client.closed()
    await assert_serves(pop3)


async def test_failed_stls_handshake_logs_no_traceback(pop3: Pop3, caplog: pytest.LogCaptureFixture) -> None:
    """A failed STLS handshake leaves no ERROR and no traceback in the daemon's log."""
    with warnings.catch_warnings():  # garbage of earlier tests is theirs: the collection below judges this one
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    caplog.set_level(logging.INFO)
    client = await Client.connect(pop3.pop3)
    assert await client.cmd("STLS") == "+OK Begin TLS negotiation"
    await client.write(b"this is not a ClientHello\r\n" * 10)
    assert await client.closed()
    await asyncio.sleep(0.2)
    gc.collect()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage()[:300] for r in errors]


async def test_tls_client_that_vanishes_mid_handshake(pop3: Pop3) -> None:
    """A client that opens TLS on pop3s and resets mid-handshake leaves the daemon serving."""
    sock = socket.create_connection(("127.0.0.1", pop3.pop3s))
    sock.sendall(b"\x16\x03\x01\x00\x05\x01\x00")  # the start of a ClientHello record, then nothing
    sock.close()
    await assert_serves(pop3)


# -- connection limits ------------------------------------------------------------------------------


async def test_connections_per_client_limit(pop3: Pop3) -> None:
    """Over max_connections_per_client, a new connection gets '-ERR [SYS/TEMP] Too many connections' and is closed."""
    pop3.server.max_per_client = 2  # what pop3.max_connections_per_client sets at start
    first = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    second = await Client.connect(pop3.pop3)
    third = await Client.connect(pop3.pop3, greet=False)
    assert await third.status() == "-ERR [SYS/TEMP] Too many connections, try again later"
    assert await third.closed()
    await first.cmd("QUIT")
    assert await first.closed()
    assert await wait_until(lambda: _greets(pop3))
    assert await second.cmd("CAPA") == "+OK Capability list follows"


async def _greets(pop3: Pop3) -> bool:
    client = await Client.connect(pop3.pop3, greet=False)
    greeting = await client.status()
    await client.close()
    return greeting.startswith("+OK")


async def test_many_sessions_at_once(pop3: Pop3) -> None:
    """Twenty sessions at once (the default per-client limit) are all served."""
    raw = make_message()
    await pop3.deliver(ALICE, raw)

    async def one() -> str:
        client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
        caps = await client.capa()
        await client.cmd("QUIT")
        await client.close()
        return caps[0]

    assert await asyncio.gather(*(one() for _ in range(20))) == ["TOP"] * 20
    assert await wait_until(lambda: _greets(pop3))  # the twenty have ended on the server's side too
    client = await logged_in(pop3)
    assert unstuff((await client.multi("RETR 1"))[1]) == raw


# -- numbers past Python's int limit ----------------------------------------------------------------


@pytest.mark.parametrize("command", ["RETR {n}", "DELE {n}", "LIST {n}", "UIDL {n}", "TOP {n} 1"])
async def test_number_of_5000_digits(pop3: Pop3, command: str) -> None:
    """With long lines allowed, a 5,000-digit message number answers -ERR No such message; the session goes on."""
    pop3.cfg.pop3.max_line_length = 10_000
    pop3.server.line_limit = 10_000  # what pop3.max_line_length sets at start
    await pop3.deliver(ALICE, make_message())
    client = await logged_in(pop3)
    assert await client.cmd(command.format(n="9" * 5000)) == "-ERR No such message"
    assert await client.cmd("NOOP") == "+OK"


async def test_top_line_count_of_5000_digits(pop3: Pop3) -> None:
    """TOP with a 5,000-digit line count sends the whole message, as any count past its length does."""
    pop3.cfg.pop3.max_line_length = 10_000
    pop3.server.line_limit = 10_000
    raw = make_message()
    await pop3.deliver(ALICE, raw)
    client = await logged_in(pop3)
    status, body = await client.multi("TOP 1 " + "9" * 5000)
    assert status == "+OK Top of message follows"
    assert unstuff(body) == raw


# -- garbage over the network, beside a well-behaved client ------------------------------------------------


def _garbage_line(rng: random.Random) -> bytes:
    """One line a hostile or broken client might send: random bytes, or a verb with random arguments."""
    verbs = ["USER", "PASS", "AUTH", "STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "NOOP", "RSET", "CAPA", "APOP"]
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 300)).replace(b"\n", b"")
    if kind == 1:
        return b"x" * rng.choice([1023, 1025, 5000, 70_000])  # around max_line_length, and far past it
    args = [
        rng.choice(
            [
                str(rng.randrange(-3, 10)),
                "9" * rng.randrange(5, 900),
                "0" * rng.randrange(1, 50) + "1",
                "²",
                "１",
                "\x00",
                "*",
                "=",
                "PLAIN",
                rng.randbytes(8).hex(),
            ]
        )
        for _ in range(rng.randrange(0, 4))
    ]
    verb = rng.choice(verbs)
    return " ".join([verb.lower() if kind == 2 else verb, *args]).encode()


async def _garbage_session(pop3: Pop3, rng: random.Random) -> None:
    """One connection of garbage: maybe logged in as Bob first, then bursts of bad lines; whatever comes back
    is read (and not judged) so the server never waits on this client."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)

    async def drain() -> None:
        with contextlib.suppress(ConnectionError, OSError, ssl.SSLError):
            while await client.reader.read(65536):
                pass

    reading = asyncio.create_task(drain())
    try:
        if rng.random() < 0.5:
            await client.write(f"USER {BOB}\r\nPASS {pop3.bob_key}\r\n".encode())
        for _ in range(rng.randrange(1, 6)):
            burst = b"".join(_garbage_line(rng) + rng.choice([b"\r\n", b"\n"]) for _ in range(rng.randrange(1, 30)))
            await client.write(burst)
            await asyncio.sleep(rng.random() * 0.02)
        if rng.random() < 0.3:
            await client.write(b"RETR 1")  # half a line, then gone
        if rng.random() < 0.5:
            client.drop()
    except (ConnectionError, OSError, ssl.SSLError):
        pass  # closed for too many bad commands: what it deserves
    finally:
        await client.close()
        await asyncio.wait_for(reading, 10)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_garbage_beside_a_well_behaved_client(pop3: Pop3, seed: int, caplog: pytest.LogCaptureFixture) -> None:
    """Garbage lines from one client (logged in as Bob or not) never disturb Alice's downloads, nor log an error."""
    pop3.cfg.auth.max_failures = 1_000_000  # garbage PASS lines must not lock 127.0.0.1, Alice's address too, out
    msgs = [make_message(subject=f"m{n}", body=f".{n}\r\nline\r\n") for n in range(5)]
    for raw in msgs:
        await pop3.deliver(ALICE, raw)
        await pop3.deliver(BOB, raw)
    rng = random.Random(seed)

    async def garbage() -> None:
        for _ in range(25):
            await _garbage_session(pop3, rng)

    async def well_behaved() -> None:
        client = await logged_in(pop3)
        assert await client.cmd("STAT") == f"+OK 5 {sum(len(m) for m in msgs)}"
        assert (await client.multi("UIDL"))[0] == "+OK Unique-id listing follows"
        for n, raw in enumerate(msgs, 1):
            status, body = await client.multi(f"RETR {n}")
            assert status == f"+OK {len(raw)} octets"
            assert unstuff(body) == raw
        assert (await client.multi("TOP 1 1"))[0] == "+OK Top of message follows"
        assert await client.cmd("DELE 2") == "+OK Message 2 deleted"
        assert await client.cmd("RSET") == "+OK Maildrop has 5 messages"
        assert await client.cmd("QUIT") == "+OK Relate Mail POP3 server signing off"
        assert await client.closed()

    hostile = asyncio.create_task(garbage())
    rounds = 0
    try:
        while not hostile.done() or rounds < 3:
            await well_behaved()
            rounds += 1
    finally:
        await hostile
    errors = [r.getMessage()[:200] for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    await assert_serves(pop3)


async def test_a_client_gone_while_its_input_waits_is_closed_at_once(pop3: Pop3) -> None:
    """DELE and QUIT, a long unfinished line behind them (more than the reader holds) and the client's FIN,
    all at once over TLS: the server's end of the connection goes at once (asyncio's TLS layer ignored the
    server's close when the FIN came while the reader was full, and the socket stayed open, unanswered,
    until garbage collection)."""
    await pop3.deliver(ALICE, make_message())
    client = await logged_in(pop3)
    client.writer.write(b"DELE 1\r\nQUIT\r\n" + b"A" * (3 * pop3.cfg.pop3.max_line_length))
    await client.writer.drain()
    client.writer.get_extra_info("socket").shutdown(socket.SHUT_WR)  # a FIN, no TLS close_notify: gone
    # TLS has no half-close: what the server answers after the FIN is not sent, but the connection must end.
    await asyncio.wait_for(client.reader.read(), 10)
    assert client.reader.at_eof()
