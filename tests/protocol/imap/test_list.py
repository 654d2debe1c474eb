"""LIST and LSUB (RFC 9051 §6.3.9, LIST-EXTENDED RFC 5258, LIST-STATUS RFC 5819, SPECIAL-USE RFC 6154)."""

from __future__ import annotations

import asyncio
import imaplib
from typing import Any

from .conftest import Imap
from .helpers import ImapClient, list_lines, make_message, status_items

DEFAULTS = {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"}


async def _tree(client: ImapClient) -> None:
    for name in ("Work", "Work/2025", "Work/2025/Q1", "Lists/python", "Caf&AOk-"):
        await client.ok(f'CREATE "{name}"')


async def test_list_delimiter_query(imap: Imap) -> None:
    """LIST "" "" answers the hierarchy delimiter and root with \\Noselect."""
    client = await imap.connect()
    result = await client.ok('LIST "" ""')
    assert result.lines("LIST") == [b'* LIST (\\Noselect) "/" ""']


async def test_list_star_lists_everything_inbox_first(imap: Imap) -> None:
    """LIST "" * lists every mailbox at every level, INBOX first."""
    client = await imap.connect()
    await _tree(client)
    result = await client.ok('LIST "" *')
    listed = list_lines(result)
    assert DEFAULTS | {"Work", "Work/2025", "Work/2025/Q1", "Lists/python", "Lists", "Caf&AOk-"} == set(listed)
    assert result.lines("LIST")[0].endswith(b'"INBOX"')


async def test_list_percent_stays_on_one_level(imap: Imap) -> None:
    """% matches within one level: top-level names only, or the children of one mailbox."""
    client = await imap.connect()
    await _tree(client)
    top = list_lines(await client.ok('LIST "" %'))
    assert set(top) == DEFAULTS | {"Work", "Lists", "Caf&AOk-"}
    children = list_lines(await client.ok('LIST "" Work/%'))
    assert set(children) == {"Work/2025"}
    assert set(list_lines(await client.ok('LIST "" Work/*'))) == {"Work/2025", "Work/2025/Q1"}
    assert set(list_lines(await client.ok('LIST "" W%k'))) == {"Work"}


async def test_list_reference(imap: Imap) -> None:
    """The reference is prefixed to the pattern."""
    client = await imap.connect()
    await _tree(client)
    assert set(list_lines(await client.ok('LIST "Work/" %'))) == {"Work/2025"}
    assert set(list_lines(await client.ok('LIST "Work/2025/" *'))) == {"Work/2025/Q1"}


async def test_list_inbox_case_insensitive(imap: Imap) -> None:
    """A pattern naming INBOX in any case matches INBOX, answered as "INBOX"."""
    client = await imap.connect()
    assert set(list_lines(await client.ok('LIST "" inbox'))) == {"INBOX"}
    assert set(list_lines(await client.ok('LIST "" InBoX'))) == {"INBOX"}


async def test_list_children_attributes(imap: Imap) -> None:
    """Mailboxes with children are \\HasChildren, leaves \\HasNoChildren."""
    client = await imap.connect()
    await _tree(client)
    listed = list_lines(await client.ok('LIST "" *'))
    assert "\\HasChildren" in listed["Work"][0]
    assert "\\HasChildren" in listed["Work/2025"][0]
    assert "\\HasNoChildren" in listed["Work/2025/Q1"][0]
    assert "\\HasNoChildren" in listed["INBOX"][0]


async def test_list_missing_parent_rev1_and_rev2(imap: Imap) -> None:
    """A parent that does not exist (deleted) is \\Noselect for rev1, \\NonExistent for rev2 or LIST-EXTENDED."""
    client = await imap.connect()
    await _tree(client)
    await client.ok("DELETE Lists")
    assert "\\NonExistent" in list_lines(await client.ok('LIST "" Lists RETURN ()'))["Lists"][0]
    rev1 = list_lines(await client.ok('LIST "" Lists'))
    assert "\\Noselect" in rev1["Lists"][0]
    assert "\\HasChildren" in rev1["Lists"][0]
    rev2_client = await imap.connect(enable="IMAP4rev2")
    rev2 = list_lines(await rev2_client.ok('LIST "" Lists'))
    assert "\\NonExistent" in rev2["Lists"][0]


async def test_list_names_mutf7_for_rev1_utf8_for_rev2(imap: Imap) -> None:
    """Non-ASCII names are modified UTF-7 for rev1 clients and UTF-8 after ENABLE IMAP4rev2 or UTF8=ACCEPT."""
    client = await imap.connect()
    await _tree(client)
    assert "Caf&AOk-" in list_lines(await client.ok('LIST "" Caf*'))
    for enable in ("IMAP4rev2", "UTF8=ACCEPT"):
        other = await imap.connect(enable=enable)
        assert "Café" in list_lines(await other.ok('LIST "" Caf*'))


async def test_list_selection_subscribed(imap: Imap) -> None:
    """LIST (SUBSCRIBED) returns only subscribed mailboxes, each with \\Subscribed."""
    client = await imap.connect()
    await _tree(client)
    await client.ok("SUBSCRIBE Work")
    listed = list_lines(await client.ok('LIST (SUBSCRIBED) "" *'))
    assert "Work/2025" not in listed
    assert "Work" in listed
    assert all("\\Subscribed" in attrs for attrs, _ in listed.values())


async def test_list_selection_special_use(imap: Imap) -> None:
    """LIST (SPECIAL-USE) returns only special-use mailboxes, with their attribute."""
    client = await imap.connect()
    await _tree(client)
    listed = list_lines(await client.ok('LIST (SPECIAL-USE) "" *'))
    assert set(listed) == {"Sent", "Drafts", "Trash", "Junk", "Archive"}
    for name, (attrs, _) in listed.items():
        assert f"\\{name}" in attrs


async def test_list_return_special_use(imap: Imap) -> None:
    """RETURN (SPECIAL-USE) adds the special-use attributes to a normal listing."""
    client = await imap.connect()
    listed = list_lines(await client.ok('LIST "" * RETURN (SPECIAL-USE)'))
    assert set(listed) == DEFAULTS
    assert "\\Sent" in listed["Sent"][0]
    assert "\\Trash" in listed["Trash"][0]
    assert not any(a in listed["INBOX"][0] for a in ("\\Sent", "\\Trash", "\\Junk"))


async def test_list_return_children(imap: Imap) -> None:
    """RETURN (CHILDREN) reports \\HasChildren / \\HasNoChildren."""
    client = await imap.connect()
    await _tree(client)
    listed = list_lines(await client.ok('LIST "" % RETURN (CHILDREN)'))
    assert "\\HasChildren" in listed["Work"][0]
    assert "\\HasNoChildren" in listed["Sent"][0]


async def test_list_return_status(imap: Imap) -> None:
    """RETURN (STATUS (...)) sends a STATUS response after each selectable mailbox's LIST response."""
    raw = make_message()
    await imap.deliver(raw)
    await imap.deliver(raw, flags=["\\Seen"])
    client = await imap.connect()
    await _tree(client)
    await client.ok("DELETE Lists")
    result = await client.ok('LIST "" * RETURN (STATUS (MESSAGES UNSEEN SIZE))')
    statuses = {}
    for line in result.lines("STATUS"):
        name = line.split(b" ")[2].strip(b'"').decode()
        statuses[name] = status_items(line)
    assert statuses["INBOX"] == {"MESSAGES": 2, "UNSEEN": 1, "SIZE": 2 * len(raw)}
    assert statuses["Sent"]["MESSAGES"] == 0
    assert "Lists" not in statuses  # \Noselect: no STATUS
    # Each STATUS follows its own LIST line.
    lines = [x for x in result.untagged if x.startswith((b"* LIST", b"* STATUS"))]
    index = next(i for i, x in enumerate(lines) if x.startswith(b"* LIST") and x.endswith(b'"INBOX"'))
    assert lines[index + 1].startswith(b'* STATUS "INBOX"')


async def test_list_multiple_patterns(imap: Imap) -> None:
    """LIST-EXTENDED accepts a parenthesized list of patterns."""
    client = await imap.connect()
    await _tree(client)
    listed = list_lines(await client.ok('LIST "" (INBOX "Work/%" Sent)'))
    assert set(listed) == {"INBOX", "Work/2025", "Sent"}


async def test_list_sees_other_sessions_changes(imap: Imap) -> None:
    """A mailbox created by another session is listed at once."""
    a = await imap.connect()
    b = await imap.connect()
    assert "Later" not in list_lines(await b.ok('LIST "" *'))
    await a.ok("CREATE Later")
    assert "Later" in list_lines(await b.ok('LIST "" *'))


async def test_lsub(imap: Imap) -> None:
    """LSUB lists subscribed mailboxes matching the pattern."""
    client = await imap.connect()
    await _tree(client)
    await client.ok("SUBSCRIBE Work/2025/Q1")
    listed = list_lines(await client.ok('LSUB "" *'))
    assert "Work/2025/Q1" in listed
    assert "Caf&AOk-" not in listed
    assert all(line.startswith(b"* LSUB ") for line in (await client.ok('LSUB "" *')).untagged)


async def test_lsub_percent_returns_parent_of_subscribed_child(imap: Imap) -> None:
    """LSUB "" % returns the parent of a subscribed child as \\Noselect even when the parent is not subscribed."""
    client = await imap.connect()
    await client.ok("CREATE Work/Sub")
    await client.ok("SUBSCRIBE Work/Sub")
    listed = list_lines(await client.ok('LSUB "" %'))
    assert "Work" in listed
    assert "\\Noselect" in listed["Work"][0]


async def test_list_syntax_errors(imap: Imap) -> None:
    """A LIST without a pattern, or with a broken RETURN clause, is BAD."""
    client = await imap.connect()
    assert (await client.command('LIST ""')).status == "BAD"
    assert (await client.command('LIST "" * RETURN')).status == "BAD"
    assert (await client.command('LIST "" * RETURN (STATUS)')).status == "BAD"
    assert (await client.command('LIST "" *')).ok


async def test_list_unknown_options_are_bad(imap: Imap) -> None:
    """An unknown selection or return option is BAD (RFC 5258 §3); REMOTE and an empty RETURN () are fine."""
    client = await imap.connect()
    for bad in ('LIST (imaptest) "" ""', 'LIST (SUBSCRIBED BOGUS) "" *', 'LIST "" "" RETURN (imaptest)'):
        assert (await client.command(bad)).status == "BAD", bad
    for fine in ('LIST (REMOTE) "" %', 'LIST "" % RETURN ()', 'LIST () "" %'):
        assert "INBOX" in list_lines(await client.ok(fine)), fine


async def test_list_with_imaplib(imap: Imap) -> None:
    """imaplib list() gets every default folder."""

    def script(conn: imaplib.IMAP4) -> list[Any]:
        typ, data = conn.list()
        assert typ == "OK"
        return data

    data = await imap.imaplib(script)
    names = {line.rsplit(b" ", 1)[1].strip(b'"').decode() for line in data}
    assert names == DEFAULTS


async def test_hostile_wildcard_pattern_does_not_stall_other_sessions(imap: Imap) -> None:
    """A LIST pattern built to backtrack (wildcards, then a letter) answers at once; other clients are not held up."""
    hostile = await imap.connect()
    await _tree(hostile)
    await hostile.ok('CREATE "' + "a%" * 200 + '"')
    other = await imap.connect()
    patterns = ['"' + "*%" * 15 + 'x"', '"' + "*" * 80 + 'x"', '"' + "%*" * 400 + 'Q1x"']
    for pattern in patterns:
        tag = hostile.next_tag()
        await hostile.send(f'{tag} LIST "" {pattern}\r\n'.encode())
        started = asyncio.get_running_loop().time()
        assert (await other.command("NOOP", wait=0.5)).ok
        assert asyncio.get_running_loop().time() - started < 0.5
        result = await hostile.read_tagged(tag, wait=2)
        assert result.ok, str(result)
        assert result.lines("LIST") == []
    listed = list_lines(await hostile.ok('LIST "" "' + "*%" * 15 + '1"'))
    assert set(listed) == {"Work/2025/Q1"}
