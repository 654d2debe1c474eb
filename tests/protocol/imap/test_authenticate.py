"""AUTHENTICATE PLAIN (RFC 9051 §6.2.2, RFC 4616, SASL-IR RFC 4959): keys as passwords, scope imap."""

from __future__ import annotations

import base64

from .conftest import Imap
from .helpers import ImapClient


def _plain(user: str, key: str, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{key}".encode()).decode()


async def test_authenticate_with_initial_response(imap: Imap) -> None:
    """AUTHENTICATE PLAIN with a SASL-IR initial response logs in and reports capabilities."""
    client = await imap.connect(None)
    result = await client.command("AUTHENTICATE PLAIN " + _plain("bob@example.com", imap.bob_key))
    assert result.ok, str(result)
    assert (result.code or "").startswith("CAPABILITY ")
    assert (await client.command("SELECT INBOX")).ok


async def test_authenticate_with_continuation(imap: Imap) -> None:
    """Without an initial response the server sends an empty continuation and reads the response line."""
    client = await imap.connect(None)
    await client.send(b"A1 AUTHENTICATE PLAIN\r\n")
    assert (await client.read_line()).startswith(b"+")
    await client.send(_plain("bob@example.com", imap.bob_key).encode() + b"\r\n")
    assert (await client.read_tagged("A1")).ok


async def test_authenticate_cancelled(imap: Imap) -> None:
    """A client answering ``*`` to the continuation cancels: BAD, still not authenticated."""
    client = await imap.connect(None)
    await client.send(b"A1 AUTHENTICATE PLAIN\r\n")
    assert (await client.read_line()).startswith(b"+")
    await client.send(b"*\r\n")
    assert (await client.read_tagged("A1")).status == "BAD"
    assert (await client.command("SELECT INBOX")).status == "BAD"


async def test_authenticate_bad_base64(imap: Imap) -> None:
    """Invalid base64 (initial or continued) and a malformed PLAIN message are BAD."""
    client = await imap.connect(None)
    assert (await client.command("AUTHENTICATE PLAIN !!!notbase64")).status == "BAD"
    await client.send(b"A9 AUTHENTICATE PLAIN\r\n")
    await client.read_line()
    await client.send(b"@@@\r\n")
    assert (await client.read_tagged("A9")).status == "BAD"
    no_nuls = base64.b64encode(b"bob@example.com").decode()
    assert (await client.command(f"AUTHENTICATE PLAIN {no_nuls}")).status == "BAD"


async def test_authenticate_wrong_key(imap: Imap) -> None:
    """A wrong key, a key without the imap scope, or another user's key: NO [AUTHENTICATIONFAILED]."""
    client = await imap.connect(None)
    bogus = "relate_0123456789ab_" + "A" * 32
    for user, key in [
        ("bob@example.com", bogus),
        ("bob@example.com", imap.bob_smtp_key),
        ("bob@example.com", imap.alice_key),
        ("nobody@example.com", imap.bob_key),
    ]:
        result = await client.command("AUTHENTICATE PLAIN " + _plain(user, key))
        assert result.status == "NO", (user, str(result))
        assert result.code == "AUTHENTICATIONFAILED"
    assert (await client.command("SELECT INBOX")).status == "BAD"


async def test_authenticate_by_alias(imap: Imap) -> None:
    """Authenticating as an alias of bob opens bob's mailboxes."""
    await imap.deliver()
    client = await imap.connect(None)
    assert (await client.command("AUTHENTICATE PLAIN " + _plain("robert@example.com", imap.bob_key))).ok
    result = await client.ok("SELECT INBOX")
    assert b"* 1 EXISTS" in result.untagged


async def test_authorization_identity(imap: Imap) -> None:
    """An authzid equal to the user is accepted; acting as another user is refused."""
    client = await imap.connect(None)
    other = await client.command("AUTHENTICATE PLAIN " + _plain("bob@example.com", imap.bob_key, "alice@example.com"))
    assert other.status == "NO"
    assert other.code == "AUTHENTICATIONFAILED"
    same = await client.command("AUTHENTICATE PLAIN " + _plain("bob@example.com", imap.bob_key, "bob@example.com"))
    assert same.ok


async def test_unsupported_mechanism(imap: Imap) -> None:
    """Mechanisms other than PLAIN are refused with NO."""
    client = await imap.connect(None)
    result = await client.command("AUTHENTICATE CRAM-MD5")
    assert result.status == "NO"


async def test_authenticate_refused_before_tls(imap: Imap) -> None:
    """On the plain port before STARTTLS, AUTHENTICATE is refused without a continuation."""
    client = await imap.connect(None, tls=False)
    result = await client.command("AUTHENTICATE PLAIN " + _plain("bob@example.com", imap.bob_key))
    assert result.status == "NO"
    assert result.code == "PRIVACYREQUIRED"
    await client.send(b"A7 AUTHENTICATE PLAIN\r\n")
    refused = await client.read_tagged("A7")
    assert refused.status == "NO"
    assert refused.continuations == []


async def test_authenticate_plaintext_when_allowed(imap: Imap) -> None:
    """With imap.allow_plaintext_auth, AUTHENTICATE works on the plain port."""
    imap.cfg.imap.allow_plaintext_auth = True
    client = await ImapClient.connect(imap.port)
    assert (await client.command("AUTHENTICATE PLAIN " + _plain("bob@example.com", imap.bob_key))).ok


async def test_authenticate_with_imaplib(imap: Imap) -> None:
    """imaplib's authenticate("PLAIN", ...) logs in."""
    import imaplib

    def run() -> str:
        conn = imaplib.IMAP4_SSL("127.0.0.1", imap.tls_port, ssl_context=imap.client_tls, timeout=10)
        try:
            typ, _ = conn.authenticate("PLAIN", lambda _: f"\0bob@example.com\0{imap.bob_key}".encode())
            return str(typ)
        finally:
            conn.logout()

    import asyncio

    assert await asyncio.to_thread(run) == "OK"


async def test_oversized_credentials_are_bad(imap: Imap) -> None:
    """A user name or key over 1024 octets (LOGIN, PLAIN initial or continued) is BAD, no login is tried."""
    client = await imap.connect(None)
    huge = "k" * 1025
    assert (await client.command(f"LOGIN bob@example.com {huge}")).status == "BAD"
    assert (await client.command(f"LOGIN {huge}@example.com key")).status == "BAD"
    assert (await client.command("AUTHENTICATE PLAIN " + _plain("bob@example.com", huge))).status == "BAD"
    await client.send(b"A1 AUTHENTICATE PLAIN\r\n")
    assert (await client.read_line()).startswith(b"+")
    await client.send(_plain(huge, imap.bob_key).encode() + b"\r\n")
    assert (await client.read_tagged("A1")).status == "BAD"
    await client.send(b"A2 AUTHENTICATE PLAIN\r\n")
    assert (await client.read_line()).startswith(b"+")
    await client.send(b"QUFB" * 2000 + b"\r\n")
    assert (await client.read_tagged("A2")).status == "BAD"
    assert (await client.command("AUTHENTICATE PLAIN " + _plain("bob@example.com", imap.bob_key))).ok
