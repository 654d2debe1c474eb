"""LIST and LSUB patterns (RFC 9051 §6.3.9): ``*`` matches anything, ``%`` anything but the delimiter ``/``.

A pattern is matched in time linear in the name times the pattern, whatever
either holds: no regular expression (a backtracking engine takes exponential
time on ``*%*%…x``), no recursion. The pattern is first reduced: a run of
wildcards matches what its widest member matches (``%*%`` is ``*``, ``%%``
is ``%``), so no two wildcards are adjacent. Then the name is read once,
left to right, keeping the set of pattern positions reached so far as the
bits of one integer (a Shift-And automaton extended with the two wildcards):
each character costs a handful of integer operations on ``len(pattern)``
bits. The parser bounds the pattern's length (``limits.MAX_PATTERN_LENGTH``).

``INBOX`` is case-insensitive (RFC 9051 §5.1): a pattern that begins with
``INBOX`` in any case, followed by its end, the delimiter or a wildcard, is
read as beginning with ``INBOX``, the way stored names spell it.
"""

from __future__ import annotations

DELIMITER = "/"


def _canonical(full: str) -> str:
    if full[:5].upper() == "INBOX" and (len(full) == 5 or full[5] in "/%*"):
        return "INBOX" + full[5:]
    return full


def _reduce(pattern: str) -> str:
    """Collapse each run of wildcards into the widest one (``*`` if it holds one, else ``%``)."""
    out: list[str] = []
    run = ""
    for ch in pattern:
        if ch in "*%":
            run = "*" if ch == "*" or run == "*" else "%"
            continue
        if run:
            out.append(run)
            run = ""
        out.append(ch)
    if run:
        out.append(run)
    return "".join(out)


class Pattern:
    """A compiled LIST pattern (reference and mailbox pattern joined, as RFC 9051 §6.3.9 says)."""

    __slots__ = ("_accept", "_literal", "_literals", "_percent", "_star", "_wild", "text")

    def __init__(self, reference: str, pattern: str) -> None:
        self.text = _reduce(_canonical(reference + pattern))
        # Bit i set: the first i items of the pattern have matched the name read so far.
        self._literals: dict[str, int] = {}
        star = percent = 0
        for i, ch in enumerate(self.text):
            if ch == "*":
                star |= 1 << i
            elif ch == "%":
                percent |= 1 << i
            else:
                self._literals[ch] = self._literals.get(ch, 0) | 1 << i
        self._star, self._percent = star, percent
        self._wild = star | percent
        self._accept = 1 << len(self.text)
        self._literal = not self._wild  # no wildcard: plain comparison

    def _closure(self, states: int) -> int:
        # A wildcard may match nothing: reaching it reaches the item after it too. Wildcards are
        # never adjacent after _reduce, so one step covers every case.
        return states | (states & self._wild) << 1

    def matches(self, name: str) -> bool:
        if self._literal:
            return name == self.text
        literals, star, percent = self._literals, self._star, self._percent
        states = self._closure(1)
        for ch in name:
            moved = (states & literals.get(ch, 0)) << 1 | states & star
            if ch != DELIMITER:
                moved |= states & percent
            states = self._closure(moved)
            if not states:
                return False
        return bool(states & self._accept)


def matches(reference: str, pattern: str, name: str) -> bool:
    """Whether ``name`` matches ``reference`` + ``pattern`` (a one-off; compile a Pattern to match many names)."""
    return Pattern(reference, pattern).matches(name)
