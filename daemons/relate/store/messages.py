"""Putting messages into mailboxes: the one ingest function every path uses.

Invariants:

- The raw bytes are stored once per SHA-256 (``blobs``), byte for byte,
  whatever the parser made of them; parsing is best-effort and never loses a
  message.
- A message's UID comes from its mailbox's UIDNEXT and its modseq from
  HIGHESTMODSEQ, both bumped by one UPDATE that holds the mailbox row lock
  until commit. Two deliveries to one mailbox therefore commit in UID order,
  and no session can see UID n+1 before UID n. Mailboxes are locked in id
  order so concurrent multi-recipient deliveries cannot deadlock; the lock is
  taken after the blob is written, to hold it for as short a time as can be.
  Held until commit, that lock (and NOTIFY's database-wide one) makes each
  commit wait for the one before it to reach the disk: relate-smtp therefore
  commits the deliveries that arrive together in one transaction
  (store/group_commit.py), whose messages take consecutive UIDs.
- Nothing is indexed for text search here: :func:`index_pending` writes a
  message's text and words after commit (message_texts, message_words), so
  delivery never waits on text search, and search reads a message not
  indexed yet from its own columns and bytes.
- ``NOTIFY relate_mail`` is sent inside the transaction, so listeners hear of
  the message exactly when it is committed, and never of one rolled back.

Memory and the event loop: a message is parsed, hashed and measured in one
worker thread when it is larger than ``_THREADED_PARSE`` (so a large or
hostile message never stalls other clients), and a blob larger than
``_BLOB_STREAM`` goes to PostgreSQL by ``COPY … FROM STDIN (FORMAT binary)``
a chunk at a time, never as one bytea parameter (asyncpg would copy it into
its send buffer and asyncio's transport would copy what the socket did not
take at once). Storing a message therefore holds the message once, plus what
the parser needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import struct
from collections.abc import AsyncIterable, AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from relate.config import QuotaConfig
from relate.errors import MailboxGone
from relate.mail.imapwire import envelope as imap_envelope
from relate.mail.mime import Address, ParsedMessage, parse_message
from relate.mail.sortkeys import sort_keys
from relate.mail.threadids import thread_ids
from relate.store import changes, quota, threads
from relate.store.db import Queryable

log = logging.getLogger("relate.store")

CHANNEL = changes.MAIL
# Parse, hash and measure messages above this size in a worker thread, off the event loop.
_THREADED_PARSE = 64 * 1024
# Text fed to the full-text vector; PostgreSQL caps a tsvector at 1 MB.
_SEARCH_TEXT_LIMIT = 200_000
# Blobs up to this size are written in the same statement as the first copy of the message;
# larger ones are streamed with COPY (see the module docstring), _COPY_CHUNK bytes at a time.
BLOB_INLINE = 256 * 1024
_COPY_CHUNK = 256 * 1024
# PostgreSQL's binary COPY format: signature, flags, header extension length (COPY, "Binary Format").
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)

# One round trip per copy: take the UID and modseq from the mailbox row (locking it until commit) and
# count the message there (store/quota.py) and its keywords (migration 0023), insert the message, and
# NOTIFY (delivered at commit). With the blob variant the blob is written in the same statement (the
# foreign key is checked at its end, when the blob row is there); with the quota variant the mailbox
# row is updated, and the message stored, only if its owner's limits allow (no row comes back otherwise).
_BOX = """
box AS (UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1,
               message_count = message_count + 1, message_bytes = message_bytes + $4,
               keywords = relate_add_keywords(keywords, $2){recent}
         WHERE id = $1{check}
     RETURNING id, user_id, uidnext - 1 AS uid, highestmodseq AS modseq, recent_uid = uidnext - 1 AS recent),"""
_MSG = """
msg AS (INSERT INTO messages (mailbox_id, uid, modseq, flags, internal_date, size, blob_hash,
             subject, from_addr, to_addr, cc_addr, bcc_addr, date_header, message_id,
             in_reply_to, "references", envelope, bodystructure, header_end,
             attachments, attachment_count, text_indexed, wire_size, envelope_wire, envelope_wire_utf8,
             sort_subject, sort_from, sort_to, sort_cc, sort_display_from, sort_display_to, thread_ids, thread_id)
        SELECT box.id, box.uid, box.modseq, $2, coalesce($3, now()), $4, $5,
             $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
             $20, $21, $23, $24,
             $25, $26, $27, $28, $29, $30, $31, thr.id
          FROM box, thr
        RETURNING id, uid, modseq)
SELECT msg.id, box.user_id, msg.uid, msg.modseq, box.recent, thr.linked,
       pg_notify($22, json_build_object('event', 'new', 'user', box.user_id, 'mailbox', box.id,
                                        'id', msg.id, 'uid', msg.uid, 'modseq', msg.modseq,
                                        'at', extract(epoch FROM clock_timestamp()){kind})::text)
  FROM msg, box, thr"""
# The message's thread (store/threads.py), found or started in the same statement: its msg-id keys are $32,
# its subject key $33.
_THREAD = threads.assign_sql("box", "coalesce($3::timestamptz, now())", "$32::text[]", "$33::text")
_BLOB = """
blob AS (INSERT INTO blobs (hash, size, data) VALUES ($5, $4, $34) ON CONFLICT (hash) DO NOTHING),"""
# With the blob: when no message was stored (the mailbox is gone, or full), the sweep is told to look at
# the blob the statement may have written (store/mailboxes.py), so the statement needs no transaction.
_ORPHAN = """
orphan AS (INSERT INTO blob_orphans (hash) SELECT $5 WHERE NOT EXISTS (SELECT 1 FROM box)),"""


def _ingest_sql(*, blob: bool, checked: bool, recent: bool, delivered: bool) -> str:
    """The ingest statement: $1-$33 always (the SORT and THREAD keys are $25-$31, the thread's keys $32-$33),
    then the blob's bytes (with ``blob``), then the configured quota defaults, storage and messages (with
    ``checked``). With ``recent``, the message is claimed as \\Recent (store/imap_messages.py: claim_recent)
    if every message before it has been: the caller's session is the one that has it so (``recent`` comes
    back true). With ``delivered``, its NOTIFY says ``"kind": "delivery"`` (store/changes.py)."""
    first = 35 if blob else 34
    check = f" AND {quota.fits_sql('mailboxes', '$4', '1', f'${first}', f'${first + 1}')}" if checked else ""
    claim = ",\n               recent_uid = CASE WHEN recent_uid = uidnext - 1 THEN uidnext ELSE recent_uid END"
    box = _BOX.format(check=check, recent=claim if recent else "")
    msg = _MSG.format(kind=f", 'kind', '{changes.DELIVERY_KIND}'" if delivered else "")
    return "WITH" + (_BLOB if blob else "") + box + (_ORPHAN if blob else "") + _THREAD + msg


_INGEST = {
    (blob, checked, recent, delivered): _ingest_sql(blob=blob, checked=checked, recent=recent, delivered=delivered)
    for blob in (False, True)
    for checked in (False, True)
    for recent in (False, True)
    for delivered in (False, True)
}


@dataclass
class Enforce:
    """Quota for :func:`ingest`: whose limits it checks (in the statement that stores each copy, see
    store/quota.py), and the mailboxes it found no room in (nothing stored there)."""

    cfg: QuotaConfig
    mailbox_ids: Collection[int] | None = None  # None: every mailbox ingest is given
    refused: list[int] = field(default_factory=list)

    def checks(self, mailbox_id: int) -> bool:
        return self.mailbox_ids is None or mailbox_id in self.mailbox_ids


@dataclass(frozen=True)
class StoredMessage:
    id: int
    user_id: int
    mailbox_id: int
    uid: int
    modseq: int
    recent: bool = False  # claimed as \\Recent by the session that stored it (ingest's ``claim_recent``)


def _clean(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold NUL; broken mail can."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def _addresses(items: Sequence[Address]) -> list[dict[str, str | None]]:
    return [{"name": _clean(a.name), "email": _clean(a.email)} for a in items]


def wire_size(raw: bytes) -> int | None:
    """Octets of ``raw`` with CRLF line endings and a final CRLF; None when that is ``len(raw)``."""
    bare_lf = raw.count(b"\n") - raw.count(b"\r\n")
    size = len(raw) + bare_lf + (2 if raw and not raw.endswith(b"\n") else 0)
    return None if size == len(raw) else size


def envelope_wire(envelope: dict[str, Any]) -> tuple[bytes, bytes | None]:
    """The ENVELOPE as FETCH sends it: (without UTF-8, with UTF-8 when that differs).

    Rendered once here so FETCH copies bytes (migration 0009 renders older rows the same way).
    """
    wire = imap_envelope(envelope, utf8=False)
    if wire.isascii():  # only 8-bit text (a literal without UTF-8) can render differently under UTF8=ACCEPT
        return wire, None
    wide = imap_envelope(envelope, utf8=True)
    return wire, None if wide == wire else wide


@dataclass(frozen=True)
class Prepared:
    """What ingest derives from a message's bytes before it stores them."""

    parsed: ParsedMessage
    digest: bytes  # SHA-256 of the raw bytes: the blob's key
    wire_size: int | None  # see wire_size()
    size: int  # len(raw)
    # The ingest statement's $6-$33, the same for every copy: made here, before any connection is taken, so
    # a delivery sharing a transaction (store/group_commit.py) does not hold its mailbox row lock meanwhile,
    # and made once when that transaction is run again.
    values: tuple[Any, ...]


def _values(parsed: ParsedMessage, wire: int | None) -> tuple[Any, ...]:
    """The columns of a message row that come from the message (see :class:`Prepared`)."""
    attachments = [
        {
            "part": a.part,
            "filename": _clean(a.filename),
            "contentType": _clean(a.content_type),
            "size": a.size,
            "contentId": _clean(a.content_id),
            "inline": a.inline,
        }
        for a in parsed.attachments
    ]
    envelope = _clean(parsed.envelope)
    sort = sort_keys(parsed.subject, envelope)
    threading = thread_ids(parsed.message_id, parsed.in_reply_to, parsed.references)
    thread_keys, subject_key = threads.keys(threading, parsed.subject)
    return (
        _clean(parsed.subject),
        _addresses(parsed.from_),
        _addresses(parsed.to),
        _addresses(parsed.cc),
        _addresses(parsed.bcc),
        parsed.date,
        _clean(parsed.message_id),
        _clean(parsed.in_reply_to),
        _clean(parsed.references),
        envelope,
        _clean(parsed.bodystructure),
        parsed.header_end,
        attachments,
        sum(1 for a in parsed.attachments if not a.inline),
        False,  # text_indexed: the background indexer fills the body text in
        wire,
        CHANNEL,
        *envelope_wire(envelope),
        *_clean([sort.subject, sort.from_, sort.to, sort.cc, sort.display_from, sort.display_to, threading]),
        *_clean([thread_keys, subject_key]),
    )


def _parse(raw: bytes) -> ParsedMessage:
    """parse_message, which must never raise; should it anyway, the message is still stored, unparsed."""
    try:
        return parse_message(raw)
    except Exception as exc:  # noqa: BLE001 - a parser bug must not lose (or bounce for days) a message
        log.warning("parse-failed size=%d error=%s: the message is stored unparsed", len(raw), type(exc).__name__)
        cut = raw.find(b"\r\n\r\n")
        return dataclasses.replace(parse_message(b""), header_end=len(raw) if cut < 0 else cut + 4)


def _prepare(raw: bytes, parsed: ParsedMessage | None) -> Prepared:
    parsed = parsed or _parse(raw)
    wire = wire_size(raw)
    return Prepared(parsed, hashlib.sha256(raw).digest(), wire, len(raw), _values(parsed, wire))


async def parse(raw: bytes) -> ParsedMessage:
    """Parse once, in a thread for large messages."""
    if len(raw) > _THREADED_PARSE:
        return await asyncio.to_thread(_parse, raw)
    return _parse(raw)


async def prepare(raw: bytes, parsed: ParsedMessage | None = None) -> Prepared:
    """Parse (unless ``parsed`` is given), hash and measure ``raw``, in one worker thread for large messages."""
    if len(raw) > _THREADED_PARSE:
        return await asyncio.to_thread(_prepare, raw, parsed)
    return _prepare(raw, parsed)


async def ingest(
    conn: asyncpg.Connection,
    raw: bytes | None,
    mailbox_ids: Sequence[int],
    *,
    flags: Sequence[str] = (),
    internal_date: datetime | None = None,
    parsed: ParsedMessage | None = None,
    prepared: Prepared | None = None,
    enforce: Enforce | None = None,
    claim_recent: bool = False,
    delivered: bool = False,
) -> list[StoredMessage]:
    """Store ``raw`` once and add it to each mailbox, in one transaction.

    Runs in the caller's transaction when it holds one, so a caller can
    commit the message together with other work (queueing, say).
    ``prepared`` (from :func:`prepare` on these very bytes) saves doing that
    again; with it, ``raw`` may be None when the caller has stored the blob
    already (:func:`put_blob_stream`), so the bytes need not be in memory.
    With ``enforce``, a copy that would take its owner past a quota limit is
    not stored: its mailbox goes to ``enforce.refused`` and the others are
    stored still. With ``claim_recent`` (an
    IMAP4rev1 session's APPEND to the mailbox it has selected), each copy is
    also claimed as \\Recent for the caller when no earlier message is
    waiting for its claim (``StoredMessage.recent``), saving the claim's own
    round trip and row lock. ``delivered``: the message came to the
    mailboxes' owners from outside (SMTP, the queue's local deliveries and
    bounces), not from the owner (APPEND, a Sent copy, an import); the
    change feed says so, and the API pushes deliveries only (api/push.py).
    """
    if prepared is None:
        if raw is None:
            raise ValueError("ingest needs the message's bytes or what prepare() made of them")
        prepared = await prepare(raw, parsed)
    digest = prepared.digest
    stored: list[StoredMessage] = []
    # A small blob goes in with the first copy, in one statement; a large one first, so the
    # mailbox row lock is not held while its bytes are written.
    inline = raw is not None and len(raw) <= BLOB_INLINE
    boxes = sorted(set(mailbox_ids))
    # One transaction: the caller's when it has one (no savepoint round trips), else our own, unless one
    # statement does it all (one mailbox, a small message): BEGIN and COMMIT would cost two round trips more.
    own = not conn.is_in_transaction() and not (inline and len(boxes) == 1)
    async with conn.transaction() if own else contextlib.nullcontext():
        blob_pending = inline
        if raw is not None and not blob_pending:
            await put_blob(conn, raw, digest)
        for mailbox_id in boxes:
            checked = enforce is not None and enforce.checks(mailbox_id)
            row = await conn.fetchrow(
                _INGEST[blob_pending, checked, claim_recent, delivered],
                mailbox_id,
                list(dict.fromkeys(flags)),
                internal_date,
                prepared.size,
                digest,
                *prepared.values,
                *((raw,) if blob_pending else ()),
                *((enforce.cfg.storage, enforce.cfg.messages) if enforce is not None and checked else ()),
            )
            blob_pending = False  # written by that statement, whatever became of its message
            if row is None:
                if enforce is None or not checked or not await _exists(conn, mailbox_id):
                    raise MailboxGone(f"mailbox {mailbox_id} does not exist")
                enforce.refused.append(mailbox_id)
                continue
            await threads.merge_linked(conn, row["user_id"], row["linked"])
            stored.append(
                StoredMessage(row["id"], row["user_id"], mailbox_id, row["uid"], row["modseq"], row["recent"])
            )
        if not stored and enforce is not None and enforce.refused and not inline:
            # No copy refers to the blob this may have written: the sweep looks at it (store/mailboxes.py).
            # (A blob written with a copy was noted by that statement.)
            await conn.execute("INSERT INTO blob_orphans (hash) VALUES ($1)", digest)
    return stored


async def _exists(conn: asyncpg.Connection, mailbox_id: int) -> bool:
    found: bool = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM mailboxes WHERE id = $1)", mailbox_id)
    return found


async def index_pending(conn: asyncpg.Connection, limit: int = 50) -> int:
    """Index the text of messages stored since the last run (message_texts, message_words); returns how many.

    Copies of one message share a blob, so each blob is read and parsed once.
    Rows are claimed with SKIP LOCKED, so several indexers never do the same
    work. The batch costs three round trips (claim, blobs, one statement over
    ``unnest``) whatever its size; nearly all the time is PostgreSQL's
    (``to_tsvector``, trigram extraction and the three GIN indexes), so the
    Python side only parses.
    """
    async with conn.transaction():
        rows = await conn.fetch(
            """SELECT m.id, m.blob_hash FROM messages m WHERE NOT m.text_indexed
                ORDER BY m.id LIMIT $1 FOR UPDATE SKIP LOCKED""",
            limit,
        )
        if not rows:
            return 0
        by_blob: dict[bytes, list[int]] = {}
        for r in rows:
            by_blob.setdefault(bytes(r["blob_hash"]), []).append(r["id"])
        data = {
            bytes(b["hash"]): bytes(b["data"])
            for b in await conn.fetch("SELECT hash, data FROM blobs WHERE hash = ANY($1::bytea[])", list(by_blob))
        }
        ids: list[int] = []
        heads: list[str] = []
        bodies: list[str] = []
        for digest, copies in by_blob.items():
            raw = data.get(digest, b"")
            head, body = search_texts(raw, await parse(raw))
            head, body = _clean(head), _clean(body)
            for message_id in copies:
                ids.append(message_id)
                heads.append(head)
                bodies.append(body)
        # The text and its words go in tables of their own (migrations 0032, 0033), written this once: a
        # flag change, which makes a new version of the message's row, does not index them again.
        await conn.execute(
            """WITH u AS (SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u (id, head, body)),
                    marked AS (UPDATE messages m SET text_indexed = true FROM u WHERE m.id = u.id
                               RETURNING m.id, relate_head_words(m.subject, m.from_addr, m.to_addr, m.cc_addr)
                                               || to_tsvector('simple', u.body) AS words),
                    words AS (INSERT INTO message_words (message_id, words) SELECT id, words FROM marked
                                  ON CONFLICT (message_id) DO UPDATE SET words = excluded.words)
               INSERT INTO message_texts (message_id, head, body) SELECT id, head, body FROM u
                   ON CONFLICT (message_id) DO UPDATE SET head = excluded.head, body = excluded.body""",
            ids,
            heads,
            bodies,
        )
    return len(rows)


def search_texts(raw: bytes, parsed: ParsedMessage) -> tuple[str, str]:
    """(header text, body text), lower-cased, as substring search sees a message.

    The header text is the raw header block plus the decoded subject and
    addresses (so encoded words are found); the body text is the decoded
    text of the body parts. IMAP's TEXT key searches both, BODY the second.
    """
    header = raw[: parsed.header_end].decode("utf-8", "replace")
    people = " ".join(f"{a.name or ''} {a.email}" for a in (*parsed.from_, *parsed.to, *parsed.cc, *parsed.bcc))
    head = f"{header}\n{parsed.subject or ''}\n{people}".lower()
    return head[:_SEARCH_TEXT_LIMIT], parsed.text[:_SEARCH_TEXT_LIMIT].lower()


async def put_blob(conn: asyncpg.Connection, raw: bytes, digest: bytes | None = None) -> bytes:
    """Store ``raw`` once under its SHA-256; returns the hash."""
    if len(raw) <= BLOB_INLINE:
        digest = digest or hashlib.sha256(raw).digest()
        await conn.execute(
            "INSERT INTO blobs (hash, size, data) VALUES ($1, $2, $3) ON CONFLICT (hash) DO NOTHING",
            digest,
            len(raw),
            raw,
        )
        return digest
    if digest is None:
        digest = await asyncio.to_thread(lambda: hashlib.sha256(raw).digest())
    await put_blob_stream(conn, digest, len(raw), _views(raw))
    return digest


async def _views(raw: bytes) -> AsyncIterator[memoryview]:
    view = memoryview(raw)
    for start in range(0, len(view), _COPY_CHUNK):
        yield view[start : start + _COPY_CHUNK]


async def put_blob_stream(
    conn: asyncpg.Connection, digest: bytes, size: int, chunks: AsyncIterable[bytes | memoryview]
) -> None:
    """Store a blob of ``size`` bytes, given as ``chunks``, under ``digest``, unless it is there already.

    The bytes go by binary COPY, so neither side holds them whole in a send
    buffer. COPY has no ON CONFLICT: the blob is looked for first, under the
    same table lock an INSERT takes (which keeps the sweep off it until commit,
    see store.mailboxes.sweep_blobs), and a writer of the same bytes that gets
    there first meanwhile is not an error (the COPY runs in a savepoint).
    """
    async with contextlib.nullcontext() if conn.is_in_transaction() else conn.transaction():
        await conn.execute("LOCK TABLE blobs IN ROW EXCLUSIVE MODE")
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM blobs WHERE hash = $1)", digest):
            return
        try:
            async with conn.transaction():
                await conn.copy_to_table(
                    "blobs",
                    source=_copy_rows(digest, size, chunks),
                    columns=["hash", "size", "data"],
                    format="binary",
                )
        except asyncpg.UniqueViolationError:
            pass  # the same bytes, committed by someone else while we sent ours


async def _copy_rows(
    digest: bytes, size: int, chunks: AsyncIterable[bytes | memoryview]
) -> AsyncIterator[bytes | memoryview]:
    """One row (hash, size, data) in PostgreSQL's binary COPY format, the data streamed from ``chunks``."""
    # Tuple: field count, then each field as a 32-bit length and its bytes (bytea raw, bigint 8 bytes).
    yield _COPY_HEADER + struct.pack("!hi", 3, len(digest)) + digest + struct.pack("!iqi", 8, size, size)
    sent = 0
    async for chunk in chunks:
        sent += len(chunk)
        yield chunk
    if sent != size:
        raise ValueError(f"blob of {size} bytes announced, {sent} given")
    yield _COPY_TRAILER


async def raw_bytes(conn: Queryable, message_id: int) -> bytes | None:
    """The stored bytes of one message, exactly as they were received."""
    data: bytes | None = await conn.fetchval(
        "SELECT b.data FROM messages m JOIN blobs b ON b.hash = m.blob_hash WHERE m.id = $1", message_id
    )
    return data
