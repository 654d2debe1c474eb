"""LOGIN (RFC 9051 §6.2.3): user name (address or alias) and an API key with scope imap."""

from __future__ import annotations

import imaplib
from typing import Any

from .conftest import Imap
from .helpers import ImapClient, Lit


async def test_login(imap: Imap) -> None:
    """LOGIN with the address and an imap key succeeds and allows SELECT."""
    client = await imap.connect(None)
    result = await client.command(f"LOGIN bob@example.com {imap.bob_key}")
    assert result.ok
    assert (result.code or "").startswith("CAPABILITY ")
    assert (await client.command("SELECT INBOX")).ok


async def test_login_by_alias_and_any_case(imap: Imap) -> None:
    """An alias, or the address in another case, logs in as the same user (same INBOX)."""
    await imap.deliver()
    for user in ("robert@example.com", "BOB@Example.COM"):
        client = await imap.connect(None)
        await client.login(user, imap.bob_key)
        result = await client.ok("SELECT INBOX")
        assert b"* 1 EXISTS" in result.untagged


async def test_login_quoted_and_literal(imap: Imap) -> None:
    """Quoted strings and literals (synchronizing and LITERAL+) are accepted for both arguments."""
    client = await imap.connect(None)
    assert (await client.command(f'LOGIN "bob@example.com" "{imap.bob_key}"')).ok
    client = await imap.connect(None)
    assert (await client.command("LOGIN ", Lit(b"bob@example.com"), " ", Lit(imap.bob_key.encode()))).ok
    client = await imap.connect(None)
    assert (await client.command("LOGIN ", Lit(b"bob@example.com", plus=True), f" {imap.bob_key}")).ok


async def test_login_failures(imap: Imap) -> None:
    """Wrong key, a key without the imap scope, another user's key, unknown user: NO [AUTHENTICATIONFAILED]."""
    client = await imap.connect(None)
    bogus = "relate_0123456789ab_" + "B" * 32
    for user, key in [
        ("bob@example.com", bogus),
        ("bob@example.com", "not-a-key"),
        ("bob@example.com", imap.bob_smtp_key),
        ("alice@example.com", imap.bob_key),
        ("nobody@example.com", imap.bob_key),
    ]:
        result = await client.command(f'LOGIN "{user}" "{key}"')
        assert result.status == "NO", (user, str(result))
        assert result.code == "AUTHENTICATIONFAILED"
    assert (await client.command("SELECT INBOX")).status == "BAD"
    assert (await client.command(f"LOGIN bob@example.com {imap.bob_key}")).ok


async def test_login_refused_on_plain_port(imap: Imap) -> None:
    """Before STARTTLS on the plain port LOGIN is refused (LOGINDISABLED), even with a valid key."""
    client = await imap.connect(None, tls=False)
    result = await client.command(f"LOGIN bob@example.com {imap.bob_key}")
    assert result.status == "NO"
    assert result.code == "PRIVACYREQUIRED"
    assert (await client.command("SELECT INBOX")).status == "BAD"


async def test_login_plaintext_when_allowed(imap: Imap) -> None:
    """With imap.allow_plaintext_auth the plain port accepts LOGIN."""
    imap.cfg.imap.allow_plaintext_auth = True
    client = await ImapClient.connect(imap.port)
    assert (await client.command(f"LOGIN bob@example.com {imap.bob_key}")).ok


async def test_login_twice_refused(imap: Imap) -> None:
    """LOGIN in the authenticated state is BAD."""
    client = await imap.connect()
    assert (await client.command(f"LOGIN alice@example.com {imap.alice_key}")).status == "BAD"


async def test_commands_need_login(imap: Imap) -> None:
    """Authenticated-state commands before login are BAD."""
    client = await imap.connect(None)
    for command in ("SELECT INBOX", 'LIST "" *', "STATUS INBOX (MESSAGES)", "CREATE x", "FETCH 1 FLAGS"):
        assert (await client.command(command)).status == "BAD", command


async def test_users_are_isolated(imap: Imap) -> None:
    """Alice sees her own INBOX, not bob's messages."""
    await imap.deliver()
    client = await imap.connect("alice@example.com")
    result = await client.ok("SELECT INBOX")
    assert b"* 0 EXISTS" in result.untagged


async def test_login_with_imaplib(imap: Imap) -> None:
    """imaplib logs in by alias and selects INBOX."""
    await imap.deliver()

    def script(conn: imaplib.IMAP4) -> list[Any]:
        typ, data = conn.select("INBOX")
        assert typ == "OK"
        return data

    assert await imap.imaplib(script, user="bob@example.com") == [b"1"]
