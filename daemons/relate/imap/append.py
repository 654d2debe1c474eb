"""Storing what APPEND brings (RFC 9051 §6.3.12): MULTIAPPEND (RFC 3502), CATENATE (RFC 4469), binary data
(RFC 3516 §4.3).

The handler in imap/commands.py has checked that the mailbox exists (else NO
[TRYCREATE], whatever else is wrong, as Dovecot answers) and the flags. Then,
in this order, before anything is stored:

1. Every CATENATE URL is resolved (imap/imapurl.py): it must name a message of
   this user: a relative URL, or an absolute one with this user's address and
   this server's host name; a mailbox of theirs (with that UIDVALIDITY, if
   given), a UID in it, and a section it has. Anything else is
   ``NO [BADURL url]``: no other user's mail can be read this way.
2. Each message must be at most ``imap.max_literal_size`` octets (APPENDLIMIT),
   and all of them together at most ``imap.max_append_size``, URL parts
   counted: else ``NO [TOOBIG]``.
3. Twice the largest message is reserved in the memory budget (one message is
   in memory at a time), waiting at most ``imap.memory_wait``: else
   ``NO [LIMIT]``.
4. One transaction stores every message, each read into memory only now
   (spooled literals in a worker thread, URL parts as just the octets they
   name), each checked against the user's quota in the statement that stores
   it (store/quota.py): all are stored or, on any failure, none (RFC 3502
   §6.3.11); a message past a quota limit raises OverQuota, which the handler
   answers ``NO [OVERQUOTA]`` (RFC 9208 §4.3.1).

A message sent as binary data (a literal8) has its binary parts stored as
base64 (mail/binarypart.py), so BODY[] stays readable to any client and
BINARY[] gives the octets back exactly. The answer is ``OK [APPENDUID
uidvalidity uid-set]`` (RFC 4315 §3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from relate.errors import OverQuota
from relate.imap import fetch as fetching
from relate.imap import imapurl
from relate.imap.errors import No
from relate.imap.parser import Append, AppendMessage, Literal, Section
from relate.imap.search import compact
from relate.imap.session import ImapSession
from relate.mail.binarypart import encode_binary_parts
from relate.mail.mime import parse_message
from relate.runtime.budget import BudgetExhausted
from relate.store import imap_messages, mailboxes, messages
from relate.store.db import Queryable

log = logging.getLogger("relate.imap")

# A message of this size or less is parsed (to find binary parts) and converted on the event loop.
_INLINE = 64 * 1024
# An IMAP URL is quoted in NO [BADURL ...] up to this many characters.
_URL_SHOWN = 200


@dataclass(frozen=True)
class _Cut:
    """The octets one CATENATE URL names: ``length`` octets at ``start`` of message ``uid``, fields picked
    from them after reading for a HEADER.FIELDS section, then the partial range applied."""

    mailbox_id: int
    uid: int
    start: int
    length: int
    section: Section | None
    partial: tuple[int, int | None] | None

    @property
    def size(self) -> int:
        """At most this many octets (exactly, unless fields are picked)."""
        if self.partial is None:
            return self.length
        start, count = self.partial
        rest = max(0, self.length - start)
        return rest if count is None else min(rest, count)


def _bad_url(url: str) -> No:
    shown = "".join(ch for ch in url[:_URL_SHOWN] if ch not in "]\r\n")
    return No("Invalid URL for CATENATE", f"BADURL {shown}")


async def _resolve(session: ImapSession, conn: Queryable, url: str) -> _Cut:
    """Where the octets ``url`` names lie, or NO [BADURL] when it names none of this user's."""
    assert session.principal is not None
    try:
        found = imapurl.parse(url)
    except imapurl.UrlError:
        raise _bad_url(url) from None
    if found.user is not None and found.user.lower() != session.principal.address.lower():
        raise _bad_url(url)  # another user's message: never, whatever access they gave
    if found.host is not None and found.host != session.server.cfg.hostname.lower():
        raise _bad_url(url)
    box = await mailboxes.get(conn, session.principal.user_id, found.mailbox)
    if box is None or (found.uidvalidity is not None and found.uidvalidity != box["uidvalidity"]):
        raise _bad_url(url)
    row = await imap_messages.message_part_source(conn, box["id"], found.uid)
    if row is None:
        raise _bad_url(url)
    section = found.section or Section()
    try:
        span: tuple[int, int | None] | None = fetching.section_span(row, section)
    except No:
        span = None  # no such part
    if span is None:
        raise _bad_url(url)
    start, end = span
    length = max(0, (int(row["size"]) if end is None else end) - start)
    picks = section.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT")
    return _Cut(box["id"], found.uid, start, length, section if picks else None, found.partial)


async def _read_cut(conn: Queryable, cut: _Cut, url: str) -> bytes:
    data = (await imap_messages.slices(conn, cut.mailbox_id, [(cut.uid, cut.start, cut.length)])).get(cut.uid)
    if data is None:
        raise _bad_url(url)  # expunged since it was resolved
    if cut.section is not None:
        data = fetching.header_fields(data, cut.section)
    if cut.partial is not None:
        start, count = cut.partial
        data = data[start:] if count is None else data[start : start + count]
    return data


async def _read_literal(lit: Literal) -> bytes:
    return lit.read() if lit.in_memory else await asyncio.to_thread(lit.read)


def _convert(raw: bytes) -> bytes:
    """``raw`` with its binary parts base64-encoded (pure CPU: off the loop for a large message)."""
    return encode_binary_parts(raw, parse_message(raw).bodystructure) or raw


async def append(session: ImapSession, cmd: Append, box: dict[str, Any], flags: Sequence[list[str]]) -> None:
    """Store ``cmd``'s messages in ``box`` with their ``flags`` (checked by the caller), all or none."""
    cfg = session.cfg
    cuts: dict[tuple[int, int], _Cut] = {}
    sizes = [message.literal_octets for message in cmd.messages]
    if any(isinstance(part, str) for message in cmd.messages for part in message.parts):
        async with session.server.pool.acquire() as conn:  # CATENATE's URLs (RFC 4469)
            for i, message in enumerate(cmd.messages):
                for j, part in enumerate(message.parts):
                    if isinstance(part, str):
                        cuts[i, j] = cut = await _resolve(session, conn, part)
                        sizes[i] += cut.size
    if max(sizes) > cfg.max_literal_size:
        raise No(f"Message too big (at most {cfg.max_literal_size} octets)", "TOOBIG")
    total = max(cfg.max_literal_size, cfg.max_append_size)  # as the session bounds the literals alone
    if sum(sizes) > total:
        raise No(f"Messages too big together (at most {total} octets)", "TOOBIG")
    largest = max(sizes)
    # An IMAP4rev1 session appending to the mailbox it has selected takes the messages as \\Recent when they
    # are stored, in the same statement (store/messages.py), rather than claiming them after.
    sel = session.selected
    claim = sel is not None and sel.mailbox_id == box["id"] and sel.takes_recent
    try:
        async with session.server.memory.reserve(2 * largest, wait=cfg.memory_wait):
            stored = await _store(session, cmd.messages, cuts, box["id"], flags, claim)
    except BudgetExhausted:
        log.warning("imap-memory-full client=%s octets=%d", session.client, largest)
        raise No("Server busy with other messages, try again later", "LIMIT") from None
    uids = [m.uid for m in stored]
    # Appending to the selected mailbox: the client hears EXISTS now. One transaction took consecutive
    # modseqs, so the session knows what changed unless another change came before.
    selected = session.selected is not None and session.selected.mailbox_id == box["id"]
    if claim and sel is not None and session.selected is sel:
        for m in stored:
            if m.recent:
                sel.add_recent(m.uid - 1, m.uid)
                session.server.hub.claimed_recent(box["id"], m.uid)
    if selected and not await session.own_change(box["id"], stored[0].modseq, stored[-1].modseq, new=uids):
        await session.sync()
    code = f"APPENDUID {box['uidvalidity']} {compact(uids)}"
    session.tagged(cmd.tag, "OK", "APPEND completed", code)


async def _store(
    session: ImapSession,
    found: Sequence[AppendMessage],
    cuts: dict[tuple[int, int], _Cut],
    mailbox_id: int,
    flags: Sequence[list[str]],
    claim_recent: bool,
) -> list[messages.StoredMessage]:
    """Store every message in one transaction; returns them, by ascending UID."""
    done: list[messages.StoredMessage] = []
    enforce = messages.Enforce(session.server.cfg.quota)  # checked as each is stored (store/quota.py)
    async with (
        session.server.pool.acquire() as conn,
        # One message is ingest's to store, in one statement when it can (no BEGIN and COMMIT round trips).
        conn.transaction() if len(found) > 1 else contextlib.nullcontext(),
    ):
        for i, message in enumerate(found):
            pieces: list[bytes] = []
            for j, part in enumerate(message.parts):
                if isinstance(part, Literal):
                    pieces.append(await _read_literal(part))
                else:
                    pieces.append(await _read_cut(conn, cuts[i, j], part))
            raw = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            del pieces
            if any(isinstance(p, Literal) and p.binary for p in message.parts):
                raw = _convert(raw) if len(raw) <= _INLINE else await asyncio.to_thread(_convert, raw)
            stored = await messages.ingest(
                conn,
                raw,
                [mailbox_id],
                flags=flags[i],
                internal_date=message.date,
                enforce=enforce,
                claim_recent=claim_recent,
            )
            del raw
            if not stored:
                raise OverQuota("APPEND past the user's quota")  # rolls back the messages before it too
            done.append(stored[0])
    return done
