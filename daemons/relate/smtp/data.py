"""Reading the message text of DATA into a spool, a chunk at a time (RFC 5321 §4.1.1.4, §4.5.2, §4.5.3.1).

Policy:

- Lines end with CRLF only; a bare LF is an ordinary byte inside a line.
- The data ends at the first ``CRLF . CRLF``, or at a ``.`` line sent at once
  after the 354. Bytes the client sent after it (pipelined commands) stay in
  the stream for the command loop.
- Transparency (§4.5.2): one leading ``.`` is removed from every line that
  starts with one.
- Size: the data counts as sent (dot-stuffed, CRLFs included, the final
  ``.`` line excluded). Over the size limit nothing more is kept at all: the
  rest is read and thrown away, keeping only the few bytes needed to see the
  terminator, and the answer is ``552``. A line longer than the line limit
  (CRLF included) makes the answer ``500``; whichever of the two comes first
  in the stream wins. A spool that cannot be written (a full disk) is treated
  the same way and answered ``452``.
- A client that closes the connection mid-data gets nothing stored:
  :class:`ConnectionResetError` is raised.

Memory: complete lines are handed to the :class:`~relate.mail.spool.Spool`
(memory while small, a temporary file after) as soon as they are read; what
is held here is the last, incomplete line, which the line limit bounds, plus
one read. Each chunk costs one ``find`` for the terminator, one ``split`` for
line lengths and one ``replace`` for dot-stuffing, all in C; a message of a
few KiB is one or two reads.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

from relate.mail.spool import Spool
from relate.runtime.streams import unread

_END = b"\r\n.\r\n"
_CRLF = b"\r\n"
# A read takes whatever the stream holds, up to this much.
_CHUNK = 256 * 1024


class DataState(enum.Enum):
    OK = "ok"
    TOO_LONG = "too-long"  # a line over the line limit: 500
    TOO_MUCH = "too-much"  # over the size limit: 552
    NO_SPACE = "no-space"  # the spool could not be written: 452


@dataclass(frozen=True)
class Data:
    state: DataState
    size: int  # octets as sent, dot-stuffed, without the final "." line
    error: str = ""  # NO_SPACE: what the spool said


def _too_long(region: bytes | bytearray, line_limit: int) -> bool:
    """Whether a CRLF-separated line of ``region`` is longer than ``line_limit`` with its CRLF.

    From the start of a line, the last CRLF that starts within the next
    ``line_limit - 2`` bytes ends a run of lines that are all short enough;
    none there means the line is too long. One ``rfind`` per ``line_limit``
    bytes or so, whatever the number of lines.
    """
    width = line_limit - 2
    pos = 0
    end = len(region)
    while end - pos > width:
        found = region.rfind(_CRLF, pos, pos + width + 2)
        if found < 0:
            return True
        pos = found + 2
    return False


async def _keep(spool: Spool, region: bytearray, skip: int) -> str:
    """Undo transparency in ``region`` and append it (less ``skip`` made-up bytes) to the spool; "" or the error."""
    try:
        await spool.write(memoryview(region.replace(b"\r\n.", _CRLF))[skip:])
    except OSError as exc:
        spool.close()
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return ""


async def read_data(reader: asyncio.StreamReader, spool: Spool, *, size_limit: int | None, line_limit: int) -> Data:
    """Read one message's data from ``reader`` into ``spool``, the 354 having been sent; see the module docstring."""
    # Invariant while OK: buf starts with the CRLF that ended the previous line, so every line start in it
    # is preceded by a CRLF (that is what transparency and the terminator look for). For the first line
    # a CRLF is made up; it is not data.
    buf = bytearray(_CRLF)
    made_up = 2  # bytes at the front of buf that are not data (the made-up CRLF, until it is passed on)
    read = 0  # octets read from the stream in all
    state = DataState.OK
    error = ""
    scan = 0  # where the terminator may start, in buf
    while True:
        end = buf.find(_END, scan)
        if end >= 0:
            break
        if state is DataState.OK:
            # Pass on every complete line; keep the last CRLF and what follows it.
            last = buf.rfind(_CRLF)
            if last > 0:
                region = buf[:last]
                del buf[:last]
                if _too_long(region, line_limit):
                    state = DataState.TOO_LONG
                # At least read - 4 octets are data, whatever follows (the terminator may start in the last 4).
                elif size_limit and read - 4 > size_limit:
                    state = DataState.TOO_MUCH
                else:
                    error = await _keep(spool, region, made_up)
                    state = DataState.NO_SPACE if error else state
                made_up = 0
            # The line in progress, without its CRLF (of which a final CR may have come already).
            partial = len(buf) - 2 - (1 if buf.endswith(b"\r") else 0)
            if state is DataState.OK and partial + 2 > line_limit:
                state = DataState.TOO_LONG
            elif state is DataState.OK and size_limit and read - 4 > size_limit:
                state = DataState.TOO_MUCH
            if state is not DataState.OK:
                spool.close()  # nothing more is kept, and what was is let go now
        if state is not DataState.OK and len(buf) > 4:
            del buf[:-4]  # keep only what may be the start of the terminator
        scan = max(0, len(buf) - 4)
        chunk = await reader.read(_CHUNK)
        if not chunk:
            raise ConnectionResetError("connection closed in the middle of DATA")
        read += len(chunk)
        buf += chunk
    # buf[end:end + 5] is the terminator; its first CRLF ends the last line of the data.
    after = buf[end + 5 :]
    unread(reader, after)
    size = read - len(after) - 3
    if state is DataState.OK:
        region = buf[: end + 2]
        if _too_long(region, line_limit):
            state = DataState.TOO_LONG
        elif size_limit and size > size_limit:
            state = DataState.TOO_MUCH
        else:
            error = await _keep(spool, region, made_up)
            state = DataState.NO_SPACE if error else state
    if state is not DataState.OK:
        spool.close()
    return Data(state, size, error)
