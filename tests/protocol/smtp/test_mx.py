"""Port 25 (role mx): what it offers, which recipients it takes, and how it stores what it takes."""

from __future__ import annotations

import re

from .conftest import Smtp
from .helpers import Client, make_message, message_count, outbound, run_session, split_trace, without_results

ACCEPTED = ["250 2.1.0", "250 2.1.5", "250 2.0.0"]


async def test_ehlo_advertises_extensions_but_not_auth(smtp: Smtp) -> None:
    """Port 25's EHLO offers SIZE 52428800, 8BITMIME, SMTPUTF8, PIPELINING, ENHANCEDSTATUSCODES, STARTTLS; no AUTH."""
    client = await Client.connect(smtp.mx)
    assert client.greeting is not None
    assert client.greeting.head == "220"
    assert "mail.example.com" in client.greeting.text
    reply = await client.ehlo()
    assert reply.code == 250
    assert reply.lines[0].startswith("250-mail.example.com")
    keywords = reply.keywords
    for keyword in ("SIZE 52428800", "8BITMIME", "SMTPUTF8", "PIPELINING", "ENHANCEDSTATUSCODES", "STARTTLS"):
        assert keyword in keywords
    assert not [k for k in keywords if k.upper().startswith("AUTH")]
    await client.starttls(smtp.client_tls)
    after = await client.ehlo()
    assert "STARTTLS" not in after.keywords
    assert not [k for k in after.keywords if k.upper().startswith("AUTH")]
    assert "ENHANCEDSTATUSCODES" in after.keywords
    await client.close()


async def test_auth_is_not_implemented_on_mx(smtp: Smtp) -> None:
    """AUTH on port 25 is answered 502 5.5.1, in plain text and after STARTTLS."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    assert (await client.cmd("AUTH PLAIN")).head == "502 5.5.1"
    assert (await client.cmd("AUTH LOGIN")).head == "502 5.5.1"
    await client.starttls(smtp.client_tls)
    await client.ehlo()
    assert (await client.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAHg=")).head == "502 5.5.1"
    assert (await client.cmd("AUTH LOGIN")).head == "502 5.5.1"
    # The session is not broken by it: a message still goes through.
    replies = await client.mail("carol@remote.example", ["bob@example.com"], make_message())
    assert [r.head for r in replies] == ACCEPTED
    await client.close()


async def test_known_address_or_alias_is_delivered_to_inbox(smtp: Smtp) -> None:
    """A known address or alias, in any case, is accepted 250 2.1.5 and the message lands in bob's INBOX."""
    rcpts = ["bob@example.com", "bobby@example.com", "BOB@EXAMPLE.COM", "Bobby@Example.Com"]
    sent = []
    for rcpt in rcpts:
        message = make_message(subject=f"to {rcpt}")
        replies = await run_session(smtp.mx, "carol@remote.example", [rcpt], message)
        assert [r.head for r in replies] == ACCEPTED, rcpt
        sent.append(message)
    stored = await smtp.inbox("bob@example.com")
    assert len(stored) == len(rcpts)
    for copy, message in zip(stored, sent, strict=True):
        assert copy.endswith(message)
    assert await smtp.inbox("alice@example.com") == []
    assert await outbound(smtp) == []


async def test_stored_copy_starts_with_return_path_and_received(smtp: Smtp) -> None:
    """The stored message starts with Return-Path: <sender>, then one Received: from/by/with ESMTP/for line."""
    message = make_message()
    client = await Client.connect(smtp.mx)
    await client.cmd("EHLO relay.remote.example")
    replies = await client.mail("carol@remote.example", ["bobby@example.com"], message)
    assert [r.head for r in replies] == ACCEPTED
    queue_id = re.search(r"accepted as ([0-9a-f]+)", replies[-1].text)
    assert queue_id is not None
    await client.close()
    (stored,) = await smtp.inbox("bob@example.com")
    assert without_results(stored).startswith(b"Return-Path: <carol@remote.example>\r\nReceived: ")
    trace, rest = split_trace(stored)
    assert rest == message
    assert len(trace) == 2
    received = trace[1]
    assert received.startswith("Received: from relay.remote.example ([127.0.0.1])")
    assert "by mail.example.com" in received
    assert re.search(rf"\bwith ESMTP id {queue_id.group(1)}\b", received)
    assert "for <bobby@example.com>;" in received
    assert "version=" not in received


async def test_received_after_starttls_names_esmtps_and_tls_version(smtp: Smtp) -> None:
    """After STARTTLS the trace says 'with ESMTPS' and names the TLS version and cipher."""
    message = make_message()
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    await client.starttls(smtp.client_tls)
    await client.ehlo()
    replies = await client.mail("carol@remote.example", ["bob@example.com"], message)
    assert [r.head for r in replies] == ACCEPTED
    await client.close()
    (stored,) = await smtp.inbox("bob@example.com")
    received = split_trace(stored)[0][1]
    assert re.search(r"\bwith ESMTPS id ", received)
    assert re.search(r"\(version=TLSv1\.[23] cipher=\S+ bits=\d+\)", received)
    assert "for <bob@example.com>;" in received


async def test_received_after_helo_says_smtp(smtp: Smtp) -> None:
    """A client that greets with HELO gets 'with SMTP' in the trace (RFC 3848), not ESMTP."""
    message = make_message()
    client = await Client.connect(smtp.mx)
    assert (await client.cmd("HELO old.remote.example")).code == 250
    replies = await client.mail("carol@remote.example", ["bob@example.com"], message)
    assert [r.head for r in replies] == ACCEPTED
    await client.close()
    (stored,) = await smtp.inbox("bob@example.com")
    assert re.search(r"\bwith SMTP id ", split_trace(stored)[0][1])


async def test_unknown_user_at_hosted_domain_is_refused(smtp: Smtp) -> None:
    """An unknown address at a hosted domain gets 550 5.1.1, and nothing is stored."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    assert (await client.cmd("MAIL FROM:<carol@remote.example>")).head == "250 2.1.0"
    assert (await client.cmd("RCPT TO:<nobody@example.com>")).head == "550 5.1.1"
    assert (await client.cmd("DATA")).head == "503 5.5.1"
    await client.close()
    assert await message_count(smtp) == 0


async def test_foreign_domain_is_relay_denied(smtp: Smtp) -> None:
    """Any domain not hosted here, subdomains of hosted ones included, gets 554 5.7.1 (no open relay)."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    assert (await client.cmd("MAIL FROM:<carol@remote.example>")).head == "250 2.1.0"
    for rcpt in ["carol@remote.example", "bob@sub.example.com", "bob@SUB.Example.COM", "bob@example.org"]:
        assert (await client.cmd(f"RCPT TO:<{rcpt}>")).head == "554 5.7.1", rcpt
    assert (await client.cmd("DATA")).head == "503 5.5.1"
    await client.close()
    assert await message_count(smtp) == 0
    assert await outbound(smtp) == []


async def test_null_sender_bounce_is_accepted(smtp: Smtp) -> None:
    """A bounce (MAIL FROM:<>) is accepted 250 and lands in the INBOX."""
    message = make_message(sender="MAILER-DAEMON@remote.example", subject="Undelivered Mail Returned to Sender")
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    assert (await client.cmd("MAIL FROM:<>")).head == "250 2.1.0"
    assert (await client.cmd("RCPT TO:<bob@example.com>")).head == "250 2.1.5"
    assert (await client.data(message)).head == "250 2.0.0"
    await client.close()
    (stored,) = await smtp.inbox("bob@example.com")
    assert stored.endswith(message)


async def test_null_sender_is_stored_as_empty_return_path(smtp: Smtp) -> None:
    """A bounce is stored with 'Return-Path: <>' (RFC 5321 §4.4), not '<<>>'."""
    message = make_message(sender="MAILER-DAEMON@remote.example", subject="Undelivered Mail Returned to Sender")
    replies = await run_session(smtp.mx, "", ["bob@example.com"], message)
    assert [r.head for r in replies] == ACCEPTED
    (stored,) = await smtp.inbox("bob@example.com")
    assert without_results(stored).startswith(b"Return-Path: <>\r\nReceived: ")


async def test_two_addresses_of_one_user_store_one_copy(smtp: Smtp) -> None:
    """One message to bob@ and his alias bobby@ is stored once in bob's INBOX, with no 'for' clause."""
    message = make_message(to="bob@example.com, bobby@example.com")
    replies = await run_session(smtp.mx, "carol@remote.example", ["bob@example.com", "bobby@example.com"], message)
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.1.5", "250 2.0.0"]
    (stored,) = await smtp.inbox("bob@example.com")
    received = split_trace(stored)[0][1]
    assert " for " not in received
    assert stored.endswith(message)


async def test_bcc_recipient_is_not_disclosed(smtp: Smtp) -> None:
    """Bob and a Bcc'd alice both get the message; no copy names the other envelope recipient."""
    message = make_message(to="Bob <bob@example.com>", subject="Lunch?")
    replies = await run_session(smtp.mx, "carol@remote.example", ["bob@example.com", "alice@example.com"], message)
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.1.5", "250 2.0.0"]
    (bob_copy,) = await smtp.inbox("bob@example.com")
    (alice_copy,) = await smtp.inbox("alice@example.com")
    for copy in (bob_copy, alice_copy):
        trace, rest = split_trace(copy)
        assert rest == message
        assert " for " not in trace[1]
        assert b"alice" not in copy
    # Bob's address appears only where the sender wrote it (the To header).
    assert split_trace(alice_copy)[0][1].count("bob@") == 0


async def test_message_goes_to_envelope_recipients_only(smtp: Smtp) -> None:
    """To/Cc/Bcc headers naming outside or local addresses do not add recipients: only the envelope counts."""
    message = make_message(
        to="victim@evil.org, alice@example.com",
        headers=("Cc: other@evil.org", "Bcc: third@evil.org"),
    )
    replies = await run_session(smtp.mx, "carol@remote.example", ["bob@example.com"], message)
    assert [r.head for r in replies] == ACCEPTED
    assert len(await smtp.inbox("bob@example.com")) == 1
    assert await smtp.inbox("alice@example.com") == []
    assert await outbound(smtp) == []
    assert await smtp.pool.fetchval("SELECT count(*) FROM outbound_recipients") == 0


async def test_vrfy_does_not_confirm_and_expn_is_not_implemented(smtp: Smtp) -> None:
    """VRFY answers 252 2.5.2 for known and unknown users alike; EXPN gets 502 5.5.1."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    known = await client.cmd("VRFY bob@example.com")
    unknown = await client.cmd("VRFY nobody@example.com")
    assert known.head == unknown.head == "252 2.5.2"
    assert known.text == unknown.text
    assert (await client.cmd("EXPN staff")).head == "502 5.5.1"
    await client.close()


async def test_rset_and_noop_and_quit(smtp: Smtp) -> None:
    """RSET drops the transaction (RCPT then needs MAIL again), NOOP is 250 2.0.0 and QUIT 221 2.0.0."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    assert (await client.cmd("MAIL FROM:<carol@remote.example>")).head == "250 2.1.0"
    assert (await client.cmd("RSET")).head == "250 2.0.0"
    assert (await client.cmd("RCPT TO:<bob@example.com>")).head == "503 5.5.1"
    assert (await client.cmd("NOOP")).head == "250 2.0.0"
    assert (await client.cmd("QUIT")).head == "221 2.0.0"
    assert await client.closed()
    await client.close()
