"""The spool a message is written to as it arrives: memory while small, an unlinked file past that."""

from __future__ import annotations

import hashlib
import os

from relate.mail.spool import CHUNK, Spool


def descriptors() -> dict[str, str]:
    """Every open descriptor of this process and what it points at (listdir's own, gone meanwhile, left out)."""
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:
            continue
    return found


def opened(before: dict[str, str]) -> list[str]:
    """What each descriptor opened since ``before`` points at."""
    return [target for fd, target in descriptors().items() if before.get(fd) != target]


async def fill(spool: Spool, data: bytes, piece: int) -> None:
    for start in range(0, len(data), piece):
        await spool.write(data[start : start + piece])


async def test_small_content_stays_in_memory_and_reads_back() -> None:
    """Below the limit nothing goes to disk; read, head, chunks and sha256 all give the content back."""
    data = os.urandom(10_000)
    spool = Spool(memory_limit=64 * 1024)
    await fill(spool, data, 999)
    assert not spool.on_disk
    assert spool.size == len(data)
    assert await spool.read() == data
    assert await spool.read(b"Return-Path: <>\r\n") == b"Return-Path: <>\r\n" + data
    assert await spool.head(100) == data[:100]
    assert b"".join([bytes(c) async for c in spool.chunks(b"P")]) == b"P" + data
    assert await spool.sha256(b"P") == hashlib.sha256(b"P" + data).digest()
    spool.close()
    assert spool.size == 0


async def test_large_content_goes_to_an_unlinked_file() -> None:
    """Past the limit the content is in a temporary file with no name on disk, and reads back exactly."""
    data = os.urandom(3 * CHUNK + 12345)
    spool = Spool(memory_limit=100_000)
    before = descriptors()
    await fill(spool, data, 40_000)
    assert spool.on_disk
    targets = opened(before)
    assert targets
    assert all(target.endswith("(deleted)") for target in targets), targets
    assert await spool.read() == data
    assert await spool.head(CHUNK + 5) == data[: CHUNK + 5]
    chunks = [bytes(c) async for c in spool.chunks(b"Received: x\r\n")]
    assert max(map(len, chunks)) <= CHUNK
    assert b"".join(chunks) == b"Received: x\r\n" + data
    assert await spool.sha256(b"R") == hashlib.sha256(b"R" + data).digest()
    spool.close()
    assert opened(before) == []


async def test_a_spool_of_bytes_does_not_copy_them() -> None:
    """Spool.of(data).read() is data itself; with a prefix it is one new object."""
    data = os.urandom(500_000)
    spool = Spool.of(data)
    assert await spool.read() is data
    assert await spool.read(b"X") == b"X" + data
