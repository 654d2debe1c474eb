"""NOTIFY (RFC 5465): unsolicited news of the selected mailbox and of others (STATUS), of mailbox names (LIST)
and of subscriptions, between commands and in IDLE, from changes made by any session."""

from __future__ import annotations

from .conftest import ALICE, Imap
from .helpers import ImapClient, Result, list_lines, make_message, status_items

_ALL = "(MessageNew MessageExpunge FlagChange)"


def _status(lines: list[bytes], name: bytes) -> list[dict[str, int]]:
    return [status_items(line) for line in lines if line.startswith(b'* STATUS "' + name + b'" ')]


async def _until_status(client: ImapClient, name: bytes, messages: int) -> dict[str, int]:
    """Unsolicited lines up to a STATUS of ``name`` saying MESSAGES ``messages``; that STATUS's items."""
    lines = await client.read_until(
        lambda line: line.startswith(b'* STATUS "' + name + b'" ') and status_items(line).get("MESSAGES") == messages
    )
    return status_items(lines[-1])


async def test_capability_lists_notify(imap: Imap) -> None:
    """CAPABILITY lists NOTIFY once logged in."""
    client = await imap.connect()
    assert b"NOTIFY" in (await client.ok("CAPABILITY")).lines("CAPABILITY")[0].split()


async def test_set_status_reports_every_mailbox_matched_but_the_selected(imap: Imap) -> None:
    """NOTIFY SET STATUS sends a STATUS for each mailbox a group names (not the selected one), HIGHESTMODSEQ
    with FlagChange; a name without a mailbox is passed over; without STATUS nothing is sent."""
    await imap.deliver(folder="Archive")
    client = await imap.connect(select="INBOX")
    box = await imap.mailbox("Archive")
    result = await client.ok("NOTIFY SET STATUS (MAILBOXES (Archive INBOX Nowhere) (MessageNew MessageExpunge))")
    assert [line.split(b" (")[0] for line in result.lines("STATUS")] == [b'* STATUS "Archive"']
    assert _status(result.untagged, b"Archive") == [
        {"MESSAGES": 1, "UIDNEXT": 2, "UIDVALIDITY": box["uidvalidity"], "UNSEEN": 1}
    ]
    result = await client.ok(f"NOTIFY SET STATUS (MAILBOXES Archive {_ALL})")
    assert _status(result.untagged, b"Archive")[0]["HIGHESTMODSEQ"] == box["highestmodseq"]
    assert (await client.ok(f"NOTIFY SET (MAILBOXES Archive {_ALL})")).untagged == []
    result = await client.ok(f"NOTIFY SET STATUS (PERSONAL {_ALL})")
    names = {line.split(b" ")[2].strip(b'"') for line in result.lines("STATUS")}
    assert names == {b"Archive", b"Drafts", b"Junk", b"Sent", b"Trash"}


async def test_other_mailboxes_are_reported_as_status_between_commands(imap: Imap) -> None:
    """Mail delivered to, flagged in and expunged from a mailbox that is not selected reaches a session that
    sends nothing as STATUS lines; another user's mail never does."""
    client = await imap.connect(select="INBOX")
    await client.ok(f"NOTIFY SET (SELECTED {_ALL}) (PERSONAL {_ALL})")
    await imap.deliver(folder="Archive")
    await imap.deliver(folder="Archive", user=ALICE)
    items = await _until_status(client, b"Archive", 1)
    assert (items["UIDNEXT"], items["UNSEEN"]) == (2, 1)
    actor = await imap.connect(select="Archive")
    await actor.ok("STORE 1 +FLAGS (\\Seen)")
    lines = await client.read_until(lambda line: line.startswith(b'* STATUS "Archive" '))
    assert status_items(lines[-1])["UNSEEN"] == 0
    assert status_items(lines[-1])["HIGHESTMODSEQ"] == (await imap.mailbox("Archive"))["highestmodseq"]
    await actor.ok("STORE 1 +FLAGS (\\Deleted)")
    await actor.ok("EXPUNGE")
    await _until_status(client, b"Archive", 0)
    assert await client.untagged_within(0.3) == []


async def test_selected_mailbox_news_arrive_unasked_with_the_fetch_items(imap: Imap) -> None:
    """With SELECTED, a new message comes as EXISTS and a FETCH of the MessageNew items, a flag change as FETCH
    FLAGS and an expunge as EXPUNGE, while the client sends nothing; no \\Seen is set by those items."""
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    await client.ok("NOTIFY SET (SELECTED (MessageNew (UID BODY[HEADER.FIELDS (SUBJECT)]) MessageExpunge FlagChange))")
    await imap.deliver(make_message(subject="news"))
    lines = await client.read_until(lambda line: b"FETCH" in line)
    assert lines[0] == b"* 2 EXISTS"
    assert lines[-1] == b"* 2 FETCH (UID 2 BODY[HEADER.FIELDS (SUBJECT)] {17}\r\nSubject: news\r\n\r\n)"
    actor = await imap.connect(select="INBOX")
    await actor.ok("STORE 1 +FLAGS (\\Flagged)")
    lines = await client.read_until(lambda line: b"FETCH" in line)
    assert lines[-1].startswith(b"* 1 FETCH (UID 1 FLAGS (")
    assert b"\\Flagged" in lines[-1]
    await actor.ok("STORE 1 +FLAGS (\\Deleted)")
    await actor.ok("EXPUNGE")
    assert (await client.read_until(lambda line: line.endswith(b"EXPUNGE")))[-1] == b"* 1 EXPUNGE"
    assert b"\\Seen" not in (await client.ok("FETCH 1 FLAGS")).lines("FETCH")[0]


async def test_selected_delayed_holds_expunges_until_a_command(imap: Imap) -> None:
    """With SELECTED-DELAYED new mail comes at once, an expunge only with the next command that allows it."""
    await imap.deliver()
    client = await imap.connect(select="INBOX", enable="IMAP4rev2")  # no RECENT after EXISTS
    await client.ok(f"NOTIFY SET (SELECTED-DELAYED {_ALL})")
    actor = await imap.connect(select="INBOX")
    await actor.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    await actor.ok("EXPUNGE")
    await imap.deliver()
    lines = await client.read_until(lambda line: line.endswith(b"EXISTS"))
    assert lines[-1] == b"* 2 EXISTS"  # after the \\Deleted flag's FETCH, if the expunge came later
    assert [line for line in lines + await client.untagged_within(0.3) if b"EXPUNGE" in line] == []
    result = await client.ok("NOOP")
    assert result.lines("EXPUNGE") == [b"* 1 EXPUNGE"]


async def test_without_selected_group_the_selected_mailbox_is_not_reported(imap: Imap) -> None:
    """Under NOTIFY without SELECTED (and under NOTIFY NONE) the selected mailbox's news are not sent, even on
    NOOP, as Dovecot does; a new SELECT shows them."""
    client = await imap.connect(select="INBOX")
    await client.ok(f"NOTIFY SET (PERSONAL {_ALL})")
    await imap.deliver()
    assert (await client.ok("NOOP")).untagged == []
    await client.ok("NOTIFY NONE")
    await imap.deliver(folder="Archive")
    await imap.deliver()
    assert (await client.ok("NOOP")).untagged == []
    assert await client.untagged_within(0.3) == []
    assert b"* 2 EXISTS" in (await client.ok("SELECT INBOX")).untagged


async def test_mailbox_names_and_subscriptions(imap: Imap) -> None:
    """Another session's CREATE, RENAME, SUBSCRIBE, UNSUBSCRIBE and DELETE come as LIST lines (OLDNAME for a
    rename, \\NonExistent for a deletion, \\Subscribed for a subscription)."""
    client = await imap.connect()
    await client.ok("NOTIFY SET (PERSONAL (MailboxName SubscriptionChange))")
    actor = await imap.connect()
    expected = [
        ("CREATE Projects", b'* LIST () "/" "Projects"'),
        ("RENAME Projects Plans", b'* LIST () "/" "Plans" ("OLDNAME" ("Projects"))'),
        ("SUBSCRIBE Plans", b'* LIST (\\Subscribed) "/" "Plans"'),
        ("UNSUBSCRIBE Plans", b'* LIST () "/" "Plans"'),
        ("DELETE Plans", b'* LIST (\\NonExistent) "/" "Plans"'),
    ]
    for command, line in expected:
        await actor.ok(command)
        assert (await client.read_until(lambda got: got.startswith(b"* LIST")))[-1] == line, command


async def test_own_changes_are_reported_after_the_command(imap: Imap) -> None:
    """The session's own CREATE and APPEND to another mailbox are reported too, after the tagged answer."""
    client = await imap.connect(select="INBOX")
    await client.ok(f"NOTIFY SET (SELECTED {_ALL}) (PERSONAL (MessageNew MessageExpunge MailboxName))")
    await client.ok("CREATE Later")
    assert await client.read_until(lambda line: line.startswith(b"* LIST")) == [b'* LIST () "/" "Later"']
    await client.ok("APPEND Later {5+}\r\nhello")
    assert (await _until_status(client, b"Later", 1))["UIDNEXT"] == 2


async def test_filters_pick_mailboxes(imap: Imap) -> None:
    """INBOXES is INBOX; SUBTREE a is a and what is below it, not ab; SUBSCRIBED follows subscriptions; the first
    group naming a mailbox decides, and NONE there silences it."""
    client = await imap.connect()
    for name in ("a", "a/b", "ab", "zz"):
        await client.ok(f"CREATE {name}")
    await client.ok("SUBSCRIBE ab")
    await client.ok(f"NOTIFY SET (MAILBOXES Junk NONE) (INBOXES {_ALL}) (SUBTREE a {_ALL}) (SUBSCRIBED {_ALL})")
    for folder in ("Junk", "zz", "a/b", "INBOX", "ab", "a"):
        await imap.deliver(folder=folder)
    lines = await client.read_until(lambda line: line.startswith(b'* STATUS "a" '))
    seen = [line.split(b" ")[2].strip(b'"') for line in lines if line.startswith(b"* STATUS")]
    assert sorted(seen) == [b"INBOX", b"a", b"a/b", b"ab"]
    assert await client.untagged_within(0.3) == []


async def test_idle_under_notify_reports_other_mailboxes(imap: Imap) -> None:
    """During IDLE the NOTIFY settings apply: another mailbox's news come as STATUS."""
    client = await imap.connect(select="INBOX")
    await client.ok(f"NOTIFY SET (SELECTED {_ALL}) (PERSONAL {_ALL})")
    tag = await client.idle()
    await imap.deliver(folder="Sent")
    await _until_status(client, b"Sent", 1)
    await imap.deliver()
    assert (await client.read_until(lambda line: line.endswith(b"EXISTS")))[-1] == b"* 1 EXISTS"
    assert (await client.done(tag)).ok


async def test_many_changes_are_coalesced(imap: Imap) -> None:
    """Fifty deliveries to another mailbox in a row end in a STATUS with all fifty, in fewer lines."""
    client = await imap.connect()
    await client.ok(f"NOTIFY SET (PERSONAL {_ALL})")
    for _ in range(50):
        await imap.deliver(folder="Archive")
    lines = await client.read_until(
        lambda line: line.startswith(b'* STATUS "Archive" ') and status_items(line)["MESSAGES"] == 50
    )
    assert len(lines) <= 50


async def test_bad_notify_commands(imap: Imap) -> None:
    """An event not offered is NO [BADEVENT (...)] naming those offered; two SELECTED groups or no group are BAD;
    the earlier settings stay and the session goes on."""
    client = await imap.connect(select="INBOX")
    await client.ok(f"NOTIFY SET (PERSONAL {_ALL})")
    result = await client.command("NOTIFY SET (PERSONAL (MessageNew MessageExpunge AnnotationChange))")
    assert (result.status, result.code) == (
        "NO",
        "BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)",
    )
    assert (await client.command(f"NOTIFY SET (SELECTED {_ALL}) (SELECTED-DELAYED {_ALL})")).status == "BAD"
    assert (await client.command("NOTIFY SET")).status == "BAD"
    assert (await client.command("NOTIFY")).status == "BAD"
    await imap.deliver(folder="Drafts")
    assert (await _until_status(client, b"Drafts", 1))["UIDNEXT"] == 2


async def test_notify_lists_names_in_the_session_encoding(imap: Imap) -> None:
    """A new mailbox with a non-ASCII name comes in modified UTF-7 to an IMAP4rev1 client."""
    client = await imap.connect()
    await client.ok("NOTIFY SET (PERSONAL (MailboxName))")
    actor = await imap.connect(enable="UTF8=ACCEPT")
    await actor.ok('CREATE "Büro"')
    lines = await client.read_until(lambda line: line.startswith(b"* LIST"))
    assert {name: attrs for name, (attrs, _raw) in list_lines(Result("x", untagged=lines)).items()} == {"B&APw-ro": []}
