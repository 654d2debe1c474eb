"""RFC 2047 encoded words (``=?charset?B|Q?text?=``) decoded in one linear pass.

Policy (RFC 2047 §2-§6, with the leniencies of widely used readers):

- An encoded word is ``=?charset[*lang]?B|Q?encoded-text?=`` (§2, and RFC 2231
  §5 for the language). Words are recognised wherever they stand, also inside
  a longer run of text or a quoted string (§5 forbids both; mailers do it and
  readers decode them).
- White space between two encoded words is dropped (§6.2). The bytes of
  adjacent words in the same charset are joined before decoding, so a
  character split across two words decodes whole.
- B (§4.1) is base64 with missing padding tolerated and characters outside the
  alphabet ignored; Q (§4.2) is quoted-printable with ``_`` for space, and a
  malformed ``=XX`` stays as it is. A word whose base64 cannot be decoded (one
  character too many) stays as text, like anything that is not an encoded word.
- A charset Python does not know (or refuses, see ``relate.mail.charset``)
  decodes as UTF-8, and bytes that do not decode become U+FFFD.
- Work is bounded: at most ``limits.MAX_ENCODED_WORDS`` words are decoded per
  call; the rest of the text is returned as it is.
"""

from __future__ import annotations

import binascii
import re

from relate.mail import charset
from relate.mail.limits import MAX_ENCODED_WORDS

__all__ = ["decode"]

# charset: a token (no "?", no white space); encoded-text: anything up to the next "?" (white space inside
# a Q word is invalid but common). Each attempt scans at most to the third "?" after its "=?", and attempts
# start at distinct "=?", so a search over the text is linear.
_WORD = re.compile(r"=\?([^?\s]*)\?([bBqQ])\?([^?]*)\?=")
_BLANK = re.compile(r"[ \t\r\n]*")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]+")


def _payload(encoding: str, text: str) -> bytes | None:
    """The octets of one encoded word's text, or None when it cannot be decoded."""
    data = text.encode("utf-8", "surrogateescape")
    if encoding in "qQ":
        if data.endswith(b"=") and not data.endswith(b"==="):  # a2b_qp drops a final "=" as a soft break
            return binascii.a2b_qp(data[:-1], header=True) + b"="
        return binascii.a2b_qp(data, header=True)
    data = _NOT_BASE64.sub(b"", data)
    if len(data) % 4 == 1:  # no padding makes this whole: not base64
        return None
    return binascii.a2b_base64(data + b"=" * (-len(data) % 4))


def decode(text: str, notes: set[str] | None = None) -> str:
    """``text`` with its encoded words decoded; adds "encoded-words" to ``notes`` when some were left undecoded."""
    if "=?" not in text:
        return text
    out: list[str] = []
    pos = 0  # end of what has been copied or decoded
    after_word = False  # whether text[pos] directly follows a decoded word
    pending = bytearray()  # octets of adjacent words in one charset, not decoded yet
    pending_codec: str | None = None
    words = 0
    for match in _WORD.finditer(text):
        data = _payload(match.group(2), match.group(3))
        if data is None:
            continue  # stays in the text before the next word
        words += 1
        if words > MAX_ENCODED_WORDS:
            if notes is not None:
                notes.add("encoded-words")
            break
        name = charset.codec(match.group(1).partition("*")[0]) or "utf-8"
        blank = after_word and _BLANK.fullmatch(text, pos, match.start()) is not None
        if not (blank and name == pending_codec):
            if pending_codec is not None:
                out.append(pending.decode(pending_codec, "replace"))
                pending.clear()
            if not blank:
                out.append(text[pos : match.start()])
            pending_codec = name
        pending += data
        pos, after_word = match.end(), True
    if pending_codec is not None:
        out.append(pending.decode(pending_codec, "replace"))
    out.append(text[pos:])
    return "".join(out)
