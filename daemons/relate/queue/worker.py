"""The delivery loop: claim due recipients, deliver them by domain, record outcomes, bounce failures.

Retry policy: a deferred recipient is tried again after ``retry_first``
seconds (60), doubling with ±10% jitter up to ``retry_max`` (1 hour), until
its message is ``max_age`` old (5 days); then it fails with 4.4.7 and the
sender gets a DSN. Senders hear once, after ``delay_warning`` (4 hours),
that a message is still waiting. Only recipients still deferred are retried.

When the queue is idle (and at least every ``BACKGROUND_SECONDS`` when it
never is), the loop also adds the body text of newly stored messages to
their full-text vectors (see ``store.messages.index_pending``), and every
``BLOB_SWEEP_SECONDS`` deletes the raw messages that have had no reference
for ``BLOB_GRACE`` (see ``store.mailboxes.sweep_blobs``), batch after batch
while there are more.

Recipients at hosted domains are delivered locally through the ingest path,
without SMTP. Remote ones are grouped by domain, at most
``max_connections_per_domain`` connections per domain and
``max_connections`` in all. The loop wakes on the change feed's
``relate_queue`` channel (and after the feed was down, when it may have missed
one) and otherwise polls every ``poll_seconds``. Time comes from an injectable clock,
so tests can age the queue.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import aiosmtplib
import asyncpg

from relate.config import Config
from relate.mail import dkim
from relate.mail.address import split_address
from relate.mail.mime import parse_message
from relate.queue import bounce
from relate.queue.client import DomainSender, Message, Result
from relate.queue.mx import make_resolver
from relate.store import accounts, mailboxes, messages
from relate.store import dkim as dkim_store
from relate.store import queue as store
from relate.store.changes import QUEUE_CHANNEL, ChangeFeed, QueueChange
from relate.store.queue import Claimed, Outcome

log = logging.getLogger("relate.delivery")

Clock = Callable[[], datetime]

# Raw messages are deleted this long after their last reference went, by a sweep this often.
BLOB_GRACE = timedelta(minutes=5)
BLOB_SWEEP_SECONDS = 60.0
# A queue that is never idle still leaves a turn for indexing and sweeping this often.
BACKGROUND_SECONDS = 1.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def next_attempt(now: datetime, attempts: int, first: float, cap: float, rng: random.Random) -> datetime:
    """``first`` seconds after the first try, doubling per attempt up to ``cap``, ±10% jitter."""
    delay = min(first * (2 ** max(attempts - 1, 0)), cap)
    return now + timedelta(seconds=delay * rng.uniform(0.9, 1.1))


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
        self.sender = DomainSender(cfg.delivery, cfg.hostname, make_resolver(cfg.delivery))
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

    async def stop(self, grace: float = 30.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, grace)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
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
                    busy = await self._sweep_blobs() or busy
            if busy or self._stopping:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.cfg.delivery.poll_seconds)

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

    # -- one pass ----------------------------------------------------------------

    async def run_once(self) -> bool:
        """Expire, warn, claim and deliver one batch; True if there was work (look again at once)."""
        now = self.clock()
        d = self.cfg.delivery
        async with self.pool.acquire() as conn, conn.transaction():
            old = await store.expired(conn, now, timedelta(seconds=d.max_age), d.batch_size)
        if old:
            await self._record(
                old,
                [
                    Result(
                        c.recipient_id,
                        "failed",
                        "4.4.7",
                        "message expired after the maximum time in the queue"
                        + (f"; last attempt: {c.last_error}" if c.last_error else ""),
                        None,
                    )
                    for c in old
                ],
            )
        if d.delay_warning > 0:
            await self._warn_delays(now)
        async with self.pool.acquire() as conn, conn.transaction():
            claimed = await store.claim(conn, now, timedelta(seconds=d.lease_seconds), d.batch_size)
        if not claimed:
            return bool(old)
        await self._deliver(claimed)
        return True

    async def _deliver(self, claimed: list[Claimed]) -> None:
        async with self.pool.acquire() as conn:
            data = await store.blobs(conn, [c.blob_hash for c in claimed])
        by_domain: dict[str, list[Claimed]] = collections.defaultdict(list)
        for c in claimed:
            by_domain[c.domain].append(c)
        hosted = {d for d in by_domain if await accounts.get_domain(self.pool, d) is not None}
        # What goes out over SMTP is signed once per message, however many domains it goes to.
        outgoing: dict[int, bytes] = {}
        keys: dict[str, dkim.DkimKey | None] = {}  # signing keys by From domain, for this batch
        for c in claimed:
            if c.domain not in hosted and c.email_id not in outgoing:
                outgoing[c.email_id] = await self._signed(data[c.blob_hash], keys)
        per_domain = await asyncio.gather(
            *(
                self._domain(domain, items, data if domain in hosted else None, outgoing)
                for domain, items in by_domain.items()
            )
        )
        # Recorded together, so a message failing at several domains makes one DSN.
        await self._record(claimed, [r for results in per_domain for r in results])

    async def _domain(
        self, domain: str, items: list[Claimed], local_data: dict[bytes, bytes] | None, outgoing: dict[int, bytes]
    ) -> list[Result]:
        """One domain's recipients: into local INBOXes when we host it (``local_data``), else over SMTP."""
        try:
            if local_data is not None:
                return await self._deliver_local(items, local_data)
            grouped: dict[int, Message] = {}
            for c in items:
                msg = grouped.get(c.email_id)
                if msg is None:
                    msg = grouped[c.email_id] = Message(c.email_id, c.mail_from, outgoing[c.email_id], [])
                msg.recipients.append((c.recipient_id, c.address))
            async with self._global, self._per_domain[domain]:
                return await self.sender.send(domain, list(grouped.values()))
        except (OSError, asyncpg.PostgresError, TimeoutError, aiosmtplib.SMTPException) as exc:
            log.warning("delivery-error domain=%s error=%s: %s", domain, type(exc).__name__, exc)
            return [Result(c.recipient_id, "deferred", "4.3.0", "local error, will retry", None) for c in items]

    async def _deliver_local(self, items: list[Claimed], data: dict[bytes, bytes]) -> list[Result]:
        """Recipients at hosted domains: straight into their INBOX, no SMTP."""
        results = []
        for c in items:
            target = await accounts.resolve_recipient(self.pool, c.address)
            if target is None:
                results.append(Result(c.recipient_id, "failed", "5.1.1", "550 5.1.1 no such user here", None))
                continue
            raw = b"Return-Path: <" + c.mail_from.encode() + b">\r\n" + data[c.blob_hash]
            async with self.pool.acquire() as conn:
                await messages.ingest(conn, raw, [target["inbox_id"]])
            results.append(Result(c.recipient_id, "sent", "2.0.0", "delivered locally", self.cfg.hostname))
        return results

    async def _signed(self, raw: bytes, keys: dict[str, dkim.DkimKey | None]) -> bytes:
        """``raw`` with a DKIM signature when the From domain is ours and has a key."""
        end = raw.find(b"\r\n\r\n")
        parsed = parse_message(raw[: end + 4] if end >= 0 else raw[:65536])  # the header is enough
        if not parsed.from_:
            return raw
        try:
            _, domain = split_address(parsed.from_[0].email)
        except ValueError:
            return raw
        if domain not in keys:
            row = await dkim_store.active(self.pool, domain)
            keys[domain] = None if row is None else dkim.DkimKey(**{k: row[k] for k in dkim.KEY_FIELDS})
        key = keys[domain]
        return raw if key is None else dkim.sign(raw, domain, key) + raw

    async def _record(self, items: list[Claimed], results: Sequence[Result]) -> None:
        now = self.clock()
        by_id = {c.recipient_id: c for c in items}
        outcomes: list[Outcome] = []
        failed: list[tuple[Claimed, Result]] = []
        for r in results:
            c = by_id[r.recipient_id]
            status = r.status
            when = None
            if status == "deferred":
                when = next_attempt(
                    now, c.attempts, self.cfg.delivery.retry_first, self.cfg.delivery.retry_max, self._rng
                )
            outcomes.append(Outcome(r.recipient_id, status, r.enhanced, r.reply, r.remote_mta, when))
            if status == "failed":
                failed.append((c, r))
            log.info(
                "delivery id=%d rcpt=%s status=%s code=%s mta=%s reply=%s",
                c.email_id,
                c.address,
                status,
                r.enhanced,
                r.remote_mta or "-",
                r.reply[:200],
            )
        async with self.pool.acquire() as conn, conn.transaction():
            await store.record(conn, outcomes, now)
        if failed:
            await self._bounce(failed, "failed")

    async def _fail(self, items: list[Claimed], enhanced: str, reason: str) -> None:
        await self._record(items, [Result(c.recipient_id, "failed", enhanced, reason, None) for c in items])

    async def fail_now(
        self, email_ids: Sequence[int], reason: str = "removed from the queue by the administrator"
    ) -> int:
        """``relatectl queue fail``: fail every waiting recipient of these messages, with a DSN."""
        async with self.pool.acquire() as conn, conn.transaction():
            items = await store.claim_for_failure(conn, email_ids, self.clock())
        if items:
            await self._fail(items, "5.3.0", reason)
        return len(items)

    async def _bounce(self, failed: list[tuple[Claimed, Result]], action: str) -> None:
        by_email: dict[int, list[tuple[Claimed, Result]]] = collections.defaultdict(list)
        for c, r in failed:
            by_email[c.email_id].append((c, r))
        async with self.pool.acquire() as conn:
            data = await store.blobs(conn, [c.blob_hash for c, _ in failed])
        for pairs in by_email.values():
            first = pairs[0][0]
            statuses = [bounce.RecipientStatus(c.address, r.enhanced, r.reply, r.remote_mta) for c, r in pairs]
            await self._notify_sender(
                first.user_id, first.mail_from, data[first.blob_hash], first.queued_at, statuses, action
            )

    async def _warn_delays(self, now: datetime) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            due = await store.due_delay_warnings(conn, now, timedelta(seconds=self.cfg.delivery.delay_warning))
        for row in due:
            async with self.pool.acquire() as conn:
                waiting = await store.waiting_recipients(conn, row["id"])
                data = await store.blobs(conn, [bytes(row["blob_hash"])])
            statuses = [
                bounce.RecipientStatus(
                    w["address"], w["status_code"] or "4.0.0", w["last_error"] or "not yet delivered", w["remote_mta"]
                )
                for w in waiting
            ]
            if statuses:
                await self._notify_sender(
                    row["user_id"],
                    row["mail_from"],
                    data[bytes(row["blob_hash"])],
                    row["queued_at"],
                    statuses,
                    "delayed",
                )

    async def _notify_sender(
        self,
        user_id: int,
        mail_from: str,
        original: bytes,
        queued_at: datetime,
        statuses: list[bounce.RecipientStatus],
        action: str,
    ) -> None:
        if not mail_from:
            return  # never a DSN for a message with the null sender
        dsn = bounce.build(
            reporting_mta=self.cfg.hostname,
            sender=mail_from,
            original=original,
            arrival=queued_at,
            recipients=statuses,
            action=action,
            now=self.clock(),
        )
        async with self.pool.acquire() as conn:
            inbox = await accounts.inbox_id(conn, user_id)
            if inbox is None:
                log.warning("dsn-undeliverable user=%d (no INBOX)", user_id)
                return
            await messages.ingest(conn, b"Return-Path: <>\r\n" + dsn, [inbox])
        log.info("dsn action=%s to=%s rcpts=%s", action, mail_from, ",".join(s.address for s in statuses))
