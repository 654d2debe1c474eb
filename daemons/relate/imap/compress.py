"""COMPRESS=DEFLATE (RFC 4978): the connection's octets both ways as raw DEFLATE streams (RFC 1951).

Policy:

- Offered, and allowed, once the client is logged in (§3: authenticated and
  selected states), over TLS or not (DEFLATE runs above TLS: the data is
  compressed, then encrypted). One COMPRESS per connection: another is
  ``NO [COMPRESSIONACTIVE]``; a mechanism other than DEFLATE is BAD. Commands
  the client sent after COMPRESS before its answer (in clear) get COMPRESS
  refused (NO) and run as sent.
- Output: each write is compressed at ``LEVEL`` and sync-flushed (§4: the
  client gets every response whole, at once). The session writes a large
  response a slice of at most 256 KiB at a time and waits for the socket in
  between (imap/session.py), so compressing one slice is the most the event
  loop does at once (about 3 ms at 100 MB/s).
- Input: inflated at most ``CHUNK`` octets at a time, and only while the
  session's reader has room: when it is full (twice its line limit) the
  socket stops being read and the rest stays compressed until the session
  takes what it holds. A few KB that inflate to gigabytes cost what the
  session reads, in steps of ``CHUNK``, never more memory than an
  uncompressed client could make it hold; an overlong line is refused as
  ever. Data that is not DEFLATE, or a stream the client ended, closes the
  connection (the session logs its one line, ``end=network-error:deflate``).

How: the connection's transport (plain, or asyncio's TLS one) gets an
:class:`_Inflating` protocol in front of the session's stream protocol, and
the session's reader and writer get a :class:`DeflateTransport` around it,
as asyncio's own ``StreamWriter.start_tls`` swaps a TLS transport in (the
attributes set are asyncio's, checked by the COMPRESS tests).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["CHUNK", "LEVEL", "CompressError", "DeflateTransport", "Inflater", "start"]

LEVEL = 6  # zlib's default, Dovecot's too: about 100 MB/s on one core here
CHUNK = 64 * 1024  # octets inflated at once


class CompressError(ValueError):
    """Input that is not a DEFLATE stream (or goes on after the stream's end)."""


class Inflater:
    """Raw DEFLATE input, inflated at most ``CHUNK`` octets per step, on demand (pure; no I/O)."""

    def __init__(self) -> None:
        self._zlib = zlib.decompressobj(-15)
        self._pending = b""  # compressed octets not inflated yet

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def feed(self, data: bytes) -> None:
        self._pending = self._pending + data if self._pending else data

    def step(self) -> bytes:
        """The next at most ``CHUNK`` inflated octets (b"" when all that came is inflated); CompressError for
        data that is not DEFLATE or follows the end of the stream."""
        if not self._pending:
            return b""
        before = self._zlib
        if before.eof:
            raise CompressError("data after the end of the DEFLATE stream")
        try:
            out = self._zlib.decompress(self._pending, CHUNK)
        except zlib.error as exc:
            raise CompressError(str(exc)) from None
        self._pending = self._zlib.unconsumed_tail
        if self._zlib.eof and (self._zlib.unused_data or self._pending):
            raise CompressError("data after the end of the DEFLATE stream")
        return out


class _Inflating(asyncio.Protocol):
    """The connection's protocol once compressing: inflates for the session's stream protocol, passes the rest on."""

    def __init__(self, app: asyncio.Protocol, outer: DeflateTransport) -> None:
        self.app = app
        self.outer = outer

    def data_received(self, data: bytes) -> None:
        self.outer.incoming(data)

    def eof_received(self) -> bool | None:
        return self.app.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.app.connection_lost(exc)

    def pause_writing(self) -> None:
        self.app.pause_writing()

    def resume_writing(self) -> None:
        self.app.resume_writing()


class DeflateTransport(asyncio.Transport):
    """What the session's reader and writer use once compressing: DEFLATE on write, inflate with flow control."""

    def __init__(self, inner: asyncio.Transport, app: asyncio.Protocol, on_error: Callable[[str], None]) -> None:
        super().__init__()
        self._inner = inner
        self._app = app
        self._on_error = on_error
        self._deflate = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)
        self._inflater = Inflater()
        self._paused = False  # the session's reader is full

    # -- writing --------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if data and not self._inner.is_closing():
            self._inner.write(self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH))

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self._inner.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._inner.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._inner.set_write_buffer_limits(high, low)

    # -- the connection ---------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._inner.is_closing()

    def close(self) -> None:
        self._inner.close()

    def abort(self) -> None:
        self._inner.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._inner.get_extra_info(name, default)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._app

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._app = protocol

    # -- reading --------------------------------------------------------------------------------

    def is_reading(self) -> bool:
        return not self._paused

    def pause_reading(self) -> None:
        self._paused = True
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._paused = False
        self._inflate()  # what waited compressed first; it may fill the reader again
        if not self._paused:
            self._inner.resume_reading()

    def incoming(self, data: bytes) -> None:
        self._inflater.feed(data)
        self._inflate()

    def _inflate(self) -> None:
        try:
            while not self._paused and (out := self._inflater.step()):
                self._app.data_received(out)  # the reader may pause us (pause_reading) right here
        except CompressError as exc:
            self._on_error(str(exc))
            self._inner.abort()


def start(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, on_error: Callable[[str], None]) -> None:
    """Compress the connection of ``writer`` and ``reader`` from now on, both ways.

    The caller has written its last uncompressed octets; octets the reader holds are the client's first
    compressed ones (sent after it read the answer) and are inflated first.
    """
    inner = writer.transport
    assert isinstance(inner, asyncio.Transport)
    app = inner.get_protocol()
    assert isinstance(app, asyncio.StreamReaderProtocol)
    outer = DeflateTransport(inner, app, on_error)
    inner.set_protocol(_Inflating(app, outer))
    # As StreamWriter.start_tls swaps in a TLS transport: the writer writes through ours, the stream protocol
    # knows it, and the reader pauses and resumes it (so inflating stops while the reader is full).
    writer._transport = outer  # type: ignore[attr-defined]
    app._replace_writer(writer)  # type: ignore[attr-defined]
    reader._transport = outer  # type: ignore[attr-defined]
    buffered: bytearray = reader._buffer  # type: ignore[attr-defined]
    early, buffered[:] = bytes(buffered), b""
    if early:
        outer.incoming(early)
