"""LIST pattern matching (relate.imap.listmatch) against the brute-force reference, and on any text at all."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from relate.imap.listmatch import Pattern
from tests.unit.imap.test_listmatch import reference

_SMALL = st.text(alphabet="ab/*%", max_size=10)
_NAMES = st.text(alphabet="ab/", max_size=10)


@given(_SMALL, _NAMES)
@example("*%" * 5 + "x", "ab/ab/ab/ab")
@example("%*%", "a/b")
def test_matches_like_the_definition(pattern: str, name: str) -> None:
    """On small inputs, the linear matcher agrees with trying every way the wildcards could match."""
    assert Pattern("", pattern).matches(name) == reference(pattern, name)


@given(st.text(max_size=300), st.text(max_size=300), st.text(max_size=300))
@example("", "*%" * 15 + "x", "Work/2025/Q1" * 20)
@example("", "*" * 80 + "x", "a" * 300)
@example("\x00", "&AAA-%", "INBOX")
def test_any_text_matches_quickly(reference_: str, pattern: str, name: str) -> None:
    """Whatever a client sends as reference and pattern, matching any name returns a bool (within the deadline)."""
    compiled = Pattern(reference_, pattern)
    assert isinstance(compiled.matches(name), bool)
    # Without wildcards a pattern matches exactly itself.
    if not set(reference_ + pattern) & {"*", "%"} and not (reference_ + pattern).upper().startswith("INBOX"):
        assert compiled.matches(name) == (name == reference_ + pattern)
