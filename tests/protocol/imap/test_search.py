"""SEARCH (RFC 9051 §6.4.4, ESEARCH RFC 4731, SEARCHRES RFC 5182): every key, results in both forms, and $."""

from __future__ import annotations

import imaplib
from datetime import UTC, datetime
from typing import Any

import pytest

from .conftest import Imap
from .helpers import ImapClient, Lit, make_message

M1 = make_message(
    sender="Alice Example <alice@one.example>",
    to="Bob <bob@example.com>",
    subject="Quarterly report",
    date="Mon, 02 Feb 2026 10:00:00 +0000",
    headers=("Cc: Carol <carol@cc.example>",),
    body="The numbers look great this quarter.\r\n",
)
M2 = make_message(
    sender="dave@two.example",
    to="bob@example.com",
    subject="Lunch?",
    date="Thu, 05 Mar 2026 12:00:00 +0000",
    headers=(
        "Bcc: bob@example.com",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
    ),
    body="Caf\u00e9 at noon? Gr\u00fc\u00dfe, Dave\r\n",
)
M3 = make_message(
    sender="Erin <erin@three.example>",
    to="team@lists.example",
    subject="=?UTF-8?Q?=C3=9Cbersicht?=",
    date="Fri, 10 Apr 2026 08:00:00 +0200",
    headers=(
        "X-Instrument: Xylophone",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable",
    ),
    body="A caf=C3=A9 latte for everyone.\r\n" + ("padding line " * 6 + "\r\n") * 60,
)
M4 = make_message(
    sender="Alice Example <alice@one.example>",
    to="Bob <bob@example.com>",
    subject="Re: Quarterly report",
    date="Tue, 03 Nov 2026 00:30:00 +0100",
    body="See the attached figures.\r\n",
)
DATES = [datetime(2026, 2, 2, 10, tzinfo=UTC), datetime(2026, 3, 5, 12, tzinfo=UTC)]
DATES += [datetime(2026, 4, 10, 6, tzinfo=UTC), datetime(2026, 11, 2, 23, 30, tzinfo=UTC)]
FLAGS = [["\\Seen"], ["\\Flagged", "$Work"], ["\\Answered", "\\Deleted", "\\Seen"], ["\\Draft"]]


async def _setup(imap: Imap, *, index: bool = False, enable: str | None = None) -> ImapClient:
    for raw, when, flags in zip([M1, M2, M3, M4], DATES, FLAGS, strict=True):
        await imap.deliver(raw, flags=flags, internal_date=when)
    if index:
        await imap.index()
    return await imap.connect(select="INBOX", enable=enable)


async def _search(client: ImapClient, *criteria: str | bytes | Lit) -> list[int]:
    return (await client.ok("SEARCH ", *criteria)).search()


async def test_all_and_sequence_sets(imap: Imap) -> None:
    """ALL, message numbers, ranges, "*" and lists select by message number."""
    client = await _setup(imap)
    assert await _search(client, "ALL") == [1, 2, 3, 4]
    assert await _search(client, "2:3") == [2, 3]
    assert await _search(client, "3:2") == [2, 3]
    assert await _search(client, "1,4") == [1, 4]
    assert await _search(client, "*") == [4]
    assert await _search(client, "3:*") == [3, 4]
    assert await _search(client, "1:2,4") == [1, 2, 4]
    assert await _search(client, "9") == []


async def test_flag_keys(imap: Imap) -> None:
    """Each system-flag key and its UN- form match by the stored flags; all four are recent in the selecting session."""
    client = await _setup(imap)
    expected = {
        "SEEN": [1, 3],
        "UNSEEN": [2, 4],
        "FLAGGED": [2],
        "UNFLAGGED": [1, 3, 4],
        "ANSWERED": [3],
        "UNANSWERED": [1, 2, 4],
        "DELETED": [3],
        "UNDELETED": [1, 2, 4],
        "DRAFT": [4],
        "UNDRAFT": [1, 2, 3],
        "NEW": [2, 4],
        "RECENT": [1, 2, 3, 4],
        "OLD": [],
    }
    for key, numbers in expected.items():
        assert await _search(client, key) == numbers, key


async def test_keyword_keys(imap: Imap) -> None:
    """KEYWORD and UNKEYWORD match keywords."""
    client = await _setup(imap)
    assert await _search(client, "KEYWORD $Work") == [2]
    assert await _search(client, "UNKEYWORD $Work") == [1, 3, 4]
    assert await _search(client, "KEYWORD $Nothing") == []


async def test_internal_date_keys(imap: Imap) -> None:
    """BEFORE, ON and SINCE compare the internal date's day."""
    client = await _setup(imap)
    assert await _search(client, "BEFORE 5-Mar-2026") == [1]
    assert await _search(client, "ON 5-Mar-2026") == [2]
    assert await _search(client, 'SINCE "5-Mar-2026"') == [2, 3, 4]
    assert await _search(client, "SINCE 1-Jan-2027") == []


async def test_sent_date_keys(imap: Imap) -> None:
    """SENTBEFORE, SENTON and SENTSINCE compare the Date header's day."""
    client = await _setup(imap)
    assert await _search(client, "SENTBEFORE 5-Mar-2026") == [1]
    assert await _search(client, "SENTON 2-Feb-2026") == [1]
    assert await _search(client, "SENTSINCE 10-Apr-2026") == [3, 4]


async def test_sent_on_uses_header_timezone(imap: Imap) -> None:
    """SENTON matches the day written in the Date header, whatever its zone."""
    client = await _setup(imap)
    assert await _search(client, "SENTON 3-Nov-2026") == [4]


async def test_address_and_subject_keys(imap: Imap) -> None:
    """FROM, TO, CC, BCC and SUBJECT are case-insensitive substring matches on decoded fields."""
    client = await _setup(imap)
    assert await _search(client, "FROM alice") == [1, 4]
    assert await _search(client, 'FROM "ONE.EXAMPLE"') == [1, 4]
    assert await _search(client, 'FROM "Alice Example"') == [1, 4]
    assert await _search(client, "TO team@lists") == [3]
    assert await _search(client, "CC carol") == [1]
    assert await _search(client, "BCC bob@example.com") == [2]
    assert await _search(client, "SUBJECT quarterly") == [1, 4]
    assert await _search(client, 'SUBJECT "re: quarterly"') == [4]


async def test_address_keys_match_group_names(imap: Imap) -> None:
    """TO, FROM and CC match a group's display name, whether the group has members or not (imaptest's groups)."""
    groups = "groupname: groupuser1@domain.org, groupuser2@domain.org;,\r\n  groupname2: groupuser3@domain.org;"
    await imap.deliver(make_message(to=groups, headers=("Cc: =?utf-8?q?Caf=C3=A9_people?=: x@y.example;",)))
    await imap.deliver(make_message(to="groupname:;", sender="Senders: a@b.example;"))
    client = await imap.connect(select="INBOX")
    assert await _search(client, "TO groupname") == [1, 2]
    assert await _search(client, "TO groupname2") == [1]
    assert await _search(client, "TO groupuser3") == [1]
    assert await _search(client, "TO groupuser4") == []
    assert await _search(client, "FROM senders") == [2]
    assert await _search(client, "CHARSET UTF-8 CC ", Lit("caf\u00e9 PEOPLE".encode())) == [1]
    assert await _search(client, "CC groupname") == []


async def test_subject_decoded_non_ascii(imap: Imap) -> None:
    """SUBJECT with CHARSET UTF-8 matches an RFC 2047 encoded subject after decoding."""
    client = await _setup(imap)
    assert await _search(client, "CHARSET UTF-8 SUBJECT ", Lit("\u00fcbersicht".encode())) == [3]


async def test_header_key(imap: Imap) -> None:
    """HEADER matches a named field's value; an empty string matches every message having the field."""
    client = await _setup(imap)
    assert await _search(client, "HEADER X-Instrument xylo") == [3]
    assert await _search(client, 'HEADER X-Instrument ""') == [3]
    assert await _search(client, 'HEADER Message-ID ""') == [1, 2, 3, 4]
    assert await _search(client, "HEADER Subject Lunch") == [2]
    assert await _search(client, "HEADER X-Missing x") == []


async def test_size_keys(imap: Imap) -> None:
    """LARGER and SMALLER compare RFC822.SIZE strictly."""
    client = await _setup(imap)
    assert await _search(client, "LARGER 2000") == [3]
    assert await _search(client, f"SMALLER {len(M3)}") == [1, 2, 4]
    assert await _search(client, f"LARGER {len(M3)}") == []
    assert await _search(client, f"SMALLER {len(M3) + 1}") == [1, 2, 3, 4]


async def test_not_or_and_parentheses(imap: Imap) -> None:
    """NOT, OR, implicit AND and parenthesized groups combine keys."""
    client = await _setup(imap)
    assert await _search(client, "NOT SEEN") == [2, 4]
    assert await _search(client, "OR FLAGGED DRAFT") == [2, 4]
    assert await _search(client, "SEEN FROM erin") == [3]
    assert await _search(client, "OR (SEEN FROM alice) KEYWORD $Work") == [1, 2]
    assert await _search(client, "NOT (OR SEEN DRAFT)") == [2]
    assert await _search(client, "OR OR 1 2 3") == [1, 2, 3]
    assert await _search(client, "NOT NOT NOT 1") == [2, 3, 4]
    assert await _search(client, "UNDELETED 2:*") == [2, 4]


async def test_uid_key(imap: Imap) -> None:
    """The UID key takes a UID set."""
    client = await _setup(imap)
    uids = [m["uid"] for m in await imap.stored()]
    assert await _search(client, f"UID {uids[1]}:{uids[2]}") == [2, 3]
    assert await _search(client, "UID *") == [4]


async def test_body_and_text(imap: Imap) -> None:
    """BODY looks in the body only, TEXT in header and body; both decode transfer encodings."""
    client = await _setup(imap)
    assert await _search(client, "BODY numbers") == [1]
    assert await _search(client, "BODY alice") == []
    assert await _search(client, "TEXT alice") == [1, 4]
    assert await _search(client, 'BODY "attached figures"') == [4]
    assert await _search(client, "TEXT xylophone") == [3]


@pytest.mark.parametrize("indexed", [False, True], ids=["unindexed", "indexed"])
async def test_body_non_ascii_with_charset(imap: Imap, indexed: bool) -> None:
    """CHARSET UTF-8 BODY with a non-ASCII literal finds 8-bit and quoted-printable bodies, indexed or not."""
    client = await _setup(imap, index=indexed)
    assert await _search(client, "CHARSET UTF-8 BODY ", Lit("caf\u00e9".encode())) == [2, 3]
    assert await _search(client, "CHARSET UTF-8 TEXT ", Lit("GR\u00dc\u00dfE".encode())) == [2]
    assert await _search(client, "CHARSET UTF-8 BODY ", Lit("caf\u00e9 latte".encode())) == [3]


async def test_body_text_same_before_and_after_indexing(imap: Imap) -> None:
    """BODY/TEXT are substring matches: a search gives the same answer before and after the body is indexed."""
    client = await _setup(imap)
    queries = ["BODY umbers", "TEXT umbers", "TEXT xylophone", "TEXT three.example", 'BODY "ee the"']
    before = {q: await _search(client, q) for q in queries}
    assert before == {
        "BODY umbers": [1],
        "TEXT umbers": [1],
        "TEXT xylophone": [3],
        "TEXT three.example": [3],
        'BODY "ee the"': [4],
    }
    await imap.index()
    after = {q: await _search(client, q) for q in queries}
    assert after == before


async def test_utf8_quoted_needs_enable(imap: Imap) -> None:
    """A rev1 client must send 8-bit search text as a literal (quoted is BAD); after UTF8=ACCEPT quoted works."""
    client = await _setup(imap)
    assert (await client.command('SEARCH CHARSET UTF-8 BODY "caf\u00e9"'.encode())).status == "BAD"
    utf8 = await imap.connect(select="INBOX", enable="UTF8=ACCEPT")
    assert (await utf8.ok('SEARCH BODY "caf\u00e9"'.encode())).search() == [2, 3]


async def test_unsupported_charset(imap: Imap) -> None:
    """An unknown CHARSET is NO [BADCHARSET (UTF-8)]."""
    client = await _setup(imap)
    result = await client.command("SEARCH CHARSET KOI8-R BODY x")
    assert result.status == "NO"
    assert result.code == "BADCHARSET (UTF-8)"
    assert await _search(client, "CHARSET US-ASCII BODY numbers") == [1]


async def test_esearch_return_options(imap: Imap) -> None:
    """RETURN (MIN MAX COUNT ALL) answers ESEARCH with the tag; an empty result gives COUNT 0 only."""
    client = await _setup(imap)
    result = await client.ok("SEARCH RETURN (MIN MAX COUNT ALL) UNDRAFT")
    assert result.lines("SEARCH") == []
    found = result.esearch()
    assert found["TAG"] == result.tag
    assert (found["MIN"], found["MAX"], found["COUNT"], found["ALL"]) == ("1", "3", "3", "1:3")
    assert found["UID"] is False
    empty = (await client.ok("SEARCH RETURN (MIN MAX COUNT ALL) KEYWORD $None")).esearch()
    assert empty == {"UID": False, "TAG": empty["TAG"], "COUNT": "0"}
    assert (await client.ok("SEARCH RETURN () SEEN")).esearch()["ALL"] == "1,3"
    counted = await client.ok("SEARCH RETURN (COUNT) ALL")
    assert counted.esearch() == {"UID": False, "TAG": counted.tag, "COUNT": "4"}


async def test_uid_esearch(imap: Imap) -> None:
    """UID SEARCH RETURN answers UIDs and marks the response UID."""
    client = await _setup(imap)
    uids = [m["uid"] for m in await imap.stored()]
    found = (await client.ok("UID SEARCH RETURN (MIN MAX) FROM alice")).esearch()
    assert found["UID"] is True
    assert (found["MIN"], found["MAX"]) == (str(uids[0]), str(uids[3]))


async def test_rev2_plain_search_answers_esearch(imap: Imap) -> None:
    """After ENABLE IMAP4rev2 a plain SEARCH answers ESEARCH ALL, never the SEARCH response."""
    client = await _setup(imap, enable="IMAP4rev2")
    result = await client.ok("SEARCH SEEN")
    assert result.lines("SEARCH") == []
    assert result.esearch()["ALL"] == "1,3"
    nothing = await client.ok("SEARCH KEYWORD $None")
    assert "ALL" not in nothing.esearch()
    found = (await client.ok("SEARCH RETURN (MIN MAX COUNT) ALL")).esearch()
    assert (found["MIN"], found["MAX"], found["COUNT"]) == ("1", "4", "4")


async def test_save_and_dollar(imap: Imap) -> None:
    """RETURN (SAVE) answers nothing and keeps the result for $ in FETCH, SEARCH, STORE and COPY."""
    client = await _setup(imap)
    uids = [m["uid"] for m in await imap.stored()]
    saved = await client.ok("SEARCH RETURN (SAVE) FROM alice")
    assert saved.lines("ESEARCH") == []
    assert saved.lines("SEARCH") == []
    fetched = (await client.ok("FETCH $ UID")).fetches()
    assert {n: f["UID"] for n, f in fetched.items()} == {1: str(uids[0]), 4: str(uids[3])}
    assert await _search(client, "$") == [1, 4]
    assert await _search(client, "$ UNSEEN") == [4]
    await client.ok("STORE $ +FLAGS.SILENT ($FromAlice)")
    assert await _search(client, "KEYWORD $FromAlice") == [1, 4]
    await client.ok("UID COPY $ Archive")
    assert len(await imap.stored("Archive")) == 2
    both = (await client.ok("SEARCH RETURN (SAVE COUNT) SEEN")).esearch()
    assert both["COUNT"] == "2"
    assert await _search(client, "$") == [1, 3]


async def test_dollar_without_saved_result(imap: Imap) -> None:
    """$ before any SAVE refers to no message."""
    client = await _setup(imap)
    assert await _search(client, "$") == []
    assert (await client.ok("FETCH $ UID")).fetches() == {}


async def test_save_with_min_saves_minimum(imap: Imap) -> None:
    """SEARCH RETURN (SAVE MIN) makes $ the lowest matching message only."""
    client = await _setup(imap)
    await client.ok("SEARCH RETURN (SAVE MIN) FROM alice")
    assert await _search(client, "$") == [1]


async def test_search_only_reports_known_messages(imap: Imap) -> None:
    """A message delivered after the client's last sync is not in SEARCH results; EXISTS follows instead."""
    client = await _setup(imap)
    stored = await imap.deliver(make_message(sender="alice@one.example"))
    await imap.heard(stored.mailbox_id)
    result = await client.ok("SEARCH FROM alice")
    assert result.search() == [1, 4]
    assert b"* 5 EXISTS" in result.untagged
    assert await _search(client, "FROM alice") == [1, 4, 5]


async def test_search_syntax_errors(imap: Imap) -> None:
    """Unknown keys, missing arguments, bad numbers and unbalanced parentheses are BAD; the session goes on."""
    client = await _setup(imap)
    for criteria in (
        "BOGUS",
        "FROM",
        "LARGER x",
        "BEFORE 31-Foo-2026",
        "(SEEN",
        "SEEN)",
        "OR SEEN",
        "0",
        "1:",
        "",
        "UID abc",
    ):
        assert (await client.command(f"SEARCH {criteria}")).status == "BAD", criteria
    assert await _search(client, "ALL") == [1, 2, 3, 4]


async def test_search_deep_nesting(imap: Imap) -> None:
    """Absurdly deep parentheses or NOT chains are BAD, not a crash."""
    client = await _setup(imap)
    assert (await client.command("SEARCH " + "(" * 5000 + "ALL" + ")" * 5000)).status == "BAD"
    assert (await client.command("SEARCH " + "NOT " * 5000 + "ALL")).status == "BAD"
    assert await _search(client, "((((SEEN))))") == [1, 3]
    await imap.assert_serves()


async def test_search_needs_selected_mailbox(imap: Imap) -> None:
    """SEARCH without a selected mailbox is BAD."""
    client = await imap.connect()
    assert (await client.command("SEARCH ALL")).status == "BAD"


async def test_search_with_imaplib(imap: Imap) -> None:
    """imaplib search() with a charset and a literal criterion works."""
    await _setup(imap)

    def script(conn: imaplib.IMAP4) -> tuple[list[Any], list[Any]]:
        conn.select("INBOX")
        plain = conn.search(None, "FROM", '"alice"')[1]
        conn.literal = "caf\u00e9".encode()  # type: ignore[assignment]
        utf8 = conn.search("UTF-8", "BODY")[1]
        return plain, utf8

    assert await imap.imaplib(script) == ([b"1 4"], [b"2 3"])


async def test_search_reads_the_mailbox_in_bounded_batches(imap: Imap, monkeypatch: pytest.MonkeyPatch) -> None:
    """With batches of 3 rows and text groups of 1 KiB, every key answers as one read of the whole mailbox
    would, half the messages indexed and half not."""
    raws = [
        make_message(subject=f"batch {i}", body=("needle " if i % 3 == 0 else "hay ") * (i * 20)) for i in range(20)
    ]
    for raw in raws[:10]:
        await imap.deliver(raw, flags=["\\Seen"] if len(raw) % 2 else [])
    await imap.index()
    for raw in raws[10:]:
        await imap.deliver(raw)
    client = await imap.connect(select="INBOX")
    queries = ["ALL", "TEXT needle", "BODY needle", "NOT BODY needle", 'HEADER Subject "batch 1"', "OR SEEN BODY hay",
               "UID 3:7,12:*", "SUBJECT batch LARGER 500", '2:5 HEADER Subject batch NOT TEXT needle']  # fmt: skip
    whole = {q: (await client.ok(f"SEARCH {q}")).search() for q in queries}
    assert whole["BODY needle"] == [i + 1 for i in range(20) if i % 3 == 0 and i > 0]
    monkeypatch.setattr("relate.imap.search._BATCH", 3)
    monkeypatch.setattr("relate.imap.search._TEXT_BYTES", 1024)
    monkeypatch.setattr("relate.imap.search._INLINE_ROWS", 1)
    for query, expected in whole.items():
        assert (await client.ok(f"SEARCH {query}")).search() == expected, query


async def test_search_key_count_is_bounded(imap: Imap) -> None:
    """A SEARCH of 500 keys runs; one of 501 is BAD, saying the limit."""
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    assert (await client.ok("SEARCH " + " ".join(["UID 1:4294967295"] * 500))).search() == [1]
    result = await client.command("SEARCH " + " ".join(["SEEN"] * 501))
    assert result.status == "BAD"
    assert "500" in result.text


async def test_indexed_messages_copied_moved_and_flagged_are_found_by_text(imap: Imap) -> None:
    """A message indexed, then flagged, copied and moved, is found by BODY/TEXT in every mailbox it is in: its
    indexed text goes with each copy (migration 0032 keeps it apart from the row a flag change rewrites)."""
    client = await _setup(imap, index=True)
    await client.ok("STORE 1:4 +FLAGS (\\Seen $Label1)")
    await client.ok("CREATE Kept")
    await client.ok("CREATE Later")
    await client.ok("COPY 1,3 Kept")
    await client.ok("MOVE 4 Later")
    assert await _search(client, "BODY umbers") == [1]
    await client.ok("SELECT Kept")
    assert await _search(client, "BODY umbers") == [1]
    assert await _search(client, "TEXT xylophone") == [2]
    assert await _search(client, "BODY latte") == [2]
    await client.ok("SELECT Later")
    assert await _search(client, 'BODY "ee the"') == [1]
    assert await _search(client, "BODY umbers") == []
