"""How many bytes of mail one daemon holds in memory at once.

Policy: a message on its way in is spooled to disk while it arrives; only
storing it (parsing, hashing, handing it to PostgreSQL) needs it in memory,
at about twice its size. Every such step reserves that many bytes from the
daemon's budget first (``smtp.memory_budget``, ``imap.memory_budget``) and
gives them back when done. A reservation that does not fit waits, first come
first served, for at most ``wait`` seconds; then :class:`BudgetExhausted` is
raised, which the protocol answers as a temporary failure (SMTP ``452 4.3.1``,
IMAP ``NO [LIMIT]``) instead of letting memory grow. A reservation larger
than the whole budget is cut down to the budget, so a message within the size
limit always fits once nothing else is held.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class BudgetExhausted(Exception):
    """No room in the memory budget within the time allowed."""


class MemoryBudget:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a memory budget must be at least one byte")
        self.limit = limit
        self.in_use = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    def _fits(self, size: int) -> bool:
        return self.in_use + size <= self.limit

    async def acquire(self, size: int, *, wait: float) -> int:
        """Reserve ``size`` bytes (at most the whole budget); returns the amount to :meth:`release`."""
        size = max(0, min(size, self.limit))
        if not self._waiters and self._fits(size):
            self.in_use += size
            return size
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, future)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(future), wait)
        except BaseException as exc:
            if future.done() and not future.cancelled():
                self.release(size)  # granted just as the wait ended: give it back
            else:
                future.cancel()
                self._waiters.remove(entry)
                self._wake()  # a reservation behind this one may fit now
            if isinstance(exc, TimeoutError):
                raise BudgetExhausted(f"no room for {size} bytes within {wait:g} s") from None
            raise
        return size

    def release(self, size: int) -> None:
        self.in_use -= size
        self._wake()

    def _wake(self) -> None:
        # First come, first served: the head of the queue is granted before anyone behind it.
        while self._waiters and self._fits(self._waiters[0][0]):
            size, future = self._waiters.popleft()
            if future.cancelled():
                continue
            self.in_use += size
            future.set_result(None)

    @asynccontextmanager
    async def reserve(self, size: int, *, wait: float) -> AsyncIterator[None]:
        granted = await self.acquire(size, wait=wait)
        try:
            yield
        finally:
            self.release(granted)
