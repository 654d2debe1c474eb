"""Spam filtering on port 25 with a real rspamd (tests/rspamd.py): what each action does, the X-Spam-* fields, the
sender lists, and rspamd out of reach."""

from __future__ import annotations

import logging

import pytest

from relate.config import Config
from relate.spam import filter as spam_filter
from relate.store import spam as spam_store
from tests.daemons import free_port
from tests.rspamd import RspamdServer
from tests.support import make_message

from .conftest import Smtp
from .helpers import run_session
from .test_submission import submission_client

BOB = "bob@example.com"
ALICE = "alice@example.com"
ACCEPTED = ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


@pytest.fixture
def smtp_config(smtp_config: Config, rspamd_server: RspamdServer) -> Config:
    """The daemon asks the test's rspamd (SPF, DKIM and DMARC stay on, against the empty DNS zone)."""
    smtp_config.smtp.rspamd.url = rspamd_server.url
    smtp_config.smtp.rspamd.timeout = 5.0
    return smtp_config


def gtube() -> bytes:
    return make_message(body=f"Hello,\r\n{GTUBE}\r\n")


async def deliver(smtp: Smtp, message: bytes, rcpts: list[str] | None = None, sender: str = "carol@remote.example"):
    return [r.head for r in await run_session(smtp.mx, sender, rcpts or [BOB], message)]


def field(stored: bytes, name: str) -> list[str]:
    """Every value of field ``name`` in the stored message's header, unfolded."""
    head = stored.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").replace("\r\n\t", " ").replace("\r\n ", " ")
    return [line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith(name.lower() + ":")]


async def user_id(smtp: Smtp, address: str) -> int:
    found = await smtp.pool.fetchval("SELECT id FROM users WHERE address = $1", address)
    assert isinstance(found, int)
    return found


async def test_gtube_is_refused_and_stored_nowhere(smtp: Smtp) -> None:
    """rspamd says reject for GTUBE: 550 5.7.1 at the end of DATA, and neither INBOX nor Junk gets it."""
    assert await deliver(smtp, gtube()) == ["250 2.1.0", "250 2.1.5", "550 5.7.1"]
    assert await smtp.inbox(BOB) == []
    assert await smtp.inbox(BOB, "Junk") == []


async def test_ham_reaches_inbox_with_the_verdict(smtp: Smtp) -> None:
    """No action: INBOX, with X-Spam-Status No and the score rspamd gave."""
    message = make_message(subject="Lunch on Friday?")
    assert await deliver(smtp, message) == ACCEPTED
    [stored] = await smtp.inbox(BOB)
    assert stored.endswith(message)
    [status] = field(stored, "X-Spam-Status")
    assert status.startswith("No, score=")
    assert "action=no_action" in status
    assert field(stored, "X-Spam-Score") == [status.split("score=")[1].split()[0]]


async def test_add_header_files_in_junk_with_symbols(smtp: Smtp) -> None:
    """A score past add_header: accepted, filed in Junk, the symbols named in X-Spam-Symbols."""
    assert await deliver(smtp, make_message(subject="cheap pills today")) == ACCEPTED
    assert await smtp.inbox(BOB) == []
    [stored] = await smtp.inbox(BOB, "Junk")
    [status] = field(stored, "X-Spam-Status")
    assert status.startswith("Yes, score=8.00 ")
    assert "action=add_header" in status
    assert field(stored, "X-Spam-Symbols") == ["RELATE_TEST_SPAMMY(8.00)"]


async def subjects(smtp: Smtp, folder: str = "INBOX") -> list[str]:
    """The subject column of bob's messages in ``folder`` (what IMAP ENVELOPE and the REST list show)."""
    rows = await smtp.pool.fetch(
        """SELECT m.subject FROM messages m JOIN mailboxes x ON x.id = m.mailbox_id JOIN users u ON u.id = x.user_id
            WHERE u.address = $1 AND x.name = $2 ORDER BY m.uid""",
        BOB,
        folder,
    )
    return [r["subject"] for r in rows]


async def test_rewrite_subject_marks_the_subject_and_files_in_inbox(smtp: Smtp) -> None:
    """rspamd says rewrite subject (score 11 past 10): INBOX, the Subject replaced by rspamd's own (once), the
    rest of the message as it came."""
    message = make_message(subject="act now: one offer")
    assert await deliver(smtp, message) == ACCEPTED
    assert await smtp.inbox(BOB, "Junk") == []
    [stored] = await smtp.inbox(BOB)
    assert field(stored, "Subject") == ["***SPAM*** act now: one offer"]
    assert "action=rewrite_subject" in field(stored, "X-Spam-Status")[0]
    assert stored.endswith(message.split(b"\r\n\r\n", 1)[1])
    assert field(stored, "Message-ID") == field(message, "Message-ID")
    assert await subjects(smtp) == ["***SPAM*** act now: one offer"]


async def test_rewrite_subject_keeps_non_ascii_readable(smtp: Smtp) -> None:
    """An encoded (RFC 2047) subject comes back from rspamd encoded: stored as such, read as the marked text."""
    assert await deliver(smtp, make_message(subject="=?UTF-8?Q?Gr=C3=BC=C3=9Fe_act_now?=")) == ACCEPTED
    assert await subjects(smtp) == ["***SPAM*** Grüße act now"]


async def test_rewrite_subject_may_file_in_junk(smtp: Smtp) -> None:
    """With smtp.rspamd.rewrite_subject_folder: junk the marked message goes to Junk."""
    smtp.cfg.smtp.rspamd.rewrite_subject_folder = "junk"
    assert await deliver(smtp, make_message(subject="act now")) == ACCEPTED
    assert await smtp.inbox(BOB) == []
    assert await subjects(smtp, "Junk") == ["***SPAM*** act now"]


async def test_rewrite_subject_leaves_an_allowed_senders_subject_alone(smtp: Smtp) -> None:
    """bob allows the sender, alice does not: one stored copy cannot carry two subjects, so it keeps its own;
    bob's copy is in his INBOX, alice's in her Junk."""
    await spam_store.set_rule(smtp.pool, await user_id(smtp, BOB), "remote.example", spam_store.ALLOW)
    assert (await deliver(smtp, make_message(subject="act now"), [BOB, ALICE]))[-1] == "250 2.0.0"
    assert await subjects(smtp) == ["act now"]
    [junk] = await smtp.inbox(ALICE, "Junk")
    assert field(junk, "Subject") == ["act now"]


async def test_rewrite_subject_never_alters_a_submission(smtp: Smtp) -> None:
    """alice submits (checked: check_submission) a message rspamd would mark: bob's copy keeps alice's subject
    and goes to his Junk, as for add header."""
    smtp.cfg.smtp.rspamd.check_submission = True
    client = await submission_client(smtp)
    replies = await client.mail(ALICE, [BOB], make_message(sender=ALICE, subject="act now"))
    assert [r.head for r in replies] == ACCEPTED
    assert await subjects(smtp) == []
    assert await subjects(smtp, "Junk") == ["act now"]


async def test_greylist_is_deferred(smtp: Smtp) -> None:
    """rspamd greylists: 451 4.7.1, nothing stored (the sender tries again)."""
    assert await deliver(smtp, make_message(subject="maybe later")) == ["250 2.1.0", "250 2.1.5", "451 4.7.1"]
    assert await smtp.inbox(BOB) == []
    assert await smtp.inbox(BOB, "Junk") == []


async def test_the_senders_own_spam_fields_are_removed(smtp: Smtp) -> None:
    """A message that says X-Spam-Status: No of itself keeps only ours."""
    message = make_message(
        subject="cheap pills", headers=("X-Spam-Status: No, score=-100", "X-Spam-Score:\r\n -100", "X-Other: kept")
    )
    assert await deliver(smtp, message) == ACCEPTED
    [stored] = await smtp.inbox(BOB, "Junk")
    assert len(field(stored, "X-Spam-Status")) == 1
    assert field(stored, "X-Spam-Status")[0].startswith("Yes")
    assert field(stored, "X-Spam-Score") == ["8.00"]
    assert field(stored, "X-Other") == ["kept"]
    assert b"-100" not in stored


async def test_submission_skips_rspamd_and_says_so(smtp: Smtp) -> None:
    """Mail alice submits (authenticated) to bob is not sent to rspamd, even GTUBE; the field says why."""
    client = await submission_client(smtp)
    replies = await client.mail(ALICE, [BOB], gtube().replace(b"carol@remote.example", ALICE.encode()))
    assert [r.head for r in replies] == ACCEPTED
    [stored] = await smtp.inbox(BOB)
    assert field(stored, "X-Spam-Status") == ["No, skipped=submission"]


async def test_larger_than_max_size_is_not_checked(smtp: Smtp) -> None:
    """A message over smtp.rspamd.max_size is delivered unchecked, and the field says so."""
    smtp.cfg.smtp.rspamd.max_size = 1024
    message = make_message(body="GTUBE follows\r\n" + "x" * 2000 + f"\r\n{GTUBE}\r\n")
    assert await deliver(smtp, message) == ACCEPTED
    [stored] = await smtp.inbox(BOB)
    [status] = field(stored, "X-Spam-Status")
    assert status.startswith("No, skipped=too-big size=")
    assert status.endswith("max=1024")


async def test_allow_list_overrides_rspamd(smtp: Smtp) -> None:
    """bob allows remote.example: GTUBE from carol@remote.example reaches his INBOX; sent to bob and alice, spam
    is accepted (bob allows it), lands in bob's INBOX and in alice's Junk."""
    await spam_store.set_rule(smtp.pool, await user_id(smtp, BOB), "remote.example", spam_store.ALLOW)
    assert await deliver(smtp, gtube(), [BOB]) == ACCEPTED
    assert len(await smtp.inbox(BOB)) == 1
    assert (await deliver(smtp, make_message(subject="cheap pills"), [BOB, ALICE]))[-1] == "250 2.0.0"
    assert len(await smtp.inbox(BOB)) == 2
    assert await smtp.inbox(ALICE) == []
    assert len(await smtp.inbox(ALICE, "Junk")) == 1


async def test_allow_list_never_passes_a_forged_hosted_from(smtp: Smtp) -> None:
    """bob allows example.com; a From of example.com from outside that fails DMARC is still refused."""
    await spam_store.set_rule(smtp.pool, await user_id(smtp, BOB), "example.com", spam_store.ALLOW)
    message = make_message(sender="Alice <alice@example.com>")
    assert await deliver(smtp, message, sender="alice@example.com") == ["250 2.1.0", "250 2.1.5", "550 5.7.1"]
    assert await smtp.inbox(BOB) == []


async def test_block_list_files_in_junk_or_refuses(smtp: Smtp) -> None:
    """bob blocks carol's address: ham from her lands in Junk; with block_action refuse she gets 550 5.7.1."""
    await spam_store.set_rule(smtp.pool, await user_id(smtp, BOB), "carol@remote.example", spam_store.BLOCK)
    assert await deliver(smtp, make_message()) == ACCEPTED
    assert await smtp.inbox(BOB) == []
    assert len(await smtp.inbox(BOB, "Junk")) == 1
    smtp.cfg.smtp.rspamd.block_action = "refuse"
    assert await deliver(smtp, make_message()) == ["250 2.1.0", "250 2.1.5", "550 5.7.1"]
    assert len(await smtp.inbox(BOB, "Junk")) == 1


async def test_unreachable_accepts_and_logs_once_a_minute(smtp: Smtp, caplog: pytest.LogCaptureFixture) -> None:
    """rspamd down: every message is delivered unchecked (and says so), and the log says it once, not per message."""
    smtp.cfg.smtp.rspamd.url = f"http://127.0.0.1:{free_port()}"
    smtp.server.spam._warned_at = -spam_filter.WARN_EVERY
    with caplog.at_level(logging.INFO, logger="relate.spam"):
        for _ in range(3):
            assert await deliver(smtp, gtube()) == ACCEPTED
    stored = await smtp.inbox(BOB)
    assert [field(s, "X-Spam-Status") for s in stored] == [["No, skipped=unreachable"]] * 3
    lines = [r.getMessage() for r in caplog.records if "spam-rspamd-unreachable" in r.getMessage()]
    assert len(lines) == 1
    assert "on_unreachable=accept" in lines[0]


async def test_unreachable_tempfails_when_configured(smtp: Smtp) -> None:
    """on_unreachable: tempfail: 451 4.7.1 while rspamd is down, nothing stored."""
    smtp.cfg.smtp.rspamd.url = f"http://127.0.0.1:{free_port()}"
    smtp.cfg.smtp.rspamd.on_unreachable = "tempfail"
    assert await deliver(smtp, make_message()) == ["250 2.1.0", "250 2.1.5", "451 4.7.1"]
    assert await smtp.inbox(BOB) == []


async def test_a_message_spooled_to_disk_is_streamed_to_rspamd(smtp: Smtp) -> None:
    """A 600 KiB message (past the spool's memory limit) is streamed to rspamd whole (a short body would leave
    rspamd waiting, and the check would time out): its verdict files it in Junk. (rspamd looks for GTUBE in
    small text parts only, so the subject rule is what scores here.)"""
    message = make_message(subject="cheap pills in bulk", body=("y" * 76 + "\r\n") * 8000)
    assert len(message) > 600_000
    assert await deliver(smtp, message) == ACCEPTED
    [stored] = await smtp.inbox(BOB, "Junk")
    assert field(stored, "X-Spam-Status")[0].startswith("Yes, score=8.00")
    assert stored.endswith(message)
