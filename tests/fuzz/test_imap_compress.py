"""Fuzzing relate.imap.compress.Inflater, what reads a COMPRESS=DEFLATE client's input: whatever arrives, only
CompressError comes out, no step gives more than CHUNK octets, and a real DEFLATE stream, cut anywhere, comes back
whole."""

from __future__ import annotations

import contextlib
import itertools
import zlib

from hypothesis import example, given
from hypothesis import strategies as st

from relate.imap.compress import CHUNK, CompressError, Inflater


def _deflate(data: bytes, *, end: bool = False) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush(zlib.Z_FINISH if end else zlib.Z_SYNC_FLUSH)


def _drain(inflater: Inflater) -> bytes:
    out = b""
    while piece := inflater.step():
        assert len(piece) <= CHUNK
        out += piece
    return out


@given(st.lists(st.binary(max_size=600), max_size=6))
@example([_deflate(b"A1 NOOP\r\n", end=True), b"more"])  # data after the end of the stream
@example([b"\xff" * 64])  # not DEFLATE at all
@example([_deflate(b"x" * 2_000_000)])  # a few KB that inflate to 2 MB: 31 steps, never one big one
def test_any_input_gives_bounded_steps_or_compress_error(chunks: list[bytes]) -> None:
    """Arbitrary octets inflate in steps of at most CHUNK octets, or raise CompressError (nothing else)."""
    inflater = Inflater()
    with contextlib.suppress(CompressError):
        for chunk in chunks:
            inflater.feed(chunk)
            _drain(inflater)


@given(st.binary(max_size=20_000), st.lists(st.integers(min_value=0, max_value=20_000), max_size=8))
def test_a_stream_cut_anywhere_comes_back_whole(data: bytes, cuts: list[int]) -> None:
    """Compressed data fed in arbitrary pieces inflates to exactly what was compressed."""
    wire = _deflate(data)
    edges = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    inflater = Inflater()
    out = b""
    for start, end in itertools.pairwise(edges):
        inflater.feed(wire[start:end])
        out += _drain(inflater)
    assert out == data
    assert not inflater.pending
