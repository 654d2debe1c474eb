"""The message-ids THREAD=REFERENCES links messages by (RFC 5256 §3, step 1), read once per message at ingest.

Policy:

- A valid msg-id is ``<...>`` holding an ``@`` with something on either
  side; white space inside is removed (RFC 5322 §3.6.4 forbids it, folding
  puts it there), and nothing else is changed: comparison is case-sensitive.
- The message's own id is the first valid one of its Message-ID field.
- Its references are the valid ids of References, or else the first valid id
  of In-Reply-To (RFC 5256: "If a message does not contain a References:
  header line, or a References: header line does not contain any valid
  Message IDs, then use the first (if any) valid Message ID of the
  In-Reply-To: header line as its only reference"). Only the last
  ``MAX_THREAD_REFERENCES`` are kept: the nearest ancestors, which decide the
  thread; the algorithm already allows for References a client shortened.

Cost: one linear scan of each field value (fields are at most
``limits.MAX_FIELD_BYTES``; References arrives as ParsedMessage's list of at
most ``limits.MAX_REFERENCES`` ids).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from relate.mail.limits import MAX_THREAD_REFERENCES

__all__ = ["msg_ids", "thread_ids"]

# Each attempt stops at the next "<" or ">", so finding every match is linear in the value.
_ANGLED = re.compile(r"<([^<>]*)>")


def msg_ids(value: str | None, most: int | None = None) -> list[str]:
    """The valid msg-ids of a field value, in order (at most ``most`` of them, the first ones)."""
    if not value or "<" not in value:
        return []
    out: list[str] = []
    for match in _ANGLED.finditer(value):
        inner = "".join(match.group(1).split())
        local, at, domain = inner.partition("@")
        if at and local and domain:
            out.append(f"<{inner}>")
            if most is not None and len(out) >= most:
                break
    return out


def thread_ids(message_id: str | None, in_reply_to: str | None, references: Sequence[str]) -> list[str]:
    """``[own id or "", reference, ...]``: what threading needs of a message, its nearest references last."""
    own = msg_ids(message_id, 1)
    refs = msg_ids(" ".join(references)) if references else []
    if not refs:
        refs = msg_ids(in_reply_to, 1)
    return [own[0] if own else "", *refs[-MAX_THREAD_REFERENCES:]]
