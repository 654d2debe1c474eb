"""Reading the message text of DATA in large chunks (RFC 5321 §4.1.1.4, §4.5.2, §4.5.3.1).

Policy, the same as aiosmtpd's line-by-line reader that this replaces:

- Lines end with CRLF only; a bare LF is an ordinary byte inside a line.
- The data ends at the first ``CRLF . CRLF``, or at a ``.`` line sent at once
  after the 354. Bytes the client sent after it (pipelined commands) stay in
  the stream for the command loop.
- Transparency (§4.5.2): one leading ``.`` is removed from every line that
  starts with one.
- Size: the data counts as sent (dot-stuffed, CRLFs included, the final
  ``.`` line excluded). Over the size limit the rest is read and thrown
  away, keeping only the few bytes needed to see the terminator, and the
  answer is ``552``. A line longer than the line limit (CRLF included) makes
  the answer ``500``; whichever of the two comes first in the stream wins.
- A client that closes the connection mid-data gets nothing stored:
  :class:`ConnectionResetError` is raised.

Why not line by line: a 10 KiB message is ~135 lines, each a ``readuntil``
await, a list append and a join. Here a message is one or two ``read``
calls, one ``bytes.find`` per chunk and one ``bytes.replace``.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

_END = b"\r\n.\r\n"
# A read takes whatever the stream holds, up to this much.
_CHUNK = 256 * 1024


class DataState(enum.Enum):
    OK = "ok"
    TOO_LONG = "too-long"  # a line over the line limit: 500
    TOO_MUCH = "too-much"  # over the size limit: 552


@dataclass(frozen=True)
class Data:
    state: DataState
    content: bytes  # transparency undone; empty unless state is OK
    size: int  # octets as sent, dot-stuffed, without the final "." line


def _has_long_line(data: bytes | bytearray, start: int, line_limit: int) -> bool:
    """Whether a CRLF-separated line of ``data[start:]`` is longer than ``line_limit`` with its CRLF."""
    if len(data) - start <= line_limit - 2:
        return False
    return max(map(len, data[start:].split(b"\r\n"))) + 2 > line_limit


def _unread(reader: asyncio.StreamReader, data: bytes | bytearray) -> None:
    """Put back bytes read past the terminator, so the command loop reads them next.

    asyncio's StreamReader has no public unread; its buffer is a bytearray
    that every read method consumes from the front.
    """
    if data:
        reader._buffer[:0] = data  # type: ignore[attr-defined]


async def read_data(reader: asyncio.StreamReader, *, size_limit: int | None, line_limit: int) -> Data:
    """Read one message's data from ``reader``, the 354 having been sent; see the module docstring."""
    # A CRLF before the first line, so that a "." sent at once ends the data like any other.
    buf = bytearray(b"\r\n")
    scan = 0  # where the terminator may start, in buf
    dropped = 0  # octets of data thrown away (over a limit)
    state = DataState.OK
    while True:
        end = buf.find(_END, scan)
        if end >= 0:
            break
        # The data is at least len(buf) - 6 long whatever follows: the terminator may start in the last 4 octets.
        if state is DataState.OK and size_limit and len(buf) - 2 - 4 > size_limit:
            state = DataState.TOO_LONG if _has_long_line(buf, 2, line_limit) else DataState.TOO_MUCH
        if state is not DataState.OK and len(buf) > 8:
            # Keep only the tail that may hold the start of the terminator.
            cut = len(buf) - 4
            dropped += cut
            del buf[:cut]
        scan = max(0, len(buf) - 4)
        chunk = await reader.read(_CHUNK)
        if not chunk:
            raise ConnectionResetError("connection closed in the middle of DATA")
        buf += chunk
    # buf[2:end + 2] is the data as sent, its last CRLF included; the terminator is buf[end:end + 5].
    _unread(reader, buf[end + 5 :])
    size = dropped + end
    if state is not DataState.OK:
        return Data(state, b"", size)
    sent = bytes(buf[: end + 2])
    if _has_long_line(sent, 2, line_limit):
        return Data(DataState.TOO_LONG, b"", size)
    if size_limit and size > size_limit:
        return Data(DataState.TOO_MUCH, b"", size)
    # §4.5.2: the leading CRLF makes the first line's dot one more "\r\n." to undo.
    return Data(state, sent.replace(b"\r\n.", b"\r\n")[2:], size)
