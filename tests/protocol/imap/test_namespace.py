"""NAMESPACE (RFC 9051 §6.3.10): one personal namespace, "/" as the delimiter."""

from __future__ import annotations

import imaplib
from typing import Any

from .conftest import Imap


async def test_namespace(imap: Imap) -> None:
    """NAMESPACE answers a personal namespace with an empty prefix and "/" delimiter, and no others."""
    client = await imap.connect()
    result = await client.ok("NAMESPACE")
    assert result.lines("NAMESPACE") == [b'* NAMESPACE (("" "/")) NIL NIL']


async def test_namespace_needs_login(imap: Imap) -> None:
    """NAMESPACE before login is refused with BAD."""
    client = await imap.connect(None)
    assert (await client.command("NAMESPACE")).status == "BAD"


async def test_namespace_with_imaplib(imap: Imap) -> None:
    """imaplib's namespace() parses the answer."""

    def script(conn: imaplib.IMAP4) -> Any:
        typ, data = conn.namespace()
        assert typ == "OK"
        return data[0]

    assert await imap.imaplib(script) == b'(("" "/")) NIL NIL'
