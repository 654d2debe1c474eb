"""SUBSCRIBE and UNSUBSCRIBE (RFC 9051 §6.3.7, §6.3.8): subscriptions are names, which LSUB and LIST (SUBSCRIBED) show.

A subscription names a mailbox, it is not part of one: it outlives DELETE, CREATE makes none, and a
name that does not exist may be subscribed (RFC 9051 §6.3.7 permits it). The scenarios of imaptest's
subscribe and listext groups are here as tests of their own.
"""

from __future__ import annotations

import imaplib

from .conftest import Imap
from .helpers import ImapClient, list_lines


async def test_default_mailboxes_subscribed(imap: Imap) -> None:
    """The default folders are subscribed from the start."""
    client = await imap.connect()
    names = set(list_lines(await client.ok('LSUB "" "*"')))
    assert {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"} <= names


async def test_unsubscribe_and_subscribe(imap: Imap) -> None:
    """UNSUBSCRIBE removes a mailbox from LSUB and LIST (SUBSCRIBED); SUBSCRIBE puts it back."""
    client = await imap.connect()
    await client.ok("UNSUBSCRIBE Junk")
    assert "Junk" not in list_lines(await client.ok('LSUB "" "*"'))
    assert "Junk" not in list_lines(await client.ok('LIST (SUBSCRIBED) "" "*"'))
    assert "Junk" in list_lines(await client.ok('LIST "" "*"'))
    await client.ok("SUBSCRIBE Junk")
    assert "Junk" in list_lines(await client.ok('LSUB "" "*"'))
    listed = list_lines(await client.ok('LIST (SUBSCRIBED) "" "Junk"'))
    assert "\\Subscribed" in listed["Junk"][0]


async def test_subscription_persists(imap: Imap) -> None:
    """A subscription change is seen by a later session."""
    a = await imap.connect()
    await a.ok("CREATE Lists")
    await a.ok("SUBSCRIBE Lists")
    await a.ok("LOGOUT")
    b = await imap.connect()
    assert "Lists" in list_lines(await b.ok('LSUB "" "*"'))


async def test_create_does_not_subscribe(imap: Imap) -> None:
    """CREATE makes a mailbox, not a subscription: LSUB and LIST (SUBSCRIBED) leave it out until SUBSCRIBE."""
    client = await imap.connect()
    await client.ok("CREATE Fresh/Inner")
    assert list_lines(await client.ok('LSUB "" "Fresh*"')) == {}
    assert list_lines(await client.ok('LIST (SUBSCRIBED) "" "Fresh*"')) == {}
    listed = list_lines(await client.ok('LIST "" "Fresh*" RETURN (SUBSCRIBED)'))
    assert set(listed) == {"Fresh", "Fresh/Inner"}
    assert not any("\\Subscribed" in attrs for attrs, _ in listed.values())


async def test_delete_keeps_the_subscription(imap: Imap) -> None:
    """After DELETE a subscribed name stays subscribed: LIST (SUBSCRIBED) shows it \\Subscribed \\NonExistent."""
    client = await imap.connect()
    await client.ok("CREATE Gone")
    await client.ok("SUBSCRIBE Gone")
    await client.ok("DELETE Gone")
    listed = list_lines(await client.ok('LIST (SUBSCRIBED) "" "Gone"'))
    assert {"\\Subscribed", "\\NonExistent"} <= set(listed["Gone"][0])
    assert "\\Noselect" not in listed["Gone"][0]
    assert "Gone" in list_lines(await client.ok('LSUB "" "*"'))
    assert "Gone" not in list_lines(await client.ok('LIST "" "*"'))
    # The same name created again is subscribed already: the subscription was never the mailbox's.
    await client.ok("CREATE Gone")
    assert "\\Subscribed" in list_lines(await client.ok('LIST "" Gone RETURN (SUBSCRIBED)'))["Gone"][0]
    await client.ok("UNSUBSCRIBE Gone")
    assert "Gone" not in list_lines(await client.ok('LSUB "" "*"'))


async def test_subscribe_a_name_that_does_not_exist(imap: Imap) -> None:
    """SUBSCRIBE of a name with no mailbox is OK (RFC 9051 §6.3.7); UNSUBSCRIBE of a name not subscribed is OK too."""
    client = await imap.connect()
    await client.ok("SUBSCRIBE Nope/Deeper")
    listed = list_lines(await client.ok('LSUB "" "*"'))
    assert "Nope/Deeper" in listed
    assert "Nope/Deeper" not in list_lines(await client.ok('LIST "" "*"'))
    await client.ok("UNSUBSCRIBE Nope/Deeper")
    await client.ok("UNSUBSCRIBE Nope/Deeper")
    assert "Nope/Deeper" not in list_lines(await client.ok('LSUB "" "*"'))


async def test_subscribe_spells_inbox_one_way(imap: Imap) -> None:
    """inbox and INBOX/x in any case are subscribed as INBOX and INBOX/x."""
    client = await imap.connect()
    await client.ok("UNSUBSCRIBE INBOX")
    await client.ok("SUBSCRIBE inbox")
    await client.ok("SUBSCRIBE inBox/Later")
    listed = list_lines(await client.ok('LSUB "" "*"'))
    assert {"INBOX", "INBOX/Later"} <= set(listed)
    assert not {"inbox", "inBox/Later"} & set(listed)


async def test_subscribe_invalid_names_refused(imap: Imap) -> None:
    """A name no mailbox could have (empty level, control character, not modified UTF-7) is NO [CANNOT]."""
    client = await imap.connect()
    for name in ('"a//b"', '"/lead"', '"&AAA-"', '"&AGE-"', '"' + "x" * 1001 + '"'):
        result = await client.command(f"SUBSCRIBE {name}")
        assert (result.status, result.code) == ("NO", "CANNOT"), (name, str(result))
    assert await imap.pool.fetchval("SELECT count(*) FROM subscriptions WHERE name LIKE '%/%'") == 0


async def test_rename_moves_subscriptions(imap: Imap) -> None:
    """RENAME takes the subscriptions of the mailbox and the mailboxes below it to the new names."""
    client = await imap.connect()
    await client.ok("CREATE Old/Child")
    await client.ok("SUBSCRIBE Old")
    await client.ok("SUBSCRIBE Old/Child")
    await client.ok("RENAME Old New")
    listed = list_lines(await client.ok('LSUB "" "*"'))
    assert {"New", "New/Child"} <= set(listed)
    assert not {"Old", "Old/Child"} & set(listed)


async def _imaptest_tree(client: ImapClient, box: str) -> None:
    """The mailboxes and subscriptions imaptest's subscribe group makes."""
    for name in ("", "/test", "/test2/", "/test3/", "/test2/test", "/test3/test3", "/test2"):
        await client.command(f'CREATE "{box}{name}"')
    for name in ("test", "test2/test", "test3/test3"):
        await client.ok(f'SUBSCRIBE "{box}/{name}"')


async def test_lsub_percent_shows_parents_of_unmatched_subscriptions(imap: Imap) -> None:
    """LSUB with % lists a parent of a subscribed name it does not match as \\Noselect, exists or not (RFC 3501)."""
    a = await imap.connect()
    b = await imap.connect()
    await _imaptest_tree(a, "box")
    listed = list_lines(await b.ok('LSUB "" box/%'))
    assert set(listed) == {"box/test", "box/test2", "box/test3"}
    assert "\\Noselect" not in listed["box/test"][0]
    assert "\\Noselect" in listed["box/test2"][0]
    assert "\\Noselect" in listed["box/test3"][0]
    assert set(list_lines(await b.ok('LSUB "" *test'))) == {"box/test", "box/test2/test"}
    await a.ok("UNSUBSCRIBE box/test")
    assert "box/test" not in list_lines(await b.ok('LSUB "" box/%'))
    await a.ok("UNSUBSCRIBE box/test2/test")
    assert set(list_lines(await b.ok('LSUB "" box/*'))) == {"box/test3/test3"}
    await a.ok("UNSUBSCRIBE box/test3/test3")
    assert list_lines(await b.ok('LSUB "" box/%')) == {}


async def _listext_tree(client: ImapClient) -> None:
    """The mailboxes and subscriptions of imaptest's listext group (test6 deleted while subscribed)."""
    for name in ("test1", "test2/", "test2/test1", "test3", "test4/test5", "test4/test52", "test6"):
        await client.ok(f'CREATE "x/{name}"')
    for name in ("test7/test7", "test8/test8", "test8/test9"):
        await client.ok(f'CREATE "x/{name}"')
    for name in ("test1", "test2/test1", "test6", "test7/test7", "test8/test8", "test8/test9"):
        await client.ok(f'SUBSCRIBE "x/{name}"')
    await client.ok('DELETE "x/test6"')


async def test_list_subscribed_recursivematch_childinfo(imap: Imap) -> None:
    """(SUBSCRIBED RECURSIVEMATCH) adds CHILDINFO ("SUBSCRIBED") to a name whose subscribed child no pattern matches."""
    client = await imap.connect()
    await _listext_tree(client)
    listed = list_lines(await client.ok('LIST (SUBSCRIBED) "" x/*'))
    assert set(listed) == {"x/test1", "x/test2/test1", "x/test6", "x/test7/test7", "x/test8/test8", "x/test8/test9"}
    assert {"\\Subscribed", "\\NonExistent"} <= set(listed["x/test6"][0])
    result = await client.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" x/test2% RETURN (CHILDREN)')
    assert result.lines("LIST") == [b'* LIST (\\HasChildren) "/" "x/test2" ("CHILDINFO" ("SUBSCRIBED"))']
    # The subscribed child matches a pattern itself: it is listed, its parent is not.
    assert set(list_lines(await client.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" x*test7'))) == {"x/test7/test7"}
    result = await client.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" x*test8')
    assert set(list_lines(result)) == {"x/test8", "x/test8/test8"}
    assert [line for line in result.lines("LIST") if b"CHILDINFO" in line] == [
        b'* LIST (\\HasChildren) "/" "x/test8" ("CHILDINFO" ("SUBSCRIBED"))'
    ]
    result = await client.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" (x/test2 x/test2/test1)')
    assert result.lines("LIST") == [b'* LIST (\\HasNoChildren \\Subscribed) "/" "x/test2/test1"']
    listed = list_lines(await client.ok('LIST "" x/% RETURN (CHILDREN SUBSCRIBED)'))
    assert set(listed) == {"x/test1", "x/test2", "x/test3", "x/test4", "x/test7", "x/test8"}
    assert "\\Subscribed" in listed["x/test1"][0]
    for name in ("x/test2", "x/test4", "x/test7", "x/test8"):
        assert "\\HasChildren" in listed[name][0]
        assert "\\Subscribed" not in listed[name][0]


async def test_subscribe_with_imaplib(imap: Imap) -> None:
    """imaplib subscribe/unsubscribe/lsub round trip."""

    def script(conn: imaplib.IMAP4) -> tuple[list[bytes], list[bytes]]:
        conn.create("News")
        before = conn.lsub('""', "News")[1]
        conn.subscribe("News")
        after = conn.lsub('""', "News")[1]
        conn.unsubscribe("News")
        return before, after

    before, after = await imap.imaplib(script)
    assert not any(b'"News"' in line for line in before if line)
    assert any(b'"News"' in line for line in after if line)
