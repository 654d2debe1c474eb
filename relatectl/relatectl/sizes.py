"""Sizes as an admin types them (``500M``, ``2G``, ``1.5T``) and as relatectl shows them.

Units are binary (K = 1024 bytes, as the IMAP QUOTA extension counts,
RFC 9208 §5.1), case-insensitive, with an optional ``B`` or ``iB``: ``2G``,
``2GB``, ``2GiB`` and ``2147483648`` are the same. A value has at most
:data:`MAX_DIGITS` digits and one decimal point, and must come to a whole
number of bytes from 1 to 2^63-1 after rounding down.
"""

from __future__ import annotations

import re

MAX_DIGITS = 19
MAX_BYTES = 2**63 - 1
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([KMGTP])(?:I?B)?|B)?", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from ``text``; ValueError, with a message for the admin, when it is not a size."""
    stripped = text.strip()
    digits = sum(ch.isdigit() for ch in stripped)
    m = _SIZE.fullmatch(stripped) if digits <= MAX_DIGITS else None
    if m is None:
        raise ValueError(f"not a size: {text[:40]!r} (write e.g. 500M, 2G or 1.5T)")
    whole, _, fraction = m.group(1).partition(".")
    unit = _UNITS[(m.group(2) or "").upper()]
    # Exact arithmetic on the digits: no float rounding, whatever the size.
    value = (int(whole) * unit) + (int(fraction) * unit // 10 ** len(fraction) if fraction else 0)
    if not 1 <= value <= MAX_BYTES:
        raise ValueError(f"a size must be from 1 byte to 8 EiB, got {text[:40]!r}")
    return value


def format_size(value: int) -> str:
    """``1.5 GiB``, ``512 KiB``, ``100 B``: the largest binary unit that leaves at least 1, one decimal."""
    if value < 1024:
        return f"{value} B"
    for name, unit in (("PiB", 1024**5), ("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= unit:
            shown = f"{value / unit:.1f}".removesuffix(".0")
            return f"{shown} {name}"
    raise AssertionError("unreachable")
