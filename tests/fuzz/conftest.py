"""Property-based tests of every parser: whatever the input, only the parser's own error comes out, fast.

Each module here covers one parser (``test_<parser>.py``). Its tests are
``@given`` property tests over bytes or text a client controls, seeded with
``@example`` for every input that once broke something; they call the pure
parser (no sockets, no event loop), so ``scripts/fuzz`` can drive the same
tests for minutes each. They do not set ``max_examples`` or ``deadline``:
the profile does.

- ``ci`` (the default): 150 examples per test and a 1 s deadline per input,
  which catches quadratic blow-ups without failing on a busy CI machine.
- ``fuzz`` (``FUZZ_PROFILE=fuzz``, what ``scripts/fuzz`` uses): 50 ms of
  CPU per input, the bound every parser must keep, and ``FUZZ_EXAMPLES``
  examples per test (scripts/fuzz sets it from a time budget). The bound is
  CPU time of the test's thread, not wall time, so a busy machine does not
  make a fast input fail; the cheapest of three runs with the garbage
  collector paused counts (see ``_cpu_bounded``); a wall-clock deadline of
  1 s stays as a backstop.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

FUZZ_CPU_MS = 50

settings.register_profile(
    "ci", max_examples=150, deadline=1000, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "5000")),
    deadline=1000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile(os.environ.get("FUZZ_PROFILE", "ci"))


class CpuDeadlineExceeded(AssertionError):
    """An input took more than FUZZ_CPU_MS of CPU: a parser that is not linear, or one limit too loose."""


def _cpu_bounded(inner: Callable[..., Any]) -> Callable[..., Any]:
    """``inner`` held to FUZZ_CPU_MS of CPU per input: the cheapest of up to three runs counts, each with
    the garbage collector paused, so a collection of hypothesis's own heap or a cache warmed by the first
    call is not charged to the parser; an input over the bound three times is slow, not unlucky."""

    def run(*args: Any, **kwargs: Any) -> Any:
        cheapest = float("inf")
        for _ in range(3):
            collecting = gc.isenabled()
            gc.disable()
            try:
                start = time.thread_time()
                result = inner(*args, **kwargs)
                spent = (time.thread_time() - start) * 1000
            finally:
                if collecting:
                    gc.enable()
            cheapest = min(cheapest, spent)
            if cheapest <= FUZZ_CPU_MS:
                return result
        raise CpuDeadlineExceeded(f"{cheapest:.1f} ms of CPU for one input (the bound is {FUZZ_CPU_MS} ms)")

    return run


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under the fuzz profile, every input of every property test here is held to FUZZ_CPU_MS of CPU
    (hypothesis's documented hook: a test's ``hypothesis.inner_test`` may be wrapped)."""
    if os.environ.get("FUZZ_PROFILE") != "fuzz":
        return
    for item in items:
        test = getattr(item, "obj", None)
        handle = getattr(test, "hypothesis", None)
        if handle is not None:
            handle.inner_test = _cpu_bounded(handle.inner_test)
