"""A session's maildrop: the snapshot taken at login, DELE's marks, read-ahead, and the \\Seen writes.

The policy is stated in :mod:`relate.pop3.session`'s docstring. This object
holds no database connection: each read or write takes one from the pool for
that operation only (the lock lives on the process's lock connection, see
:mod:`relate.store.pop3`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from relate.pop3.errors import GONE, TEMPORARY, InUse, PermFail, Refused, TempFail
from relate.store import accounts
from relate.store import pop3 as store

log = logging.getLogger("relate.pop3")

# Read-ahead: the messages after the one asked for come in one query, up to these.
PREFETCH_BYTES = 4 * 1024 * 1024
PREFETCH_COUNT = 100
# \Seen of RETR'd messages is written once the client pauses this long, or this long after the oldest RETR.
SEEN_IDLE = 0.2
SEEN_MAX_DELAY = 2.0


@dataclass(slots=True)
class Message:
    uid: int
    size: int  # octets as RETR sends them, before dot-stuffing
    crlf: bool  # stored with CRLF line ends and a final CRLF already
    deleted: bool = False


class Maildrop:
    """The maildrop of one logged-in session. Open it with :meth:`open`; :meth:`close` it however the session ends.

    ``activity`` counts the session's commands: the background \\Seen write waits for it to stand still.
    """

    def __init__(
        self, pool: asyncpg.Pool, locks: store.MaildropLocks, inbox_id: int, snapshot: store.Snapshot, client: str
    ) -> None:
        self.pool = pool
        self.locks = locks
        self.inbox_id = inbox_id
        self.uidvalidity = snapshot.uidvalidity
        self.messages = [Message(uid, size, crlf) for uid, size, crlf in snapshot.messages]
        self.client = client
        self.activity: Callable[[], int] = lambda: 0
        self.seen_pending: list[Message] = []  # RETR'd, \Seen not yet written (in RETR order)
        self._seen_since = 0.0  # monotonic time of the oldest of them
        self._seen_writing = False  # the background task is past its wait, in the database
        self._seen_task: asyncio.Task[None] | None = None
        self.prefetched: dict[int, bytes] = {}
        # The batch being read ahead: its UIDs and the query fetching it.
        self._ahead: tuple[frozenset[int], asyncio.Task[dict[int, bytes]]] | None = None
        self._locked = True

    @classmethod
    async def open(
        cls,
        pool: asyncpg.Pool,
        locks: store.MaildropLocks,
        user_id: int,
        *,
        client: str,
        on_lost: Callable[[], None],
    ) -> Maildrop:
        """Lock the user's INBOX and take its snapshot, in that order (a snapshot taken first could still
        lose messages to the session that held the lock); raises InUse, PermFail or a temporary failure."""
        async with pool.acquire() as conn:
            inbox = await accounts.inbox_id(conn, user_id)
        if inbox is None:
            raise PermFail("No maildrop")
        if not await locks.acquire(inbox, on_lost):
            raise InUse("Maildrop is in use by another session")
        try:
            async with pool.acquire() as conn:
                snapshot = await store.snapshot(conn, inbox)
            if snapshot is None:
                raise PermFail("No maildrop")
        except BaseException:
            await locks.release(inbox)
            raise
        return cls(pool, locks, inbox, snapshot, client)

    async def close(self) -> None:
        """End of the session, however it ended: stop reading ahead, write what \\Seen is left, unlock."""
        if self._ahead is not None:
            self._ahead[1].cancel()
            with contextlib.suppress(BaseException):
                await self._ahead[1]
            self._ahead = None
        try:
            await self.write_seen()
        except TEMPORARY + GONE as exc:
            log.warning("pop3-seen-failed client=%s error=%s", self.client, type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - the session is over: say so in one line, and unlock
            log.error("pop3-error client=%s where=close error=%s: %s", self.client, type(exc).__name__, exc)
        finally:
            if self._locked:
                self._locked = False
                await self.locks.release(self.inbox_id)

    # -- the messages ------------------------------------------------------------------------

    def message(self, number: int) -> Message:
        """Message ``number`` (1-based) of the snapshot; -ERR if there is none or DELE marked it."""
        if not 1 <= number <= len(self.messages):
            raise Refused("No such message")
        msg = self.messages[number - 1]
        if msg.deleted:
            raise Refused("Message is deleted")
        return msg

    def live(self) -> list[Message]:
        return [m for m in self.messages if not m.deleted]

    async def remove_marked(self) -> int:
        """QUIT (the UPDATE state, RFC 1939 §6): write the \\Seen left (not of marked messages), then remove
        the marked ones in one transaction; how many were still there to remove."""
        await self.write_seen(marked_too=False)  # marked ones are removed next: their \Seen would be for nothing
        marked = [m.uid for m in self.messages if m.deleted]
        if not marked:
            return 0
        async with self.pool.acquire() as conn:
            removed = await store.remove(conn, self.inbox_id, marked)
        self.seen_pending.clear()  # all of them marked, now gone
        return len(removed)

    # -- message bytes, read ahead ---------------------------------------------------------------

    async def raw(self, number: int, msg: Message) -> bytes:
        """The message's bytes. Clients fetch in order, so the next ones come in the same query, read ahead."""
        data = self.prefetched.pop(msg.uid, None)
        if data is not None:
            return data
        if self._ahead is not None and msg.uid in self._ahead[0]:
            task = self._ahead[1]
            self._ahead = None
            self.prefetched = await task
        if msg.uid not in self.prefetched:  # not read ahead, or the read-ahead failed
            async with self.pool.acquire() as conn:
                self.prefetched = await store.fetch_raw(conn, self.inbox_id, self._batch(number - 1))
        self._read_ahead(number)
        data = self.prefetched.pop(msg.uid, None)
        if data is None:
            raise TempFail("Message is gone")
        return data

    def _batch(self, start: int) -> list[int]:
        """UIDs of the undeleted messages from index ``start`` on, up to one batch's bytes and count."""
        batch: list[int] = []
        total = 0
        for following in self.messages[start:]:
            if following.deleted:
                continue
            if batch and (total + following.size > PREFETCH_BYTES or len(batch) >= PREFETCH_COUNT):
                break
            batch.append(following.uid)
            total += following.size
        return batch

    def _read_ahead(self, number: int) -> None:
        """Start fetching the batch after the one just fetched (message ``number`` was its first)."""
        if self._ahead is not None:
            self._ahead[1].cancel()
            self._ahead = None
        start = number
        while start < len(self.messages) and self.messages[start].uid in self.prefetched:
            start += 1
        batch = self._batch(start)
        if batch:
            self._ahead = (frozenset(batch), asyncio.create_task(self._fetch_ahead(batch)))

    async def _fetch_ahead(self, batch: list[int]) -> dict[int, bytes]:
        try:
            async with self.pool.acquire() as conn:
                return await store.fetch_raw(conn, self.inbox_id, batch)
        except TEMPORARY:
            return {}  # each message is then fetched again when asked for, and fails there if it must

    # -- \Seen ------------------------------------------------------------------------------------

    def note_retrieved(self, msg: Message) -> None:
        if not self.seen_pending:
            self._seen_since = time.monotonic()
        self.seen_pending.append(msg)

    def _take_seen(self, *, marked_too: bool) -> list[Message]:
        """Messages whose \\Seen is to be written now; those marked by DELE stay pending unless ``marked_too``."""
        if marked_too:
            taken, self.seen_pending = self.seen_pending, []
        else:
            taken = [m for m in self.seen_pending if not m.deleted]
            self.seen_pending = [m for m in self.seen_pending if m.deleted]
            self._seen_since = time.monotonic()  # those left are not due until DELE's mark is undone
        return taken

    async def write_seen(self, *, marked_too: bool = True) -> None:
        """Set \\Seen on what RETR sent, now: the background write in flight, then what is left.

        ``marked_too=False`` (QUIT, which removes them next) leaves out the messages marked by DELE.
        """
        if self._seen_task is not None:
            task, self._seen_task = self._seen_task, None
            if not self._seen_writing:
                task.cancel()  # still waiting for a pause: this write does its work
            with contextlib.suppress(asyncio.CancelledError):
                await task
        taken = self._take_seen(marked_too=marked_too)
        if taken:
            try:
                async with self.pool.acquire() as conn:
                    await store.mark_seen(conn, self.inbox_id, [m.uid for m in taken], durable=True)
            except BaseException:
                self.seen_pending[:0] = taken  # not written: still pending, for the next write
                raise

    def start_seen(self) -> None:
        """Have \\Seen written in the background, once the client pauses; one write at a time."""
        if not self.seen_pending:
            return
        if self._seen_task is not None and not self._seen_task.done():
            return  # the write waiting or in flight takes these along
        self._seen_task = asyncio.create_task(self._seen_in_background())

    async def _seen_in_background(self) -> None:
        # Wait for the client to pause (no command for SEEN_IDLE), at most until the oldest RETR is
        # SEEN_MAX_DELAY old: a fetch-and-delete client has marked most messages for removal by then.
        seen_commands = -1
        while self.activity() != seen_commands and time.monotonic() - self._seen_since < SEEN_MAX_DELAY:
            seen_commands = self.activity()
            await asyncio.sleep(SEEN_IDLE)
        self._seen_writing = True
        try:
            async with self.pool.acquire() as conn:
                while taken := self._take_seen(marked_too=False):
                    try:
                        await store.mark_seen(conn, self.inbox_id, [m.uid for m in taken], durable=False)
                    except BaseException:
                        self.seen_pending[:0] = taken  # not written: still pending, for the next write
                        raise
        except TEMPORARY + GONE as exc:
            log.warning("pop3-seen-failed client=%s error=%s", self.client, type(exc).__name__)
        finally:
            self._seen_writing = False
