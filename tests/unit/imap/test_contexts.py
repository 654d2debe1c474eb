"""Kept searches' criteria (RFC 5267 §4.3): message numbers, ``$`` and ``*`` fixed to the UIDs they named."""

from __future__ import annotations

import array

from relate.imap.contexts import fixed_key
from relate.imap.parser import Search, SearchKey, SeqSet, parse
from relate.imap.session import Selected


def _selected(uids: list[int], saved: list[int] | None = None) -> Selected:
    sel = Selected(1, "INBOX", False, 1, array.array("Q", uids), 1, uids[-1] if uids else 0)
    sel.saved = saved or []
    return sel


def _key(criteria: str) -> SearchKey:
    cmd = parse([f"a SEARCH {criteria}".encode()])
    assert isinstance(cmd, Search)
    return cmd.key


def _ranges(key: SearchKey) -> list[tuple[int | None, int | None]]:
    assert key.name == "UID", key
    (seqset,) = key.args
    assert isinstance(seqset, SeqSet)
    return [(r.start, r.end) for r in seqset.ranges]


def test_message_numbers_become_uid_ranges() -> None:
    """A range of message numbers becomes one range of UIDs, whatever gaps expunges left between them."""
    sel = _selected([3, 7, 8, 20, 21, 40])
    assert _ranges(fixed_key(_key("2:4,6"), sel)) == [(7, 20), (40, 40)]
    assert _ranges(fixed_key(_key("5:*"), sel)) == [(21, 40)]  # "*" is the last message now
    assert _ranges(fixed_key(_key("7:9"), sel)) == [(0, 0)]  # past the end: no message (UID 0 is none's)
    assert _ranges(fixed_key(_key("1:4294967295"), _selected(list(range(1, 100_001))))) == [(1, 100_000)]


def test_uids_saved_results_and_nesting() -> None:
    """UID "*" is the largest UID now, "$" the saved UIDs; criteria inside NOT and OR are fixed too."""
    sel = _selected([3, 7, 8, 20], saved=[7, 8, 20])
    assert _ranges(fixed_key(_key("UID 5:*"), sel)) == [(5, 20)]
    assert _ranges(fixed_key(_key("$"), sel)) == [(7, 8), (20, 20)]
    fixed = fixed_key(_key("OR 1 NOT 4 SEEN"), sel)
    either, seen = fixed.args
    assert seen == SearchKey("SEEN")
    assert isinstance(either, SearchKey)
    first, negated = either.args
    assert isinstance(first, SearchKey)
    assert isinstance(negated, SearchKey)
    assert _ranges(first) == [(3, 3)]
    (inner,) = negated.args
    assert isinstance(inner, SearchKey)
    assert _ranges(inner) == [(20, 20)]
