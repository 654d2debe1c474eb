"""SORT (RFC 5256), SORT=DISPLAY (RFC 5957), ESORT (RFC 5267 §3) and PARTIAL (RFC 9394) over a real session."""

from __future__ import annotations

import imaplib
from datetime import UTC, datetime, timedelta

import pytest

from .conftest import Imap
from .helpers import ImapClient, make_message

T0 = datetime(2026, 2, 22, tzinfo=UTC)


def hours(n: float) -> datetime:
    return T0 + timedelta(hours=n)


async def _sort(client: ImapClient, command: str) -> list[int]:
    (line,) = (await client.ok(command)).lines("SORT")
    return [int(n) for n in line.split()[2:]]


async def _esearch(client: ImapClient, command: str) -> bytes:
    """The ESEARCH response to ``command``, its tag checked and then left out: ``* ESEARCH UID ALL 1:3``."""
    result = await client.ok(command)
    (line,) = result.lines("ESEARCH")
    head = f'* ESEARCH (TAG "{result.tag}")'.encode()
    assert line.startswith(head), line
    return b"* ESEARCH" + line[len(head) :]


async def _addresses(imap: Imap) -> ImapClient:
    """imaptest's sort-addresses mailbox: three messages whose first addresses sort 3, 1, 2."""
    for n, (sender, to, cc) in enumerate(
        [
            ("user2@domain2.org", "foo bar <user2@domain2.org>", "user2@domain2.org (foo bar)"),
            ("user2@domain1.org", "user2@domain1.org", "user2: blah@domain1.org;"),
            ("user1@domain1.org", "user1@domain1.org", "user1@domain1.org"),
        ]
    ):
        await imap.deliver(make_message(sender=sender, to=to, headers=(f"Cc: {cc}",)), internal_date=hours(n))
    return await imap.connect(select="INBOX")


async def test_address_criteria(imap: Imap) -> None:
    """FROM, TO and CC compare the first address's mailbox (a group's name), REVERSE only its own criterion."""
    client = await _addresses(imap)
    for key in ("FROM", "TO", "CC"):
        assert await _sort(client, f"SORT ({key}) US-ASCII ALL") == [3, 1, 2]
        assert await _sort(client, f"SORT (REVERSE {key}) US-ASCII ALL") == [1, 2, 3]  # ties keep their order
        assert await _sort(client, f"SORT ({key} REVERSE ARRIVAL) US-ASCII ALL") == [3, 2, 1]


async def test_arrival_date_and_size(imap: Imap) -> None:
    """ARRIVAL is INTERNALDATE, DATE the Date field (else INTERNALDATE), SIZE RFC822.SIZE; ties go by number."""
    cases = [  # (arrival hours, Date or None, body size)
        (5, "Sun, 22 Feb 2026 00:00:00 +0200", 100),
        (4, "Sun, 22 Feb 2026 02:00:00 +0200", 200),
        (3, "Sun, 22 Feb 2026 01:00:00 +0200", 300),
        (4, None, 400),  # no Date: sorts by its arrival, 04:00 UTC
        (-1, "Sun, 22 Feb 2026 00:30:00 +0000", 500),
    ]
    for arrival, date, size in cases:
        raw = make_message(date=date or "", body="x" * size)
        if date is None:
            raw = b"\r\n".join(line for line in raw.split(b"\r\n") if not line.startswith(b"Date:"))
        await imap.deliver(raw, internal_date=hours(arrival))
    client = await imap.connect(select="INBOX")
    assert await _sort(client, "SORT (ARRIVAL) UTF-8 ALL") == [5, 3, 2, 4, 1]
    assert await _sort(client, "SORT (REVERSE ARRIVAL) UTF-8 ALL") == [1, 2, 4, 3, 5]
    assert await _sort(client, "SORT (DATE) UTF-8 ALL") == [1, 3, 2, 5, 4]  # -02:00, -01:00, 00:00, 00:30, 04:00
    assert await _sort(client, "SORT (SIZE) UTF-8 ALL") == [1, 2, 3, 4, 5]
    assert await _sort(client, "SORT (ARRIVAL REVERSE SIZE) UTF-8 ALL") == [5, 3, 4, 2, 1]


async def test_subject(imap: Imap) -> None:
    """SUBJECT compares base subjects (RFC 5256 §2.1), decoded and casemapped; SEARCH keys narrow the set."""
    subjects = ["b", "Re: a", "=?utf-8?q?A?=", "[list] Fwd: c (fwd)", "B (a)", "_", "[xyz]"]
    for n, subject in enumerate(subjects):
        await imap.deliver(make_message(subject=subject), internal_date=hours(n), flags=["\\Seen"] if n % 2 else [])
    client = await imap.connect(select="INBOX")
    assert await _sort(client, "SORT (SUBJECT) UTF-8 ALL") == [2, 3, 1, 5, 4, 7, 6]
    assert await _sort(client, "SORT (REVERSE SUBJECT) UTF-8 ALL") == [6, 7, 4, 5, 1, 2, 3]
    assert await _sort(client, "SORT (SUBJECT) UTF-8 UNSEEN") == [3, 1, 5, 7]
    assert await _sort(client, "UID SORT (SUBJECT) UTF-8 2:4") == [2, 3, 4]


async def test_display(imap: Imap) -> None:
    """DISPLAYFROM and DISPLAYTO compare the decoded display name, else the address (RFC 5957)."""
    for n, addr in enumerate(
        ["foo bar <a@b.c>", "b@c.d", "=?iso-8859-1?q?foo_aar?= <e@f.g>", "z: aa@aa.org, bb@bb.org;", "empty:;"]
    ):
        await imap.deliver(make_message(sender=addr, to=addr), internal_date=hours(n))
    client = await imap.connect(select="INBOX")
    assert await _sort(client, "SORT (DISPLAYFROM) UTF-8 ALL") == [2, 5, 3, 1, 4]
    assert await _sort(client, "SORT (REVERSE DISPLAYTO) UTF-8 ALL") == [4, 1, 3, 5, 2]


async def test_uid_sort_and_only_known_messages(imap: Imap) -> None:
    """UID SORT answers UIDs; a message the client has not heard of yet is in no answer, then EXISTS follows."""
    for n in range(3):
        await imap.deliver(make_message(subject=f"s{3 - n}"), internal_date=hours(n))
    client = await imap.connect(select="INBOX")
    await client.ok("STORE 1 +FLAGS (\\Deleted)")
    await client.ok("EXPUNGE")
    box = await imap.mailbox()
    await imap.deliver(make_message(subject="s0"))
    await imap.heard(box["id"])
    result = await client.ok("UID SORT (SUBJECT) UTF-8 ALL")
    (line,) = result.lines("SORT")
    assert line == b"* SORT 3 2"
    assert b"* 3 EXISTS" in result.untagged
    assert await _sort(client, "SORT (SUBJECT) UTF-8 ALL") == [3, 2, 1]


async def test_charset(imap: Imap) -> None:
    """UTF-8 and US-ASCII (in any case, quoted or not) work; another charset is NO [BADCHARSET]."""
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    assert await _sort(client, 'SORT (DATE) "utf-8" ALL') == [1]
    refused = await client.command("SORT (DATE) KOI8-R ALL")
    assert refused.status == "NO"
    assert refused.code is not None
    assert refused.code.startswith("BADCHARSET")
    assert (await client.command("THREAD REFS ISO-8859-1 ALL")).code == refused.code


async def test_bad_sorts(imap: Imap) -> None:
    """Malformed SORT commands are BAD and the session goes on; SORT needs a selected mailbox."""
    client = await imap.connect()
    assert (await client.command("SORT (DATE) UTF-8 ALL")).status == "BAD"
    await client.ok("SELECT INBOX")
    for command in (
        "SORT DATE UTF-8 ALL",
        "SORT (DATE)",
        "SORT (SPEED) UTF-8 ALL",
        "SORT RETURN (PARTIAL) (DATE) UTF-8 ALL",
    ):
        assert (await client.command(command)).status == "BAD", command
    await client.ok("NOOP")


async def _five(imap: Imap) -> ImapClient:
    """Five messages whose ARRIVAL order is 1..5 and SIZE order 5..1."""
    for n in range(5):
        await imap.deliver(make_message(body="x" * (100 - 10 * n)), internal_date=hours(n))
    return await imap.connect(select="INBOX")


async def test_esort(imap: Imap) -> None:
    """SORT RETURN: MIN/MAX are the first/last sorted, ALL keeps the sort order, COUNT counts; RETURN () is ALL."""
    client = await _five(imap)
    assert await _esearch(client, "SORT RETURN (MIN) (ARRIVAL) US-ASCII 1:5") == b"* ESEARCH MIN 1"
    line = await _esearch(client, "SORT RETURN (MIN MAX ALL COUNT) (SIZE) US-ASCII ALL")
    assert line == b"* ESEARCH MIN 5 MAX 1 ALL 5,4,3,2,1 COUNT 5"
    line = await _esearch(client, "UID SORT RETURN () (REVERSE SIZE) US-ASCII 2:4")
    assert line == b"* ESEARCH UID ALL 2:4"
    assert await _esearch(client, "SORT RETURN (COUNT) (SIZE) UTF-8 SEEN") == b"* ESEARCH COUNT 0"


async def test_sort_save_then_dollar(imap: Imap) -> None:
    """SORT RETURN (SAVE) keeps the result for $ (RFC 5182); with MAX alone, the last sorted message."""
    client = await _five(imap)
    save = await client.ok("SORT RETURN (SAVE) (SIZE) UTF-8 2:3")
    assert save.lines("ESEARCH") == []
    assert sorted((await client.ok("FETCH $ (UID)")).fetches()) == [2, 3]
    await client.ok("SORT RETURN (SAVE MAX) (SIZE) UTF-8 ALL")
    assert list((await client.ok("FETCH $ (UID)")).fetches()) == [1]


@pytest.mark.parametrize(
    ("partial", "reverse", "shown"),
    [
        ("1:1", False, "1:1 1"),
        ("2:4", False, "2:4 2:4"),
        ("4:2", False, "2:4 2:4"),
        ("2:4", True, "2:4 4,3,2"),
        ("1:6", False, "1:6 1:5"),
        ("6:6", False, "6:6 NIL"),
        ("-1:-2", False, "-1:-2 4:5"),  # RFC 9394: counted from the end of the sorted result
        ("-2:-1", True, "-1:-2 2,1"),
        ("-6:-9", False, "-6:-9 NIL"),
    ],
)
async def test_partial(imap: Imap, partial: str, reverse: bool, shown: str) -> None:
    """SEARCH and SORT RETURN (PARTIAL) answer that part of the result, in result order, or NIL."""
    client = await _five(imap)
    order = "REVERSE ARRIVAL" if reverse else "ARRIVAL"
    line = await _esearch(client, f"SORT RETURN (PARTIAL {partial}) ({order}) US-ASCII ALL")
    assert line.endswith(f"PARTIAL ({shown})".encode())
    if not reverse:
        line = await _esearch(client, f"SEARCH RETURN (PARTIAL {partial}) ALL")
        assert line.endswith(f"PARTIAL ({shown})".encode())


async def test_partial_of_uids_and_gaps(imap: Imap) -> None:
    """PARTIAL counts results, not message numbers or UIDs: holes in the result do not shift it."""
    client = await _five(imap)
    line = await _esearch(client, "SEARCH RETURN (PARTIAL 2:3 COUNT) 1:2,4:5")
    assert line == b"* ESEARCH COUNT 4 PARTIAL (2:3 2,4)"
    await client.ok("STORE 2 +FLAGS (\\Deleted)")
    await client.ok("EXPUNGE")
    line = await _esearch(client, "UID SEARCH RETURN (PARTIAL 2:2) ALL")
    assert line == b"* ESEARCH UID PARTIAL (2:2 3)"


async def test_imaplib_sort_and_thread(imap: Imap) -> None:
    """imaplib's sort() and thread() (a real client library) read the answers."""
    for n in range(3):
        await imap.deliver(make_message(subject=f"Re: topic {2 - n}"), internal_date=hours(n))

    def script(conn: imaplib.IMAP4_SSL) -> tuple[object, object]:
        conn.select("INBOX")
        return conn.sort("(SUBJECT)", "UTF-8", "ALL"), conn.thread("ORDEREDSUBJECT", "UTF-8", "ALL")

    sorted_, threaded = await imap.imaplib(script)
    assert sorted_ == ("OK", [b"3 2 1"])
    assert threaded == ("OK", [b"(1)(2)(3)"])  # by sent date (all the same Date), then number


async def test_messages_from_before_migration_0018(imap: Imap) -> None:
    """Messages stored without sort keys (older rows) are sorted and threaded like new ones."""
    for n, subject in enumerate(["c", "Re: a", "b"]):
        await imap.deliver(make_message(subject=subject), internal_date=hours(n))
    client = await imap.connect(select="INBOX")
    expected = await _sort(client, "SORT (SUBJECT) UTF-8 ALL")
    await imap.pool.execute(
        "UPDATE messages SET sort_subject = NULL, sort_from = NULL, sort_to = NULL, sort_cc = NULL,"
        " sort_display_from = NULL, sort_display_to = NULL, thread_ids = NULL"
    )
    assert await _sort(client, "SORT (SUBJECT) UTF-8 ALL") == expected == [2, 3, 1]
    assert await imap.pool.fetchval("SELECT count(*) FROM messages WHERE sort_subject IS NULL") == 0


async def test_large_mailbox_keeps_the_loop_free(imap: Imap) -> None:
    """SORT, THREAD and PARTIAL over 100,000 messages answer in full, and never block the event loop (watchdog)."""
    count = 100_000
    # Threads of ten (each message answers the one five before it), subjects in 997 groups, dates in 10,007
    # steps, a fifth of the messages seen; the last 20,000 rows as if stored before migration 0018 (no keys).
    await imap.bulk(
        count,
        "flags, internal_date, date_header, size, subject, envelope, bodystructure, header_end,"
        " sort_subject, sort_from, sort_to, sort_cc, sort_display_from, sort_display_to, thread_ids, message_id",
        """CASE WHEN n % 5 = 0 THEN ARRAY['\\Seen'] ELSE '{}' END,
           timestamptz '2026-01-01' + (n % 10007) * interval '1 minute',
           CASE WHEN n % 3 = 0 THEN NULL ELSE timestamptz '2025-01-01' + (n % 101) * interval '1 hour' END,
           100 + n % 1000, 'Re: topic ' || (n % 997), '{}', '{}', 0,
           k.subject, k.subject, k.subject, '', k.subject, '', k.ids, '<' || n || '@x>'""",
        """,
           LATERAL (SELECT CASE WHEN n <= $2 - 20000 THEN 'TOPIC ' || (n % 997) END AS subject,
                           CASE WHEN n <= $2 - 20000 THEN
                                ARRAY['<' || n || '@x>']
                                || CASE WHEN n % 10 >= 5 THEN ARRAY['<' || (n - 5) || '@x>'] ELSE '{}' END
                           END AS ids) AS k""",
    )
    client = await imap.connect(select="INBOX")
    by_subject = await _sort(client, "SORT (SUBJECT ARRIVAL) UTF-8 ALL")
    assert sorted(by_subject) == list(range(1, count + 1))
    # "TOPIC 0" first: its 100 messages (the old rows' keys filled in agree with the stored ones).
    assert {n % 997 for n in by_subject[:100]} == {0}
    assert by_subject[100] % 997 == 1
    unseen = await _sort(client, "UID SORT (REVERSE DATE) UTF-8 UNSEEN")
    assert len(unseen) == count - count // 5
    line = await _esearch(client, "UID SORT RETURN (PARTIAL -1:-3 COUNT) (SIZE) UTF-8 ALL")
    assert line == b"* ESEARCH UID COUNT 100000 PARTIAL (-1:-3 97999,98999,99999)"
    line = await _esearch(client, "SEARCH RETURN (PARTIAL 99999:100005) ALL")
    assert line == b"* ESEARCH PARTIAL (99999:100005 99999:100000)"
    for algorithm in ("REFERENCES", "REFS", "ORDEREDSUBJECT"):
        threads = await _thread_count(client, f"THREAD {algorithm} UTF-8 ALL")
        # REFS: 40,000 pairs and message 5 (its parent <0@x> is no message) of the first 80,000, and 20,000
        # messages with no references; REFERENCES joins those by subject, as ORDEREDSUBJECT groups them.
        assert threads == {"REFERENCES": 997, "REFS": 60_001, "ORDEREDSUBJECT": 997}[algorithm], algorithm


async def _thread_count(client: ImapClient, command: str) -> int:
    """How many threads the THREAD response lists (its top-level parenthesized groups)."""
    (line,) = (await client.ok(command, wait=120)).lines("THREAD")
    depth = threads = 0
    for ch in line[len(b"* THREAD ") :]:
        if ch == ord("("):
            threads += depth == 0
            depth += 1
        elif ch == ord(")"):
            depth -= 1
    return threads


async def test_modseq_criterion_reports_the_highest_modseq(imap: Imap) -> None:
    """SORT with a MODSEQ criterion ends with (MODSEQ n) and ESORT carries MODSEQ n, like SEARCH (RFC 7162 §3.1.5)."""
    for subject in ("c", "a", "b"):
        await imap.deliver(make_message(subject=subject))
    client = await imap.connect(select="INBOX")
    await client.ok("STORE 2 +FLAGS.SILENT (\\Seen)")
    modseqs = {n: int(item["MODSEQ"][0]) for n, item in (await client.ok("FETCH 1:3 (MODSEQ)")).fetches().items()}
    top = max(modseqs.values())
    assert (await client.ok("SORT (SUBJECT) UTF-8 MODSEQ 1")).lines("SORT") == [f"* SORT 2 3 1 (MODSEQ {top})".encode()]
    assert (await client.ok("UID SORT (SUBJECT) UTF-8 MODSEQ 1")).lines("SORT") == [
        f"* SORT 2 3 1 (MODSEQ {top})".encode()
    ]
    assert await _esearch(client, "SORT RETURN (ALL COUNT) (SUBJECT) UTF-8 MODSEQ 1") == (
        f"* ESEARCH ALL 2:3,1 COUNT 3 MODSEQ {top}".encode()
    )
    # MAX alone returns the last sorted message: its own modseq (message 1, "c", unchanged since delivery).
    assert await _esearch(client, "SORT RETURN (MAX) (SUBJECT) UTF-8 MODSEQ 1") == (
        f"* ESEARCH MAX 1 MODSEQ {modseqs[1]}".encode()
    )
    assert (await client.ok(f"SORT (SUBJECT) UTF-8 MODSEQ {top + 1}")).lines("SORT") == [b"* SORT"]


async def test_recent_new_and_old_criteria(imap: Imap) -> None:
    """SORT and ESORT take RECENT, NEW and OLD as this IMAP4rev1 session sees \\Recent."""
    for subject in ("c", "a", "b"):
        await imap.deliver(make_message(subject=subject))
    client = await imap.connect(select="INBOX")  # the first to select: all three are recent here
    await client.ok("STORE 2 +FLAGS.SILENT (\\Seen)")
    assert await _sort(client, "SORT (SUBJECT) UTF-8 RECENT") == [2, 3, 1]
    assert await _sort(client, "SORT (SUBJECT) UTF-8 NEW") == [3, 1]
    assert await _esearch(client, "SORT RETURN (COUNT) (SUBJECT) UTF-8 OLD") == b"* ESEARCH COUNT 0"
    later = await imap.connect(select="INBOX")  # nothing is recent for a later session
    assert await _sort(later, "SORT (SUBJECT) UTF-8 OLD") == [2, 3, 1]
    assert await _sort(later, "SORT (SUBJECT) UTF-8 RECENT") == []
