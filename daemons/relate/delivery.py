"""The one delivery transaction every path uses: start, add recipients, body, commit or abort.

Inbound MX, SMTP submission, the REST send path and the queue all deliver
through :class:`Delivery`. Nothing is durable before :meth:`commit`:
adding recipients only looks them up. ``commit`` runs one PostgreSQL
transaction that stores the local copies (with ``Return-Path``, RFC 5321
§4.4, as final delivery requires), the sender's Sent copy, and the queue
entry for remote recipients; it returns only after that transaction has
committed, so a caller may acknowledge the message (250, 201) as soon as it
returns. Any failure raises and leaves nothing behind.

The REST send path passes ``record`` (a :class:`relate.store.drafts.Sent`):
then the outbound row lists every recipient, local ones as delivered, so
the sender can follow each one; the draft it came from (locked first, so a
draft is sent once) becomes that row and its Drafts copy goes, all in the
same transaction. It may also pass ``sent_copy``, the bytes the Sent folder
keeps when they differ from what recipients get (the Bcc header).

Memory: the message may come as bytes or as a :class:`relate.mail.spool.Spool`
(SMTP spools large messages to disk while they arrive). Only parsing needs a
copy whole in memory, so that is done first, before any database connection
is taken, one copy at a time, each let go before the next is made: the local
copy (with ``Return-Path:`` and the trace), then the Sent copy; the copy that
travels on is only hashed, a chunk at a time. The caller's ``hold`` (a memory
budget) is entered around each of those steps. Then, in the transaction, a
large blob goes from the spool to PostgreSQL a chunk at a time. So a commit
holds at most one copy plus what the parser needs, and only while it parses.

Recipients are resolved when added: an address or alias of a local user
delivers to that user's INBOX (once per user, however many of their
addresses were named); any address at a domain we do not host is remote; an
unknown address at a hosted domain is refused. Which of these a caller may
accept (an MX never accepts remote ones) is the caller's policy.

Filters: each local recipient's active Sieve script (if ``sieve.enabled``) decides where its copy
is filed, in the commit's transaction (relate/sieve/filing.py says how, and what a failing script
does). In a shared transaction (store/group_commit.py) the group has locked the INBOXes only; a
copy filed into another mailbox locks that one after them, so two transactions can deadlock when
each files one user's message into INBOX and a folder: PostgreSQL then fails one, and the group
runs each of its deliveries alone, as it does after any failure.

Quota (given ``quota``, the configured defaults; the rules are store/quota.py's):
before anything is parsed, local recipients with a limit are judged with the
message's size (:func:`relate.store.quota.verdicts`); the copy for each one
found with room is then stored only if it still fits, checked in the very
statement that stores it. What becomes of the others depends on who sends:

- An authenticated sender (submission, the REST send path): the copy waits in
  the outbound queue, where the delivery daemon delivers it once there is
  room, or bounces it by the same rules (deferred, then a DSN); the sender's
  own mail to everyone else goes at once. The sender's Sent copy is stored
  only if it fits the sender's quota: a message to others is never held back
  for want of room for the sender's record of it. When it does not fit,
  ``Committed.sent_copy`` is None and ``sent_over_quota`` says why.
- No sender (MX): SMTP has one reply for all recipients of DATA. When none of
  the local recipients has room, the commit raises :class:`MailboxFull`
  (452 4.2.2, or 552 5.2.2 when every one is refused for good) and stores
  nothing. When some have room, the message is stored for all of them: those
  it takes over a limit are over by this one message, and are full for the
  next one (refused at RCPT). Refusing all would hold the others' mail
  hostage to one full mailbox, and delivering to some while answering 250
  would lose the rest. An MX that declares the size (RFC 1870 SIZE=) gets
  the per-recipient answer at RCPT instead, where there is one reply per
  recipient.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from relate.config import QuotaConfig, SieveConfig
from relate.errors import Invalid, OverQuota
from relate.mail.address import split_address
from relate.mail.mime import ParsedMessage
from relate.mail.spool import Spool
from relate.sieve import filing
from relate.store import accounts, drafts, messages, outbound, quota
from relate.store.group_commit import CommitGroup
from relate.store.messages import StoredMessage
from relate.store.quota import Verdict
from relate.store.sieve import ActiveScript

log = logging.getLogger("relate.delivery")


class Kind(enum.Enum):
    LOCAL = "local"
    REMOTE = "remote"
    UNKNOWN = "unknown"  # at a hosted domain, but no such address


@dataclass(frozen=True)
class Recipient:
    address: str
    kind: Kind
    user_id: int | None = None
    inbox_id: int | None = None
    # The local user's own quota limits (users.quota_*: None follows the configured default), and their
    # usage as read with the lookup when a limit applied then (store/quota.py).
    quota_storage: int | None = None
    quota_messages: int | None = None
    usage: quota.Usage | None = None
    # Whether the user had an active Sieve script when looked up; None: not known (delivery asks).
    filtered: bool | None = None

    def limits(self, cfg: QuotaConfig) -> quota.Limits:
        return quota.Limits.of(self.quota_storage, self.quota_messages, cfg)


class MailboxFull(OverQuota):
    """No local recipient of a message without a sender (MX) has room for it: nothing was stored."""

    def __init__(self, *, permanent: bool) -> None:
        super().__init__("mailbox full")
        self.permanent = permanent  # every one is refused for good (552 5.2.2), not for now (452 4.2.2)


@dataclass(frozen=True)
class Sender:
    """The authenticated user a submission comes from."""

    user_id: int
    address: str


@dataclass
class Committed:
    local: list[StoredMessage] = field(default_factory=list)
    sent_copy: StoredMessage | None = None
    outbound_id: int | None = None
    parsed: ParsedMessage | None = None
    waiting: list[str] = field(default_factory=list)  # local recipients queued for want of room (quota)
    sent_over_quota: bool = False  # no Sent copy: it did not fit the sender's quota


def local_recipient(address: str, row: Mapping[str, Any], cfg: QuotaConfig | None = None) -> Recipient:
    """A local Recipient from a store.accounts row (user_id, inbox_id, quota_storage, quota_messages, and
    the usage recipient_target reads when a limit applies)."""
    usage = quota.read_usage(row["user_id"], row, cfg or QuotaConfig())
    return Recipient(
        address,
        Kind.LOCAL,
        row["user_id"],
        row["inbox_id"],
        row.get("quota_storage"),
        row.get("quota_messages"),
        usage,
        row.get("filtered"),
    )


async def classify(pool: asyncpg.Pool, address: str, limits: QuotaConfig | None = None) -> Recipient:
    """Resolve a normalized address (``local@domain``, lower-case); with ``limits`` (the configured quota
    defaults), a local user's quota usage comes with it, read in the same query, when a limit applies."""
    try:
        _, domain = split_address(address)
    except Invalid:  # as before: such an address is local if some user has it, else the error stands
        found = await accounts.resolve_recipient(pool, address)
        if found is None:
            raise
        return local_recipient(address, found)
    defaults = (limits.storage, limits.messages) if limits is not None else (0, 0)
    target = await accounts.recipient_target(pool, address, domain, defaults)  # one query, whatever the answer
    if target["user_id"] is not None:
        return local_recipient(address, target, limits)
    return Recipient(address, Kind.UNKNOWN if target["hosted"] else Kind.REMOTE)


async def admit(pool: asyncpg.Pool, recipient: Recipient, size: int, cfg: QuotaConfig) -> Verdict:
    """Whether a local recipient can take a message of ``size`` bytes (0: not known yet) now, by its
    quota (store/quota.py). No query for a user without limits, nor for one whose usage came with the
    lookup (but the write that starts or stops the full-since clock, when it does)."""
    if recipient.user_id is None or recipient.limits(cfg).unlimited:
        return Verdict.FITS
    found = await _judge(pool, [recipient], {recipient.user_id: size}, cfg)
    return found.get(recipient.user_id, Verdict.FITS)


async def _judge(
    pool: asyncpg.Pool, recipients: Sequence[Recipient], sizes: dict[int, int], cfg: QuotaConfig
) -> dict[int, Verdict]:
    """:func:`relate.store.quota.settle` by user id: from the usage the recipients carry, the others' read now."""
    known = {r.user_id: r.usage for r in recipients if r.user_id is not None and r.usage is not None}
    now = datetime.now(UTC)
    missing = [uid for uid in sizes if uid not in known]
    if missing:
        known.update(await quota.usage(pool, missing, cfg))
    found = await quota.settle(pool, known, sizes, cfg, now)
    return {uid: verdict for uid, (verdict, _) in found.items()}


class Delivery:
    def __init__(
        self,
        pool: asyncpg.Pool,
        mail_from: str,
        *,
        sender: Sender | None = None,
        quota: QuotaConfig | None = None,
        group: CommitGroup | None = None,
        sieve: SieveConfig | None = None,
    ) -> None:
        self._pool = pool
        self.sieve = sieve or SieveConfig()  # users' filters (relate/sieve/filing.py): on unless configured off
        self._group = group  # see commit()
        self.mail_from = mail_from
        self.sender = sender
        self.quota = quota  # None: no quota is checked (see the module docstring)
        self.recipients: list[Recipient] = []
        # MX: the user a bounce to an SRS address (relate/sieve/srs.py) is queued as, to its remote original
        # sender; None: remote recipients need a sender.
        self.bounce_owner: int | None = None

    def add(self, recipient: Recipient) -> None:
        if recipient.kind is Kind.UNKNOWN:
            raise ValueError(f"{recipient.address} does not exist")
        self.recipients.append(recipient)

    @property
    def remote(self) -> list[str]:
        return list(dict.fromkeys(r.address for r in self.recipients if r.kind is Kind.REMOTE))

    @property
    def inboxes(self) -> list[int]:
        return list(dict.fromkeys(r.inbox_id for r in self.recipients if r.inbox_id is not None))

    async def commit(
        self,
        message: bytes | Spool,
        *,
        trace: bytes = b"",
        sent_copy: bytes | None = None,
        record: drafts.Sent | None = None,
        hold: Hold | None = None,
        results: bytes = b"",
    ) -> Committed:
        """Store and queue ``message`` in one transaction; returns once it is committed.

        ``trace`` (the ``Received:`` header of this hop) is prepended to every
        copy that travels on or is delivered; the Sent copy keeps the message
        exactly as the user submitted it (or ``sent_copy``, when given).
        ``results`` (an ``Authentication-Results:`` field, relate.mailauth)
        goes above the trace in the local copies only.
        ``hold(size)`` is entered around each step that has a copy of ``size``
        bytes in memory (a memory budget, see relate.runtime.budget); nothing
        else of the commit holds more than a chunk of the message.
        """
        result = Committed()
        inboxes = self.inboxes
        remote = self.remote
        if (record is not None or (remote and self.bounce_owner is None)) and self.sender is None:
            raise PermissionError("remote recipients need an authenticated sender")
        body = message if isinstance(message, Spool) else Spool.of(message)
        hold = hold or _no_hold
        return_path = b"Return-Path: <" + self.mail_from.encode("utf-8", "surrogateescape") + b">\r\n"
        # Quota first, before any work on the message: which local copies are tried, which wait.
        local_prefix = return_path + results + trace
        checked, waiting = await self._plan(len(local_prefix) + body.size) if inboxes else (set(), {})
        inboxes = [i for i in inboxes if i not in waiting]
        # Then, with no database connection held: parse and hash each copy (the only steps that need it in
        # memory), one at a time.
        local = await _Copy.prepare(body, local_prefix, hold) if inboxes else None
        sent = None
        if self.sender is not None:
            sent = await _Copy.prepare(body if sent_copy is None else Spool.of(sent_copy), b"", hold)
        queued = await _Copy.hashed(body, trace, hold) if remote or waiting else None
        first = local or sent
        parsed = first.prepared.parsed if first is not None and first.prepared is not None else None
        result.parsed = parsed
        if self._group is not None and self.sender is None and local is not None and local.raw is not None:
            # Local copies only, small enough to be in memory already (an MX delivery, nearly always):
            # stored in a transaction shared with the deliveries arriving with it (store/group_commit.py).
            # The work may run twice, so it changes nothing but the database (waiting stays empty: MX).
            copy = local
            result.local = await self._group.run(
                inboxes, lambda conn: self._store_local(conn, copy, inboxes, checked, waiting)
            )
            return result
        # Else one transaction of its own; large blobs go from the spool to PostgreSQL a chunk at a time.
        async with self._pool.acquire() as conn, conn.transaction():
            draft_copy = None
            if record is not None and record.email_id is not None:
                # First, so a draft sent twice at once is delivered once: the second waits here, then fails.
                assert self.sender is not None
                taken = await drafts.take_for_sending(conn, self.sender.user_id, record.email_id, record.version)
                draft_copy = taken["draft_message_id"]
            if local is not None:
                result.local = await self._store_local(conn, local, inboxes, checked, waiting)
            if sent is not None:
                assert self.sender is not None
                folder = await accounts.special_mailbox(conn, self.sender.user_id, "\\Sent")
                if folder is not None:
                    enforce = messages.Enforce(self.quota) if self.quota is not None else None
                    copies = await sent.store(conn, [folder], flags=["\\Seen"], enforce=enforce)
                    result.sent_copy = copies[0] if copies else None
                    result.sent_over_quota = not copies
                    if not copies:
                        log.info("quota-sent-copy-skipped user=%d (the Sent copy does not fit)", self.sender.user_id)
            result.waiting = [r.address for r in waiting.values()]
            if waiting and queued is None:  # a copy found no room after all (a race): it waits, hashed now
                queued = await _Copy.hashed(body, trace, hold)
            blob = await queued.store_blob(conn) if queued is not None else None
            if record is not None:
                if waiting:
                    late = {r.address for r in waiting.values()}
                    record = dataclasses.replace(
                        record,
                        recipients=[
                            dataclasses.replace(r, local=False) if r.address in late else r for r in record.recipients
                        ],
                    )
                result.outbound_id = await drafts.record_sent(
                    conn,
                    record,
                    blob_hash=blob,
                    sent_message_id=result.sent_copy.id if result.sent_copy else None,
                    draft_message_id=draft_copy,
                )
            elif remote or waiting:
                assert blob is not None
                owner = self.sender.user_id if self.sender is not None else self.bounce_owner
                assert owner is not None
                result.outbound_id = await outbound.queue_message(
                    conn,
                    user_id=owner,
                    from_address=self.sender.address if self.sender is not None else self.mail_from,
                    mail_from=self.mail_from,
                    subject=parsed.subject if parsed is not None else None,
                    message_id=parsed.message_id if parsed is not None else None,
                    blob_hash=blob,
                    recipients=[*remote, *result.waiting],
                )
        for address in result.waiting:
            log.info("quota-queued rcpt=%s (mailbox full: the delivery daemon retries)", address)
        return result

    async def _plan(self, size: int) -> tuple[set[int], dict[int, Recipient]]:
        """Quota for the local copies (module docstring): (INBOXes whose copy is stored only if it still
        fits, INBOXes whose copy waits in the queue with the recipient it is for); raises MailboxFull."""
        if self.quota is None:
            return set(), {}
        cfg = self.quota
        limited: dict[int, Recipient] = {}
        for r in self.recipients:
            if r.inbox_id is not None and r.user_id is not None and not r.limits(cfg).unlimited:
                limited.setdefault(r.inbox_id, r)
        if not limited:
            return set(), {}
        sizes = {r.user_id: size for r in limited.values() if r.user_id is not None}
        found = await _judge(self._pool, list(limited.values()), sizes, cfg)
        verdict = {inbox: found.get(r.user_id or 0, Verdict.FITS) for inbox, r in limited.items()}
        checked = {inbox for inbox, v in verdict.items() if v is Verdict.FITS}
        refused = {inbox: limited[inbox] for inbox, v in verdict.items() if v is not Verdict.FITS}
        if self.sender is not None:
            return checked, refused
        if refused and len(refused) == len(self.inboxes):
            raise MailboxFull(permanent=all(verdict[i] is Verdict.NEVER for i in refused))
        for r in refused.values():
            log.info("quota-grace rcpt=%s (over its quota by this message; other recipients have room)", r.address)
        return checked, {}

    async def _store_local(
        self,
        conn: asyncpg.Connection,
        local: _Copy,
        inboxes: list[int],
        checked: set[int],
        waiting: dict[int, Recipient],
    ) -> list[StoredMessage]:
        """The local copies; one that was found with room but has none now (a race) waits too (with a
        sender) or is stored as the grace copy (MX, others stored), else MailboxFull (MX, alone).
        A recipient with an active Sieve script has its copy filed by it (relate/sieve/filing.py)."""
        enforce = messages.Enforce(self.quota, checked) if self.quota is not None and checked else None
        filtered = await self._scripts(conn, inboxes)
        plain = [inbox for inbox in inboxes if inbox not in filtered]
        stored = await local.store(conn, plain, enforce=enforce, delivered=True) if plain else []
        for inbox, (recipient, script) in filtered.items():

            async def store_copy(
                box: int, flags: tuple[str, ...], box_enforce: messages.Enforce | None
            ) -> list[StoredMessage]:
                return await local.store(conn, [box], flags=flags, enforce=box_enforce, delivered=True)

            filed = await filing.deliver(
                conn,
                self.sieve,
                script,
                await local.read(),
                local.digest,
                store_copy,
                inbox_id=inbox,
                rcpt=recipient.address,
                mail_from=self.mail_from,
                quota=self.quota if enforce is not None and inbox in checked else None,
                mailbox_limit=self.quota.mailboxes if self.quota is not None else 0,
            )
            stored += filed.stored
            if filed.refused and enforce is not None:
                enforce.refused.append(inbox)
        if enforce is None or not enforce.refused:
            return stored
        if self.sender is not None:
            for inbox in enforce.refused:
                waiting[inbox] = next(r for r in self.recipients if r.inbox_id == inbox)
            return stored
        if len(inboxes) == 1:
            raise MailboxFull(permanent=False)
        return stored + await local.store(conn, enforce.refused, delivered=True)

    async def _scripts(self, conn: asyncpg.Connection, inboxes: list[int]) -> dict[int, tuple[Recipient, ActiveScript]]:
        """The active Sieve script of each local recipient that has one, by INBOX (one query)."""
        if not inboxes or not self.sieve.enabled:
            return {}
        owners = {
            r.inbox_id: r
            for r in self.recipients
            if r.inbox_id in inboxes and r.user_id is not None and r.filtered is not False
        }
        if not owners:
            return {}  # nobody here had a script when their address was looked up: no query
        found = await filing.active(conn, [r.user_id for r in owners.values() if r.user_id is not None])
        return {inbox: (r, found[r.user_id]) for inbox, r in owners.items() if r.user_id in found}


Hold = Callable[[int], AbstractAsyncContextManager[object]]


@asynccontextmanager
async def _no_hold(_size: int) -> AsyncIterator[None]:
    yield


@dataclass
class _Copy:
    """One copy of the message: ``prefix`` + the spool's content, prepared for storing."""

    body: Spool
    prefix: bytes
    size: int
    digest: bytes
    prepared: messages.Prepared | None = None  # parsed too (a copy for mailboxes)
    raw: bytes | None = None  # kept when small enough to go in with the first message row

    @classmethod
    async def prepare(cls, body: Spool, prefix: bytes, hold: Hold) -> _Copy:
        size = len(prefix) + body.size
        async with hold(size):
            raw = await body.read(prefix)
            prepared = await messages.prepare(raw)
        return cls(body, prefix, size, prepared.digest, prepared, raw if size <= messages.BLOB_INLINE else None)

    @classmethod
    async def hashed(cls, body: Spool, prefix: bytes, hold: Hold) -> _Copy:
        size = len(prefix) + body.size
        if size <= messages.BLOB_INLINE:
            async with hold(size):
                raw = await body.read(prefix)
            return cls(body, prefix, size, hashlib.sha256(raw).digest(), raw=raw)
        return cls(body, prefix, size, await body.sha256(prefix))

    async def read(self) -> bytes:
        """The copy's bytes (read back from the spool when too large to have been kept)."""
        return self.raw if self.raw is not None else await self.body.read(self.prefix)

    async def store_blob(self, conn: asyncpg.Connection) -> bytes:
        if self.raw is not None:
            return await messages.put_blob(conn, self.raw, self.digest)
        await messages.put_blob_stream(conn, self.digest, self.size, self.body.chunks(self.prefix))
        return self.digest

    async def store(
        self,
        conn: asyncpg.Connection,
        mailbox_ids: list[int],
        *,
        flags: Sequence[str] = (),
        enforce: messages.Enforce | None = None,
        delivered: bool = False,
    ) -> list[StoredMessage]:
        assert self.prepared is not None
        if self.raw is None:
            await self.store_blob(conn)
        return await messages.ingest(
            conn, self.raw, mailbox_ids, flags=flags, prepared=self.prepared, enforce=enforce, delivered=delivered
        )
