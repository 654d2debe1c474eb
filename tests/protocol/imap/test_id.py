"""ID (RFC 2971): the server identifies itself, in any state."""

from __future__ import annotations

import imaplib

from .conftest import Imap
from .helpers import Lit, parse_values


async def test_id_nil_before_login(imap: Imap) -> None:
    """ID NIL before login answers the server's name."""
    client = await imap.connect(None)
    result = await client.ok("ID NIL")
    (line,) = result.lines("ID")
    (params,) = parse_values(line[len(b"* ID ") :])
    pairs = dict(zip(params[::2], params[1::2], strict=True))
    assert pairs[b"name"] == b"Relate Mail"


async def test_id_with_client_parameters(imap: Imap) -> None:
    """ID with the client's own parameters (strings, NIL values, a literal) is accepted after login."""
    client = await imap.connect(select="INBOX")
    result = await client.ok('ID ("name" "test-client" "version" NIL "os" ', Lit(b"Linux"), ")")
    assert len(result.lines("ID")) == 1


async def test_id_malformed(imap: Imap) -> None:
    """A malformed ID list (odd length, atoms instead of strings, more than 30 pairs) is BAD."""
    client = await imap.connect(None)
    assert (await client.command('ID ("name")')).status == "BAD"
    assert (await client.command("ID (name value)")).status == "BAD"
    many = " ".join(f'"k{i}" "v{i}"' for i in range(31))
    assert (await client.command(f"ID ({many})")).status == "BAD"
    assert (await client.command("ID NIL")).ok


async def test_id_with_imaplib(imap: Imap) -> None:
    """imaplib's raw ID command works after login."""

    def script(conn: imaplib.IMAP4) -> str:
        conn.xatom("ID", '("name" "imaplib")')
        _typ, data = conn._untagged_response("OK", [None], "ID")
        return str(data[0])

    assert "Relate Mail" in await imap.imaplib(script)
