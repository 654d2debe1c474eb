"""postmaster (RFC 5321 §4.5.1): <postmaster> and postmaster@<hosted domain> are always accepted and read."""

from __future__ import annotations

from relate.services import accounts

from .conftest import Smtp
from .helpers import Client, make_message, message_count, run_session

ACCEPTED = ["250 2.1.0", "250 2.1.5", "250 2.0.0"]


async def test_bare_postmaster_reaches_the_first_user_of_the_first_domain(smtp: Smtp) -> None:
    """RCPT TO:<postmaster> (any case) is accepted on port 25 and lands in the INBOX of the first user created."""
    message = make_message(to="postmaster", subject="your server")
    for rcpt in ["postmaster", "Postmaster", "POSTMASTER"]:
        replies = await run_session(smtp.mx, "carol@remote.example", [rcpt], message)
        assert [r.head for r in replies] == ACCEPTED, rcpt
    stored = await smtp.inbox("alice@example.com")
    assert len(stored) == 3
    assert all(copy.endswith(message) for copy in stored)
    assert await smtp.inbox("bob@example.com") == []


async def test_postmaster_at_a_hosted_domain_is_accepted(smtp: Smtp) -> None:
    """postmaster@example.com, which no address claims, is accepted (not 550) and reaches example.com's first user."""
    await accounts.add_domain(smtp.pool, "example.net")
    await accounts.add_user(smtp.pool, "zed@example.net", "Zed")
    await accounts.add_user(smtp.pool, "amy@example.net", "Amy")
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    assert (await client.cmd("MAIL FROM:<carol@remote.example>")).head == "250 2.1.0"
    assert (await client.cmd("RCPT TO:<PostMaster@Example.COM>")).head == "250 2.1.5"
    assert (await client.cmd("RCPT TO:<postmaster@example.net>")).head == "250 2.1.5"
    assert (await client.data(make_message(to="postmaster@example.com"))).head == "250 2.0.0"
    await client.close()
    assert len(await smtp.inbox("alice@example.com")) == 1
    assert len(await smtp.inbox("zed@example.net")) == 1
    assert await smtp.inbox("amy@example.net") == []


async def test_configured_postmaster_address_wins(smtp: Smtp) -> None:
    """With smtp.postmaster set to bob@example.com, <postmaster> and postmaster@example.com reach bob."""
    smtp.cfg.smtp.postmaster = "Bob@Example.com"
    message = make_message(to="postmaster@example.com")
    replies = await run_session(smtp.mx, "carol@remote.example", ["postmaster", "postmaster@example.com"], message)
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.1.5", "250 2.0.0"]
    (stored,) = await smtp.inbox("bob@example.com")
    assert stored.endswith(message)
    assert await smtp.inbox("alice@example.com") == []


async def test_a_real_postmaster_alias_is_used_as_it_is(smtp: Smtp) -> None:
    """An alias postmaster@example.com -> bob delivers to bob, whatever smtp.postmaster says."""
    await accounts.add_alias(smtp.pool, "postmaster@example.com", "bob@example.com")
    smtp.cfg.smtp.postmaster = "alice@example.com"
    replies = await run_session(smtp.mx, "carol@remote.example", ["postmaster@example.com"], make_message())
    assert [r.head for r in replies] == ACCEPTED
    assert len(await smtp.inbox("bob@example.com")) == 1
    assert await smtp.inbox("alice@example.com") == []


async def test_postmaster_of_a_foreign_domain_is_still_relay_denied(smtp: Smtp) -> None:
    """postmaster@ a domain not hosted here stays 554 5.7.1 on port 25: the rule opens no relay."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    assert (await client.cmd("MAIL FROM:<carol@remote.example>")).head == "250 2.1.0"
    for rcpt in ["postmaster@remote.example", "postmaster@sub.example.com"]:
        assert (await client.cmd(f"RCPT TO:<{rcpt}>")).head == "554 5.7.1", rcpt
    await client.close()
    assert await message_count(smtp) == 0


async def test_postmaster_on_submission_is_delivered_locally(smtp: Smtp) -> None:
    """Alice submitting to <postmaster> over 465 gets 250; it lands locally, nothing is queued."""
    client = await Client.connect(smtp.submissions, tls=smtp.client_tls)
    await client.ehlo()
    assert (await client.auth_plain("alice@example.com", smtp.alice_key)).head == "235 2.7.0"
    replies = await client.mail("alice@example.com", ["postmaster"], make_message(sender="alice@example.com"))
    assert [r.head for r in replies] == ACCEPTED
    await client.close()
    assert len(await smtp.inbox("alice@example.com")) == 1
    assert await smtp.pool.fetchval("SELECT count(*) FROM outbound_emails") == 0
