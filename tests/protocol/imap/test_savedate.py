"""SAVEDATE (RFC 8514): FETCH SAVEDATE, when a message was stored in its mailbox, and SEARCH SAVED*."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .conftest import Imap
from .helpers import Lit, make_message


def _when(value: bytes) -> datetime:
    return datetime.strptime(value.decode().strip(), "%d-%b-%Y %H:%M:%S %z")


async def test_fetch_savedate_is_when_stored(imap: Imap) -> None:
    """SAVEDATE is the time of the APPEND, not the internal date the client gave."""
    before = datetime.now(UTC).replace(microsecond=0)
    client = await imap.connect()
    await client.ok('APPEND INBOX "01-Jan-2020 10:00:00 +0000" ', Lit(make_message()))
    await client.ok("SELECT INBOX")
    got = (await client.ok("FETCH 1 (INTERNALDATE SAVEDATE)")).fetches()[1]
    assert _when(got["INTERNALDATE"]) == datetime(2020, 1, 1, 10, tzinfo=UTC)
    assert before <= _when(got["SAVEDATE"]) <= datetime.now(UTC)


async def test_copy_gets_its_own_savedate(imap: Imap) -> None:
    """A copy's SAVEDATE is when it was copied: later than the original's."""
    await imap.deliver()
    await imap.pool.execute("UPDATE messages SET created_at = '2021-03-04 05:06:07+00'")
    client = await imap.connect(select="INBOX")
    await client.ok("COPY 1 Archive")
    assert (await client.ok("FETCH 1 SAVEDATE")).fetches()[1]["SAVEDATE"] == b" 4-Mar-2021 05:06:07 +0000"
    await client.ok("SELECT Archive")
    copied = _when((await client.ok("FETCH 1 SAVEDATE")).fetches()[1]["SAVEDATE"])
    assert datetime.now(UTC) - copied < timedelta(minutes=5)


async def test_search_saved_dates(imap: Imap) -> None:
    """SAVEDBEFORE, SAVEDON and SAVEDSINCE compare the save date's day; SAVEDATESUPPORTED matches everything."""
    for _ in range(3):
        await imap.deliver()
    await imap.pool.execute(
        """UPDATE messages SET created_at = CASE uid WHEN 1 THEN timestamptz '2024-05-01 12:00:00+00'
                                                   WHEN 2 THEN timestamptz '2024-05-02 23:59:00+00'
                                                   ELSE created_at END"""
    )
    client = await imap.connect(select="INBOX")
    assert (await client.ok("SEARCH SAVEDBEFORE 2-May-2024")).search() == [1]
    assert (await client.ok("SEARCH SAVEDON 2-May-2024")).search() == [2]
    assert (await client.ok("SEARCH SAVEDSINCE 2-May-2024")).search() == [2, 3]
    assert (await client.ok("SEARCH SAVEDATESUPPORTED")).search() == [1, 2, 3]
    assert b" SAVEDATE" in (await client.ok("CAPABILITY")).untagged[0]
