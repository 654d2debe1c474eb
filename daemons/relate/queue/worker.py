"""The delivery loop: claim due recipients, deliver them by domain, record outcomes, bounce failures.

Retry policy: a deferred recipient is tried again after ``retry_first``
seconds (60), doubling with ±10% jitter up to ``retry_max`` (1 hour), until
its message is ``max_age`` old (5 days); then it fails with 4.4.7 and the
sender gets a DSN. Senders hear once, after ``delay_warning`` (4 hours),
that a message is still waiting. Only recipients still deferred are retried.

Crash policy: a crash repeats at most what was on the wire. Each SMTP
transaction's outcome is committed as soon as its reply is in (concurrent
connections share one commit), and a connection sends the next message's
DATA only once the previous outcome is committed, so a kill -9 leaves at most
one sent-but-unrecorded message per connection (``max_connections`` in all).
Claims are leases of ``lease_seconds`` (60), renewed every third of that
while the pass works; a worker whose lease was not renewed for 5/6 of
``lease_seconds``, or whose rows another daemon took over, stops sending
them. What a pass claimed but did not get to (stopping, lease trouble) is
handed back at once. A crashed daemon's rows are claimable when their lease
ends, and an idle loop wakes at that moment (or the next retry), not only
every ``poll_seconds``. A failure and its DSN are exactly once: the failure
is recorded with ``dsn_due``, and the DSN goes into the sender's INBOX in the
transaction that clears it (one DSN per message for all its failures of a
pass); delay warnings likewise with ``delay_warned_at``.

Memory: a message's bytes are read from the database just before it is
sent, a few at a time within ``read_ahead_bytes`` per connection, and
dropped once its transaction is over; DKIM signatures (small) are kept per
pass, so a message going to several domains is signed once.

When the queue is idle (and at least every ``BACKGROUND_SECONDS`` when it
never is), the loop also adds the body text of newly stored messages to
their full-text vectors (see ``store.messages.index_pending``; new mail
does not wake it: indexing during an ingest burst took ~0.9 ms of PostgreSQL
CPU per message from the deliveries, bench/smtp_ingest.py), gives mail
stored before migration 0042 its thread (``store.threads.thread_pending``),
every
``BLOB_SWEEP_SECONDS`` deletes the raw messages that have had no reference
for ``BLOB_GRACE`` (see ``store.mailboxes.sweep_blobs``), batch after batch
while there are more, adds its TLS tally to the database, and every
``REPORT_SECONDS`` queues the TLS-RPT reports due (relate.queue.tlsrpt), and
looks up the records of pending DKIM keys (each at most every
``DKIM_CHECK_SECONDS``): one that is published starts signing. Every
``MTA_STS_REFRESH_SECONDS`` it starts a refresh of the cached MTA-STS
policies due for one (relate.queue.mtasts) in a task of its own, so that a
slow policy server never holds up deliveries.

Each pass also queues the vacation replies, reject/ereject DSNs and
redirects (with SRS) users' Sieve scripts asked for at delivery
(relate.sieve.vacation, relate.sieve.refuse, relate.sieve.redirect), woken
by the ``relate_queue`` NOTIFY the delivery sends.

Recipients at hosted domains are delivered locally through the ingest path,
without SMTP, each in the transaction that records it. What the queue stores
(those copies, and DSNs in a sender's INBOX) is announced as the SMTP daemon
announces mail, by the change feed at commit, as a delivery (store/messages.py
``delivered``): relate-api turns it into the hub's NewEmail and a web push to
the owner's devices (api/push.py), whoever ran the queue (this daemon or
``relatectl queue fail``). Remote ones are
grouped by domain, at most ``max_connections_per_domain`` connections per
domain and ``max_connections`` in all. The loop wakes on the change feed's
``relate_queue`` channel (and after the feed was down, when it may have missed
one) and otherwise polls every ``poll_seconds``. Time comes from an injectable
clock, so tests can age the queue.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import aiosmtplib
import asyncpg

from relate.config import Config
from relate.mail import dkim
from relate.mail.address import split_address
from relate.mail.mime import parse_message
from relate.mailauth.dns import Dns
from relate.queue import bounce, tlsrpt
from relate.queue.client import DomainSender, Message, Result, off_loop, wire_form
from relate.queue.mtasts import MtaSts
from relate.queue.mx import make_resolver
from relate.queue.tlsrpt import TlsTally
from relate.runtime import metrics
from relate.services import dns as dns_service
from relate.sieve import filing, redirect, refuse, vacation
from relate.store import accounts, db, mailboxes, messages, quota, threads
from relate.store import dkim as dkim_store
from relate.store import queue as store
from relate.store.changes import QUEUE_CHANNEL, ChangeFeed, QueueChange
from relate.store.queue import Claimed, Failed, Notice, Outcome

log = logging.getLogger("relate.delivery")

# What sending to one domain may fail with, for want of the database or of the remote end: deferred.
_SEND_ERRORS: tuple[type[BaseException], ...] = (*db.ERRORS, aiosmtplib.SMTPException)

Clock = Callable[[], datetime]

# Raw messages are deleted this long after their last reference went, by a sweep this often.
BLOB_GRACE = timedelta(minutes=5)
BLOB_SWEEP_SECONDS = 60.0
# How often the loop looks for TLS-RPT reports to send (the days before today's, relate.queue.tlsrpt).
REPORT_SECONDS = 300.0
# How often the loop starts a proactive refresh of cached MTA-STS policies (relate.queue.mtasts).
MTA_STS_REFRESH_SECONDS = 3600.0
# A queue that is never idle still leaves a turn for indexing and sweeping this often.
BACKGROUND_SECONDS = 1.0
# A claim may be sent for this share of lease_seconds after its last renewal; the rest is margin for the
# transaction under way and for clock differences between hosts.
LEASE_USABLE = 5 / 6
# A domain's messages of one pass take one connection per this many (up to max_connections_per_domain).
MESSAGES_PER_SPLIT = 20
# Outcomes arriving within this long of each other share one commit.
GROUP_COMMIT_WINDOW = 0.002
# DSNs and delay warnings quote the original header, read up to this many bytes.
DSN_HEADER_BYTES = 256 * 1024
# DSNs made per query; more are made in the next turn of the loop.
DSN_BATCH = 100
# Errors of the database connection: a pass that meets one leaves its work to the lease.


class RecordFailed(Exception):
    """Outcomes could not be committed before the lease ran out: the pass stops sending."""


class _NotOurs(Exception):
    """A local copy was stored but its recipient's outcome could not be recorded (lease lost): roll it back."""


def _mailbox_full(recipient_id: int, verdict: quota.Verdict) -> Result:
    """A local recipient's quota refusal (store/quota.py): deferred for now, or failed for good."""
    if verdict is quota.Verdict.NEVER:
        return Result(recipient_id, "failed", "5.2.2", "552 5.2.2 mailbox full", None)
    return Result(recipient_id, "deferred", "4.2.2", "452 4.2.2 mailbox full, will retry", None)


def utcnow() -> datetime:
    return datetime.now(UTC)


def next_attempt(now: datetime, attempts: int, first: float, cap: float, rng: random.Random) -> datetime:
    """``first`` seconds after the first try, doubling per attempt up to ``cap``, ±10% jitter."""
    delay = min(first * (2 ** max(attempts - 1, 0)), cap)
    return now + timedelta(seconds=delay * rng.uniform(0.9, 1.1))


class _Claim:
    """What one pass claimed: its lease token, the rows it still holds, until when it may send (loop time)."""

    def __init__(self, owner: uuid.UUID, items: list[Claimed], valid_until: float) -> None:
        self.owner = owner
        self.items = {c.recipient_id: c for c in items}
        self.held = set(self.items)
        self.valid_until = valid_until


class _Pass:
    """One pass's :class:`relate.queue.client.Outbox`: lease checks, message bytes, group-committed outcomes."""

    def __init__(self, worker: DeliveryWorker, claim: _Claim) -> None:
        self.worker = worker
        self.claim = claim
        self.blob_of = {c.email_id: c.blob_hash for c in claim.items.values()}
        self.signatures: dict[int, bytes] = {}  # DKIM-Signature header by message, b"" when unsigned
        self.keys: dict[str, dkim.DkimKey | None] = {}  # signing keys by From domain
        self._waiting: list[tuple[list[Result], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._expired_logged = False

    def usable(self) -> bool:
        if self.worker._stopping:
            return False
        if asyncio.get_running_loop().time() < self.claim.valid_until:
            return True
        if not self._expired_logged:
            self._expired_logged = True
            log.warning(
                "delivery-lease-expired rcpts=%d (not renewed in time; stops sending them)", len(self.claim.held)
            )
        return False

    def keep(self, message: Message) -> bool:
        message.recipients = [(rid, a) for rid, a in message.recipients if rid in self.claim.held]
        return bool(message.recipients) and self.usable()

    async def load(self, batch: Sequence[Message]) -> None:
        async with self.worker.pool.acquire() as conn:
            data = await store.blobs(conn, [self.blob_of[m.email_id] for m in batch])
        for message in batch:
            raw = data.get(self.blob_of[message.email_id])
            if raw is not None:
                message.data = await self.outgoing(message.email_id, raw)

    async def outgoing(self, email_id: int, raw: bytes) -> bytes:
        """The wire form of a stored message, with its DKIM signature when its From domain has a key."""
        wire = await off_loop(len(raw), wire_form, raw)
        signature = self.signatures.get(email_id)
        if signature is None:
            signature = self.signatures[email_id] = await self.worker._signature(wire, self.keys)
        if not signature:
            return wire
        return await off_loop(len(wire), bytes.__add__, signature, wire)

    async def done(self, results: Sequence[Result]) -> None:
        """Commit with whatever other connections are recording at the same moment (one transaction)."""
        if not results:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append((list(results), waiter))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        await waiter

    async def _flush(self) -> None:
        while self._waiting:
            # Connections wait for this commit only at their next final dot, so a short wait for
            # more results costs them little and saves statements (and NOTIFYs) per message.
            await asyncio.sleep(GROUP_COMMIT_WINDOW)
            batch, self._waiting = self._waiting, []
            error: BaseException | None = None
            try:
                await self.worker._record(self.claim, [r for results, _ in batch for r in results])
            except Exception as exc:  # noqa: BLE001 - whatever it is, the senders waiting on it must hear
                error = exc
            for _, waiter in batch:
                if waiter.done():
                    continue
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)


class DeliveryWorker:
    def __init__(
        self,
        cfg: Config,
        pool: asyncpg.Pool,
        *,
        clock: Clock = utcnow,
        blob_grace: timedelta = BLOB_GRACE,
        feed: ChangeFeed | None = None,
    ) -> None:
        self.cfg = cfg
        self.pool = pool
        self.clock = clock
        self.blob_grace = blob_grace
        self._next_sweep = 0.0  # loop.time() of the next blob sweep
        self._background_due = 0.0  # loop.time() by which background work gets a turn, busy or not
        resolver = make_resolver(cfg.delivery)
        mta_sts = MtaSts(cfg.delivery, pool, resolver, clock) if cfg.delivery.mta_sts else None
        self.tls_tally = TlsTally(clock)
        self._dns = Dns(resolver)
        self._next_reports = 0.0  # loop.time() of the next look for TLS reports to send
        self._next_dkim_check = 0.0  # loop.time() of the next look for pending DKIM keys (services.dns)
        self.sender = DomainSender(cfg.delivery, cfg.hostname, resolver, mta_sts, self.tls_tally)
        self._next_refresh = 0.0  # loop.time() of the next MTA-STS refresh
        self._refreshing: asyncio.Task[int] | None = None
        self._rng = random.Random()  # noqa: S311 - retry jitter, not cryptography
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        # The process's change feed when given (the runtime shares one), else one of its own.
        self._own_feed = feed is None
        self.feed = feed if feed is not None else ChangeFeed(cfg.database)
        self.feed.subscribe(QUEUE_CHANNEL, self._notified)
        self.feed.on_resync(self._wake.set)
        self._global = asyncio.Semaphore(cfg.delivery.max_connections)
        self._per_domain: dict[str, asyncio.Semaphore] = collections.defaultdict(
            lambda: asyncio.Semaphore(cfg.delivery.max_connections_per_domain)
        )

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        if self._own_feed:
            await self.feed.start()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    def _notified(self, _change: QueueChange) -> None:
        self._wake.set()

    def problem(self) -> str | None:
        """What is degraded (for the heartbeat and ``relatectl status``), or None."""
        return self.feed.problem()

    def reload_tls(self) -> None:
        """Nothing to reload: the delivery daemon only makes outgoing connections."""

    async def read_backlog(self) -> None:
        """The queue's depth and oldest age by state, into the metrics (at scrape time, runtime/metrics.py)."""
        found = {b.state: b for b in await store.backlog(self.pool)}
        for state in metrics.QUEUE_STATES:
            b = found.get(state)
            metrics.child(metrics.QUEUE_MESSAGES, state).set(b.messages if b else 0)
            metrics.child(metrics.QUEUE_RECIPIENTS, state).set(b.recipients if b else 0)
            metrics.child(metrics.QUEUE_OLDEST, state).set(b.oldest_seconds if b else 0)

    async def stop(self, grace: float = 30.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refreshing
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, grace)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        with contextlib.suppress(*db.ERRORS):
            await self.tls_tally.flush(self.pool)  # the last second's TLS results
        if self._own_feed:
            await self.feed.stop()

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                busy = await self.run_once()
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any one bad pass; leases recover its work
                log.error("delivery-loop-error error=%s: %s", type(exc).__name__, exc)
                busy = False
            now = asyncio.get_running_loop().time()
            if not self._stopping and (not busy or now >= self._background_due):
                self._background_due = now + BACKGROUND_SECONDS
                busy = await self._index_text() or busy
                if not self._stopping:
                    busy = await self._thread_old_mail() or busy
                if not self._stopping:
                    busy = await self._sweep_blobs() or busy
                if not self._stopping:
                    await self._tls_reports()
                if not self._stopping:
                    await self._dkim_rotation()
                if not self._stopping:
                    self._start_mta_sts_refresh()
            if busy or self._stopping:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), await self._idle_seconds())

    async def _idle_seconds(self) -> float:
        """How long to sleep when nothing is due: until the next retry or lease end, at most poll_seconds."""
        poll = self.cfg.delivery.poll_seconds
        try:
            async with self.pool.acquire() as conn:
                due = await store.next_due(conn)
        except db.ERRORS:
            return poll
        if due is None:
            return poll
        # A moment's grace past the due time, and never a busy loop on a row someone else holds right now.
        return min(poll, max((due - self.clock()).total_seconds() + 0.05, 0.25))

    async def _index_text(self) -> bool:
        """When the queue is idle: put stored messages' body text into the search index.

        Nearly all of the indexer's time is spent inside PostgreSQL (one backend, one core),
        so two batches run at once, each on its own connection (two cores busy); SKIP LOCKED keeps them apart.
        """

        async def one() -> int:
            try:
                async with self.pool.acquire() as conn:
                    return await messages.index_pending(conn)
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("index-error error=%s: %s", type(exc).__name__, exc)
                return 0

        done = await asyncio.gather(*(one() for _ in range(2)))
        return sum(done) > 0

    async def _thread_old_mail(self) -> bool:
        """When the queue is idle: give mail stored before threads existed (migration 0042) its thread, a batch
        at a time in a short transaction of its own (store.threads.thread_pending); whether a full batch was done."""
        try:
            async with self.pool.acquire() as conn:
                done = await threads.thread_pending(conn)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.warning("thread-error error=%s: %s", type(exc).__name__, exc)
            return False
        if done:
            log.info("threaded-old-mail messages=%d", done)
        return done >= threads.PENDING_BATCH

    async def _sweep_blobs(self) -> bool:
        """When the queue is idle, now and then: delete raw messages nothing has referred to for a while."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_sweep:
            return False
        limit = 1000
        try:
            async with self.pool.acquire() as conn:
                settled, deleted = await mailboxes.sweep_blobs(conn, self.blob_grace, limit)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.warning("blob-sweep-error error=%s: %s", type(exc).__name__, exc)
            settled = deleted = 0
        if deleted:
            log.info("blob-sweep deleted=%d", deleted)
        if settled >= limit:
            return True  # more are due: the next batch in the next turn of the loop
        self._next_sweep = loop.time() + BLOB_SWEEP_SECONDS
        return False

    async def _tls_reports(self) -> None:
        """Now and then: add the TLS tally to the database; every REPORT_SECONDS, queue the TLS reports due."""
        loop = asyncio.get_running_loop()
        try:
            await self.tls_tally.flush(self.pool)
            if loop.time() >= self._next_reports:
                self._next_reports = loop.time() + REPORT_SECONDS
                await self.send_tls_reports()
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.warning("tlsrpt-error error=%s: %s", type(exc).__name__, exc)

    async def _dkim_rotation(self) -> None:
        """Now and then: a pending DKIM key whose record is now published starts signing (services.dns)."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_dkim_check:
            return
        self._next_dkim_check = loop.time() + BLOB_SWEEP_SECONDS
        try:
            for name in await dns_service.promote_published(self.pool, self._dns):
                log.info("dkim-activated key=%s: its record is published; it signs from now on", name)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.warning("dkim-rotation-error error=%s: %s", type(exc).__name__, exc)

    def _start_mta_sts_refresh(self) -> None:
        """Every MTA_STS_REFRESH_SECONDS, unless the last refresh still runs: start the next in its own task."""
        loop = asyncio.get_running_loop()
        if self.sender.mta_sts is None or loop.time() < self._next_refresh:
            return
        if self._refreshing is not None and not self._refreshing.done():
            return
        self._next_refresh = loop.time() + MTA_STS_REFRESH_SECONDS
        self._refreshing = loop.create_task(self.refresh_mta_sts())

    async def refresh_mta_sts(self) -> int:
        """Fetch again the cached MTA-STS policies due for it (relate.queue.mtasts); how many were refreshed."""
        if self.sender.mta_sts is None:
            return 0
        try:
            return await self.sender.mta_sts.refresh()
        except Exception as exc:  # noqa: BLE001 - a task of its own: what it meets is logged, never lost unseen
            log.warning("delivery-mta-sts-refresh-error error=%s: %s", type(exc).__name__, exc)
            return 0

    async def send_tls_reports(self) -> int:
        """Add the tally to the database and queue the TLS-RPT reports of the days before today (by the clock)."""
        await self.tls_tally.flush(self.pool)
        return await tlsrpt.send_reports(self.pool, self._dns, self.cfg.hostname, self.clock())

    # -- one pass ----------------------------------------------------------------

    async def run_once(self) -> bool:
        """Expire, warn, claim and deliver one batch, bounce; True if there was work (look again at once)."""
        now = self.clock()
        d = self.cfg.delivery
        async with self.pool.acquire() as conn, conn.transaction():
            old = await store.expire(conn, now, timedelta(seconds=d.max_age), d.batch_size)
        self._log_failed(old)
        if d.delay_warning > 0:
            await self._warn_delays(now)
        owner = uuid.uuid4()
        started = asyncio.get_running_loop().time()
        async with self.pool.acquire() as conn, conn.transaction():
            claimed = await store.claim(conn, now, timedelta(seconds=d.lease_seconds), d.batch_size, owner)
        if claimed:
            await self._deliver(_Claim(owner, claimed, started + d.lease_seconds * LEASE_USABLE))
        bounced = await self._bounce_due()
        replied = await self._vacation_replies()
        return bool(claimed or old or bounced or replied)

    async def _deliver(self, claim: _Claim) -> None:
        by_domain: dict[str, list[Claimed]] = collections.defaultdict(list)
        for c in claim.items.values():
            by_domain[c.domain].append(c)
        hosted = {d for d in by_domain if await accounts.get_domain(self.pool, d) is not None}
        work = _Pass(self, claim)
        renewer = asyncio.get_running_loop().create_task(self._renew(claim))
        jobs = [
            (domain, part, domain in hosted)
            for domain, items in by_domain.items()
            for part in ([items] if domain in hosted else self._split(items))
        ]
        try:
            await asyncio.gather(*(self._domain(work, domain, part, local) for domain, part, local in jobs))
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            if claim.held:
                await self._hand_back(claim)

    def _split(self, items: list[Claimed]) -> list[list[Claimed]]:
        """One domain's recipients in parts for parallel connections: one per MESSAGES_PER_SPLIT messages,
        at most max_connections_per_domain; a message's recipients stay together."""
        by_message: dict[int, list[Claimed]] = collections.defaultdict(list)
        for c in items:
            by_message[c.email_id].append(c)
        groups = list(by_message.values())
        parts = min(self.cfg.delivery.max_connections_per_domain, -(-len(groups) // MESSAGES_PER_SPLIT))
        if parts <= 1:
            return [items]
        return [[c for group in groups[i::parts] for c in group] for i in range(parts)]

    async def _renew(self, claim: _Claim) -> None:
        """Every third of the lease: extend it for the rows still held; notice rows another daemon took over."""
        lease = self.cfg.delivery.lease_seconds
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(lease / 3)
            asked = set(claim.held)
            if not asked:
                continue
            started = loop.time()
            try:
                async with self.pool.acquire() as conn:
                    still = await store.renew(conn, claim.owner, self.clock() + timedelta(seconds=lease))
            except db.ERRORS as exc:
                left = claim.valid_until - loop.time()
                log.warning(
                    "delivery-lease-renew-failed rcpts=%d error=%s: %s (sending stops in %.0fs unless renewed)",
                    len(asked),
                    type(exc).__name__,
                    exc,
                    max(left, 0),
                )
                continue
            claim.valid_until = started + lease * LEASE_USABLE
            lost = (asked & claim.held) - still
            if lost:
                claim.held -= lost
                log.warning(
                    "delivery-lease-lost rcpts=%d (taken over by another daemon; not sent again here)", len(lost)
                )

    async def _hand_back(self, claim: _Claim) -> None:
        """Rows claimed but not tried (stopping, lease trouble): claimable again at once, attempt not counted."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                n = await store.hand_back(conn, claim.owner, self.clock())
        except db.ERRORS as exc:
            log.warning("delivery-hand-back-failed error=%s: %s (retried when the lease ends)", type(exc).__name__, exc)
            return
        if n:
            log.info("delivery-handed-back rcpts=%d", n)

    async def _domain(self, work: _Pass, domain: str, items: list[Claimed], hosted: bool) -> None:
        """One domain's recipients: into local INBOXes when we host it, else over SMTP."""
        try:
            if hosted:
                await self._deliver_local(work, items)
                return
            grouped: dict[int, Message] = {}
            for c in items:
                msg = grouped.get(c.email_id)
                if msg is None:
                    msg = grouped[c.email_id] = Message(c.email_id, c.mail_from, [], size=c.size)
                msg.recipients.append((c.recipient_id, c.address))
            async with self._global, self._per_domain[domain]:
                await self.sender.send(domain, list(grouped.values()), work)
        except RecordFailed:
            return  # logged; the rows not recorded go back to the queue when the lease ends
        except _SEND_ERRORS as exc:
            log.warning("delivery-error domain=%s error=%s: %s", domain, type(exc).__name__, exc)
            left = [c for c in items if c.recipient_id in work.claim.held]
            with contextlib.suppress(RecordFailed):
                await work.done(
                    [Result(c.recipient_id, "deferred", "4.3.0", "local error, will retry", None) for c in left]
                )

    async def _deliver_local(self, work: _Pass, items: list[Claimed]) -> None:
        """Recipients at hosted domains: straight into their INBOX, each in the transaction that records it.

        A recipient with a quota gets the copy only if it fits (store/quota.py): else it is deferred
        (``452 4.2.2``, retried on the usual schedule) or fails for good (``552 5.2.2``, a DSN to the
        sender) when the message is larger than the limit or the mailbox has been full for
        ``quota.bounce_after_days``.
        """
        cached: tuple[bytes, bytes] | None = None  # (blob hash, bytes) of the last message read
        for c in items:
            if c.recipient_id not in work.claim.held or not work.usable():
                continue
            async with self.pool.acquire() as conn:
                target = await accounts.resolve_recipient(conn, c.address)
                if target is None:
                    await self._commit(
                        conn,
                        work.claim,
                        [Result(c.recipient_id, "failed", "5.1.1", "550 5.1.1 no such user here", None)],
                    )
                    continue
                if cached is None or cached[0] != c.blob_hash:
                    data = (await store.blobs(conn, [c.blob_hash])).get(c.blob_hash)
                    if data is None:
                        await self._commit(
                            conn,
                            work.claim,
                            [
                                Result(
                                    c.recipient_id, "deferred", "4.3.0", "local error: message content not found", None
                                )
                            ],
                        )
                        continue
                    cached = (c.blob_hash, data)
                raw = b"Return-Path: <" + c.mail_from.encode() + b">\r\n" + cached[1]
                limited = not quota.Limits.of(
                    target["quota_storage"], target["quota_messages"], self.cfg.quota
                ).unlimited
                if limited:
                    found = await quota.verdicts(conn, {target["user_id"]: len(raw)}, self.cfg.quota, self.clock())
                    verdict = found[target["user_id"]][0] if target["user_id"] in found else quota.Verdict.FITS
                    if verdict is not quota.Verdict.FITS:
                        await self._commit(conn, work.claim, [_mailbox_full(c.recipient_id, verdict)])
                        continue
                result = Result(c.recipient_id, "sent", "2.0.0", "delivered locally", self.cfg.hostname)
                enforce = messages.Enforce(self.cfg.quota) if limited else None
                # Stored and recorded in one transaction: a crash repeats neither, and a copy whose outcome
                # cannot be recorded (the lease went meanwhile) is rolled back.
                try:
                    async with conn.transaction():
                        now = self.clock()
                        stored = await filing.file_one(  # through the user's Sieve script (relate/sieve/)
                            conn,
                            self.cfg.sieve,
                            raw,
                            user_id=target["user_id"],
                            inbox_id=target["inbox_id"],
                            rcpt=c.address,
                            mail_from=c.mail_from,
                            quota=enforce.cfg if enforce is not None else None,
                            mailbox_limit=self.cfg.quota.mailboxes,
                        )
                        if not stored:  # no room after all (another copy got there first): try again later
                            result = _mailbox_full(c.recipient_id, quota.Verdict.LATER)
                        recorded = await store.record(
                            conn, self._outcomes(work.claim, [result], now), now, work.claim.owner
                        )
                        if stored and not recorded:
                            raise _NotOurs()
                except _NotOurs:
                    recorded = []
                self._recorded(work.claim, [result], set(recorded))

    async def _signature(self, wire: bytes, keys: dict[str, dkim.DkimKey | None]) -> bytes:
        """The DKIM-Signature header for ``wire`` when its From domain is ours and has a key, else b""."""
        end = wire.find(b"\r\n\r\n")
        parsed = parse_message(wire[: end + 4] if end >= 0 else wire[:65536])  # the header is enough
        if not parsed.from_:
            return b""
        try:
            _, domain = split_address(parsed.from_[0].email)
        except ValueError:
            return b""
        if domain not in keys:
            row = await dkim_store.active(self.pool, domain)
            keys[domain] = None if row is None else dkim.DkimKey(**{k: row[k] for k in dkim.KEY_FIELDS})
        key = keys[domain]
        if key is None:
            return b""
        return await asyncio.to_thread(dkim.sign, wire, domain, key)

    # -- recording -----------------------------------------------------------------

    def _outcomes(self, claim: _Claim, results: Sequence[Result], now: datetime) -> list[Outcome]:
        d = self.cfg.delivery
        outcomes = []
        for r in results:
            when = None
            if r.status == "deferred":
                when = next_attempt(now, claim.items[r.recipient_id].attempts, d.retry_first, d.retry_max, self._rng)
            outcomes.append(Outcome(r.recipient_id, r.status, r.enhanced, r.reply, r.remote_mta, when))
        return outcomes

    async def _commit(self, conn: asyncpg.Connection, claim: _Claim, results: Sequence[Result]) -> None:
        """Record ``results`` in one statement of their own (rows no longer ours are left alone).

        Committed without waiting for the disk (see ``store.queue.record``): what a crash of this
        daemon must not lose is safe in PostgreSQL at once, and a connection waits for this commit
        before its next final dot, so the commit's latency is paid per message.
        """
        now = self.clock()
        recorded = await store.record(conn, self._outcomes(claim, results, now), now, claim.owner, flush=False)
        self._recorded(claim, results, set(recorded))

    async def _record(self, claim: _Claim, results: Sequence[Result]) -> None:
        """Commit ``results``, retrying a failing database until the lease would run out."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with self.pool.acquire() as conn:
                    await self._commit(conn, claim, results)
                return
            except db.ERRORS as exc:
                if loop.time() + 1 >= claim.valid_until:
                    log.error(
                        "delivery-record-failed rcpts=%d error=%s: %s (stopped; they are retried after the lease)",
                        len(results),
                        type(exc).__name__,
                        exc,
                    )
                    raise RecordFailed(str(exc)) from exc
                log.warning("delivery-record-retry rcpts=%d error=%s: %s", len(results), type(exc).__name__, exc)
                await asyncio.sleep(1)

    def _recorded(self, claim: _Claim, results: Sequence[Result], recorded: set[int]) -> None:
        claim.held -= {r.recipient_id for r in results}
        lost = 0
        for r in results:
            if r.recipient_id not in recorded:
                lost += 1
                continue
            c = claim.items[r.recipient_id]
            metrics.child(metrics.DELIVERY_ATTEMPTS, r.status).inc()
            log.info(
                "delivery id=%d rcpt=%s status=%s code=%s mta=%s reply=%s",
                c.email_id,
                c.address,
                r.status,
                r.enhanced,
                r.remote_mta or "-",
                r.reply[:200],
            )
        if lost:
            log.warning(
                "delivery-lease-lost rcpts=%d (taken over by another daemon before their outcome was recorded)", lost
            )

    def _log_failed(self, failed: Sequence[Failed]) -> None:
        for f in failed:
            metrics.DELIVERY_EXPIRED.inc()
            log.info(
                "delivery id=%d rcpt=%s status=failed code=%s mta=- reply=%s",
                f.email_id,
                f.address,
                f.enhanced,
                f.reply[:200],
            )

    async def fail_now(
        self, email_ids: Sequence[int], reason: str = "removed from the queue by the administrator"
    ) -> list[store.Failed]:
        """``relatectl queue fail``: fail every waiting recipient of these messages, with a DSN; those failed."""
        async with self.pool.acquire() as conn, conn.transaction():
            failed = await store.fail_waiting(conn, email_ids, self.clock(), "5.3.0", reason)
        self._log_failed(failed)
        await self._bounce_due(email_ids)
        return failed

    # -- Sieve ------------------------------------------------------------------------

    async def _vacation_replies(self) -> int:
        """Queue the vacation replies and reject DSNs Sieve runs asked for (relate.sieve.vacation, .refuse); how many
        actions were taken."""
        taken = 0
        senders = (("vacation", vacation), ("reject", refuse), ("redirect", redirect))
        for kind, module in senders:
            try:
                taken += await module.send_pending(self.pool, self.cfg.hostname)
            except db.ERRORS as exc:
                log.warning("sieve-%s-error error=%s: %s", kind, type(exc).__name__, exc)
        return taken

    # -- DSNs ------------------------------------------------------------------------

    async def _bounce_due(self, email_ids: Sequence[int] | None = None) -> int:
        """A DSN for every message with failures not yet reported (and nothing in flight); how many were made."""
        try:
            async with self.pool.acquire() as conn:
                candidates = await store.bounce_candidates(conn, DSN_BATCH, email_ids)
        except db.ERRORS as exc:
            log.warning("dsn-error error=%s: %s", type(exc).__name__, exc)
            return 0
        made = 0
        for email_id in candidates:
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    notice = await store.take_bounce(conn, email_id)
                    if notice is None:
                        continue  # another daemon is on it
                    await self._notify_sender(conn, notice, "failed")
                    await store.bounced(conn, notice.recipient_ids)
                made += 1
            except db.ERRORS as exc:
                log.warning("dsn-error id=%d error=%s: %s", email_id, type(exc).__name__, exc)
        return made

    async def _warn_delays(self, now: datetime) -> None:
        after = timedelta(seconds=self.cfg.delivery.delay_warning)
        try:
            async with self.pool.acquire() as conn:
                candidates = await store.delay_warning_candidates(conn, now, after, DSN_BATCH)
        except db.ERRORS as exc:
            log.warning("dsn-error error=%s: %s", type(exc).__name__, exc)
            return
        for email_id in candidates:
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    notice = await store.take_delay_warning(conn, email_id, now, after)
                    if notice is None:
                        continue
                    if notice.recipients:
                        await self._notify_sender(conn, notice, "delayed")
                    await store.warned(conn, email_id, now)
            except db.ERRORS as exc:
                log.warning("dsn-error id=%d error=%s: %s", email_id, type(exc).__name__, exc)

    async def _notify_sender(
        self, conn: asyncpg.Connection, notice: Notice, action: str
    ) -> list[messages.StoredMessage]:
        """Put the DSN into the sender's INBOX, in the caller's transaction; what was stored."""
        if not notice.mail_from:
            return []  # never a DSN for a message with the null sender
        head = await store.blob_head(conn, notice.blob_hash, DSN_HEADER_BYTES)
        dsn = bounce.build(
            reporting_mta=self.cfg.hostname,
            sender=notice.mail_from,
            original=head,
            arrival=notice.queued_at,
            recipients=[
                bounce.RecipientStatus(r.address, r.enhanced, r.diagnostic, r.remote_mta) for r in notice.recipients
            ],
            action=action,
            now=self.clock(),
        )
        inbox = await accounts.inbox_id(conn, notice.user_id)
        if inbox is None:
            log.warning("dsn-undeliverable user=%d (no INBOX)", notice.user_id)
            return []
        stored = await messages.ingest(conn, b"Return-Path: <>\r\n" + dsn, [inbox], delivered=True)
        log.info(
            "dsn action=%s to=%s rcpts=%s", action, notice.mail_from, ",".join(r.address for r in notice.recipients)
        )
        return list(stored)
