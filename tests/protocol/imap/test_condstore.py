"""CONDSTORE (RFC 7162 §3.1): MODSEQ, HIGHESTMODSEQ, CHANGEDSINCE, UNCHANGEDSINCE with MODIFIED, SEARCH MODSEQ."""

from __future__ import annotations

from .conftest import Imap
from .helpers import ImapClient, Result, status_items


async def _modseqs(imap: Imap, folder: str = "INBOX") -> dict[int, int]:
    """uid -> modseq of every message in bob's folder, as stored."""
    box = await imap.mailbox(folder)
    rows = await imap.pool.fetch("SELECT uid, modseq FROM messages WHERE mailbox_id = $1", box["id"])
    return {r["uid"]: r["modseq"] for r in rows}


async def _highest(imap: Imap, folder: str = "INBOX") -> int:
    return int((await imap.mailbox(folder))["highestmodseq"])


def _modseq(item: object) -> int:
    """The value of a FETCH MODSEQ item: ``["12"]`` -> 12."""
    assert isinstance(item, list), item
    assert len(item) == 1, item
    return int(item[0])


async def _filled(imap: Imap, n: int) -> ImapClient:
    for _ in range(n):
        await imap.deliver()
    return await imap.connect(select="INBOX")


async def test_select_reports_highestmodseq_once_enabled(imap: Imap) -> None:
    """A plain SELECT says no HIGHESTMODSEQ; SELECT (CONDSTORE) and SELECT after ENABLE CONDSTORE say the stored one."""
    await imap.deliver()
    client = await imap.connect()
    plain = await client.ok("SELECT INBOX")
    assert not any(code.startswith("HIGHESTMODSEQ") for code in plain.codes())
    examined = await client.ok("EXAMINE INBOX (CONDSTORE)")
    assert int(examined.code_value("HIGHESTMODSEQ")) == await _highest(imap)
    other = await imap.connect()
    assert (await other.ok("ENABLE CONDSTORE")).lines("ENABLED") == [b"* ENABLED CONDSTORE"]
    assert int((await other.ok("SELECT INBOX")).code_value("HIGHESTMODSEQ")) == await _highest(imap)


async def test_fetch_modseq_enables_condstore_mid_session(imap: Imap) -> None:
    """The first FETCH MODSEQ with a mailbox selected says OK [HIGHESTMODSEQ] once, then each message's modseq."""
    client = await _filled(imap, 3)
    first = await client.ok("FETCH 1:* (MODSEQ)")
    assert first.codes() == [f"HIGHESTMODSEQ {await _highest(imap)}"]
    stored = await _modseqs(imap)
    assert {n: _modseq(f["MODSEQ"]) for n, f in first.fetches().items()} == {1: stored[1], 2: stored[2], 3: stored[3]}
    again = await client.ok("FETCH 2 (UID MODSEQ)")
    assert again.codes() == []
    assert again.fetches() == {2: {"UID": "2", "MODSEQ": [str(stored[2])]}}


async def test_store_answers_flags_and_modseq(imap: Imap) -> None:
    """After CONDSTORE, STORE answers FLAGS and the new MODSEQ; .SILENT still MODSEQ; a no-op nothing."""
    client = await _filled(imap, 2)
    await client.ok("ENABLE CONDSTORE")  # a client should ENABLE before SELECT; this one is late, and still heard
    stored = (await client.ok("STORE 1 +FLAGS (\\Seen)")).fetches()
    highest = await _highest(imap)
    assert stored == {1: {"FLAGS": ["\\Recent", "\\Seen"], "MODSEQ": [str(highest)]}}  # rev1: this session took it
    silent = await client.ok("UID STORE 2 +FLAGS.SILENT (\\Flagged)")
    assert silent.fetches() == {2: {"UID": "2", "MODSEQ": [str(await _highest(imap))]}}
    assert (await client.ok("STORE 1 +FLAGS (\\Seen)")).untagged == []
    assert await _highest(imap) == highest + 1  # the no-op changed nothing


async def test_store_answers_uid_under_qresync(imap: Imap) -> None:
    """After ENABLE QRESYNC, STORE and a FETCH that sets \\Seen answer UID too (RFC 7162 §3.2.4), as Dovecot does."""
    await imap.deliver()
    await imap.deliver()
    client = await imap.connect(enable="QRESYNC", select="INBOX")
    stored = (await client.ok("STORE 1 +FLAGS.SILENT (\\Flagged)")).fetches()
    assert stored == {1: {"UID": "1", "MODSEQ": [str(await _highest(imap))]}}
    seen = (await client.ok("FETCH 2 (RFC822.SIZE BODY[])")).fetches()[2]
    assert seen["UID"] == "2"
    assert _modseq(seen["MODSEQ"]) == await _highest(imap)


async def test_store_unchangedsince(imap: Imap) -> None:
    """STORE (UNCHANGEDSINCE n) changes the messages not changed since n and names the others in [MODIFIED]."""
    client = await _filled(imap, 4)
    before = await _highest(imap)
    await client.ok("STORE 2,4 +FLAGS (\\Answered)")  # changed after `before`
    result = await client.ok(f"STORE 1:4 (UNCHANGEDSINCE {before}) +FLAGS (\\Flagged)")
    assert result.code == "MODIFIED 2,4"
    assert sorted(result.fetches()) == [1, 3]
    flags = {m["uid"]: m["flags"] for m in await imap.stored()}
    assert flags == {1: ["\\Flagged"], 2: ["\\Answered"], 3: ["\\Flagged"], 4: ["\\Answered"]}
    by_uid = await client.ok("UID STORE 1:4 (UNCHANGEDSINCE 0) -FLAGS (\\Flagged)")  # 0 fails for every message
    assert by_uid.code == "MODIFIED 1:4"
    assert by_uid.fetches() == {}
    assert {m["uid"]: m["flags"] for m in await imap.stored()} == flags


async def test_store_unchangedsince_names_uids_for_uid_store(imap: Imap) -> None:
    """UID STORE (UNCHANGEDSINCE) names UIDs in [MODIFIED], STORE message numbers."""
    client = await _filled(imap, 3)
    await client.ok("STORE 1 +FLAGS (\\Deleted)")
    await client.ok("EXPUNGE")  # message numbers now 1, 2 for UIDs 2, 3
    before = await _highest(imap)
    await client.ok("STORE 2 +FLAGS (\\Seen)")  # UID 3
    assert (await client.ok(f"UID STORE 2:3 (UNCHANGEDSINCE {before}) +FLAGS (\\Draft)")).code == "MODIFIED 3"
    before = await _highest(imap)
    await client.ok("STORE 2 +FLAGS ($Later)")
    assert (await client.ok(f"STORE 1:2 (UNCHANGEDSINCE {before}) +FLAGS (\\Answered)")).code == "MODIFIED 2"


async def test_store_unchangedsince_on_message_expunged_elsewhere(imap: Imap) -> None:
    """A message another session expunged (not yet reported) fails the test: it is in [MODIFIED], nothing breaks."""
    client = await _filled(imap, 2)
    highest = await _highest(imap)
    await imap.expunge("2")
    result = await client.ok(f"STORE 1:2 (UNCHANGEDSINCE {highest + 5}) +FLAGS (\\Seen)")
    assert result.code == "MODIFIED 2"
    assert result.lines("EXPUNGE") == []  # never during STORE
    assert (await client.ok("NOOP")).lines("EXPUNGE") == [b"* 2 EXPUNGE"]
    assert [m["flags"] for m in await imap.stored()] == [["\\Seen"]]


async def test_fetch_changedsince(imap: Imap) -> None:
    """FETCH (CHANGEDSINCE n) answers only the messages changed since n, each with its MODSEQ."""
    client = await _filled(imap, 5)
    since = await _highest(imap)
    await client.ok("STORE 2 +FLAGS (\\Seen)")
    await client.ok("STORE 4 +FLAGS (\\Flagged)")
    stored = await _modseqs(imap)
    result = await client.ok(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {since})")
    assert result.fetches() == {
        2: {"FLAGS": ["\\Recent", "\\Seen"], "MODSEQ": [str(stored[2])]},
        4: {"FLAGS": ["\\Recent", "\\Flagged"], "MODSEQ": [str(stored[4])]},
    }
    by_uid = await client.ok(f"UID FETCH 3:5 (FLAGS) (CHANGEDSINCE {since})")
    assert by_uid.fetches() == {4: {"UID": "4", "FLAGS": ["\\Recent", "\\Flagged"], "MODSEQ": [str(stored[4])]}}
    assert (await client.ok(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {await _highest(imap)})")).fetches() == {}


async def test_fetch_that_sets_seen_reports_modseq(imap: Imap) -> None:
    """After CONDSTORE, a FETCH BODY[] that sets \\Seen answers FLAGS and the new MODSEQ too (IMAPClient's livetest)."""
    client = await _filled(imap, 1)
    await client.ok("FETCH 1 (MODSEQ)")
    item = (await client.ok("FETCH 1 (BODY[])")).fetches()[1]
    assert sorted(item) == ["BODY[]", "FLAGS", "MODSEQ"]
    assert item["FLAGS"] == ["\\Recent", "\\Seen"]
    assert _modseq(item["MODSEQ"]) == await _highest(imap)
    again = (await client.ok("FETCH 1 (BODY[])")).fetches()[1]
    assert "MODSEQ" not in again  # \Seen was there already: nothing changed


async def _search_mailbox(imap: Imap) -> tuple[ImapClient, list[int]]:
    """Four messages, \\Seen set on 1, 3, 2, 4 in that order; the modseq each got."""
    client = await _filled(imap, 4)
    modseqs = []
    for n in (1, 3, 2, 4):
        await client.ok(f"STORE {n} +FLAGS (\\Seen)")
        modseqs.append(await _highest(imap))
    by_msn = dict(zip((1, 3, 2, 4), modseqs, strict=True))
    return client, [by_msn[n] for n in (1, 2, 3, 4)]


async def test_search_modseq_esearch(imap: Imap) -> None:
    """SEARCH MODSEQ under ESEARCH: MODSEQ of MIN or MAX alone, else the highest returned (as imaptest expects)."""
    client, m = await _search_mailbox(imap)

    def esearch(result: Result) -> dict[str, object]:
        found = result.esearch()
        found.pop("TAG")
        return found

    key = 'MODSEQ "/flags/\\\\seen" all'
    found = esearch(await client.ok(f"SEARCH RETURN (MIN) 1:3 {key} 1"))
    assert found == {"UID": False, "MIN": "1", "MODSEQ": str(m[0])}
    found = esearch(await client.ok(f"SEARCH RETURN (MAX) 1:3 {key} 1"))
    assert found == {"UID": False, "MAX": "3", "MODSEQ": str(m[2])}
    found = esearch(await client.ok(f"SEARCH RETURN () 1:3 {key} 1"))
    assert found == {"UID": False, "ALL": "1:3", "MODSEQ": str(m[1])}
    found = esearch(await client.ok(f"SEARCH RETURN (MIN MAX) 2:3 {key} 1"))
    assert found == {"UID": False, "MIN": "2", "MAX": "3", "MODSEQ": str(m[1])}
    assert esearch(await client.ok(f"SEARCH RETURN (ALL) 2:3 MODSEQ {m[1]}")) == {
        "UID": False,
        "ALL": "2",
        "MODSEQ": str(m[1]),
    }
    assert esearch(await client.ok(f"SEARCH RETURN (ALL) 2:3 MODSEQ {m[3]}")) == {"UID": False}  # nothing: no MODSEQ


async def test_search_modseq_plain(imap: Imap) -> None:
    """A rev1 SEARCH MODSEQ ends with (MODSEQ n), the highest found; nothing found, no MODSEQ."""
    client, m = await _search_mailbox(imap)
    found = await client.ok(f"SEARCH MODSEQ {m[2]}")  # \Seen was set on 1, 3, 2, 4 in that order
    assert found.lines("SEARCH") == [f"* SEARCH 2 3 4 (MODSEQ {m[3]})".encode()]
    oldest = await client.ok(f"UID SEARCH NOT MODSEQ {m[0] + 1}")
    assert oldest.lines("SEARCH") == [f"* SEARCH 1 (MODSEQ {m[0]})".encode()]
    assert (await client.ok(f"SEARCH MODSEQ {m[3] + 1}")).lines("SEARCH") == [b"* SEARCH"]


async def test_status_highestmodseq_enables(imap: Imap) -> None:
    """STATUS (HIGHESTMODSEQ) gives the stored value and, with a mailbox selected, enables CONDSTORE there."""
    client = await _filled(imap, 2)
    result = await client.ok("STATUS INBOX (HIGHESTMODSEQ MESSAGES)")
    assert status_items(result.lines("STATUS")[0]) == {"HIGHESTMODSEQ": await _highest(imap), "MESSAGES": 2}
    assert result.codes() == [f"HIGHESTMODSEQ {await _highest(imap)}"]
    assert "MODSEQ" in (await client.ok("STORE 1 +FLAGS (\\Seen)")).fetches()[1]


async def test_other_sessions_changes_carry_modseq(imap: Imap) -> None:
    """Flag changes made elsewhere reach a CONDSTORE session with UID and MODSEQ, a plain session without MODSEQ."""
    await imap.deliver()
    aware = await imap.connect(enable="CONDSTORE", select="INBOX")
    plain = await imap.connect(select="INBOX")
    writer = await imap.connect(select="INBOX")
    await writer.ok("STORE 1 +FLAGS ($Later)")
    highest = await _highest(imap)
    assert (await aware.ok("NOOP")).fetches() == {
        1: {"UID": "1", "FLAGS": ["\\Recent", "$Later"], "MODSEQ": [str(highest)]}
    }
    assert (await plain.ok("NOOP")).fetches() == {1: {"UID": "1", "FLAGS": ["$Later"]}}


async def test_flag_changes_wait_with_an_expunge_during_fetch(imap: Imap) -> None:
    """While an expunge cannot be reported (FETCH), a CONDSTORE session hears no later MODSEQ either; NOOP says both."""
    client = await _filled(imap, 3)
    await client.ok("ENABLE CONDSTORE")
    writer = await imap.connect(select="INBOX")
    await writer.ok("STORE 3 +FLAGS (\\Deleted)")
    await writer.ok("EXPUNGE")
    await writer.ok("STORE 1 +FLAGS (\\Flagged)")
    await writer.ok("UNSELECT")
    await imap.heard((await imap.mailbox())["id"])
    during = await client.ok("FETCH 2 (UID)")
    assert during.fetches() == {2: {"UID": "2"}}  # neither the expunge nor the flag change
    after = await client.ok("NOOP")
    assert after.lines("EXPUNGE") == [b"* 3 EXPUNGE"]
    assert after.fetches() == {
        1: {"UID": "1", "FLAGS": ["\\Recent", "\\Flagged"], "MODSEQ": [str(await _highest(imap))]}
    }


async def test_bad_modifiers_keep_the_session(imap: Imap) -> None:
    """Malformed CONDSTORE syntax is BAD and the session goes on."""
    client = await _filled(imap, 1)
    for line in (
        "FETCH 1 (FLAGS) (CHANGEDSINCE x)",
        "FETCH 1 (FLAGS) (CHANGEDSINCE 9223372036854775808)",
        "STORE 1 (UNCHANGEDSINCE) +FLAGS (\\Seen)",
        "SEARCH MODSEQ",
        "SELECT INBOX (CONDSTORE FOO)",
    ):
        assert (await client.command(line)).status == "BAD", line
    assert (await client.ok("FETCH 1 (FLAGS)")).fetches() == {1: {"FLAGS": ["\\Recent"]}}
    await imap.assert_serves()
