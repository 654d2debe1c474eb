"""RFC 9051 conversations, one transcript file per case, played against an in-process IMAP daemon.

Each case gets a fresh database holding the same account and messages (see
``seed``), so transcripts can name UIDs, sizes and dates exactly. Files live
in ``tests/transcripts/imap/``; ``$KEY`` in them is alice's IMAP key,
``$PLAIN`` her SASL PLAIN response (RFC 4616), base64-encoded, and
``$UIDVALIDITY`` her INBOX's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from relate.auth import Authenticator
from relate.config import Config, ListenerConfig
from relate.imap.server import ImapServer
from relate.runtime.tls import make_self_signed
from relate.services import accounts
from relate.store import imap_messages, mailboxes, messages
from relate.testing import transcript

TRANSCRIPTS = Path(__file__).resolve().parent.parent / "transcripts" / "imap"
USER = "alice@example.com"


def _crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


# The fixed mailbox contents. Changing a message changes sizes and offsets the transcripts spell out.
INBOX = [
    # 1: RFC 9051 §7.5.2's ENVELOPE example, as a whole message.
    (
        _crlf(
            "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\n"
            "From: Terry Gray <gray@cac.washington.example>\n"
            "Subject: IMAP4rev2 WG mtg summary and minutes\n"
            "To: imap@cac.washington.example\n"
            "Cc: minutes@CNRI.Reston.VA.example, John Klensin <KLENSIN@MIT.EDU.example>\n"
            "Message-Id: <B27397-0100000@cac.washington.example>\n"
            "MIME-Version: 1.0\n"
            "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n"
            "\n"
            "The minutes of the meeting follow.\n"
        ),
        ["\\Seen"],
        datetime(1996, 7, 17, 9, 44, 25, tzinfo=UTC),
    ),
    # 2: plain text, unseen.
    (
        _crlf(
            "Date: Fri, 06 Mar 2026 09:15:00 +0000\n"
            "From: Bob <bob@example.com>\n"
            "To: Alice <alice@example.com>\n"
            "Subject: Lunch on Friday?\n"
            "Message-ID: <lunch-1@example.com>\n"
            "\n"
            "Shall we try the new noodle place?\n"
        ),
        [],
        datetime(2026, 3, 6, 9, 15, 1, tzinfo=UTC),
    ),
    # 3: multipart with an attachment, flagged, unseen.
    (
        _crlf(
            "Date: Mon, 09 Mar 2026 14:00:00 +0100\n"
            "From: Carol <carol@example.org>\n"
            "To: alice@example.com\n"
            "Subject: Quarterly report\n"
            "Message-ID: <report-q1@example.org>\n"
            "MIME-Version: 1.0\n"
            'Content-Type: multipart/mixed; boundary="b1"\n'
            "\n"
            "--b1\n"
            "Content-Type: text/plain; charset=utf-8\n"
            "\n"
            "The figures are attached.\n"
            "--b1\n"
            'Content-Type: text/csv; name="q1.csv"\n'
            'Content-Disposition: attachment; filename="q1.csv"\n'
            "Content-Transfer-Encoding: base64\n"
            "\n"
            "cXVhcnRlcixyZXZlbnVlCjEsMTAwCg==\n"
            "--b1--\n"
        ),
        ["\\Flagged"],
        datetime(2026, 3, 9, 13, 0, 2, tzinfo=UTC),
    ),
    # 4: a reply, seen and answered.
    (
        _crlf(
            # Sent on 10 March in its own zone, 9 March in UTC: SENTON must go by the former.
            "Date: Tue, 10 Mar 2026 00:30:00 +0100\n"
            "From: Bob <bob@example.com>\n"
            "To: Alice <alice@example.com>\n"
            "Subject: Re: Lunch on Friday?\n"
            "Message-ID: <lunch-2@example.com>\n"
            "In-Reply-To: <lunch-1@example.com>\n"
            "\n"
            "Noodles it is. Noon?\n"
        ),
        ["\\Seen", "\\Answered"],
        datetime(2026, 3, 10, 8, 30, 3, tzinfo=UTC),
    ),
]
WORK = [
    (
        _crlf(
            "From: Dave <dave@example.net>\n"
            "To: alice@example.com\n"
            "Subject: Build is green\n"
            "Message-ID: <ci-1@example.net>\n"
            "\n"
            "All tests pass.\n"
        ),
        ["\\Seen"],
        datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC),
    ),
    (
        _crlf(
            "From: Dave <dave@example.net>\n"
            "To: alice@example.com\n"
            "Subject: Build is red\n"
            "Message-ID: <ci-2@example.net>\n"
            "\n"
            "One test fails.\n"
        ),
        [],
        datetime(2026, 3, 3, 12, 0, 0, tzinfo=UTC),
    ),
]
# Folders besides the defaults (INBOX Sent Drafts Trash Junk Archive); "Work/Projects" is empty.
FOLDERS = ["Work", "Work/Projects", "Friends"]


async def seed(pool: asyncpg.Pool) -> str:
    """example.com with alice, her folders and the messages above; returns her IMAP key."""
    await accounts.add_domain(pool, "example.com")
    user = await accounts.add_user(pool, USER, "Alice")
    key, _ = await accounts.create_key(pool, USER, "transcripts", "imap", rounds=4)
    for name in FOLDERS:
        await mailboxes.create(pool, user["id"], name)
    await mailboxes.subscribe(pool, user["id"], FOLDERS)  # as a client subscribes the folders it makes
    async with pool.acquire() as conn:
        for folder, items in (("INBOX", INBOX), ("Work", WORK)):
            box = await mailboxes.get(conn, user["id"], folder)
            assert box is not None
            for raw, flags, when in items:
                await messages.ingest(conn, raw, [box["id"]], flags=flags, internal_date=when)
        # An account whose mail some session has looked at already: nothing is \Recent when a transcript starts.
        for box in await mailboxes.list_all(conn, user["id"]):
            await imap_messages.claim_recent(conn, box["id"], None)
    return key


@dataclass
class Imap:
    server: ImapServer
    port: int
    key: str
    uidvalidity: int  # INBOX's, for QRESYNC


@pytest.fixture
async def imap(pool: asyncpg.Pool, dsn: str, tmp_path: Path) -> AsyncIterator[Imap]:
    """The IMAP daemon on a loopback ephemeral port, plaintext LOGIN allowed, over the seeded account."""
    cert, tls_key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_self_signed(cert, tls_key, "mail.example.com")
    cfg = Config(hostname="mail.example.com")
    cfg.database.dsn = dsn
    cfg.tls.cert, cfg.tls.key = cert, tls_key
    cfg.auth.bcrypt_rounds = 4
    cfg.imap.imap = ListenerConfig(listen=["127.0.0.1:0"])
    cfg.imap.imaps = ListenerConfig(listen=[])
    cfg.imap.allow_plaintext_auth = True
    key = await seed(pool)
    uidvalidity = await pool.fetchval("SELECT uidvalidity FROM mailboxes WHERE upper(name) = 'INBOX'")
    server = ImapServer(cfg, pool, Authenticator(pool, cfg.auth))
    await server.start()
    yield Imap(server, server.addresses("imap")[0][1], key, uidvalidity)
    await server.stop(grace=1)


def _cases() -> list[object]:
    return [pytest.param(path, id=path.stem) for path in sorted(TRANSCRIPTS.glob("*.txt"))]


@pytest.mark.parametrize("path", _cases())
async def test_transcript(imap: Imap, path: Path) -> None:
    """The daemon answers the transcript's commands exactly as scripted, line for line."""
    script = transcript.Transcript.load(path, _substitutions(imap.key, imap.uidvalidity))
    await transcript.run(script, "127.0.0.1", imap.port, read_timeout=10)


def _substitutions(key: str, uidvalidity: int = 1) -> dict[str, str]:
    """``$KEY`` and ``$PLAIN`` for a key of alice's, ``$UIDVALIDITY`` for her INBOX."""
    plain = base64.b64encode(f"\0{USER}\0{key}".encode()).decode()
    return {"KEY": key, "PLAIN": plain, "UIDVALIDITY": str(uidvalidity)}


def test_transcripts_parse() -> None:
    """Every transcript file parses (literal lengths add up) with a key of the real length."""
    files = sorted(TRANSCRIPTS.glob("*.txt"))
    assert len(files) >= 30
    fake_key = "relate_" + "0" * 12 + "_" + "x" * 32
    for path in files:
        assert transcript.Transcript.load(path, _substitutions(fake_key)).steps


# -- the runner itself, against a scripted fake server -------------------------------------------------


@dataclass
class Fake:
    port: int
    received: bytearray
    done: asyncio.Event


@contextlib.asynccontextmanager
async def fake_server(lines: list[str], *, close: bool = False) -> AsyncIterator[Fake]:
    """A server that sends ``lines`` (CRLF added) at once, then records what it reads until EOF (or closes)."""
    received = bytearray()
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"".join(line.encode() + b"\r\n" for line in lines))
            await writer.drain()
            while not close and (data := await reader.read(4096)):
                received.extend(data)
        finally:
            writer.close()
            done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield Fake(server.sockets[0].getsockname()[1], received, done)
    finally:
        server.close()
        await server.wait_closed()


async def _fails(source: str, lines: list[str], *, close: bool = False) -> str:
    async with fake_server(lines, close=close) as fake:
        with pytest.raises(transcript.TranscriptError) as info:
            await transcript.run(
                transcript.Transcript.parse(source, "case.txt"), "127.0.0.1", fake.port, read_timeout=0.3
            )
    return str(info.value)


async def test_runner_sends_literals_as_the_rfc_shows_them() -> None:
    """RFC 9051 §7.5's LOGIN with two literals goes out as the exact octets, and the run passes."""
    source = "S: * OK hi\nC: A001 LOGIN {11}\nS: + Ready\nC: FRED FOOBAR {7}\nS: + Ready\nC: fat man\nS: A001 OK {.*}\n"
    async with fake_server(["* OK hi", "+ Ready", "+ Ready", "A001 OK LOGIN completed"]) as fake:
        result = await transcript.run(transcript.Transcript.parse(source), "127.0.0.1", fake.port, trailing=0.05)
        await asyncio.wait_for(fake.done.wait(), 5)
    assert bytes(fake.received) == b"A001 LOGIN {11}\r\nFRED FOOBAR {7}\r\nfat man\r\n"
    assert result.received[-1] == "A001 OK LOGIN completed"


def test_runner_counts_multiline_literals() -> None:
    """A literal spans C: lines with CRLF breaks; an empty C: line after it ends the command."""
    source = "C: a APPEND INBOX {13}\nS: + go\nC: Subject: hi\nC:\nC: b NOOP {0+}\nC:\n"
    steps = transcript.Transcript.parse(source).steps
    sent = b"".join(s.data for s in steps if isinstance(s, transcript.Send))
    assert sent == b"a APPEND INBOX {13}\r\nSubject: hi\r\n\r\nb NOOP {0+}\r\n\r\n"


def test_runner_refused_literal_sends_no_data() -> None:
    """A non-"+" answer to a synchronizing literal ends the command: the next C: line is a new command."""
    steps = transcript.Transcript.parse("C: a APPEND INBOX {99}\nS: a NO [TOOBIG] no\nC: b NOOP\n").steps
    assert [s.text for s in steps] == ["a APPEND INBOX {99}", "a NO [TOOBIG] no", "b NOOP"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("C: a {5}\nS: + go\nC: abcd\n", "case.txt:3: the literal opened on line 1 ends between CR and LF"),
        ("C: a {5}\nC: hello\n", "case.txt:2: script the server's continuation request"),
        ("C: a {10}\nS: + go\nC: hi\n", "case.txt:1: the file ends 6 octets before the literal"),
        ("C: a {3+}\n\nC: abc\n", "case.txt:2: inside a client literal"),
        ("S: * OK {unclosed\n", "case.txt:1: unclosed {"),
        ("S: * OK }\n", "case.txt:1: unmatched }"),
        ("S: * OK {(}\n", "case.txt:1: bad regex in hole"),
        ("X: hello\n", "case.txt:1: expected C: or S:"),
    ],
)
def test_runner_rejects_malformed_transcripts(source: str, message: str) -> None:
    """Malformed transcripts fail to parse with file:line and the reason."""
    with pytest.raises(transcript.TranscriptSyntaxError, match=re.escape(message)):
        transcript.Transcript.parse(source, "case.txt")


@pytest.mark.parametrize(
    ("line", "got", "matches"),
    [
        (r"* {\d+} EXISTS", "* 12 EXISTS", True),
        (r"* {\d+} EXISTS", "* x EXISTS", False),
        ("* 1 FETCH (BODY[] {20}", "* 1 FETCH (BODY[] {20}", True),
        ("{{not a hole}}", "{not a hole}", True),
        (r"a {\d{2}} b", "a 42 b", True),
        ("(FLAGS ({.*}))", "(FLAGS (\\Seen))", True),
        ("[$V]", "[a.b]", True),
        ("[$V]", "[aXb]", False),
        ("$Forwarded", "$Forwarded", True),
        ("tail", "tail ", False),
    ],
)
def test_runner_holes(line: str, got: str, matches: bool) -> None:
    """{regex} holes match variable parts; all else, substitutions included, matches literally and whole."""
    (step,) = transcript.Transcript.parse(f"S: {line}\n", substitutions={"V": "a.b"}).steps
    assert isinstance(step, transcript.Expect)
    assert (step.pattern.fullmatch(got) is not None) is matches


async def test_runner_reports_a_mismatch() -> None:
    """A wrong server line fails with file:line, expected and got, and the exchange so far."""
    text = await _fails("# x\nS: * OK hi\nC: a1 NOOP\nS: a1 OK {.*}\n", ["* OK hi", "a1 NO nope"])
    assert "case.txt:4: the server's line does not match" in text
    assert "- expected: S: a1 OK {.*}" in text
    assert "+ got:      S: a1 NO nope" in text
    assert "  C: a1 NOOP" in text


async def test_runner_reports_a_timeout() -> None:
    """A silent server fails the run after read_timeout, naming the line it waited for."""
    text = await _fails("S: * OK hi\nC: a1 NOOP\nS: a1 OK done\n", ["* OK hi"])
    assert "case.txt:3: timed out after 0.3 s waiting for the server" in text
    assert "1 scripted line(s) left unconsumed" in text


async def test_runner_reports_unconsumed_lines() -> None:
    """A connection closed early fails the run, listing the scripted lines left unconsumed."""
    text = await _fails("S: * OK hi\nS: * more\nC: a1 NOOP\nS: a1 OK done\n", ["* OK hi"], close=True)
    assert "case.txt:2: the server closed the connection" in text
    assert "3 scripted line(s) left unconsumed" in text
    assert "  4: S: a1 OK done" in text


async def test_runner_reports_extra_output() -> None:
    """Anything the server sends after the script's last line fails the run."""
    text = await _fails("S: * OK hi\n", ["* OK hi", "* BYE surprise"])
    assert "case.txt:1: the server sent more than the script expects" in text
    assert "+ unexpected: S: * BYE surprise" in text
