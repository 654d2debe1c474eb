"""relatectl's size parser (relatectl.sizes.parse_size, for `user quota --storage`): only ValueError, exact units."""

from __future__ import annotations

import contextlib

from hypothesis import example, given
from hypothesis import strategies as st

from relatectl.sizes import MAX_BYTES, format_size, parse_size

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}
_PIECES = st.sampled_from(
    ["1", "0", "9" * 19, "9" * 20, ".", "5", " ", "K", "m", "G", "t", "P", "B", "iB", "i", "-", "e3"]
)


@given(st.one_of(st.text(max_size=40), st.lists(_PIECES, max_size=12).map("".join)))
@example("9" * 10000)
@example("1" + "0" * 18 + "P")
@example("1.")
@example(".5G")
def test_parse_size_raises_only_value_error(text: str) -> None:
    """Any text is a size from 1 byte to 2^63-1, or ValueError."""
    with contextlib.suppress(ValueError):
        assert 1 <= parse_size(text) <= MAX_BYTES


@given(st.integers(1, 8191), st.sampled_from(sorted(_UNITS)), st.sampled_from(["", "B", "iB"]), st.booleans())
def test_units_are_binary_and_case_blind(number: int, unit: str, suffix: str, lower: bool) -> None:
    """``<n><unit>[B|iB]`` is n times 1024 to the unit's power (up to 8191P), in any case; a bare B is bytes."""
    if not unit and suffix == "iB":
        suffix = "B"
    text = f"{number}{unit}{suffix}"
    assert parse_size(text.lower() if lower else text) == number * _UNITS[unit]


@given(st.integers(1, MAX_BYTES // 2))
def test_plain_numbers_and_shown_sizes_round_trip(value: int) -> None:
    """A number of bytes parses to itself; what format_size shows parses back to within its rounding."""
    assert parse_size(str(value)) == value
    shown = parse_size(format_size(value).replace(" ", ""))
    assert abs(shown - value) <= value // 20 + 1
