"""WITHIN (RFC 5032): SEARCH OLDER n and YOUNGER n, seconds back from now, by internal date."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .conftest import Imap


async def test_older_and_younger(imap: Imap) -> None:
    """OLDER 3600 finds a message that arrived two hours ago, YOUNGER 3600 one that just arrived; NOT and OR mix."""
    now = datetime.now(UTC)
    await imap.deliver(internal_date=now - timedelta(hours=2))
    await imap.deliver(internal_date=now - timedelta(seconds=30))
    await imap.deliver(internal_date=now - timedelta(days=40))
    client = await imap.connect(select="INBOX")
    assert (await client.ok("SEARCH OLDER 3600")).search() == [1, 3]
    assert (await client.ok("SEARCH YOUNGER 3600")).search() == [2]
    assert (await client.ok("SEARCH YOUNGER 86400 OLDER 60")).search() == [1]
    assert (await client.ok("UID SEARCH NOT YOUNGER 864000")).search() == [3]
    assert (await client.ok("SEARCH OR YOUNGER 60 OLDER 864000")).search() == [2, 3]


async def test_within_is_advertised_and_zero_is_bad(imap: Imap) -> None:
    """CAPABILITY lists WITHIN; an interval of 0 is not a number the grammar allows (BAD)."""
    client = await imap.connect(select="INBOX")
    assert b" WITHIN" in (await client.ok("CAPABILITY")).untagged[0]
    assert (await client.command("SEARCH OLDER 0")).status == "BAD"
