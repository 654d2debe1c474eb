"""The event-loop watchdog: one log line whenever something blocks a daemon's loop for too long.

Policy: a daemon serves every client from one event loop, so a callback
that runs for 100 ms stalls every session for 100 ms. Nothing that can take
more than a few milliseconds of CPU belongs on the loop; this watchdog is
how a regression shows up. A ticker on the loop stamps the time every
``TICK`` seconds; a thread of its own checks the stamp. When the loop has not
ticked for ``threshold`` seconds, the thread takes the loop thread's stack
(where it is stuck, right then); when the loop ticks again, it logs one
line with how long it was blocked and that stack::

    loop-blocked ms=734 at=relate/imap/commands.py:312 _pattern <- relate/imap/commands.py:330 list_ <- ...

Only frames of Relate Mail's own code are shown when there are any (the
rest is asyncio and the standard library). The thread costs one wake-up
every ``TICK / 2`` seconds. Stalls are also kept in :attr:`LoopWatchdog.stalls`,
which the test suite reads to fail any test during which the daemon under
test blocked its loop.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

log = logging.getLogger("relate.runtime")

TICK = 0.02
_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)  # .../relate
_MAX_FRAMES = 8


@dataclass(frozen=True)
class Stall:
    seconds: float
    where: str  # the loop thread's stack while it was blocked, innermost first
    ours: bool  # whether any of that stack is Relate Mail's own code


def _describe(frame: FrameType | None) -> tuple[str, bool]:
    ours: list[str] = []
    other: list[str] = []
    while frame is not None:
        filename = frame.f_code.co_filename
        text = f"{filename}:{frame.f_lineno} {frame.f_code.co_name}"
        if filename.startswith(_PACKAGE_DIR):
            ours.append("relate" + text[len(_PACKAGE_DIR) :])
        else:
            other.append(text)
        frame = frame.f_back
    chosen = ours or other
    return " <- ".join(chosen[:_MAX_FRAMES]) or "-", bool(ours)


class LoopWatchdog:
    def __init__(self, threshold: float = 0.1) -> None:
        self.threshold = threshold
        self.stalls: list[Stall] = []
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id = 0

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Watch ``loop`` (the running one by default); call from the loop's thread."""
        self._loop = loop or asyncio.get_running_loop()
        self._loop_thread_id = threading.get_ident()
        self._last = time.monotonic()
        self._tick()
        self._thread = threading.Thread(target=self._watch, name="relate-loop-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
        if self._thread is not None:
            self._thread.join(timeout=1)

    def _tick(self) -> None:
        self._last = time.monotonic()
        assert self._loop is not None
        self._handle = self._loop.call_later(TICK, self._tick)

    def _watch(self) -> None:
        blocked_since: float | None = None
        where, ours = "-", False
        while not self._stop.wait(TICK / 2):
            last = self._last
            now = time.monotonic()
            if blocked_since is None:
                if now - last > self.threshold + TICK:
                    blocked_since = last
                    where, ours = _describe(sys._current_frames().get(self._loop_thread_id))
            elif last > blocked_since:
                # The loop ticked again: the stall is over.
                stall = Stall(last - blocked_since - TICK, where, ours)
                self.stalls.append(stall)
                log.warning("loop-blocked ms=%d at=%s", stall.seconds * 1000, stall.where)
                blocked_since = None
