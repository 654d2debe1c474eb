"""MULTIAPPEND (RFC 3502): several messages in one APPEND, stored all or none."""

from __future__ import annotations

from relate.services import accounts

from .conftest import BOB, Imap
from .helpers import Lit, make_message


async def test_multiappend_stores_each_message_with_its_flags_and_date(imap: Imap) -> None:
    """Two messages in one APPEND get consecutive UIDs (APPENDUID with a set), each its own flags and date."""
    first, second = make_message(subject="one"), make_message(subject="two")
    client = await imap.connect()
    result = await client.ok(
        "APPEND INBOX (\\Seen) ", Lit(first), ' (\\Flagged $Work) " 5-Jan-2026 08:30:00 +0000" ', Lit(second)
    )
    box = await imap.mailbox()
    assert result.code == f"APPENDUID {box['uidvalidity']} 1:2"
    stored = await imap.stored()
    assert [(m["raw"], sorted(m["flags"])) for m in stored] == [
        (first, ["\\Seen"]),
        (second, ["$Work", "\\Flagged"]),
    ]
    await client.ok("SELECT INBOX")
    dates = (await client.ok("FETCH 2 INTERNALDATE")).fetches()[2]["INTERNALDATE"]
    assert dates == b" 5-Jan-2026 08:30:00 +0000"


async def test_multiappend_with_literal_plus(imap: Imap) -> None:
    """Messages sent as LITERAL+ one after another are all read and stored in order."""
    raws = [make_message(subject=f"m{i}") for i in range(5)]
    pieces: list[str | Lit] = ["APPEND INBOX"]
    for raw in raws:
        pieces += [" ", Lit(raw, plus=True)]
    client = await imap.connect()
    result = await client.ok(*pieces)
    assert result.continuations == []
    assert [m["raw"] for m in await imap.stored()] == raws


async def test_multiappend_is_all_or_nothing(imap: Imap) -> None:
    """When one message of a MULTIAPPEND cannot be stored (a bad CATENATE URL), none of them is."""
    client = await imap.connect()
    result = await client.command(
        "APPEND INBOX ", Lit(make_message()), ' CATENATE (URL "/INBOX/;UID=99" TEXT ', Lit(b"\r\nbody\r\n"), ")"
    )
    assert (result.status, (result.code or "").split()[0]) == ("NO", "BADURL")
    assert await imap.stored() == []
    assert (await imap.mailbox())["uidnext"] == 1
    await client.ok("NOOP")


async def test_multiappend_of_large_messages_spools_each(imap: Imap) -> None:
    """Several messages above the in-memory size arrive on disk and are stored byte for byte."""
    raws = [make_message(subject=f"big {i}", body=(b"%d" % i) * 400_000 + b"\r\n") for i in range(3)]
    pieces: list[str | Lit] = ["APPEND INBOX"]
    for raw in raws:
        pieces += [" ", Lit(raw)]
    client = await imap.connect()
    await client.ok(*pieces, wait=30)
    assert [m["raw"] for m in await imap.stored()] == raws


async def test_multiappend_past_the_append_size_is_too_big(imap: Imap) -> None:
    """Messages that together pass imap.max_append_size are refused NO [TOOBIG]; nothing is stored and the
    session goes on."""
    async with imap.other_server(max_literal_size=300_000, max_append_size=500_000) as port:
        client = await imap.connect(port=port)
        big = make_message(body=b"x" * 200_000 + b"\r\n")
        result = await client.command("APPEND INBOX ", Lit(big), " ", Lit(big), " ", Lit(big))
        assert (result.status, result.code) == ("NO", "TOOBIG")
        assert await imap.stored() == []
        await client.ok("APPEND INBOX ", Lit(big), " ", Lit(big))
        assert len(await imap.stored()) == 2


async def test_multiappend_to_the_selected_mailbox_reports_exists(imap: Imap) -> None:
    """A MULTIAPPEND to the selected mailbox is followed by EXISTS with the new count before its OK."""
    client = await imap.connect(select="INBOX")
    result = await client.ok("APPEND INBOX ", Lit(make_message()), " ", Lit(make_message()))
    assert result.lines("EXISTS") == [b"* 2 EXISTS"]


async def test_multiappend_of_a_bad_flag_is_bad(imap: Imap) -> None:
    """An unknown system flag on any message of the command is BAD and nothing is stored."""
    client = await imap.connect()
    result = await client.command("APPEND INBOX ", Lit(make_message()), " (\\Bogus) ", Lit(make_message()))
    assert result.status == "BAD"
    assert await imap.stored() == []


async def test_multiappend_past_the_quota_stores_none(imap: Imap) -> None:
    """A MULTIAPPEND whose third message passes the user's MESSAGE limit is NO [OVERQUOTA]; the two that fit
    are not stored either (RFC 3502 all or none); two alone fit afterwards."""
    await accounts.set_quota(imap.pool, BOB, {"messages": 2})
    client = await imap.connect(select="INBOX")
    raws = [make_message(subject=f"q{i}") for i in range(3)]
    result = await client.command("APPEND INBOX ", Lit(raws[0]), " ", Lit(raws[1]), " ", Lit(raws[2]))
    assert (result.status, result.code) == ("NO", "OVERQUOTA")
    assert result.lines("EXISTS") == []
    assert await imap.stored() == []
    assert (await imap.mailbox())["message_count"] == 0
    await client.ok("APPEND INBOX ", Lit(raws[0]), " ", Lit(raws[1]))
    assert [m["raw"] for m in await imap.stored()] == raws[:2]
    assert imap.errors.records == []
