"""QRESYNC (RFC 7162 §3.2): ENABLE, SELECT (QRESYNC ...) with VANISHED (EARLIER), UID FETCH (VANISHED), VANISHED."""

from __future__ import annotations

from relate.store import imap_messages

from .conftest import Imap
from .helpers import ImapClient, Result


async def _highest(imap: Imap, folder: str = "INBOX") -> int:
    return int((await imap.mailbox(folder))["highestmodseq"])


def _vanished(result: Result | list[bytes], *, earlier: bool) -> list[int]:
    """Every UID the VANISHED responses (with or without EARLIER) name, in order, ranges expanded."""
    lines = result.untagged if isinstance(result, Result) else result
    head = b"* VANISHED (EARLIER) " if earlier else b"* VANISHED "
    uids: list[int] = []
    for line in lines:
        if line.startswith(head) and (earlier or not line.startswith(b"* VANISHED (")):
            for item in line[len(head) :].split(b","):
                lo, _, hi = item.partition(b":")
                uids += range(int(lo), int(hi or lo) + 1)
    return uids


async def _mailbox_of(imap: Imap, n: int) -> tuple[int, list[int]]:
    """``n`` messages in bob's INBOX; its UIDVALIDITY and their UIDs."""
    uids = [(await imap.deliver()).uid for _ in range(n)]
    return int((await imap.mailbox())["uidvalidity"]), uids


async def _elsewhere(imap: Imap, command: str) -> None:
    """``command`` in another session of bob's with INBOX selected."""
    writer = await imap.connect(select="INBOX")
    await writer.ok(command)
    await writer.ok("LOGOUT")


async def _qresync_client(imap: Imap, *, select: bool = False) -> ImapClient:
    """A session of bob's after ENABLE QRESYNC (and SELECT INBOX if ``select``)."""
    client = await imap.connect()
    assert (await client.ok("ENABLE QRESYNC")).lines("ENABLED") == [b"* ENABLED QRESYNC"]
    if select:
        await client.ok("SELECT INBOX")
    return client


async def test_select_qresync_needs_enable(imap: Imap) -> None:
    """SELECT (QRESYNC ...) before ENABLE QRESYNC is BAD and leaves the selected mailbox selected."""
    uidvalidity, _ = await _mailbox_of(imap, 1)
    client = await imap.connect(select="INBOX")
    refused = await client.command(f"SELECT INBOX (QRESYNC ({uidvalidity} 1))")
    assert refused.status == "BAD"
    assert (await client.ok("FETCH 1 (UID)")).fetches() == {1: {"UID": "1"}}


async def test_select_qresync_reports_what_changed(imap: Imap) -> None:
    """SELECT (QRESYNC (uidvalidity modseq)) says VANISHED (EARLIER) for what went since, FETCH for what changed."""
    uidvalidity, uids = await _mailbox_of(imap, 6)
    since = await _highest(imap)
    await _elsewhere(imap, "STORE 2 +FLAGS (\\Seen)")
    await imap.expunge("3,5")
    await _elsewhere(imap, f"UID STORE {uids[3]} +FLAGS ($Later)")
    client = await _qresync_client(imap)
    result = await client.ok(f"SELECT INBOX (QRESYNC ({uidvalidity} {since}))")
    highest = await _highest(imap)
    assert result.code_value("HIGHESTMODSEQ") == str(highest)
    assert _vanished(result, earlier=True) == [uids[2], uids[4]]
    fetched = result.fetches()
    assert sorted(fetched) == [2, 3]
    assert fetched[2]["UID"] == str(uids[1])
    assert fetched[2]["FLAGS"] == ["\\Seen"]
    assert fetched[3] == {"UID": str(uids[3]), "FLAGS": ["$Later"], "MODSEQ": [str(highest)]}
    assert result.lines("EXISTS") == [b"* 4 EXISTS"]
    # The VANISHED (EARLIER) comes before the FETCHes (RFC 7162 §3.2.5.2's example).
    kinds = [b"VANISHED" if line.startswith(b"* VANISHED") else line.split(b" ")[2] for line in result.untagged[-3:]]
    assert kinds == [b"VANISHED", b"FETCH", b"FETCH"]


async def test_select_qresync_known_uids_and_uidvalidity(imap: Imap) -> None:
    """known-uids limits both VANISHED and FETCH to those UIDs; a stale UIDVALIDITY gets a plain SELECT."""
    uidvalidity, uids = await _mailbox_of(imap, 5)
    since = await _highest(imap)
    await _elsewhere(imap, "STORE 1,4 +FLAGS (\\Flagged)")
    await imap.expunge("2,5")
    client = await _qresync_client(imap)
    known = f"{uids[0]}:{uids[2]}"
    limited = await client.ok(f"SELECT INBOX (QRESYNC ({uidvalidity} {since} {known} (1:3 {known})))")
    assert _vanished(limited, earlier=True) == [uids[1]]
    assert [f["UID"] for f in limited.fetches().values()] == [str(uids[0])]
    stale = await client.ok(f"SELECT INBOX (QRESYNC ({uidvalidity + 1} {since}))")
    assert stale.lines("VANISHED") == []
    assert stale.lines("FETCH") == []
    assert stale.code_value("UIDVALIDITY") == str(uidvalidity)
    assert stale.codes()[0] == "CLOSED"


async def test_expunge_is_vanished_under_qresync(imap: Imap) -> None:
    """With QRESYNC, EXPUNGE says * VANISHED uids and its OK carries [HIGHESTMODSEQ]; MOVE says VANISHED too."""
    await imap.mailbox("Archive")
    _, uids = await _mailbox_of(imap, 5)
    client = await _qresync_client(imap, select=True)
    await client.ok("STORE 1,2,4 +FLAGS (\\Deleted)")
    expunged = await client.ok("EXPUNGE")
    assert expunged.untagged == [f"* VANISHED {uids[0]}:{uids[1]},{uids[3]}".encode()]
    assert expunged.code == f"HIGHESTMODSEQ {await _highest(imap)}"
    moved = await client.ok("MOVE 1 Archive")
    assert _vanished(moved, earlier=False) == [uids[2]]
    assert moved.lines("EXPUNGE") == []
    assert moved.code == f"HIGHESTMODSEQ {await _highest(imap)}"
    assert (await client.ok("FETCH 1 (UID)")).fetches() == {1: {"UID": str(uids[4])}}


async def test_other_sessions_expunges_are_vanished(imap: Imap) -> None:
    """An expunge elsewhere reaches a QRESYNC session as VANISHED on NOOP, whose OK then says HIGHESTMODSEQ."""
    _, uids = await _mailbox_of(imap, 3)
    client = await _qresync_client(imap, select=True)
    assert (await client.ok("NOOP")).code is None  # nothing new: no HIGHESTMODSEQ
    await imap.expunge("2")
    result = await client.ok("NOOP")
    assert result.untagged == [f"* VANISHED {uids[1]}".encode()]
    assert result.code == f"HIGHESTMODSEQ {await _highest(imap)}"
    assert (await client.ok("FETCH 2 (UID)")).fetches() == {2: {"UID": str(uids[2])}}


async def test_idle_hears_vanished(imap: Imap) -> None:
    """In IDLE a QRESYNC session hears VANISHED; the OK after DONE says the HIGHESTMODSEQ it reached."""
    _, uids = await _mailbox_of(imap, 2)
    client = await _qresync_client(imap, select=True)
    tag = await client.idle()
    writer = await imap.connect(select="INBOX")
    await writer.ok("STORE 1 +FLAGS (\\Deleted)")
    await writer.ok("EXPUNGE")
    heard = await client.read_until(lambda line: line.startswith(b"* VANISHED"))
    assert heard[-1] == f"* VANISHED {uids[0]}".encode()
    done = await client.done(tag)
    assert done.code == f"HIGHESTMODSEQ {await _highest(imap)}"


async def test_uid_fetch_vanished(imap: Imap) -> None:
    """UID FETCH set (FLAGS) (CHANGEDSINCE n VANISHED) names the set's UIDs expunged since n, then the changes."""
    _, uids = await _mailbox_of(imap, 6)
    client = await _qresync_client(imap, select=True)
    since = await _highest(imap)
    await client.ok("STORE 1,2,5 +FLAGS (\\Deleted)")
    await client.ok("EXPUNGE")
    await client.ok("STORE 1 +FLAGS (\\Seen)")  # UID 3
    result = await client.ok(f"UID FETCH {uids[1]}:* (FLAGS) (CHANGEDSINCE {since} VANISHED)")
    assert _vanished(result, earlier=True) == [uids[1], uids[4]]  # not UID 1: outside the set
    assert [f["UID"] for f in result.fetches().values()] == [str(uids[2])]
    assert (await client.command("UID FETCH 1:* (FLAGS) (VANISHED)")).status == "BAD"
    assert (await client.command(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {since} VANISHED)")).status == "BAD"
    plain = await imap.connect(select="INBOX")
    refused = await plain.command(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {since} VANISHED)")
    assert refused.status == "BAD"
    assert "QRESYNC" in refused.text


async def test_uid_fetch_vanished_leaves_unreported_expunges_to_vanished(imap: Imap) -> None:
    """A UID the session still shows is not VANISHED (EARLIER): the plain VANISHED that follows reports it once."""
    _, uids = await _mailbox_of(imap, 3)
    client = await _qresync_client(imap, select=True)
    since = await _highest(imap)
    await imap.expunge("2")
    result = await client.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {since} VANISHED)")
    assert _vanished(result, earlier=True) == []
    assert _vanished(result, earlier=False) == [uids[1]]  # after the FETCH: UID FETCH may report expunges


async def test_long_vanished_lists_are_split(imap: Imap) -> None:
    """Hundreds of separate expunged UIDs come as several VANISHED (EARLIER) lines that name each exactly once."""
    uidvalidity, uids = await _mailbox_of(imap, 1)
    box = await imap.mailbox()
    # 700 more messages the quick way: copies of the first, made by the store as COPY makes them.
    async with imap.pool.acquire() as conn:
        while len(uids) < 701:
            pairs = await imap_messages.copy(conn, box["id"], uids[: 701 - len(uids)], box["id"])
            uids += [new for _, new in pairs]
    since = await _highest(imap)
    gone = uids[1::2]  # 350 runs of one UID each
    writer = await imap.connect(select="INBOX")
    await writer.ok("UID STORE " + ",".join(map(str, gone)) + " +FLAGS.SILENT (\\Deleted)")
    await writer.ok("EXPUNGE")
    client = await _qresync_client(imap)
    result = await client.ok(f"SELECT INBOX (QRESYNC ({uidvalidity} {since}))")
    lines = [line for line in result.untagged if line.startswith(b"* VANISHED (EARLIER) ")]
    assert len(lines) == 2
    assert all(len(line) < 8192 for line in lines)  # RFC 7162 §4
    assert _vanished(result, earlier=True) == gone
