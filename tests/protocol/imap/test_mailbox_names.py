"""Mailbox names no mailbox can have (RFC 9051 §5.1): answered cleanly by every command, never a server failure."""

from __future__ import annotations

import pytest

from .conftest import Imap
from .helpers import ImapClient, Lit, list_lines, make_message

# Names that decode (modified UTF-7, or UTF-8 after ENABLE) to text with a control character in it.
CONTROL_NAMES = ["&AAA-", "x&AAA-y", "Work/&AAA-", "&AAE-", "a&AB8-b", "&AH8-"]
TOO_LONG = "x" * 1001


def _commands(name: str) -> list[tuple[str, str]]:
    """(command, the response code it must get) for every command that names an existing mailbox.

    COPY and MOVE come first: a failed SELECT leaves no mailbox selected (RFC 9051 §6.3.2).
    """
    return [
        (f'COPY 1 "{name}"', "NONEXISTENT"),
        (f'MOVE 1 "{name}"', "NONEXISTENT"),
        (f'SELECT "{name}"', "NONEXISTENT"),
        (f'EXAMINE "{name}"', "NONEXISTENT"),
        (f'STATUS "{name}" (MESSAGES)', "NONEXISTENT"),
        (f'DELETE "{name}"', "NONEXISTENT"),
        (f'RENAME "{name}" Elsewhere', "NONEXISTENT"),
        (f'SUBSCRIBE "{name}"', "CANNOT"),  # a subscription is a name: one that no mailbox could have
        (f'UNSUBSCRIBE "{name}"', "CANNOT"),
        (f'CREATE "{name}"', "CANNOT"),
        (f'RENAME Work "{name}"', "CANNOT"),
    ]


async def _selected(imap: Imap) -> ImapClient:
    await imap.deliver()
    client = await imap.connect(select="INBOX")
    await client.ok("CREATE Work")
    return client


@pytest.mark.parametrize("name", [*CONTROL_NAMES, TOO_LONG])
async def test_impossible_names_are_nonexistent_or_cannot(imap: Imap, name: str) -> None:
    """A name with NUL or another control character, or over 1000 octets: NO [NONEXISTENT] or NO [CANNOT]."""
    client = await _selected(imap)
    for command, code in _commands(name):
        result = await client.command(command)
        assert (result.status, result.code) == ("NO", code), (command, str(result))
    result = await client.command(f'APPEND "{name}" ', Lit(make_message()))
    assert (result.status, result.code) == ("NO", "NONEXISTENT"), str(result)
    listed = await client.ok(f'LIST "{name}" "*"')
    assert listed.lines("LIST") == []
    assert (await client.ok(f'LIST "" "{name}"')).lines("LIST") == []
    assert len(await imap.stored()) == 1
    assert [b for b in await imap.pool.fetch("SELECT name FROM mailboxes") if "Elsewhere" in b["name"]] == []
    await imap.assert_serves()


async def test_control_characters_in_utf8_names(imap: Imap) -> None:
    """Under UTF8=ACCEPT a control character sent as itself is as impossible; NUL in a string is BAD."""
    client = await _selected(imap)
    await client.ok("ENABLE UTF8=ACCEPT")
    for command, code in _commands("a\x01b"):
        result = await client.command(command)
        assert (result.status, result.code) == ("NO", code), (command, str(result))
    assert (await client.command('SELECT "a\x00b"')).status == "BAD"
    assert (await client.command("SELECT ", Lit(b"a\x00b"))).status == "BAD"
    assert (await client.command("STATUS ", Lit(b"a\x00b"), " (MESSAGES)")).status == "BAD"
    await imap.assert_serves()


# Not modified UTF-7 (unterminated, ASCII encoded, lone surrogate, stray bits, "/" inside, padding), a second
# spelling of a name ("&AOk-&AOk-" is "&AOkA6Q-"), and imaptest's atoms group's name.
NOT_MUTF7 = ["&Jjo", "&AGE-", "&2AA-", "&AOl-", "&A/k-", "Caf&AOk", "&AOk=-", "&AOk-&AOk-", "!#$&'+,-.0:;<=>?@^_`|[}"]


@pytest.mark.parametrize("name", NOT_MUTF7)
async def test_invalid_modified_utf7_is_no_never_bad(imap: Imap, name: str) -> None:
    """A name that is not modified UTF-7 is NO [CANNOT] for every command (APPEND too), matches nothing in LIST."""
    client = await _selected(imap)
    for command, _ in _commands(name):
        result = await client.command(command)
        assert (result.status, result.code) == ("NO", "CANNOT"), (command, str(result))
    result = await client.command(f'APPEND "{name}" ', Lit(make_message()))
    assert (result.status, result.code) == ("NO", "CANNOT"), str(result)
    assert (await client.ok(f'LIST "" "{name}"')).lines("LIST") == []
    assert (await client.ok(f'LIST "" "{name}*"')).lines("LIST") == []
    assert (await client.ok(f'LIST "{name}" "*"')).lines("LIST") == []
    assert [b for b in await imap.pool.fetch("SELECT name FROM mailboxes") if "Elsewhere" in b["name"]] == []
    await imap.assert_serves()


async def test_many_invalid_names_in_a_row_keep_the_session(imap: Imap) -> None:
    """More NOs for invalid names than max_bad_commands in a row do not end the session (they are not BAD)."""
    client = await _selected(imap)
    for _ in range(imap.cfg.imap.max_bad_commands + 5):
        assert (await client.command('SELECT "&AGE-"')).status == "NO"
    assert (await client.command("NOOP")).ok


async def test_invalid_utf8_under_utf8_accept_is_no(imap: Imap) -> None:
    """Under UTF8=ACCEPT a name that is not UTF-8 is NO [CANNOT] for every command and matches nothing in LIST."""
    client = await _selected(imap)
    await client.ok("ENABLE UTF8=ACCEPT")
    for verb in ("SELECT ", "DELETE ", "CREATE ", "SUBSCRIBE "):
        result = await client.command(verb, Lit(b"\xff\xfe"))
        assert (result.status, result.code) == ("NO", "CANNOT"), (verb, str(result))
    assert (await client.ok('LIST "" ', Lit(b"\xff\xfe"))).lines("LIST") == []
    result = await client.command("APPEND ", Lit(b"\xc3"), " ", Lit(make_message()))
    assert (result.status, result.code) == ("NO", "CANNOT"), str(result)
    await imap.assert_serves()


async def test_valid_names_still_work(imap: Imap) -> None:
    """Real non-ASCII names (modified UTF-7 and UTF-8), long and deep ones within the limits, work as before."""
    client = await _selected(imap)
    deep = "/".join(["d"] * 64)
    for name in ("Caf&AOk-", "&ZeVnLIqe-/&U,BTFw-", "y" * 1000, deep):
        await client.ok(f'CREATE "{name}"')
        assert (await client.ok(f'SELECT "{name}"')).ok
    listed = list_lines(await client.ok('LIST "" "*"'))
    assert {"Caf&AOk-", "&ZeVnLIqe-/&U,BTFw-", "y" * 1000, deep} <= set(listed)
    result = await client.command(f'CREATE "{deep}/e"')
    assert (result.status, result.code) == ("NO", "CANNOT")
    await imap.assert_serves()
