"""The event-loop watchdog: one log line whenever something blocks a daemon's loop for too long.

Policy: a daemon serves every client from one event loop, so a callback
that runs for 100 ms stalls every session for 100 ms. Nothing that can take
more than a few milliseconds of CPU belongs on the loop; this watchdog is
how a regression shows up. A ticker on the loop stamps the time every
``TICK`` seconds; a thread of its own checks the stamp. When the loop has not
ticked for ``threshold`` seconds, the thread takes the loop thread's stack
(where it is stuck, right then); when the loop ticks again, it logs one
line with how long it was blocked, how much of that the loop's thread spent
on the CPU (near the whole stall: code computing on the loop; near zero: a
blocking call, or a machine too busy to run the process), and that stack::

    loop-blocked ms=734 cpu_ms=729 at=relate/imap/commands.py:312 _pattern <- relate/imap/commands.py:330 list_

Only frames of Relate Mail's own code are shown when there are any (the
rest is asyncio and the standard library). A stall during which the loop's
thread was ready to run but hardly did (runnable, under half of it on the
CPU, under a second) was the machine's doing, not the daemon's: it is logged
at INFO as ``loop-starved`` instead. A thread found asleep in a call during
the stall (a blocking read, a sleep) is blocking whatever its CPU time. The thread costs one wake-up
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
    cpu_seconds: float | None  # CPU time of the loop's thread during the stall (None where unmeasurable)
    where: str  # the loop thread's stack while it was blocked, innermost first
    ours: bool  # whether any of that stack is Relate Mail's own code
    asleep: bool = False  # the loop's thread was found asleep in a call (not waiting for a CPU)

    @property
    def blocking(self) -> bool:
        """Whether the loop's own work held it: it computed for at least half the stall, slept in a call,
        or the stall lasted a second; not a machine too busy to run the process for a moment."""
        if self.cpu_seconds is None or self.asleep or self.seconds >= 1.0:
            return True
        return self.cpu_seconds >= self.seconds / 2


def _asleep(native_id: int) -> bool:
    """Whether a thread of this process is asleep in a blocking call (Linux: state S or D, in a kernel
    function other than futex wait, which is where a thread waits for the GIL or a lock), not runnable."""
    task = Path(f"/proc/self/task/{native_id}")
    try:
        state = (task / "stat").read_text().rpartition(")")[2].split()[:1]
        wchan = (task / "wchan").read_text().strip()
    except OSError:
        return False
    return state in (["S"], ["D"]) and wchan not in ("", "0") and "futex" not in wchan


def _thread_clock(thread_id: int) -> int | None:
    """The CPU-time clock of a thread (Linux, BSD), or None."""
    try:
        return time.pthread_getcpuclockid(thread_id)
    except (AttributeError, OSError):
        return None


def _cpu(clock: int | None) -> float | None:
    if clock is None:
        return None
    try:
        return time.clock_gettime(clock)
    except OSError:
        return None


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
        self._loop_native_id = 0

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Watch ``loop`` (the running one by default); call from the loop's thread."""
        self._loop = loop or asyncio.get_running_loop()
        self._loop_thread_id = threading.get_ident()
        self._loop_native_id = threading.get_native_id()
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
        clock = _thread_clock(self._loop_thread_id)
        blocked_since: float | None = None
        where, ours, asleep = "-", False, False
        cpu_then = cpu_start = _cpu(clock)
        while not self._stop.wait(TICK / 2):
            last = self._last
            now = time.monotonic()
            if blocked_since is None:
                if now - last <= TICK * 2:
                    cpu_then = _cpu(clock)  # the loop's CPU time when it was last seen ticking
                elif now - last > self.threshold + TICK:
                    blocked_since = last
                    cpu_start = cpu_then
                    asleep = _asleep(self._loop_native_id)  # first: the stack walk below holds the GIL
                    where, ours = _describe(sys._current_frames().get(self._loop_thread_id))
            elif last > blocked_since:
                # The loop ticked again: the stall is over.
                cpu_end = _cpu(clock)
                cpu = None if cpu_start is None or cpu_end is None else max(0.0, cpu_end - cpu_start)
                stall = Stall(last - blocked_since - TICK, cpu, where, ours, asleep)
                self.stalls.append(stall)
                log.log(
                    logging.WARNING if stall.blocking else logging.INFO,
                    "%s ms=%d cpu_ms=%s at=%s",
                    "loop-blocked" if stall.blocking else "loop-starved",
                    stall.seconds * 1000,
                    "-" if cpu is None else f"{cpu * 1000:.0f}",
                    stall.where,
                )
                blocked_since = None
                cpu_then = cpu_end
