"""The subject key threading compares when a message names no known parent: its base subject, prefixes of
every common language taken off.

Policy: RFC 5256's base subject (``relate.mail.basesubject``) removes ``Re:``, ``Fw:``, ``Fwd:``,
``[list]`` tags, ``(fwd)`` trailers and ``[fwd: ...]`` wrappers. Mail clients in other languages write
their own reply and forward prefixes (``AW:`` and ``WG:`` in German, ``SV:`` in Scandinavian, ``TR:`` in
French, ``RV:`` in Spanish, ``Antw:`` in Dutch, ``回复:`` in Chinese...), sometimes with a counter
(``Re[2]:``, ``AW(3):``); those are removed first, in any mix and order with ``[list]`` tags, then the
base subject is taken, then the localised prefixes once more (``[fwd: AW: x]``). Words that are also
ordinary subject openers (``Ref:``, ``Info:``) are not prefixes. The key is casemapped (i;ascii-casemap)
and cut to ``MAX_SUBJECT_KEY`` characters; a subject that is nothing but prefixes has the empty key, and
the empty key threads nothing.

Cost: linear. Only the first ``_READ`` characters of a subject are read; each step is one anchored
regular-expression match (no nested repetition that can fail: it backtracks a bounded amount) or
base_subject, which is linear.
"""

from __future__ import annotations

import re

from relate.mail.basesubject import base_subject, casemap
from relate.mail.sortkeys import MAX_SUBJECT_KEY

__all__ = ["subject_key"]

# Characters of a subject that are looked at: room for many prefixes before the MAX_SUBJECT_KEY that count.
_READ = 1024
_PREFIXES = (
    "re|fw|fwd|aw|wg|sv|vs|antw|antwort|doorst|tr|rif|res|rv|enc|odp|pd|ynt|ilt|İlt|vá|r"
    "|回复|答复|回覆|转发|轉寄|転送|返信"
)
_LEADERS = re.compile(
    rf"(?:\s|\[[^\[\]]{{0,100}}\]|(?:{_PREFIXES})\s?(?:\[\d{{1,4}}\]|\(\d{{1,4}}\))?\s?[:：])*", re.IGNORECASE
)


def _strip(text: str) -> str:
    return text[_LEADERS.match(text).end() :]  # type: ignore[union-attr]  # a match of * always succeeds


def subject_key(subject: str | None) -> str:
    """The thread subject key of a decoded subject ("" when it has none)."""
    if not subject:
        return ""
    text = subject[:_READ]
    stripped = _strip(text)
    base = base_subject(stripped or text).text
    return casemap(_strip(base) or base)[:MAX_SUBJECT_KEY]
