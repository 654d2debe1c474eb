"""ENABLE (RFC 9051 §6.3.1, RFC 5161): IMAP4rev2 and UTF8=ACCEPT change what the session says."""

from __future__ import annotations

from .conftest import Imap
from .helpers import list_lines


async def test_enable_imap4rev2(imap: Imap) -> None:
    """ENABLE IMAP4rev2 answers ENABLED IMAP4rev2; SELECT then omits RECENT and SEARCH answers ESEARCH."""
    await imap.deliver()
    client = await imap.connect()
    result = await client.ok("ENABLE IMAP4rev2")
    assert result.lines("ENABLED") == [b"* ENABLED IMAP4rev2"]
    selected = await client.ok("SELECT INBOX")
    assert selected.lines("RECENT") == []
    assert selected.lines("LIST") == [b'* LIST () "/" "INBOX"']
    search = await client.ok("SEARCH ALL")
    assert search.lines("SEARCH") == []
    assert search.esearch()["ALL"] == "1"


async def test_enable_utf8_accept(imap: Imap) -> None:
    """ENABLE UTF8=ACCEPT answers ENABLED UTF8=ACCEPT and mailbox names come out as UTF-8."""
    client = await imap.connect()
    await client.ok('CREATE "Caf&AOk-"')
    result = await client.ok("ENABLE UTF8=ACCEPT")
    assert result.lines("ENABLED") == [b"* ENABLED UTF8=ACCEPT"]
    listed = list_lines(await client.ok('LIST "" "Caf*"'))
    assert set(listed) == {"Café"}
    assert listed["Café"][1] == "Café".encode()


async def test_enable_unknown_extension(imap: Imap) -> None:
    """Unknown capabilities are ignored: the ENABLED response lists nothing."""
    client = await imap.connect()
    result = await client.ok("ENABLE X-UNKNOWN X-CONDSTORE2")
    assert result.lines("ENABLED") == [b"* ENABLED"]


async def test_enable_needs_arguments_and_login(imap: Imap) -> None:
    """ENABLE without a capability is BAD; before login it is BAD too."""
    client = await imap.connect(None)
    assert (await client.command("ENABLE IMAP4rev2")).status == "BAD"
    await client.login("bob@example.com", imap.bob_key)
    assert (await client.command("ENABLE")).status == "BAD"


async def test_rev1_session_unaffected_by_other_rev2_session(imap: Imap) -> None:
    """ENABLE is per session: another session still gets IMAP4rev1 SEARCH and RECENT (the rev2 one took none)."""
    await imap.deliver()
    rev2 = await imap.connect(enable="IMAP4rev2", select="INBOX")
    rev1 = await imap.connect()
    selected = await rev1.ok("SELECT INBOX")
    assert selected.lines("RECENT") == [b"* 1 RECENT"]
    assert (await rev1.ok("SEARCH ALL")).search() == [1]
    assert (await rev2.ok("SEARCH ALL")).esearch()["ALL"] == "1"
