"""CATENATE (RFC 4469): a message made of text and IMAP URLs (RFC 5092) of the user's own messages."""

from __future__ import annotations

from relate.services import accounts

from .conftest import ALICE, BOB, Imap
from .helpers import Lit

_FIRST = b"From: foo@example.com\r\nSubject: one\r\n\r\nHello world body\r\n"
_SECOND = (
    b"From: x@example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: text/plain\r\n\r\npart one\r\n--b\r\nContent-Type: text/plain\r\n\r\npart two\r\n--b--\r\n"
)


async def _setup(imap: Imap) -> None:
    await imap.deliver(_FIRST)
    await imap.deliver(_SECOND)


async def _stored(imap: Imap, folder: str = "Archive") -> list[bytes]:
    return [m["raw"] for m in await imap.stored(folder)]


async def test_catenate_text_and_urls(imap: Imap) -> None:
    """TEXT parts and URL parts (a header, a part, a whole message) are joined in order into one message."""
    await _setup(imap)
    client = await imap.connect()
    result = await client.ok(
        'APPEND Archive (\\Seen) CATENATE (URL "/INBOX/;UID=1/;SECTION=HEADER" TEXT ',
        Lit(b"new body\r\n"),
        ' URL "/INBOX/;UID=2/;SECTION=2")',
    )
    box = await imap.mailbox("Archive")
    assert result.code == f"APPENDUID {box['uidvalidity']} 1"
    assert await _stored(imap) == [b"From: foo@example.com\r\nSubject: one\r\n\r\nnew body\r\npart two"]
    assert (await imap.stored("Archive"))[0]["flags"] == ["\\Seen"]


async def test_catenate_whole_message_uidvalidity_and_absolute_url(imap: Imap) -> None:
    """A URL with the mailbox's UIDVALIDITY, or an absolute imap:// URL of this user and host, names the message."""
    await _setup(imap)
    validity = (await imap.mailbox())["uidvalidity"]
    client = await imap.connect()
    await client.ok(f'APPEND Archive CATENATE (URL "/INBOX;UIDVALIDITY={validity}/;UID=1")')
    await client.ok('APPEND Archive CATENATE (URL "imap://bob%40example.com@mail.example.com/INBOX/;UID=1")')
    assert await _stored(imap) == [_FIRST, _FIRST]


async def test_catenate_sections_and_partial(imap: Imap) -> None:
    """TEXT, HEADER.FIELDS and 1.MIME sections, and a partial range (one past the end gives nothing)."""
    await _setup(imap)
    client = await imap.connect()
    await client.ok('APPEND Archive CATENATE (URL "/INBOX/;UID=1/;SECTION=TEXT")')
    await client.ok('APPEND Archive CATENATE (URL "/INBOX/;UID=1/;SECTION=HEADER.FIELDS%20(SUBJECT)")')
    await client.ok('APPEND Archive CATENATE (URL "/INBOX/;UID=2/;SECTION=1.MIME" TEXT ', Lit(b"x"), ")")
    await client.ok('APPEND Archive CATENATE (URL "/INBOX/;UID=1/;PARTIAL=6.3" URL "/INBOX/;UID=1/;PARTIAL=999.9")')
    assert await _stored(imap) == [
        b"Hello world body\r\n",
        b"Subject: one\r\n\r\n",
        b"Content-Type: text/plain\r\n\r\nx",
        b"foo",
    ]


async def test_catenate_bad_urls_store_nothing(imap: Imap) -> None:
    """A wrong UIDVALIDITY, a missing UID, mailbox or part, or an unsupported URL is NO [BADURL url]."""
    await _setup(imap)
    client = await imap.connect()
    for url in (
        "/INBOX;UIDVALIDITY=12345/;UID=1",
        "/INBOX/;UID=9",
        "/Nowhere/;UID=1",
        "/INBOX/;UID=1/;SECTION=7",
        "/INBOX/;UID=1/;URLAUTH=anonymous",
        "INBOX/;UID=1",
        "imap://mail.example.com:143/INBOX/;UID=1/;EXPIRE=2030-01-01T00:00:00Z",
    ):
        result = await client.command(f'APPEND Archive CATENATE (TEXT {{1+}}\r\nx URL "{url}")')
        assert result.status == "NO", url
        assert result.code == f"BADURL {url}", url
    assert await _stored(imap) == []


async def test_catenate_never_reads_another_users_mail(imap: Imap) -> None:
    """A URL naming another user (or another server) is BADURL; a relative URL names the user's own mailbox."""
    await imap.deliver(b"Subject: alice's secret\r\n\r\nsecret\r\n", user=ALICE)
    await imap.deliver(_FIRST)
    client = await imap.connect()
    for url in (
        "imap://alice%40example.com@mail.example.com/INBOX/;UID=1",
        "imap://alice%40example.com@mail.example.com/INBOX/;UID=1/;SECTION=TEXT",
        "imap://elsewhere.example/INBOX/;UID=1",
    ):
        result = await client.command(f'APPEND Archive CATENATE (URL "{url}")')
        assert (result.status, (result.code or "").split(" ")[0]) == ("NO", "BADURL"), url
    await client.ok('APPEND Archive CATENATE (URL "/INBOX/;UID=1")')
    assert await _stored(imap) == [_FIRST]


async def test_catenate_to_a_missing_mailbox_says_trycreate_first(imap: Imap) -> None:
    """APPEND ... CATENATE to a mailbox that does not exist is NO [TRYCREATE], even with a bad URL in it."""
    client = await imap.connect()
    result = await client.command('APPEND Nope CATENATE (URL "/INBOX;UIDVALIDITY=1/;UID=1" TEXT ', Lit(b"x"), ")")
    assert (result.status, result.code) == ("NO", "TRYCREATE")


async def test_catenate_past_appendlimit_is_too_big(imap: Imap) -> None:
    """A catenated message larger than APPENDLIMIT (URL parts counted) is NO [TOOBIG]; nothing is stored."""
    await imap.deliver(b"Subject: big\r\n\r\n" + b"y" * 150_000 + b"\r\n")
    async with imap.other_server(max_literal_size=200_000) as port:
        client = await imap.connect(port=port)
        result = await client.command('APPEND Archive CATENATE (URL "/INBOX/;UID=1" URL "/INBOX/;UID=1")')
        assert (result.status, result.code) == ("NO", "TOOBIG")
        await client.ok('APPEND Archive CATENATE (URL "/INBOX/;UID=1" TEXT ', Lit(b"tail"), ")")
    assert len(await _stored(imap)) == 1


async def test_catenate_and_multiappend_together(imap: Imap) -> None:
    """CATENATE messages and plain ones mix in one MULTIAPPEND, each with its own flags."""
    await _setup(imap)
    client = await imap.connect()
    await client.ok(
        'APPEND Archive CATENATE (URL "/INBOX/;UID=1") (\\Answered) ',
        Lit(b"New: Message\r\n\r\nbody\r\n"),
        ' CATENATE (URL "/INBOX/;UID=2/;SECTION=HEADER" TEXT ',
        Lit(b"body3\r\n"),
        ")",
    )
    stored = await imap.stored("Archive")
    assert [m["raw"] for m in stored] == [
        _FIRST,
        b"New: Message\r\n\r\nbody\r\n",
        _SECOND[: _SECOND.index(b"\r\n\r\n") + 4] + b"body3\r\n",
    ]
    assert [m["flags"] for m in stored] == [[], ["\\Answered"], []]


async def test_catenate_past_the_storage_quota_stores_nothing(imap: Imap) -> None:
    """A CATENATE message that would pass the STORAGE limit is NO [OVERQUOTA], and so is a MULTIAPPEND holding
    it beside one that fits: nothing is stored."""
    await imap.deliver(b"Subject: big\r\n\r\n" + b"y" * 6000 + b"\r\n")
    await accounts.set_quota(imap.pool, BOB, {"storage": 10_000})
    client = await imap.connect()
    twice = 'CATENATE (URL "/INBOX/;UID=1" URL "/INBOX/;UID=1")'
    result = await client.command(f"APPEND Archive {twice}")
    assert (result.status, result.code) == ("NO", "OVERQUOTA")
    result = await client.command("APPEND Archive ", Lit(b"Subject: small\r\n\r\nx\r\n"), f" {twice}")
    assert (result.status, result.code) == ("NO", "OVERQUOTA")
    assert await _stored(imap) == []
    await client.ok('APPEND Archive CATENATE (URL "/INBOX/;UID=1/;SECTION=HEADER" TEXT ', Lit(b"fits\r\n"), ")")
    assert await _stored(imap) == [b"Subject: big\r\n\r\nfits\r\n"]


async def test_catenate_urls_count_towards_the_append_size(imap: Imap) -> None:
    """URL parts count towards imap.max_append_size like literals: two messages of 150 KB each from one URL pass
    a 250 KB bound together (NO [TOOBIG], nothing stored), while one of them fits."""
    await imap.deliver(b"Subject: big\r\n\r\n" + b"y" * 150_000 + b"\r\n")
    async with imap.other_server(max_literal_size=200_000, max_append_size=250_000) as port:
        client = await imap.connect(port=port)
        one = 'CATENATE (URL "/INBOX/;UID=1")'
        result = await client.command(f"APPEND Archive {one} {one}")
        assert (result.status, result.code) == ("NO", "TOOBIG")
        assert await _stored(imap) == []
        await client.ok(f"APPEND Archive {one}")
    assert len(await _stored(imap)) == 1
