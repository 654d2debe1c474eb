"""CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 §4): results kept up to date with ADDTO/REMOVEFROM, and CANCELUPDATE."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from .conftest import Imap
from .helpers import ImapClient, Lit, Result, make_message

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def updates(lines: list[bytes], tag: str) -> list[bytes]:
    """The update responses for the search tagged ``tag``, without their ``* ESEARCH (TAG "t")`` head."""
    head = f'* ESEARCH (TAG "{tag}") '.encode()
    return [line[len(head) :] for line in lines if line.startswith(head)]


async def _mailbox(imap: Imap, count: int = 5) -> ImapClient:
    for n in range(count):
        await imap.deliver(make_message(subject=f"s{n}", body="body"), internal_date=T0 + timedelta(hours=n))
    return await imap.connect(select="INBOX")


async def test_search_updates_follow_stores_expunges_and_appends(imap: Imap) -> None:
    """imaptest search-context-update: own STOREs, EXPUNGE and APPEND update the result before the tagged OK."""
    client = await _mailbox(imap)
    search = await client.ok("SEARCH RETURN (UPDATE) BODY body SEEN")
    tag = search.tag
    assert search.lines("ESEARCH") == [f'* ESEARCH (TAG "{tag}")'.encode()]
    result = await client.ok("STORE 1,2,4 +FLAGS (\\Seen)")
    assert updates(result.untagged, tag) == [b"ADDTO (0 1:2,4)"]
    result = await client.ok("STORE 1,2 -FLAGS (\\Seen)")
    assert updates(result.untagged, tag) == [b"REMOVEFROM (0 1:2)"]
    await client.ok("STORE 3:5 +FLAGS (\\Deleted)")
    result = await client.ok("EXPUNGE")
    # RFC 5267 §4.3.4: the removal comes first, numbered as the client knew message 4 then.
    assert result.untagged[0] == f'* ESEARCH (TAG "{tag}") REMOVEFROM (0 4)'.encode()
    assert result.untagged[1:] == [b"* 3 EXPUNGE"] * 3
    result = await client.ok("APPEND INBOX (\\Seen) ", Lit(b"Subject: new\r\n\r\nbody\r\n"))
    assert result.untagged.index(b"* 3 EXISTS") < result.untagged.index(f'* ESEARCH (TAG "{tag}") ADDTO (0 3)'.encode())
    await client.ok(f'CANCELUPDATE "{tag}"')
    result = await client.ok("STORE 1 +FLAGS (\\Seen)")
    assert updates(result.untagged, tag) == []


async def test_uid_search_updates_carry_uids(imap: Imap) -> None:
    """imaptest search-context-update3: a UID SEARCH's updates name UIDs, and ALL comes with the first answer."""
    client = await _mailbox(imap, 6)
    await client.ok("STORE 1 +FLAGS (\\Deleted)")
    await client.ok("EXPUNGE")
    await client.ok("STORE 1,2 +FLAGS (\\Seen)")
    search = await client.ok("UID SEARCH RETURN (UPDATE ALL) OR SEEN SUBJECT s3")
    assert search.lines("ESEARCH") == [f'* ESEARCH (TAG "{search.tag}") UID ALL 2:4'.encode()]
    result = await client.ok("STORE 1:5 -FLAGS (\\Seen)")
    assert updates(result.untagged, search.tag) == [b"UID REMOVEFROM (0 2:3)"]
    result = await client.ok("UID STORE 5:6 +FLAGS (\\Seen)")
    assert updates(result.untagged, search.tag) == [b"UID ADDTO (0 5:6)"]


async def test_other_sessions_changes_reach_an_idling_client(imap: Imap) -> None:
    """Changes made elsewhere (a delivery, another session's STORE) reach an IDLE client as ADDTO/REMOVEFROM."""
    client = await _mailbox(imap, 2)
    search = await client.ok("SEARCH RETURN (UPDATE COUNT) UNSEEN")
    other = await imap.connect(select="INBOX")
    idle = await client.idle()
    await imap.deliver(make_message(subject="late"))
    lines = await client.read_until(lambda line: b"ADDTO" in line)
    # An IMAP4rev1 session takes the new message as recent (RECENT after EXISTS); the update comes after both.
    assert lines[-3:] == [b"* 3 EXISTS", b"* 3 RECENT", f'* ESEARCH (TAG "{search.tag}") ADDTO (0 3)'.encode()]
    await other.ok("STORE 1 +FLAGS (\\Seen)")
    lines = await client.read_until(lambda line: b"REMOVEFROM" in line)
    assert lines[-1] == f'* ESEARCH (TAG "{search.tag}") REMOVEFROM (0 1)'.encode()
    assert (await client.done(idle)).ok


async def test_removals_come_before_vanished(imap: Imap) -> None:
    """Under QRESYNC an expunge is VANISHED: REMOVEFROM still comes first, numbered as the client knew them."""
    client = await _mailbox(imap, 3)
    await client.ok("ENABLE QRESYNC")
    search = await client.ok("SEARCH RETURN (UPDATE) ALL")
    uids = await client.ok("UID SEARCH RETURN (UPDATE) ALL")
    await client.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    result = await client.ok("EXPUNGE")
    assert result.untagged[:3] == [
        f'* ESEARCH (TAG "{search.tag}") REMOVEFROM (0 2)'.encode(),
        f'* ESEARCH (TAG "{uids.tag}") UID REMOVEFROM (0 2)'.encode(),
        b"* VANISHED 2",
    ]


async def test_recent_searches_take_new_mail(imap: Imap) -> None:
    """A kept SEARCH RECENT (or NEW, or SORT ... RECENT) gains the mail this session takes as recent; OLD does not."""
    await imap.deliver(make_message(subject="b"))
    client = await imap.connect(select="INBOX")  # takes message 1 as recent
    recent = await client.ok("SEARCH RETURN (UPDATE ALL) RECENT")
    assert recent.lines("ESEARCH") == [f'* ESEARCH (TAG "{recent.tag}") ALL 1'.encode()]
    new = await client.ok("SEARCH RETURN (UPDATE) NEW")
    old = await client.ok("SEARCH RETURN (UPDATE) OLD")
    sort = await client.ok("SORT RETURN (UPDATE ALL) (SUBJECT) UTF-8 RECENT")
    await imap.deliver(make_message(subject="a"))
    result = await client.ok("NOOP")
    assert result.lines("RECENT") == [b"* 2 RECENT"]
    assert updates(result.untagged, recent.tag) == [b"ADDTO (0 2)"]
    assert updates(result.untagged, new.tag) == [b"ADDTO (0 2)"]
    assert updates(result.untagged, old.tag) == []
    assert updates(result.untagged, sort.tag) == [b"ADDTO (1 2)"]  # "a" sorts before "b"
    result = await client.ok("STORE 2 +FLAGS (\\Seen)")
    assert updates(result.untagged, new.tag) == [b"REMOVEFROM (0 2)"]
    assert updates(result.untagged, recent.tag) == []


async def test_sort_updates_have_positions(imap: Imap) -> None:
    """CONTEXT=SORT: additions and removals name their place in the sorted result (RFC 5267 §4.3.3-4)."""
    for subject in ("d", "b", "f"):
        await imap.deliver(make_message(subject=subject))
    client = await imap.connect(select="INBOX")
    sort = await client.ok("UID SORT RETURN (UPDATE ALL) (SUBJECT) UTF-8 ALL")
    assert sort.lines("ESEARCH") == [f'* ESEARCH (TAG "{sort.tag}") UID ALL 2,1,3'.encode()]
    for subject in ("a", "e", "c", "g"):  # UIDs 4 to 7 land before b, between d and f, between b and d, last
        await imap.deliver(make_message(subject=subject))
    result = await client.ok("NOOP")
    # Applied in order: a at 1 gives a b d f; c at 3 gives a b c d f; e at 5; g at 7, after f.
    assert updates(result.untagged, sort.tag) == [b"UID ADDTO (1 4 3 6 5 5 7 7)"]
    await client.ok("UID STORE 1,6 +FLAGS (\\Deleted)")
    result = await client.ok("UID EXPUNGE 1,6")
    # a b c d e f g: c is 3rd; with c gone, d is 3rd too: one run of two removals at 3.
    assert updates(result.untagged, sort.tag) == [b"UID REMOVEFROM (3 6,1)"]
    number = await client.ok("SORT RETURN (UPDATE) (REVERSE SUBJECT) UTF-8 ALL")
    await imap.deliver(make_message(subject="bb"))
    result = await client.ok("NOOP")
    assert updates(result.untagged, number.tag) == [b"ADDTO (4 6)"]  # g f e bb b a: message 6, fourth place


async def test_criteria_keep_the_messages_they_named(imap: Imap) -> None:
    """Message numbers, $ and * in kept criteria stay the messages they named when the search ran."""
    client = await _mailbox(imap, 4)
    await client.ok("SEARCH RETURN (SAVE) 4")
    by_number = await client.ok("SEARCH RETURN (UPDATE) 2:3 UNSEEN")
    by_saved = await client.ok("SEARCH RETURN (UPDATE) $ UNSEEN")
    by_star = await client.ok("UID SEARCH RETURN (UPDATE) UID 3:* UNSEEN")
    await client.ok("STORE 1 +FLAGS (\\Deleted)")
    await client.ok("EXPUNGE")  # message 2 is 1 now, 3 is 2
    await imap.deliver(make_message(subject="new"))
    result = await client.ok("STORE 1:2,3 +FLAGS (\\Seen)")
    assert updates(result.untagged, by_number.tag) == [b"REMOVEFROM (0 1:2)"]
    assert updates(result.untagged, by_saved.tag) == [b"REMOVEFROM (0 3)"]
    assert updates(result.untagged, by_star.tag) == [b"UID REMOVEFROM (0 3:4)"]


async def test_tags_limits_and_cancel(imap: Imap) -> None:
    """A live tag is BAD for UPDATE; past imap.max_update_contexts NO [NOUPDATE]; an unknown tag to cancel is NO."""
    client = await _mailbox(imap, 1)
    first = await client.ok("SEARCH RETURN (UPDATE) ALL")
    reused = await client.command("SEARCH RETURN (UPDATE) ALL", tag=first.tag)
    assert reused.status == "BAD"
    for _ in range(imap.cfg.imap.max_update_contexts - 1):
        await client.ok("SEARCH RETURN (UPDATE) SEEN")
    over: Result = await client.ok("SEARCH RETURN (UPDATE COUNT) ALL")
    assert any(line.startswith(f'* NO [NOUPDATE "{over.tag}"]'.encode()) for line in over.untagged)
    assert re.search(rb"COUNT 1$", over.lines("ESEARCH")[0])  # the other options are still answered
    refused = await client.command('CANCELUPDATE "nope"')
    assert refused.status == "NO"
    await client.ok(f'CANCELUPDATE "{first.tag}"')
    await client.ok("SEARCH RETURN (UPDATE) ALL")  # a free slot again


async def test_updates_end_with_the_selection(imap: Imap) -> None:
    """UNSELECT (or selecting again) ends every context: no updates follow, and its tag is free."""
    client = await _mailbox(imap, 2)
    search = await client.ok("SEARCH RETURN (UPDATE) SEEN")
    await client.ok("UNSELECT")
    await client.ok("SELECT INBOX")
    result = await client.ok("STORE 1 +FLAGS (\\Seen)")
    assert updates(result.untagged, search.tag) == []
    assert (await client.command(f'CANCELUPDATE "{search.tag}"')).status == "NO"


async def test_large_results_are_kept_up_to_date(imap: Imap) -> None:
    """Kept SEARCH and SORT results over 100,000 messages follow an arrival, a STORE and an EXPUNGE (loop watchdog)."""
    count = 100_000
    # Subjects in 997 groups ("TOPIC 0" holds messages 997, 1994, ...), a fifth of the messages seen.
    await imap.bulk(
        count,
        "flags, internal_date, size, subject, envelope, bodystructure, header_end, sort_subject, sort_from,"
        " sort_to, sort_cc, sort_display_from, sort_display_to, thread_ids",
        """CASE WHEN n % 5 = 0 THEN ARRAY['\\Seen'] ELSE '{}' END, timestamptz '2026-01-01', 100,
           'topic ' || (n % 997), '{}', '{}', 0, 'TOPIC ' || (n % 997), '', '', '', '', '', ARRAY['']""",
    )
    client = await imap.connect(select="INBOX")
    sort = await client.ok("SORT RETURN (UPDATE COUNT) (SUBJECT) UTF-8 ALL", wait=120)
    assert sort.lines("ESEARCH") == [f'* ESEARCH (TAG "{sort.tag}") COUNT {count}'.encode()]
    search = await client.ok("SEARCH RETURN (UPDATE COUNT) 1:99999 UNSEEN", wait=120)
    assert search.lines("ESEARCH") == [f'* ESEARCH (TAG "{search.tag}") COUNT 80000'.encode()]
    await imap.deliver(make_message(subject="topic 0"))
    result = await client.ok("NOOP", wait=120)
    # Last of the 100 "TOPIC 0" messages; message numbers fixed in the SEARCH leave the new one out.
    assert updates(result.untagged, sort.tag) == [b"ADDTO (101 100001)"]
    assert updates(result.untagged, search.tag) == []
    result = await client.ok("STORE 2 +FLAGS.SILENT (\\Seen)", wait=120)
    assert updates(result.untagged, search.tag) == [b"REMOVEFROM (0 2)"]
    assert updates(result.untagged, sort.tag) == []
    await client.ok("STORE 1 +FLAGS.SILENT (\\Deleted)", wait=120)
    result = await client.ok("EXPUNGE", wait=120)
    # Message 1 was the first "TOPIC 1", after the 101 "TOPIC 0".
    assert updates(result.untagged, sort.tag) == [b"REMOVEFROM (102 1)"]
    assert updates(result.untagged, search.tag) == [b"REMOVEFROM (0 1)"]
    assert result.untagged.index(b"* 1 EXPUNGE") > 0
