"""The base subject of RFC 5256 §2.1, which SORT (SUBJECT) and THREAD compare, and the i;ascii-casemap.

The subject arrives with its RFC 2047 encoded words already decoded (step 1's
first half: ``ParsedMessage.subject``). Then, on the casemapped text:

1. tabs, CR and LF become spaces and runs of spaces become one;
2. trailing ``(fwd)`` and spaces are removed, repeatedly;
3. leading subj-leaders are removed: a space, or any number of ``[blob]``
   followed by ``re``, ``fw`` or ``fwd``, optional spaces, an optional
   ``[blob]`` and ``:``;
4. a leading ``[blob]`` is removed when something other than spaces follows it;
5. steps 3 and 4 repeat until neither removes anything;
6. ``[fwd: ... ]`` around the whole is removed, and the steps repeat from 2.

A subject counts as a reply or forward (THREAD=REFERENCES step 5) when any
of steps 2, 3 or 6 removed a ``(fwd)``, a ``re:``/``fw:``/``fwd:`` leader or a
``[fwd: ]`` wrapper.

Cost: linear in the subject. Every step moves the start forward or the end
back, except a run of ``[blob]``s that turns out not to lead to ``re:``: that
run is remembered, so step 3 does not scan it again while step 4 removes its
blobs one by one.

Comparison is ``i;ascii-casemap`` (RFC 4790 §9.2), the comparator RFC 5256
names for SORT: ASCII letters compare as upper case, everything else by code
point (as UTF-8 octets compare). Keys are stored casemapped, so PostgreSQL
compares them with the "C" collation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["BaseSubject", "base_subject", "casemap"]

_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_BLANKS = re.compile(r"[ \t\r\n]+")
_FWD_TRAILER = "(FWD)"
_FWD_HEADER = "[FWD:"


def casemap(text: str) -> str:
    """``text`` with ASCII letters in upper case and nothing else changed (i;ascii-casemap)."""
    return text.translate(_UPPER)


@dataclass(frozen=True, slots=True)
class BaseSubject:
    text: str  # casemapped; "" for a missing or empty subject
    reply: bool  # a reply or forward (a re:/fw:/fwd: leader, a (fwd) trailer or a [fwd: ] wrapper was removed)


class _Subject:
    """One extraction: the text and the window ``start:end`` of it that is left."""

    __slots__ = ("end", "reply", "start", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.start = 0
        self.end = len(text)
        self.reply = False

    def blob_end(self, pos: int) -> int:
        """The end of the subj-blob (``[`` *BLOBCHAR ``]`` *WSP) at ``pos``, or -1 if there is none."""
        text, end = self.text, self.end
        if pos >= end or text[pos] != "[":
            return -1
        close = text.find("]", pos + 1, end)
        if close < 0 or text.find("[", pos + 1, close) >= 0:
            return -1
        close += 1
        return close + 1 if close < end and text[close] == " " else close  # spaces are single after step 1

    def refwd_end(self, pos: int) -> int:
        """The end of the subj-refwd (``re`` / ``fw`` / ``fwd``, *WSP, [subj-blob], ``:``) at ``pos``, or -1."""
        text, end = self.text, self.end
        if text.startswith("RE", pos, end):
            pos += 2
        elif text.startswith("FWD", pos, end):
            pos += 3
        elif text.startswith("FW", pos, end):
            pos += 2
        else:
            return -1
        if pos < end and text[pos] == " ":
            pos += 1
        if pos < end and text[pos] == "[":
            pos = self.blob_end(pos)
            if pos < 0:
                return -1
        return pos + 1 if pos < end and text[pos] == ":" else -1

    def trailers(self) -> None:
        """Step 2: trailing subj-trailers (``(fwd)`` and spaces)."""
        text = self.text
        while self.end > self.start:
            if text[self.end - 1] == " ":
                self.end -= 1
            elif self.end - self.start >= 5 and text.startswith(_FWD_TRAILER, self.end - 5, self.end):
                self.end -= 5
                self.reply = True
            else:
                return

    def leaders_and_blobs(self) -> None:
        """Steps 3 to 5."""
        text = self.text
        # A run of blobs from dead_from that reaches dead_to without a subj-refwd there: any start
        # inside it is one of its blob boundaries and fails in step 3 the same way (the end is fixed here).
        dead_from = dead_to = -1
        while True:
            found = False
            while self.start < self.end:  # step 3, as often as it matches
                if text[self.start] == " ":
                    self.start += 1
                    found = True
                    continue
                if dead_from <= self.start <= dead_to:
                    break
                pos = self.start
                while pos < self.end and text[pos] == "[":
                    after = self.blob_end(pos)
                    if after < 0:
                        break
                    pos = after
                after = self.refwd_end(pos)
                if after < 0:
                    dead_from, dead_to = self.start, pos
                    break
                self.start = after
                self.reply = found = True
            after = self.blob_end(self.start)  # step 4
            if 0 <= after < self.end:
                self.start = after
                found = True
            if not found:
                return

    def fwd_wrapper(self) -> bool:
        """Step 6: remove a ``[fwd:`` ... ``]`` around what is left; whether there was one."""
        if (
            self.end - self.start >= len(_FWD_HEADER) + 1
            and self.text.startswith(_FWD_HEADER, self.start, self.end)
            and self.text[self.end - 1] == "]"
        ):
            self.start += len(_FWD_HEADER)
            self.end -= 1
            self.reply = True
            return True
        return False


def base_subject(subject: str | None) -> BaseSubject:
    """The RFC 5256 §2.1 base subject of ``subject`` (decoded, unfolded), casemapped; see the module docstring."""
    if not subject:
        return BaseSubject("", False)
    work = _Subject(_BLANKS.sub(" ", casemap(subject)))
    while True:
        work.trailers()
        work.leaders_and_blobs()
        if not work.fwd_wrapper():
            break
    return BaseSubject(work.text[work.start : work.end], work.reply)
