"""A client that keeps a mailbox offline as Thunderbird does resyncs a 10,000-message INBOX with QRESYNC
(RFC 7162 §3.2.5, §6): after 10 flag changes and 3 expunges made elsewhere it hears exactly those, and its
copy then equals the server's."""

from __future__ import annotations

from dataclasses import dataclass, field

from relate.store import imap_messages

from .conftest import Imap
from .helpers import ImapClient, Result, parse_fetch

MESSAGES = 10_000


@dataclass
class OfflineCopy:
    """What the client keeps between sessions: UIDVALIDITY, HIGHESTMODSEQ and each UID's flags."""

    uidvalidity: int = 0
    highestmodseq: int = 0
    flags: dict[int, list[str]] = field(default_factory=dict)

    def apply(self, result: Result) -> None:
        """Take in what a SELECT or FETCH said: [HIGHESTMODSEQ], VANISHED (EARLIER) and FETCH (UID FLAGS MODSEQ)."""
        for line in result.untagged:
            if line.startswith(b"* VANISHED (EARLIER) "):
                for item in line[len(b"* VANISHED (EARLIER) ") :].split(b","):
                    lo, _, hi = item.partition(b":")
                    for uid in range(int(lo), int(hi or lo) + 1):
                        self.flags.pop(uid, None)
            elif line.startswith(b"* ") and b" FETCH (" in line:
                _, items = parse_fetch(line)
                # \Recent belongs to one session (RFC 3501 §2.3.2), so an offline copy does not keep it
                self.flags[int(items["UID"])] = sorted(f for f in items["FLAGS"] if f != "\\Recent")
                if "MODSEQ" in items:
                    self.highestmodseq = max(self.highestmodseq, int(items["MODSEQ"][0]))
        for code in result.codes():
            name, _, value = code.partition(" ")
            if name == "UIDVALIDITY":
                self.uidvalidity = int(value)
            elif name == "HIGHESTMODSEQ":
                self.highestmodseq = int(value)


async def _fill(imap: Imap) -> list[int]:
    """bob's INBOX with MESSAGES messages: one delivered, the rest copies made by the store as COPY makes them."""
    uids = [(await imap.deliver()).uid]
    box = await imap.mailbox()
    async with imap.pool.acquire() as conn:
        while len(uids) < MESSAGES:
            pairs = await imap_messages.copy(conn, box["id"], uids[: MESSAGES - len(uids)], box["id"])
            uids += [new for _, new in pairs]
    return uids


async def _server_flags(imap: Imap) -> dict[int, list[str]]:
    box = await imap.mailbox()
    rows = await imap.pool.fetch("SELECT uid, flags FROM messages WHERE mailbox_id = $1", box["id"])
    return {r["uid"]: sorted(r["flags"]) for r in rows}


async def _first_sync(imap: Imap) -> OfflineCopy:
    copy = OfflineCopy()
    client = await imap.connect(enable="QRESYNC")
    copy.apply(await client.ok("SELECT INBOX"))
    copy.apply(await client.ok("UID FETCH 1:* (UID FLAGS)", wait=60))
    await client.ok("LOGOUT")
    return copy


async def _changes_elsewhere(imap: Imap, uids: list[int]) -> tuple[list[int], list[int]]:
    """Another session flags 10 messages and expunges 3 others; returns (flagged UIDs, expunged UIDs)."""
    flagged = uids[100:10000:1000]  # 10 messages spread over the mailbox
    expunged = [uids[5], uids[4242], uids[-1]]
    other = await imap.connect(select="INBOX")
    await other.ok("UID STORE " + ",".join(map(str, flagged[:5])) + " +FLAGS (\\Seen)")
    await other.ok("UID STORE " + ",".join(map(str, flagged[5:])) + " +FLAGS (\\Flagged $Important)")
    await other.ok("UID STORE " + ",".join(map(str, expunged)) + " +FLAGS.SILENT (\\Deleted)")
    await other.ok("UID EXPUNGE " + ",".join(map(str, expunged)))
    await other.ok("LOGOUT")
    return flagged, expunged


def _kinds(result: Result) -> list[str]:
    """Each untagged line's kind: FLAGS, EXISTS, VANISHED, FETCH, or the response code of an OK."""
    out = []
    for line in result.untagged:
        words = line.split(b" ")
        if words[1] == b"OK":
            out.append(words[2].strip(b"[]").decode())
        else:
            out.append((words[2] if words[1].isdigit() else words[1]).decode())
    return out


async def test_qresync_resync_hears_exactly_what_changed(imap: Imap) -> None:
    """SELECT (QRESYNC (uidvalidity modseq)) after 10 flag changes and 3 expunges: 10 FETCHes, 1 VANISHED, no more."""
    uids = await _fill(imap)
    copy = await _first_sync(imap)
    assert len(copy.flags) == MESSAGES
    flagged, expunged = await _changes_elsewhere(imap, uids)

    client = await imap.connect(enable="QRESYNC")
    result = await client.ok(f"SELECT INBOX (QRESYNC ({copy.uidvalidity} {copy.highestmodseq}))")
    fetched = [line for line in result.untagged if b" FETCH (" in line]
    vanished = [line for line in result.untagged if line.startswith(b"* VANISHED")]
    assert sorted(int(parse_fetch(line)[1]["UID"]) for line in fetched) == flagged
    assert vanished == [b"* VANISHED (EARLIER) " + b",".join(b"%d" % u for u in expunged)]
    assert sorted(_kinds(result)) == sorted(
        ["FLAGS", "EXISTS", "RECENT", "UNSEEN", "PERMANENTFLAGS", "UIDVALIDITY", "UIDNEXT", "HIGHESTMODSEQ"]
        + ["VANISHED"]
        + ["FETCH"] * 10
    )
    assert result.lines("EXISTS") == [b"* %d EXISTS" % (MESSAGES - 3)]
    copy.apply(result)
    assert copy.flags == await _server_flags(imap)
    assert copy.highestmodseq == int((await imap.mailbox())["highestmodseq"])


async def test_condstore_resync_and_qresync_with_known_uids(imap: Imap) -> None:
    """The same changes seen by UID FETCH 1:* (FLAGS) (CHANGEDSINCE m) and by QRESYNC with known UIDs: 10 FETCHes."""
    uids = await _fill(imap)
    copy = await _first_sync(imap)
    flagged, expunged = await _changes_elsewhere(imap, uids)

    condstore = await imap.connect(select="INBOX (CONDSTORE)")
    changed = await condstore.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {copy.highestmodseq})")
    assert changed.untagged == [line for line in changed.untagged if b" FETCH (" in line]
    assert sorted(int(f["UID"]) for f in changed.fetches().values()) == flagged

    known: ImapClient = await imap.connect(enable="QRESYNC")
    result = await known.ok(f"SELECT INBOX (QRESYNC ({copy.uidvalidity} {copy.highestmodseq} 1:{uids[-1]}))")
    assert len(result.lines("FETCH")) == 10
    assert result.lines("VANISHED") == [b"* VANISHED (EARLIER) " + b",".join(b"%d" % u for u in expunged)]
    copy.apply(result)
    assert copy.flags == await _server_flags(imap)
