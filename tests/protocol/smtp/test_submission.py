"""Ports 587 (STARTTLS) and 465 (implicit TLS): TLS and AUTH first, own addresses only, local + remote delivery."""

from __future__ import annotations

import email.utils
import logging
import re

import pytest

from .conftest import Smtp
from .helpers import Client, flags, make_message, message_count, outbound, outbound_recipients, split_trace

ALICE = "alice@example.com"


async def submission_client(smtp: Smtp, *, login: str = ALICE, implicit: bool = False) -> Client:
    """A client on 587 after STARTTLS (or on 465), authenticated as ``login`` with alice's smtp key."""
    if implicit:
        client = await Client.connect(smtp.submissions, tls=smtp.client_tls)
    else:
        client = await Client.connect(smtp.submission)
        await client.ehlo()
        await client.starttls(smtp.client_tls)
    await client.ehlo()
    assert (await client.auth_plain(login, smtp.alice_key)).head == "235 2.7.0"
    return client


async def assert_nothing_kept(smtp: Smtp) -> None:
    assert await message_count(smtp) == 0
    assert await outbound(smtp) == []
    assert await outbound_recipients(smtp) == []


async def test_before_starttls_only_ehlo_starttls_noop_quit(smtp: Smtp, caplog: pytest.LogCaptureFixture) -> None:
    """On 587 before STARTTLS, AUTH is not offered and AUTH/MAIL/RCPT/DATA get 530 5.7.0; no key is even checked."""
    caplog.set_level(logging.INFO, logger="relate")
    client = await Client.connect(smtp.submission)
    ehlo = await client.ehlo()
    assert "STARTTLS" in ehlo.keywords
    assert not [k for k in ehlo.keywords if k.upper().startswith("AUTH")]
    assert (await client.auth_plain(ALICE, smtp.alice_key)).head == "530 5.7.0"
    assert (await client.cmd("AUTH LOGIN")).head == "530 5.7.0"
    assert (await client.cmd(f"MAIL FROM:<{ALICE}>")).head == "530 5.7.0"
    assert (await client.cmd("RCPT TO:<bob@example.com>")).head == "530 5.7.0"
    assert (await client.cmd("DATA")).head == "530 5.7.0"
    assert (await client.cmd("NOOP")).head == "250 2.0.0"
    # The refused AUTH left the session unauthenticated: after STARTTLS, MAIL still needs AUTH.
    await client.starttls(smtp.client_tls)
    await client.ehlo()
    assert (await client.cmd(f"MAIL FROM:<{ALICE}>")).head == "530 5.7.0"
    assert (await client.cmd("QUIT")).head == "221 2.0.0"
    await client.close()
    await assert_nothing_kept(smtp)
    assert not [r for r in caplog.records if r.getMessage().startswith("auth-failure")]


async def test_after_starttls_auth_is_offered_and_required(smtp: Smtp) -> None:
    """After STARTTLS, EHLO offers AUTH PLAIN LOGIN (no STARTTLS), and MAIL/RCPT/DATA before AUTH get 530 5.7.0."""
    client = await Client.connect(smtp.submission)
    await client.ehlo()
    await client.starttls(smtp.client_tls)
    ehlo = await client.ehlo()
    assert "STARTTLS" not in ehlo.keywords
    (auth,) = [k for k in ehlo.keywords if k.upper().startswith("AUTH ")]
    assert set(auth.split()[1:]) == {"PLAIN", "LOGIN"}
    assert "ENHANCEDSTATUSCODES" in ehlo.keywords
    assert (await client.cmd(f"MAIL FROM:<{ALICE}>")).head == "530 5.7.0"
    assert (await client.cmd("RCPT TO:<bob@example.com>")).head == "530 5.7.0"
    assert (await client.cmd("DATA")).head == "530 5.7.0"
    await client.close()
    await assert_nothing_kept(smtp)


async def test_implicit_tls_offers_auth_and_requires_it(smtp: Smtp) -> None:
    """On 465 the session is TLS from the first byte: AUTH offered, no STARTTLS, MAIL before AUTH 530 5.7.0."""
    client = await Client.connect(smtp.submissions, tls=smtp.client_tls)
    assert client.greeting is not None
    assert client.greeting.head == "220"
    ehlo = await client.ehlo()
    assert "STARTTLS" not in ehlo.keywords
    assert [k for k in ehlo.keywords if k.upper().startswith("AUTH ")]
    assert (await client.cmd(f"MAIL FROM:<{ALICE}>")).head == "530 5.7.0"
    await client.close()


async def test_spoofed_mail_from_is_refused(smtp: Smtp) -> None:
    """As alice, MAIL FROM bob@, a remote address or <> gets 553 5.7.1; her alias and her address in capitals are OK."""
    client = await submission_client(smtp)
    for spoof in ["bob@example.com", "bobby@example.com", "carol@remote.example", "alice@example.org", ""]:
        assert (await client.cmd(f"MAIL FROM:<{spoof}>")).head == "553 5.7.1", spoof
    assert (await client.cmd("MAIL FROM:<al@example.com>")).head == "250 2.1.0"
    assert (await client.cmd("RSET")).head == "250 2.0.0"
    assert (await client.cmd("MAIL FROM:<ALICE@Example.COM>")).head == "250 2.1.0"
    await client.close()
    await assert_nothing_kept(smtp)


async def test_alias_as_envelope_and_header_sender(smtp: Smtp) -> None:
    """Alice may send as her alias al@ (MAIL FROM and From header); bob gets it with 'Return-Path: <al@...>'."""
    message = make_message(sender="Al <AL@example.com>", subject="from my alias")
    client = await submission_client(smtp)
    replies = await client.mail("al@example.com", ["bob@example.com"], message)
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
    await client.close()
    (stored,) = await smtp.inbox("bob@example.com")
    assert stored.startswith(b"Return-Path: <al@example.com>\r\n")
    assert stored.endswith(message)


async def test_from_header_not_owned_is_refused_after_data(smtp: Smtp) -> None:
    """MAIL FROM alice with a From header that is not (only) hers, or none, gets 550 5.7.1; nothing stored or queued."""
    client = await submission_client(smtp)
    for from_header in [
        "From: bob@example.com",
        "From: Alice <alice@example.com>, Bob <bob@example.com>",
        "From: carol@remote.example",
        "From: alice@example.com\r\nFrom: bob@example.com",
        None,
    ]:
        head = [from_header] if from_header else []
        message = "\r\n".join([*head, "To: bob@example.com, carol@remote.example", "Subject: spoof", "", "hi", ""])
        replies = await client.mail(ALICE, ["bob@example.com", "carol@remote.example"], message.encode())
        assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.1.5", "550 5.7.1"], from_header
    assert await message_count(smtp) == 0
    assert await outbound(smtp) == []
    # The transaction is over, the session is not: a correct message goes through.
    replies = await client.mail(ALICE, ["bob@example.com"], make_message(sender=ALICE))
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
    await client.close()
    assert len(await smtp.inbox("bob@example.com")) == 1
    assert len(await smtp.inbox(ALICE, "Sent")) == 1
    assert await outbound(smtp) == []


async def test_local_and_remote_recipients(smtp: Smtp) -> None:
    """bob@ gets it at once, alice's Sent keeps the exact bytes \\Seen, carol@remote is queued with a Received."""
    message = make_message(sender="Alice <alice@example.com>", to="bob@example.com, carol@remote.example")
    client = await submission_client(smtp)
    replies = await client.mail(ALICE, ["bob@example.com", "carol@remote.example"], message)
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.1.5", "250 2.0.0"]
    await client.close()

    (delivered,) = await smtp.inbox("bob@example.com")
    trace, rest = split_trace(delivered)
    assert rest == message
    assert trace[0] == "Return-Path: <alice@example.com>"
    assert re.search(r"\bwith ESMTPSA id ", trace[1])
    assert " for " not in trace[1]

    assert await smtp.inbox(ALICE, "Sent") == [message]
    assert await flags(smtp, ALICE, "Sent") == [["\\Seen"]]
    assert await smtp.inbox(ALICE) == []

    alice_id = await smtp.pool.fetchval("SELECT id FROM users WHERE address = $1", ALICE)
    (queued,) = await outbound(smtp)
    assert queued["user_id"] == alice_id
    assert queued["status"] == "queued"
    assert queued["mail_from"] == ALICE
    assert queued["from_address"] == ALICE
    assert queued["subject"] == "Hello"
    (rcpt,) = await outbound_recipients(smtp)
    assert rcpt["outbound_email_id"] == queued["id"]
    assert rcpt["address"] == "carol@remote.example"
    assert rcpt["status"] == "pending"
    blob = bytes(await smtp.pool.fetchval("SELECT data FROM blobs WHERE hash = $1", queued["blob_hash"]))
    assert blob.startswith(b"Received: from client.example.org ([127.0.0.1])")
    assert b"Return-Path:" not in blob
    blob_trace, blob_rest = split_trace(blob)
    assert blob_rest == message
    assert blob_trace == [trace[1]]


async def test_remote_only_submission_is_queued_and_kept_in_sent(smtp: Smtp) -> None:
    """A message for remote recipients only is queued once with every recipient and copied to Sent."""
    message = make_message(sender=ALICE, to="carol@remote.example", headers=("Cc: dave@other.example",))
    client = await submission_client(smtp)
    rcpts = ["carol@remote.example", "dave@other.example", "CAROL@REMOTE.EXAMPLE"]
    replies = await client.mail(ALICE, rcpts, message)
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.1.5", "250 2.1.5", "250 2.0.0"]
    await client.close()
    assert await smtp.inbox(ALICE, "Sent") == [message]
    (queued,) = await outbound(smtp)
    assert queued["status"] == "queued"
    assert sorted(r["address"] for r in await outbound_recipients(smtp)) == [
        "carol@remote.example",
        "dave@other.example",
    ]


async def test_unknown_local_recipient_is_refused_on_submission(smtp: Smtp) -> None:
    """A submission to an unknown address at a hosted domain gets 550 5.1.1 (not queued as remote)."""
    client = await submission_client(smtp)
    assert (await client.cmd(f"MAIL FROM:<{ALICE}>")).head == "250 2.1.0"
    assert (await client.cmd("RCPT TO:<nobody@example.com>")).head == "550 5.1.1"
    assert (await client.cmd("RCPT TO:<bob%evil.org@example.com>")).head == "553 5.1.3"
    await client.close()
    await assert_nothing_kept(smtp)


async def test_implicit_tls_submission_is_traced_esmtpsa(smtp: Smtp) -> None:
    """On 465 with AUTH, a message to bob is delivered and its Received says 'with ESMTPSA' and the TLS version."""
    message = make_message(sender=ALICE)
    client = await submission_client(smtp, implicit=True)
    replies = await client.mail(ALICE, ["bob@example.com"], message)
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
    await client.close()
    (stored,) = await smtp.inbox("bob@example.com")
    trace, rest = split_trace(stored)
    assert rest == message
    assert re.search(r"\bwith ESMTPSA id ", trace[1])
    assert re.search(r"\(version=TLSv1\.[23] cipher=\S+ bits=\d+\)", trace[1])
    assert "for <bob@example.com>;" in trace[1]
    assert await smtp.inbox(ALICE, "Sent") == [message]


async def test_alias_login_submits_as_the_user(smtp: Smtp) -> None:
    """Logging in as the alias al@ authenticates alice: MAIL FROM alice@ is hers, bob@ is not."""
    client = await submission_client(smtp, login="al@example.com")
    assert (await client.cmd("MAIL FROM:<bob@example.com>")).head == "553 5.7.1"
    replies = await client.mail(ALICE, ["bob@example.com"], make_message(sender=ALICE))
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
    await client.close()
    assert len(await smtp.inbox(ALICE, "Sent")) == 1


async def test_from_header_that_parses_as_someone_else_is_refused(smtp: Smtp) -> None:
    """A From header that Relate's own parser reads as (also) bob@, like 'alice@example.com <bob@...>', gets 550."""
    tricks = [
        "From: alice@example.com <bob@example.com>",
        "From: <alice@example.com> bob@example.com",
        "From: alice@example.com)<bob@example.com>",
    ]
    client = await submission_client(smtp)
    accepted = []
    for header in tricks:
        message = f"{header}\r\nTo: bob@example.com\r\nSubject: who am I\r\n\r\nhi\r\n".encode()
        replies = await client.mail(ALICE, ["bob@example.com"], message)
        if replies[-1].head != "550 5.7.1":
            accepted.append(header)
    await client.close()
    shown = await smtp.pool.fetch("SELECT from_addr FROM messages ORDER BY id")
    assert accepted == [], [row["from_addr"] for row in shown]


async def test_sender_header_of_another_user_is_refused(smtp: Smtp) -> None:
    """A Sender header naming bob (or anyone but alice), with alice's From, gets 550 5.7.1; nothing stored or queued."""
    client = await submission_client(smtp)
    for sender in [
        "Sender: bob@example.com",
        "Sender: Bob <bob@example.com>",
        "Sender: carol@remote.example",
        "Sender: alice@example.com\r\nSender: bob@example.com",
        "Sender: alice@example.com <bob@example.com>",
        "Sender: <>",
    ]:
        message = f"From: alice@example.com\r\n{sender}\r\nTo: carol@remote.example\r\nSubject: x\r\n\r\nhi\r\n"
        replies = await client.mail(ALICE, ["bob@example.com", "carol@remote.example"], message.encode())
        assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.1.5", "550 5.7.1"], sender
    await client.close()
    await assert_nothing_kept(smtp)


async def test_own_sender_header_is_accepted(smtp: Smtp) -> None:
    """A Sender of alice's own address or alias (any case) goes through like a From of hers."""
    client = await submission_client(smtp)
    for sender in ["Sender: alice@example.com", "Sender: Al <AL@example.com>"]:
        message = make_message(sender="Team <alice@example.com>", headers=(sender,))
        replies = await client.mail(ALICE, ["bob@example.com"], message)
        assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.0.0"], sender
    await client.close()
    assert len(await smtp.inbox("bob@example.com")) == 2


async def test_missing_date_and_message_id_are_added(smtp: Smtp) -> None:
    """A submission without Date and Message-ID gets both (RFC 6409 §8.3-8.4), the id at the sender's domain,
    in every copy: bob's, the Sent copy and the one queued for carol; the rest of the message is as sent."""
    message = b"From: alice@example.com\r\nTo: bob@example.com, carol@remote.example\r\nSubject: bare\r\n\r\nhi\r\n"
    client = await submission_client(smtp)
    replies = await client.mail(ALICE, ["bob@example.com", "carol@remote.example"], message)
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.1.5", "250 2.0.0"]
    await client.close()
    (delivered,) = await smtp.inbox("bob@example.com")
    (sent,) = await smtp.inbox(ALICE, "Sent")
    (queued,) = await outbound(smtp)
    blob = bytes(await smtp.pool.fetchval("SELECT data FROM blobs WHERE hash = $1", queued["blob_hash"]))
    _, rest = split_trace(delivered)
    for copy in (rest, sent, split_trace(blob)[1]):
        added = re.match(rb"Date: ([^\r]+)\r\nMessage-ID: (<[0-9A-Za-z.@_-]+@example\.com>)\r\n", copy)
        assert added is not None, copy[:200]
        assert copy[added.end() :] == message
        assert queued["message_id"] == added.group(2).decode()
    assert email.utils.parsedate_to_datetime(added.group(1).decode()).tzinfo is not None


async def test_present_date_and_message_id_are_kept(smtp: Smtp) -> None:
    """A submission with its own Date and Message-ID is stored exactly as sent (only a missing one is added)."""
    only_date = b"From: alice@example.com\r\nDate: Tue, 03 Nov 2026 09:15:00 +0100\r\nTo: bob@example.com\r\n\r\nhi\r\n"
    client = await submission_client(smtp)
    replies = await client.mail(ALICE, ["bob@example.com"], only_date)
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
    await client.close()
    (sent,) = await smtp.inbox(ALICE, "Sent")
    assert re.fullmatch(rb"Message-ID: <[^>]+@example\.com>\r\n" + re.escape(only_date), sent)
