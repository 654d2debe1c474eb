"""THREAD (RFC 5256 §3): REFERENCES, ORDEREDSUBJECT and REFS over a real session, as imaptest's groups check them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .conftest import Imap
from .helpers import ImapClient


def message(*headers: str, body: str = "body") -> bytes:
    return ("\r\n".join([*headers, "", body]) + "\r\n").encode()


def at(hour: float) -> datetime:
    return datetime(2008, 2, 22, tzinfo=UTC) + timedelta(hours=hour)


async def _thread(client: ImapClient, command: str) -> bytes:
    (line,) = (await client.ok(command)).lines("THREAD")
    return line


async def test_references_links_and_loops(imap: Imap) -> None:
    """imaptest thread: the reply's own references decide; no loop is made; an expunge re-threads the rest."""
    await imap.deliver(message("Message-ID: <a@b>"), internal_date=at(17))
    await imap.deliver(message("Message-Id: <b@b>", "References: <a@b> <c@b>"), internal_date=at(15))
    await imap.deliver(message("Message-Id: <c@b>", "References: <b@b>"), internal_date=at(16))
    client = await imap.connect(select="INBOX")
    assert await _thread(client, "THREAD REFERENCES US-ASCII ALL") == b"* THREAD (3 2)(1)"
    assert await _thread(client, "UID THREAD REFERENCES US-ASCII ALL") == b"* THREAD (3 2)(1)"
    await client.ok("STORE 1 +FLAGS (\\Deleted)")
    await client.ok("EXPUNGE")
    assert await _thread(client, "THREAD REFERENCES US-ASCII ALL") == b"* THREAD (2 1)"
    assert await _thread(client, "UID THREAD REFERENCES US-ASCII ALL") == b"* THREAD (3 2)"


async def test_duplicates_dummies_and_subjects(imap: Imap) -> None:
    """Duplicate ids, a missing parent of two, and subject gathering (imaptest thread2, thread6, thread3)."""
    await imap.deliver(message("Message-Id: <a@b>", "Subject: foo"), internal_date=at(1))
    await imap.deliver(message("Message-Id: <a@b>", "Subject: Re: foo"), internal_date=at(2))
    await imap.deliver(message("References: <x@b>", "Subject: one"), internal_date=at(3))
    await imap.deliver(message("References: <x@b>", "Subject: two"), internal_date=at(4))
    client = await imap.connect(select="INBOX")
    assert await _thread(client, "THREAD REFERENCES UTF-8 ALL") == b"* THREAD (1 2)((3)(4))"
    assert await _thread(client, "THREAD REFS UTF-8 ALL") == b"* THREAD (1)(2)((3)(4))"
    assert await _thread(client, "THREAD REFERENCES UTF-8 SUBJECT foo") == b"* THREAD (1 2)"


async def test_in_reply_to_and_later_arrivals(imap: Imap) -> None:
    """In-Reply-To links when References is missing; messages the client knows of only (imaptest thread5)."""
    await imap.deliver(message("Message-ID: <1@b>"), internal_date=at(17))
    for n, parent in ((2, 1), (3, 1), (4, 2)):
        await imap.deliver(message(f"Message-Id: <{n}@b>", f"In-Reply-To: <{parent}@b>"), internal_date=at(15))
    client = await imap.connect(select="INBOX")
    await imap.deliver(message("Message-Id: <5@b>", "In-Reply-To: <2@b>"), internal_date=at(15))
    await imap.heard((await imap.mailbox())["id"])
    result = await client.ok("THREAD REFERENCES US-ASCII ALL")
    assert result.lines("THREAD") == [b"* THREAD (1 (2 4)(3))"]  # message 5 arrived unseen: heard of after
    assert b"* 5 EXISTS" in result.untagged
    assert await _thread(client, "THREAD REFERENCES US-ASCII ALL") == b"* THREAD (1 (2 (4)(5))(3))"


async def test_ordered_subject(imap: Imap) -> None:
    """ORDEREDSUBJECT: by base subject then sent date, each group under its oldest (imaptest orderedsubject2)."""
    for n, (subject, date) in enumerate(
        [("a", "22:00:10"), ("b", "22:00:09"), ("a", "22:00:08"), ("b", "22:00:07"), ("Re: a", None), ("b", None)]
    ):
        headers = [f"Subject: {subject}"] + ([f"Date: Fri, 22 Feb 2008 {date} +0200"] if date else [])
        await imap.deliver(message(*headers), internal_date=datetime(2008, 2, 22, 20, 0, 30 - n, tzinfo=UTC))
    client = await imap.connect(select="INBOX")
    assert await _thread(client, "THREAD ORDEREDSUBJECT UTF-8 ALL") == b"* THREAD (4 (2)(6))(3 (1)(5))"
    assert await _thread(client, "UID THREAD ORDEREDSUBJECT UTF-8 1:3") == b"* THREAD (3 1)(2)"


async def test_empty_and_bad(imap: Imap) -> None:
    """No match gives an empty THREAD response; an unknown algorithm is BAD; THREAD needs a selected mailbox."""
    client = await imap.connect()
    assert (await client.command("THREAD REFS UTF-8 ALL")).status == "BAD"
    await client.ok("SELECT INBOX")
    assert await _thread(client, "THREAD REFERENCES UTF-8 ALL") == b"* THREAD"
    assert (await client.command("THREAD JWZ UTF-8 ALL")).status == "BAD"
    assert (await client.command("THREAD REFERENCES UTF-8")).status == "BAD"
