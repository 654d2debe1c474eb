"""CAPABILITY (RFC 9051 §6.1.1): what the server offers, before and after TLS and login."""

from __future__ import annotations

import imaplib

from .conftest import Imap
from .helpers import ImapClient

_ALWAYS = {
    "IMAP4rev1", "IMAP4rev2", "ENABLE", "IDLE", "NAMESPACE", "UNSELECT", "UIDPLUS", "MOVE", "SPECIAL-USE",
    "CHILDREN", "LIST-EXTENDED", "LIST-STATUS", "LITERAL+", "LITERAL-", "ID", "ESEARCH", "SEARCHRES", "STATUS=SIZE",
    "UTF8=ACCEPT", "CONDSTORE", "QRESYNC",
}  # fmt: skip


def _caps(result_line: bytes) -> set[str]:
    return set(result_line.decode().split(" ", 2)[2].split())


async def test_plain_port_offers_starttls_and_disables_login(imap: Imap) -> None:
    """On the plain port the server advertises STARTTLS and LOGINDISABLED, and no SASL mechanism."""
    client = await imap.connect(None, tls=False)
    result = await client.ok("CAPABILITY")
    (line,) = result.lines("CAPABILITY")
    caps = _caps(line)
    assert caps >= _ALWAYS
    assert {"STARTTLS", "LOGINDISABLED"} <= caps
    assert not any(c.startswith("AUTH=") for c in caps)
    assert f"APPENDLIMIT={imap.cfg.imap.max_literal_size}" in caps


async def test_greeting_carries_capabilities(imap: Imap) -> None:
    """The greeting is an untagged OK with a CAPABILITY response code, so clients need no round trip."""
    client = await imap.connect(None, tls=False)
    assert client.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 IMAP4rev2 ")
    assert b"LOGINDISABLED" in client.greeting


async def test_tls_port_offers_auth_plain(imap: Imap) -> None:
    """Over implicit TLS the server offers AUTH=PLAIN and SASL-IR, and neither STARTTLS nor LOGINDISABLED."""
    client = await imap.connect(None)
    caps = _caps((await client.ok("CAPABILITY")).lines("CAPABILITY")[0])
    assert {"AUTH=PLAIN", "SASL-IR"} <= caps
    assert "STARTTLS" not in caps
    assert "LOGINDISABLED" not in caps


async def test_plaintext_auth_allowed_by_config(imap: Imap) -> None:
    """With imap.allow_plaintext_auth the plain port offers AUTH=PLAIN and no LOGINDISABLED."""
    imap.cfg.imap.allow_plaintext_auth = True
    client = await imap.connect(None, tls=False)
    caps = _caps((await client.ok("CAPABILITY")).lines("CAPABILITY")[0])
    assert "AUTH=PLAIN" in caps
    assert "LOGINDISABLED" not in caps
    assert "STARTTLS" in caps


async def test_after_login_no_auth_capabilities(imap: Imap) -> None:
    """After login the tagged OK carries the new capability list, without AUTH= or STARTTLS."""
    client = await imap.connect(None)
    login = await client.login("bob@example.com", imap.bob_key)
    assert (login.code or "").startswith("CAPABILITY IMAP4rev1 ")
    caps = _caps((await client.ok("CAPABILITY")).lines("CAPABILITY")[0])
    assert caps >= _ALWAYS
    assert not any(c.startswith("AUTH=") for c in caps)
    assert "STARTTLS" not in caps


async def test_capability_takes_no_arguments(imap: Imap) -> None:
    """CAPABILITY with an argument is a syntax error (BAD), and the session goes on."""
    client = await imap.connect(None)
    assert (await client.command("CAPABILITY now")).status == "BAD"
    assert (await client.command("CAPABILITY")).ok


async def test_capability_with_imaplib(imap: Imap) -> None:
    """A stock client (imaplib) reads the capability list and sees IMAP4rev2 and IDLE."""

    def script(conn: imaplib.IMAP4) -> tuple[str, ...]:
        return conn.capabilities

    caps = await imap.imaplib(script)
    assert "IMAP4REV2" in caps
    assert "IDLE" in caps


async def test_unknown_command_is_bad(imap: Imap) -> None:
    """An unknown command gets a tagged BAD; the connection stays usable."""
    client = await ImapClient.connect(imap.tls_port, tls=imap.client_tls)
    result = await client.command("FROBNICATE")
    assert result.status == "BAD"
    assert (await client.command("NOOP")).ok
