"""Group commit: deliveries that arrive together share one transaction and one WAL flush.

Policy. A commit is durable once PostgreSQL has flushed its WAL (an fsync),
and two locks make commits that store mail wait for each other's flush: the
mailbox row lock (a message's UID comes from its mailbox's UIDNEXT, and the
row stays locked until commit so that no session sees UID n+1 before UID n,
see store/messages.py), and the database-wide lock NOTIFY takes from just
before commit until after it (so notifications queue in commit order). So
every delivery, to whichever mailbox, waited for the previous one's flush:
one message per fsync, however many sessions were sending.

:class:`CommitGroup` lifts that bound and keeps "250 only after commit".
Deliveries submitted while a transaction of the group is in flight wait for
it, then go together (at most ``max_batch``) in the next one, which

1. locks every mailbox they touch, in id order (as a lone delivery does, so
   a batch here, one in another process and a lone delivery cannot deadlock);
2. runs each delivery's work in turn on its one connection, in the order
   they arrived (their messages take consecutive UIDs in that order);
3. commits once; only then is each caller given its own result.

Nothing waits on a timer: a delivery that finds nothing in flight starts a
transaction at once, so a lone message goes as fast as before.

One failure. When any work (or a statement before the commit) fails, the
transaction is rolled back whole, so nothing of the batch is stored, and each
delivery of the batch is then run alone, in a transaction of its own, exactly
as without the group: the one that fails fails alone, and the others commit
and are acknowledged once each. When the COMMIT itself fails, its outcome is
unknown (the connection may have died after the commit was done), so every
delivery of the batch gets that error (a 4xx), as a lone delivery would: the
sender tries again later, and a duplicate is possible, as SMTP accepts (RFC
5321 §6.1); a loss is not.

As IMAP clients see UIDs: the batch holds its mailboxes' row locks until it
commits, so a reader sees all of a batch or none of it, and never a later
UID before an earlier one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import asyncpg

log = logging.getLogger("relate.store")

T = TypeVar("T")
Work = Callable[[asyncpg.Connection], Awaitable[T]]

# Row locks in id order, the lock the ingest UPDATE takes (FOR NO KEY UPDATE: foreign-key checks of
# other writers, FOR KEY SHARE, are not blocked). With ORDER BY the rows are locked after the sort.
_LOCK = "SELECT id FROM mailboxes WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE"

MAX_BATCH = 64


@dataclass(eq=False)
class _Job(Generic[T]):
    mailbox_ids: tuple[int, ...]
    work: Work[T]
    future: asyncio.Future[T]

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        """Hand the caller its outcome, unless it has stopped waiting (cancelled)."""
        if self.future.done():
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(result)


class CommitGroup:
    """One process's group of deliveries sharing transactions (module docstring)."""

    def __init__(self, pool: asyncpg.Pool, *, max_batch: int = MAX_BATCH) -> None:
        self._pool = pool
        self.max_batch = max_batch
        self._pending: list[_Job[Any]] = []
        self._runner: asyncio.Task[None] | None = None
        self.transactions = 0  # committed, whatever their size
        self.grouped = 0  # deliveries committed in a transaction shared with others
        self.split = 0  # batches rolled back for one failure and run one by one

    async def run(self, mailbox_ids: Iterable[int], work: Work[T]) -> T:
        """Run ``work(conn)`` in a transaction shared with the deliveries around it; returns its result once
        that transaction has committed. ``mailbox_ids``: the mailboxes the work stores into (locked first).

        ``work`` may run twice (when another delivery of its batch fails, see the module docstring): it
        must do all it does through ``conn`` and change nothing else."""
        loop = asyncio.get_running_loop()
        job: _Job[T] = _Job(tuple(sorted(set(mailbox_ids))), work, loop.create_future())
        self._pending.append(job)
        if self._runner is None:
            self._runner = loop.create_task(self._drain())
        return await job.future

    async def _drain(self) -> None:
        batch: list[_Job[Any]] = []
        try:
            while self._pending:
                batch = [j for j in self._pending[: self.max_batch] if not j.future.done()]
                del self._pending[: self.max_batch]
                if batch:
                    await self._commit(batch)  # settles every job of the batch, whatever happens
        except asyncio.CancelledError:  # the daemon is stopping: no caller may be left waiting
            for job in (*batch, *self._pending):
                job.future.cancel()
            self._pending.clear()
            raise
        finally:
            self._runner = None

    async def _commit(self, batch: list[_Job[Any]]) -> None:
        if len(batch) == 1:
            await self._alone(batch[0])
            return
        results: list[Any] = []
        try:
            async with self._pool.acquire() as conn:
                transaction = conn.transaction()
                await transaction.start()
                try:
                    mailbox_ids = sorted({m for job in batch for m in job.mailbox_ids})
                    if len(mailbox_ids) > 1:
                        await conn.execute(_LOCK, mailbox_ids)
                    for job in batch:
                        results.append(await job.work(conn))
                except BaseException as exc:  # whatever it is, each delivery then runs alone and gets its own
                    with contextlib.suppress(Exception):  # a broken connection rolls back by itself
                        await transaction.rollback()
                    if not isinstance(exc, Exception):  # cancelled (shutdown): _drain cancels every caller
                        raise
                    results = []
                else:
                    await transaction.commit()
        except Exception as exc:  # noqa: BLE001 - no connection, or the COMMIT failed: handed to every caller
            if results or not isinstance(exc, (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
                for job in batch:
                    job.settle(error=exc)
                return
            results = []  # acquiring a connection failed: nothing ran; each is tried alone below
        if len(results) != len(batch):
            self.split += 1
            for job in batch:
                await self._alone(job)
            return
        self.transactions += 1
        self.grouped += len(batch)
        for job, result in zip(batch, results, strict=True):
            job.settle(result)

    async def _alone(self, job: _Job[Any]) -> None:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                result = await job.work(conn)
        except Exception as exc:  # noqa: BLE001 - the caller's error: it is handed to the caller
            job.settle(error=exc)
            return
        self.transactions += 1
        job.settle(result)
