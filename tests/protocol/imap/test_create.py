"""CREATE (RFC 9051 §6.3.4, RFC 6154 §5.3 CREATE-SPECIAL-USE): new mailboxes and what names are allowed."""

from __future__ import annotations

import imaplib
from typing import Any

from .conftest import Imap
from .helpers import list_lines


async def test_create_and_list(imap: Imap) -> None:
    """A created mailbox is listed, selectable and empty, also for a second session."""
    a = await imap.connect()
    b = await imap.connect()
    await a.ok("CREATE Projects")
    listed = list_lines(await b.ok('LIST "" "Projects"'))
    assert "Projects" in listed
    result = await b.ok("SELECT Projects")
    assert b"* 0 EXISTS" in result.untagged


async def test_create_existing_refused(imap: Imap) -> None:
    """Creating an existing mailbox (or INBOX in any case) is NO [ALREADYEXISTS]."""
    client = await imap.connect()
    await client.ok("CREATE Projects")
    for name in ("Projects", "INBOX", "inbox", "Sent"):
        result = await client.command(f"CREATE {name}")
        assert result.status == "NO", name
        assert result.code == "ALREADYEXISTS", name


async def test_create_trailing_delimiter(imap: Imap) -> None:
    """CREATE "Foo/" creates Foo (the trailing delimiter only says children are intended)."""
    client = await imap.connect()
    await client.ok('CREATE "Foo/"')
    assert "Foo" in list_lines(await client.ok('LIST "" "Foo"'))


async def test_create_nested_makes_real_parents(imap: Imap) -> None:
    """CREATE a/b/c makes a and a/b too (RFC 9051 §6.3.4): real, selectable mailboxes that DELETE removes."""
    client = await imap.connect()
    await client.ok("CREATE a/b/c")
    listed = list_lines(await client.ok('LIST "" "a*"'))
    assert set(listed) == {"a", "a/b", "a/b/c"}
    assert "\\HasNoChildren" in listed["a/b/c"][0]
    assert listed["a"][0] == ["\\HasChildren"]
    assert b"* 0 EXISTS" in (await client.ok("SELECT a")).untagged
    await client.ok("UNSELECT")
    await client.ok("DELETE a/b/c")
    await client.ok("DELETE a/b")
    await client.ok("DELETE a")
    assert list_lines(await client.ok('LIST "" "a*"')) == {}
    # A parent that exists already is left as it is; the new name must be new.
    await client.ok("CREATE p")
    await imap.deliver(folder="p")
    await client.ok("CREATE p/q")
    assert b"* 1 EXISTS" in (await client.ok("EXAMINE p")).untagged
    assert (await client.command("CREATE p/q")).code == "ALREADYEXISTS"


async def test_create_under_inbox(imap: Imap) -> None:
    """A child of INBOX given as inbox/x is created under INBOX."""
    client = await imap.connect()
    await client.ok("CREATE inbox/Receipts")
    assert "INBOX/Receipts" in list_lines(await client.ok('LIST "" "INBOX/*"'))
    assert "\\HasChildren" in list_lines(await client.ok('LIST "" INBOX'))["INBOX"][0]


async def test_create_invalid_names(imap: Imap) -> None:
    """Empty levels, a leading delimiter, or a name over 1000 octets are refused with NO [CANNOT]."""
    client = await imap.connect()
    for name in ('"a//b"', '"/x"', '"/"', '"' + "x" * 1001 + '"'):
        result = await client.command(f"CREATE {name}")
        assert result.status == "NO", name
        assert result.code == "CANNOT", name


async def test_create_modified_utf7(imap: Imap) -> None:
    """A rev1 client's modified UTF-7 name is stored as UTF-8 and listed back in modified UTF-7."""
    client = await imap.connect()
    await client.ok('CREATE "Caf&AOk-"')
    assert (await imap.mailbox("Café"))["name"] == "Café"
    assert "Caf&AOk-" in list_lines(await client.ok('LIST "" "Caf*"'))


async def test_create_utf8_after_enable(imap: Imap) -> None:
    """After ENABLE UTF8=ACCEPT a UTF-8 name is accepted as is; a rev1 session lists it in modified UTF-7."""
    client = await imap.connect(enable="UTF8=ACCEPT")
    await client.ok('CREATE "Café"'.encode())
    assert "Café" in list_lines(await client.ok('LIST "" "Caf*"'))
    rev1 = await imap.connect()
    assert "Caf&AOk-" in list_lines(await rev1.ok('LIST "" "Caf*"'))


async def test_create_malformed_modified_utf7(imap: Imap) -> None:
    """A broken modified UTF-7 name (unterminated shift) is NO [CANNOT], not a syntax error (as in Dovecot)."""
    client = await imap.connect()
    result = await client.command('CREATE "Caf&AOk"')
    assert (result.status, result.code) == ("NO", "CANNOT")


async def test_create_special_use(imap: Imap) -> None:
    """CREATE with (USE (\\Archive)) sets the special use; an unknown one is NO [USEATTR]."""
    client = await imap.connect()
    await client.ok("CREATE Old (USE (\\Archive))")
    listed = list_lines(await client.ok('LIST "" Old RETURN (SPECIAL-USE)'))
    assert "\\Archive" in listed["Old"][0]
    result = await client.command("CREATE Other (USE (\\Important))")
    assert result.status == "NO"
    assert result.code == "USEATTR"


async def test_create_with_imaplib(imap: Imap) -> None:
    """imaplib create() then list() shows the new mailbox."""

    def script(conn: imaplib.IMAP4) -> list[Any]:
        assert conn.create("Lists/python")[0] == "OK"
        _typ, data = conn.list('""', "Lists/*")
        return data

    data = await imap.imaplib(script)
    assert any(b'"Lists/python"' in line for line in data)


async def test_create_names_with_special_characters(imap: Imap) -> None:
    """Names with spaces, quotes, backslashes and "&" round-trip (quoted on the wire, "&-" in modified UTF-7)."""
    client = await imap.connect()
    await client.ok('CREATE "Tom &- Jerry"')
    await client.ok('CREATE "say \\"hi\\""')
    await client.ok('CREATE "back\\\\slash"')
    for name in ("Tom & Jerry", 'say "hi"', "back\\slash"):
        assert (await imap.mailbox(name))["name"] == name
    listed = list_lines(await client.ok('LIST "" *'))
    assert {"Tom &- Jerry", 'say "hi"', "back\\slash"} <= set(listed)
    utf8 = await imap.connect(enable="UTF8=ACCEPT")
    assert "Tom & Jerry" in list_lines(await utf8.ok('LIST "" *'))
    assert (await client.command('CREATE "Tom & Jerry"')).status == "NO"  # "&" must be "&-" in modified UTF-7
    assert (await client.command('SELECT "say \\"hi\\""')).ok


async def test_mailboxes_and_subscriptions_per_user_are_capped(imap: Imap) -> None:
    """Past quota.mailboxes a CREATE (counting the parents it would make) and a SUBSCRIBE are NO [LIMIT] and
    change nothing; deleting one makes room again."""
    client = await imap.connect()
    have = len(list_lines(await client.ok('LIST "" "*"')))
    imap.cfg.quota.mailboxes = have + 2
    await client.ok("CREATE One")
    result = await client.command("CREATE Two/Three")  # Two would be made too: one more than the limit
    assert (result.status, result.code) == ("NO", "LIMIT")
    assert not {"Two", "Two/Three"} & set(list_lines(await client.ok('LIST "" "*"')))
    await client.ok("CREATE Two")
    assert (await client.command("CREATE Four")).code == "LIMIT"
    await client.ok("DELETE One")
    await client.ok("CREATE Four")
    subscribed = len(list_lines(await client.ok('LSUB "" "*"')))
    imap.cfg.quota.mailboxes = subscribed + 1
    await client.ok("SUBSCRIBE Four")
    await client.ok("SUBSCRIBE Four")  # already subscribed: nothing new to count
    assert (await client.command("SUBSCRIBE Two")).code == "LIMIT"
    assert "Two" not in list_lines(await client.ok('LSUB "" "*"'))
