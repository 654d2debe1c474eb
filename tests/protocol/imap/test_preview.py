"""PREVIEW (RFC 8970): FETCH PREVIEW and PREVIEW (LAZY), made once from the message and kept."""

from __future__ import annotations

from .conftest import Imap
from .helpers import Lit, make_message


async def test_fetch_preview(imap: Imap) -> None:
    """FETCH PREVIEW gives the first words of the body text, flattened, without quotes or signature."""
    await imap.deliver(make_message(body="Hello Bob,\r\n\r\n> old words\r\nlunch at   noon?\r\n-- \r\nCarol\r\n"))
    client = await imap.connect(select="INBOX")
    assert b" PREVIEW" in (await client.ok("CAPABILITY")).untagged[0]
    assert (await client.ok("FETCH 1 PREVIEW")).fetches()[1]["PREVIEW"] == b"Hello Bob, lunch at noon?"
    assert (await client.ok("UID FETCH 1 (PREVIEW (LAZY) FLAGS)")).fetches()[1]["PREVIEW"] == (
        b"Hello Bob, lunch at noon?"
    )
    assert (await client.ok("FETCH 1 FLAGS")).fetches()[1]["FLAGS"] == ["\\Recent"]  # PREVIEW does not set \\Seen


async def test_preview_is_kept_and_copied(imap: Imap) -> None:
    """The preview is stored with the message the first time it is asked for, and a copy carries it."""
    await imap.deliver(make_message(body="kept words\r\n"))
    await imap.deliver(make_message(body="not asked for\r\n"))
    client = await imap.connect(select="INBOX")
    await client.ok("FETCH 1 PREVIEW")
    rows = await imap.pool.fetch("SELECT uid, preview FROM messages ORDER BY uid")
    assert [(r["uid"], r["preview"]) for r in rows] == [(1, "kept words"), (2, None)]
    await client.ok("COPY 1 Archive")
    assert (
        await imap.pool.fetchval(
            "SELECT m.preview FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.name = 'Archive'"
        )
        == "kept words"
    )


async def test_preview_of_many_messages_html_and_empty(imap: Imap) -> None:
    """FETCH 1:* PREVIEW over more messages than one batch: each its own; HTML gives text; no text gives ""."""
    for i in range(150):
        await imap.deliver(make_message(body=f"message number {i}\r\n"))
    await imap.deliver(
        make_message(body="<p>Hi <b>there</b></p>", headers=("MIME-Version: 1.0", "Content-Type: text/html"))
    )
    await imap.deliver(make_message(body="iVBORw0KGgo=\r\n", headers=("MIME-Version: 1.0", "Content-Type: image/png")))
    client = await imap.connect(select="INBOX")
    got = (await client.ok("FETCH 1:* PREVIEW", wait=30)).fetches()
    assert [got[n]["PREVIEW"] for n in range(1, 151)] == [f"message number {i}".encode() for i in range(150)]
    assert got[151]["PREVIEW"] == b"Hi there"
    assert got[152]["PREVIEW"] == b""


async def test_preview_of_8bit_text(imap: Imap) -> None:
    """A preview with non-ASCII text comes as a literal to an IMAP4rev1 client, quoted once UTF-8 is enabled."""
    client = await imap.connect()
    raw = make_message(body="Grüße aus Köln\r\n", headers=("Content-Type: text/plain; charset=utf-8",))
    await client.ok("APPEND INBOX ", Lit(raw))
    await client.ok("SELECT INBOX")
    (line,) = (await client.ok("FETCH 1 PREVIEW")).lines("FETCH")
    assert b"PREVIEW {17}\r\n" + "Grüße aus Köln".encode() in line
    await client.ok("ENABLE UTF8=ACCEPT")
    (line,) = (await client.ok("FETCH 1 PREVIEW")).lines("FETCH")
    assert 'PREVIEW "Grüße aus Köln"'.encode() in line


async def test_preview_with_an_unknown_modifier_is_bad(imap: Imap) -> None:
    """PREVIEW (FUZZY) is not a modifier this server knows: BAD, and the session goes on."""
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    assert (await client.command("FETCH 1 (PREVIEW (FUZZY))")).status == "BAD"
    await client.ok("FETCH 1 PREVIEW")
