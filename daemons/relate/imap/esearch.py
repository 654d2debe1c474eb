"""The answer of SEARCH and SORT with RETURN options: ESEARCH (RFC 4731), ESORT and PARTIAL (RFC 5267, RFC 9394).

A result is a list of message numbers or UIDs in result order: mailbox
order for SEARCH, the requested order for SORT. The options read it the same
way for both: MIN and MAX are its first and last entries (for SORT "the
lowest and highest sorted message", RFC 5267 §3.1), ALL and PARTIAL show it
as a sequence set that keeps its order (ascending runs become ``a:b``, so
``5,3:4,2,1``; RFC 5267 §3.2), COUNT counts it. SAVE (RFC 5182) keeps the
result's UIDs as a set for ``$``; beside only MIN and/or MAX, just those.
"""

from __future__ import annotations

from collections.abc import Sequence

from relate.imap.parser import Partial
from relate.imap.search import compact
from relate.mail.imapwire import astring

__all__ = ["options", "response", "saved"]


def options(returns: tuple[str, ...] | None) -> set[str]:
    """The options a RETURN list asks for; RETURN () means ALL (RFC 4731 §3.1)."""
    return set(returns) if returns else {"ALL"}


def response(
    tag: str,
    uid: bool,
    numbers: Sequence[int],
    opts: set[str],
    partial: Partial | None,
    modseq: int | None = None,
) -> bytes | None:
    """The ``ESEARCH`` response for these options; None for SAVE alone, which answers nothing (RFC 5182 §2.1).

    UPDATE or CONTEXT alone still get an ESEARCH with just the tag, as RFC 5267 §4.3's examples show.
    ``modseq`` is what a search with a MODSEQ key reports (RFC 7162 §3.1.5), after COUNT as Dovecot does.
    """
    if opts == {"SAVE"}:
        return None
    parts = [b"ESEARCH (TAG " + astring(tag) + b")"]
    if uid:
        parts.append(b"UID")
    if numbers and "MIN" in opts:
        parts.append(b"MIN %d" % numbers[0])
    if numbers and "MAX" in opts:
        parts.append(b"MAX %d" % numbers[-1])
    if numbers and "ALL" in opts:
        parts.append(b"ALL " + compact(numbers).encode())
    if "COUNT" in opts:
        parts.append(b"COUNT %d" % len(numbers))
    if modseq is not None:
        parts.append(b"MODSEQ %d" % modseq)
    if partial is not None:
        picked = partial.pick(len(numbers))
        shown = compact(numbers[picked.start : picked.stop]) if picked else "NIL"
        parts.append(f"PARTIAL ({partial.spec()} {shown})".encode())
    return b" ".join(parts)


def saved(uids: Sequence[int], opts: set[str]) -> list[int]:
    """What SAVE keeps for ``$`` (ascending UIDs): with only MIN and/or MAX beside it, just those (RFC 5182 §2.1)."""
    rest = opts - {"SAVE", "CONTEXT", "UPDATE"}
    if uids and rest and rest <= {"MIN", "MAX"}:
        return sorted({*(uids[:1] if "MIN" in rest else []), *(uids[-1:] if "MAX" in rest else [])})
    return sorted(uids)
