"""The DATA reader's line-length check agrees with its definition: the longest CRLF-separated line, CRLF counted."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relate.smtp.data import _too_long

PIECES = st.sampled_from([b"\r\n", b"\r", b"\n", b"\r\r\n", b".", b"x", b"xxxxxxxxxx", b"y" * 37])


@given(st.lists(PIECES, max_size=60), st.integers(min_value=3, max_value=80))
def test_too_long_is_the_longest_line_past_the_limit(pieces: list[bytes], limit: int) -> None:
    """_too_long(region, limit) is exactly 'some line plus its CRLF is longer than limit'."""
    region = b"".join(pieces)
    assert _too_long(region, limit) == (max(map(len, region.split(b"\r\n"))) + 2 > limit)
