"""Never an open relay: address tricks on port 25 are refused and nothing is stored or queued."""

from __future__ import annotations

from .conftest import Smtp
from .helpers import Client, make_message, message_count, outbound, outbound_recipients

# Each of these, if taken apart naively, would send mail on to evil.org (or to an address literal).
TRICKS = [
    "bob%evil.org@example.com",
    '"bob@evil.org"@example.com',
    "@example.com:bob@evil.org",
    "@example.com,@mx.example.com:bob@evil.org",
    "bob@[127.0.0.1]",
    "bob@[IPv6:::1]",
    "bob@example.com.",
    "bob@evil.org@example.com",
    "bob@example.com@evil.org",
    "bob!evil.org@example.com",
    "evil.org!bob@example.com",
    "bob@evil.org%example.com",
]


async def _assert_nothing_kept(smtp: Smtp) -> None:
    assert await message_count(smtp) == 0
    assert await outbound(smtp) == []
    assert await outbound_recipients(smtp) == []


async def test_relay_trick_recipients_are_refused(smtp: Smtp) -> None:
    """A %-hack, quoted, source-routed, literal, dotted or multi-@ recipient gets a 5xx and nothing is kept."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    for rcpt in TRICKS:
        assert (await client.cmd("MAIL FROM:<carol@remote.example>")).head == "250 2.1.0"
        reply = await client.cmd(f"RCPT TO:<{rcpt}>")
        assert 550 <= reply.code <= 554, (rcpt, reply.lines)
        # With no recipient accepted there is no transaction to send data for.
        assert (await client.cmd("DATA")).head == "503 5.5.1", rcpt
        assert (await client.cmd("RSET")).head == "250 2.0.0"
    await client.close()
    await _assert_nothing_kept(smtp)


async def test_malformed_recipients_get_553_5_1_3(smtp: Smtp) -> None:
    """An address that is not a plain local@domain is answered 553 5.1.3, as the relay policy says."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    await client.cmd("MAIL FROM:<carol@remote.example>")
    for rcpt in [
        "bob%evil.org@example.com",
        '"bob@evil.org"@example.com',
        "bob@[127.0.0.1]",
        "bob@example.com.",
        "bob@example.com@evil.org",
        "bob@evil.org@example.com",
    ]:
        assert (await client.cmd(f"RCPT TO:<{rcpt}>")).head == "553 5.1.3", rcpt
    await client.close()


async def test_source_route_gets_553_5_1_3(smtp: Smtp) -> None:
    """A source-routed recipient is answered 553 5.1.3, as the module docstring's relay policy says."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    await client.cmd("MAIL FROM:<carol@remote.example>")
    assert (await client.cmd("RCPT TO:<@example.com:bob@evil.org>")).head == "553 5.1.3"
    await client.close()


async def test_trick_after_good_recipient_delivers_to_the_good_one_only(smtp: Smtp) -> None:
    """Mixed with a real recipient, the tricks are refused and only bob gets the message; nothing is queued."""
    message = make_message(to="bob@example.com")
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    assert (await client.cmd("MAIL FROM:<carol@remote.example>")).head == "250 2.1.0"
    assert (await client.cmd("RCPT TO:<bob@example.com>")).head == "250 2.1.5"
    for rcpt in TRICKS:
        assert (await client.cmd(f"RCPT TO:<{rcpt}>")).code >= 550
    assert (await client.data(message)).head == "250 2.0.0"
    await client.close()
    assert len(await smtp.inbox("bob@example.com")) == 1
    assert await message_count(smtp) == 1
    assert await outbound(smtp) == []


async def test_header_recipients_are_never_relayed_to(smtp: Smtp) -> None:
    """Outside addresses in To/Cc/Bcc/Resent-To with an envelope to bob: only bob gets it, nothing is queued."""
    variants = [
        ("To: victim@evil.org",),
        ("To: bob@example.com", "Cc: victim@evil.org, other@evil.org, alice@example.com"),
        ("To: bob@example.com", "Bcc: victim@evil.org"),
        ("To: bob@example.com", "Resent-To: victim@evil.org", "Resent-Cc: alice@example.com"),
    ]
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    sent = []
    for headers in variants:
        message = "\r\n".join(
            ["From: carol@remote.example", *headers, "Subject: relay me", "", "Please forward.", ""]
        ).encode()
        replies = await client.mail("carol@remote.example", ["bob@example.com"], message)
        assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
        sent.append(message)
    await client.close()
    stored = await smtp.inbox("bob@example.com")
    assert len(stored) == len(sent)
    assert all(copy.endswith(message) for copy, message in zip(stored, sent, strict=True))
    assert await smtp.inbox("alice@example.com") == []
    assert await message_count(smtp) == len(sent)
    assert await outbound(smtp) == []
    assert await outbound_recipients(smtp) == []


async def test_remote_recipient_is_refused_even_from_a_local_sender(smtp: Smtp) -> None:
    """An unauthenticated MAIL FROM a hosted address gives no right to relay: 554 5.7.1."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    assert (await client.cmd("MAIL FROM:<alice@example.com>")).head == "250 2.1.0"
    assert (await client.cmd("RCPT TO:<carol@remote.example>")).head == "554 5.7.1"
    await client.close()
    await _assert_nothing_kept(smtp)
