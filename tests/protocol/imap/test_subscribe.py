"""SUBSCRIBE and UNSUBSCRIBE (RFC 9051 §6.3.7, §6.3.8): the subscription list LSUB and LIST (SUBSCRIBED) show."""

from __future__ import annotations

import imaplib

from .conftest import Imap
from .helpers import list_lines


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
    await a.ok("UNSUBSCRIBE Lists")
    await a.ok("LOGOUT")
    b = await imap.connect()
    assert "Lists" not in list_lines(await b.ok('LSUB "" "*"'))


async def test_subscribe_nonexistent(imap: Imap) -> None:
    """SUBSCRIBE and UNSUBSCRIBE of a missing mailbox are NO."""
    client = await imap.connect()
    assert (await client.command("SUBSCRIBE Nope")).status == "NO"
    assert (await client.command("UNSUBSCRIBE Nope")).status == "NO"


async def test_subscribe_with_imaplib(imap: Imap) -> None:
    """imaplib subscribe/unsubscribe/lsub round trip."""

    def script(conn: imaplib.IMAP4) -> list[bytes]:
        conn.create("News")
        conn.unsubscribe("News")
        conn.subscribe("News")
        return conn.lsub('""', "News")[1]

    data = await imap.imaplib(script)
    assert any(b'"News"' in line for line in data if line)
