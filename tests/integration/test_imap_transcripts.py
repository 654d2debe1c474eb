"""RFC 9051 conversations, one transcript file per case, played against an in-process IMAP daemon.

Each case gets a fresh database holding the same account and messages (see
``seed``), so transcripts can name UIDs, sizes and dates exactly. Files live
in ``tests/transcripts/imap/``; ``$KEY`` in them is alice's IMAP key.
"""

from __future__ import annotations

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
from relate.store import mailboxes, messages
from relate.testing import transcript

TRANSCRIPTS = Path(__file__).resolve().parent.parent / "transcripts" / "imap"
USER = "alice@example.com"

# Cases that fail because of a bug in the daemon: file name -> the bug (reported, with its fix).
KNOWN_BUGS: dict[str, str] = {}


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
            "Date: Tue, 10 Mar 2026 08:30:00 +0000\n"
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
    async with pool.acquire() as conn:
        for folder, items in (("INBOX", INBOX), ("Work", WORK)):
            box = await mailboxes.get(conn, user["id"], folder)
            assert box is not None
            for raw, flags, when in items:
                await messages.ingest(conn, raw, [box["id"]], flags=flags, internal_date=when)
    return key


@dataclass
class Imap:
    server: ImapServer
    port: int
    key: str


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
    server = ImapServer(cfg, pool, Authenticator(pool, cfg.auth))
    await server.start()
    yield Imap(server, server.addresses("imap")[0][1], key)
    await server.stop(grace=1)


def _cases() -> list[object]:
    cases: list[object] = []
    for path in sorted(TRANSCRIPTS.glob("*.txt")):
        marks = []
        if path.name in KNOWN_BUGS:
            marks.append(pytest.mark.xfail(reason=KNOWN_BUGS[path.name], strict=True))
        cases.append(pytest.param(path, id=path.stem, marks=marks))
    return cases


@pytest.mark.parametrize("path", _cases())
async def test_transcript(imap: Imap, path: Path) -> None:
    """The daemon answers the transcript's commands exactly as scripted, line for line."""
    script = transcript.Transcript.load(path, {"KEY": imap.key})
    await transcript.run(script, "127.0.0.1", imap.port, read_timeout=10)


def test_transcripts_exist() -> None:
    """The transcript directory holds the cases this module parametrizes over, and each one parses."""
    files = sorted(TRANSCRIPTS.glob("*.txt"))
    assert len(files) >= 20
    for path in files:
        assert transcript.Transcript.load(path, {"KEY": "k"}).steps
