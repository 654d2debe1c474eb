"""Content-Transfer-Encoding (RFC 2045 §6) removed a chunk at a time, so no body is held twice in memory.

Policy:

- ``7bit``, ``8bit``, ``binary`` and unknown encodings are the body as it is
  (RFC 2045 §6.4: an unknown encoding cannot be undone). That includes
  ``x-uuencode``, which no standard defines and no current mailer sends: it
  can only be decoded line by line in Python, which a hostile part of tiny
  lines would make slow, so such parts are served as they came.
- ``base64`` (§6.8) ignores characters outside the alphabet and ends at the
  first "=" (padding), as the ``email`` package does: what follows the padding
  (a mailing-list footer appended to the part, say) is not data. A final
  quantum of one character is dropped.
- ``quoted-printable`` (§6.7) is ``binascii.a2b_qp`` over chunks that end at a
  line break (or, in a line longer than a chunk, before an "=" or white
  space), which gives what it gives over the whole body, after white space at
  the end of each line is dropped (rule 3: it is padding, not data).

Every function reads the body as ``raw[start:end]`` without slicing it whole.
"""

from __future__ import annotations

import binascii
import io
import re
from collections.abc import Iterator

__all__ = ["IDENTITY", "chunks", "decode", "decoded_size"]

IDENTITY = frozenset({"7bit", "8bit", "binary"})  # RFC 2045 §6.2
_CHUNK = 1 << 20
_COUNT_CHUNK = 1 << 18  # counting allocates two of these at a time
_BASE64_KEEP = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_BASE64_DROP = bytes(set(range(256)) - set(_BASE64_KEEP))
_QP_PADDING = re.compile(rb"[ \t]++(?=\r?\n)")
_QP_FINAL_PADDING = re.compile(rb"[ \t]++(?=\r?\n|\Z)")


def chunks(raw: bytes, start: int, end: int, encoding: str) -> Iterator[bytes]:
    """The transfer-decoded body raw[start:end] in pieces of about a MiB."""
    if encoding == "base64":
        yield from _base64(raw, start, end)
    elif encoding == "quoted-printable":
        yield from _quoted_printable(raw, start, end)
    else:
        for pos in range(start, end, _CHUNK):
            yield raw[pos : min(end, pos + _CHUNK)]


def decoded_size(raw: bytes, start: int, end: int, encoding: str) -> int:
    """Octets of the transfer-decoded body, counted a chunk at a time."""
    if encoding in IDENTITY:
        return end - start
    if encoding == "base64":  # count the alphabet up to the padding: what _base64 decodes, without decoding it
        stop = raw.find(b"=", start, end)
        stop = end if stop < 0 else stop
        count = 0
        for pos in range(start, stop, _COUNT_CHUNK):
            count += len(raw[pos : min(stop, pos + _COUNT_CHUNK)].translate(None, _BASE64_DROP))
        return count // 4 * 3 + max(0, count % 4 - 1)
    return sum(len(piece) for piece in chunks(raw, start, end, encoding))


def decode(raw: bytes, start: int, end: int, encoding: str, limit: int | None = None) -> tuple[bytes, bool]:
    """(the transfer-decoded body, whether it was cut at ``limit`` octets)."""
    if encoding in IDENTITY:
        stop = end if limit is None else min(end, start + limit)
        return raw[start:stop], stop < end
    out = io.BytesIO()  # getvalue() hands over its buffer: the result is not copied again
    for piece in chunks(raw, start, end, encoding):
        if limit is not None and out.tell() + len(piece) > limit:
            out.write(piece[: limit - out.tell()])
            return out.getvalue(), True
        out.write(piece)
    return out.getvalue(), False


def _base64(raw: bytes, start: int, end: int) -> Iterator[bytes]:
    carry = b""  # alphabet characters of an incomplete quantum
    for pos in range(start, end, _CHUNK):
        data = raw[pos : min(end, pos + _CHUNK)].translate(None, _BASE64_DROP)
        padding = data.find(b"=")
        if padding >= 0:
            data = data[:padding]
        data = carry + data
        whole = len(data) - len(data) % 4
        carry = data[whole:]
        if whole:
            yield binascii.a2b_base64(data[:whole])
        if padding >= 0:
            break
    if len(carry) >= 2:
        yield binascii.a2b_base64(carry + b"=" * (4 - len(carry)))


def _quoted_printable(raw: bytes, start: int, end: int) -> Iterator[bytes]:
    pos = start
    while pos < end:
        cut = min(end, pos + _CHUNK)
        if cut < end:
            newline = raw.rfind(b"\n", pos, cut)
            if newline >= 0:
                cut = newline + 1
            else:  # a line longer than a chunk: do not split "=XX", a soft line break or trailing white space
                equals = raw.rfind(b"=", max(pos, cut - 2), cut)
                cut = equals if equals > pos else cut
                while cut > pos + 1 and raw[cut - 1] in b" \t":
                    cut -= 1
        chunk = raw[pos:cut]
        # RFC 2045 §6.7 rule (3): white space at the end of an encoded line is not data (transport
        # padding, also after a soft line break's "="); a2b_qp would keep it.
        chunk = (_QP_FINAL_PADDING if cut == end else _QP_PADDING).sub(b"", chunk)
        yield binascii.a2b_qp(chunk)
        pos = cut
