"""Internationalized domains (RFC 5890): a hosted domain typed as U-labels is one domain with its A-label form."""

from __future__ import annotations

from relate.services import accounts

from .conftest import Smtp
from .helpers import Client

MESSAGE = b"From: carol@remote.example\r\nSubject: idna\r\n\r\nhello\r\n"


async def test_rcpt_to_either_form_delivers_to_the_one_stored_domain(smtp: Smtp) -> None:
    """münchen.de is hosted as xn--mnchen-3ya.de: RCPT TO either form (the U-label with SMTPUTF8) reaches one INBOX."""
    assert (await accounts.add_domain(smtp.pool, "München.de"))["name"] == "xn--mnchen-3ya.de"
    await accounts.add_user(smtp.pool, "info@münchen.de")
    await accounts.add_user(smtp.pool, "jörg@xn--mnchen-3ya.de")
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    sent = [
        ("carol@remote.example", ["info@xn--mnchen-3ya.de"], ""),
        ("carol@remote.example", ["info@münchen.de", "jörg@münchen.de"], " SMTPUTF8"),
        ("carol@remote.example", ["jörg@XN--MNCHEN-3YA.DE"], " SMTPUTF8"),
    ]
    for sender, rcpts, params in sent:
        replies = await client.mail(sender, rcpts, MESSAGE, params)
        assert [r.head for r in replies] == ["250 2.1.0", *["250 2.1.5"] * len(rcpts), "250 2.0.0"], replies
    await client.close()
    assert len(await smtp.inbox("info@xn--mnchen-3ya.de")) == 2
    assert len(await smtp.inbox("jörg@xn--mnchen-3ya.de")) == 2
    assert await smtp.inbox("info@münchen.de") == []  # nothing is stored under the U-label


async def test_u_label_of_an_unhosted_domain_is_refused_as_relay(smtp: Smtp) -> None:
    """A U-label domain that is not hosted is refused at RCPT like any other (no relay), and a name IDNA refuses
    is a bad address."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    assert (await client.cmd("MAIL FROM:<carol@remote.example> SMTPUTF8")).head == "250 2.1.0"
    assert (await client.cmd("RCPT TO:<info@köln.de>")).head == "554 5.7.1"
    bad = await client.cmd("RCPT TO:<info@☃.net>")
    assert bad.code in {501, 553, 554}, bad
    await client.close()
