"""Teaching rspamd from the users' moves: into Junk is ``learnspam``, out of Junk (but not into Trash) ``learnham``.

Policy:

- A move or copy (IMAP MOVE/COPY, REST move) queues the lesson in its own
  transaction (relate.store.spam.note_moves); nothing in it waits on rspamd.
- The SMTP daemon works the queue in the background while
  ``smtp.rspamd.controller_url`` is set: every ``smtp.rspamd.learn_interval``
  seconds it claims up to ``BATCH`` due lessons (each leased for the call's
  timeout, so several daemons share the work and a daemon that dies hands
  its lessons on) and posts each message to the controller.
- Once per message and verdict: a message learnt as spam is not sent again
  until it is moved out of Junk (then learnt as ham), and rspamd's own learn
  cache answers "already learned" for bytes it has seen, which counts as done.
- A failed call is tried again after ``RETRY_STEP`` seconds times the
  attempts so far, at most ``smtp.rspamd.learn_attempts`` times; then the
  lesson is given up with one ``spam-learn-failed`` line. A message gone
  meanwhile (expunged and swept), or larger than ``smtp.rspamd.max_size``
  (it was never checked either), is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from relate.config import RspamdConfig
from relate.spam.rspamd import Rspamd, Unreachable
from relate.store import db
from relate.store import spam as store

log = logging.getLogger("relate.spam")

BATCH = 20  # lessons claimed at once


class Learner:
    """The background task of one SMTP daemon; does nothing while no controller is configured."""

    def __init__(self, pool: asyncpg.Pool, rspamd: Rspamd, cfg: RspamdConfig) -> None:
        self.pool = pool
        self.rspamd = rspamd
        self.cfg = cfg
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.cfg.controller_url and self._task is None:
            self._task = asyncio.create_task(self._run(), name="spam-learner")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                while await self.work() == BATCH:
                    pass  # more may be due at once
            except db.UNAVAILABLE as exc:
                log.warning("spam-learn-tempfail error=%s", type(exc).__name__)
            except Exception:  # a bug: logged, and the task lives on to try the next round
                log.exception("spam-learn-error")
            await asyncio.sleep(self.cfg.learn_interval)

    async def work(self) -> int:
        """Claim due lessons and give each to rspamd; how many were claimed."""
        lessons = await store.claim(self.pool, BATCH, self.cfg.timeout * 2)
        for lesson in lessons:
            await self._teach(lesson)
        return len(lessons)

    async def _teach(self, lesson: store.Lesson) -> None:
        message, size = await store.message(self.pool, lesson, self.cfg.max_size)
        if message is None:
            reason = "message gone" if size is None else f"larger than smtp.rspamd.max_size ({size} bytes)"
            await store.failed(self.pool, lesson, reason, attempts=0)
            return
        try:
            await self.rspamd.learn(lesson.wanted, message)
        except Unreachable as exc:
            if await store.failed(self.pool, lesson, str(exc), attempts=self.cfg.learn_attempts):
                log.warning(
                    "spam-learn-failed user=%d as=%s attempts=%d error=%s",
                    lesson.user_id,
                    lesson.wanted,
                    lesson.attempts + 1,
                    exc,
                )
            return
        await store.learnt(self.pool, lesson)
        log.info("spam-learnt user=%d as=%s size=%d", lesson.user_id, lesson.wanted, len(message))
