"""A message's bytes while it is on its way in: in memory while small, in an unlinked temporary file past that.

Policy: a message arriving over the network is written here as it comes, so
one connection holds at most ``memory_limit`` bytes of it in memory (plus one
write buffer of ``CHUNK``) whatever its size; past that the bytes go to a
temporary file that is unlinked at once (``tempfile.TemporaryFile``, in
``$TMPDIR``), so nothing is left on disk when the process dies. The file is
written and read in worker threads: a slow disk never stalls the event loop.

Storing the message needs it in memory (parsing), but only at that moment:
:meth:`Spool.read` gives the whole message (with a prefix such as
``Return-Path:`` and ``Received:`` in the same allocation), :meth:`Spool.chunks`
streams it, and :meth:`Spool.sha256` hashes it, both a chunk at a time. A
spool made from bytes already in memory (:meth:`Spool.of`) never copies them
until asked for a prefixed copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from typing import BinaryIO

# Bytes one spool keeps in memory before it moves to a file.
MEMORY_LIMIT = 256 * 1024
# Unit of file writes and reads (and of what chunks() yields).
CHUNK = 256 * 1024


class Spool:
    """Append-only while written, then read as often as needed; close() frees it (file or memory)."""

    def __init__(self, *, memory_limit: int = MEMORY_LIMIT) -> None:
        self.memory_limit = memory_limit
        self.size = 0
        self._parts: list[bytes | memoryview] = []  # in memory: the content, in order
        self._pending: list[bytes | memoryview] = []  # on file: written at the next flush
        self._pending_size = 0
        self._file: BinaryIO | None = None

    @classmethod
    def of(cls, data: bytes) -> Spool:
        """A spool holding ``data`` (not copied), for callers that have the message in memory already."""
        spool = cls(memory_limit=max(len(data), 1))
        spool._parts.append(data)
        spool.size = len(data)
        return spool

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    async def write(self, data: bytes | memoryview) -> None:
        """Append ``data`` (kept by reference until it is written out: do not change it afterwards)."""
        if not data:
            return
        self.size += len(data)
        if self._file is None:
            self._parts.append(data)
            if self.size <= self.memory_limit:
                return
            # Past the limit: everything so far goes to a new file, and from now on every write does.
            self._pending, self._parts = self._parts, []
            self._pending_size = self.size
            self._file = await asyncio.to_thread(tempfile.TemporaryFile)
        else:
            self._pending.append(data)
            self._pending_size += len(data)
        if self._pending_size >= CHUNK:
            await self._flush()

    async def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending, self._pending_size = self._pending, [], 0
        assert self._file is not None
        await asyncio.to_thread(_write_all, self._file, pending)

    async def read(self, prefix: bytes = b"") -> bytes:
        """``prefix`` and the whole content as one bytes object (the only step that holds it all in memory)."""
        await self._flush()
        if self._file is None:
            if not prefix and len(self._parts) == 1 and isinstance(self._parts[0], bytes):
                return self._parts[0]
            return b"".join([prefix, *self._parts])
        return await asyncio.to_thread(self._read_file, prefix)

    def _read_file(self, prefix: bytes) -> bytes:
        assert self._file is not None
        data = _pread_all(self._file.fileno(), self.size, 0)
        return prefix + data if prefix else data

    async def head(self, limit: int) -> bytes:
        """The first ``limit`` bytes of the content (all of it when shorter)."""
        await self._flush()
        if self._file is None:
            out = bytearray()
            for part in self._parts:
                if len(out) >= limit:
                    break
                out += part[: limit - len(out)]
            return bytes(out)
        fd = self._file.fileno()
        return await asyncio.to_thread(_pread_all, fd, min(limit, self.size), 0)

    async def chunks(self, prefix: bytes = b"") -> AsyncIterator[bytes | memoryview]:
        """``prefix``, then the content, a chunk at a time."""
        await self._flush()
        if prefix:
            yield prefix
        if self._file is None:
            for part in self._parts:
                view = memoryview(part)
                for start in range(0, len(view), CHUNK):
                    yield view[start : start + CHUNK]
            return
        fd = self._file.fileno()
        for start in range(0, self.size, CHUNK):
            yield await asyncio.to_thread(_pread_all, fd, min(CHUNK, self.size - start), start)

    async def sha256(self, prefix: bytes = b"") -> bytes:
        """SHA-256 of ``prefix`` and the content, computed in a worker thread a chunk at a time."""
        await self._flush()
        return await asyncio.to_thread(self._sha256, prefix)

    def _sha256(self, prefix: bytes) -> bytes:
        digest = hashlib.sha256(prefix)
        if self._file is None:
            for part in self._parts:
                digest.update(part)
            return digest.digest()
        fd = self._file.fileno()
        for start in range(0, self.size, CHUNK):
            digest.update(_pread_all(fd, min(CHUNK, self.size - start), start))
        return digest.digest()

    def close(self) -> None:
        """Free the content; the spool is empty afterwards."""
        self._parts = []
        self._pending = []
        self._pending_size = 0
        self.size = 0
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


def _write_all(file: BinaryIO, parts: list[bytes | memoryview]) -> None:
    for part in parts:
        file.write(part)
    file.flush()


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    """Exactly ``size`` bytes at ``offset`` (a file we wrote ourselves cannot be shorter)."""
    data = os.pread(fd, size, offset)
    if len(data) == size:
        return data
    pieces = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            raise OSError(f"spool file ended at {offset + got} of {offset + size} bytes")
        pieces.append(more)
        got += len(more)
    return b"".join(pieces)
