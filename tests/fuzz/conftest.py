"""Property-based tests of every parser: whatever the input, only the parser's own error comes out, fast.

Each module here covers one parser (``test_<parser>.py``). Its tests are
``@given`` property tests over bytes or text a client controls, seeded with
``@example`` for every input that once broke something; they call the pure
parser (no sockets, no event loop), so ``scripts/fuzz`` can drive the same
tests for minutes each. They do not set ``max_examples`` or ``deadline``:
the profile does.

- ``ci`` (the default): 150 examples per test and a 1 s deadline per input,
  which catches quadratic blow-ups without failing on a busy CI machine.
- ``fuzz`` (``FUZZ_PROFILE=fuzz``, what ``scripts/fuzz`` uses): a 50 ms
  deadline, the bound every parser must keep, and ``FUZZ_EXAMPLES``
  examples per test (scripts/fuzz sets it from a time budget).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=150, deadline=1000, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "5000")),
    deadline=50,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile(os.environ.get("FUZZ_PROFILE", "ci"))
