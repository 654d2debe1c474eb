"""The event-loop watchdog: a blocked loop is reported once, with how long and where."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from relate.runtime.looplag import LoopWatchdog, Stall


def _block(seconds: float) -> None:
    time.sleep(seconds)


async def test_a_blocked_loop_is_logged_once_with_duration_and_place(caplog: pytest.LogCaptureFixture) -> None:
    """A callback that holds the loop for 300 ms gives one loop-blocked line naming the blocking function."""
    watchdog = LoopWatchdog(0.1)
    watchdog.start()
    try:
        await asyncio.sleep(0.05)
        with caplog.at_level(logging.WARNING, logger="relate.runtime"):
            _block(0.3)
            await asyncio.sleep(0.2)
    finally:
        watchdog.stop()
    # (The suite's own watchdog, on this loop too, logs the same stall.)
    lines = [r.getMessage() for r in caplog.records if "loop-blocked" in r.getMessage()]
    assert lines
    assert all("_block" in line for line in lines)
    assert len(watchdog.stalls) == 1
    assert 0.2 <= watchdog.stalls[0].seconds <= 0.6


async def test_a_busy_but_responsive_loop_is_not_reported() -> None:
    """Many short callbacks (each well under the threshold) are not a stall."""
    watchdog = LoopWatchdog(0.1)
    watchdog.start()
    try:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            _block(0.01)
            await asyncio.sleep(0)
    finally:
        watchdog.stop()
    assert watchdog.stalls == []


def _compute(seconds: float) -> int:
    deadline = time.thread_time() + seconds
    n = 0
    while time.thread_time() < deadline:
        n += 1
    return n


async def test_computing_on_the_loop_is_blocking_and_a_sleep_too() -> None:
    """A callback computing for 300 ms, and one sleeping 300 ms in a call, both count as blocking the loop."""
    watchdog = LoopWatchdog(0.1)
    watchdog.start()
    try:
        await asyncio.sleep(0.05)
        _compute(0.3)
        await asyncio.sleep(0.1)
        _block(0.3)
        await asyncio.sleep(0.2)
    finally:
        watchdog.stop()
    assert len(watchdog.stalls) == 2
    computed, slept = watchdog.stalls
    assert computed.blocking
    assert computed.cpu_seconds is not None
    assert computed.cpu_seconds >= 0.15
    assert slept.blocking
    assert "sleep" in slept.asleep  # the kernel function it slept in (hrtimer_nanosleep, do_nanosleep)


async def test_computing_a_threshold_of_cpu_is_blocking_however_long_the_machine_made_it() -> None:
    """On a machine with more runnable threads than cores, 150 ms of computing can stretch to a second: a stall
    in which the loop's thread computed the whole threshold is blocking even though that is under half of it."""
    stretched = Stall(seconds=0.9, cpu_seconds=0.15, where="-", ours=False, threshold=0.1)
    starved = Stall(seconds=0.9, cpu_seconds=0.01, where="-", ours=False, threshold=0.1)
    collecting = Stall(seconds=0.9, cpu_seconds=0.3, where="-", ours=False, gc_seconds=0.29, threshold=0.1)
    assert stretched.blocking
    assert not starved.blocking
    assert not collecting.blocking


async def test_garbage_collection_is_counted_apart() -> None:
    """A stall spent in the garbage collector is reported with its gc time and is not blocking."""
    import gc

    # Enough objects for a full collection to take about 0.15 s on this machine: well over the threshold
    # and well under the second after which any stall counts as blocking (a slow machine took 1.1 s for
    # a fixed 4 million, and a loaded one can stretch the collection several times over).
    gc.disable()
    junk = [[i] for i in range(200_000)]
    began = time.monotonic()
    gc.collect()
    per_object = (time.monotonic() - began) / len(junk)
    junk.extend([i] for i in range(min(4_000_000, int(0.15 / max(per_object, 1e-9)))))
    gc.enable()
    watchdog = LoopWatchdog(0.05)
    watchdog.start()
    try:
        await asyncio.sleep(0.05)
        gc.collect()
        await asyncio.sleep(0.1)
    finally:
        watchdog.stop()
        del junk
    assert watchdog.stalls, "the collection did not stall the loop"
    stall = max(watchdog.stalls, key=lambda s: s.gc_seconds)
    assert stall.gc_seconds >= stall.seconds / 2
    assert not stall.blocking
