"""Reply format: every reply after the greeting (but EHLO/HELO's) has an enhanced code (RFC 2034) and leaks nothing."""

from __future__ import annotations

import base64
import re

from .conftest import Smtp
from .helpers import Client, Reply, make_message

ENHANCED_LINE = re.compile(r"^(\d)\d{2}[ -](\d)\.\d{1,3}\.\d{1,3} ")
LEAK = re.compile(r"Error:|Traceback|\b\w+(Error|Exception)\b|aiosmtpd|asyncpg|Python")
EXEMPT = ("220", "334", "354")  # greeting / STARTTLS go-ahead, SASL challenges, DATA go-ahead


class Recorder:
    """Sends commands and keeps (command, reply) pairs; EHLO/HELO replies are left out (RFC 2034 §3)."""

    def __init__(self) -> None:
        self.checked: list[tuple[str, str]] = []

    async def send(self, client: Client, command: str | bytes) -> Reply:
        reply = await client.cmd(command)
        name = (command if isinstance(command, str) else command.decode("latin-1")).split(" ")[0].upper()
        if name not in ("EHLO", "HELO"):
            self.checked += [(str(command)[:40], line) for line in reply.lines]
        return reply

    async def data(self, client: Client, message: bytes) -> Reply:
        go = await self.send(client, "DATA")
        if go.code != 354:
            return go
        reply = await client.data_body(message)
        self.checked += [("<data>", line) for line in reply.lines]
        return reply


async def test_every_reply_carries_an_enhanced_code_and_leaks_nothing(smtp: Smtp) -> None:
    """Good and bad commands on every port get replies matching '^ddd[ -]c.d.d ' with matching class, no 'Error:'."""
    rec = Recorder()
    wrong_key = base64.b64encode(b"\0alice@example.com\0relate_000000000000_" + b"x" * 32).decode()
    good_key = base64.b64encode(f"\0alice@example.com\0{smtp.alice_key}".encode()).decode()

    mx = await Client.connect(smtp.mx)
    for command in [
        "MAIL FROM:<carol@remote.example>",  # before EHLO
        "EHLO client.example.org",
        "NOOP",
        "NOOP with arguments",
        "RSET",
        "RSET now",
        "HELP",
        "VRFY bob@example.com",
        "VRFY",
        "EXPN staff",
        "RCPT TO:<bob@example.com>",
        "DATA",
        "MAIL",
        "MAIL TO:<carol@remote.example>",
        "MAIL FROM:<carol@remote.example> BODY=BINARY",
        "MAIL FROM:<carol@remote.example> SIZE=abc",
        "MAIL FROM:<carol@remote.example> FOO=BAR",
        "MAIL FROM:<carol@remote.example> SIZE=1000 BODY=8BITMIME",
        "MAIL FROM:<carol@remote.example>",
        "RCPT",
        "RCPT FROM:<bob@example.com>",
        "RCPT TO:<nobody@example.com>",
        "RCPT TO:<carol@remote.example>",
        "RCPT TO:<bob%evil.org@example.com>",
        "RCPT TO:<bob@example.com> NOTIFY=NEVER",
        "RCPT TO:<bob@example.com>",
        "DATA now",
        "AUTH PLAIN",
        "STARTTLS please",
        "XYZZY",
        b"\xff\xfe\x00",
        "",
        "QUIT now",
    ]:
        await rec.send(mx, command)
    await rec.data(mx, make_message())
    await rec.send(mx, "HELO client.example.org")
    await rec.send(mx, "MAIL FROM:<carol@remote.example>")
    await rec.send(mx, "QUIT")

    sub = await Client.connect(smtp.submission)
    for command in ["EHLO client.example.org", "AUTH LOGIN", "MAIL FROM:<alice@example.com>", "RSET", "VRFY x"]:
        await rec.send(sub, command)
    await rec.send(sub, "HELP")
    await sub.starttls(smtp.client_tls)
    for command in [
        "EHLO client.example.org",
        "MAIL FROM:<alice@example.com>",
        "RCPT TO:<bob@example.com>",
        "DATA",
        "AUTH",
        "AUTH CRAM-MD5",
        "AUTH PLAIN !!!",
        "AUTH PLAIN one two",
        "AUTH PLAIN",
        "*",
        "AUTH LOGIN",
        "*",
        f"AUTH PLAIN {wrong_key}",
        f"AUTH PLAIN {good_key}",
        f"AUTH PLAIN {good_key}",
        "MAIL FROM:<bob@example.com>",
        "MAIL FROM:<alice@example.com>",
        "RCPT TO:<nobody@example.com>",
        "RCPT TO:<carol@remote.example>",
    ]:
        await rec.send(sub, command)
    await rec.data(sub, make_message(sender="bob@example.com"))
    await rec.send(sub, "QUIT")

    implicit = await Client.connect(smtp.submissions, tls=smtp.client_tls)
    for command in ["EHLO client.example.org", "STARTTLS", "MAIL FROM:<alice@example.com>", "QUIT"]:
        await rec.send(implicit, command)

    checked = [(command, line) for command, line in rec.checked if line[:3] not in EXEMPT]
    assert len(checked) > 60
    for command, line in checked:
        match = ENHANCED_LINE.match(line)
        assert match, (command, line)
        assert match.group(1) == match.group(2), (command, line)  # 2xx -> 2.x.x, 4xx -> 4.x.x, 5xx -> 5.x.x
        assert not LEAK.search(line), (command, line)
        assert "XYZZY" not in line
    # Every SASL step was answered as it should be.
    assert [line for _, line in rec.checked if line.startswith("334")] == ["334 ", "334 VXNlcm5hbWU6"]


async def test_aiosmtpd_error_texts_never_reach_the_client(smtp: Smtp) -> None:
    """Unparseable addresses and an oversized SIZE get catalogue replies (553 5.1.3, 552 5.3.4) without 'Error:'."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    too_big = await client.cmd("MAIL FROM:<carol@remote.example> SIZE=60000000")
    assert (too_big.head, too_big.text) == ("552 5.3.4", "552 5.3.4 Message size exceeds fixed maximum message size")
    malformed_sender = await client.cmd("MAIL FROM:<<>>")
    assert malformed_sender.text == "553 5.1.3 Address not accepted"
    await client.cmd("MAIL FROM:<carol@remote.example>")
    for rcpt in ["<bob@evil.org@example.com>", "<<>>"]:
        assert (await client.cmd(f"RCPT TO:{rcpt}")).text == "553 5.1.3 Address not accepted"


async def test_help_for_a_command_is_a_success(smtp: Smtp) -> None:
    """HELP MAIL is answered with a 2xx reply (RFC 5321 §4.1.1.8), not turned into a 501 error."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    reply = await client.cmd("HELP MAIL")
    assert reply.code // 100 == 2, reply.lines


async def test_second_starttls_is_refused(smtp: Smtp) -> None:
    """STARTTLS inside an active TLS session gets 503 5.5.1 and the session carries on."""
    client = await Client.connect(smtp.submission)
    await client.ehlo()
    await client.starttls(smtp.client_tls)
    await client.ehlo()
    reply = await client.cmd("STARTTLS")
    assert reply.head == "503 5.5.1"
    assert (await client.cmd("NOOP")).head == "250 2.0.0"
