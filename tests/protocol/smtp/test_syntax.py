"""Command syntax: a malformed command gets 501 or 553 and nothing else, never 451 ("our side failed")."""

from __future__ import annotations

import logging

import pytest

from .conftest import Smtp
from .helpers import Client, assert_serves, make_message, message_count

# Each of these once got "451 4.3.0" (an exception inside the server), so a sender retried it for days.
BROKEN_PATHS = [
    ("MAIL FROM:<", "501 5.5.4"),
    ("MAIL FROM:<carol@", "501 5.5.4"),
    ("MAIL FROM:", "501 5.5.4"),
    ("MAIL FROM:<carol@remote.example", "501 5.5.4"),
    ("MAIL FROM:carol@remote.example>", "501 5.5.4"),
    ("MAIL FROM:<carol@remote.example> SIZE", "501 5.5.4"),
    ("MAIL FROM:<carol@remote.example> SIZE=", "501 5.5.4"),
    ("MAIL FROM:<carol@remote.example> =x", "501 5.5.4"),
    ("MAIL FROM:<carol@remote.example> SIZE=1 SIZE=2", "501 5.5.4"),
    ("MAIL FROM:<carol@remote.example> SIZE=99999999999999999999999", "501 5.5.4"),
]


async def test_unterminated_paths_get_501(smtp: Smtp, caplog: pytest.LogCaptureFixture) -> None:
    """'MAIL FROM:<', '<carol@', a path without '>' and broken parameters get 501 5.5.4; nothing is logged as failed."""
    caplog.set_level(logging.INFO, logger="relate")
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    for command, head in BROKEN_PATHS:
        assert (await client.cmd(command)).head == head, command
    await client.close()
    assert not [r for r in caplog.records if r.getMessage().startswith(("smtp-error", "smtp-tempfail"))]


async def test_unterminated_recipient_is_501_and_not_accepted(smtp: Smtp) -> None:
    """'RCPT TO:<demo@', '<bob@example.com' without '>' and the like get 501 5.5.4, and no recipient is added."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    assert (await client.cmd("MAIL FROM:<carol@remote.example>")).head == "250 2.1.0"
    for command in [
        "RCPT TO:<bob@",
        "RCPT TO:<bob@example.com",
        "RCPT TO:<",
        "RCPT TO:",
        "RCPT TO:<bob@example.com> =",
        "RCPT TO <bob@example.com>",
    ]:
        assert (await client.cmd(command)).head == "501 5.5.4", command
    # None of them counted: there is still no recipient to send data to.
    assert (await client.cmd("DATA")).head == "503 5.5.1"
    await client.close()


async def test_control_bytes_and_invalid_utf8_in_paths_are_refused(smtp: Smtp) -> None:
    """NUL, other controls and invalid UTF-8 inside <...> get 553 5.1.3 (sender and recipient), never 250."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    for path in [b"<a\x00b@x.example>", b"<\xff\xfe@x.example>", b"<a\x01b@x.example>", b"<a\x7fb@x.example>"]:
        assert (await client.cmd(b"MAIL FROM:" + path + b" SMTPUTF8")).head == "553 5.1.3", path
        assert (await client.cmd(b"MAIL FROM:" + path)).head == "553 5.1.3", path
    assert (await client.cmd("MAIL FROM:<carol@remote.example>")).head == "250 2.1.0"
    for path in [b"<b\x00ob@example.com>", b"<bob@exa\x00mple.com>", b"<\xc3(@example.com>", b"<bob@\xff.example.com>"]:
        assert (await client.cmd(b"RCPT TO:" + path + b"")).head == "553 5.1.3", path
    await client.close()
    assert await message_count(smtp) == 0


async def test_nul_in_sender_never_reaches_the_stored_message(smtp: Smtp) -> None:
    """A sender with a NUL is refused, so a following transaction's Return-Path is the clean sender."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    assert (await client.cmd(b"MAIL FROM:<a\x00b@remote.example>")).head == "553 5.1.3"
    replies = await client.mail("carol@remote.example", ["bob@example.com"], make_message())
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
    await client.close()
    (stored,) = await smtp.inbox("bob@example.com")
    assert stored.startswith(b"Return-Path: <carol@remote.example>\r\n")
    assert b"\x00" not in stored


async def test_non_ascii_paths_need_smtputf8(smtp: Smtp) -> None:
    """A UTF-8 sender or recipient without SMTPUTF8 on MAIL gets 553 5.6.7 (RFC 6531 §3.5); with it, 250."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    assert (await client.cmd("MAIL FROM:<müller@bücher.example>")).head == "553 5.6.7"
    assert (await client.cmd("MAIL FROM:<carol@remote.example>")).head == "250 2.1.0"
    assert (await client.cmd("RCPT TO:<jörg@example.com>")).head == "553 5.6.7"
    assert (await client.cmd("RSET")).head == "250 2.0.0"
    assert (await client.cmd("MAIL FROM:<müller@bücher.example> SMTPUTF8")).head == "250 2.1.0"
    await client.close()


async def test_well_formed_but_unusable_paths_get_553(smtp: Smtp) -> None:
    """Paths that are delimited but not a mailbox ('<>' as recipient, '<<>>', '<a@b@c>', '<@x:a@b>') get 553 5.1.3."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    assert (await client.cmd("MAIL FROM:<<>>")).head == "553 5.1.3"
    assert (await client.cmd("MAIL FROM:<@relay.example:carol@remote.example>")).head == "553 5.1.3"
    assert (await client.cmd("MAIL FROM:<carol@remote.example>")).head == "250 2.1.0"
    for path in [
        "<>",
        "<<>>",
        "<bob@evil.org@example.com>",
        "<@relay.example:bob@example.com>",
        "<bob@>",
        "<@>",
        "<bob@example.com>>",
    ]:
        assert (await client.cmd(f"RCPT TO:{path}")).head == "553 5.1.3", path
    await client.close()


async def test_parameters_are_checked(smtp: Smtp) -> None:
    """Unknown MAIL/RCPT parameters get 555 5.5.4; SIZE/BODY/SMTPUTF8 in any case pass; parameters after HELO 555."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    assert (await client.cmd("MAIL FROM:<carol@remote.example> FOO=BAR")).head == "555 5.5.4"
    assert (await client.cmd("MAIL FROM:<carol@remote.example> size=100 body=8bitmime smtputf8")).head == "250 2.1.0"
    assert (await client.cmd("RCPT TO:<bob@example.com> NOTIFY=NEVER")).head == "555 5.5.4"
    assert (await client.cmd("RCPT TO:<bob@example.com>")).head == "250 2.1.5"
    await client.close()
    helo = await Client.connect(smtp.mx)
    await helo.cmd("HELO client.example.org")
    assert (await helo.cmd("MAIL FROM:<carol@remote.example> SIZE=100")).head == "555 5.5.4"
    assert (await helo.cmd("MAIL FROM:<carol@remote.example>")).head == "250 2.1.0"
    await helo.close()


async def test_lenient_forms_real_clients_send(smtp: Smtp) -> None:
    """'MAIL FROM: <x>' (a space after the colon), lower-case verbs and bare 'RCPT TO:addr' are accepted."""
    client = await Client.connect(smtp.mx)
    await client.cmd("ehlo client.example.org")
    assert (await client.cmd("mail from: <carol@remote.example>")).head == "250 2.1.0"
    assert (await client.cmd("rcpt to:bob@example.com")).head == "250 2.1.5"
    assert (await client.data(make_message())).head == "250 2.0.0"
    await client.close()
    assert len(await smtp.inbox("bob@example.com")) == 1


async def test_malformed_commands_never_get_451(smtp: Smtp, caplog: pytest.LogCaptureFixture) -> None:
    """Odd arguments to every verb are answered 5xx (or 2xx where harmless), never 4xx, and the daemon keeps serving."""
    caplog.set_level(logging.INFO, logger="relate")
    client = await Client.connect(smtp.mx)
    codes = []
    for line in [
        "EHLO",
        "HELO",
        "EHLO client.example.org",
        "MAIL FROM:<>>",
        "MAIL FROM:<\\>",
        'MAIL FROM:<"unterminated@x>',
        "MAIL FROM:<a@[1.2.3>",
        "MAIL FROM:<a@[IPv6:::1]>",
        "MAIL FROM:<a@b> BODY",
        "MAIL FROM:<a@b> BODY=",
        "MAIL FROM:<a@b> =",
        "MAIL FROM:<a@b>  SIZE=10",
        "MAIL FROM:<a@b> SIZE=-1",
        "MAIL FROM:<a@b> SIZE=1e3",
        "RCPT TO:<bob@example.com>",
        "MAIL FROM:<a@b>",
        "RCPT TO:<postmaster@>",
        "RCPT TO:<@example.com:>",
        "RCPT TO:<bob@example.com> X",
        'RCPT TO:<"">',
        "RCPT TO:<a..b@example.com>",
        "RCPT TO:<.a@example.com>",
        "RCPT TO:<a@-example.com>",
        "RCPT TO:<a@example..com>",
        "AUTH",
        "STARTTLS x",
        "VRFY",
        "DATA x",
        "RSET x",
        "QUIT x",
        ":",
        " ",
        "MAIL",
    ]:
        reply = await client.cmd(line)
        codes.append((line, reply.head))
        if reply.head in ("502 5.5.1", "421 4.7.0"):  # too many unknown commands or errors: hung up; start over
            await client.close()
            client = await Client.connect(smtp.mx)
            await client.ehlo()
    assert not [(line, head) for line, head in codes if head.startswith("45")], codes
    assert not [r for r in caplog.records if r.getMessage().startswith(("smtp-error", "smtp-tempfail"))]
    await client.close()
    await assert_serves(smtp)
