"""Charset labels as mail carries them, mapped to Python codecs that are safe to run on hostile bytes.

Policy: a label is looked up in Python's codec registry after a few aliases
that mail uses and Python lacks (RFC 1556's visual-order Hebrew, GBK sent as
GB2312). Codecs that are not text encodings (``base64``, ``rot13``...) and
the few whose decoding costs more than linear time or interprets escapes
(``idna``, ``punycode``, ``unicode_escape``) are refused, as are unknown
labels; the caller then falls back (UTF-8 with U+FFFD for what does not
decode).
"""

from __future__ import annotations

import codecs
import functools

__all__ = ["codec", "decode"]

# Labels seen in mail that Python does not know, or knows as a narrower charset.
_ALIASES = {
    "gb2312": "gbk",  # mail labelled GB2312 routinely carries GBK characters (WHATWG does the same)
    "x-gbk": "gbk",
    "iso-8859-8-i": "iso8859_8",  # RFC 1556: the same bytes, logical rather than visual order
    "iso-8859-8-e": "iso8859_8",
    "iso-8859-6-i": "iso8859_6",
    "iso-8859-6-e": "iso8859_6",
    "x-sjis": "shift_jis",
}
_REFUSED = frozenset({"idna", "punycode", "unicode-escape", "raw-unicode-escape", "undefined"})
_MAX_LABEL = 40  # RFC 2978 charset names are at most 40 characters


@functools.lru_cache(maxsize=256)
def codec(label: str) -> str | None:
    """The Python codec name for a MIME charset label, or None when it is unknown or refused."""
    name = label.strip().lower()
    if not name or len(name) > _MAX_LABEL or not name.isascii():
        return None
    try:
        info = codecs.lookup(_ALIASES.get(name, name))
    except LookupError:
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _REFUSED:
        return None
    return info.name


def decode(data: bytes, label: str) -> str:
    """``data`` in charset ``label``, never failing: bad bytes and unknown charsets give U+FFFD."""
    return data.decode(codec(label) or "utf-8", "replace")
