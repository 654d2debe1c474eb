"""The event-loop watchdog: one log line whenever something blocks a daemon's loop for too long.

Policy: a daemon serves every client from one event loop, so a callback
that runs for 100 ms stalls every session for 100 ms. Nothing that can take
more than a few milliseconds of CPU belongs on the loop; this watchdog is
how a regression shows up. A ticker on the loop runs every ``TICK`` seconds;
when it runs ``threshold`` seconds late, the loop was held that long, and it
logs one line with how long, how much of that its thread spent on the CPU
and in the garbage collector, the kernel function its thread was asleep in
if it was (``wait=``), and where it was held::

    loop-blocked ms=734 cpu_ms=729 gc_ms=0 at=relate/imap/commands.py:312 _pattern <- relate/imap/commands.py:330 list_

The place comes from a thread of its own, which wakes every ``TICK / 2``
seconds and, when the ticker is overdue, takes the loop thread's stack right
then. Only frames of Relate Mail's own code are shown when there are any (the
rest is asyncio and the standard library); ``at=-`` when the thread could not
look (code that holds the GIL throughout, such as one long regular
expression, keeps it out too).

A stall is blocking (WARNING, ``loop-blocked``) when the loop's own work held
it: its thread computed for at least half of it or for the whole threshold,
not counting the garbage collector (whose pauses land on whatever code
allocated last), or was found asleep in a call (a blocking read, a sleep),
or it lasted a second. (On a machine with more runnable threads than cores,
300 ms of computing can take a second: the threshold's worth of CPU in one
stall is blocking however long the machine made it.) Anything else was the
machine's doing, a process left no CPU for a moment (INFO, ``loop-starved``). Every tick's lateness is observed in the
``relate_event_loop_lag_seconds`` histogram and every stall counted in
``relate_event_loop_stalls_total`` (runtime/metrics.py). Stalls are also kept in :attr:`LoopWatchdog.stalls`, which
the test suite reads to fail any test during which Relate Mail's code blocked
the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

log = logging.getLogger("relate.runtime")

TICK = 0.02
_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)  # .../relate
_MAX_FRAMES = 8
_NOT_A_CALL = ("futex", "poll", "select")  # kernel waits that are not a blocking call of ours (see _asleep)


@dataclass(frozen=True)
class Stall:
    seconds: float
    cpu_seconds: float  # CPU time of the loop's thread during the stall
    where: str  # the loop thread's stack while it was blocked, innermost first
    ours: bool  # whether any of that stack is Relate Mail's own code
    asleep: str = ""  # the kernel function the loop's thread was found asleep in (a call, not a wait for a CPU)
    gc_seconds: float = 0.0  # of the stall, spent in the garbage collector on the loop's thread
    threshold: float = 0.1  # the watchdog's: a stall is at least this long

    @property
    def blocking(self) -> bool:
        """Whether the loop's own work held it: it computed for at least half the stall or for the threshold
        (garbage collection aside), slept in a call, or the stall lasted a second; not a machine too busy to
        run the process, nor the garbage collector, for a moment."""
        if self.asleep or self.seconds >= 1.0:
            return True
        return self.cpu_seconds - self.gc_seconds >= min(self.seconds / 2, self.threshold)


def _asleep(native_id: int) -> str:
    """The kernel function a thread of this process is asleep in (Linux: state S or D), or "" when it is
    runnable, waits for the GIL or a lock (futex), or waits in poll/select/epoll: that is the event loop's
    own wait for I/O, which a stall that has just ended is back in by the time it is looked at."""
    task = Path(f"/proc/self/task/{native_id}")
    try:
        state = (task / "stat").read_text().rpartition(")")[2].split()[:1]
        wchan = (task / "wchan").read_text().strip()
    except OSError:
        return ""
    if state not in (["S"], ["D"]) or wchan in ("", "0") or any(w in wchan for w in _NOT_A_CALL):
        return ""
    return wchan


def _describe(frame: FrameType | None) -> tuple[str, bool]:
    ours: list[str] = []
    other: list[str] = []
    held_in = ""  # the innermost frame when it is not ours: where our call was held (a library, a C call's caller)
    if frame is not None and not frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        held_in = f"{frame.f_code.co_filename.rpartition('site-packages/')[2]}:{frame.f_lineno} {frame.f_code.co_name}"
    while frame is not None:
        filename = frame.f_code.co_filename
        text = f"{filename}:{frame.f_lineno} {frame.f_code.co_name}"
        if filename.startswith(_PACKAGE_DIR):
            ours.append("relate" + text[len(_PACKAGE_DIR) :])
        else:
            other.append(text)
        frame = frame.f_back
    if not ours:
        return " <- ".join(other[:_MAX_FRAMES]) or "-", False
    where = " <- ".join(ours[:_MAX_FRAMES])
    return (f"{where} (in {held_in})" if held_in else where), True


class LoopWatchdog:
    def __init__(self, threshold: float = 0.1) -> None:
        self.threshold = threshold
        self._observe: Callable[[float], None] = _nothing  # the metrics (runtime/metrics.py), from start()
        self._stalled: Callable[[str], None] = _nothing
        self.stalls: list[Stall] = []
        self._last = time.monotonic()
        self._cpu_last = 0.0
        self._gc_last = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id = 0
        self._loop_native_id = 0
        self._gc_total = 0.0  # seconds the loop's thread has spent collecting garbage
        self._gc_began = 0.0
        # What the watchdog thread saw of the stall in progress: (the tick it followed, where, ours, asleep).
        self._seen: tuple[float, str, bool, str] | None = None

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Watch ``loop`` (the running one by default); call from the loop's thread."""
        from relate.runtime import metrics  # here: relatectl imports this module; prometheus_client costs 50 ms

        self._observe = metrics.loop_lag
        self._stalled = metrics.stalled
        self._loop = loop or asyncio.get_running_loop()
        self._loop_thread_id = threading.get_ident()
        self._loop_native_id = threading.get_native_id()
        self._last = time.monotonic()
        self._cpu_last = time.thread_time()
        self._handle = self._loop.call_later(TICK, self._tick)
        gc.callbacks.append(self._gc)
        self._thread = threading.Thread(target=self._watch, name="relate-loop-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._gc)
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
        if self._thread is not None:
            self._thread.join(timeout=1)

    def _gc(self, phase: str, _info: dict[str, int]) -> None:
        if threading.get_ident() != self._loop_thread_id:
            return
        if phase == "start":
            self._gc_began = time.monotonic()
        else:
            self._gc_total += time.monotonic() - self._gc_began

    def _tick(self) -> None:
        """On the loop, every TICK: a tick that comes late ends a stall, which is reported here. The loop
        itself notices, so no stall is missed, not even one that held the GIL (and the thread) throughout."""
        now = time.monotonic()
        cpu = time.thread_time()
        late = now - self._last - TICK
        self._observe(late)
        if late > self.threshold:
            seen = self._seen if self._seen is not None and self._seen[0] == self._last else None
            where, ours, asleep = seen[1:] if seen is not None else ("-", False, "")
            gc_seconds = self._gc_total - self._gc_last
            self._report(Stall(late, cpu - self._cpu_last, where, ours, asleep, gc_seconds, self.threshold))
        self._last, self._cpu_last, self._gc_last = now, cpu, self._gc_total
        assert self._loop is not None
        self._handle = self._loop.call_later(TICK, self._tick)

    def _report(self, stall: Stall) -> None:
        self.stalls.append(stall)
        self._stalled("blocked" if stall.blocking else "starved")
        log.log(
            logging.WARNING if stall.blocking else logging.INFO,
            "%s ms=%d cpu_ms=%s gc_ms=%d %sat=%s",
            "loop-blocked" if stall.blocking else "loop-starved",
            stall.seconds * 1000,
            f"{stall.cpu_seconds * 1000:.0f}",
            stall.gc_seconds * 1000,
            f"wait={stall.asleep} " if stall.asleep else "",
            stall.where,
        )

    def _watch(self) -> None:
        """In a thread of its own: while a stall goes on, note where the loop's thread is stuck."""
        while not self._stop.wait(TICK / 2):
            last = self._last
            if time.monotonic() - last <= self.threshold + TICK or (self._seen is not None and self._seen[0] == last):
                continue
            asleep = _asleep(self._loop_native_id)  # first: the stack walk below holds the GIL
            frame = sys._current_frames().get(self._loop_thread_id)
            if _idle(frame):
                continue  # the loop is already back in its selector: the tick is about to report the stall
            where, ours = _describe(frame)
            if self._last != last:
                continue  # the stall ended while we looked: what was seen may belong to what came after it
            self._seen = (last, where, ours, asleep)


def _nothing(_value: object) -> None:
    pass


def _idle(frame: FrameType | None) -> bool:
    """Whether the loop's thread is in the event loop's own wait for I/O (not stuck in a callback)."""
    return frame is not None and frame.f_code.co_name == "select" and frame.f_code.co_filename.endswith("selectors.py")
